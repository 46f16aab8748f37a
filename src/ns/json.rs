//! JSON helpers (feature `serde`): non-finite numbers as the strings `"inf"`, `"-inf"` and
//! `"nan"` (JSON has no literal for them; a string keeps the value, where `null` would not).

use serde::Serializer;

/// A number, or `"inf"` / `"-inf"` / `"nan"`.
pub(crate) fn f64<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.is_finite() {
        s.serialize_f64(*v)
    } else if v.is_nan() {
        s.serialize_str("nan")
    } else if *v > 0.0 {
        s.serialize_str("inf")
    } else {
        s.serialize_str("-inf")
    }
}

/// As [`f64`], `null` for `None`.
pub(crate) fn opt_f64<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => f64(v, s),
        None => s.serialize_none(),
    }
}

/// A list of numbers, each as [`f64`].
pub(crate) fn vec_f64<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(v.len()))?;
    for x in v {
        seq.serialize_element(&Num(*x))?;
    }
    seq.end()
}

struct Num(f64);

impl serde::Serialize for Num {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        f64(&self.0, s)
    }
}

/// A map of lists of numbers, each as [`f64`].
pub(crate) fn map_vec_f64<S: Serializer>(
    v: &std::collections::BTreeMap<String, Vec<f64>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    struct Nums<'a>(&'a [f64]);
    impl serde::Serialize for Nums<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            vec_f64(self.0, s)
        }
    }
    let mut map = s.serialize_map(Some(v.len()))?;
    for (k, x) in v {
        map.serialize_entry(k, &Nums(x))?;
    }
    map.end()
}
