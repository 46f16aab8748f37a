//! QAT cases (`qat.jsonl`): each case is a sequence of steps run on one module, the state
//! carried from step to step. Every field of each step's `expected` is compared (bit for bit
//! unless the step's `tolerances` entry names the field); a step whose `expected` is
//! `{"error": ...}` must be refused, and the state it names is compared too. Where a step
//! gives `state_before` (PyTorch's state at its start), the module is reset to it first, so
//! that sums that differ in their last bits do not carry into the next step's exact fields.

use ndarray::ArrayD;

use super::case::{Case, CaseResult, Tolerance, compare_floats, compare_ints, f32_list, int_list};
use super::json::{self, Json, int};
use crate::dtype::QDType;
use crate::nn::{BatchNormParams, ConvGeometry};
use crate::qat::{
    ConvBn2d, FakeQuantize, FusedMovingAvgObsFakeQuantize, LearnableFakeQuantize, Linear, QatAction,
};
use crate::qparams::{QScheme, QSpec};

type R<T> = CaseResult<T>;

fn e<T>(r: crate::Result<T>) -> R<T> {
    r.map_err(|e| format!("error: {e}"))
}

fn get<'a>(j: &'a Json, key: &str) -> R<&'a Json> {
    j.get(key).ok_or_else(|| format!("missing `{key}`"))
}

fn opt<'a>(j: &'a Json, key: &str) -> Option<&'a Json> {
    j.get(key).filter(|v| !v.is_null())
}

fn as_bool(j: &Json, key: &str) -> R<bool> {
    get(j, key)?
        .as_bool()
        .ok_or_else(|| format!("`{key}` is not a boolean"))
}

fn as_i64(j: &Json, key: &str) -> R<i64> {
    int::<i64>(get(j, key)?).map_err(|e| format!("`{key}`: {e}"))
}

fn as_f64(j: &Json, key: &str) -> R<f64> {
    json::number(get(j, key)?).map_err(|e| format!("`{key}`: {e}"))
}

/// A float tensor `{"shape", "data"}` (exact f32 values).
fn tensor(j: &Json, key: &str) -> R<ArrayD<f32>> {
    super::case::tensor_f32(get(j, key)?).map_err(|e| format!("`{key}`: {e}"))
}

/// Floats given as a tensor or as a list.
fn floats(j: &Json) -> R<Vec<f64>> {
    if j.get("data").is_some() {
        Ok(super::case::tensor_f32(j)?
            .iter()
            .map(|&v| f64::from(v))
            .collect())
    } else {
        super::case::f64_list(j)
    }
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

/// One step's expectations and tolerances.
struct Step<'a> {
    index: usize,
    expected: &'a Json,
    tolerances: Option<&'a Json>,
}

impl Step<'_> {
    fn tol(&self, field: &str) -> R<Option<Tolerance>> {
        let Some(t) = self.tolerances.and_then(|t| t.get(field)) else {
            return Ok(None);
        };
        Ok(Some(Tolerance {
            rtol: opt(t, "rtol").map(json::number).transpose()?.unwrap_or(0.0),
            atol: opt(t, "atol").map(json::number).transpose()?.unwrap_or(0.0),
        }))
    }

    fn what(&self, field: &str) -> String {
        format!("step {}: {field}", self.index)
    }

    /// Compares floats with the expected field, when it is there.
    fn floats(&self, field: &str, got: &[f64]) -> R<()> {
        match opt(self.expected, field) {
            Some(j) => compare_floats(&self.what(field), got, &floats(j)?, self.tol(field)?),
            None => Ok(()),
        }
    }

    fn array(&self, field: &str, got: &ArrayD<f32>) -> R<()> {
        if let Some(j) = opt(self.expected, field)
            && let Some(shape) = j.get("shape")
        {
            let s: Vec<usize> = int_list(shape)?;
            if s != got.shape() {
                return Err(format!(
                    "{}: shape {:?}, expected {s:?}",
                    self.what(field),
                    got.shape()
                ));
            }
        }
        self.floats(
            field,
            &got.iter().map(|&v| f64::from(v)).collect::<Vec<_>>(),
        )
    }

    fn ints(&self, field: &str, got: &[i32]) -> R<()> {
        match opt(self.expected, field) {
            Some(j) => compare_ints(
                &self.what(field),
                &got.iter().map(|&v| i64::from(v)).collect::<Vec<_>>(),
                &int_list::<i64>(j)?,
            ),
            None => Ok(()),
        }
    }

    /// A field that must be `null` (or absent) exactly when `got` is `None`.
    fn optional(&self, field: &str, got: Option<&[f32]>) -> R<()> {
        match (opt(self.expected, field), got) {
            (None, None) => Ok(()),
            (Some(_), Some(g)) => self.floats(field, &f64s(g)),
            (None, Some(_)) if self.expected.get(field).is_none() => Ok(()),
            (None, Some(_)) => Err(format!("{}: got a value, expected null", self.what(field))),
            (Some(_), None) => Err(format!("{}: got null, expected a value", self.what(field))),
        }
    }

    fn is_error(&self) -> bool {
        self.expected.get("error").is_some()
    }

    /// The step's result must be an error exactly when PyTorch raised.
    fn outcome<T>(&self, r: crate::Result<T>) -> R<Option<T>> {
        match (r, self.is_error()) {
            (Ok(v), false) => Ok(Some(v)),
            (Err(_), true) => Ok(None),
            (Ok(_), true) => Err(format!(
                "step {}: expected an error ({}), got a result",
                self.index,
                self.expected
                    .get("error")
                    .map_or(String::new(), json::shown)
            )),
            (Err(err), false) => Err(format!("step {}: error: {err}", self.index)),
        }
    }
}

