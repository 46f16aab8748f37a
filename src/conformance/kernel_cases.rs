//! Kernel cases (`kernels.jsonl`).

use ndarray::ArrayD;

use super::case::{
    compare_floats, compare_ints, f64_list, i64_list, tensor_f32, tensor_i64, Case, CaseResult,
};
use crate::dtype::{QDType, QRange};
use crate::element::QInt;
use crate::kernels::{self, LearnableParams};
use crate::qparams::{PerChannelQParams, QParams, ZeroPoints};

fn e<T>(r: crate::Result<T>) -> CaseResult<T> {
    r.map_err(|e| format!("error: {e}"))
}

fn floats(a: &ArrayD<f32>) -> Vec<f64> {
    a.iter().map(|&v| v as f64).collect()
}

fn ints<Q: QInt>(a: &ArrayD<Q>) -> Vec<i64> {
    a.iter().map(|v| v.to_i32() as i64).collect()
}

fn to_storage<Q: QInt>(q: &ArrayD<i64>, dtype: QDType) -> CaseResult<ArrayD<Q>> {
    if q.iter().any(|&v| v < dtype.min() || v > dtype.max()) {
        return Err("input holds values outside the dtype".into());
    }
    Ok(q.mapv(|v| Q::from_i32_wrapping(v as i32)))
}

/// Runs `$body` with `$Q` bound to the natural storage type of `$dtype`.
macro_rules! with_storage {
    ($dtype:expr, $Q:ident, $body:block) => {
        match $dtype {
            QDType::QUInt8 | QDType::QUInt4 => {
                type $Q = u8;
                $body
            }
            QDType::QInt8 | QDType::QInt4 => {
                type $Q = i8;
                $body
            }
            QDType::QUInt16 => {
                type $Q = u16;
                $body
            }
            QDType::QInt16 => {
                type $Q = i16;
                $body
            }
            QDType::QInt32 => {
                type $Q = i32;
                $body
            }
        }
    };
}

fn per_channel(case: &Case, dtype: QDType) -> CaseResult<PerChannelQParams> {
    let scales: Vec<f32> = f64_list(case.field("scales")?)?
        .into_iter()
        .map(|v| v as f32)
        .collect();
    let zps: Vec<i32> = i64_list(case.field("zero_points")?)?
        .into_iter()
        .map(|v| v as i32)
        .collect();
    let axis = case.i64_field("axis")? as isize;
    e(PerChannelQParams::new(scales, zps, axis, dtype))
}

