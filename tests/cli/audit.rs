//! `stele monitor --audit`: it rebuilds a large real log from its tiles and
//! resumes where it stopped, and it catches tampered entries on a fake log.

use std::time::Instant;

use anyhow::anyhow;
use stele_core::leaf_hash;
use stele_core::tile::{TileId, TilePath};
use stele_testkit::harness::TestResult;

use super::fake::{Tree, Watched};
use super::{ensure, expect_alarm, expect_fine, monitor, Server, Test};

pub const TESTS: &[(&str, Test)] = &[
    ("audit_rebuilds_large_log", audit_rebuilds_large_log),
    (
        "audit_detects_tampered_entries",
        audit_detects_tampered_entries,
    ),
];

fn audit_rebuilds_large_log() -> TestResult {
    let s = Server::start()?;
    let started = Instant::now();
    s.bulk("audit", 100_000)?;
    let built = started.elapsed();
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("audit.json");
    let started = Instant::now();
    let out = monitor(
        &s.url,
        &s.vkey,
        &state,
        &["--audit", "--allow-unregistered"],
    );
    let audited = started.elapsed();
    expect_fine(&out)?;
    ensure(out.stdout.contains("audited: the 100000 entries"), || {
        format!("audit did not cover 100000\n{}", out.show())
    })?;
    eprintln!("audit test: appended 100,000 entries in {built:.1?}, audited them in {audited:.1?}");
    // Resumes: only the new entries (and the partial bundle) are fetched.
    s.bulk("audit-more", 1000)?;
    let out = monitor(
        &s.url,
        &s.vkey,
        &state,
        &["--audit", "--allow-unregistered"],
    );
    expect_fine(&out)?;
    let fetched: u64 = out
        .stdout
        .split(" fetched now")
        .next()
        .and_then(|t| t.rsplit('(').next())
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| anyhow!("no fetched count\n{}", out.show()))?;
    ensure(fetched == 1000, || {
        format!(
            "resumed audit fetched {fetched} entries, expected 1000\n{}",
            out.show()
        )
    })?;
    // The checker rebuilds all of it too, and reads back a thousand entries.
    s.checker.lock().unwrap().limit_entries(1000);
    let size = s.check()?;
    ensure(size == 101_000, || format!("checked a log of {size}"))
}

fn audit_detects_tampered_entries() -> TestResult {
    let w = Watched::new("audit")?;
    let tree = Tree::new("a", 700);
    w.serve(&tree, 700);
    let out = w.monitor(None, &["--audit", "--tree-only"]);
    expect_fine(&out)?;
    ensure(out.stdout.contains("audited: the 700 entries"), || {
        out.show()
    })?;
    // Same signed checkpoint, but one entry in a bundle differs.
    let mut bad = Tree::new("a", 700);
    bad.leaves[300] = b"forged".to_vec();
    bad.hashes[300] = leaf_hash(b"forged");
    let files = bad.files(700);
    w.fake.state.lock().unwrap().files.insert(
        TilePath::Entries(TileId::new(0, 1, 256)).to_path(),
        files[&TilePath::Entries(TileId::new(0, 1, 256)).to_path()].clone(),
    );
    let fresh = w.state.with_file_name("fresh.json");
    expect_alarm(
        &w.monitor(Some(&fresh), &["--audit", "--tree-only"]),
        "differs from the one rebuilt",
    )?;
    // Served hash tiles consistent with the forged entries: the root gives it away.
    w.fake.state.lock().unwrap().files = files;
    let fresh2 = w.state.with_file_name("fresh2.json");
    expect_alarm(
        &w.monitor(Some(&fresh2), &["--audit", "--tree-only"]),
        "audit: the entries rebuild",
    )
}
