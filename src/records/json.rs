//! Strict JSON: duplicate object keys refused at any depth, and numbers
//! only where their RFC 8785 form is exactly the number that was sent.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::LogError;

/// Parses JSON text, rejecting duplicate object keys at any depth
/// (`Malformed`). serde_json's nesting limit (128) still applies.
pub fn parse_strict_json(text: &str) -> Result<Value, LogError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let StrictValue(value) = StrictValue::deserialize(&mut de)
        .map_err(|e| LogError::Malformed(format!("body is not valid JSON: {e}")))?;
    de.end()
        .map_err(|e| LogError::Malformed(format!("body is not valid JSON: {e}")))?;
    Ok(value)
}

/// A `serde_json::Value` that refuses duplicate object keys.
struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate key {key:?}")));
            }
            let StrictValue(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

/// Largest magnitude of a number a record may hold: 2^53 − 1, the range in
/// which every IEEE double is exact and every JSON parser agrees (RFC 7493
/// §2.2, I-JSON, on which RFC 8785 builds).
pub const MAX_SAFE_NUMBER: f64 = 9_007_199_254_740_991.0;

/// Why a number cannot be stored as sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Unstorable {
    /// Its RFC 8785 form is another number (given).
    Inexact(String),
    /// Beyond ±(2^53 − 1).
    OutOfRange,
}

/// The first number in `text` (valid JSON) that cannot be stored exactly
/// as sent, and why. RFC 8785 numbers are IEEE doubles written in their
/// shortest round-trip form, so `1234567890123456789` would be stored as
/// `1234567890123456800` — a different number — and `0.30000000000000001`
/// as `0.3`; and beyond ±(2^53 − 1) parsers disagree on what a number is.
/// Such a number is refused, never rounded. Numbers that are the same value
/// written differently (`1e2`, `100`, `100.0`) are exact: they all become
/// `100`.
pub(crate) fn first_unstorable_number(text: &str) -> Option<(&str, Unstorable)> {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                // Skip the string (valid JSON: every escape is complete).
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < b.len() && matches!(b[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                {
                    i += 1;
                }
                let token = &text[start..i];
                if let Some(canonical) = inexact(token) {
                    return Some((token, Unstorable::Inexact(canonical)));
                }
                if token
                    .parse::<f64>()
                    .is_ok_and(|f| f.abs() > MAX_SAFE_NUMBER)
                {
                    return Some((token, Unstorable::OutOfRange));
                }
            }
            _ => i += 1,
        }
    }
    None
}

/// `None` if the JSON number `token` is exactly its RFC 8785 form; else
/// that form (or a note that no double holds it).
fn inexact(token: &str) -> Option<String> {
    let Ok(f) = token.parse::<f64>() else {
        return Some("not a number".into());
    };
    if !f.is_finite() {
        return Some("out of the range of an IEEE double".into());
    }
    let canonical = serde_json::Number::from_f64(f)
        .and_then(|n| serde_json_canonicalizer::to_string(&Value::Number(n)).ok())?;
    match (decimal(token), decimal(&canonical)) {
        (Some(a), Some(b)) if a == b => None,
        _ => Some(canonical),
    }
}

/// The exact value of a JSON number as (negative, significant digits,
/// exponent of the last digit), with zero as `(false, "", 0)` (so `-0` and
/// `0` are one value). `None` if the exponent does not fit.
fn decimal(s: &str) -> Option<(bool, String, i64)> {
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], s[i + 1..].parse::<i64>().ok()?),
        None => (s, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let mut digits: String = int.chars().chain(frac.chars()).collect();
    let mut exp = exp.checked_sub(i64::try_from(frac.len()).ok()?)?;
    let trimmed = digits.trim_start_matches('0').len();
    digits.drain(..digits.len() - trimmed);
    if digits.is_empty() {
        return Some((false, String::new(), 0));
    }
    while digits.ends_with('0') {
        digits.pop();
        exp = exp.checked_add(1)?;
    }
    Some((neg, digits, exp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_that_doubles_hold_exactly_pass() {
        for ok in [
            "0",
            "-0",
            "1",
            "-17",
            "100",
            "1e2",
            "1E+2",
            "100.000",
            "0.1",
            "2.5",
            "-1.5e-3",
            "9007199254740992",
            "1e21",
            "123456789012345680000",
            "5e-324",
            "1.7976931348623157e308",
        ] {
            assert_eq!(inexact(ok), None, "{ok}");
        }
    }

    #[test]
    fn numbers_that_would_change_are_found() {
        for (bad, becomes) in [
            ("1234567890123456789", "1234567890123456800"),
            ("9007199254740993", "9007199254740992"),
            ("0.30000000000000001", "0.3"),
            ("1152921504606846976", "1152921504606847000"),
            ("1e-400", "0"),
        ] {
            assert_eq!(inexact(bad).as_deref(), Some(becomes), "{bad}");
        }
        assert!(inexact("1e400").unwrap().contains("range"));
        assert!(inexact("-1e309").unwrap().contains("range"));
    }

    #[test]
    fn the_scan_skips_strings_and_reports_the_first() {
        let text = r#"{"a":"12345678901234567890 \" 1e999","b":[1,2.50,{"c":1234567890123456789}],"d":1e999}"#;
        let (token, why) = first_unstorable_number(text).unwrap();
        assert_eq!(token, "1234567890123456789");
        assert_eq!(why, Unstorable::Inexact("1234567890123456800".into()));
        assert_eq!(
            first_unstorable_number(
                r#"{"a":[0.1,-0,1e2,9007199254740991,-9007199254740991],"s":"9007199254740993"}"#
            ),
            None
        );
        // Exact, but beyond what every parser holds: refused too.
        for big in ["9007199254740992", "-9007199254740992", "1e21", "6.02e23"] {
            let text = format!("{{\"n\":{big}}}");
            assert_eq!(
                first_unstorable_number(&text),
                Some((big, Unstorable::OutOfRange)),
                "{big}"
            );
        }
    }
}
