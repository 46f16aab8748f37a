//! Integer and block format cases (`formats.jsonl`): group-wise affine, tinygemm, NF4, GGML.

use super::case::{Case, CaseResult, tensor_f32, tensor_i64};
use super::format_float_cases::{e, expect_floats, expect_ints};
use super::json::{Json, number};
use crate::formats::Dequantize as _;
use crate::formats::ggml::GgmlType;
use crate::formats::groupwise::{GroupMapping, GroupwiseSpec, QParamsDtype, TinygemmSpec};
use crate::formats::nf4::Nf4Spec;

fn usize_field(case: &Case, key: &str) -> CaseResult<usize> {
    usize::try_from(case.i64_field(key)?).map_err(|e| format!("`{key}`: {e}"))
}

fn i32_field(case: &Case, key: &str) -> CaseResult<i32> {
    i32::try_from(case.i64_field(key)?).map_err(|e| format!("`{key}`: {e}"))
}

/// `eps` as torchao received it (`null`: the smallest normal f32).
fn eps(case: &Case) -> CaseResult<f32> {
    match case.json.get("eps") {
        None | Some(Json::Null) => Ok(f32::MIN_POSITIVE),
        Some(j) => Ok(number(j)? as f32),
    }
}

fn rows(case: &Case) -> CaseResult<(Vec<f32>, usize)> {
    let x = case.read("x", tensor_f32)?;
    let row_len = *x.shape().last().ok_or("`x` is 0-d")?;
    Ok((x.iter().copied().collect(), row_len))
}

pub(crate) fn run(case: &Case) -> CaseResult<()> {
    match case.op.as_str() {
        "affine_groupwise" => {
            let (x, row_len) = rows(case)?;
            let mapping = match case.str_field("mapping")? {
                "SYMMETRIC" => GroupMapping::Symmetric,
                "ASYMMETRIC" => GroupMapping::Asymmetric,
                "SYMMETRIC_NO_CLIPPING_ERR" => GroupMapping::SymmetricNoClippingErr,
                m => return Err(format!("unknown mapping `{m}`")),
            };
            let spec = e(GroupwiseSpec::new(
                i32_field(case, "quant_min")?,
                i32_field(case, "quant_max")?,
                mapping,
                usize_field(case, "group_size")?,
                eps(case)?,
            ))?;
            let t = e(spec.quantize_rows(&x, row_len))?;
            expect_floats(case, "scale", &t.scales)?;
            expect_ints(case, "zero_point", &t.zero_points)?;
            expect_ints(case, "codes", &t.codes)?;
            expect_floats(case, "dequantized", &t.dequantize())
        }
        "affine_groupwise_tinygemm" => {
            let (x, row_len) = rows(case)?;
            let dtype = match case.str_field("qparams_dtype")? {
                "float32" => QParamsDtype::F32,
                "bfloat16" => QParamsDtype::BF16,
                d => return Err(format!("unknown qparams_dtype `{d}`")),
            };
            if (case.i64_field("quant_min")?, case.i64_field("quant_max")?) != (0, 15) {
                return Err("tinygemm's range is 0..=15".into());
            }
            let spec = e(TinygemmSpec::new(
                usize_field(case, "group_size")?,
                eps(case)?,
                dtype,
            ))?;
            let t = e(spec.quantize_rows(&x, row_len))?;
            expect_floats(case, "scale", &t.scales)?;
            expect_floats(case, "zero_point", &t.zero_points)?;
            expect_ints(case, "codes", &t.codes)?;
            expect_floats(case, "dequantized", &t.dequantize())
        }
        "nf4_quantize" => {
            let (x, _) = rows(case)?;
            let spec = e(Nf4Spec::torchao(
                usize_field(case, "block_size")?,
                usize_field(case, "scaler_block_size")?,
            ))?;
            let t = e(spec.quantize(&x))?;
            expect_floats(case, "absmax", &t.absmax)?;
            expect_ints(case, "codes", &t.codes)?;
            expect_ints(case, "packed", &e(t.packed())?)?;
            expect_ints(case, "quantized_scalers", &t.quantized_scalers)?;
            expect_floats(case, "quantization_factor", &t.quantization_factor)?;
            let mean = case.read_expected("scaler_mean", number)?;
            super::case::compare_floats("scaler_mean", &[f64::from(t.scaler_mean)], &[mean], None)?;
            expect_floats(case, "dequantized", &t.dequantize())
        }
        "ggml_quantize" | "ggml_dequantize" => {
            let ty: GgmlType = e(case.str_field("qtype")?.parse())?;
            if usize_field(case, "block_size")? != ty.block_size()
                || usize_field(case, "type_size")? != ty.type_size()
            {
                return Err(format!("{ty}: block_size / type_size differ from ggml's"));
            }
            let blocks: Vec<u8> = if case.op == "ggml_quantize" {
                let (x, row_len) = rows(case)?;
                let b = e(ty.quantize_rows(&x, row_len))?;
                expect_ints(case, "blocks", &b)?;
                b
            } else {
                let b = case.read("blocks", tensor_i64)?;
                b.iter()
                    .map(|&v| {
                        u8::try_from(v).map_err(|_| format!("`blocks` holds {v}, not a byte"))
                    })
                    .collect::<CaseResult<_>>()?
            };
            let n = e(ty.row_bytes(0)).map(|_| blocks.len() / ty.type_size() * ty.block_size())?;
            let mut y = vec![0.0f32; n];
            e(ty.dequantize_row(&blocks, &mut y))?;
            expect_floats(case, "dequantized", &y)
        }
        _ => Err(super::UNSUPPORTED.to_string()),
    }
}
