//! JSON values of golden cases, and strict readers for the numbers in them.
//!
//! Values are [`serde_json::Value`]s. The readers check every number against what the format
//! says it is: an integer in the range of the type it is read into, an exact `f32`, a float
//! (with the strings `"inf"`, `"-inf"`, `"nan"`). A value that does not fit fails its case with
//! a reason; nothing is cast or rounded on the way in.

use std::any::type_name;

pub(crate) use serde_json::Value as Json;

use super::case::CaseResult;

/// Parses one JSON document. Nesting deeper than `serde_json`'s recursion limit (128) is an
/// error, not a stack overflow.
pub(crate) fn parse(text: &str) -> CaseResult<Json> {
    serde_json::from_str(text).map_err(|e| e.to_string())
}

/// A value as it appears in a message: its JSON text, shortened when long.
pub(crate) fn shown(j: &Json) -> String {
    const MAX: usize = 40;
    let s = j.to_string();
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s,
    }
}

/// A number as a float: a JSON number (integers converted to the nearest `f64`) or one of the
/// strings `"inf"`, `"-inf"`, `"nan"` (also `"Infinity"`, `"-Infinity"`, `"NaN"`).
pub(crate) fn number(j: &Json) -> CaseResult<f64> {
    match j {
        Json::Number(n) => n
            .as_f64()
            .ok_or_else(|| format!("{n} is not representable as a number")),
        Json::String(s) => match s.as_str() {
            "inf" | "Infinity" => Ok(f64::INFINITY),
            "-inf" | "-Infinity" => Ok(f64::NEG_INFINITY),
            "nan" | "NaN" => Ok(f64::NAN),
            _ => Err(format!("{} is not a number", shown(j))),
        },
        _ => Err(format!("{} is not a number", shown(j))),
    }
}

/// A JSON integer as `i128` (every JSON integer serde_json reads fits).
fn integer(j: &Json) -> CaseResult<i128> {
    match j {
        Json::Number(n) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
            .ok_or_else(|| format!("{n} is not an integer")),
        _ => Err(format!("{} is not an integer", shown(j))),
    }
}

/// An integer in the range of `T`. A number with a fraction or an exponent is not an integer;
/// a value outside `T`'s range is an error, never a wrapped or saturated value.
pub(crate) fn int<T: TryFrom<i128>>(j: &Json) -> CaseResult<T> {
    let v = integer(j)?;
    T::try_from(v).map_err(|_| format!("{v} is out of range for {}", type_name::<T>()))
}

/// A float that is exactly an `f32` (the format's promise for tensor data, scales and zero
/// points): a value that would round is an error. `"inf"`, `"-inf"` and `"nan"` are allowed.
pub(crate) fn exact_f32(j: &Json) -> CaseResult<f32> {
    if let Ok(i) = integer(j) {
        let f = i as f32;
        // |i| < 2^64 here, so `f` is finite and the cast back is exact.
        return if f as i128 == i {
            Ok(f)
        } else {
            Err(format!("{i} is not exactly an f32"))
        };
    }
    let v = number(j)?;
    let f = v as f32;
    if v.is_nan() || f64::from(f) == v {
        Ok(f)
    } else {
        Err(format!("{} is not exactly an f32", shown(j)))
    }
}

/// The elements of a list, each read with `read`; errors name the index.
pub(crate) fn list<T>(j: &Json, read: impl Fn(&Json) -> CaseResult<T>) -> CaseResult<Vec<T>> {
    j.as_array()
        .ok_or_else(|| format!("{} is not a list", shown(j)))?
        .iter()
        .enumerate()
        .map(|(i, v)| read(v).map_err(|e| format!("[{i}]: {e}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn j(s: &str) -> Json {
        parse(s).expect("valid JSON")
    }

    #[test]
    fn parses_documents() {
        let v = j(r#"{"a": [1, -2.5e3, "inf", null, true], "b": {"c": "x\"y"}}"#);
        let a = v.get("a").and_then(Json::as_array).expect("list");
        assert_eq!(int::<i64>(&a[0]), Ok(1));
        assert_eq!(number(&a[1]), Ok(-2500.0));
        assert_eq!(number(&a[2]), Ok(f64::INFINITY));
        assert_eq!(
            v.get("b").and_then(|b| b.get("c")),
            Some(&Json::from("x\"y"))
        );
        assert!(parse("[1,").is_err());
        assert!(parse("{} x").is_err());
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep = "[".repeat(50_000) + &"]".repeat(50_000);
        let e = parse(&deep).expect_err("too deep");
        assert!(e.contains("recursion limit"), "{e}");
    }

    #[test]
    fn integers_out_of_range_are_refused_not_cast() {
        assert_eq!(
            int::<i32>(&j("4294967296")),
            Err("4294967296 is out of range for i32".into())
        );
        assert_eq!(int::<i32>(&j("-2147483648")), Ok(i32::MIN));
        assert_eq!(int::<i64>(&j("18446744073709551615")).ok(), None);
        assert_eq!(int::<u64>(&j("18446744073709551615")), Ok(u64::MAX));
        assert_eq!(
            int::<usize>(&j("-1")),
            Err("-1 is out of range for usize".into())
        );
    }

    #[test]
    fn non_integral_numbers_are_not_integers() {
        assert_eq!(int::<i64>(&j("2.5")), Err("2.5 is not an integer".into()));
        assert_eq!(int::<i64>(&j("3.0")), Err("3.0 is not an integer".into()));
        assert_eq!(
            int::<i64>(&j("1e3")),
            Err("1000.0 is not an integer".into())
        );
        assert!(int::<i64>(&j(r#""7""#)).is_err());
    }

    #[test]
    fn floats_that_are_not_exact_f32_are_refused() {
        assert_eq!(exact_f32(&j("0.5")), Ok(0.5));
        assert_eq!(exact_f32(&j("16777216")), Ok(16_777_216.0));
        assert_eq!(
            exact_f32(&j("1.401298464324817e-45")),
            Ok(f32::from_bits(1))
        );
        // The shortest f32 text of that value, but as a float the nearest f64 to 1e-45.
        assert!(exact_f32(&j("1e-45")).is_err());
        for neg_zero in ["-0.0", "-0"] {
            assert!(exact_f32(&j(neg_zero)).is_ok_and(|v| v == 0.0 && v.is_sign_negative()));
        }
        assert!(exact_f32(&j(r#""nan""#)).is_ok_and(f32::is_nan));
        assert_eq!(exact_f32(&j(r#""-inf""#)), Ok(f32::NEG_INFINITY));
        assert_eq!(
            exact_f32(&j("0.1")),
            Err("0.1 is not exactly an f32".into())
        );
        assert_eq!(
            exact_f32(&j("16777217")),
            Err("16777217 is not exactly an f32".into())
        );
        // Finite but beyond f32's range: not the infinity it would round to.
        assert!(exact_f32(&j("1e39")).is_err());
    }

    #[test]
    fn list_errors_name_the_index() {
        assert_eq!(
            list(&j("[1, 2, 4294967296]"), int::<i32>),
            Err("[2]: 4294967296 is out of range for i32".into())
        );
        assert!(list(&j("3"), int::<i32>).is_err());
    }

    #[test]
    fn long_values_are_shortened_in_messages() {
        let long = Json::from(vec![1; 100]);
        assert!(shown(&long).ends_with("...") && shown(&long).len() <= 43);
    }
}
