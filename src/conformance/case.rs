//! One golden case: reading its fields and comparing results with its tolerances.

use ndarray::{ArrayD, IxDyn};

use super::json::{self, Json, exact_f32, int, list};

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
    /// A message when the line is not JSON (including nesting deeper than 128 levels) or not
    /// an object with string `id` and `op`.
    pub fn parse(line: &str) -> CaseResult<Case> {
        let json = json::parse(line)?;
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

    /// The required member `key` read with `read`; errors name the member.
    pub(crate) fn read<T>(
        &self,
        key: &str,
        read: impl FnOnce(&Json) -> CaseResult<T>,
    ) -> CaseResult<T> {
        read(self.field(key)?).map_err(|e| format!("`{key}`: {e}"))
    }

    /// The member `key` of `expected` read with `read`; errors name the member.
    pub(crate) fn read_expected<T>(
        &self,
        key: &str,
        read: impl FnOnce(&Json) -> CaseResult<T>,
    ) -> CaseResult<T> {
        read(self.expected(key)?).map_err(|e| format!("`expected.{key}`: {e}"))
    }

    /// A float member (a number or `"inf"`, `"-inf"`, `"nan"`).
    pub(crate) fn f64_field(&self, key: &str) -> CaseResult<f64> {
        self.read(key, json::number)
    }

    /// An integer member in the range of `i64`.
    pub(crate) fn i64_field(&self, key: &str) -> CaseResult<i64> {
        self.read(key, int::<i64>)
    }

    pub(crate) fn str_field(&self, key: &str) -> CaseResult<&str> {
        self.field(key)?
            .as_str()
            .ok_or_else(|| format!("`{key}` is not a string"))
    }

    /// The case's tolerance (`None`: bit-exact).
    #[must_use]
    pub fn tolerance(&self) -> Option<Tolerance> {
        let rtol = self.json.get("rtol").and_then(|j| json::number(j).ok());
        let atol = self.json.get("atol").and_then(|j| json::number(j).ok());
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

/// Reads a float list (numbers or `"inf"`, `"-inf"`, `"nan"`).
pub(crate) fn f64_list(j: &Json) -> CaseResult<Vec<f64>> {
    list(j, json::number)
}

/// Reads a list of exact f32 values.
pub(crate) fn f32_list(j: &Json) -> CaseResult<Vec<f32>> {
    list(j, exact_f32)
}

/// Reads a list of integers in the range of `T`.
pub(crate) fn int_list<T: TryFrom<i128>>(j: &Json) -> CaseResult<Vec<T>> {
    list(j, int::<T>)
}

/// Reads a `{"shape", "data"}` tensor, each element with `read`. The shape's dimensions are
/// non-negative integers and their product is the length of `data`.
fn tensor<T>(j: &Json, read: impl Fn(&Json) -> CaseResult<T>) -> CaseResult<ArrayD<T>> {
    let shape: Vec<usize> = int_list(j.get("shape").ok_or("tensor without `shape`")?)
        .map_err(|e| format!("shape{e}"))?;
    let len = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| format!("shape {shape:?} has more elements than usize holds"))?;
    let data = j.get("data").ok_or("tensor without `data`")?;
    let n = data
        .as_array()
        .ok_or_else(|| format!("data {} is not a list", json::shown(data)))?
        .len();
    if n != len {
        return Err(format!("shape {shape:?} holds {len} values, data has {n}"));
    }
    let data = list(data, read).map_err(|e| format!("data{e}"))?;
    ArrayD::from_shape_vec(IxDyn(&shape), data).map_err(|e| format!("bad tensor: {e}"))
}

/// Reads a `{"shape", "data"}` tensor of floats; each value must be exactly an f32.
pub(crate) fn tensor_f32(j: &Json) -> CaseResult<ArrayD<f32>> {
    tensor(j, exact_f32)
}

/// Reads a `{"shape", "data"}` tensor of integers in the range of `i64`.
pub(crate) fn tensor_i64(j: &Json) -> CaseResult<ArrayD<i64>> {
    tensor(j, int::<i64>)
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
