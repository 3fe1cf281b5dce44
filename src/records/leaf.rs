//! The canonical leaf of a record and its deduplication key.

use sha2::{Digest, Sha256};
use stele_core::Hash;

use super::{Record, MAX_LEAF_BYTES};
use crate::names::AgencyName;

/// Appends `s` as a JSON string (RFC 8785 escaping: `"`, `\`, and control
/// characters; `\b \t \n \f \r` short forms, others `\u00xx` lowercase).
pub(super) fn push_json_string(out: &mut String, s: &str) {
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
    if let Some(d) = &record.document {
        // The document by its hash: the key only has to tell bodies apart.
        out.push_str("\"document\":\"sha256:");
        out.push_str(&hex::encode(Sha256::digest(d)));
        out.push_str("\",");
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

/// Deduplication key: SHA-256(agency || 0x00 || canonical JSON of the body;
/// a document enters as `"document":"sha256:<hex of its bytes>"`). For a
/// private record the key is a hash of its content: it is kept in the
/// database only (never in a leaf), and erasure replaces it.
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
/// `{v:1, agency, type, type_version?, subject?, content_hash?, attributes?, ts}`
/// (`type_version`: the registry version that validated the record).
/// Never longer than [`MAX_LEAF_BYTES`] for a validated record and agency.
pub fn leaf_bytes(
    agency: &AgencyName,
    record: &Record,
    type_version: Option<u32>,
    ts_ms: i64,
) -> Vec<u8> {
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
    if let Some(v) = type_version {
        out.push_str(",\"type_version\":");
        out.push_str(itoa::Buffer::new().format(v));
    }
    out.push_str(",\"v\":1}");
    debug_assert!(out.len() <= MAX_LEAF_BYTES);
    out.into_bytes()
}

/// The public leaf of a private record: RFC 8785 canonical JSON of
/// `{v:1, agency, commitment, ts, type, type_version}` — the content (and
/// the subject) stay in the payload store (see [`super::private`]).
pub fn private_leaf_bytes(
    agency: &AgencyName,
    r#type: &str,
    type_version: u32,
    commitment: &str,
    ts_ms: i64,
) -> Vec<u8> {
    let mut out = String::with_capacity(200);
    out.push_str("{\"agency\":");
    push_json_string(&mut out, agency);
    out.push_str(",\"commitment\":");
    push_json_string(&mut out, commitment);
    out.push_str(",\"ts\":\"");
    out.push_str(&format_ts(ts_ms));
    out.push_str("\",\"type\":");
    push_json_string(&mut out, r#type);
    out.push_str(",\"type_version\":");
    out.push_str(itoa::Buffer::new().format(type_version));
    out.push_str(",\"v\":1}");
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::names::MAX_NAME_LEN;
    use crate::records::{parse_record, MAX_ATTRIBUTES_BYTES};

    fn ag(name: &str) -> AgencyName {
        AgencyName::parse(name).unwrap()
    }

    fn sample_records() -> Vec<Record> {
        let bodies = [
            r#"{"type":"a.b"}"#,
            r#"{"type":"health.vaccination","subject":"clinic \"7\"\n\u0001\u007f\u2028 ✓ 𝄞"}"#,
            r#"{"type":"land.transfer","subject":"p","content_hash":"sha256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff","attributes":{"€":1,"a\u0000":[0.1,-0,1e-7,"\u00e9"],"b":{}}}"#,
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
                let version = (agency == "x").then_some(7);
                let mut obj = serde_json::json!({"v": 1, "agency": agency, "type": r.r#type, "ts": format_ts(ts)});
                if let Some(v) = version {
                    obj["type_version"] = v.into();
                }
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
                    String::from_utf8(leaf_bytes(&name, &r, version, ts)).unwrap(),
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
    fn private_leaf_equals_the_canonicalizer() {
        let c = format!("sha256:{}", "ab".repeat(32));
        let obj = serde_json::json!({"v": 1, "agency": "hospital-1", "commitment": c,
            "ts": format_ts(5), "type": "health.case", "type_version": 3});
        assert_eq!(
            private_leaf_bytes(&ag("hospital-1"), "health.case", 3, &c, 5),
            serde_json_canonicalizer::to_vec(&obj).unwrap()
        );
        // A document takes part in the dedup key.
        let a = parse_record(br#"{"type":"a.b","document":"AAE="}"#).unwrap();
        let b = parse_record(br#"{"type":"a.b","document":"AAI="}"#).unwrap();
        assert_ne!(dedup_key(&ag("x"), &a), dedup_key(&ag("x"), &b));
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
        let leaf = leaf_bytes(
            &ag(&"a".repeat(MAX_NAME_LEN)),
            &r,
            Some(u32::MAX),
            i64::MAX / 1000,
        );
        assert!(
            leaf.len() <= MAX_LEAF_BYTES,
            "{} > {}",
            leaf.len(),
            MAX_LEAF_BYTES
        );
    }
}
