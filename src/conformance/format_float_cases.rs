//! Float format cases (`formats.jsonl`): float8 casts, scaled float8, fp6/fp4 casts, MX,
//! NVFP4.

use ndarray::ArrayD;

use super::case::{Case, CaseResult, compare_floats, compare_ints, tensor_f32, tensor_i64};
use crate::formats::Dequantize as _;
use crate::formats::float8::{Float8Granularity, Float8Recipe, Float8Spec};
use crate::formats::minifloat::MiniFloat;
use crate::formats::mx::{MxScaleMode, MxSpec};
use crate::formats::nvfp4::Nvfp4Spec;

pub(crate) fn e<T>(r: crate::Result<T>) -> CaseResult<T> {
    r.map_err(|e| format!("error: {e}"))
}

pub(crate) fn floats(a: impl IntoIterator<Item = f32>) -> Vec<f64> {
    a.into_iter().map(f64::from).collect()
}

pub(crate) fn ints<T: Copy + Into<i64>>(a: impl IntoIterator<Item = T>) -> Vec<i64> {
    a.into_iter().map(Into::into).collect()
}

/// Compares an expected float tensor member (bit for bit).
pub(crate) fn expect_floats(case: &Case, key: &str, got: &[f32]) -> CaseResult<()> {
    let want = case.read_expected(key, tensor_f32)?;
    compare_floats(
        key,
        &floats(got.iter().copied()),
        &floats(want.iter().copied()),
        None,
    )
}

/// Compares an expected integer tensor member.
pub(crate) fn expect_ints<T: Copy + Into<i64>>(
    case: &Case,
    key: &str,
    got: &[T],
) -> CaseResult<()> {
    let want = case.read_expected(key, tensor_i64)?;
    compare_ints(
        key,
        &ints(got.iter().copied()),
        &want.iter().copied().collect::<Vec<_>>(),
    )
}

fn dtype(case: &Case, key: &str) -> CaseResult<MiniFloat> {
    e(case.str_field(key)?.parse())
}

pub(crate) fn run(case: &Case) -> CaseResult<()> {
    let x: ArrayD<f32> = case.read("x", tensor_f32)?;
    match case.op.as_str() {
        "float8_cast" | "float8_cast_saturating" | "fp_subbyte_cast" => {
            let to = dtype(case, "dtype")?;
            let codes: Vec<u8> = if case.op == "float8_cast_saturating" {
                x.iter().map(|&v| to.encode_saturating(v)).collect()
            } else {
                x.iter().map(|&v| to.encode(v)).collect()
            };
            expect_ints(case, "codes", &codes)?;
            let values: Vec<f32> = codes.iter().map(|&c| to.decode(c)).collect();
            expect_floats(case, "values", &values)
        }
        "float8_scaled_training" | "float8_scaled_inference" => {
            let recipe = if case.op == "float8_scaled_training" {
                Float8Recipe::Training {
                    round_scales_to_power_of_2: case
                        .field("round_scales_to_power_of_2")?
                        .as_bool()
                        .ok_or("`round_scales_to_power_of_2` is not a bool")?,
                }
            } else {
                Float8Recipe::Inference
            };
            let granularity = match case.str_field("granularity")? {
                "tensorwise" => Float8Granularity::Tensorwise,
                "rowwise" => Float8Granularity::Rowwise,
                g => return Err(format!("unknown granularity `{g}`")),
            };
            let spec = e(Float8Spec::new(dtype(case, "dtype")?, recipe, granularity))?;
            let row_len = *x.shape().last().ok_or("`x` is 0-d")?;
            let t = e(spec.quantize_rows(&x.iter().copied().collect::<Vec<_>>(), row_len))?;
            expect_floats(case, "scale", &t.scales)?;
            expect_ints(case, "codes", &t.codes)?;
            expect_floats(case, "dequantized", &t.dequantize())
        }
        "mx_quantize" => {
            let mode = match case.str_field("scaling_mode")? {
                "floor" => MxScaleMode::Floor,
                "rceil" => MxScaleMode::Rceil,
                "ceil" => MxScaleMode::Ceil,
                "even" => MxScaleMode::Even,
                m => return Err(format!("unknown scaling_mode `{m}`")),
            };
            let block =
                usize::try_from(case.i64_field("block_size")?).map_err(|e| e.to_string())?;
            let spec = e(MxSpec::new(dtype(case, "elem_dtype")?, block, mode))?;
            let row_len = *x.shape().last().ok_or("`x` is 0-d")?;
            let t = e(spec.quantize_rows(&x.iter().copied().collect::<Vec<_>>(), row_len))?;
            expect_ints(case, "scale_e8m0", &t.scales)?;
            expect_ints(case, "codes", &t.codes)?;
            expect_floats(case, "dequantized", &t.dequantize())?;
            if case.expected("packed").is_ok() {
                expect_ints(case, "packed", &e(t.packed())?)?;
            }
            Ok(())
        }
        "nvfp4_quantize" => {
            let pts = case
                .field("per_tensor_scale")?
                .as_bool()
                .ok_or("`per_tensor_scale` is not a bool")?;
            let row_len = *x.shape().last().ok_or("`x` is 0-d")?;
            let t =
                e(Nvfp4Spec::new(pts)
                    .quantize_rows(&x.iter().copied().collect::<Vec<_>>(), row_len))?;
            expect_ints(case, "block_scale_codes", &t.block_scales)?;
            expect_ints(case, "codes", &t.codes)?;
            expect_ints(case, "packed", &e(t.packed())?)?;
            expect_floats(case, "dequantized", &t.dequantize())?;
            if let Some(p) = t.per_tensor_scale {
                let want = case.read_expected("per_tensor_scale", super::json::number)?;
                compare_floats("per_tensor_scale", &[f64::from(p)], &[want], None)?;
            }
            Ok(())
        }
        _ => Err(super::UNSUPPORTED.to_string()),
    }
}
