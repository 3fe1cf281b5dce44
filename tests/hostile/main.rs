//! What hostile clients cannot do to a running `stele serve` process: slow,
//! idle and surplus connections, trickled bodies, floods of bogus tokens,
//! an agency over its quota, duplicate-heavy batches, huge bulk bodies in
//! parallel, and TLS with the wrong certificate authority. Each test runs
//! honest agencies beside the hostile traffic and checks that they keep
//! getting receipts, that the hostile requests get their status and problem
//! type and append nothing, and — from `/proc` — that the server's file
//! descriptors and memory stay bounded. The invariant checker verifies the
//! log at the end of every test.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::json;
use stele_testkit::harness::Suite;
use stele_testkit::process::{Deployment, DeploymentSpec, ServerProcess};
use stele_testkit::store::{Backend, TestStore};

mod floods;
mod memory;
mod slow;
mod tls;

const LOG: &str = "default";
const ORIGIN: &str = "hostile.stele.test/default";
const AGENCY: &str = "honest";

fn main() {
    let mut suite = Suite::new().workers(1).timeout(Duration::from_secs(300));
    suite.per_backend(
        "slow_and_idle_clients",
        &[Backend::Sqlite],
        slow::slow_and_idle,
    );
    suite.per_backend("trickled_bodies", &[Backend::Sqlite], slow::trickled_bodies);
    suite.per_backend("bogus_token_flood", Backend::ALL, floods::bogus_tokens);
    suite.per_backend("agency_over_quota", Backend::ALL, floods::over_quota);
    suite.per_backend("duplicate_heavy_batches", Backend::ALL, floods::duplicates);
    suite.per_backend("huge_bulk_bodies", &[Backend::Sqlite], memory::huge_bulk);
    suite.per_backend("tls_and_its_ca", &[Backend::Sqlite], tls::tls);
    suite.run()
}

/// A deployment on a fresh store of `backend` with `config` added.
async fn deploy(backend: Backend, config: &str) -> Result<(TestStore, Deployment)> {
    let store = TestStore::new(backend).await?;
    let spec = DeploymentSpec {
        log: LOG.into(),
        origin: ORIGIN.into(),
        agency: AGENCY.into(),
        types: vec![],
        accept_unregistered: true,
        env: vec![],
        config: config.into(),
        log_config: String::new(),
    };
    let deployment = Deployment::on_store(&stele_testkit::stele_bin!(), &store, spec).await?;
    Ok((store, deployment))
}

/// What `/proc` says of a process: open file descriptors and memory.
#[derive(Clone, Copy, Debug)]
struct ProcStats {
    fds: usize,
    rss_kib: u64,
    peak_rss_kib: u64,
}

fn proc_stats(server: &ServerProcess) -> Result<ProcStats> {
    let pid = server.pid().context("the server has exited")?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| -> Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(key))
            .with_context(|| format!("no {key} in /proc/{pid}/status"))?;
        Ok(line
            .split_whitespace()
            .nth(1)
            .context("no number")?
            .parse()?)
    };
    Ok(ProcStats {
        fds,
        rss_kib: kib("VmRSS:")?,
        peak_rss_kib: kib("VmHWM:")?,
    })
}

/// One record of `who`, distinct by `n`.
fn record(who: &str, n: usize) -> serde_json::Value {
    json!({"type": "hostile.test", "subject": format!("{who}-{n}"), "attributes": {"n": n}})
}

/// POSTs one record; the status and the JSON answer.
async fn post(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    body: &serde_json::Value,
) -> Result<(reqwest::StatusCode, serde_json::Value)> {
    let r = http
        .post(format!("{base}/logs/{LOG}/records"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await?;
    let status = r.status();
    let text = r.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(json!(text))))
}

/// The tree size the server publishes.
async fn tree_size(http: &reqwest::Client, base: &str) -> Result<u64> {
    let logs: stele::wire::Logs = http
        .get(format!("{base}/logs"))
        .send()
        .await?
        .json()
        .await?;
    logs.logs
        .first()
        .map(|l| l.tree_size)
        .context("no log in GET /logs")
}

/// `n` honest submissions from `clients` clients at once, each retried on
/// pushback (429/503, honouring Retry-After up to 2 s); every one must end
/// with a receipt. Returns the receipts.
async fn honest_load(
    base: &str,
    token: &str,
    prefix: &str,
    clients: usize,
    per_client: usize,
) -> Result<Vec<stele_core::receipt::Receipt>> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (http, base, token, prefix) = (
            http.clone(),
            base.to_string(),
            token.to_string(),
            prefix.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in 0..per_client {
                let body = record(&format!("{prefix}-{c}"), i);
                let mut tries = 0;
                loop {
                    let (status, answer) = post(&http, &base, &token, &body).await?;
                    if status.is_success() {
                        out.push(serde_json::from_value(answer)?);
                        break;
                    }
                    tries += 1;
                    ensure!(
                        (status == 503 || status == 429) && tries < 20,
                        "honest submission {c}/{i}: {status} {answer}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            anyhow::Ok(out)
        }));
    }
    let mut receipts = Vec::new();
    for t in tasks {
        receipts.extend(t.await??);
    }
    Ok(receipts)
}

/// The checker's full verdict on the deployment's log, with `receipts`.
async fn check(
    deployment: &Deployment,
    server: &ServerProcess,
    receipts: &[stele_core::receipt::Receipt],
) -> Result<()> {
    let mut checker = deployment.checker(server).await?;
    for r in receipts {
        checker.add_receipt(r)?;
    }
    checker.check_all().await?;
    Ok(())
}
