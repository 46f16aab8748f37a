//! The diagnosis on a transformer: a tiny BERT (tests/models/tiny_bert.rs) dumped as a v2
//! pair, healthy and with planted faults.

use qnumeric::diagnose::{
    Change, Cost, DumpDiagnoseOptions, DumpDiagnosis, Effect, Finding, OwnSource, Verdict,
    diagnose_dumps,
};
use qnumeric::ns::{DumpPair, SampleDims};
use safetensors::SafeTensors;
use safetensors::tensor::TensorView;

use crate::tiny_bert::{BertConfig, DumpOptions, Quantization, bert_dump};

fn diagnose(opts: &DumpOptions, dims: SampleDims) -> DumpDiagnosis {
    let d = bert_dump(&BertConfig::tiny(), opts).expect("dump");
    let pair = DumpPair::from_bytes(&d.float, &d.quant).expect("pair");
    diagnose_dumps(
        &pair,
        &DumpDiagnoseOptions {
            sample_dims: dims,
            ..DumpDiagnoseOptions::default()
        },
    )
    .expect("diagnosis")
}

/// Every per-sample figure of a diagnosis (own and cumulative), layer by layer.
fn figures(d: &DumpDiagnosis) -> Vec<(String, Vec<f64>, Vec<f64>)> {
    d.diagnosis
        .layers
        .iter()
        .map(|l| {
            (
                l.name.clone(),
                l.own.evidence.sample_sqnr_db.clone(),
                l.evidence.sample_sqnr_db.clone(),
            )
        })
        .collect()
}

#[test]
fn masked_figures_ignore_garbage_in_padded_positions() {
    for dims in [SampleDims::Samples, SampleDims::Positions] {
        let clean = diagnose(&DumpOptions::full(Quantization::Dynamic), dims);
        let garbage = diagnose(
            &DumpOptions {
                garbage_in_padding: true,
                ..DumpOptions::full(Quantization::Dynamic)
            },
            dims,
        );
        assert!(clean.masked);
        assert_eq!(figures(&clean), figures(&garbage), "{dims:?}");
        assert_eq!(clean.diagnosis.verdict, garbage.diagnosis.verdict);
        // Without the mask, the garbage is in every figure.
        let unmasked = diagnose(
            &DumpOptions {
                garbage_in_padding: true,
                with_mask: false,
                ..DumpOptions::full(Quantization::Dynamic)
            },
            SampleDims::Samples,
        );
        assert_ne!(figures(&unmasked), figures(&clean));
    }
}

#[test]
fn the_healthy_model_has_no_finding_of_its_own() {
    for q in [Quantization::Dynamic, Quantization::Static] {
        let d = diagnose(&DumpOptions::full(q), SampleDims::Samples);
        for l in &d.diagnosis.layers {
            assert_ne!(l.verdict, Verdict::Implementation, "{q:?} {}", l.name);
            assert!(
                matches!(l.verdict, Verdict::Fine | Verdict::Inherited),
                "{q:?} {}: {} {:?}",
                l.name,
                l.verdict,
                l.findings
            );
        }
        assert_eq!(d.diagnosis.headline, None, "{q:?}\n{d}");
    }
}

#[test]
fn a_linear_at_3_bits_is_the_headline() {
    let cfg = BertConfig::tiny();
    for target in [
        "encoder.layer.0.intermediate.dense",
        "encoder.layer.1.attention.output.dense",
    ] {
        for (shadow, source) in [(true, OwnSource::Shadow), (false, OwnSource::Added)] {
            let opts = DumpOptions {
                inject_bits: Some((target.to_string(), 3)),
                with_shadow: shadow,
                ..DumpOptions::full(Quantization::Dynamic)
            };
            let dump = bert_dump(&cfg, &opts).expect("dump");
            let pair = DumpPair::from_bytes(&dump.float, &dump.quant).expect("pair");
            let d = diagnose_dumps(&pair, &DumpDiagnoseOptions::default()).expect("diagnosis");
            assert_eq!(d.diagnosis.headline.as_deref(), Some(target), "{d}");
            let l = d.diagnosis.layer(target).expect("layer");
            assert_eq!(l.own.source, source);
            assert_eq!(l.verdict, Verdict::DataInsensitive, "{d}");
            // Its own remedy, measured by replaying it: 8-bit weights, first, a large gain.
            let top = d.diagnosis.remedies.first().expect("a remedy");
            assert_eq!(top.layer.as_deref(), Some(target), "{d}");
            assert_eq!(top.change, Change::WeightBits { bits: 8 }, "{d}");
            assert!(
                matches!(top.effect, Effect::Local { gain_db, .. } if gain_db > 15.0),
                "{top}"
            );
            assert!(d.unmeasured.is_empty(), "{:?}", d.unmeasured);
            // nothing else has a finding of its own
            for other in d.diagnosis.layers.iter().filter(|o| o.name != target) {
                assert!(
                    matches!(other.verdict, Verdict::Fine | Verdict::Inherited),
                    "{}: {}\n{d}",
                    other.name,
                    other.verdict
                );
            }
        }
    }
}

