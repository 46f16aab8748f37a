//! [`NsReport`]: the results (layer → comparison → values), where the error jumps, and the
//! text table, CSV and JSON views of them.

use std::fmt;

use super::log::NumericLog;
use super::stats::{OutputComparison, ROUNDING_FLOOR_QUANTA};
use super::weights::WeightComparison;
use crate::error::{QuantError, Result};

/// Which comparison a value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Comparison {
    /// Both models on the same inputs, outputs matched by layer name: the error a layer
    /// inherited plus its own (PyTorch's `compare_model_outputs` / `add_loggers`).
    Cumulative,
    /// The float twin on the quantized layer's own (dequantized) input: the layer's own
    /// error (PyTorch's `compare_model_stub` / `add_shadow_loggers`).
    Local,
    /// Float against quantized weights (PyTorch's `compare_weights`).
    Weight,
}

impl Comparison {
    /// `"cumulative"`, `"local"` or `"weight"`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Comparison::Cumulative => "cumulative",
            Comparison::Local => "local",
            Comparison::Weight => "weight",
        }
    }
}

/// Everything known about one layer.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct LayerReport {
    /// The layer's name.
    pub name: String,
    /// The quantized layer's kind, where known (`"QuantizedConvReLU2d"`, ...).
    pub kind: Option<String>,
    /// The cumulative comparison.
    pub cumulative: Option<OutputComparison>,
    /// The local (shadow) comparison.
    pub local: Option<OutputComparison>,
    /// The weight comparison.
    pub weight: Option<WeightComparison>,
}

impl LayerReport {
    /// A layer with no results yet.
    #[must_use]
    pub fn new(name: impl Into<String>) -> Self {
        LayerReport {
            name: name.into(),
            kind: None,
            cumulative: None,
            local: None,
            weight: None,
        }
    }

    /// The SQNR of one comparison (dB).
    #[must_use]
    pub fn sqnr_db(&self, which: Comparison) -> Option<f64> {
        match which {
            Comparison::Cumulative => self.cumulative.as_ref().map(|c| c.sqnr_db),
            Comparison::Local => self.local.as_ref().map(|c| c.sqnr_db),
            Comparison::Weight => self.weight.as_ref().map(|c| c.sqnr_db),
        }
    }

    /// The output comparison of one kind (`None` for [`Comparison::Weight`]).
    #[must_use]
    pub fn output(&self, which: Comparison) -> Option<&OutputComparison> {
        match which {
            Comparison::Cumulative => self.cumulative.as_ref(),
            Comparison::Local => self.local.as_ref(),
            Comparison::Weight => None,
        }
    }
}

/// Where the cumulative error jumps: a layer, the layer before it (with a cumulative
/// figure) and the SQNR lost between them.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Jump {
    /// The layer.
    pub layer: String,
    /// Its cumulative SQNR (dB).
    #[cfg_attr(feature = "serde", serde(serialize_with = "super::json::f64"))]
    pub sqnr_db: f64,
    /// The previous layer with a cumulative figure, if any.
    pub previous: Option<String>,
    /// `previous SQNR − this SQNR` (dB; `inf` after a lossless layer), if there is a
    /// previous layer.
    #[cfg_attr(feature = "serde", serde(serialize_with = "super::json::opt_f64"))]
    pub drop_db: Option<f64>,
}

/// The default threshold of [`NsReport::first_below_threshold`]: 20 dB. Healthy int8 layers
/// sit at 25–35 dB cumulative SQNR.
pub const DEFAULT_JUMP_THRESHOLD_DB: f64 = 20.0;

/// The results of a comparison: per layer (in execution order, or in the order of the first
/// push) its cumulative, local and weight figures.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct NsReport {
    /// The layers, in execution order.
    pub layers: Vec<LayerReport>,
    /// The threshold of [`NsReport::first_below_threshold`] (dB).
    #[cfg_attr(feature = "serde", serde(serialize_with = "super::json::f64"))]
    pub jump_threshold_db: f64,
}

impl Default for NsReport {
    fn default() -> Self {
        NsReport {
            layers: Vec::new(),
            jump_threshold_db: DEFAULT_JUMP_THRESHOLD_DB,
        }
    }
}

impl NsReport {
    /// A report from a cumulative and/or a local log: layers in the cumulative log's order,
    /// then those only in the local log.
    #[must_use]
    pub fn from_logs(cumulative: Option<&NumericLog>, local: Option<&NumericLog>) -> Self {
        let mut r = NsReport::default();
        for (log, which) in [
            (cumulative, Comparison::Cumulative),
            (local, Comparison::Local),
        ] {
            let Some(log) = log else { continue };
            for (name, c) in log.comparisons() {
                let l = r.entry(&name);
                match which {
                    Comparison::Local => l.local = Some(c),
                    _ => l.cumulative = Some(c),
                }
            }
        }
        r
    }

