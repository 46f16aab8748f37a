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

/// A value written as its `Display` text (e.g. an error).
pub(crate) fn display<T: std::fmt::Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// Reads a number written by [`f64`]: a JSON number, or `"inf"` / `"-inf"` / `"nan"` (also
/// `null`, which `serde_json` writes for non-finite numbers elsewhere, read as NaN).
pub(crate) fn de_f64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    use serde::Deserialize;
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        Num(f64),
        Str(String),
        Null(()),
    }
    match N::deserialize(d)? {
        N::Num(v) => Ok(v),
        N::Null(()) => Ok(f64::NAN),
        N::Str(s) => match s.as_str() {
            "inf" => Ok(f64::INFINITY),
            "-inf" => Ok(f64::NEG_INFINITY),
            "nan" => Ok(f64::NAN),
            other => Err(serde::de::Error::invalid_value(
                serde::de::Unexpected::Str(other),
                &"a number, \"inf\", \"-inf\" or \"nan\"",
            )),
        },
    }
}

/// Reads what [`opt_f64`] writes.
pub(crate) fn de_opt_f64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    use serde::Deserialize;
    #[derive(Deserialize)]
    struct W(#[serde(deserialize_with = "de_f64")] f64);
    Ok(Option::<W>::deserialize(d)?.map(|w| w.0))
}

/// Reads what [`vec_f64`] writes.
pub(crate) fn de_vec_f64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    use serde::Deserialize;
    #[derive(Deserialize)]
    struct W(#[serde(deserialize_with = "de_f64")] f64);
    Ok(Vec::<W>::deserialize(d)?.into_iter().map(|w| w.0).collect())
}

/// Writes three numbers as [`vec_f64`].
pub(crate) fn arr3_f64<S: Serializer>(v: &[f64; 3], s: S) -> Result<S::Ok, S::Error> {
    vec_f64(v, s)
}

/// Reads what [`arr3_f64`] writes.
pub(crate) fn de_arr3_f64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<[f64; 3], D::Error> {
    let v = de_vec_f64(d)?;
    <[f64; 3]>::try_from(v.as_slice())
        .map_err(|_| serde::de::Error::invalid_length(v.len(), &"three numbers"))
}

/// An `f64` that reads and writes non-finite values as the strings `"inf"`, `"-inf"` and
/// `"nan"` (state that must round-trip exactly, infinities included).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Number(pub(crate) f64);

impl serde::Serialize for Number {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        f64(&self.0, s)
    }
}

impl<'de> serde::Deserialize<'de> for Number {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Num(f64),
            Text(String),
        }
        match Repr::deserialize(d)? {
            Repr::Num(v) => Ok(Number(v)),
            Repr::Text(t) => match t.as_str() {
                "inf" => Ok(Number(f64::INFINITY)),
                "-inf" => Ok(Number(f64::NEG_INFINITY)),
                "nan" => Ok(Number(f64::NAN)),
                _ => Err(serde::de::Error::custom(format!(
                    "`{t}` is not a number (numbers, \"inf\", \"-inf\" or \"nan\")"
                ))),
            },
        }
    }
}
