//! A PostgreSQL outage under load, on a throwaway cluster the test starts
//! and stops itself (never the shared server): prompt 503s and an unready
//! `/readyz` during it, no receipt for what was not committed, recovery
//! without a restart, and nothing lost or doubled.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use stele_testkit::process::{with_logs, Deployment, PgCluster};

use super::final_audit;
use super::load::{Collector, Load, LoadSpec, Outcome, Targets};

pub async fn outage() -> Result<()> {
    const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
    /// A 503 must arrive well inside the client timeout.
    const PROMPT: Duration = Duration::from_secs(5);
    let cluster = PgCluster::create().await?;
    let deployment = Deployment::new(
        &stele_testkit::stele_bin!(),
        None,
        Some(&cluster.url("postgres")),
        super::spec(),
    )
    .await?;
    let mut server = deployment.start("server").await?;
    let targets: Targets = Arc::new(RwLock::new(vec![server.base_url()]));
    let mut checker = deployment.checker(&server).await?;
    let mut load = Load::start(
        LoadSpec {
            clients: 20,
            records: None,
            prefix: "o".into(),
            client_timeout: CLIENT_TIMEOUT,
        },
        &deployment.token,
        targets,
    )?;
    let mut collector = Collector::default();
    let result = async {
        collector.pump(&mut load, &mut checker, true, Duration::from_secs(120), |c| c.receipts.len() >= 300).await?;
        let acknowledged_before = collector.receipts.len();

        cluster.stop_immediate().await?;
        let stopped_at = Instant::now();
        let first_attempt_after = collector.attempts.len();
        // Keep the clients going for a while with PostgreSQL down, and
        // watch /readyz meanwhile.
        let probe = reqwest::Client::builder().timeout(CLIENT_TIMEOUT).build()?;
        let readyz = format!("{}/readyz", server.base_url());
        let mut unready_after = None;
        while stopped_at.elapsed() < Duration::from_secs(6) {
            let t = Instant::now();
            collector
                .pump(&mut load, &mut checker, false, Duration::from_secs(60), |_| t.elapsed() > Duration::from_millis(200))
                .await?;
            if unready_after.is_none() {
                let asked = Instant::now();
                let status = probe.get(&readyz).send().await.map(|r| r.status().as_u16());
                match status {
                    Ok(200) => {}
                    Ok(_) => unready_after = Some((stopped_at.elapsed(), asked.elapsed())),
                    Err(e) => bail!("/readyz did not answer during the outage: {e}"),
                }
            }
        }
        ensure!(server.is_running(), "the server exited during the database outage");
        let (unready_after, readyz_latency) =
            unready_after.ok_or_else(|| anyhow!("/readyz still answered 200 6 s into the outage"))?;
        ensure!(readyz_latency < PROMPT, "/readyz took {readyz_latency:.2?} to fail");
        let during = &collector.attempts[first_attempt_after..];
        let mut pushback = Vec::new();
        for a in during {
            match &a.outcome {
                Outcome::Receipt { .. } => {}
                Outcome::Status { status: 503, .. } => pushback.push(a.latency),
                Outcome::Status { status, body } => {
                    bail!("during the outage {} got {status} after {:.2?}: {body}", a.subject, a.latency)
                }
                Outcome::Transport { error, .. } => {
                    bail!("during the outage {} got no answer after {:.2?}: {error}", a.subject, a.latency)
                }
            }
        }
        ensure!(!pushback.is_empty(), "no 503 during the outage: {}", collector.summary());
        let slowest = pushback.iter().max().copied().unwrap_or_default();
        ensure!(slowest < PROMPT, "a 503 took {slowest:.2?} (client timeout {CLIENT_TIMEOUT:?})");
        let late = collector.attempts[first_attempt_after..]
            .iter()
            .filter(|a| a.started >= stopped_at + Duration::from_secs(1))
            .filter(|a| matches!(a.outcome, Outcome::Receipt { .. }))
            .count();
        ensure!(late == 0, "{late} receipts for requests sent 1 s or more into the outage");

        cluster.start().await?;
        let restarted_at = Instant::now();
        server.wait_ready(Duration::from_secs(60)).await.context("no recovery without a restart")?;
        let ready_after = restarted_at.elapsed();
        let target = collector.receipts.len() + 200;
        collector.pump(&mut load, &mut checker, true, Duration::from_secs(120), |c| c.receipts.len() >= target).await?;
        let receipts_after = collector.attempts[first_attempt_after..]
            .iter()
            .filter(|a| a.started >= restarted_at && matches!(a.outcome, Outcome::Receipt { .. }))
            .count();
        ensure!(receipts_after > 0, "no receipts after PostgreSQL came back");
        collector.finish(&mut load, &mut checker).await?;
        let resubmitted = collector.settle(&deployment.token, &server.base_url(), &mut checker).await?;
        let size = final_audit(&mut checker, &collector).await?.checkpoint.size;
        ensure!(server.is_running(), "the server exited");
        eprintln!(
            "outage: {acknowledged_before} acknowledged before the stop; {} 503s during it, slowest {slowest:.2?}; /readyz failed {unready_after:.2?} into it (answering in {readyz_latency:.2?}); ready {ready_after:.2?} after PostgreSQL restarted; {resubmitted} resubmitted; final size {size}; {}",
            pushback.len(),
            collector.summary()
        );
        Ok(())
    }
    .await;
    if result.is_err() {
        eprintln!("----- PostgreSQL log -----\n{}", cluster.server_log());
    }
    with_logs(&[&server], result)
}
