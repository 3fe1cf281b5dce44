//! `stele monitor`: it follows the real log across its own restarts, and
//! raises the alarm on fake logs that forge, roll back, rewrite or split
//! their history.

use std::path::PathBuf;

use serde_json::Value;
use stele_core::note::Signer;
use stele_testkit::harness::TestResult;

use super::fake::{FakeLog, Tree};
use super::{ensure, expect_alarm, expect_fine, monitor, Server, ServerTest, Test};

pub const WITH_SERVER: &[(&str, ServerTest)] = &[(
    "monitor_follows_real_log_across_restarts",
    monitor_follows_real_log_across_restarts,
)];

pub const TESTS: &[(&str, Test)] = &[
    (
        "monitor_detects_forged_checkpoint",
        monitor_detects_forged_checkpoint,
    ),
    (
        "monitor_detects_rollback_across_restart",
        monitor_detects_rollback_across_restart,
    ),
    (
        "monitor_detects_inconsistent_root",
        monitor_detects_inconsistent_root,
    ),
    ("monitor_detects_split_view", monitor_detects_split_view),
];

fn monitor_follows_real_log_across_restarts(s: &Server) -> TestResult {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("monitor.json");
    s.bulk("monitor", 10)?;
    let out = monitor(&s.url, &s.vkey, &state, &[]);
    expect_fine(&out)?;
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&state)?)?;
    ensure(
        saved["checkpoint"]
            .as_str()
            .is_some_and(|c| c.starts_with(&format!("{}\n", s.origin))),
        || format!("state file lacks the verified checkpoint: {saved}"),
    )?;
    s.bulk("monitor-more", 20)?;
    let out = monitor(&s.url, &s.vkey, &state, &[]);
    expect_fine(&out)?;
    ensure(
        out.stdout.contains("resuming from the verified tree")
            && out.stdout.contains("consistent with size"),
        || {
            format!(
                "second run did not resume and prove consistency\n{}",
                out.show()
            )
        },
    )?;
    // A wrong key is refused against the existing state.
    let (other, _) = Signer::generate(&s.origin)?;
    let out = monitor(&s.url, &other.vkey(), &state, &[]);
    ensure(out.code != 0, || out.show())
}

pub fn fake_setup(tag: &str) -> anyhow::Result<(FakeLog, Signer, tempfile::TempDir, PathBuf)> {
    let fake = FakeLog::start();
    let (signer, _) = Signer::generate(&format!("fake.example/{tag}"))?;
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state.json");
    Ok((fake, signer, dir, state))
}

fn monitor_detects_forged_checkpoint() -> TestResult {
    let (fake, signer, _d, state) = fake_setup("forged")?;
    let tree = Tree::new("a", 20);
    fake.serve(&signer, &tree, 5);
    expect_fine(&monitor(&fake.url, &signer.vkey(), &state, &[]))?;
    let (forger, _) = Signer::generate(signer.name())?;
    fake.serve(&forger, &tree, 8);
    expect_alarm(
        &monitor(&fake.url, &signer.vkey(), &state, &[]),
        "bad checkpoint signature",
    )
}

fn monitor_detects_rollback_across_restart() -> TestResult {
    let (fake, signer, _d, state) = fake_setup("rollback")?;
    let tree = Tree::new("a", 20);
    fake.serve(&signer, &tree, 6);
    expect_fine(&monitor(&fake.url, &signer.vkey(), &state, &[]))?;
    fake.serve(&signer, &tree, 12);
    let out = monitor(&fake.url, &signer.vkey(), &state, &[]);
    expect_fine(&out)?;
    ensure(out.stdout.contains("consistent with size 6"), || out.show())?;
    fake.serve(&signer, &tree, 9);
    expect_alarm(
        &monitor(&fake.url, &signer.vkey(), &state, &[]),
        "the tree shrank",
    )?;
    // The alarm did not overwrite the verified state: it fires again.
    expect_alarm(
        &monitor(&fake.url, &signer.vkey(), &state, &[]),
        "the tree shrank",
    )
}

fn monitor_detects_inconsistent_root() -> TestResult {
    let (fake, signer, _d, state) = fake_setup("inconsistent")?;
    fake.serve(&signer, &Tree::new("a", 20), 7);
    expect_fine(&monitor(&fake.url, &signer.vkey(), &state, &[]))?;
    // A different history, properly signed, with a proof from that history.
    fake.serve(&signer, &Tree::new("b", 20), 13);
    expect_alarm(
        &monitor(&fake.url, &signer.vkey(), &state, &[]),
        "inconsistent tree",
    )
}

fn monitor_detects_split_view() -> TestResult {
    let (fake, signer, _d, state) = fake_setup("split")?;
    fake.serve(&signer, &Tree::new("a", 10), 4);
    expect_fine(&monitor(&fake.url, &signer.vkey(), &state, &[]))?;
    fake.serve(&signer, &Tree::new("b", 10), 4);
    expect_alarm(
        &monitor(&fake.url, &signer.vkey(), &state, &[]),
        "split view",
    )
}
