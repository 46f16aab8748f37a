//! One golden case: reading its fields and comparing results with its tolerances.

use ndarray::{ArrayD, IxDyn};

use super::json::Json;

/// A parsed case.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    /// `id`
    pub id: String,
    /// `op`
    pub op: String,
    /// The whole JSON object.
    pub json: Json,
}

/// A case's tolerance. `None` means bit-exact.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    /// Relative tolerance.
    pub rtol: f64,
    /// Absolute tolerance.
    pub atol: f64,
}

impl Tolerance {
    /// Whether `v` passes against `e` (`|v - e| <= atol + rtol·|e|`; equal infinities and two
    /// NaNs pass).
    #[must_use]
    pub fn accepts(&self, v: f64, e: f64) -> bool {
        if e.is_nan() || v.is_nan() {
            return e.is_nan() && v.is_nan();
        }
        if e.is_infinite() || v.is_infinite() {
            return v == e;
        }
        (v - e).abs() <= self.atol + self.rtol * e.abs()
    }
}

pub(crate) type CaseResult<T> = std::result::Result<T, String>;

impl Case {
    /// Parses one line.
    ///
    /// # Errors
    /// A message when the line is not a JSON object with string `id` and `op`.
    pub fn parse(line: &str) -> CaseResult<Case> {
        let json = Json::parse(line)?;
        let id = json
            .get("id")
            .and_then(Json::as_str)
            .ok_or("missing `id`")?
            .to_string();
        let op = json
            .get("op")
            .and_then(Json::as_str)
            .ok_or("missing `op`")?
            .to_string();
        Ok(Case { id, op, json })
    }

    /// A required member.
    pub(crate) fn field(&self, key: &str) -> CaseResult<&Json> {
        self.json.get(key).ok_or_else(|| format!("missing `{key}`"))
    }

    /// A member of `expected`.
    pub(crate) fn expected(&self, key: &str) -> CaseResult<&Json> {
        self.field("expected")?
            .get(key)
            .ok_or_else(|| format!("missing `expected.{key}`"))
    }

    pub(crate) fn f64_field(&self, key: &str) -> CaseResult<f64> {
        self.field(key)?
            .as_f64()
            .ok_or_else(|| format!("`{key}` is not a number"))
    }

    pub(crate) fn i64_field(&self, key: &str) -> CaseResult<i64> {
        self.field(key)?
            .as_i64()
            .ok_or_else(|| format!("`{key}` is not an integer"))
    }

    pub(crate) fn str_field(&self, key: &str) -> CaseResult<&str> {
        self.field(key)?
            .as_str()
            .ok_or_else(|| format!("`{key}` is not a string"))
    }

    /// The case's tolerance (`None`: bit-exact).
    #[must_use]
    pub fn tolerance(&self) -> Option<Tolerance> {
        let rtol = self.json.get("rtol").and_then(Json::as_f64);
        let atol = self.json.get("atol").and_then(Json::as_f64);
        if rtol.is_none() && atol.is_none() {
            None
        } else {
            Some(Tolerance {
                rtol: rtol.unwrap_or(0.0),
                atol: atol.unwrap_or(0.0),
            })
        }
    }
}

/// Reads a float list.
pub(crate) fn f64_list(j: &Json) -> CaseResult<Vec<f64>> {
    j.as_array()
        .ok_or("expected a list")?
        .iter()
        .map(|v| v.as_f64().ok_or_else(|| format!("not a number: {v:?}")))
        .collect()
}

/// Reads an integer list.
pub(crate) fn i64_list(j: &Json) -> CaseResult<Vec<i64>> {
    j.as_array()
        .ok_or("expected a list")?
        .iter()
        .map(|v| v.as_i64().ok_or_else(|| format!("not an integer: {v:?}")))
        .collect()
}

fn shape_of(j: &Json) -> CaseResult<Vec<usize>> {
    Ok(i64_list(j.get("shape").ok_or("tensor without `shape`")?)?
        .into_iter()
        .map(|d| d as usize)
        .collect())
}

/// Reads a `{"shape", "data"}` tensor of floats (exact f32 values).
pub(crate) fn tensor_f32(j: &Json) -> CaseResult<ArrayD<f32>> {
    let shape = shape_of(j)?;
    let data: Vec<f32> = f64_list(j.get("data").ok_or("tensor without `data`")?)?
        .into_iter()
        .map(|v| v as f32)
        .collect();
    ArrayD::from_shape_vec(IxDyn(&shape), data).map_err(|e| format!("bad tensor: {e}"))
}

/// Reads a `{"shape", "data"}` tensor of integers.
pub(crate) fn tensor_i64(j: &Json) -> CaseResult<ArrayD<i64>> {
    let shape = shape_of(j)?;
    let data = i64_list(j.get("data").ok_or("tensor without `data`")?)?;
    ArrayD::from_shape_vec(IxDyn(&shape), data).map_err(|e| format!("bad tensor: {e}"))
}

/// Compares float results: bit-exact without a tolerance.
pub(crate) fn compare_floats(
    what: &str,
    got: &[f64],
    expected: &[f64],
    tol: Option<Tolerance>,
) -> CaseResult<()> {
    if got.len() != expected.len() {
        return Err(format!(
            "{what}: {} values, expected {}",
            got.len(),
            expected.len()
        ));
    }
    let mut bad = Vec::new();
    for (i, (&v, &e)) in got.iter().zip(expected).enumerate() {
        let ok = match tol {
            Some(t) => t.accepts(v, e),
            None => (v.is_nan() && e.is_nan()) || (v as f32).to_bits() == (e as f32).to_bits(),
        };
        if !ok {
            bad.push((i, v, e));
        }
    }
    if bad.is_empty() {
        return Ok(());
    }
    let shown: Vec<String> = bad
        .iter()
        .take(3)
        .map(|(i, v, e)| format!("[{i}] got {v:e} expected {e:e}"))
        .collect();
    Err(format!(
        "{what}: {} of {} differ: {}",
        bad.len(),
        got.len(),
        shown.join(", ")
    ))
}

/// Compares integer results exactly.
pub(crate) fn compare_ints(what: &str, got: &[i64], expected: &[i64]) -> CaseResult<()> {
    if got.len() != expected.len() {
        return Err(format!(
            "{what}: {} values, expected {}",
            got.len(),
            expected.len()
        ));
    }
    let bad: Vec<(usize, i64, i64)> = got
        .iter()
        .zip(expected)
        .enumerate()
        .filter(|(_, (v, e))| v != e)
        .map(|(i, (v, e))| (i, *v, *e))
        .collect();
    if bad.is_empty() {
        return Ok(());
    }
    let shown: Vec<String> = bad
        .iter()
        .take(3)
        .map(|(i, v, e)| format!("[{i}] got {v} expected {e}"))
        .collect();
    Err(format!(
        "{what}: {} of {} differ: {}",
        bad.len(),
        got.len(),
        shown.join(", ")
    ))
}