    /// The layer under `name`, added at the end if it is not there.
    pub fn entry(&mut self, name: &str) -> &mut LayerReport {
        let i = match self.layers.iter().position(|l| l.name == name) {
            Some(i) => i,
            None => {
                self.layers.push(LayerReport::new(name));
                self.layers.len() - 1
            }
        };
        &mut self.layers[i]
    }

    /// Adds weight comparisons ([`super::compare_weights`]) to their layers.
    #[must_use]
    pub fn with_weights(mut self, weights: Vec<(String, WeightComparison)>) -> Self {
        for (name, w) in weights {
            self.entry(&name).weight = Some(w);
        }
        self
    }

    /// Sets the threshold of [`NsReport::first_below_threshold`].
    ///
    /// # Errors
    /// [`QuantError::InvalidParameter`] for a NaN threshold.
    pub fn with_jump_threshold(mut self, db: f64) -> Result<Self> {
        check_threshold("NsReport::with_jump_threshold", db)?;
        self.jump_threshold_db = db;
        Ok(self)
    }

    /// Puts the layers in the order of `names` (layers not named keep their order, after).
    pub fn order_by(&mut self, names: &[String]) {
        let pos = |n: &str| names.iter().position(|m| m == n).unwrap_or(usize::MAX);
        self.layers.sort_by_key(|l| pos(&l.name));
    }

    /// The layer under `name`.
    #[must_use]
    pub fn layer(&self, name: &str) -> Option<&LayerReport> {
        self.layers.iter().find(|l| l.name == name)
    }

    /// The SQNR of one layer under one comparison (dB).
    #[must_use]
    pub fn sqnr_db(&self, layer: &str, which: Comparison) -> Option<f64> {
        self.layer(layer)?.sqnr_db(which)
    }

    /// The layers with a cumulative SQNR that is a number, with it, in order.
    fn cumulative(&self) -> impl Iterator<Item = (&str, f64)> {
        self.layers.iter().filter_map(|l| {
            let db = l.sqnr_db(Comparison::Cumulative)?;
            (!db.is_nan()).then_some((l.name.as_str(), db))
        })
    }

    /// The layer with the lowest cumulative SQNR (the lowest local one when there is no
    /// cumulative comparison, then the lowest weight SQNR). Lossless layers (`inf`) are never
    /// the worst; ties go to the earlier layer.
    #[must_use]
    pub fn worst(&self) -> Option<&LayerReport> {
        for which in [
            Comparison::Cumulative,
            Comparison::Local,
            Comparison::Weight,
        ] {
            let mut best: Option<(&LayerReport, f64)> = None;
            for l in &self.layers {
                let lossy = |d: &f64| !d.is_nan() && *d != f64::INFINITY;
                if let Some(db) = l.sqnr_db(which).filter(lossy)
                    && best.is_none_or(|(_, b)| db < b)
                {
                    best = Some((l, db));
                }
            }
            if let Some((l, _)) = best {
                return Some(l);
            }
        }
        None
    }

    /// The largest drop of cumulative SQNR between consecutive layers (with a cumulative
    /// figure): where the error jumps. `None` when the SQNR never drops.
    #[must_use]
    pub fn largest_drop(&self) -> Option<Jump> {
        let v: Vec<(&str, f64)> = self.cumulative().collect();
        let mut best: Option<Jump> = None;
        for w in v.windows(2) {
            let ((prev, a), (name, b)) = (w[0], w[1]);
            let drop = a - b;
            if drop.is_nan() || drop <= 0.0 {
                continue;
            }
            if best
                .as_ref()
                .is_none_or(|j| drop > j.drop_db.unwrap_or(0.0))
            {
                best = Some(Jump {
                    layer: name.to_string(),
                    sqnr_db: b,
                    previous: Some(prev.to_string()),
                    drop_db: Some(drop),
                });
            }
        }
        best
    }

    /// The first layer whose cumulative SQNR is below `threshold_db`.
    #[must_use]
    pub fn first_below(&self, threshold_db: f64) -> Option<Jump> {
        let mut prev: Option<(&str, f64)> = None;
        for (name, db) in self.cumulative() {
            if db < threshold_db {
                return Some(Jump {
                    layer: name.to_string(),
                    sqnr_db: db,
                    previous: prev.map(|(p, _)| p.to_string()),
                    drop_db: prev.map(|(_, a)| a - db),
                });
            }
            prev = Some((name, db));
        }
        None
    }