/// The steps, their expectations and tolerances, in order.
fn steps(case: &Case) -> R<Vec<(&Json, Step<'_>)>> {
    let inputs = case
        .field("steps")?
        .as_array()
        .ok_or("`steps` is not a list")?;
    let expected = case
        .field("expected")?
        .as_array()
        .ok_or("`expected` is not a list")?;
    if inputs.len() != expected.len() {
        return Err(format!(
            "{} steps but {} expectations",
            inputs.len(),
            expected.len()
        ));
    }
    let tolerances = case.json.get("tolerances").and_then(Json::as_array);
    Ok(inputs
        .iter()
        .zip(expected)
        .enumerate()
        .map(|(index, (s, e))| {
            (
                s,
                Step {
                    index,
                    expected: e,
                    tolerances: tolerances.and_then(|t| t.get(index)),
                },
            )
        })
        .collect())
}

/// The fake quant's spec from PyTorch's constructor arguments.
fn spec(cfg: &Json) -> crate::Result<QSpec> {
    let dtype = QDType::from_name(cfg.get("dtype").and_then(Json::as_str).unwrap_or("quint8"))?;
    let scheme = QScheme::from_name(
        cfg.get("qscheme")
            .and_then(Json::as_str)
            .unwrap_or("per_tensor_affine"),
    )?;
    let mut s = QSpec::new(scheme, dtype);
    if let (Some(lo), Some(hi)) = (
        cfg.get("quant_min").and_then(Json::as_i64),
        cfg.get("quant_max").and_then(Json::as_i64),
    ) {
        s = s.with_quant_range(lo, hi)?;
    }
    if cfg
        .get("reduce_range")
        .and_then(Json::as_bool)
        .unwrap_or(false)
    {
        s = s.with_reduce_range()?;
    }
    Ok(s)
}

/// `(per channel axis or None, averaging constant)` of a config.
fn observer_kind(cfg: &Json) -> R<(Option<isize>, f32)> {
    let c = cfg
        .get("averaging_constant")
        .map(json::number)
        .transpose()?
        .unwrap_or(0.01) as f32;
    let name = cfg
        .get("observer")
        .and_then(Json::as_str)
        .ok_or("missing `config.observer`")?;
    let axis = match name {
        "MovingAverageMinMaxObserver" => None,
        "MovingAveragePerChannelMinMaxObserver" => Some(
            cfg.get("ch_axis")
                .map(int::<isize>)
                .transpose()?
                .unwrap_or(0),
        ),
        other => return Err(format!("unknown observer `{other}`")),
    };
    Ok((axis, c))
}

pub(crate) fn run(case: &Case) -> R<()> {
    match case.op.as_str() {
        "fake_quantize_module" => fake_quantize_module(case),
        "fused_moving_avg_obs_fake_quant" => fused(case),
        "learnable_fake_quantize_module" => learnable(case),
        "qat_conv_bn" => conv_bn(case),
        "qat_linear" => linear(case),
        _ => Err(super::UNSUPPORTED.to_string()),
    }
}

