//! Observer cases (`observers.jsonl`): build the observer from PyTorch's constructor
//! arguments, feed the batches, compare parameters (and min/max where given), or expect a
//! refusal for `error` cases.
//!
//! Deliberate refusals: PyTorch skips the dtype check of a `quint8` custom range (it accepts
//! `quant_min = -4` or `quant_max = 300`, as long as the range contains 0). No `quint8` tensor
//! can hold such a range, and qnumeric refuses it ([`QSpec::with_quant_range`] gives
//! [`QuantError::InvalidQuantRange`]) rather than compute parameters PyTorch's way in some
//! other dtype. A case with such a range passes when qnumeric refuses it with that error,
//! whatever parameters PyTorch computed, and fails if qnumeric returns parameters or another
//! error; its failure reason (when it fails) says `deliberately refused`. Golden case
//! `observer-400` (`quint8`, `0..=300`) is one.

use super::case::{Case, CaseResult, Tolerance, compare_floats, f64_list, tensor_f32};
use super::json::Json;
use crate::dtype::{QDType, QRange};
use crate::error::QuantError;
use crate::observers::{
    FixedQParamsObserver, HistogramObserver, MinMaxObserver, Observer, PerChannelMinMaxObserver,
    UpdateRule,
};
use crate::qparams::{AnyQParams, QScheme, QSpec, ZeroPoints};

fn opt_i64(cfg: &Json, key: &str) -> CaseResult<Option<i64>> {
    match cfg.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| format!("`config.{key}` is not an integer")),
    }
}

fn opt_f64(cfg: &Json, key: &str) -> CaseResult<Option<f64>> {
    match cfg.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| format!("`config.{key}` is not a number")),
    }
}

/// PyTorch's observer arguments as a spec, through [`QSpec`]'s builders.
fn spec_from_config(cfg: &Json) -> Result<QSpec, QuantError> {
    let fmt = |detail: String| QuantError::Format {
        op: "conformance",
        detail,
    };
    let dtype = QDType::from_name(cfg.get("dtype").and_then(Json::as_str).unwrap_or("quint8"))?;
    let scheme = QScheme::from_name(
        cfg.get("qscheme")
            .and_then(Json::as_str)
            .unwrap_or("per_tensor_affine"),
    )?;
    let reduce_range = cfg
        .get("reduce_range")
        .and_then(Json::as_bool)
        .unwrap_or(false);
    let qmin = opt_i64(cfg, "quant_min").map_err(fmt)?;
    let qmax = opt_i64(cfg, "quant_max").map_err(fmt)?;
    let eps = opt_f64(cfg, "eps").map_err(fmt)?;
    let mut spec = QSpec::new(scheme, dtype);
    // PyTorch uses a custom range only when both ends are given.
    if let (Some(lo), Some(hi)) = (qmin, qmax) {
        spec = spec.with_quant_range(lo, hi)?;
    }
    if reduce_range {
        spec = spec.with_reduce_range()?;
    }
    if let Some(e) = eps {
        spec = spec.with_eps(e as f32)?;
    }
    Ok(spec)
}

/// Whether a case gives a `quint8` custom range that PyTorch accepts (it contains 0,
/// `quant_min < quant_max`) but `quint8` cannot hold: qnumeric refuses these deliberately.
fn deliberately_refused_range(cfg: &Json) -> CaseResult<bool> {
    let dtype = cfg.get("dtype").and_then(Json::as_str).unwrap_or("quint8");
    if QDType::from_name(dtype).ok() != Some(QDType::QUInt8) {
        return Ok(false);
    }
    Ok(
        match (opt_i64(cfg, "quant_min")?, opt_i64(cfg, "quant_max")?) {
            (Some(lo), Some(hi)) => lo <= 0 && 0 <= hi && lo < hi && (lo < 0 || hi > 255),
            _ => false,
        },
    )
}

/// Builds the observer a case describes.
fn build(case: &Case) -> CaseResult<Result<Box<dyn Observer>, QuantError>> {
    let cfg = case.field("config")?;
    let name = case.str_field("observer")?;
    if name == "FixedQParamsObserver" {
        let dtype = QDType::from_name(cfg.get("dtype").and_then(Json::as_str).unwrap_or("quint8"))
            .map_err(|e| e.to_string())?;
        let scale = opt_f64(cfg, "scale")?.ok_or("missing `config.scale`")? as f32;
        let zp = opt_i64(cfg, "zero_point")?.ok_or("missing `config.zero_point`")?;
        let lo = opt_i64(cfg, "quant_min")?.unwrap_or(dtype.min());
        let hi = opt_i64(cfg, "quant_max")?.unwrap_or(dtype.max());
        return Ok(QRange::new(dtype, lo, hi)
            .and_then(|r| FixedQParamsObserver::new(scale, zp, r))
            .map(|o| Box::new(o) as Box<dyn Observer>));
    }
    let spec = match spec_from_config(cfg) {
        Ok(s) => s,
        Err(e) => return Ok(Err(e)),
    };
    let ch_axis = opt_i64(cfg, "ch_axis")?.unwrap_or(0) as isize;
    let c = opt_f64(cfg, "averaging_constant")?
        .map_or(UpdateRule::DEFAULT_AVERAGING_CONSTANT, |c| c as f32);
    let ema = UpdateRule::MovingAverage {
        averaging_constant: c,
    };
    let bins = opt_i64(cfg, "bins")?.unwrap_or(HistogramObserver::DEFAULT_BINS as i64);
    let boxed = |o: Result<Box<dyn Observer>, QuantError>| o;
    Ok(match name {
        "MinMaxObserver" => boxed(MinMaxObserver::new(spec).map(|o| Box::new(o) as _)),
        "MovingAverageMinMaxObserver" => {
            boxed(MinMaxObserver::with_rule(spec, ema).map(|o| Box::new(o) as _))
        }
        "PerChannelMinMaxObserver" => {
            boxed(PerChannelMinMaxObserver::new(spec, ch_axis).map(|o| Box::new(o) as _))
        }
        "MovingAveragePerChannelMinMaxObserver" => {
            boxed(PerChannelMinMaxObserver::with_rule(spec, ch_axis, ema).map(|o| Box::new(o) as _))
        }
        "HistogramObserver" => {
            // A negative count (or one beyond usize) is refused like 0 bins.
            let bins = usize::try_from(bins).unwrap_or(0);
            boxed(HistogramObserver::with_bins(spec, bins).map(|o| Box::new(o) as _))
        }
        _ => return Err(super::UNSUPPORTED.into()),
    })
}