    /// [`NsReport::first_below`] with the report's threshold
    /// ([`NsReport::jump_threshold_db`]).
    #[must_use]
    pub fn first_below_threshold(&self) -> Option<Jump> {
        self.first_below(self.jump_threshold_db)
    }

    /// The per-sample SQNRs of one comparison as a text table: per layer the number of
    /// samples, the lowest, 5th percentile, median and highest sample SQNR, and the `worst`
    /// samples (index and SQNR, worst first).
    #[must_use]
    pub fn sample_table(&self, which: Comparison, worst: usize) -> String {
        let header: Vec<String> = [
            "layer",
            "samples",
            "min dB",
            "p5 dB",
            "median dB",
            "max dB",
            "worst samples (dB)",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        let opt = |v: Option<f64>| v.map_or(String::new(), db);
        let rows: Vec<Vec<String>> = self
            .layers
            .iter()
            .filter_map(|l| {
                let c = l.output(which)?;
                let w = c
                    .worst_samples(worst)
                    .into_iter()
                    .map(|i| format!("{i} ({})", db(c.samples[i].sqnr_db)))
                    .collect::<Vec<_>>()
                    .join(", ");
                Some(vec![
                    crate::text::cell(&l.name, crate::text::MAX_NAME_WIDTH),
                    c.samples.len().to_string(),
                    opt(c.sample_sqnr_percentile(0.0)),
                    opt(c.sample_sqnr_percentile(5.0)),
                    opt(c.sample_sqnr_percentile(50.0)),
                    opt(c.sample_sqnr_percentile(100.0)),
                    w,
                ])
            })
            .collect();
        table(&header, &rows, 1)
    }

    /// The report as CSV, one row per layer and comparison:
    /// `layer,kind,comparison,sqnr_db,normalized_l2,cosine,mse,max_abs,mean_error,clipped_fraction,rms_quanta,samples,elements`
    /// (empty cells where a figure does not apply; `inf`, `-inf`, `NaN` as Rust prints them).
    #[must_use]
    pub fn to_csv(&self) -> String {
        let mut s = String::from(
            "layer,kind,comparison,sqnr_db,normalized_l2,cosine,mse,max_abs,mean_error,clipped_fraction,rms_quanta,samples,elements\n",
        );
        let opt = |v: Option<f64>| v.map_or_else(String::new, |x| x.to_string());
        for l in &self.layers {
            let kind = csv_field(l.kind.as_deref().unwrap_or(""));
            let name = csv_field(&l.name);
            for which in [Comparison::Cumulative, Comparison::Local] {
                if let Some(c) = l.output(which) {
                    s.push_str(&format!(
                        "{name},{kind},{},{},{},{},{},{},{},{},{},{},{}\n",
                        which.name(),
                        c.sqnr_db,
                        c.normalized_l2,
                        c.cosine,
                        c.mse,
                        c.max_abs,
                        c.mean_error,
                        opt(c.clipped_fraction),
                        opt(c.rms_quanta),
                        c.samples.len(),
                        c.elements
                    ));
                }
            }
            if let Some(w) = &l.weight {
                s.push_str(&format!(
                    "{name},{kind},weight,{},{},{},{},{},,,,{},{}\n",
                    w.sqnr_db,
                    w.normalized_l2,
                    w.cosine,
                    w.mse,
                    w.max_abs,
                    w.channels.len(),
                    w.shape.iter().product::<usize>()
                ));
            }
        }
        s
    }

    /// The report as one JSON object: `jump_threshold_db`, `layers` (each with `name`,
    /// `kind`, `cumulative`, `local`, `weight`), `worst`, `largest_drop`, `first_below`.
    /// Non-finite numbers are the strings `"inf"`, `"-inf"`, `"nan"`.
    #[cfg(feature = "serde")]
    #[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
    #[must_use]
    pub fn to_json(&self) -> String {
        #[derive(serde::Serialize)]
        struct Out<'a> {
            #[serde(serialize_with = "super::json::f64")]
            jump_threshold_db: f64,
            layers: &'a [LayerReport],
            worst: Option<&'a str>,
            largest_drop: Option<Jump>,
            first_below: Option<Jump>,
        }
        let out = Out {
            jump_threshold_db: self.jump_threshold_db,
            layers: &self.layers,
            worst: self.worst().map(|l| l.name.as_str()),
            largest_drop: self.largest_drop(),
            first_below: self.first_below_threshold(),
        };
        serde_json::to_string(&out).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

pub(crate) fn check_threshold(op: &'static str, db: f64) -> Result<()> {
    if db.is_nan() {
        return Err(QuantError::InvalidParameter {
            op,
            what: "threshold (dB)",
            value: db,
            reason: "a threshold must be a number",
        });
    }
    Ok(())
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// A number for the table: 4 significant digits, or scientific outside `1e-3..1e5`.
pub(crate) fn num(x: f64) -> String {
    if x == 0.0 {
        "0".into()
    } else if !x.is_finite() {
        x.to_string()
    } else if (1e-3..1e5).contains(&x.abs()) {
        let digits = 3 - x.abs().log10().floor() as i32;
        format!("{:.*}", digits.max(0) as usize, x)
    } else {
        format!("{x:.3e}")
    }
}

fn db(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.2}")
    } else {
        x.to_string()
    }
}

/// Formats rows as an aligned table: the first `left` columns and the last one
/// left-aligned, the others right-aligned.
pub(crate) fn table(header: &[String], rows: &[Vec<String>], left: usize) -> String {
    let n = header.len();
    let mut w: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate().take(n) {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let mut s = String::new();
    let line = |s: &mut String, cells: &[String]| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate().take(n) {
            if i > 0 {
                out.push_str("  ");
            }
            let pad = w[i] - c.chars().count();
            if i < left || i + 1 == n {
                out.push_str(c);
                out.push_str(&" ".repeat(pad));
            } else {
                out.push_str(&" ".repeat(pad));
                out.push_str(c);
            }
        }
        s.push_str(out.trim_end());
        s.push('\n');
    };
    line(&mut s, header);
    for r in rows {
        line(&mut s, r);
    }
    s
}

impl fmt::Display for NsReport {
    /// An aligned table, layers in order, columns only for the comparisons present; the
    /// worst layer, the largest drop and the first layer below the threshold marked, and a
    /// summary under the table.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let any = |p: &dyn Fn(&LayerReport) -> bool| self.layers.iter().any(p);
        let has_kind = any(&|l| l.kind.is_some());
        let has_cum = any(&|l| l.cumulative.is_some());
        let has_loc = any(&|l| l.local.is_some());
        let has_w = any(&|l| l.weight.is_some());
        let has_q = any(&|l| {
            l.cumulative
                .as_ref()
                .is_some_and(|c| c.rms_quanta.is_some())
                || l.local.as_ref().is_some_and(|c| c.rms_quanta.is_some())
        });
        let worst = self.worst().map(|l| l.name.clone());
        let drop = self.largest_drop();
        let below = self.first_below_threshold();

