//! The self-contained HTML page of a [`Diagnosis`]: no network, inline SVG.

use std::fmt::Write as _;

use super::diagnosis::Diagnosis;
#[cfg(feature = "safetensors")]
use super::dumps::DumpDiagnosis;
use super::report::{OwnSource, ReportDiagnosis};
use super::verdict::Verdict;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn color(v: Verdict) -> &'static str {
    match v {
        Verdict::Fine => "#4c9a2a",
        Verdict::Inherited => "#7a8ca0",
        Verdict::DataSensitive => "#e0a100",
        Verdict::DataInsensitive => "#d9534f",
        Verdict::Implementation => "#7b3fbf",
    }
}

/// One row of the SQNR bars: a layer, its verdict, its own (local) and cumulative SQNR.
struct BarRow<'a> {
    name: &'a str,
    verdict: Verdict,
    local: Option<f64>,
    cumulative: Option<f64>,
}

/// Horizontal bars: one group per layer, local and cumulative SQNR.
fn sqnr_bars(rows: &[BarRow<'_>]) -> String {
    let row_h = 34.0;
    let (left, width) = (140.0, 520.0);
    let h = 30.0 + row_h * rows.len() as f64;
    let max_db = rows
        .iter()
        .flat_map(|r| [r.local, r.cumulative])
        .flatten()
        .filter(|v| v.is_finite())
        .fold(10.0f64, f64::max)
        .min(120.0);
    let mut s = format!(
        r#"<svg width="{}" height="{h}" role="img" aria-label="SQNR per layer">"#,
        left + width + 80.0
    );
    for db in (0..=(max_db as i64)).step_by(10) {
        let x = left + width * db as f64 / max_db;
        let _ = write!(
            s,
            r##"<line x1="{x}" y1="18" x2="{x}" y2="{}" stroke="#ddd"/><text x="{x}" y="12" font-size="10" text-anchor="middle">{db} dB</text>"##,
            h - 4.0
        );
    }
    for (i, r) in rows.iter().enumerate() {
        let y = 22.0 + row_h * i as f64;
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" font-size="12" text-anchor="end">{}</text>"#,
            left - 6.0,
            y + 16.0,
            esc(r.name)
        );
        for (j, (db, opacity, label)) in
            [(r.local, 1.0, "local"), (r.cumulative, 0.45, "cumulative")]
                .into_iter()
                .enumerate()
        {
            if let Some(db) = db {
                let v = if db.is_finite() {
                    db.clamp(0.0, max_db)
                } else {
                    max_db
                };
                let w = width * v / max_db;
                let yy = y + 13.0 * j as f64;
                let _ = write!(
                    s,
                    r#"<rect x="{left}" y="{yy}" width="{w:.1}" height="11" fill="{}" fill-opacity="{opacity}"><title>{} {label}: {db:.2} dB</title></rect><text x="{:.1}" y="{}" font-size="10">{db:.1}</text>"#,
                    color(r.verdict),
                    esc(r.name),
                    left + w + 4.0,
                    yy + 9.0,
                );
            }
        }
    }
    s.push_str("</svg>");
    s
}

