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
//! - A value is stored exactly as sent or refused: a number whose RFC 8785
//!   form (an IEEE double in shortest round-trip form) is a different
//!   number, or whose magnitude is beyond 2^53 − 1 (I-JSON's interoperable
//!   range), is `Invalid` with a hint to send it as a string; the same
//!   number written differently (`1e2`, `100`) is one value.
//! - Unicode format controls (category Cf) are refused in `subject` and in
//!   attribute keys, where they could make two records look alike.
//! - The leaf is assembled by hand (keys in RFC 8785 order, strings escaped
//!   as serde_json does, which is RFC 8785's escaping); a test proves it
//!   byte-identical to `serde_json_canonicalizer` over the whole object.

use serde_json::{Map, Value};

use crate::error::LogError;
use crate::names::{RecordType, MAX_NAME_LEN, MAX_TYPE_LEN};

mod bulk;
mod json;
mod leaf;
pub mod private;

pub use bulk::{parse_bulk, split_bulk};
pub use json::parse_strict_json;
pub use leaf::{dedup_key, format_ts, leaf_bytes, private_leaf_bytes};

/// Longest `subject`, in Unicode scalar values.
pub const MAX_SUBJECT_CHARS: usize = 256;
/// Largest canonical `attributes` object, in bytes.
pub const MAX_ATTRIBUTES_BYTES: usize = 8 * 1024;
/// Largest binary `document` of a private record any configuration allows,
/// in bytes (decoded); `limits.max_document_bytes` (default 36 KiB) is the
/// deployment's own limit, checked by the engine.
pub const MAX_DOCUMENT_BYTES: usize = 1 << 20;
/// Most records in one bulk request (the HTTP layer's limit may be lower).
pub const MAX_BULK_RECORDS: usize = 1000;

/// Upper bound of a leaf's size given the limits above: each subject char
/// escapes to at most 6 bytes (`\u001f`), the type and agency are ASCII, and
/// the fixed parts (keys, punctuation, `content_hash`, `ts`) take far less
/// than 256 bytes. It is below the tlog-tiles limit of 65,535 bytes.
/// A registry entry's attributes (its definition) may be larger, up to
/// [`crate::registry::MAX_DEFINITION_BYTES`].
pub const MAX_LEAF_BYTES: usize = 256
    + MAX_NAME_LEN
    + MAX_TYPE_LEN
    + 6 * MAX_SUBJECT_CHARS
    + 80
    + max(MAX_ATTRIBUTES_BYTES, crate::registry::MAX_DEFINITION_BYTES);

const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}
const _: () = assert!(MAX_LEAF_BYTES <= stele_core::tile::MAX_LEAF_SIZE);

/// A validated submission (the body of `POST /logs/{log}/records`).
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub r#type: RecordType,
    pub subject: Option<String>,
    pub content_hash: Option<String>,
    /// Canonical JSON of the attributes object.
    pub attributes: Option<String>,
    /// A binary document (sent base64): only records of private types
    /// carry one, in their sealed content (see [`private`]).
    pub document: Option<bytes::Bytes>,
}

impl Record {
    /// The bytes of what the agency sent, as quotas count them: type,
    /// subject, content hash and canonical attributes.
    pub fn size(&self) -> usize {
        self.r#type.len()
            + self.subject.as_ref().map_or(0, String::len)
            + self.content_hash.as_ref().map_or(0, String::len)
            + self.attributes.as_ref().map_or(0, String::len)
            + self.document.as_ref().map_or(0, |d| d.len())
    }
}

/// Parses and validates a request body. Not UTF-8, not JSON or not an
/// object → `Malformed`; unknown fields, wrong types, bad values (a number
/// that RFC 8785 would store differently, a Unicode format control) →
/// `Invalid`; attributes over 8 KiB canonical → `TooLarge`.
pub fn parse_record(body: &[u8]) -> Result<Record, LogError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| LogError::Malformed(format!("body is not UTF-8: {e}")))?;
    record_from_text(text)
}

/// Validates one record from its JSON text (a whole body, or one element
/// of a bulk request). See [`parse_record`].
pub fn record_from_text(text: &str) -> Result<Record, LogError> {
    let record = match parse_strict_json(text)? {
        Value::Object(map) => record_from_object(map)?,
        _ => return Err(LogError::Malformed("a record must be a JSON object".into())),
    };
    // Numbers can only be in the attributes (anywhere else is a wrong type,
    // refused above), so that is where an inexact one is.
    if let Some((number, why)) = json::first_unstorable_number(text) {
        let number: String = number.chars().take(40).collect();
        let why = match why {
            json::Unstorable::Inexact(becomes) => format!(
                "the number {number} cannot be stored exactly: RFC 8785 numbers are IEEE doubles, \
                 and it would become {becomes}; send it as a string"
            ),
            json::Unstorable::OutOfRange => format!(
                "the number {number} is beyond ±(2^53 − 1), where JSON parsers disagree \
                 (RFC 7493); send it as a string"
            ),
        };
        return Err(LogError::invalid("attributes", why));
    }
    Ok(record)
}