        let mut header: Vec<String> = vec!["layer".into()];
        if has_kind {
            header.push("kind".into());
        }
        let left = header.len();
        if has_cum {
            header.push("SQNR dB".into());
        }
        if has_loc {
            header.push("local dB".into());
        }
        if has_w {
            header.push("weight dB".into());
        }
        if has_cum {
            for h in ["norm L2", "cosine", "MSE", "max abs", "mean err"] {
                header.push(h.into());
            }
        }
        if has_q {
            header.push("clipped".into());
            header.push("quanta".into());
            if has_loc {
                header.push("local quanta".into());
            }
        }
        header.push(String::new());

        let mut rows = Vec::new();
        for l in &self.layers {
            let mut r = vec![crate::text::cell(&l.name, crate::text::MAX_NAME_WIDTH)];
            if has_kind {
                r.push(l.kind.clone().unwrap_or_default());
            }
            let c = l.cumulative.as_ref();
            if has_cum {
                r.push(c.map_or(String::new(), |c| db(c.sqnr_db)));
            }
            if has_loc {
                r.push(l.local.as_ref().map_or(String::new(), |c| db(c.sqnr_db)));
            }
            if has_w {
                r.push(l.weight.as_ref().map_or(String::new(), |c| db(c.sqnr_db)));
            }
            if has_cum {
                r.push(c.map_or(String::new(), |c| num(c.normalized_l2)));
                r.push(c.map_or(String::new(), |c| format!("{:.6}", c.cosine)));
                for v in [
                    c.map(|c| c.mse),
                    c.map(|c| c.max_abs),
                    c.map(|c| c.mean_error),
                ] {
                    r.push(v.map_or(String::new(), num));
                }
            }
            if has_q {
                let out = c.or(l.local.as_ref());
                r.push(
                    out.and_then(|c| c.clipped_fraction)
                        .map_or(String::new(), |x| format!("{:.2}%", 100.0 * x)),
                );
                r.push(
                    c.and_then(|c| c.rms_quanta)
                        .map_or(String::new(), |x| format!("{x:.3}")),
                );
                if has_loc {
                    r.push(
                        l.local
                            .as_ref()
                            .and_then(|c| c.rms_quanta)
                            .map_or(String::new(), |x| format!("{x:.3}")),
                    );
                }
            }
            let mut marks = Vec::new();
            if worst.as_deref() == Some(l.name.as_str()) {
                marks.push("<- worst");
            }
            if drop.as_ref().is_some_and(|j| j.layer == l.name) {
                marks.push("<- largest drop");
            }
            if below.as_ref().is_some_and(|j| j.layer == l.name) {
                marks.push("<- first below threshold");
            }
            r.push(marks.join(" "));
            rows.push(r);
        }
        f.write_str(&table(&header, &rows, left))?;
        if let Some(w) = &worst {
            let l = self.layer(w).and_then(|l| {
                [
                    Comparison::Cumulative,
                    Comparison::Local,
                    Comparison::Weight,
                ]
                .into_iter()
                .find_map(|c| l.sqnr_db(c).map(|d| (c, d)))
            });
            if let Some((c, d)) = l {
                writeln!(
                    f,
                    "worst: {} ({} dB {})",
                    crate::text::display_name(w),
                    db(d),
                    c.name()
                )?;
            }
        }
        if has_cum {
            match &drop {
                Some(j) => writeln!(
                    f,
                    "largest drop: {}, {} dB below {}",
                    crate::text::display_name(&j.layer),
                    db(j.drop_db.unwrap_or(f64::NAN)),
                    crate::text::display_name(j.previous.as_deref().unwrap_or("-"))
                )?,
                None => writeln!(f, "largest drop: none")?,
            }
            match &below {
                Some(j) => writeln!(
                    f,
                    "first below {} dB: {} ({} dB)",
                    db(self.jump_threshold_db),
                    crate::text::display_name(&j.layer),
                    db(j.sqnr_db)
                )?,
                None => writeln!(f, "first below {} dB: none", db(self.jump_threshold_db))?,
            }
        }
        if has_q {
            writeln!(
                f,
                "quanta: RMS error in quanta of the output scale (rounding floor {ROUNDING_FLOOR_QUANTA:.3})"
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(dbs: &[(&str, f64)]) -> NsReport {
        let mut log = NumericLog::streaming();
        for &(name, target) in dbs {
            // x = 1, y = 1 - e with 20·log10(1/e) = target
            let e = 10f64.powf(-target / 20.0) as f32;
            let x = ndarray::array![[1.0f32]];
            let y = ndarray::array![[1.0f32 - e]];
            log.push(name, &x, &y, None).expect("push");
        }
        log.report()
    }

    #[test]
    fn jumps() {
        let r = report(&[("a", 50.0), ("b", 45.0), ("c", 15.0), ("d", 14.0)]);
        let j = r.largest_drop().expect("drop");
        assert_eq!(j.layer, "c");
        assert_eq!(j.previous.as_deref(), Some("b"));
        assert!((j.drop_db.expect("drop") - 30.0).abs() < 0.1);
        assert_eq!(r.first_below_threshold().expect("below").layer, "c");
        assert_eq!(r.first_below(46.0).expect("below").layer, "b");
        assert!(r.first_below(10.0).is_none());
        assert_eq!(r.worst().map(|l| l.name.as_str()), Some("d"));
        let text = r.to_string();
        assert!(
            text.contains("<- largest drop <- first below threshold"),
            "{text}"
        );
        assert!(text.contains("largest drop: c, 30.00 dB below b"), "{text}");
        let csv = r.to_csv();
        assert_eq!(csv.lines().count(), 5);
        assert!(
            csv.lines()
                .nth(1)
                .expect("row")
                .starts_with("a,,cumulative,")
        );
    }

    #[test]
    fn rising_sqnr_has_no_drop_and_nan_threshold_is_refused() {
        let r = report(&[("a", 10.0), ("b", 20.0)]);
        assert!(r.largest_drop().is_none());
        assert!(matches!(
            r.with_jump_threshold(f64::NAN),
            Err(QuantError::InvalidParameter { .. })
        ));
    }

    #[test]
    fn numbers_and_fields() {
        assert_eq!(num(0.0), "0");
        assert_eq!(num(12.345), "12.35");
        assert_eq!(num(1.5e-6), "1.500e-6");
        assert_eq!(num(f64::INFINITY), "inf");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("a\"b"), "\"a\"\"b\"");
    }
}
