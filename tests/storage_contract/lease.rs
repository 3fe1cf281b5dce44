//! The writer lease (exclusive, per log, free again when dropped or when
//! its PostgreSQL session dies) and durability across a reopen.

use std::time::Duration;

use anyhow::{ensure, Context};
use stele::storage::AgencyRecord;
use stele_testkit::harness::{TestFn, TestResult};
use stele_testkit::store::Backend;

use super::{acquire_within, Ctx, LOG, ORIGIN};

pub const TESTS: &[(&str, TestFn<Ctx>)] = stele_testkit::tests![Ctx:
    writer_lease_is_exclusive,
    durable_across_reopen,
];

async fn writer_lease_is_exclusive(mut ctx: Ctx) -> TestResult {
    let (a, b) = (ctx.open_log().await?, ctx.open().await?);
    let lease = a.try_acquire_writer(LOG).await?.context("first lease")?;
    ensure!(lease.is_held(), "fresh lease not held");
    ensure!(
        a.try_acquire_writer(LOG).await?.is_none(),
        "same storage took it twice"
    );
    ensure!(
        b.try_acquire_writer(LOG).await?.is_none(),
        "second storage took it"
    );
    // Leases are per log.
    let other = b
        .try_acquire_writer("other")
        .await?
        .context("lease on another log")?;
    ensure!(other.is_held(), "other log's lease");
    if ctx.store.backend() == Backend::Postgres {
        // The heartbeat runs every 200 ms here; the lease must still be held.
        tokio::time::sleep(Duration::from_millis(600)).await;
        ensure!(lease.is_held(), "healthy lease reported lost");
    }
    drop(lease);
    // Release is asynchronous on PostgreSQL (the server ends the session).
    let again = acquire_within(&*b, Duration::from_secs(5)).await?;
    ensure!(again.is_held(), "re-acquired lease");
    ensure!(
        a.try_acquire_writer(LOG).await?.is_none(),
        "taken back while held"
    );
    if let Some(url) = ctx.store.database_url() {
        // Kill the session that holds the advisory lock: the lease must
        // notice (heartbeat every 200 ms) and the lock must be free again.
        use sqlx::{Connection, PgConnection};
        let mut admin = PgConnection::connect(url).await?;
        let killed: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(l.pid) FROM pg_locks l \
             JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.granted AND a.datname = current_database()",
        )
        .fetch_all(&mut admin)
        .await?;
        ensure!(
            killed.len() == 2,
            "expected 2 advisory-lock sessions, found {}",
            killed.len()
        );
        let start = std::time::Instant::now();
        while again.is_held() || other.is_held() {
            ensure!(
                start.elapsed() < Duration::from_secs(5),
                "lost lease still reported held"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let taken = acquire_within(&*a, Duration::from_secs(5)).await?;
        ensure!(taken.is_held(), "lease after the holder's session died");
    }
    ctx.finish().await
}

async fn durable_across_reopen(mut ctx: Ctx) -> TestResult {
    let s = ctx.open_log().await?;
    ctx.commit(&*s, 700).await?;
    ctx.check(&s).await?;
    let agency = AgencyRecord {
        name: "transport".into(),
        token_hash: [4; 32],
        types: vec!["parking.*".into()],
        revoked: false,
        registry_admin: true,
        eraser: true,
        created_ms: 5,
    };
    s.add_agency(&agency).await?;
    drop(s);
    ctx.close_all().await;

    let s = ctx.open().await?;
    ensure!(
        s.ensure_log(LOG, ORIGIN).await?.tree_size == 700,
        "size after reopen"
    );
    ctx.check(&s).await?;
    ensure!(
        s.checkpoints(LOG).await?.len() == 1,
        "checkpoints after reopen"
    );
    ensure!(
        s.agency("transport").await? == Some(agency),
        "agency after reopen"
    );
    ctx.commit(&*s, 10).await?;
    ctx.done(&s).await
}
