//! Dumps (feature `safetensors`): two `.safetensors` files of per-layer outputs, one from the
//! float model and one from the quantized model, from any framework. What the `qnumeric
//! compare` command reads.
//!
//! Tensors are matched by name; the first axis of each is the sample axis. Layer order is
//! the `order` metadata key (the float file's, else the quantized file's) when present, then
//! the remaining names sorted; without it, by name. `order` is a JSON array of names, taken
//! exactly (`["a", "b,c", " d"]`: names may hold commas and spaces), or names separated by
//! commas, each trimmed of surrounding white space. `F32`, `F64`, `F16` and `BF16` tensors are
//! compared (in `f64`, exactly converted); NaN and infinite values in the quantized file where
//! the float file is finite are a finding ([`crate::ns::NonFiniteCount`]), not a skip; a
//! tensor in one file only, of another dtype, of different shapes, or that cannot be compared
//! (NaN in the float file, no values, 0-d) is listed in [`DumpComparison::skipped`] with the
//! reason.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::path::Path;

use half::{bf16, f16};
use ndarray::{ArrayD, IxDyn};
use safetensors::{Dtype, SafeTensors};

use super::log::NumericLog;
use super::report::{Comparison, NsReport};
use crate::error::{QuantError, Result};

/// Where the layer order came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum OrderSource {
    /// The `order` metadata key.
    Metadata,
    /// Sorted names (no `order` key).
    Name,
}

/// A tensor left out of the comparison, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SkippedTensor {
    /// The tensor's name.
    pub name: String,
    /// Why (`"only in the float file"`, `"shapes differ: [2, 3] vs [2, 4]"`, ...).
    pub reason: String,
}

/// The comparison of two dumps.
#[derive(Debug, Clone, PartialEq)]
pub struct DumpComparison {
    /// Where the order came from.
    pub order: OrderSource,
    /// The compared tensors as cumulative comparisons, in order.
    pub report: NsReport,
    /// The tensors left out, in order.
    pub skipped: Vec<SkippedTensor>,
}

/// One dump, parsed.
struct Dump<'a> {
    st: SafeTensors<'a>,
    order: Option<Vec<String>>,
}

/// The `order` metadata: a JSON array of names (taken exactly), or names separated by commas
/// (each trimmed of surrounding white space; empty ones dropped).
fn parse_order(o: &str) -> std::result::Result<Vec<String>, String> {
    if o.trim_start().starts_with('[') {
        serde_json::from_str::<Vec<String>>(o)
            .map_err(|e| format!("the `order` metadata is not a JSON array of names: {e}"))
    } else {
        Ok(o.split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect())
    }
}

fn parse<'a>(op: &'static str, what: &str, bytes: &'a [u8]) -> Result<Dump<'a>> {
    let bad = |e: String| QuantError::Format {
        op,
        detail: format!("{what}: not a readable safetensors file: {e}"),
    };
    let unreadable =
        |e| QuantError::parse(op, format!("{what}: not a readable safetensors file"), e);
    let st = SafeTensors::deserialize(bytes).map_err(unreadable)?;
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(unreadable)?;
    let order = match meta.metadata().as_ref().and_then(|m| m.get("order")) {
        None => None,
        Some(o) => Some(parse_order(o).map_err(bad)?),
    };
    Ok(Dump { st, order })
}

/// Decodes a float tensor to `f64` (exact); `Err(reason)` for other dtypes.
fn decode(view: &safetensors::tensor::TensorView<'_>) -> std::result::Result<ArrayD<f64>, String> {
    let data = view.data();
    let values: Vec<f64> = match view.dtype() {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        Dtype::F64 => data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f64())
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f64())
            .collect(),
        other => return Err(format!("{other:?}")),
    };
    ArrayD::from_shape_vec(IxDyn(view.shape()), values).map_err(|e| e.to_string())
}

/// Why a pair that failed to push is skipped, without the operation's name.
fn reason(e: &QuantError) -> String {
    match e {
        QuantError::NanInput { index, .. } => format!("NaN at flat index {index}"),
        QuantError::NonFinite { value, .. } => format!("non-finite value {value}"),
        QuantError::EmptyInput { .. } => "no values (an axis of length 0)".into(),
        QuantError::InvalidAxis { .. } => "0-d tensor: no sample axis".into(),
        other => other.to_string(),
    }
}

/// Compares two dumps given as bytes (the float model's outputs first).
///
/// # Errors
/// [`QuantError::Parse`] when either is not a readable safetensors file.
pub fn compare_dumps(float: &[u8], quant: &[u8]) -> Result<DumpComparison> {
    const OP: &str = "compare_dumps";
    let f = parse(OP, "float dump", float)?;
    let q = parse(OP, "quantized dump", quant)?;
    Ok(compare(&f, &q))
}

