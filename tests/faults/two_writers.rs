//! Two servers on one database (or data directory): only the lease holder
//! writes, the other answers 503 to writes and serves reads, takes over
//! after the writer's `kill -9`, and the log never forks.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use stele_testkit::process::{wait_for, with_logs};
use stele_testkit::store::Backend;

use super::final_audit;
use super::load::{Collector, Load, LoadSpec, Outcome, Targets};

pub async fn two_writers(backend: Backend) -> Result<()> {
    const TAKEOVER: Duration = Duration::from_secs(30);
    let (_store, deployment) = super::deploy(backend).await?;
    let mut writer = deployment.start("server-a").await?;
    // The second process may never become ready while the first holds the
    // writer lease: wait only until it listens and serves reads.
    let second = deployment.spawn("server-b").await?;
    let result = async {
        wait_for(&format!("{}/healthz", second.base_url()), Duration::from_secs(60)).await?;
        let mut checker = deployment.checker(&writer).await?;
        let targets: Targets = Arc::new(RwLock::new(vec![writer.base_url(), second.base_url()]));
        let mut load = Load::start(
            LoadSpec { clients: 20, records: None, prefix: "w".into(), client_timeout: Duration::from_secs(30) },
            &deployment.token,
            targets.clone(),
        )?;
        let mut collector = Collector::default();
        collector.pump(&mut load, &mut checker, true, Duration::from_secs(120), |c| c.receipts.len() >= 600).await?;
        let per_target = |c: &Collector, target: &str| {
            let mut counts: BTreeMap<String, usize> = BTreeMap::new();
            for a in c.attempts.iter().filter(|a| a.target == target) {
                let key = match &a.outcome {
                    Outcome::Receipt { status, .. } | Outcome::Status { status, .. } => status.to_string(),
                    Outcome::Transport { .. } => "transport".into(),
                };
                *counts.entry(key).or_default() += 1;
            }
            counts
        };
        let at_second = per_target(&collector, &second.base_url());
        ensure!(!at_second.is_empty(), "no submission reached the second process");
        for status in at_second.keys() {
            ensure!(
                ["200", "201", "503"].contains(&status.as_str()),
                "the second process answered {status}: {at_second:?}"
            );
        }
        // Both processes must serve the one log.
        checker.set_base_url(&second.base_url())?;
        checker.check().await?;
        checker.set_base_url(&writer.base_url())?;
        checker.check().await?;
        let before_kill = collector.receipts.len();

        writer.kill9();
        let killed_at = Instant::now();
        *targets.write().expect("targets lock") = vec![second.base_url()];
        checker.set_base_url(&second.base_url())?;
        let takeover = async {
            collector
                .pump(&mut load, &mut checker, false, TAKEOVER, |c| {
                    c.attempts.iter().rev().take(50).any(|a| {
                        a.target == second.base_url()
                            && a.started > killed_at
                            && matches!(a.outcome, Outcome::Receipt { status: 201, .. })
                    })
                })
                .await
        };
        takeover.await.context("the second process did not take over writing")?;
        let took_over_after = killed_at.elapsed();
        let target = collector.receipts.len() + 300;
        collector.pump(&mut load, &mut checker, true, Duration::from_secs(120), |c| c.receipts.len() >= target).await?;
        collector.finish(&mut load, &mut checker).await?;
        let resubmitted = collector.settle(&deployment.token, &second.base_url(), &mut checker).await?;
        // No fork: one chain of signed checkpoints, whichever process
        // signed them (the full check covers every stored one).
        let size = final_audit(&mut checker, &collector).await?.checkpoint.size;
        eprintln!(
            "two writers ({backend:?}): {before_kill} acknowledged before the writer was killed; the second process answered {at_second:?} meanwhile; it took over writing {took_over_after:.2?} after kill -9; {resubmitted} resubmitted; final size {size}; {} signed checkpoints seen",
            checker.signed_roots().len()
        );
        Ok(())
    }
    .await;
    with_logs(&[&writer, &second], result)
}
