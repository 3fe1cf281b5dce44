//! `stele monitor`: it follows the real log across its own restarts, and
//! raises the alarm on fake logs that forge, roll back, rewrite or split
//! their history.

use serde_json::Value;
use stele_core::note::Signer;
use stele_testkit::harness::TestResult;

use super::fake::{Tree, Watched};
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

fn monitor_detects_forged_checkpoint() -> TestResult {
    let w = Watched::new("forged")?;
    let tree = Tree::new("a", 20);
    w.serve(&tree, 5);
    expect_fine(&w.once())?;
    let (forger, _) = Signer::generate(w.signer.name())?;
    w.fake.serve(&forger, &tree, 8);
    expect_alarm(&w.once(), "bad checkpoint signature")
}

fn monitor_detects_rollback_across_restart() -> TestResult {
    let w = Watched::new("rollback")?;
    let tree = Tree::new("a", 20);
    w.serve(&tree, 6);
    expect_fine(&w.once())?;
    w.serve(&tree, 12);
    let out = w.once();
    expect_fine(&out)?;
    ensure(out.stdout.contains("consistent with size 6"), || out.show())?;
    w.serve(&tree, 9);
    expect_alarm(&w.once(), "the tree shrank")?;
    // The alarm did not overwrite the verified state: it fires again.
    expect_alarm(&w.once(), "the tree shrank")
}

fn monitor_detects_inconsistent_root() -> TestResult {
    // A different history, properly signed, with a proof from that history.
    another_history("inconsistent", (20, 7), 13, "inconsistent tree")
}

fn monitor_detects_split_view() -> TestResult {
    another_history("split", (10, 4), 4, "split view")
}

/// The monitor verifies the first `verified` of `leaves` leaves of one
/// history, then sees a checkpoint of size `then` of another history,
/// properly signed: it must raise `alarm`.
fn another_history(
    tag: &str,
    (leaves, verified): (usize, u64),
    then: u64,
    alarm: &str,
) -> TestResult {
    let w = Watched::new(tag)?;
    w.serve(&Tree::new("a", leaves), verified);
    expect_fine(&w.once())?;
    w.serve(&Tree::new("b", leaves), then);
    expect_alarm(&w.once(), alarm)
}