/// Compares two dump files (the float model's outputs first).
///
/// # Errors
/// [`QuantError::Io`] naming the file when it cannot be read (the I/O error kept as the
/// source); [`QuantError::Parse`] when it is not a readable
/// safetensors file (missing, truncated, corrupt).
///
/// # Examples
/// ```no_run
/// let cmp = qnumeric::ns::compare_dump_files("float.safetensors", "int8.safetensors")?;
/// println!("{cmp}");
/// # Ok::<(), qnumeric::QuantError>(())
/// ```
pub fn compare_dump_files(
    float: impl AsRef<Path>,
    quant: impl AsRef<Path>,
) -> Result<DumpComparison> {
    const OP: &str = "compare_dump_files";
    let read = |p: &Path| std::fs::read(p).map_err(|e| QuantError::io(OP, p, e));
    let (fp, qp) = (float.as_ref(), quant.as_ref());
    let (fb, qb) = (read(fp)?, read(qp)?);
    let fname = fp.display().to_string();
    let qname = qp.display().to_string();
    let f = parse(OP, &fname, &fb)?;
    let q = parse(OP, &qname, &qb)?;
    Ok(compare(&f, &q))
}

fn compare(f: &Dump<'_>, q: &Dump<'_>) -> DumpComparison {
    let fnames: BTreeSet<String> = f.st.names().into_iter().map(String::from).collect();
    let qnames: BTreeSet<String> = q.st.names().into_iter().map(String::from).collect();
    let all: BTreeSet<&String> = fnames.union(&qnames).collect();
    let mut skipped = Vec::new();
    let (order, source) = match f.order.as_ref().or(q.order.as_ref()) {
        Some(listed) => {
            let mut seen = HashSet::new();
            let mut order = Vec::new();
            for n in listed {
                if !seen.insert(n.clone()) {
                    continue;
                }
                if all.contains(n) {
                    order.push(n.clone());
                } else {
                    skipped.push(SkippedTensor {
                        name: n.clone(),
                        reason: "listed in `order` but in neither file".into(),
                    });
                }
            }
            for n in &all {
                if !seen.contains(*n) {
                    order.push((*n).clone());
                }
            }
            (order, OrderSource::Metadata)
        }
        None => (
            all.iter().map(|n| (*n).clone()).collect(),
            OrderSource::Name,
        ),
    };
    let mut log = NumericLog::streaming();
    for name in &order {
        let skip = |reason: String| SkippedTensor {
            name: name.clone(),
            reason,
        };
        let (fv, qv) = match (f.st.tensor(name), q.st.tensor(name)) {
            (Ok(a), Ok(b)) => (a, b),
            (Ok(_), Err(_)) => {
                skipped.push(skip("only in the float file".into()));
                continue;
            }
            (Err(_), _) => {
                skipped.push(skip("only in the quantized file".into()));
                continue;
            }
        };
        if fv.shape() != qv.shape() {
            skipped.push(skip(format!(
                "shapes differ: {:?} vs {:?}",
                fv.shape(),
                qv.shape()
            )));
            continue;
        }
        let x = match decode(&fv) {
            Ok(x) => x,
            Err(d) => {
                skipped.push(skip(format!("non-float dtype {d} in the float file")));
                continue;
            }
        };
        let y = match decode(&qv) {
            Ok(y) => y,
            Err(d) => {
                skipped.push(skip(format!("non-float dtype {d} in the quantized file")));
                continue;
            }
        };
        if let Err(e) = log.push(name, &x, &y, None) {
            skipped.push(skip(reason(&e)));
        }
    }
    DumpComparison {
        order: source,
        report: log.report(),
        skipped,
    }
}

