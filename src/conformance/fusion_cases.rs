//! Fusion cases (`fusion.jsonl`): `fuse_conv_bn` and `fuse_linear_bn`.

use ndarray::ArrayD;

use super::case::{Case, CaseResult, compare_floats, tensor_f32};
use super::json::{Json, int};
use crate::fusion::{ConvLayout, fuse_conv_bn_weights, fuse_linear_bn_weights};
use crate::nn::BatchNormParams;

fn optional_tensor(case: &Case, key: &str) -> CaseResult<Option<ArrayD<f32>>> {
    match case.json.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(_) => case.read(key, tensor_f32).map(Some),
    }
}

fn list(case: &Case, key: &str) -> CaseResult<Vec<f32>> {
    Ok(case.read(key, tensor_f32)?.iter().copied().collect())
}

fn optional_list(case: &Case, key: &str) -> CaseResult<Option<Vec<f32>>> {
    Ok(optional_tensor(case, key)?.map(|t| t.iter().copied().collect()))
}

fn batch_norm(case: &Case) -> CaseResult<BatchNormParams> {
    Ok(BatchNormParams {
        running_mean: list(case, "bn_running_mean")?,
        running_var: list(case, "bn_running_var")?,
        weight: optional_list(case, "bn_weight")?,
        bias: optional_list(case, "bn_bias")?,
        eps: case.f64_field("bn_eps")?,
    })
}

fn floats(a: &ArrayD<f32>) -> Vec<f64> {
    a.iter().map(|&v| v as f64).collect()
}

fn compare(case: &Case, weight: &ArrayD<f32>, bias: &ArrayD<f32>) -> CaseResult<()> {
    let tol = case.tolerance();
    let ew = case.read_expected("weight", tensor_f32)?;
    if ew.shape() != weight.shape() {
        return Err(format!(
            "weight: shape {:?}, expected {:?}",
            weight.shape(),
            ew.shape()
        ));
    }
    compare_floats("weight", &floats(weight), &floats(&ew), tol)?;
    let eb = case.read_expected("bias", tensor_f32)?;
    compare_floats("bias", &floats(bias), &floats(&eb), tol)
}

pub(crate) fn run(case: &Case) -> CaseResult<()> {
    let bn = batch_norm(case)?;
    let (w, b) = match case.op.as_str() {
        "fuse_conv_bn" => {
            let w = case.read("conv_weight", tensor_f32)?;
            let bias = optional_tensor(case, "conv_bias")?;
            let transpose = match case.json.get("transpose") {
                None | Some(Json::Null) => false,
                Some(t) => t.as_bool().ok_or("`transpose` is not a boolean")?,
            };
            // The groups of a transposed convolution: given, or implied by the BN's channel
            // count (out = groups · weight.shape[1]).
            let groups = match case.json.get("groups") {
                None | Some(Json::Null) => None,
                Some(_) => Some(case.read("groups", int::<usize>)?),
            };
            let groups = match groups {
                Some(g) if g >= 1 => g,
                Some(g) => return Err(format!("bad `groups` {g}")),
                None if transpose && w.ndim() >= 2 && w.shape()[1] > 0 => {
                    (bn.num_features() / w.shape()[1]).max(1)
                }
                None => 1,
            };
            let layout = if transpose {
                ConvLayout::Transposed { groups }
            } else {
                ConvLayout::Conv
            };
            fuse_conv_bn_weights(&w, bias.as_ref(), &bn, layout)
                .map_err(|e| format!("error: {e}"))?
        }
        "fuse_linear_bn" => {
            let w = case.read("linear_weight", tensor_f32)?;
            let bias = optional_tensor(case, "linear_bias")?;
            fuse_linear_bn_weights(&w, bias.as_ref(), &bn).map_err(|e| format!("error: {e}"))?
        }
        _ => return Err(super::UNSUPPORTED.into()),
    };
    compare(case, &w, &b)
}
