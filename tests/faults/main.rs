//! End-to-end guarantees under faults, against real `stele serve` processes
//! on loopback: 50 concurrent clients, `kill -9` mid-load, a PostgreSQL
//! outage (on a throwaway cluster started by the test), and two servers on
//! one database. The invariant checker verifies the log through its public
//! API while it grows, and all of it — every stored checkpoint included —
//! after every fault and at the end.
//!
//! PostgreSQL tests use `STELE_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); when it is unreachable
//! they are reported as ignored with the reason, unless
//! `STELE_REQUIRE_POSTGRES=1`, in which case they fail.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context, Result};
use stele_testkit::checker::{HttpView, LogChecker, Report};
use stele_testkit::harness::{Needs, Suite};
use stele_testkit::process::{Deployment, DeploymentSpec};
use stele_testkit::store::{Backend, TestStore};

mod concurrency;
mod crash;
mod load;
mod outage;
mod read_nodes;
mod rollback;
mod two_writers;
mod witnessed;

use load::Collector;

const LOG: &str = "default";
const ORIGIN: &str = "faults.stele.test/default";
const AGENCY: &str = "faults";
const RECORD_TYPE: &str = "faults.test";
/// How long a server may take to stop after SIGTERM.
const STOP: Duration = Duration::from_secs(30);

fn main() {
    let mut suite = Suite::new().workers(4).timeout(Duration::from_secs(600));
    suite.per_backend("concurrency", Backend::ALL, concurrency::concurrency);
    suite.per_backend("crash_kill9", Backend::ALL, crash::crash);
    suite.add_async(
        "postgres::database_outage",
        Needs::PgCluster,
        outage::outage,
    );
    suite.add_async(
        "postgres::read_nodes_on_a_replica",
        Needs::PgCluster,
        read_nodes::read_nodes,
    );
    suite.per_backend("rollback_refused", Backend::ALL, rollback::rollback);
    suite.per_backend("two_writers", Backend::ALL, two_writers::two_writers);
    suite.per_backend("witness_federation", Backend::ALL, witnessed::federation);
    suite.per_backend(
        "witnessed_rollback_and_fork",
        Backend::ALL,
        witnessed::rollback_and_fork,
    );
    suite.run()
}

fn spec() -> DeploymentSpec {
    DeploymentSpec {
        log: LOG.into(),
        origin: ORIGIN.into(),
        agency: AGENCY.into(),
        types: vec!["faults.*".into()],
        accept_unregistered: true,
        env: vec![],
        config: String::new(),
        log_config: String::new(),
    }
}

/// A fresh database on `backend` and a deployment on it.
async fn deploy(backend: Backend) -> Result<(TestStore, Deployment)> {
    let store = TestStore::new(backend).await?;
    let deployment = Deployment::on_store(&stele_testkit::stele_bin!(), &store, spec()).await?;
    Ok((store, deployment))
}

/// The final verdict on a log: the checker's full check (every checkpoint
/// seen and stored consistent with the newest, the tree rebuilt from the
/// tiles, every receipt and entry proven), every receipt it was given
/// among them, and no record twice: each subject once, at the index its
/// receipt gave.
async fn final_audit(checker: &mut LogChecker<HttpView>, collector: &Collector) -> Result<Report> {
    let report = checker.check_all().await?;
    ensure!(
        report.receipts == collector.receipts.len(),
        "proved {} of {} receipts",
        report.receipts,
        collector.receipts.len()
    );
    ensure!(
        report.stored.is_some(),
        "the stored checkpoints were not checked"
    );
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    for (index, leaf) in report.leaves.iter().enumerate() {
        let leaf: serde_json::Value = serde_json::from_slice(leaf).context("leaf is not JSON")?;
        let subject = leaf["subject"]
            .as_str()
            .ok_or_else(|| anyhow!("leaf {index} has no subject: {leaf}"))?;
        if let Some(first) = seen.insert(subject.to_string(), index as u64) {
            bail!("record {subject} is in the log twice, at {first} and {index}");
        }
    }
    for (subject, receipt) in &collector.receipts {
        ensure!(
            seen.get(subject) == Some(&receipt.index),
            "{subject} was acknowledged at {} but the log has it at {:?}",
            receipt.index,
            seen.get(subject)
        );
    }
    ensure!(
        report.checkpoint.size as usize == collector.subjects.len(),
        "log of size {} for {} distinct records submitted",
        report.checkpoint.size,
        collector.subjects.len()
    );
    Ok(report)
}
