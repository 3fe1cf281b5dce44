//! Bulk bodies, `{"records": [...]}`, parsed within a memory budget: the
//! array is split into borrowed slices of the body (`RawValue`, no copy),
//! its length and each element's size are checked before anything is
//! materialised, and then the records are validated one by one. So a body
//! costs itself plus about its validated records, never the 16–32× of a
//! whole-document `serde_json::Value`.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{record_from_text, Record};
use crate::error::LogError;

/// The top-level members of a JSON object, in order, values unparsed.
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                let mut out = Vec::new();
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    out.push((key, map.next_value()?));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Splits a bulk body into its records' JSON texts (borrowed from `body`,
/// unvalidated): the body is a JSON object whose only member is `records`,
/// an array of 1 to `max_records` elements, each at most
/// `max_record_bytes` long. Not UTF-8 or not JSON or not an object (or a
/// repeated member) → `Malformed`; another member or `records` not a
/// non-empty array → `Invalid`; too many records or one too long →
/// `TooLarge`.
pub fn split_bulk(
    body: &[u8],
    max_records: usize,
    max_record_bytes: usize,
) -> Result<Vec<&RawValue>, LogError> {
    let text =
        std::str::from_utf8(body).map_err(|_| LogError::Malformed("body is not UTF-8".into()))?;
    let Members(members) = serde_json::from_str(text)
        .map_err(|e| LogError::Malformed(format!("body must be a JSON object: {e}")))?;
    let mut records = None;
    for (key, value) in members {
        if key != "records" {
            return Err(LogError::invalid(
                key,
                "unknown field (expected only `records`)",
            ));
        }
        if records.replace(value).is_some() {
            return Err(LogError::Malformed("duplicate key \"records\"".into()));
        }
    }
    let records = records
        .ok_or_else(|| LogError::invalid("records", "`records` must be an array of records"))?;
    let items: Vec<&RawValue> = serde_json::from_str(records.get())
        .map_err(|_| LogError::invalid("records", "`records` must be an array of records"))?;
    if items.is_empty() {
        return Err(LogError::invalid("records", "`records` must not be empty"));
    }
    if items.len() > max_records {
        return Err(LogError::TooLarge(format!(
            "at most {max_records} records per request, got {}",
            items.len()
        )));
    }
    if let Some(i) = items.iter().position(|r| r.get().len() > max_record_bytes) {
        return Err(LogError::TooLarge(format!(
            "records[{i}]: a record may be at most {max_record_bytes} bytes"
        )));
    }
    Ok(items)
}

/// Parses and validates a bulk body: [`split_bulk`], then every record as
/// [`super::parse_record`] would, all or nothing. The error of a record
/// names it (`records[3].type`).
pub fn parse_bulk(
    body: &[u8],
    max_records: usize,
    max_record_bytes: usize,
) -> Result<Vec<Record>, LogError> {
    split_bulk(body, max_records, max_record_bytes)?
        .into_iter()
        .enumerate()
        .map(|(i, raw)| record_from_text(raw.get()).map_err(|e| within(e, i)))
        .collect()
}

