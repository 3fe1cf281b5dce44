use super::*;
use crate::names::AgencyName;
use crate::records::{leaf_bytes, parse_record};

const LAND: &str = include_str!("../../examples/types/land.transfer.toml");

fn land() -> TypeDefinition {
    TypeDefinition::parse(LAND).unwrap()
}

fn registry_with(defs: &[(TypeDefinition, u64)]) -> Registry {
    let mut r = Registry::default();
    for (d, index) in defs {
        assert_eq!(r.check_change(d, "admin").unwrap(), Change::New);
        r.insert(Arc::new(
            CompiledType::compile(d.clone(), *index, "admin").unwrap(),
        ));
    }
    r
}

fn attrs(json: &str) -> Value {
    serde_json::from_str(json).unwrap()
}

#[test]
fn every_example_parses_compiles_and_round_trips() {
    for (file, text) in crate::cli::serve::EXAMPLE_TYPES {
        let def = TypeDefinition::parse(text).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(format!("{}.toml", def.name), file);
        CompiledType::compile(def.clone(), 0, "admin").unwrap();
        // The canonical JSON parses back to the same definition.
        let back = TypeDefinition::from_json(&def.canonical()).unwrap();
        assert_eq!(back, def);
        assert_eq!(back.canonical(), def.canonical());
    }
}

