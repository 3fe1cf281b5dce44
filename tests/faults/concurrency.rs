//! 50 concurrent clients and 5,000 records: every one acknowledged once,
//! at exactly the indexes 0..5000.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use stele_testkit::process::with_logs;
use stele_testkit::store::Backend;

use super::final_audit;
use super::load::{Collector, Load, LoadSpec, Targets};

pub async fn concurrency(backend: Backend) -> Result<()> {
    const CLIENTS: usize = 50;
    const RECORDS: u64 = 5_000;
    let (_store, deployment) = super::deploy(backend).await?;
    let server = deployment.start("server").await?;
    let result = async {
        let mut checker = deployment.checker(&server).await?;
        let targets: Targets = Arc::new(RwLock::new(vec![server.base_url()]));
        let started = Instant::now();
        let mut load = Load::start(
            LoadSpec {
                clients: CLIENTS,
                records: Some(RECORDS),
                prefix: "c".into(),
                client_timeout: Duration::from_secs(60),
            },
            &deployment.token,
            targets,
        )?;
        let mut collector = Collector::default();
        collector.pump(&mut load, &mut checker, true, Duration::from_secs(240), |_| false).await?;
        collector.finish(&mut load, &mut checker).await?;
        let elapsed = started.elapsed();
        ensure!(
            collector.receipts.len() as u64 == RECORDS,
            "{} of {RECORDS} records acknowledged: {}",
            collector.receipts.len(),
            collector.summary()
        );
        let indexes: BTreeSet<u64> = collector.receipts.values().map(|r| r.index).collect();
        ensure!(
            indexes == (0..RECORDS).collect::<BTreeSet<u64>>(),
            "indexes are not exactly 0..{RECORDS}: {} distinct, min {:?}, max {:?}",
            indexes.len(),
            indexes.first(),
            indexes.last()
        );
        let report = final_audit(&mut checker, &collector).await?;
        let size = report.checkpoint.size;
        ensure!(size == RECORDS, "final tree size {size}, expected {RECORDS}");
        eprintln!(
            "concurrency ({backend:?}): {RECORDS} records from {CLIENTS} clients in {elapsed:.2?} ({:.0}/s), {} signed checkpoints, all consistent with the final one; {}",
            RECORDS as f64 / elapsed.as_secs_f64(),
            report.stored.unwrap_or_default(),
            collector.summary()
        );
        Ok(())
    }
    .await;
    with_logs(&[&server], result)
}
