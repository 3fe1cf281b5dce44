//! The records layer on top of the generic tree: what a submission may
//! contain, its canonical leaf, and its deduplication key.
//!
//! A leaf is the RFC 8785 canonical JSON of
//! `{v, agency, type, subject?, content_hash?, attributes?, ts}`.
//!
//! Decisions:
//!
//! - A JSON object with a duplicate key (at any depth) is `Malformed`: RFC
//!   8259 leaves its meaning open and parsers disagree on which value wins,
//!   so accepting it would let two readers of one body see different records.
//! - `null` is not accepted for an optional field: an absent field is
//!   omitted, never `null` (wrong type → `Invalid`).
//! - The leaf is assembled by hand (keys in RFC 8785 order, strings escaped
//!   as serde_json does, which is RFC 8785's escaping); a test proves it
//!   byte-identical to `serde_json_canonicalizer` over the whole object.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use stele_core::Hash;

use crate::engine::LogError;
use crate::names::{AgencyName, RecordType, MAX_NAME_LEN, MAX_TYPE_LEN};

/// Longest `subject`, in Unicode scalar values.
pub const MAX_SUBJECT_CHARS: usize = 256;
/// Largest canonical `attributes` object, in bytes.
pub const MAX_ATTRIBUTES_BYTES: usize = 8 * 1024;
/// Most records in one bulk request (the HTTP layer's limit may be lower).
pub const MAX_BULK_RECORDS: usize = 1000;

/// Upper bound of a leaf's size given the limits above: each subject char
/// escapes to at most 6 bytes (`\u001f`), the type and agency are ASCII, and
/// the fixed parts (keys, punctuation, `content_hash`, `ts`) take far less
/// than 256 bytes. It is below the tlog-tiles limit of 65,535 bytes.
pub const MAX_LEAF_BYTES: usize =
    256 + MAX_NAME_LEN + MAX_TYPE_LEN + 6 * MAX_SUBJECT_CHARS + 80 + MAX_ATTRIBUTES_BYTES;
const _: () = assert!(MAX_LEAF_BYTES <= stele_core::tile::MAX_LEAF_SIZE);

/// A validated submission (the body of `POST /logs/{log}/records`).
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub r#type: RecordType,
    pub subject: Option<String>,
    pub content_hash: Option<String>,
    /// Canonical JSON of the attributes object.
    pub attributes: Option<String>,
}

/// Parses and validates a request body. Not UTF-8, not JSON or not an
/// object → `Malformed`; unknown fields, wrong types, bad values →
/// `Invalid`; attributes over 8 KiB canonical → `TooLarge`.
pub fn parse_record(body: &[u8]) -> Result<Record, LogError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| LogError::Malformed(format!("body is not UTF-8: {e}")))?;
    let value = parse_strict_json(text)?;
    match value {
        Value::Object(map) => record_from_object(map),
        _ => Err(LogError::Malformed("body must be a JSON object".into())),
    }
}

/// Validates one record given as an already parsed JSON value (an element
/// of a bulk request). Same rules as [`parse_record`]; duplicate keys must
/// have been rejected by the caller's parser (see [`parse_strict_json`]).
pub fn record_from_value(value: Value) -> Result<Record, LogError> {
    match value {
        Value::Object(map) => record_from_object(map),
        _ => Err(LogError::Malformed("a record must be a JSON object".into())),
    }
}

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