/// The observed `(min, max)` lists of the min/max observers.
fn observed(obs: &dyn Observer) -> Option<(Vec<f32>, Vec<f32>)> {
    let any = obs.as_any();
    if let Some(o) = any.downcast_ref::<MinMaxObserver>() {
        return o.min_max().map(|(a, b)| (vec![a], vec![b]));
    }
    if let Some(o) = any.downcast_ref::<PerChannelMinMaxObserver>() {
        return Some((o.min_vals().to_vec(), o.max_vals().to_vec()));
    }
    if let Some(o) = any.downcast_ref::<HistogramObserver>() {
        return o.min_max().map(|(a, b)| (vec![a], vec![b]));
    }
    None
}

/// The observer after its batches, with its parameters (or the first refusal).
type Observed = Result<(Box<dyn Observer>, AnyQParams), QuantError>;

/// Builds, feeds and asks for parameters; the first refusal is returned as `Err`.
fn run_observer(case: &Case) -> CaseResult<Observed> {
    let mut obs = match build(case)? {
        Ok(o) => o,
        Err(e) => return Ok(Err(e)),
    };
    let batches = case
        .field("batches")?
        .as_array()
        .ok_or("`batches` is not a list")?;
    for b in batches {
        let x = tensor_f32(b)?;
        if let Err(e) = obs.observe(x.view()) {
            return Ok(Err(e));
        }
    }
    Ok(obs.qparams().map(|q| (obs, q)))
}

fn compare_zero_points(got: &[f64], expected: &[f64], zp_atol: Option<f64>) -> CaseResult<()> {
    match zp_atol {
        Some(a) => compare_floats(
            "zero_point",
            got,
            expected,
            Some(Tolerance { rtol: 0.0, atol: a }),
        ),
        None => compare_floats("zero_point", got, expected, None),
    }
}

pub(crate) fn run(case: &Case) -> CaseResult<()> {
    let outcome = run_observer(case)?;
    if deliberately_refused_range(case.field("config")?)? {
        return match outcome {
            Err(QuantError::InvalidQuantRange { .. }) => Ok(()),
            Err(e) => Err(format!(
                "deliberately refused quint8 range: expected InvalidQuantRange, got: {e}"
            )),
            Ok(_) => Err(
                "deliberately refused quint8 range: expected InvalidQuantRange, got parameters"
                    .into(),
            ),
        };
    }
    let expects_error = case.expected("error").ok();
    let (obs, qp) = match (outcome, expects_error) {
        (Err(_), Some(_)) => return Ok(()),
        (Err(e), None) => return Err(format!("error: {e}")),
        (Ok(_), Some(err)) => {
            return Err(format!(
                "expected a refusal ({}), got parameters",
                err.as_str().unwrap_or("error")
            ));
        }
        (Ok(v), None) => v,
    };
    let tol = case.tolerance();
    let zp_atol = case.json.get("zero_point_atol").and_then(Json::as_f64);
    let (scales, zps): (Vec<f64>, Vec<f64>) = match &qp {
        AnyQParams::PerTensor(p) => (vec![p.scale() as f64], vec![p.zero_point() as f64]),
        AnyQParams::PerChannel(p) => {
            let zps = match p.zero_points() {
                ZeroPoints::Int(v) => v.iter().map(|&z| z as f64).collect(),
                ZeroPoints::Float(v) => v.iter().map(|&z| z as f64).collect(),
            };
            (p.scales().iter().map(|&s| s as f64).collect(), zps)
        }
    };
    compare_floats("scale", &scales, &f64_list(case.expected("scale")?)?, tol)?;
    let float_zp = matches!(
        &qp,
        AnyQParams::PerChannel(p) if matches!(p.zero_points(), ZeroPoints::Float(_))
    );
    let expected_zp = f64_list(case.expected("zero_point")?)?;
    if float_zp {
        compare_floats("zero_point", &zps, &expected_zp, tol)?;
    } else {
        compare_zero_points(&zps, &expected_zp, zp_atol)?;
    }
    if let (Ok(emin), Ok(emax)) = (case.expected("min_val"), case.expected("max_val")) {
        let (mn, mx) = observed(obs.as_ref()).ok_or("observer exposes no min/max")?;
        let to64 = |v: Vec<f32>| v.into_iter().map(f64::from).collect::<Vec<f64>>();
        compare_floats("min_val", &to64(mn), &f64_list(emin)?, tol)?;
        compare_floats("max_val", &to64(mx), &f64_list(emax)?, tol)?;
    }
    Ok(())
}