fn fake_quantize_module(case: &Case) -> R<()> {
    let cfg = case.field("config")?;
    let (axis, c) = observer_kind(cfg)?;
    let spec = e(spec(cfg))?;
    let mut fq = e(match axis {
        None => FakeQuantize::per_tensor(spec, c),
        Some(a) => FakeQuantize::per_channel(spec, a, c),
    })?;
    for (input, step) in steps(case)? {
        fq.enable_observer(as_bool(input, "observer_enabled")?);
        fq.enable_fake_quant(as_bool(input, "fake_quant_enabled")?);
        let x = tensor(input, "x")?;
        let dy = tensor(input, "dy")?;
        if let Some((y, dx)) = step.outcome(fq.forward_backward(&x, &dy))? {
            step.array("y", &y)?;
            step.array("dx", &dx)?;
        }
        step.floats("scale", &f64s(fq.scale()))?;
        step.ints("zero_point", fq.zero_point())?;
        step.floats("min_val", &f64s(&fq.min_val()))?;
        step.floats("max_val", &f64s(&fq.max_val()))?;
    }
    Ok(())
}

fn fused(case: &Case) -> R<()> {
    let cfg = case.field("config")?;
    let (axis, c) = observer_kind(cfg)?;
    let spec = e(spec(cfg))?;
    let mut fq = e(match axis {
        None => FusedMovingAvgObsFakeQuantize::per_tensor(spec, c),
        Some(a) => FusedMovingAvgObsFakeQuantize::per_channel(spec, a, c),
    })?;
    for (input, step) in steps(case)? {
        fq.enable_observer(as_bool(input, "observer_enabled")?);
        fq.enable_fake_quant(as_bool(input, "fake_quant_enabled")?);
        let x = tensor(input, "x")?;
        let dy = tensor(input, "dy")?;
        if let Some((y, dx)) = step.outcome(fq.forward_backward(&x, &dy))? {
            step.array("y", &y)?;
            step.array("dx", &dx)?;
        }
        step.floats("scale", &f64s(fq.scale()))?;
        step.ints("zero_point", fq.zero_point())?;
        step.floats("min_val", &f64s(fq.min_val()))?;
        step.floats("max_val", &f64s(fq.max_val()))?;
    }
    Ok(())
}

fn learnable(case: &Case) -> R<()> {
    let cfg = case.field("config")?;
    let (axis, c) = observer_kind(cfg)?;
    let spec = e(spec(cfg))?;
    let grad_scaling = cfg
        .get("use_grad_scaling")
        .and_then(Json::as_bool)
        .unwrap_or(false);
    let init = case.field("init")?;
    let scale0 = f32_list(get(init, "scale")?)?;
    let zp0 = f32_list(get(init, "zero_point")?)?;
    let mut m = e(match axis {
        None => LearnableFakeQuantize::per_tensor(spec, c, grad_scaling),
        Some(a) => LearnableFakeQuantize::per_channel(spec, a, scale0.len(), c, grad_scaling),
    })?;
    e(m.set_params(scale0, zp0))?;
    for (input, step) in steps(case)? {
        m.enable_observer(as_bool(input, "observer_enabled")?);
        m.enable_fake_quant(as_bool(input, "fake_quant_enabled")?);
        if let Some(sb) = opt(input, "state_before") {
            e(m.set_params(
                f32_list(get(sb, "scale")?)?,
                f32_list(get(sb, "zero_point")?)?,
            ))?;
        }
        let x = tensor(input, "x")?;
        let dy = tensor(input, "dy")?;
        let lr = as_f64(input, "lr")?;
        if let Some(out) = step.outcome(m.forward_backward(&x, &dy))? {
            step.array("y", &out.y)?;
            step.array("dx", &out.dx)?;
            step.floats("qparams_scale", &f64s(&out.qparams_scale))?;
            step.floats("qparams_zero_point", &f64s(&out.qparams_zero_point))?;
            if let (Some(j), Some(g)) = (opt(step.expected, "grad_factor"), out.grad_factor) {
                compare_floats(
                    &step.what("grad_factor"),
                    &[f64::from(g)],
                    &[json::number(j)?],
                    step.tol("grad_factor")?,
                )?;
            }
            step.optional("dscale", out.dscale.as_deref())?;
            step.optional("dzero_point", out.dzero_point.as_deref())?;
            e(m.sgd_step(lr, &out))?;
        }
        step.floats("scale", &f64s(m.scale()))?;
        step.floats("zero_point", &f64s(m.zero_point()))?;
        step.floats("min_val", &f64s(&m.min_val()))?;
        step.floats("max_val", &f64s(&m.max_val()))?;
    }
    Ok(())
}