pub(crate) fn run(case: &Case) -> CaseResult<()> {
    let tol = case.tolerance();
    match case.op.as_str() {
        "quantize_per_tensor" => {
            let x = tensor_f32(case.field("x")?)?;
            let dtype = e(QDType::from_name(case.str_field("dtype")?))?;
            let qp = e(QParams::new(
                case.f64_field("scale")? as f32,
                case.i64_field("zero_point")?,
                dtype,
            ))?;
            let expected = tensor_i64(case.expected("q")?)?;
            with_storage!(dtype, Q, {
                let q: ArrayD<Q> = e(kernels::quantize(&x, &qp))?;
                compare_ints("q", &ints(&q), expected.as_slice().unwrap_or(&[]))
            })
        }
        "dequantize_per_tensor" => {
            let q = tensor_i64(case.field("q")?)?;
            let dtype = e(QDType::from_name(case.str_field("dtype")?))?;
            let qp = e(QParams::new(
                case.f64_field("scale")? as f32,
                case.i64_field("zero_point")?,
                dtype,
            ))?;
            let expected = floats(&tensor_f32(case.expected("x")?)?);
            with_storage!(dtype, Q, {
                let qs: ArrayD<Q> = to_storage(&q, dtype)?;
                let x: ArrayD<f32> = e(kernels::dequantize(&qs, &qp))?;
                compare_floats("x", &floats(&x), &expected, tol)
            })
        }
        "quantize_per_channel" => {
            let x = tensor_f32(case.field("x")?)?;
            let dtype = e(QDType::from_name(case.str_field("dtype")?))?;
            let qp = per_channel(case, dtype)?;
            let expected = tensor_i64(case.expected("q")?)?;
            with_storage!(dtype, Q, {
                let q: ArrayD<Q> = e(kernels::quantize_per_channel(&x, &qp))?;
                compare_ints("q", &ints(&q), expected.as_slice().unwrap_or(&[]))
            })
        }
        "dequantize_per_channel" => {
            let q = tensor_i64(case.field("q")?)?;
            let dtype = e(QDType::from_name(case.str_field("dtype")?))?;
            let qp = per_channel(case, dtype)?;
            let expected = floats(&tensor_f32(case.expected("x")?)?);
            with_storage!(dtype, Q, {
                let qs: ArrayD<Q> = to_storage(&q, dtype)?;
                let x: ArrayD<f32> = e(kernels::dequantize_per_channel(&qs, &qp))?;
                compare_floats("x", &floats(&x), &expected, tol)
            })
        }
        "fake_quantize_per_tensor_affine" => {
            let x = tensor_f32(case.field("x")?)?;
            let range = e(QRange::for_fake_quant(
                case.i64_field("quant_min")?,
                case.i64_field("quant_max")?,
            ))?;
            let qp = e(QParams::with_range(
                case.f64_field("scale")? as f32,
                case.i64_field("zero_point")?,
                range,
            ))?;
            let y = e(kernels::fake_quantize(&x, &qp))?;
            compare_floats(
                "y",
                &floats(&y),
                &floats(&tensor_f32(case.expected("y")?)?),
                tol,
            )?;
            let ones = ArrayD::from_elem(x.raw_dim(), 1.0f32);
            let g = e(kernels::fake_quantize_backward(&x, &ones, &qp))?;
            compare_floats(
                "grad",
                &floats(&g),
                &floats(&tensor_f32(case.expected("grad")?)?),
                tol,
            )
        }
        "fake_quantize_per_channel_affine" => {
            let x = tensor_f32(case.field("x")?)?;
            let range = e(QRange::for_fake_quant(
                case.i64_field("quant_min")?,
                case.i64_field("quant_max")?,
            ))?;
            let scales: Vec<f32> = f64_list(case.field("scales")?)?
                .into_iter()
                .map(|v| v as f32)
                .collect();
            let zps: Vec<i32> = i64_list(case.field("zero_points")?)?
                .into_iter()
                .map(|v| v as i32)
                .collect();
            let qp = e(PerChannelQParams::with_range(
                scales,
                ZeroPoints::Int(zps),
                case.i64_field("axis")? as isize,
                range,
            ))?;
            let y = e(kernels::fake_quantize_per_channel(&x, &qp))?;
            compare_floats(
                "y",
                &floats(&y),
                &floats(&tensor_f32(case.expected("y")?)?),
                tol,
            )?;
            let ones = ArrayD::from_elem(x.raw_dim(), 1.0f32);
            let g = e(kernels::fake_quantize_per_channel_backward(&x, &ones, &qp))?;
            compare_floats(
                "grad",
                &floats(&g),
                &floats(&tensor_f32(case.expected("grad")?)?),
                tol,
            )
        }
        "fake_quantize_learnable_per_tensor_affine" => {
            let x = tensor_f32(case.field("x")?)?;
            let dy = tensor_f32(case.field("dy")?)?;
            let p = LearnableParams {
                scale: case.f64_field("scale")? as f32,
                zero_point: case.f64_field("zero_point")? as f32,
                quant_min: case.i64_field("quant_min")?,
                quant_max: case.i64_field("quant_max")?,
                grad_factor: case.f64_field("grad_factor")? as f32,
            };
            let y = e(kernels::learnable_fake_quantize(&x, &p))?;
            compare_floats(
                "y",
                &floats(&y),
                &floats(&tensor_f32(case.expected("y")?)?),
                tol,
            )?;
            let g = e(kernels::learnable_fake_quantize_backward(&x, &dy, &p))?;
            compare_floats(
                "dx",
                &floats(&g.dx),
                &floats(&tensor_f32(case.expected("dx")?)?),
                tol,
            )?;
            let scalar = |k: &str| -> CaseResult<Vec<f64>> {
                let j = case.expected(k)?;
                match j.as_f64() {
                    Some(v) => Ok(vec![v]),
                    None => match j.get("data") {
                        Some(d) => f64_list(d),
                        None => f64_list(j),
                    },
                }
            };
            compare_floats("dscale", &[g.dscale as f64], &scalar("dscale")?, tol)?;
            compare_floats(
                "dzero_point",
                &[g.dzero_point as f64],
                &scalar("dzero_point")?,
                tol,
            )
        }
        _ => Err(super::UNSUPPORTED.into()),
    }
}
