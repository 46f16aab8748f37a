//! Int8 layer cases (`qlayers.jsonl`): `quantized_linear` and `quantized_conv2d`, each run in
//! both accumulation modes (`exact` and `x86_avx2`).

use ndarray::ArrayD;

use super::case::{Case, CaseResult, compare_ints, f32_list, int_list, tensor_f32, tensor_i64};
use super::json::{Json, exact_f32, int};
use crate::dtype::QDType;
use crate::nn::quantized::{Int8Accumulation, QuantizedConv2d, QuantizedLinear};
use crate::nn::{Activation, ConvGeometry, Module};
use crate::qparams::{PerChannelQParams, QParams};
use crate::tensor::QuantizedTensor;

/// An integer tensor narrowed to the storage type (out of range fails the case).
fn narrow<T: TryFrom<i64>>(what: &str, a: &ArrayD<i64>) -> CaseResult<ArrayD<T>> {
    let mut out = Vec::with_capacity(a.len());
    for &v in a {
        out.push(T::try_from(v).map_err(|_| format!("`{what}`: {v} is outside the storage type"))?);
    }
    ArrayD::from_shape_vec(a.raw_dim(), out).map_err(|e| format!("`{what}`: {e}"))
}

/// A geometry member: an integer, or a list of two.
fn pair(case: &Case, key: &str) -> CaseResult<[usize; 2]> {
    match case.field(key)? {
        Json::Array(_) => {
            let v: Vec<usize> = case.read(key, int_list::<usize>)?;
            match v.as_slice() {
                &[h, w] => Ok([h, w]),
                _ => Err(format!("`{key}`: expected one or two integers")),
            }
        }
        _ => {
            let v = case.read(key, int::<usize>)?;
            Ok([v, v])
        }
    }
}

struct Layer {
    x: Activation,
    layer: Box<dyn Fn(Int8Accumulation) -> crate::Result<Box<dyn Module>>>,
}

fn build(case: &Case) -> CaseResult<Layer> {
    let err = |e: crate::QuantError| format!("error: {e}");
    let x = narrow::<u8>("x", &case.read("x", tensor_i64)?)?;
    let xp = QParams::new(
        case.read("x_scale", exact_f32)?,
        case.i64_field("x_zero_point")?,
        QDType::QUInt8,
    )
    .map_err(err)?;
    let x = Activation::Quantized(QuantizedTensor::from_parts(x, xp).map_err(err)?);
    let w = narrow::<i8>("w", &case.read("w", tensor_i64)?)?;
    let scales = case.read("w_scales", f32_list)?;
    let zps: Vec<i32> = case.read("w_zero_points", int_list::<i32>)?;
    let wp = PerChannelQParams::new(scales, zps, 0, QDType::QInt8).map_err(err)?;
    let w = QuantizedTensor::from_parts(w, wp).map_err(err)?;
    let bias = match case.json.get("bias") {
        None | Some(Json::Null) => None,
        Some(_) => Some(case.read("bias", tensor_f32)?),
    };
    let out = QParams::new(
        case.read("out_scale", exact_f32)?,
        case.i64_field("out_zero_point")?,
        QDType::QUInt8,
    )
    .map_err(err)?;
    let layer: Box<dyn Fn(Int8Accumulation) -> crate::Result<Box<dyn Module>>> =
        match case.op.as_str() {
            "quantized_linear" => Box::new(move |mode| {
                Ok(Box::new(
                    QuantizedLinear::new(w.clone(), bias.clone(), out)?.with_accumulation(mode),
                ) as Box<dyn Module>)
            }),
            _ => {
                let geo = ConvGeometry::default()
                    .stride(pair(case, "stride")?[0], pair(case, "stride")?[1])
                    .padding(pair(case, "padding")?[0], pair(case, "padding")?[1])
                    .dilation(pair(case, "dilation")?[0], pair(case, "dilation")?[1])
                    .groups(case.read("groups", int::<usize>)?);
                Box::new(move |mode| {
                    Ok(Box::new(
                        QuantizedConv2d::new(w.clone(), bias.clone(), geo, out)?
                            .with_accumulation(mode),
                    ) as Box<dyn Module>)
                })
            }
        };
    Ok(Layer { x, layer })
}

pub(crate) fn run(case: &Case) -> CaseResult<()> {
    let l = build(case)?;
    for (key, mode) in [
        ("exact", Int8Accumulation::Exact),
        ("x86_avx2", Int8Accumulation::X86Avx2),
    ] {
        let expected = case.read_expected(key, tensor_i64)?;
        let layer = (l.layer)(mode).map_err(|e| format!("{key}: error: {e}"))?;
        let y = layer
            .forward(&l.x)
            .map_err(|e| format!("{key}: error: {e}"))?;
        let q = y.as_quantized().map_err(|e| format!("{key}: {e}"))?;
        if q.shape() != expected.shape() {
            return Err(format!(
                "{key}: shape {:?}, expected {:?}",
                q.shape(),
                expected.shape()
            ));
        }
        let got: Vec<i64> = q.int_repr().iter().map(|&v| i64::from(v)).collect();
        let exp: Vec<i64> = expected.iter().copied().collect();
        compare_ints(key, &got, &exp)?;
    }
    Ok(())
}