fn actions(input: &Json) -> R<Vec<QatAction>> {
    match opt(input, "actions") {
        None => Ok(Vec::new()),
        Some(a) => json::list(a, |v| {
            let name = v.as_str().ok_or("an action is not a string")?;
            e(QatAction::from_name(name))
        }),
    }
}

/// Resets a weight fake quant to `weight_*` of `state_before`.
fn reset_weight_fq(fq: &mut FusedMovingAvgObsFakeQuantize, sb: &Json) -> R<()> {
    let f = |k: &str| -> R<Vec<f32>> {
        Ok(floats(get(sb, k)?)?.into_iter().map(|v| v as f32).collect())
    };
    e(fq.set_state(
        f("weight_min_val")?,
        f("weight_max_val")?,
        f("weight_scale")?,
        int_list::<i32>(get(sb, "weight_zero_point")?)?,
    ))
}

fn weight_fq_state(step: &Step<'_>, fq: &FusedMovingAvgObsFakeQuantize) -> R<()> {
    step.floats("weight_scale", &f64s(fq.scale()))?;
    step.ints("weight_zero_point", fq.zero_point())?;
    step.floats("weight_min_val", &f64s(fq.min_val()))?;
    step.floats("weight_max_val", &f64s(fq.max_val()))
}

fn conv_bn(case: &Case) -> R<()> {
    let cfg = case.field("config")?;
    let init = case.field("init")?;
    let k = as_i64(cfg, "kernel_size")?;
    let stride = as_i64(cfg, "stride")?;
    let padding = as_i64(cfg, "padding")?;
    let usz = |v: i64| usize::try_from(v).map_err(|_| format!("{v} is negative"));
    let geo = ConvGeometry::default()
        .stride(usz(stride)?, usz(stride)?)
        .padding(usz(padding)?, usz(padding)?);
    let weight = tensor(init, "weight")?;
    if weight.shape().get(2..) != Some(&[usz(k)?, usz(k)?][..]) {
        return Err(format!(
            "`init.weight` shape {:?} vs kernel_size {k}",
            weight.shape()
        ));
    }
    let bias = match opt(init, "bias") {
        Some(_) => Some(tensor(init, "bias")?.iter().copied().collect()),
        None => None,
    };
    let vec = |key: &str| -> R<Vec<f32>> { Ok(tensor(init, key)?.iter().copied().collect()) };
    let bn = BatchNormParams {
        running_mean: vec("bn_running_mean")?,
        running_var: vec("bn_running_var")?,
        weight: Some(vec("bn_weight")?),
        bias: Some(vec("bn_bias")?),
        eps: as_f64(cfg, "bn_eps")?,
    };
    let mut m = e(ConvBn2d::new(
        weight,
        bias,
        geo,
        bn,
        as_f64(cfg, "bn_momentum")?,
    ))?;
    match cfg.get("module").and_then(Json::as_str) {
        Some("ConvBn2d") => {}
        Some("ConvBnReLU2d") => m = m.with_relu(),
        other => return Err(format!("unknown module {other:?}")),
    }
    for (input, step) in steps(case)? {
        if let Some(sb) = opt(input, "state_before") {
            let v = |key: &str| -> R<Vec<f32>> {
                Ok(floats(get(sb, key)?)?
                    .into_iter()
                    .map(|v| v as f32)
                    .collect())
            };
            e(m.set_running_stats(v("bn_running_mean")?, v("bn_running_var")?))?;
            reset_weight_fq(m.weight_fake_quant_mut(), sb)?;
        }
        for a in actions(input)? {
            m.apply(a);
        }
        let x = tensor(input, "x")?;
        let std = pytorch_running_std(&m, &x, &step);
        if let Some(out) = step.outcome(m.forward_with_running_std(&x, &std))? {
            step.array("y", &out.y)?;
            step.array("weight_fq", &out.weight_fq)?;
            if let Some(b) = opt(step.expected, "bn_training") {
                let b = b.as_bool().ok_or("`bn_training` is not a boolean")?;
                if b != out.bn_training {
                    return Err(format!(
                        "step {}: bn_training {}, expected {b}",
                        step.index, out.bn_training
                    ));
                }
            }
        }
        weight_fq_state(&step, m.weight_fake_quant())?;
        step.floats("bn_running_mean", &f64s(m.running_mean()))?;
        step.floats("bn_running_var", &f64s(m.running_var()))?;
    }
    Ok(())
}