impl DumpComparison {
    /// The comparison as one JSON object: `order` (`"metadata"` or `"name"`), `tensors`
    /// (in order; each with `name`, `shape`, `sqnr_db`, `normalized_l2`, `cosine`, `mse`,
    /// `max_abs`, `mean_error`, `samples`, and with `per_sample` also `sample_sqnr_db`, one
    /// number per index of the first axis), `skipped` (`name`, `reason`), `worst`,
    /// `largest_drop`, `first_below`, `jump_threshold_db`. Non-finite numbers are the
    /// strings `"inf"`, `"-inf"`, `"nan"`.
    #[cfg(feature = "serde")]
    #[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
    #[must_use]
    pub fn to_json(&self, per_sample: bool) -> String {
        use super::json;
        use super::report::Jump;
        #[derive(serde::Serialize)]
        struct Tensor<'a> {
            name: &'a str,
            shape: &'a [usize],
            #[serde(serialize_with = "json::f64")]
            sqnr_db: f64,
            #[serde(serialize_with = "json::f64")]
            normalized_l2: f64,
            #[serde(serialize_with = "json::f64")]
            cosine: f64,
            #[serde(serialize_with = "json::f64")]
            mse: f64,
            #[serde(serialize_with = "json::f64")]
            max_abs: f64,
            #[serde(serialize_with = "json::f64")]
            mean_error: f64,
            samples: usize,
            #[serde(skip_serializing_if = "Option::is_none")]
            #[serde(serialize_with = "opt_vec")]
            sample_sqnr_db: Option<Vec<f64>>,
        }
        fn opt_vec<S: serde::Serializer>(
            v: &Option<Vec<f64>>,
            s: S,
        ) -> std::result::Result<S::Ok, S::Error> {
            match v {
                Some(v) => json::vec_f64(v, s),
                None => s.serialize_none(),
            }
        }
        #[derive(serde::Serialize)]
        struct Out<'a> {
            order: OrderSource,
            tensors: Vec<Tensor<'a>>,
            skipped: &'a [SkippedTensor],
            worst: Option<&'a str>,
            largest_drop: Option<Jump>,
            first_below: Option<Jump>,
            #[serde(serialize_with = "json::f64")]
            jump_threshold_db: f64,
        }
        let tensors = self
            .report
            .layers
            .iter()
            .filter_map(|l| {
                let c = l.cumulative.as_ref()?;
                Some(Tensor {
                    name: &l.name,
                    shape: &c.shape,
                    sqnr_db: c.sqnr_db,
                    normalized_l2: c.normalized_l2,
                    cosine: c.cosine,
                    mse: c.mse,
                    max_abs: c.max_abs,
                    mean_error: c.mean_error,
                    samples: c.samples.len(),
                    sample_sqnr_db: per_sample.then(|| c.sample_sqnr_db()),
                })
            })
            .collect();
        let out = Out {
            order: self.order,
            tensors,
            skipped: &self.skipped,
            worst: self.report.worst().map(|l| l.name.as_str()),
            largest_drop: self.report.largest_drop(),
            first_below: self.report.first_below_threshold(),
            jump_threshold_db: self.report.jump_threshold_db,
        };
        serde_json::to_string(&out).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// Per-sample figures as a text table ([`NsReport::sample_table`]).
    #[must_use]
    pub fn sample_table(&self, worst: usize) -> String {
        self.report.sample_table(Comparison::Cumulative, worst)
    }
}

impl fmt::Display for DumpComparison {
    /// The report's table, the order's source and the skipped tensors.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.report)?;
        writeln!(
            f,
            "order: {}",
            match self.order {
                OrderSource::Metadata => "`order` metadata",
                OrderSource::Name => "by name",
            }
        )?;
        if !self.skipped.is_empty() {
            writeln!(f, "skipped:")?;
            for s in &self.skipped {
                writeln!(f, "  {}: {}", crate::text::display_name(&s.name), s.reason)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::TensorView;

    fn dump(values: &[f32], order: Option<&str>) -> Vec<u8> {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let view = TensorView::new(Dtype::F32, vec![values.len(), 1], &bytes).expect("view");
        let meta = order.map(|o| [("order".to_string(), o.to_string())].into());
        safetensors::serialize([("a", view)], meta).expect("serialize")
    }

    #[test]
    fn bytes_in_and_unreadable_bytes() {
        let f = dump(&[1.0, 2.0], Some("a"));
        let q = dump(&[1.0, 2.5], None);
        let c = compare_dumps(&f, &q).expect("compare");
        assert_eq!(c.order, OrderSource::Metadata);
        assert_eq!(c.report.layers.len(), 1);
        assert!(c.skipped.is_empty());
        let err = compare_dumps(b"junk", &q).expect_err("unreadable");
        assert!(
            matches!(&err, QuantError::Parse { op: "compare_dumps", what, .. } if what.starts_with("float dump: ")),
            "{err}"
        );
        assert!(
            std::error::Error::source(&err).is_some(),
            "the parser's error is kept"
        );
        let err = compare_dumps(&f, &q[..q.len() - 1]).expect_err("truncated");
        assert!(
            matches!(&err, QuantError::Parse { what, .. } if what.starts_with("quantized dump: ")),
            "{err}"
        );
    }

    #[test]
    fn skip_reasons() {
        assert_eq!(
            reason(&QuantError::NonFinite {
                op: "x",
                what: "y",
                value: f64::INFINITY
            }),
            "non-finite value inf"
        );
        assert_eq!(
            reason(&QuantError::Empty { op: "x" }),
            "x: no data observed yet"
        );
    }
}