/// Unicode format controls (general category Cf: bidi overrides and
/// isolates, zero-width characters, the BOM, soft hyphens, ...) make one
/// text display as another, so they are refused in the parts of a record
/// people read to tell records apart: its subject and attribute keys (its
/// type is ASCII already).
pub(crate) fn check_no_format_controls(field: &str, s: &str) -> Result<(), LogError> {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    // No ASCII character is a format control: most texts end here.
    if s.is_ascii() {
        return Ok(());
    }
    match s
        .chars()
        .find(|c| !c.is_ascii() && c.general_category() == GeneralCategory::Format)
    {
        Some(c) => Err(LogError::invalid(
            field,
            format!(
                "contains the invisible format character U+{:04X}; format controls (bidi \
                 overrides, zero-width characters) are not allowed here",
                c as u32
            ),
        )),
        None => Ok(()),
    }
}

/// Every object key in `v`, at any depth.
fn check_keys(v: &Value) -> Result<(), LogError> {
    match v {
        Value::Object(map) => map.iter().try_for_each(|(k, v)| {
            check_no_format_controls("attributes", k)?;
            check_keys(v)
        }),
        Value::Array(items) => items.iter().try_for_each(check_keys),
        _ => Ok(()),
    }
}

fn record_from_object(map: Map<String, Value>) -> Result<Record, LogError> {
    let mut r#type = None;
    let mut subject = None;
    let mut content_hash = None;
    let mut attributes = None;
    let mut document = None;
    for (key, value) in map {
        match key.as_str() {
            "type" => r#type = Some(string_field("type", value)?),
            "subject" => subject = Some(string_field("subject", value)?),
            "content_hash" => content_hash = Some(string_field("content_hash", value)?),
            "attributes" => attributes = Some(value),
            "document" => document = Some(document_field(value)?),
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
        check_no_format_controls("subject", s)?;
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
            check_keys(&v)?;
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
        document,
    })
}

/// A document: standard base64 (with padding), at most
/// [`MAX_DOCUMENT_BYTES`] decoded.
fn document_field(value: Value) -> Result<bytes::Bytes, LogError> {
    use base64::Engine as _;
    let text = string_field("document", value)?;
    if text.len() > MAX_DOCUMENT_BYTES.div_ceil(3) * 4 {
        return Err(LogError::TooLarge(format!(
            "the document is over {MAX_DOCUMENT_BYTES} bytes"
        )));
    }
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map(bytes::Bytes::from)
        .map_err(|e| LogError::invalid("document", format!("must be standard base64: {e}")))
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

#[cfg(test)]
mod tests {
    use super::*;

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
            // Values that would be stored as something else: refused.
            (
                br#"{"type":"health.case","attributes":{"case":1234567890123456789}}"#,
                "invalid:attributes",
            ),
            (
                br#"{"type":"health.case","attributes":{"case":1234567890123456788}}"#,
                "invalid:attributes",
            ),
            (
                br#"{"type":"a.b","attributes":{"x":[{"y":0.30000000000000001}]}}"#,
                "invalid:attributes",
            ),
            // Beyond any double: the JSON parser itself refuses it.
            (br#"{"type":"a.b","attributes":{"x":1e400}}"#, "malformed"),
            // Format controls where people read records apart.
            (
                "{\"type\":\"a.b\",\"subject\":\"parcel \u{202e}21\"}".as_bytes(),
                "invalid:subject",
            ),
            (br#"{"type":"a.b","subject":"a\u200bb"}"#, "invalid:subject"),
            (
                br#"{"type":"a.b","attributes":{"ok":{"ke\ufeffy":1}}}"#,
                "invalid:attributes",
            ),
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
        // The same number written differently is one value; a format
        // control inside an attribute *value* is data, kept as sent.
        let a = parse_record(br#"{"type":"a.b","attributes":{"n":1e2,"s":"x\u200by"}}"#).unwrap();
        let b = parse_record(br#"{"type":"a.b","attributes":{"n":100.0,"s":"x\u200by"}}"#).unwrap();
        assert_eq!(a.attributes, b.attributes);
        assert_eq!(
            a.attributes.as_deref(),
            Some("{\"n\":100,\"s\":\"x\u{200b}y\"}")
        );
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(err_kind(parse_record(deep.as_bytes())), "malformed");
    }
}
