//! JSON equality as rule 3.4 means it: same structure, same strings, same numbers — by
//! exact value (`1.0e-7` equals `1e-07`; `123456789012345678901234567890` does not equal
//! its rounded `1.2345678901234568e29`). Object member order and whitespace do not matter.
//!
//! serde_json's `Value` rounds numbers to f64 (unless a crate-wide feature is enabled that
//! would also change the relay under test), so frames are compared through this small
//! tree that keeps every number's text.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::value::RawValue;

use crate::bindings::Bindings;

/// Nesting beyond this is refused rather than compared (no stack overflow on hostile input).
const MAX_DEPTH: usize = 128;

/// A JSON value whose numbers are exact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exact {
    /// `null`
    Null,
    /// `true` / `false`
    Bool(bool),
    /// A number, by exact value.
    Number(Decimal),
    /// A string (escapes decoded).
    String(String),
    /// An array.
    Array(Vec<Exact>),
    /// An object (duplicate names: the last wins, as in most parsers).
    Object(BTreeMap<String, Exact>),
}

/// A number as `digits × 10^exponent` with no leading or trailing zero digits (zero is
/// empty digits), so equal values have equal representations; shown as it was written.
#[derive(Debug, Clone)]
pub struct Decimal {
    negative: bool,
    digits: String,
    exponent: i64,
    /// The number's text as the relay (or the session file) wrote it, for messages.
    written: String,
}

impl PartialEq for Decimal {
    fn eq(&self, other: &Self) -> bool {
        (self.negative, &self.digits, self.exponent)
            == (other.negative, &other.digits, other.exponent)
    }
}

impl Eq for Decimal {}

impl Decimal {
    fn parse(text: &str) -> Option<Self> {
        let (negative, rest) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (mantissa, exponent) = match rest.find(['e', 'E']) {
            Some(at) => (&rest[..at], rest[at + 1..].parse::<i64>().ok()?),
            None => (rest, 0),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let mut digits: String = int.chars().chain(frac.chars()).collect();
        let mut exponent = exponent.checked_sub(i64::try_from(frac.len()).ok()?)?;
        let trailing = digits.len() - digits.trim_end_matches('0').len();
        digits.truncate(digits.len() - trailing);
        exponent = exponent.checked_add(i64::try_from(trailing).ok()?)?;
        let digits = digits.trim_start_matches('0').to_owned();
        let written = text.to_owned();
        if digits.is_empty() {
            return Some(Self {
                negative: false,
                digits,
                exponent: 0,
                written,
            });
        }
        Some(Self {
            negative,
            digits,
            exponent,
            written,
        })
    }
}

impl fmt::Display for Exact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Null => f.write_str("null"),
            Self::Bool(b) => write!(f, "{b}"),
            Self::Number(d) => f.write_str(&d.written),
            Self::String(s) => write!(f, "{}", serde_json::Value::String(s.clone())),
            Self::Array(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
            Self::Object(members) => {
                f.write_str("{")?;
                for (i, (k, v)) in members.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{}:{v}", serde_json::Value::String(k.clone()))?;
                }
                f.write_str("}")
            }
        }
    }
}

impl Exact {
    /// Parse JSON text, keeping numbers exact.
    ///
    /// # Errors
    /// If `text` is not JSON, or is nested deeper than 128 levels.
    pub fn parse(text: &str) -> Result<Self, String> {
        let raw: &RawValue = serde_json::from_str(text).map_err(|e| e.to_string())?;
        Self::from_raw(raw, 0)
    }

    fn from_raw(raw: &RawValue, depth: usize) -> Result<Self, String> {
        if depth > MAX_DEPTH {
            return Err(format!("nested deeper than {MAX_DEPTH} levels"));
        }
        let text = raw.get();
        let err = |e: serde_json::Error| e.to_string();
        Ok(match text.as_bytes().first() {
            Some(b'{') => {
                let members: BTreeMap<String, &RawValue> =
                    serde_json::from_str(text).map_err(err)?;
                let mut out = BTreeMap::new();
                for (k, v) in members {
                    out.insert(k, Self::from_raw(v, depth + 1)?);
                }
                Self::Object(out)
            }
            Some(b'[') => {
                let items: Vec<&RawValue> = serde_json::from_str(text).map_err(err)?;
                Self::Array(
                    items
                        .into_iter()
                        .map(|v| Self::from_raw(v, depth + 1))
                        .collect::<Result<_, _>>()?,
                )
            }
            Some(b'"') => Self::String(serde_json::from_str(text).map_err(err)?),
            Some(b't') => Self::Bool(true),
            Some(b'f') => Self::Bool(false),
            Some(b'n') => Self::Null,
            _ => {
                Self::Number(Decimal::parse(text).ok_or_else(|| format!("unusable number {text}"))?)
            }
        })
    }

    /// A number that is a non-negative integer written plainly (`12`, not `1.2e1`).
    #[must_use]
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Self::Number(d) => d.written.parse().ok(),
            _ => None,
        }
    }

    /// A top-level member of an object.
    #[must_use]
    pub fn member(&self, name: &str) -> Option<&Exact> {
        match self {
            Self::Object(members) => members.get(name),
            _ => None,
        }
    }
}

/// How a delivered `msg` compares with the one that was routed (rule 3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sameness {
    /// The same bytes (what rule 3.4 recommends).
    Identical,
    /// Different bytes, the same JSON value (what rule 3.4 requires).
    JsonEqual,
    /// A different value, or not JSON at all.
    Different,
}

