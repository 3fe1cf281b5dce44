//! `stele type apply|list|show` against the quick start (`stele serve` with
//! no configuration: the four example types, `demo` a registry admin), and
//! `stele monitor --audit` replaying the registry from the tiles.

use std::time::Duration;

use stele_testkit::agency::parse_token;
use stele_testkit::process::{ServeOptions, ServerProcess};

use super::fake::{Tree, Watched};
use super::{ensure, expect_alarm, expect_fine, stele, Test, TestResult};

pub const TESTS: &[(&str, Test)] = &[
    (
        "type_commands_on_the_quick_start",
        type_commands_on_the_quick_start,
    ),
    (
        "audit_alarms_on_a_record_that_breaks_its_type",
        audit_alarms_on_a_record_that_breaks_its_type,
    ),
];

const V2: &str = r#"
name = "parking.status"
version = 2
description = "Free spaces, with the time of the count."
writers = ["parking", "demo"]

[subject]
required = true
pattern = "lot-[0-9]{1,6}"

[schema]
type = "object"
required = ["free", "capacity", "counted_at"]
properties.free = { type = "integer", minimum = 0 }
properties.capacity = { type = "integer", minimum = 1 }
properties.counted_at = { type = "string" }
"#;

fn type_commands_on_the_quick_start() -> TestResult {
    let rt = tokio::runtime::Runtime::new()?;
    let dir = tempfile::tempdir()?;
    let options = ServeOptions {
        data_dir: Some(dir.path().join("data")),
        current_dir: Some(dir.path().to_path_buf()),
        ..ServeOptions::default()
    };
    let server = rt.block_on(ServerProcess::start(
        &stele_testkit::stele_bin!(),
        "quick start",
        &options,
        Duration::from_secs(60),
    ))?;
    let token = parse_token(&server.stderr(), "demo")
        .ok_or_else(|| anyhow::anyhow!("no demo token:\n{}", server.stderr()))?;
    let log = format!("{}/logs/default", server.base_url());
    let skey = std::fs::read_to_string(dir.path().join("data/keys/default.skey"))?;
    let vkey = stele_core::note::Signer::from_skey(skey.trim())
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .vkey();

    let out = stele(&["type", "list", "--log", &log]);
    ensure(out.code == 0, || out.show())?;
    for t in [
        "disease.covid-test",
        "health.case",
        "health.vaccination",
        "land.transfer",
        "parking.status",
    ] {
        ensure(out.stdout.contains(&format!("{t}\tv1\t")), || {
            format!("{t} missing\n{}", out.show())
        })?;
    }

    let file = dir.path().join("parking-v2.toml");
    std::fs::write(&file, V2)?;
    let file = file.to_string_lossy().to_string();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, &token)?;
    let token_file = token_file.to_string_lossy().to_string();
    let apply = |f: &str| {
        stele(&[
            "type",
            "apply",
            f,
            "--log",
            &log,
            "--token-file",
            &token_file,
        ])
    };
    let out = apply(&file);
    ensure(
        out.code == 0
            && out
                .stdout
                .contains("parking.status version 2: applied (entry 5)"),
        || out.show(),
    )?;
    let out = apply(&file);
    ensure(
        out.code == 0 && out.stdout.contains("already in force (entry 5)"),
        || out.show(),
    )?;
    // A bad definition: refused before anything is sent, naming the file.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "name = \"x.y\"\nversion = 1\nschema = {}\nextra = 1\n",
    )?;
    let out = apply(&bad.to_string_lossy());
    ensure(out.code != 0 && out.stderr.contains("bad.toml"), || {
        out.show()
    })?;
    // A rewrite of version 1: the log refuses it (409).
    let rewrite = dir.path().join("rewrite.toml");
    std::fs::write(&rewrite, V2.replace("version = 2", "version = 1"))?;
    let out = apply(&rewrite.to_string_lossy());
    ensure(out.code != 0 && out.stderr.contains("conflict"), || {
        out.show()
    })?;

    let out = stele(&[
        "type",
        "show",
        "parking.status",
        "--version",
        "1",
        "--log",
        &log,
        "--vkey",
        &vkey,
    ]);
    ensure(
        out.code == 0 && out.stderr.contains("verified: 2 version(s)"),
        || out.show(),
    )?;
    let def: serde_json::Value = serde_json::from_str(&out.stdout)?;
    ensure(
        def["version"] == 1 && def["schema"]["required"] == serde_json::json!(["free", "capacity"]),
        || out.show(),
    )?;
    let out = stele(&["type", "show", "parking.status", "--log", &log]);
    ensure(out.stdout.contains("counted_at"), || out.show())?;

    // A record by the rules in force, and the audit over the tiles.
    let rec = dir.path().join("rec.json");
    std::fs::write(
        &rec,
        r#"{"type":"parking.status","subject":"lot-7","attributes":{"free":3,"capacity":40,"counted_at":"08:00"}}"#,
    )?;
    let out = stele(&[
        "submit",
        "--log",
        &log,
        "--token-file",
        &token_file,
        &rec.to_string_lossy(),
    ]);
    ensure(out.code == 0, || out.show())?;
    let state = dir.path().join("monitor.json");
    let out = stele(&[
        "monitor",
        &log,
        "--vkey",
        &vkey,
        "--state",
        &state.to_string_lossy(),
        "--once",
        "--audit",
    ]);
    ensure(
        out.code == 0
            && out
                .stdout
                .contains("follow the record-type registry (6 registry entries)"),
        || out.show(),
    )?;
    drop(server);
    Ok(())
}

/// A log (served by the test, as tiles) whose entry 300 breaks its type's
/// schema: `stele monitor --audit` passes the log before it and raises an
/// alarm naming the entry and the rule once it is published.
fn audit_alarms_on_a_record_that_breaks_its_type() -> TestResult {
    use stele::names::AgencyName;
    use stele::records::{leaf_bytes, parse_record};
    use stele::registry::{entry_record, TypeDefinition};
    let def = TypeDefinition::parse(include_str!("../../examples/types/parking.status.toml"))?;
    let entry = entry_record(&def);
    let ts = 1_795_000_000_000;
    let mut leaves = vec![leaf_bytes(
        &AgencyName::parse("registrar")?,
        &entry,
        None,
        ts,
    )];
    for i in 0..400 {
        let free = if i == 299 { -1 } else { i };
        let body = format!(
            r#"{{"type":"parking.status","subject":"lot-{i}","attributes":{{"free":{free},"capacity":500}}}}"#
        );
        let r = parse_record(body.as_bytes())?;
        leaves.push(leaf_bytes(&AgencyName::parse("parking")?, &r, Some(1), ts));
    }
    let hashes = leaves.iter().map(|l| stele_core::leaf_hash(l)).collect();
    let tree = Tree { leaves, hashes };
    let w = Watched::new("registry")?;
    w.serve(&tree, 300);
    let out = w.monitor(None, &["--audit"]);
    expect_fine(&out)?;
    ensure(
        out.stdout
            .contains("follow the record-type registry (1 registry entries)"),
        || out.show(),
    )?;
    w.serve(&tree, 401);
    let out = w.monitor(None, &["--audit"]);
    expect_alarm(
        &out,
        "entry 300 breaks the log's record-type rules: /attributes/free (minimum)",
    )
}
