//! Three `kill -9`s under load: after each restart nothing acknowledged is
//! lost and the log verifies whole; at the end every record is in it once.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use stele_testkit::process::{with_logs, ServerProcess};
use stele_testkit::store::Backend;

use super::final_audit;
use super::load::{Collector, Load, LoadSpec, Targets};

pub async fn crash(backend: Backend) -> Result<()> {
    /// Receipts to collect before each `kill -9` (varied, so the kills land
    /// at different points of the batch cycle).
    const KILL_AFTER: [usize; 3] = [400, 137, 251];
    let (_store, deployment) = super::deploy(backend).await?;
    let mut servers = vec![deployment.start("server-0").await?];
    let targets: Targets = Arc::new(RwLock::new(vec![servers[0].base_url()]));
    let mut checker = deployment.checker(&servers[0]).await?;
    let mut load = Load::start(
        LoadSpec {
            clients: 20,
            records: None,
            prefix: "k".into(),
            client_timeout: Duration::from_secs(30),
        },
        &deployment.token,
        targets.clone(),
    )?;
    let mut collector = Collector::default();
    let mut restart_times = Vec::new();
    let result = async {
        for (round, more) in KILL_AFTER.iter().enumerate() {
            let target = collector.receipts.len() + more;
            collector
                .pump(&mut load, &mut checker, true, Duration::from_secs(120), |c| {
                    c.receipts.len() >= target
                })
                .await?;

            // kill -9 while the clients keep submitting.
            servers.last_mut().expect("a server").kill9();
            let killed_at = Instant::now();
            let acknowledged_before_kill = collector.receipts.len();
            // Absorb what was in flight at the kill (transport errors, or
            // receipts that made it out before the process died).
            collector
                .pump(&mut load, &mut checker, false, Duration::from_secs(30), |_| {
                    killed_at.elapsed() > Duration::from_millis(300)
                })
                .await?;

            servers.push(deployment.start(&format!("server-{}", round + 1)).await?);
            let restarted = servers.last().expect("a server");
            restart_times.push(killed_at.elapsed());
            checker.set_base_url(&restarted.base_url())?;
            // Every receipt so far: its checkpoint is consistent with the
            // new checkpoint, and its leaf is included in it and sits at its
            // index in the tiles; so is every entry, and every stored
            // checkpoint is consistent too. (The clients still target the
            // killed process: nothing writes meanwhile.)
            let report = checker
                .check_all()
                .await
                .with_context(|| format!("after restart {}", round + 1))?;
            ensure!(
                report.checkpoint.size as usize >= acknowledged_before_kill,
                "log of size {} after restart, but {acknowledged_before_kill} records were acknowledged before the kill",
                report.checkpoint.size,
            );
            // The log accepts writes again, from the same clients.
            *targets.write().expect("targets lock") = vec![restarted.base_url()];
        }
        let target = collector.receipts.len() + 200;
        collector
            .pump(&mut load, &mut checker, true, Duration::from_secs(120), |c| {
                c.receipts.len() >= target
            })
            .await?;
        collector.finish(&mut load, &mut checker).await?;
        let last = servers.last().expect("a server").base_url();
        let resubmitted = collector.settle(&deployment.token, &last, &mut checker).await?;
        let report = final_audit(&mut checker, &collector).await?;
        eprintln!(
            "crash ({backend:?}): {} kill -9 under load, restarted and ready after {restart_times:.2?}; {resubmitted} unacknowledged resubmitted; final size {}; {} signed checkpoints, all consistent; {}",
            KILL_AFTER.len(),
            report.checkpoint.size,
            report.stored.unwrap_or_default(),
            collector.summary()
        );
        Ok(())
    }
    .await;
    let refs: Vec<&ServerProcess> = servers.iter().collect();
    with_logs(&refs, result)
}