fn record_from_object(map: Map<String, Value>) -> Result<Record, LogError> {
    let mut r#type = None;
    let mut subject = None;
    let mut content_hash = None;
    let mut attributes = None;
    for (key, value) in map {
        match key.as_str() {
            "type" => r#type = Some(string_field("type", value)?),
            "subject" => subject = Some(string_field("subject", value)?),
            "content_hash" => content_hash = Some(string_field("content_hash", value)?),
            "attributes" => attributes = Some(value),
            _ => return Err(LogError::invalid(key.clone(), "unknown field")),
        }
    }
    let r#type = r#type.ok_or_else(|| LogError::invalid("type", "is required"))?;
    let r#type = RecordType::parse(&r#type).map_err(|_| {
        LogError::invalid(
            "type",
            format!("must be dotted lowercase words (e.g. land.transfer), at most {MAX_TYPE_LEN} characters"),
        )
    })?;
    if let Some(s) = &subject {
        if s.chars().count() > MAX_SUBJECT_CHARS {
            return Err(LogError::invalid(
                "subject",
                format!("at most {MAX_SUBJECT_CHARS} characters"),
            ));
        }
    }
    if let Some(h) = &content_hash {
        if !valid_content_hash(h) {
            return Err(LogError::invalid(
                "content_hash",
                "must be sha256:<64 lowercase hex digits>",
            ));
        }
    }
    let attributes = match attributes {
        None => None,
        Some(v @ Value::Object(_)) => {
            let canonical = serde_json_canonicalizer::to_string(&v).map_err(|e| {
                LogError::invalid("attributes", format!("cannot be canonicalized: {e}"))
            })?;
            if canonical.len() > MAX_ATTRIBUTES_BYTES {
                return Err(LogError::TooLarge(format!(
                    "attributes are {} bytes in canonical form, at most {MAX_ATTRIBUTES_BYTES} allowed",
                    canonical.len()
                )));
            }
            Some(canonical)
        }
        Some(_) => return Err(LogError::invalid("attributes", "must be a JSON object")),
    };
    Ok(Record {
        r#type,
        subject,
        content_hash,
        attributes,
    })
}

fn string_field(field: &str, value: Value) -> Result<String, LogError> {
    match value {
        Value::String(s) => Ok(s),
        _ => Err(LogError::invalid(field, "must be a string")),
    }
}

fn valid_content_hash(h: &str) -> bool {
    match h.strip_prefix("sha256:") {
        Some(hex) => hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        None => false,
    }
}

/// Appends `s` as a JSON string (RFC 8785 escaping: `"`, `\`, and control
/// characters; `\b \t \n \f \r` short forms, others `\u00xx` lowercase).
fn push_json_string(out: &mut String, s: &str) {
    // serde_json's string serializer implements exactly this escaping.
    out.push_str(&serde_json::to_string(s).expect("serializing a str cannot fail"));
}