/// `e` for element `i` of `records`: its field is prefixed, its message too.
fn within(e: LogError, i: usize) -> LogError {
    let at = format!("records[{i}]");
    match e {
        LogError::Invalid { field, detail } => LogError::Invalid {
            field: format!("{at}.{field}"),
            detail: format!("{at}: {detail}"),
        },
        LogError::Malformed(d) => LogError::Malformed(format!("{at}: {d}")),
        LogError::TooLarge(d) => LogError::TooLarge(format!("{at}: {d}")),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(r: Result<Vec<&RawValue>, LogError>) -> String {
        match r {
            Ok(v) => format!("ok:{}", v.len()),
            Err(LogError::Malformed(_)) => "malformed".into(),
            Err(LogError::Invalid { field, .. }) => format!("invalid:{field}"),
            Err(LogError::TooLarge(_)) => "too-large".into(),
            Err(e) => format!("other:{e}"),
        }
    }

    #[test]
    fn bulk_shape() {
        let split = |b: &[u8], max| kind(split_bulk(b, max, 1000));
        assert_eq!(split(b"[]", 10), "malformed");
        assert_eq!(split(b"{\"records\":[1]", 10), "malformed");
        assert_eq!(split(b"\xff", 10), "malformed");
        assert_eq!(split(b"{\"records\":[],\"x\":1}", 10), "invalid:x");
        assert_eq!(split(b"{\"records\":{}}", 10), "invalid:records");
        assert_eq!(split(b"{}", 10), "invalid:records");
        assert_eq!(split(b"{\"records\":[]}", 10), "invalid:records");
        assert_eq!(split(b"{\"records\":[{},{},{}]}", 2), "too-large");
        assert_eq!(split(b"{\"records\":[{},{}]}", 2), "ok:2");
        assert_eq!(
            split(b"{\"records\":[{}],\"records\":[{}]}", 2),
            "malformed"
        );
        let long = format!(
            "{{\"records\":[{{}},{{\"type\":\"{}\"}}]}}",
            "a".repeat(2000)
        );
        assert_eq!(split(long.as_bytes(), 10), "too-large");
    }

    #[test]
    fn bulk_rejects_duplicate_keys_inside_records() {
        for body in [
            &br#"{"records":[{"type":"a.b","type":"c.d"}]}"#[..],
            br#"{"records":[{"type":"a.b","attributes":{"k":1,"k":2}}]}"#,
        ] {
            match parse_bulk(body, 10, 1000) {
                Err(LogError::Malformed(d)) => assert!(d.starts_with("records[0]: "), "{d}"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn each_record_is_validated_and_named() {
        let body = br#"{"records":[{"type":"a.b"},{"type":"a.b","subject":5}]}"#;
        match parse_bulk(body, 10, 1000) {
            Err(LogError::Invalid { field, .. }) => assert_eq!(field, "records[1].subject"),
            other => panic!("{other:?}"),
        }
        let body = br#"{"records":[{"type":"a.b","attributes":{"n":12345678901234567890}}]}"#;
        match parse_bulk(body, 10, 1000) {
            Err(LogError::Invalid { field, detail }) => {
                assert_eq!(field, "records[0].attributes");
                assert!(detail.contains("as a string"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
        let ok = parse_bulk(br#"{"records":[{"type":"a.b"},{"type":"c.d"}]}"#, 10, 1000).unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[1].r#type, "c.d");
    }
}

/// Arbitrary and mutated bodies never panic the record parsers, and every
/// record they accept has a leaf identical to the RFC 8785 canonicalizer's
/// and a body that parses back to itself.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;
    use crate::names::AgencyName;
    use crate::records::{leaf_bytes, parse_record};

    const SEED: &str = r#"{"type":"land.transfer","subject":"parcel 12","content_hash":"sha256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff","attributes":{"z":1,"a":[true,null,"x",0.5,-3],"m":{"b":2.5e-3}}}"#;

    fn mutate(s: &str, edits: &[(usize, u8, u8)]) -> Vec<u8> {
        let mut b = s.as_bytes().to_vec();
        for &(pos, op, byte) in edits {
            let i = pos % b.len().max(1);
            match op % 3 {
                0 if !b.is_empty() => b[i] = byte,
                1 => b.insert(i.min(b.len()), byte),
                _ if !b.is_empty() => {
                    b.remove(i);
                }
                _ => b.push(byte),
            }
        }
        b
    }

    fn check(record: &Record) {
        let agency = AgencyName::parse("fuzz").unwrap();
        let leaf = leaf_bytes(&agency, record, None, 1_795_000_000_000);
        let value: serde_json::Value = serde_json::from_slice(&leaf).unwrap();
        assert_eq!(serde_json_canonicalizer::to_vec(&value).unwrap(), leaf);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(2000)
        ))]

        #[test]
        fn single_records(
            edits in prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 0..10),
            raw in prop::collection::vec(any::<u8>(), 0..300),
        ) {
            for body in [mutate(SEED, &edits), raw.clone()] {
                if let Ok(r) = parse_record(&body) {
                    check(&r);
                }
            }
        }

        #[test]
        fn bulk_bodies(
            edits in prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 0..10),
        ) {
            let body = format!("{{\"records\":[{SEED},{SEED}]}}");
            if let Ok(rs) = parse_bulk(&mutate(&body, &edits), 10, 4096) {
                for r in &rs {
                    check(r);
                }
            }
        }
    }
}
