//! Private records: what stays out of the public leaf, and how the leaf
//! commits to it (`docs/private.md` is the specification).
//!
//! A record of a private type has *content*: the RFC 8785 canonical JSON of
//! the object `{attributes?, content_hash?, document?, subject?}` as
//! submitted (`document` in standard base64). Its public leaf carries none
//! of it, only
//!
//! `commitment = "sha256:" || hex(SHA-256("stele/commitment/v1" || 0x00 || salt || content))`
//!
//! with `salt` 32 random bytes drawn for that record alone: two records of
//! the same content (or the same subject) have unrelated commitments, and
//! nobody without the salt can test a guess of the content against one.
//! Whoever is given the content and the salt recomputes the commitment and
//! compares it with the one in the signed, included leaf.

use base64::Engine as _;
use rand_core::RngCore;
use sha2::{Digest, Sha256};

use super::leaf::push_json_string;
use super::Record;

/// The entry the log appends before it releases a private record's content
/// to a reader: agency = the reader, attributes `{purpose, record}`.
pub const ACCESS_TYPE: &str = "stele.access";

/// The entry the log appends when it erases a private record's content:
/// agency = who erased it, attributes `{reason, record}`.
pub const ERASURE_TYPE: &str = "stele.erasure";

/// Longest stated purpose of an access, in characters.
pub const MAX_PURPOSE_CHARS: usize = 200;

/// Why content may be erased (an erasure entry's `reason`).
pub const REASONS: &[&str] = &[
    "subject-request",
    "retention-expired",
    "legal-order",
    "recorded-in-error",
];

pub fn is_reason(r: &str) -> bool {
    REASONS.contains(&r)
}

/// Checks a stated purpose (the `Stele-Purpose` header of a content read):
/// 1 to 200 characters, no control or invisible format characters. It is
/// public, in the access entry: it must say why, never about whom.
pub fn check_purpose(p: &str) -> Result<(), crate::error::LogError> {
    let bad = |d: &str| crate::error::LogError::invalid("Stele-Purpose", d);
    if p.trim().is_empty() {
        return Err(bad(
            "a content read must state its purpose (header Stele-Purpose)",
        ));
    }
    if p.chars().count() > MAX_PURPOSE_CHARS {
        return Err(bad("at most 200 characters"));
    }
    if p.chars().any(char::is_control) {
        return Err(bad("must not contain control characters"));
    }
    super::check_no_format_controls("Stele-Purpose", p)
}

/// Bytes of a record's salt.
pub const SALT_LEN: usize = 32;

/// Domain separation of the commitment hash (followed by a 0x00 byte).
pub const COMMITMENT_CONTEXT: &str = "stele/commitment/v1";

/// A fresh random salt.
pub fn new_salt() -> [u8; SALT_LEN] {
    let mut salt = [0u8; SALT_LEN];
    rand_core::OsRng.fill_bytes(&mut salt);
    salt
}

/// The content of a private record: canonical JSON of its attributes,
/// content hash, document (base64) and subject, the keys that are present,
/// in RFC 8785 order.
pub fn content_bytes(record: &Record) -> Vec<u8> {
    let doc_len = record
        .document
        .as_ref()
        .map_or(0, |d| d.len().div_ceil(3) * 4);
    let mut out =
        String::with_capacity(64 + doc_len + record.attributes.as_ref().map_or(0, |a| a.len()));
    let mut sep = '{';
    if let Some(a) = &record.attributes {
        out.push(sep);
        out.push_str("\"attributes\":");
        out.push_str(a);
        sep = ',';
    }
    if let Some(h) = &record.content_hash {
        out.push(sep);
        out.push_str("\"content_hash\":");
        push_json_string(&mut out, h);
        sep = ',';
    }
    if let Some(d) = &record.document {
        out.push(sep);
        out.push_str("\"document\":\"");
        base64::engine::general_purpose::STANDARD.encode_string(d, &mut out);
        out.push('"');
        sep = ',';
    }
    if let Some(s) = &record.subject {
        out.push(sep);
        out.push_str("\"subject\":");
        push_json_string(&mut out, s);
        sep = ',';
    }
    if sep == '{' {
        out.push('{');
    }
    out.push('}');
    out.into_bytes()
}

/// The commitment to `content` under `salt`, as the leaf carries it.
pub fn commitment(salt: &[u8], content: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(COMMITMENT_CONTEXT.as_bytes());
    h.update([0u8]);
    h.update(salt);
    h.update(content);
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// Whether `s` has a commitment's shape (`sha256:` and 64 lowercase hex).
pub fn is_commitment(s: &str) -> bool {
    super::valid_content_hash(s)
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::records::parse_record;

    #[test]
    fn content_is_the_canonical_json_of_the_private_fields() {
        let bodies = [
            r#"{"type":"health.case"}"#,
            r#"{"type":"health.case","subject":"patient \"7\"\n ✓","document":"AAEC/w=="}"#,
            r#"{"type":"health.case","content_hash":"sha256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff","attributes":{"€":1,"b":[0.5,"é"]},"document":""}"#,
        ];
        for b in bodies {
            let r = parse_record(b.as_bytes()).unwrap();
            let mut obj: Value = serde_json::from_str(b).unwrap();
            obj.as_object_mut().unwrap().remove("type");
            let want = serde_json_canonicalizer::to_vec(&obj).unwrap();
            assert_eq!(
                String::from_utf8(content_bytes(&r)).unwrap(),
                String::from_utf8(want).unwrap()
            );
        }
    }

    #[test]
    fn the_commitment_depends_on_salt_and_content() {
        // The specification's example (docs/private.md).
        let salt = [7u8; SALT_LEN];
        let content = br#"{"attributes":{"result":"positive"},"subject":"P-1"}"#;
        let mut h = Sha256::new();
        h.update(b"stele/commitment/v1\0");
        h.update(salt);
        h.update(content);
        let want = format!("sha256:{}", hex::encode(h.finalize()));
        assert_eq!(
            want,
            "sha256:4b27c491bc0adca6a89c04beaf4c2dcda02f12733e280aa2b2631c3ea9460cd0"
        );
        assert_eq!(commitment(&salt, content), want);
        assert!(is_commitment(&want));
        assert_ne!(commitment(&[8u8; SALT_LEN], content), want);
        assert_ne!(commitment(&salt, b"{}"), want);
        assert_ne!(new_salt(), new_salt());
    }
}