/// The page's head and style, up to the opening of the body.
fn page_head(h: &mut String) {
    let _ = write!(
        h,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>qnumeric diagnosis</title><style>
body{{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:980px}}
h1{{font-size:22px}} h2{{font-size:17px;margin-top:28px}} table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}} th{{background:#f4f4f4}}
.badge{{display:inline-block;padding:2px 8px;border-radius:10px;color:#fff;font-size:12px}}
.muted{{color:#666;font-size:12px}}
</style></head><body>"#
    );
}

/// The table of remedies, best first.
fn remedies_table(h: &mut String, remedies: &[super::remedy::Remedy]) {
    h.push_str("<h2>Remedies, best first</h2><table><tr><th>#</th><th>remedy</th><th>measured</th><th>gain</th><th>evidence</th></tr>");
    for (i, r) in remedies.iter().enumerate() {
        let measured = match &r.effect {
            super::remedy::Effect::Measured { quality, .. } => esc(&quality.to_string()),
            super::remedy::Effect::Local { sqnr_db, .. } => {
                esc(&format!("layer alone: {sqnr_db:.1} dB"))
            }
            super::remedy::Effect::NotMeasured(super::remedy::NotMeasured::Failed { error }) => {
                esc(&format!("could not measure: {error}"))
            }
            super::remedy::Effect::NotMeasured(super::remedy::NotMeasured::NotRequested) => {
                "not measured".into()
            }
            super::remedy::Effect::NotMeasured(_) => "not measurable here".into(),
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"muted\">{}</td></tr>",
            i + 1,
            esc(&r.action()),
            measured,
            r.gain_db().map_or("–".into(), |g| format!("{g:+.2} dB")),
            esc(&r.evidence.to_string())
        );
    }
    h.push_str("</table>");
}

/// A histogram of values as vertical bars.
fn histogram_svg(counts: &[u64], lo: f64, hi: f64, unit: &str, marks: &[(f64, &str)]) -> String {
    let (w, h, pad) = (520.0, 140.0, 24.0);
    let max = counts.iter().copied().max().unwrap_or(1).max(1) as f64;
    let bw = w / counts.len().max(1) as f64;
    let mut s = format!(
        r#"<svg width="{}" height="{}" role="img">"#,
        w + 2.0 * pad,
        h + 2.0 * pad
    );
    for (i, &c) in counts.iter().enumerate() {
        let bh = (h - 10.0) * c as f64 / max;
        let _ = write!(
            s,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{bh:.1}" fill="#5b8def"><title>{c}</title></rect>"##,
            pad + bw * i as f64,
            pad + h - bh,
            (bw - 1.0).max(0.5)
        );
    }
    let x_of = |v: f64| pad + w * ((v - lo) / (hi - lo).max(f64::MIN_POSITIVE)).clamp(0.0, 1.0);
    for (v, label) in marks {
        let x = x_of(*v);
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" y1="{pad}" x2="{x:.1}" y2="{}" stroke="#d9534f" stroke-dasharray="4 3"/><text x="{x:.1}" y="{}" font-size="10" fill="#d9534f" text-anchor="middle">{}</text>"##,
            pad + h,
            pad - 6.0,
            esc(label)
        );
    }
    let _ = write!(
        s,
        r#"<text x="{pad}" y="{}" font-size="10">{lo:.3}{unit}</text><text x="{}" y="{}" font-size="10" text-anchor="end">{hi:.3}{unit}</text></svg>"#,
        pad + h + 14.0,
        pad + w,
        pad + h + 14.0
    );
    s
}

fn sample_histogram(values: &[f64], bins: usize) -> (Vec<u64>, f64, f64) {
    let v: Vec<f32> = values.iter().map(|&x| x as f32).collect();
    match super::histogram::bin_finite(&v, bins) {
        Ok((counts, lo, hi, _)) if lo.is_finite() => {
            let (lo, hi) = (f64::from(lo), f64::from(hi));
            (counts, lo, if hi > lo { hi } else { lo + 1.0 })
        }
        _ => (vec![0; bins], 0.0, 1.0),
    }
}

impl Diagnosis {
    /// One self-contained HTML page (inline CSS and SVG, no network): per-layer SQNR bars
    /// (local and cumulative), the per-sample error histogram, per-channel weight ranges and
    /// activation histograms of the flagged layers, the verdicts and the ranked remedies.
    #[must_use]
    pub fn to_html(&self) -> String {
        let mut h = String::new();
        page_head(&mut h);
        let _ = write!(
            h,
            r#"<h1>qnumeric diagnosis: <span class="badge" style="background:{}">{}</span></h1>"#,
            color(self.verdict),
            self.verdict
        );
        let _ = write!(
            h,
            "<p>int8 against float on the evaluation data: {}",
            esc(&self.quality.to_string())
        );
        if let Some(a) = self.float_accuracy {
            let _ = write!(h, " (float accuracy {a:.4})");
        }
        h.push_str("</p>");
        if let Some(l) = &self.first_layer {
            let _ = write!(h, "<p>First layer with a verdict: <b>{}</b>.</p>", esc(l));
        }
        h.push_str("<h2>SQNR per layer</h2><p class=\"muted\">Dark bar: the layer's own (local) error; light bar: accumulated (cumulative). Colour: verdict.</p>");
        let rows: Vec<BarRow<'_>> = self
            .layers
            .iter()
            .map(|l| BarRow {
                name: &l.name,
                verdict: l.verdict,
                local: l.evidence.local.as_ref().map(|e| e.sqnr_db),
                cumulative: l.evidence.cumulative.as_ref().map(|e| e.sqnr_db),
            })
            .collect();
        h.push_str(&sqnr_bars(&rows));
        h.push_str("<h2>Verdicts and evidence</h2><table><tr><th>layer</th><th>kind</th><th>verdict</th><th>local dB</th><th>cumulative dB</th><th>samples below threshold</th><th>clipped</th><th>RMS quanta</th><th>kernel vs reference</th></tr>");
        for l in &self.layers {
            let e = &l.evidence;
            let db = |s: &Option<super::verdict::SampleEvidence>| {
                s.as_ref()
                    .map_or("–".into(), |s| format!("{:.2}", s.sqnr_db))
            };
            let _ = write!(
                h,
                r#"<tr><td>{}</td><td>{}</td><td><span class="badge" style="background:{}">{}</span></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
                esc(&l.name),
                esc(&e.kind),
                color(l.verdict),
                l.verdict,
                db(&e.local),
                db(&e.cumulative),
                e.local.as_ref().map_or("–".into(), |s| format!(
                    "{:.1}%",
                    s.fraction_below * 100.0
                )),
                e.clipped_fraction
                    .map_or("–".into(), |c| format!("{:.2}%", c * 100.0)),
                e.rms_quanta.map_or("–".into(), |q| format!("{q:.2}")),
                e.kernel.map_or("–".into(), |k| format!(
                    "{} of {} differ, max {}",
                    k.values - k.exact,
                    k.values,
                    k.max_abs_diff
                )),
            );
            for r in &l.reasons {
                let _ = write!(
                    h,
                    r#"<tr><td></td><td colspan="8" class="muted">{}</td></tr>"#,
                    esc(&r.to_string())
                );
            }
        }
        h.push_str("</table>");
        if let Some(last) = self
            .layers
            .iter()
            .rev()
            .find_map(|l| l.evidence.cumulative.as_ref())
        {
            let (counts, lo, hi) = sample_histogram(&last.sample_sqnr_db, 40);
            let _ = write!(
                h,
                "<h2>Per-sample error at the output</h2><p class=\"muted\">SQNR of each evaluation sample at the last compared layer; worst samples: {:?}</p>",
                self.worst_samples
            );
            h.push_str(&histogram_svg(&counts, lo, hi, " dB", &[]));
        }
        for l in self.layers.iter().filter(|l| l.verdict != Verdict::Fine) {
            let _ = write!(h, "<h2>{} ({})</h2>", esc(&l.name), l.verdict);
            if let Some(local) = &l.evidence.local {
                let (counts, lo, hi) = sample_histogram(&local.sample_sqnr_db, 40);
                h.push_str("<p class=\"muted\">Per-sample SQNR of the layer's own error</p>");
                h.push_str(&histogram_svg(&counts, lo, hi, " dB", &[]));
            }
            if let Some(w) = self.report.layer(&l.name).and_then(|r| r.weight.as_ref())
                && !w.channels.is_empty()
            {
                let lo = w
                    .channels
                    .iter()
                    .map(|c| f64::from(c.min))
                    .fold(f64::INFINITY, f64::min);
                let hi = w
                    .channels
                    .iter()
                    .map(|c| f64::from(c.max))
                    .fold(f64::NEG_INFINITY, f64::max);
                let (cw, ch) = (520.0, 10.0 * w.channels.len() as f64 + 20.0);
                let _ = write!(
                    h,
                    r#"<p class="muted">Weight range per output channel ({} channels, per-tensor weight SQNR {:.2} dB)</p><svg width="{}" height="{ch}">"#,
                    w.channels.len(),
                    w.sqnr_db,
                    cw + 48.0
                );
                for (i, c) in w.channels.iter().enumerate() {
                    let x0 = 24.0 + cw * (f64::from(c.min) - lo) / (hi - lo).max(f64::MIN_POSITIVE);
                    let x1 = 24.0 + cw * (f64::from(c.max) - lo) / (hi - lo).max(f64::MIN_POSITIVE);
                    let _ = write!(
                        h,
                        r##"<rect x="{x0:.1}" y="{}" width="{:.1}" height="7" fill="#888"><title>channel {i}: [{:.4}, {:.4}], {:.1} dB</title></rect>"##,
                        10.0 + 10.0 * i as f64,
                        (x1 - x0).max(1.0),
                        c.min,
                        c.max,
                        c.sqnr_db
                    );
                }
                h.push_str("</svg>");
            }
            if let Some(hist) = self.histograms.iter().find(|a| a.layer == l.name) {
                let marks: Vec<(f64, &str)> = hist
                    .representable
                    .map(|(a, b)| vec![(f64::from(a), "q min"), (f64::from(b), "q max")])
                    .unwrap_or_default();
                h.push_str("<p class=\"muted\">Float activations of the layer on the evaluation data; dashed: the quantized output's range</p>");
                h.push_str(&histogram_svg(
                    &hist.counts,
                    f64::from(hist.min),
                    f64::from(hist.max),
                    "",
                    &marks,
                ));
            }
        }
        if !self.audit.findings.is_empty() {
            h.push_str("<h2>Calibration audit</h2><ul>");
            for f in &self.audit.findings {
                let _ = write!(h, "<li>{}</li>", esc(f));
            }
            h.push_str("</ul>");
        }
        if !self.unmeasured.is_empty() {
            h.push_str("<h2>Not measured</h2><ul>");
            for u in &self.unmeasured {
                let _ = write!(h, "<li>{}</li>", esc(&u.to_string()));
            }
            h.push_str("</ul>");
        }
        remedies_table(&mut h, &self.remedies);
        if let Some(rr) = &self.reduce_range {
            let _ = write!(
                h,
                "<h2>reduce_range, measured</h2><p>{}</p><table><tr><th>reduce_range</th><th>accumulation</th><th>quality</th></tr>",
                esc(&rr.advice)
            );
            for r in &rr.rows {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{:?}</td><td>{}</td></tr>",
                    r.reduce_range,
                    r.accumulation,
                    esc(&r.quality.to_string())
                );
            }
            h.push_str("</table>");
        }
        h.push_str("<p class=\"muted\">Generated by qnumeric.</p></body></html>");
        h
    }
}

impl ReportDiagnosis {
    /// One self-contained HTML page (inline CSS and SVG, no network): per-layer SQNR bars
    /// (the layer's own error and the accumulated one), the verdicts with their findings,
    /// the worst samples and the ranked remedies.
    #[must_use]
    pub fn to_html(&self) -> String {
        let mut h = String::new();
        page_head(&mut h);
        self.html_body(&mut h);
        h.push_str("<p class=\"muted\">Generated by qnumeric.</p></body></html>");
        h
    }

    fn html_body(&self, h: &mut String) {
        let _ = write!(
            h,
            r#"<h1>qnumeric diagnosis: <span class="badge" style="background:{}">{}</span></h1>"#,
            color(self.verdict),
            self.verdict
        );
        if let Some(l) = &self.headline {
            let _ = write!(h, "<p>Look first at <b>{}</b>.</p>", esc(l));
        }
        if let Some(l) = &self.first_layer {
            let _ = write!(
                h,
                "<p>First layer with a finding of its own: <b>{}</b>.</p>",
                esc(l)
            );
        }
        let rows: Vec<BarRow<'_>> = self
            .layers
            .iter()
            .map(|l| BarRow {
                name: &l.name,
                verdict: l.verdict,
                local: Some(l.own.evidence.sqnr_db),
                cumulative: Some(l.evidence.sqnr_db),
            })
            .collect();
        h.push_str("<h2>SQNR per layer</h2><p class=\"muted\">Dark bar: the layer's own error (measured from its shadow, or estimated from the growth of the error: marked ~ in the table); light bar: accumulated. Colour: verdict.</p>");
        h.push_str(&sqnr_bars(&rows));
        h.push_str("<h2>Verdicts and evidence</h2><table><tr><th>layer</th><th>verdict</th><th>own dB</th><th>own: samples below</th><th>cumulative dB</th><th>samples below</th><th>clipped</th></tr>");
        for l in &self.layers {
            let own = match l.own.source {
                OwnSource::Shadow => format!("{:.2}", l.own.evidence.sqnr_db),
                OwnSource::Added => format!("~{:.2}", l.own.evidence.sqnr_db),
            };
            let _ = write!(
                h,
                r#"<tr><td>{}</td><td><span class="badge" style="background:{}">{}</span></td><td>{}</td><td>{:.1}%</td><td>{:.2}</td><td>{:.1}%</td><td>{}</td></tr>"#,
                esc(&l.name),
                color(l.verdict),
                l.verdict,
                own,
                l.own.evidence.fraction_below * 100.0,
                l.evidence.sqnr_db,
                l.evidence.fraction_below * 100.0,
                l.clipped_fraction
                    .map_or("–".into(), |c| format!("{:.2}%", c * 100.0)),
            );
            for f in &l.findings {
                let _ = write!(
                    h,
                    r#"<tr><td></td><td colspan="6" class="muted">{}</td></tr>"#,
                    esc(&f.to_string())
                );
            }
        }
        h.push_str("</table>");
        if !self.worst_samples.is_empty() {
            let _ = write!(
                h,
                "<p>Worst samples at the headline layer: {}</p>",
                self.worst_samples
                    .iter()
                    .map(|i| self.sample_id(*i).to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        remedies_table(h, &self.remedies);
    }
}

#[cfg(feature = "safetensors")]
impl DumpDiagnosis {
    /// One self-contained HTML page of the diagnosis of two dumps: as
    /// [`ReportDiagnosis::to_html`], with the measurements that failed and the tensors left
    /// out.
    #[must_use]
    pub fn to_html(&self) -> String {
        let mut h = String::new();
        page_head(&mut h);
        self.diagnosis.html_body(&mut h);
        if !self.unmeasured.is_empty() {
            h.push_str("<h2>Not measured</h2><ul>");
            for u in &self.unmeasured {
                let _ = write!(h, "<li>{}</li>", esc(&u.to_string()));
            }
            h.push_str("</ul>");
        }
        if !self.skipped.is_empty() {
            h.push_str("<h2>Left out</h2><ul>");
            for s in &self.skipped {
                let _ = write!(
                    h,
                    "<li>{}: {}</li>",
                    esc(&s.name),
                    esc(&s.reason.to_string())
                );
            }
            h.push_str("</ul>");
        }
        h.push_str("<p class=\"muted\">Generated by qnumeric.</p></body></html>");
        h
    }
}