#[test]
fn canonical_form_writes_defaults_and_sorts_keys() {
    let def = TypeDefinition::from_json(r#"{"version":1,"name":"a.b","schema":true}"#).unwrap();
    assert_eq!(
        def.canonical(),
        r#"{"description":"","name":"a.b","readers":[],"schema":true,"subject":{"required":false},"version":1,"visibility":"public","writers":[]}"#
    );
}

#[test]
fn bad_definitions_are_refused_naming_the_field() {
    let field_of = |json: &str| match TypeDefinition::from_json(json)
        .and_then(|d| CompiledType::compile(d, 0, "a").map(|_| ()))
    {
        Err(LogError::Invalid { field, .. }) => field,
        Err(e) => format!("other: {e}"),
        Ok(()) => "ok".into(),
    };
    assert_eq!(field_of(r#"{"name":"a.b","version":1,"schema":{}}"#), "ok");
    assert_eq!(
        field_of(r#"{"name":"stele.x","version":1,"schema":{}}"#),
        "name"
    );
    assert_eq!(
        field_of(r#"{"name":"a.b","version":0,"schema":{}}"#),
        "version"
    );
    assert_eq!(
        field_of(r#"{"name":"a.b","version":1,"schema":{"type":"nope"}}"#),
        "schema"
    );
    assert_eq!(
        field_of(r#"{"name":"a.b","version":1,"schema":5}"#),
        "schema"
    );
    assert_eq!(
        field_of(
            r#"{"name":"a.b","version":1,"schema":{"$schema":"http://json-schema.org/draft-07/schema#"}}"#
        ),
        "schema"
    );
    assert_eq!(
        field_of(r#"{"name":"a.b","version":1,"schema":{},"subject":{"pattern":"("}}"#),
        "subject.pattern"
    );
    // A private type names its readers; a public one has none.
    assert_eq!(
        field_of(r#"{"name":"a.b","version":1,"schema":{},"visibility":"private"}"#),
        "readers"
    );
    assert_eq!(
        field_of(r#"{"name":"a.b","version":1,"schema":{},"readers":["x"]}"#),
        "readers"
    );
    assert_eq!(
        field_of(
            r#"{"name":"a.b","version":1,"schema":{},"visibility":"private","readers":["x"]}"#
        ),
        "ok"
    );
    // Unknown fields, bad names and bad writers: not a definition at all.
    for json in [
        r#"{"name":"a.b","version":1,"schema":{},"extra":1}"#,
        r#"{"name":"Nope","version":1,"schema":{}}"#,
        r#"{"name":"a.b","version":1,"schema":{},"writers":["Bad Name"]}"#,
        r#"{"name":"a.b","version":-1,"schema":{}}"#,
    ] {
        assert_eq!(field_of(json), "definition", "{json}");
    }
}

#[test]
fn versions_go_up_by_one_and_are_never_rewritten() {
    let v1 = land();
    let r = registry_with(&[(v1.clone(), 4)]);
    // The same definition by the same agency: a no-op answered by its entry.
    assert_eq!(r.check_change(&v1, "admin").unwrap(), Change::Same(4));
    // By another agency, or changed: a rewrite.
    assert!(matches!(
        r.check_change(&v1, "other"),
        Err(LogError::Conflict(_))
    ));
    let mut changed = v1.clone();
    changed.description = "rewritten".into();
    assert!(matches!(
        r.check_change(&changed, "admin"),
        Err(LogError::Conflict(_))
    ));
    let mut v3 = v1.clone();
    v3.version = 3;
    assert!(matches!(
        r.check_change(&v3, "admin"),
        Err(LogError::Conflict(_))
    ));
    let mut v2 = v1.clone();
    v2.version = 2;
    assert_eq!(r.check_change(&v2, "admin").unwrap(), Change::New);
}

#[test]
fn records_are_checked_against_the_version_in_force() {
    let r = registry_with(&[(land(), 0)]);
    let ok = attrs(r#"{"deed":"2026/17","area_m2":120.5,"use":"residential"}"#);
    assert_eq!(
        r.check_record("land-registry", "land.transfer", Some("XH-1234"), Some(&ok)),
        Ok(1)
    );
    assert!(matches!(
        r.check_record("land-registry", "land.other", Some("XH-1"), Some(&ok)),
        Err(Refusal::Unknown(_))
    ));
    assert!(matches!(
        r.check_record("hospital", "land.transfer", Some("XH-1"), Some(&ok)),
        Err(Refusal::NotWriter(_))
    ));
    let violations = |subject: Option<&str>, a: &Value| match r.check_record(
        "land-registry",
        "land.transfer",
        subject,
        Some(a),
    ) {
        Err(Refusal::Violations(v)) => v
            .into_iter()
            .map(|v| format!("{} {}", v.pointer, v.keyword))
            .collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    assert_eq!(violations(None, &ok), ["/subject required"]);
    assert_eq!(violations(Some("xh-1234"), &ok), ["/subject pattern"]);
    // The pattern is anchored: a match inside the subject is not enough.
    assert_eq!(
        violations(Some("XH-1234 and more"), &ok),
        ["/subject pattern"]
    );
    assert_eq!(
        violations(Some("XH-1"), &attrs(r#"{"deed":"2026/17","area_m2":0}"#)),
        ["/attributes/area_m2 exclusiveMinimum"]
    );
    assert_eq!(
        violations(Some("XH-1"), &attrs(r#"{"area_m2":3}"#)),
        ["/attributes required"]
    );
    assert_eq!(
        violations(
            Some("XH-1"),
            &attrs(r#"{"deed":"x","area_m2":3,"use":"moon","n":1}"#)
        )
        .len(),
        3
    );
    // No attributes is checked as `{}`.
    assert!(matches!(
        r.check_record("land-registry", "land.transfer", Some("XH-1"), None),
        Err(Refusal::Violations(_))
    ));
}

#[test]
fn a_wildcard_writer_allows_every_agency() {
    let def = TypeDefinition::from_json(
        r#"{"name":"note.public","version":1,"schema":{},"writers":["*"]}"#,
    )
    .unwrap();
    let r = registry_with(&[(def, 0)]);
    assert_eq!(r.check_record("anyone", "note.public", None, None), Ok(1));
}

/// A leaf as the log writes it.
fn record_leaf(agency: &str, body: &str, version: Option<u32>) -> Vec<u8> {
    let r = parse_record(body.as_bytes()).unwrap();
    leaf_bytes(
        &AgencyName::parse(agency).unwrap(),
        &r,
        version,
        1_795_000_000_000,
    )
}

fn registry_leaf(agency: &str, def: &TypeDefinition) -> Vec<u8> {
    let r = entry_record(def);
    leaf_bytes(
        &AgencyName::parse(agency).unwrap(),
        &r,
        None,
        1_795_000_000_000,
    )
}

#[test]
fn replay_follows_the_registry_through_versions() {
    let v1 = land();
    let mut v2 = land();
    v2.version = 2;
    v2.writers
        .push(Writer::Agency(AgencyName::parse("notary").unwrap()));
    let record =
        r#"{"type":"land.transfer","subject":"XH-1","attributes":{"deed":"2026/1","area_m2":5}}"#;
    let mut r = Registry::default();
    assert_eq!(r.replay(0, &registry_leaf("admin", &v1), false), Ok(true));
    assert_eq!(
        r.replay(1, &record_leaf("land-registry", record, Some(1)), false),
        Ok(false)
    );
    // The notary is not a writer of version 1 ...
    assert!(r
        .replay(2, &record_leaf("notary", record, Some(1)), false)
        .unwrap_err()
        .contains("not a writer"));
    assert_eq!(r.replay(3, &registry_leaf("admin", &v2), false), Ok(true));
    // ... but of version 2; and a record must name the version in force.
    assert_eq!(
        r.replay(4, &record_leaf("notary", record, Some(2)), false),
        Ok(false)
    );
    assert!(r
        .replay(5, &record_leaf("notary", record, Some(1)), false)
        .unwrap_err()
        .contains("version 2 was in force"));
    assert!(r
        .replay(6, &record_leaf("notary", record, None), false)
        .unwrap_err()
        .contains("no type_version"));
    // A registry entry rewriting version 1 is caught.
    let mut rewrite = land();
    rewrite.writers = vec![Writer::Any];
    assert!(r
        .replay(7, &registry_leaf("admin", &rewrite), false)
        .unwrap_err()
        .contains("already exists"));
    // Unregistered types pass only where the log accepts them, and only
    // without a version.
    let other = r#"{"type":"other.thing"}"#;
    assert!(r.replay(8, &record_leaf("x", other, None), false).is_err());
    assert_eq!(r.replay(8, &record_leaf("x", other, None), true), Ok(false));
    assert!(r
        .replay(8, &record_leaf("x", other, Some(1)), true)
        .is_err());
    assert!(r
        .replay(8, &record_leaf("notary", record, None), true)
        .is_err());
    assert_eq!(r.versions("land.transfer").len(), 2);
    assert_eq!(r.versions("land.transfer")[1].index, 3);
}

#[test]
fn registry_leaves_end_with_the_indexed_suffix() {
    // The partial index of migrations postgres/0004 and sqlite/0002 finds
    // registry entries by this suffix; records never end with it.
    let suffix = br#","type":"stele.type","v":1}"#;
    assert_eq!(suffix.len(), 27);
    assert!(registry_leaf("admin", &land()).ends_with(suffix));
    let tricky = r#"{"type":"a.b","subject":",\"type\":\"stele.type\",\"v\":1}","attributes":{"type":"stele.type","v":1}}"#;
    for v in [None, Some(1)] {
        assert!(!record_leaf("x", tricky, v).ends_with(suffix));
    }
}

#[test]
fn private_records_and_the_logs_own_entries_replay_by_their_rules() {
    use crate::records::private_leaf_bytes;
    let case = TypeDefinition::parse(
        crate::cli::serve::EXAMPLE_TYPES
            .iter()
            .find(|(f, _)| *f == "health.case.toml")
            .unwrap()
            .1,
    )
    .unwrap();
    assert_eq!(case.visibility, Visibility::Private);
    let mut r = Registry::default();
    assert_eq!(r.replay(0, &registry_leaf("admin", &case), false), Ok(true));
    let c = format!("sha256:{}", "ab".repeat(32));
    let h1 = AgencyName::parse("hospital-1").unwrap();
    let private = |agency: &AgencyName, v: u32, c: &str| {
        private_leaf_bytes(agency, "health.case", v, c, 1_795_000_000_000)
    };
    assert_eq!(r.replay(1, &private(&h1, 1, &c), false), Ok(false));
    // Not a writer; a wrong version; a malformed commitment.
    let other = AgencyName::parse("parking").unwrap();
    assert!(r.replay(2, &private(&other, 1, &c), false).is_err());
    assert!(r.replay(2, &private(&h1, 2, &c), false).is_err());
    assert!(r.replay(2, &private(&h1, 1, "sha256:AB"), false).is_err());
    // A private type's record with its content in the leaf is refused,
    // even if the content would pass the schema.
    let public = r#"{"type":"health.case","subject":"patient-12AB","attributes":{"diagnosis":"U07.1","opened":"2026-12-01"}}"#;
    let err = r
        .replay(2, &record_leaf("hospital-1", public, Some(1)), false)
        .unwrap_err();
    assert!(err.contains("no commitment"), "{err}");
    // A commitment on a public type is refused.
    let mut land_leaf = private(&h1, 1, &c);
    r.replay(3, &registry_leaf("admin", &land()), false)
        .unwrap();
    land_leaf = String::from_utf8(land_leaf)
        .unwrap()
        .replace("health.case", "land.transfer")
        .into_bytes();
    assert!(r.replay(4, &land_leaf, false).is_err());
    // Access and erasure entries: {purpose|reason, record} naming an earlier index.
    let access = |attrs: &str| {
        record_leaf(
            "hospital-2",
            &format!(r#"{{"type":"stele.access","attributes":{attrs}}}"#),
            None,
        )
    };
    assert_eq!(
        r.replay(5, &access(r#"{"purpose":"treatment","record":1}"#), false),
        Ok(false)
    );
    for bad in [
        r#"{"purpose":"treatment","record":5}"#,
        r#"{"purpose":"","record":1}"#,
        r#"{"purpose":"treatment"}"#,
        r#"{"purpose":"treatment","record":1,"extra":1}"#,
    ] {
        assert!(r.replay(5, &access(bad), false).is_err(), "{bad}");
    }
    let erasure = |attrs: &str| {
        record_leaf(
            "hospital-1",
            &format!(r#"{{"type":"stele.erasure","attributes":{attrs}}}"#),
            None,
        )
    };
    assert_eq!(
        r.replay(
            6,
            &erasure(r#"{"reason":"subject-request","record":1}"#),
            false
        ),
        Ok(false)
    );
    assert!(r
        .replay(6, &erasure(r#"{"reason":"because","record":1}"#), false)
        .is_err());
    // A type's visibility never changes.
    let mut v2 = case.clone();
    v2.version = 2;
    v2.visibility = Visibility::Public;
    v2.readers.clear();
    assert!(matches!(
        r.check_change(&v2, "admin"),
        Err(LogError::Conflict(_))
    ));
}