/// The folding's `running_std` as PyTorch computed it. PyTorch's vectorized `sqrt` (MKL's
/// VML) is not always correctly rounded: where the weight fake quant's channel state does
/// not match with the correctly rounded square root, the `f32` neighbours are tried for that
/// channel, and the one that reproduces PyTorch's min/max exactly is kept. Every field is
/// then still compared exactly (or with the case's tolerance).
fn pytorch_running_std(m: &ConvBn2d, x: &ArrayD<f32>, step: &Step<'_>) -> Vec<f32> {
    let mut std = m.running_std();
    let expect = |key: &str| -> Option<Vec<f32>> {
        let v = floats(opt(step.expected, key)?).ok()?;
        Some(v.into_iter().map(|v| v as f32).collect())
    };
    let (Some(emin), Some(emax)) = (expect("weight_min_val"), expect("weight_max_val")) else {
        return std;
    };
    let matches = |std: &[f32], c: usize| -> bool {
        let mut t = m.clone();
        t.forward_with_running_std(x, std).is_ok()
            && t.weight_fake_quant().min_val().get(c).map(|v| v.to_bits())
                == emin.get(c).map(|v| v.to_bits())
            && t.weight_fake_quant().max_val().get(c).map(|v| v.to_bits())
                == emax.get(c).map(|v| v.to_bits())
    };
    let mut first = m.clone();
    if first.forward_with_running_std(x, &std).is_err() {
        return std;
    }
    let same = |got: &[f32], exp: &[f32], c: usize| {
        got.get(c).map(|v| v.to_bits()) == exp.get(c).map(|v| v.to_bits())
    };
    let fq = first.weight_fake_quant();
    let off: Vec<usize> = (0..std.len())
        .filter(|&c| !(same(fq.min_val(), &emin, c) && same(fq.max_val(), &emax, c)))
        .collect();
    for c in off {
        let base = std[c];
        for cand in [base.next_down(), base.next_up()] {
            std[c] = cand;
            if matches(&std, c) {
                break;
            }
            std[c] = base;
        }
    }
    std
}

fn linear(case: &Case) -> R<()> {
    let init = case.field("init")?;
    let bias = match opt(init, "bias") {
        Some(_) => Some(tensor(init, "bias")?.iter().copied().collect()),
        None => None,
    };
    let mut m = e(Linear::new(tensor(init, "weight")?, bias))?;
    for (input, step) in steps(case)? {
        if let Some(sb) = opt(input, "state_before") {
            let w: Vec<f32> = tensor(sb, "weight")?.iter().copied().collect();
            let b = match opt(sb, "bias") {
                Some(_) => Some(tensor(sb, "bias")?.iter().copied().collect()),
                None => None,
            };
            e(m.set_params(w, b))?;
            reset_weight_fq(m.weight_fake_quant_mut(), sb)?;
        }
        for a in actions(input)? {
            m.apply(a);
        }
        let x = tensor(input, "x")?;
        let dy = tensor(input, "dy")?;
        let lr = as_f64(input, "lr")?;
        if let Some(out) = step.outcome(m.forward_backward(&x, &dy))? {
            step.array("y", &out.y)?;
            step.array("dx", &out.dx)?;
            step.array("dweight", &out.dweight)?;
            step.optional("dbias", out.dbias.as_deref())?;
            step.array("weight_fq", &out.weight_fq)?;
            e(m.sgd_step(lr, &out))?;
        }
        weight_fq_state(&step, m.weight_fake_quant())?;
        step.array("weight", &e(m.weight())?)?;
        step.optional("bias", m.bias())?;
    }
    Ok(())
}