/// The body object as submitted, in canonical form (keys sorted).
fn canonical_body(record: &Record) -> String {
    let mut out = String::with_capacity(64 + record.attributes.as_ref().map_or(0, |a| a.len()));
    out.push('{');
    if let Some(a) = &record.attributes {
        out.push_str("\"attributes\":");
        out.push_str(a);
        out.push(',');
    }
    if let Some(h) = &record.content_hash {
        out.push_str("\"content_hash\":");
        push_json_string(&mut out, h);
        out.push(',');
    }
    if let Some(s) = &record.subject {
        out.push_str("\"subject\":");
        push_json_string(&mut out, s);
        out.push(',');
    }
    out.push_str("\"type\":");
    push_json_string(&mut out, &record.r#type);
    out.push('}');
    out
}

/// Deduplication key: SHA-256(agency || 0x00 || canonical JSON of the body).
pub fn dedup_key(agency: &AgencyName, record: &Record) -> Hash {
    let mut h = Sha256::new();
    h.update(agency.as_bytes());
    h.update([0u8]);
    h.update(canonical_body(record).as_bytes());
    Hash(h.finalize().into())
}

/// `ts` text: RFC 3339 UTC with milliseconds, e.g. `2026-11-23T10:00:00.123Z`.
pub fn format_ts(ts_ms: i64) -> String {
    let t = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ts_ms).unwrap_or_default();
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// The leaf: RFC 8785 canonical JSON of
/// `{v:1, agency, type, subject?, content_hash?, attributes?, ts}`.
/// Never longer than [`MAX_LEAF_BYTES`] for a validated record and agency.
pub fn leaf_bytes(agency: &AgencyName, record: &Record, ts_ms: i64) -> Vec<u8> {
    let mut out = String::with_capacity(160 + record.attributes.as_ref().map_or(0, |a| a.len()));
    out.push_str("{\"agency\":");
    push_json_string(&mut out, agency);
    if let Some(a) = &record.attributes {
        out.push_str(",\"attributes\":");
        out.push_str(a);
    }
    if let Some(h) = &record.content_hash {
        out.push_str(",\"content_hash\":");
        push_json_string(&mut out, h);
    }
    if let Some(s) = &record.subject {
        out.push_str(",\"subject\":");
        push_json_string(&mut out, s);
    }
    out.push_str(",\"ts\":\"");
    out.push_str(&format_ts(ts_ms));
    out.push_str("\",\"type\":");
    push_json_string(&mut out, &record.r#type);
    out.push_str(",\"v\":1}");
    debug_assert!(out.len() <= MAX_LEAF_BYTES);
    out.into_bytes()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ag(name: &str) -> AgencyName {
        AgencyName::parse(name).unwrap()
    }

    fn err_kind(r: Result<Record, LogError>) -> String {
        match r {
            Err(LogError::Malformed(_)) => "malformed".into(),
            Err(LogError::Invalid { field, .. }) => format!("invalid:{field}"),
            Err(LogError::TooLarge(_)) => "too-large".into(),
            Err(e) => format!("other:{e}"),
            Ok(_) => "ok".into(),
        }
    }

    #[test]
    fn accepts_a_full_record_and_canonicalizes_attributes() {
        let r = parse_record(
            br#"{"type":"land.transfer","subject":"parcel 12","content_hash":"sha256:0000000000000000000000000000000000000000000000000000000000000abc","attributes":{"z":1,"a":[true,null,"x"],"m":{"b":2.50,"a":1e3}}}"#,
        )
        .unwrap();
        assert_eq!(r.r#type, "land.transfer");
        assert_eq!(r.subject.as_deref(), Some("parcel 12"));
        assert_eq!(
            r.attributes.as_deref(),
            Some(r#"{"a":[true,null,"x"],"m":{"a":1000,"b":2.5},"z":1}"#)
        );
    }

    #[test]
    fn rejects_bad_bodies_with_the_right_kind() {
        let cases: &[(&[u8], &str)] = &[
            (b"\xff\xfe", "malformed"),
            (b"{", "malformed"),
            (b"[1,2]", "malformed"),
            (b"\"x\"", "malformed"),
            (b"{} {}", "malformed"),
            (br#"{"type":"a.b","type":"c.d"}"#, "malformed"),
            (br#"{"type":"a.b","attributes":{"k":1,"k":2}}"#, "malformed"),
            (br#"{"type":"a.b","extra":1}"#, "invalid:extra"),
            (br#"{"subject":"x"}"#, "invalid:type"),
            (br#"{"type":5}"#, "invalid:type"),
            (br#"{"type":"Land.transfer"}"#, "invalid:type"),
            (br#"{"type":"land"}"#, "invalid:type"),
            (br#"{"type":"land..x"}"#, "invalid:type"),
            (br#"{"type":"land.1x"}"#, "invalid:type"),
            (br#"{"type":"a.b","subject":null}"#, "invalid:subject"),
            (
                br#"{"type":"a.b","content_hash":"sha256:ABC"}"#,
                "invalid:content_hash",
            ),
            (br#"{"type":"a.b","attributes":[1]}"#, "invalid:attributes"),
        ];
        for (body, want) in cases {
            assert_eq!(
                err_kind(parse_record(body)),
                *want,
                "body {}",
                String::from_utf8_lossy(body)
            );
        }
        let long_type = format!(r#"{{"type":"a.{}"}}"#, "b".repeat(127));
        assert_eq!(err_kind(parse_record(long_type.as_bytes())), "invalid:type");
        let ok_type = format!(r#"{{"type":"a.{}"}}"#, "b".repeat(126));
        assert_eq!(err_kind(parse_record(ok_type.as_bytes())), "ok");
        let subject = format!(r#"{{"type":"a.b","subject":"{}"}}"#, "é".repeat(256));
        assert_eq!(err_kind(parse_record(subject.as_bytes())), "ok");
        let subject = format!(r#"{{"type":"a.b","subject":"{}"}}"#, "é".repeat(257));
        assert_eq!(
            err_kind(parse_record(subject.as_bytes())),
            "invalid:subject"
        );
        let big = format!(
            r#"{{"type":"a.b","attributes":{{"k":"{}"}}}}"#,
            "x".repeat(8192)
        );
        assert_eq!(err_kind(parse_record(big.as_bytes())), "too-large");
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(err_kind(parse_record(deep.as_bytes())), "malformed");
    }

    fn sample_records() -> Vec<Record> {
        let bodies = [
            r#"{"type":"a.b"}"#,
            r#"{"type":"health.vaccination","subject":"clinic \"7\"\n\u0001\u007f\u2028 ✓ 𝄞"}"#,
            r#"{"type":"land.transfer","subject":"p","content_hash":"sha256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff","attributes":{"€":1,"a\u0000":[0.1,-0,1e21,"\u00e9"],"b":{}}}"#,
        ];
        bodies
            .iter()
            .map(|b| parse_record(b.as_bytes()).unwrap())
            .collect()
    }

    #[test]
    fn leaf_equals_the_canonicalizer_over_the_whole_object() {
        for r in sample_records() {
            for agency in ["land-registry", "x"] {
                let name = AgencyName::parse(agency).unwrap();
                let ts = 1_795_000_000_123;
                let mut obj = serde_json::json!({"v": 1, "agency": agency, "type": r.r#type, "ts": format_ts(ts)});
                if let Some(s) = &r.subject {
                    obj["subject"] = Value::String(s.clone());
                }
                if let Some(h) = &r.content_hash {
                    obj["content_hash"] = Value::String(h.clone());
                }
                if let Some(a) = &r.attributes {
                    obj["attributes"] = serde_json::from_str(a).unwrap();
                }
                let want = serde_json_canonicalizer::to_vec(&obj).unwrap();
                assert_eq!(
                    String::from_utf8(leaf_bytes(&name, &r, ts)).unwrap(),
                    String::from_utf8(want).unwrap()
                );
            }
        }
    }

    #[test]
    fn dedup_key_hashes_the_canonical_body() {
        for r in sample_records() {
            let mut obj = serde_json::json!({"type": r.r#type});
            if let Some(s) = &r.subject {
                obj["subject"] = Value::String(s.clone());
            }
            if let Some(h) = &r.content_hash {
                obj["content_hash"] = Value::String(h.clone());
            }
            if let Some(a) = &r.attributes {
                obj["attributes"] = serde_json::from_str(a).unwrap();
            }
            let mut want = b"agency-1\0".to_vec();
            want.extend(serde_json_canonicalizer::to_vec(&obj).unwrap());
            assert_eq!(
                dedup_key(&ag("agency-1"), &r),
                stele_core::Hash(Sha256::digest(&want).into())
            );
        }
        // Key order and whitespace in the body do not matter; the agency does.
        let a = parse_record(br#"{"type":"a.b","attributes":{"x":1,"y":2}}"#).unwrap();
        let b = parse_record(br#"{ "attributes":{"y":2, "x":1.0}, "type":"a.b" }"#).unwrap();
        assert_eq!(dedup_key(&ag("ag"), &a), dedup_key(&ag("ag"), &b));
        assert_ne!(dedup_key(&ag("ag"), &a), dedup_key(&ag("ag2"), &a));
    }

    #[test]
    fn ts_has_milliseconds_in_utc() {
        assert_eq!(format_ts(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_ts(1_795_428_000_123), "2026-11-23T10:00:00.123Z");
    }

    #[test]
    fn largest_possible_leaf_fits_a_bundle() {
        let attrs = format!(r#"{{"k":"{}"}}"#, "x".repeat(MAX_ATTRIBUTES_BYTES - 8));
        let body = format!(
            r#"{{"type":"a.{}","subject":"{}","content_hash":"sha256:{}","attributes":{attrs}}}"#,
            "b".repeat(126),
            "\\u0001".repeat(256),
            "a".repeat(64)
        );
        let r = parse_record(body.as_bytes()).unwrap();
        let leaf = leaf_bytes(&ag(&"a".repeat(MAX_NAME_LEN)), &r, i64::MAX / 1000);
        assert!(
            leaf.len() <= MAX_LEAF_BYTES,
            "{} > {}",
            leaf.len(),
            MAX_LEAF_BYTES
        );
    }
}