/// Compare a delivered `msg` with the routed one: bytes first, then JSON equality with
/// exact numbers.
#[must_use]
pub fn sameness(routed: &str, delivered: &str) -> Sameness {
    if routed == delivered {
        return Sameness::Identical;
    }
    match (Exact::parse(routed), Exact::parse(delivered)) {
        (Ok(a), Ok(b)) if a == b => Sameness::JsonEqual,
        _ => Sameness::Different,
    }
}

/// Compare an expected value (from a session file; strings `"$NAME"` are placeholders
/// that bind or compare) with an actual one. On mismatch: where and what.
///
/// # Errors
/// A description of the first difference, with its JSON pointer.
pub fn expect_eq(
    expected: &serde_json::Value,
    actual: &Exact,
    bindings: &mut Bindings,
) -> Result<(), String> {
    compare(expected, actual, bindings, &mut String::new())
}

fn compare(
    expected: &serde_json::Value,
    actual: &Exact,
    bindings: &mut Bindings,
    at: &mut String,
) -> Result<(), String> {
    use serde_json::Value as V;
    let here = |at: &String| {
        if at.is_empty() {
            "/".to_owned()
        } else {
            at.clone()
        }
    };
    match (expected, actual) {
        (V::String(s), Exact::String(a)) if Bindings::name_of(s).is_some() => bindings
            .bind_or_compare(s, a)
            .map_err(|e| format!("{}: {e}", here(at))),
        (V::Null, Exact::Null) => Ok(()),
        (V::Bool(e), Exact::Bool(a)) if e == a => Ok(()),
        (V::Number(e), Exact::Number(a)) if Decimal::parse(&e.to_string()).as_ref() == Some(a) => {
            Ok(())
        }
        (V::String(e), Exact::String(a)) if e == a => Ok(()),
        (V::Array(e), Exact::Array(a)) if e.len() == a.len() => {
            for (i, (e, a)) in e.iter().zip(a).enumerate() {
                let len = at.len();
                at.push_str(&format!("/{i}"));
                compare(e, a, bindings, at)?;
                at.truncate(len);
            }
            Ok(())
        }
        (V::Object(e), Exact::Object(a)) => {
            if let Some(extra) = a.keys().find(|k| !e.contains_key(*k)) {
                return Err(format!("{}: unexpected member {extra:?}", here(at)));
            }
            for (k, e) in e {
                let Some(a) = a.get(k) else {
                    return Err(format!("{}: missing member {k:?}", here(at)));
                };
                let len = at.len();
                at.push('/');
                at.push_str(&k.replace('~', "~0").replace('/', "~1"));
                compare(e, a, bindings, at)?;
                at.truncate(len);
            }
            Ok(())
        }
        (e, a) => Err(format!("{}: expected {e}, got {a}", here(at))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eq(a: &str, b: &str) -> bool {
        Exact::parse(a).unwrap() == Exact::parse(b).unwrap()
    }

    #[test]
    fn numbers_compare_by_exact_value() {
        assert!(eq("1.0e-7", "1e-07"));
        assert!(eq("100", "1e2"));
        assert!(eq("-0", "0"));
        assert!(eq("0.10", "0.1"));
        assert!(!eq(
            "123456789012345678901234567890",
            "1.2345678901234568e29"
        ));
        assert!(!eq("1", "-1"));
    }

    #[test]
    fn numbers_are_shown_as_written() {
        let mut b = Bindings::default();
        let got = Exact::parse(r#"{"errCode":404}"#).unwrap();
        let err = expect_eq(&serde_json::json!({"errCode": 400}), &got, &mut b).unwrap_err();
        assert_eq!(err, "/errCode: expected 400, got 404");
        let got = Exact::parse(r#"[1.50e-7]"#).unwrap();
        assert_eq!(got.to_string(), "[1.50e-7]");
    }

    #[test]
    fn sameness_tells_bytes_from_values() {
        assert_eq!(sameness(r#"{"a":1}"#, r#"{"a":1}"#), Sameness::Identical);
        assert_eq!(
            sameness(r#"{"a":1,"b":2}"#, r#"{"b": 2, "a": 1.0}"#),
            Sameness::JsonEqual
        );
        assert_eq!(sameness(r#"{"a":1}"#, r#"{"a":2}"#), Sameness::Different);
        assert_eq!(sameness(r#"{"a":1}"#, "not json"), Sameness::Different);
    }

    #[test]
    fn order_and_whitespace_do_not_matter_but_strings_do() {
        assert!(eq(
            r#"{"a":1,"b":[true,null]}"#,
            r#"{ "b" : [ true , null ] , "a" : 1 }"#
        ));
        assert!(eq(r#"{"s":"\u00e9"}"#, r#"{"s":"é"}"#));
        assert!(!eq(r#"{"s":"e"}"#, r#"{"s":"é"}"#));
        assert!(!eq(r#"{"a":1}"#, r#"{"a":1,"b":2}"#));
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(Exact::parse(&deep).is_err());
    }

    #[test]
    fn placeholders_bind_then_compare() {
        let mut b = Bindings::default();
        let expected = serde_json::json!({"type": "INITRESP", "EpheWssAddr": "$A"});
        let actual =
            Exact::parse(r#"{"type":"INITRESP","EpheWssAddr":"00112233445566778899aabbccddeeff"}"#)
                .unwrap();
        expect_eq(&expected, &actual, &mut b).unwrap();
        assert_eq!(b.get("A"), Some("00112233445566778899aabbccddeeff"));
        let other =
            Exact::parse(r#"{"type":"INITRESP","EpheWssAddr":"ffffffffffffffffffffffffffffffff"}"#)
                .unwrap();
        assert!(expect_eq(&expected, &other, &mut b).is_err());
    }
}
