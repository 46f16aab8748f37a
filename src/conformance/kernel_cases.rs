//! Kernel cases (`kernels.jsonl`).

use ndarray::ArrayD;

use super::case::{
    Case, CaseResult, compare_floats, compare_ints, f32_list, f64_list, int_list, tensor_f32,
    tensor_i64,
};
use super::json::{exact_f32, int};
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
    if let Some(v) = q.iter().find(|&&v| v < dtype.min() || v > dtype.max()) {
        return Err(format!(
            "`q` holds {v}, outside {dtype} ({}..={})",
            dtype.min(),
            dtype.max()
        ));
    }
    // Every value is in the dtype's range, which the storage type `Q` holds: exact.
    Ok(q.mapv(|v| Q::from_i32_wrapping(v as i32)))
}

/// Runs `$body` with `$Q` bound to the natural storage type of `$dtype`.
macro_rules! with_storage {
    ($dtype:expr_2021, $Q:ident, $body:block) => {
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
    let scales = case.read("scales", f32_list)?;
    let zps = case.read("zero_points", int_list::<i32>)?;
    let axis = case.read("axis", int::<isize>)?;
    e(PerChannelQParams::new(scales, zps, axis, dtype))
}

/// The per-tensor `scale` (an exact f32) and integer `zero_point`.
fn per_tensor(case: &Case, dtype: QDType) -> CaseResult<QParams> {
    e(QParams::new(
        case.read("scale", exact_f32)?,
        case.i64_field("zero_point")?,
        dtype,
    ))
}

pub(crate) fn run(case: &Case) -> CaseResult<()> {
    let tol = case.tolerance();
    match case.op.as_str() {
        "quantize_per_tensor" => {
            let x = case.read("x", tensor_f32)?;
            let dtype = e(QDType::from_name(case.str_field("dtype")?))?;
            let qp = per_tensor(case, dtype)?;
            let expected = case.read_expected("q", tensor_i64)?;
            with_storage!(dtype, Q, {
                let q: ArrayD<Q> = e(kernels::quantize(&x, &qp))?;
                compare_ints("q", &ints(&q), expected.as_slice().unwrap_or(&[]))
            })
        }
        "dequantize_per_tensor" => {
            let q = case.read("q", tensor_i64)?;
            let dtype = e(QDType::from_name(case.str_field("dtype")?))?;
            let qp = per_tensor(case, dtype)?;
            let expected = floats(&case.read_expected("x", tensor_f32)?);
            with_storage!(dtype, Q, {
                let qs: ArrayD<Q> = to_storage(&q, dtype)?;
                let x: ArrayD<f32> = e(kernels::dequantize(&qs, &qp))?;
                compare_floats("x", &floats(&x), &expected, tol)
            })
        }
        "quantize_per_channel" => {
            let x = case.read("x", tensor_f32)?;
            let dtype = e(QDType::from_name(case.str_field("dtype")?))?;
            let qp = per_channel(case, dtype)?;
            let expected = case.read_expected("q", tensor_i64)?;
            with_storage!(dtype, Q, {
                let q: ArrayD<Q> = e(kernels::quantize_per_channel(&x, &qp))?;
                compare_ints("q", &ints(&q), expected.as_slice().unwrap_or(&[]))
            })
        }
        "dequantize_per_channel" => {
            let q = case.read("q", tensor_i64)?;
            let dtype = e(QDType::from_name(case.str_field("dtype")?))?;
            let qp = per_channel(case, dtype)?;
            let expected = floats(&case.read_expected("x", tensor_f32)?);
            with_storage!(dtype, Q, {
                let qs: ArrayD<Q> = to_storage(&q, dtype)?;
                let x: ArrayD<f32> = e(kernels::dequantize_per_channel(&qs, &qp))?;
                compare_floats("x", &floats(&x), &expected, tol)
            })
        }
        "fake_quantize_per_tensor_affine" => {
            let x = case.read("x", tensor_f32)?;
            let range = e(QRange::for_fake_quant(
                case.i64_field("quant_min")?,
                case.i64_field("quant_max")?,
            ))?;
            let qp = e(QParams::with_range(
                case.read("scale", exact_f32)?,
                case.i64_field("zero_point")?,
                range,
            ))?;
            let y = e(kernels::fake_quantize(&x, &qp))?;
            compare_floats(
                "y",
                &floats(&y),
                &floats(&case.read_expected("y", tensor_f32)?),
                tol,
            )?;
            let ones = ArrayD::from_elem(x.raw_dim(), 1.0f32);
            let g = e(kernels::fake_quantize_backward(&x, &ones, &qp))?;
            compare_floats(
                "grad",
                &floats(&g),
                &floats(&case.read_expected("grad", tensor_f32)?),
                tol,
            )
        }
        "fake_quantize_per_channel_affine" => {
            let x = case.read("x", tensor_f32)?;
            let range = e(QRange::for_fake_quant(
                case.i64_field("quant_min")?,
                case.i64_field("quant_max")?,
            ))?;
            let qp = e(PerChannelQParams::with_range(
                case.read("scales", f32_list)?,
                ZeroPoints::Int(case.read("zero_points", int_list::<i32>)?),
                case.read("axis", int::<isize>)?,
                range,
            ))?;
            let y = e(kernels::fake_quantize_per_channel(&x, &qp))?;
            compare_floats(
                "y",
                &floats(&y),
                &floats(&case.read_expected("y", tensor_f32)?),
                tol,
            )?;
            let ones = ArrayD::from_elem(x.raw_dim(), 1.0f32);
            let g = e(kernels::fake_quantize_per_channel_backward(&x, &ones, &qp))?;
            compare_floats(
                "grad",
                &floats(&g),
                &floats(&case.read_expected("grad", tensor_f32)?),
                tol,
            )
        }
        "fake_quantize_learnable_per_tensor_affine" => {
            let x = case.read("x", tensor_f32)?;
            let dy = case.read("dy", tensor_f32)?;
            let p = LearnableParams {
                scale: case.read("scale", exact_f32)?,
                zero_point: case.read("zero_point", exact_f32)?,
                quant_min: case.i64_field("quant_min")?,
                quant_max: case.i64_field("quant_max")?,
                grad_factor: case.f64_field("grad_factor")? as f32,
            };
            let y = e(kernels::learnable_fake_quantize(&x, &p))?;
            compare_floats(
                "y",
                &floats(&y),
                &floats(&case.read_expected("y", tensor_f32)?),
                tol,
            )?;
            let g = e(kernels::learnable_fake_quantize_backward(&x, &dy, &p))?;
            compare_floats(
                "dx",
                &floats(&g.dx),
                &floats(&case.read_expected("dx", tensor_f32)?),
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