#[test]
fn outlier_samples_under_static_quantization_are_data_sensitive_and_listed_worst() {
    let outliers = [2usize, 9];
    let d = diagnose(
        &DumpOptions {
            outlier_samples: outliers.to_vec(),
            ..DumpOptions::full(Quantization::Static)
        },
        SampleDims::Samples,
    );
    let first = d
        .diagnosis
        .layer("encoder.layer.0.attention.self.query")
        .expect("query");
    assert_eq!(first.verdict, Verdict::DataSensitive, "{d}");
    let mut worst = first.own.evidence.worst_samples[..2].to_vec();
    worst.sort_unstable();
    assert_eq!(worst, outliers, "{d}");
    assert!(
        first.findings.iter().any(
            |f| matches!(f, Finding::ClippedInput { worst, .. } if outliers.contains(&worst[0].0))
        ),
        "{:?}",
        first.findings
    );
    assert!(d.diagnosis.verdict >= Verdict::DataSensitive);
}

/// The quant file with one tensor replaced by `f(tensor)`.
fn rewrite(quant: &[u8], name: &str, f: impl Fn(f32) -> f32) -> Vec<u8> {
    let st = SafeTensors::deserialize(quant).expect("parse");
    let (_, meta) = SafeTensors::read_metadata(quant).expect("meta");
    let mut data: Vec<(String, Vec<u8>, Vec<usize>)> = Vec::new();
    for (n, v) in st.tensors() {
        let mut bytes = v.data().to_vec();
        if n == name {
            bytes = bytes
                .chunks_exact(4)
                .flat_map(|c| f(f32::from_le_bytes([c[0], c[1], c[2], c[3]])).to_le_bytes())
                .collect();
        }
        data.push((n, bytes, v.shape().to_vec()));
    }
    let views: Vec<(String, TensorView<'_>)> = data
        .iter()
        .map(|(n, b, s)| {
            (
                n.clone(),
                TensorView::new(safetensors::Dtype::F32, s.clone(), b).expect("view"),
            )
        })
        .collect();
    safetensors::serialize(views, meta.metadata().clone()).expect("serialize")
}

#[test]
fn a_kernel_that_computes_worse_than_its_scheme_is_an_implementation_error() {
    let target = "encoder.layer.0.attention.output.dense";
    let dump = bert_dump(
        &BertConfig::tiny(),
        &DumpOptions::full(Quantization::Dynamic),
    )
    .expect("dump");
    // A kernel bug: that Linear's output 20 % too large (its input and weights are right).
    let quant = rewrite(&dump.quant, target, |v| v * 1.2);
    let pair = DumpPair::from_bytes(&dump.float, &quant).expect("pair");
    let d = diagnose_dumps(&pair, &DumpDiagnoseOptions::default()).expect("diagnosis");
    let l = d.diagnosis.layer(target).expect("layer");
    assert_eq!(l.verdict, Verdict::Implementation, "{d}");
    assert!(
        l.findings
            .iter()
            .any(|f| matches!(f, Finding::WorseThanItsScheme { actual_db, replayed_db } if replayed_db - actual_db > 10.0)),
        "{:?}",
        l.findings
    );
    assert_eq!(d.diagnosis.headline.as_deref(), Some(target), "{d}");
    let top = d.diagnosis.remedies.first().expect("a remedy");
    assert_eq!(top.change, Change::FixKernel);
    assert_eq!(top.cost(), Cost::KernelFix);
    assert_eq!(top.layer.as_deref(), Some(target));
}

#[test]
fn outlier_input_channels_are_evidence_with_remedies_that_address_them() {
    // Outliers in every sample under dynamic quantization: the inputs of the first layer's
    // projections carry a few channels 30x wider than the rest after the LayerNorm.
    let cfg = BertConfig::tiny();
    let all: Vec<usize> = (0..cfg.samples).collect();
    let d = diagnose(
        &DumpOptions {
            outlier_samples: all,
            ..DumpOptions::full(Quantization::Dynamic)
        },
        SampleDims::Samples,
    );
    let flagged: Vec<_> = d
        .diagnosis
        .layers
        .iter()
        .filter(|l| {
            l.findings
                .iter()
                .any(|f| matches!(f, Finding::OutlierInputChannels { .. }))
        })
        .collect();
    for l in &flagged {
        let channels = l
            .findings
            .iter()
            .find_map(|f| match f {
                Finding::OutlierInputChannels { channels, .. } => Some(channels),
                _ => None,
            })
            .expect("channels");
        assert!(!channels.is_empty());
        let remedies: Vec<_> = d
            .diagnosis
            .remedies
            .iter()
            .filter(|r| r.layer.as_deref() == Some(l.name.as_str()))
            .collect();
        assert!(!remedies.is_empty(), "{}: {d}", l.name);
        for r in remedies {
            assert!(r.gain_db().is_some_and(|g| g >= 0.5), "{r}");
        }
    }
}

#[test]
fn remedies_measured_end_to_end_where_the_caller_can_rerun_the_model() {
    let cfg = BertConfig::tiny();
    let target = "encoder.layer.0.output.dense";
    let faulty = DumpOptions {
        inject_bits: Some((target.to_string(), 3)),
        ..DumpOptions::full(Quantization::Dynamic)
    };
    let dump = bert_dump(&cfg, &faulty).expect("dump");
    let pair = DumpPair::from_bytes(&dump.float, &dump.quant).expect("pair");
    let mut d = diagnose_dumps(&pair, &DumpDiagnoseOptions::default()).expect("diagnosis");
    let before = d.output_sqnr_db().expect("output");
    // The caller can re-run its model with 8-bit weights for that layer (here: the healthy
    // dump), and with nothing else.
    let healthy = bert_dump(&cfg, &DumpOptions::full(Quantization::Dynamic)).expect("dump");
    let healthy_pair = DumpPair::from_bytes(&healthy.float, &healthy.quant).expect("pair");
    let healthy_db = diagnose_dumps(&healthy_pair, &DumpDiagnoseOptions::default())
        .expect("diagnosis")
        .output_sqnr_db()
        .expect("output");
    d.measure_end_to_end(|r| {
        Ok(
            (r.change == Change::WeightBits { bits: 8 } && r.layer.as_deref() == Some(target))
                .then_some(healthy_db),
        )
    })
    .expect("measured");
    let top = d.diagnosis.remedies.first().expect("remedy");
    assert_eq!(top.change, Change::WeightBits { bits: 8 });
    assert_eq!(top.scope(), Some(qnumeric::diagnose::Scope::EndToEnd));
    let gain = top.gain_db().expect("gain");
    assert!((gain - (healthy_db - before)).abs() < 1e-9, "{gain}");
    assert!(gain > 10.0, "{gain}");
    assert_eq!(d.diagnosis.headline.as_deref(), Some(target));
    // The rest keep their local figures.
    assert!(
        d.diagnosis.remedies[1..]
            .iter()
            .all(|r| r.scope() == Some(qnumeric::diagnose::Scope::Local))
    );
    // A NaN from the callback is refused.
    let e = d
        .measure_end_to_end(|_| Ok(Some(f64::NAN)))
        .expect_err("nan");
    assert!(
        matches!(e, qnumeric::QuantError::InvalidParameter { .. }),
        "{e}"
    );

    // Remedies that gain nothing end to end are dropped; the others stay.
    let n = d.diagnosis.remedies.len();
    let mut every = d.clone();
    every
        .measure_end_to_end(|r| {
            Ok(Some(if r.change == (Change::WeightBits { bits: 8 }) {
                healthy_db
            } else {
                before - 0.1
            }))
        })
        .expect("measured");
    every.drop_remedies_below(0.5).expect("dropped");
    assert_eq!(every.diagnosis.remedies.len(), 1, "of {n}");
    assert_eq!(
        every.diagnosis.remedies[0].change,
        Change::WeightBits { bits: 8 }
    );
    assert!(every.drop_remedies_below(f64::NAN).is_err());
    assert!(every.drop_remedies_below(-1.0).is_err());

    // The page: self-contained, the headline and its remedy in it.
    let html = every.to_html();
    assert!(html.starts_with("<!DOCTYPE html>") && html.ends_with("</html>"));
    assert!(html.contains("<svg") && !html.contains("http://") && !html.contains("https://"));
    assert!(html.contains(target));
    assert!(html.contains("Remedies, best first"));
}
