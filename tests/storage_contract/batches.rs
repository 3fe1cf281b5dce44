//! `commit_batch`: atomic, compare-and-set on the tree size, all or
//! nothing, refused when malformed, one winner among racing writers, and a
//! lost acknowledgement that the next reload shows committed.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{bail, ensure, Context};
use stele::storage::{LogReader, LogState, LogWriter, StorageError};
use stele_core::Hash;
use stele_testkit::faults::Faulty;
use stele_testkit::harness::{TestFn, TestResult};
use stele_testkit::synthetic::{entry, TestLog};

use super::{Ctx, LOG, ORIGIN};

pub const TESTS: &[(&str, TestFn<Ctx>)] = stele_testkit::tests![Ctx:
    ensure_log_is_idempotent_and_keeps_its_origin,
    commit_batch_is_visible_as_a_whole,
    cas_conflict_changes_nothing,
    failed_batch_rolls_back_entirely,
    malformed_batch_is_rejected,
    racing_writers_from_one_size_one_wins,
    lost_acknowledgement_is_seen_on_reload,
];

async fn ensure_log_is_idempotent_and_keeps_its_origin(mut ctx: Ctx) -> TestResult {
    let s = ctx.open().await?;
    ensure!(
        s.log_state(LOG).await?.is_none(),
        "log exists before ensure_log"
    );
    let first = s.ensure_log(LOG, ORIGIN).await?;
    let want = LogState {
        name: LOG.into(),
        origin: ORIGIN.into(),
        tree_size: 0,
        checkpoint: None,
        last_ts_ms: 0,
    };
    ensure!(first == want, "fresh log state: {first:?}");
    ctx.check(&s).await?;
    ctx.commit(&*s, 3).await?;
    ctx.check(&s).await?;
    let again = s.ensure_log(LOG, ORIGIN).await?;
    ensure!(again.tree_size == 3, "ensure_log reset the log: {again:?}");
    match s.ensure_log(LOG, "other.example/land").await {
        Err(StorageError::Other(_)) => {}
        r => bail!("origin change accepted or misclassified: {r:?}"),
    }
    ensure!(
        s.log_state(LOG).await? == Some(again),
        "origin mismatch changed the log"
    );
    ctx.done(&s).await
}

async fn commit_batch_is_visible_as_a_whole(mut ctx: Ctx) -> TestResult {
    let s = ctx.open_log().await?;
    for n in [300, 1, 1000] {
        ctx.commit(&*s, n).await?;
        ctx.check(&s).await?;
    }
    ensure!(ctx.log.size() == 1301);
    ctx.finish().await
}

async fn cas_conflict_changes_nothing(mut ctx: Ctx) -> TestResult {
    let s = ctx.open_log().await?;
    ctx.commit(&*s, 10).await?;
    // Writers that still believe the log is at 0 or 5 (or one ahead at 11),
    // signing with the log's key, must not move it.
    let stored = ctx.log.entries().to_vec();
    for stale in [0, 5, 11] {
        let mut seen = stored[..stale.min(10)].to_vec();
        seen.extend((10..stale as u64).map(|i| entry(i, "stale")));
        let writer = ctx.log.replay(LOG, seen);
        let p = writer.prepare(10, "stale");
        match s.commit_batch(&p.batch()).await {
            Err(StorageError::Conflict(_)) => {}
            r => bail!("stale commit from {stale}: {r:?}"),
        }
    }
    ctx.check(&s).await?;
    ensure!(
        s.checkpoints(LOG).await?.len() == 1,
        "stale checkpoint stored"
    );
    let stale_key = entry(12, "stale").dedup_key;
    ensure!(
        s.find_dedup(LOG, &[stale_key]).await?.is_empty(),
        "stale entry stored"
    );
    // A log that does not exist cannot be extended either.
    let nope = TestLog::new("nope", "records.example.gov/nope").prepare(1, "x");
    ensure!(
        matches!(
            s.commit_batch(&nope.batch()).await,
            Err(StorageError::Conflict(_))
        ),
        "unknown log"
    );
    ctx.done(&s).await
}

async fn failed_batch_rolls_back_entirely(mut ctx: Ctx) -> TestResult {
    let s = ctx.open_log().await?;
    ctx.commit(&*s, 10).await?;
    // The last entry repeats a stored dedup key: the CAS and the other rows
    // were already written inside the transaction, and must all roll back.
    let mut p = ctx.log.prepare(300, "a");
    p.entries.last_mut().context("entries")?.dedup_key = entry(3, "a").dedup_key;
    match s.commit_batch(&p.batch()).await {
        Err(StorageError::Duplicate(_)) => {}
        r => bail!("duplicate dedup key: {r:?}"),
    }
    ctx.check(&s).await?;
    ensure!(
        s.checkpoint_at(LOG, 310).await?.is_none(),
        "checkpoint of failed batch"
    );
    ensure!(
        s.read_tiles(LOG, &[(0, 1)]).await? == vec![None],
        "tile of failed batch"
    );
    ctx.commit(&*s, 300).await?;
    ctx.done(&s).await
}

async fn malformed_batch_is_rejected(mut ctx: Ctx) -> TestResult {
    let s = ctx.open_log().await?;
    ctx.commit(&*s, 4).await?;
    let mut gap = ctx.log.prepare(3, "a");
    gap.entries[1].index = 9;
    let mut short = ctx.log.prepare(3, "a");
    short.new = 8;
    for p in [gap, short] {
        match s.commit_batch(&p.batch()).await {
            Err(StorageError::Other(_)) => {}
            r => bail!("malformed batch: {r:?}"),
        }
    }
    ctx.done(&s).await
}

async fn racing_writers_from_one_size_one_wins(mut ctx: Ctx) -> TestResult {
    let (a, b) = (ctx.open_log().await?, ctx.open().await?);
    ctx.commit(&*a, 5).await?;
    for round in 0..5 {
        let p = Arc::new(ctx.log.prepare(100, "a"));
        let race = |s: Arc<dyn stele::storage::Storage>| {
            let p = p.clone();
            tokio::spawn(async move { s.commit_batch(&p.batch()).await })
        };
        let (ta, tb) = (race(a.clone()), race(b.clone()));
        let results = [ta.await?, tb.await?];
        let wins = results.iter().filter(|r| r.is_ok()).count();
        ensure!(wins == 1, "round {round}: {wins} writers won: {results:?}");
        for r in results.iter().filter_map(|r| r.as_ref().err()) {
            ensure!(matches!(r, StorageError::Conflict(_)), "loser got {r:?}");
        }
        ctx.log
            .accept(Arc::try_unwrap(p).ok().context("batch still shared")?);
        ctx.check(&a).await?;
    }
    ensure!(ctx.log.size() == 505);
    ctx.finish().await
}

async fn lost_acknowledgement_is_seen_on_reload(mut ctx: Ctx) -> TestResult {
    let s = ctx.open().await?;
    // Commits, then reports the database as unreachable: the
    // acknowledgement was lost after the transaction committed.
    let (faulty, faults) = Faulty::wrap(s.clone());
    faults.fail_after.store(1, Ordering::SeqCst);
    faulty.ensure_log(LOG, ORIGIN).await?;
    ctx.commit(&*s, 20).await?;
    let p = ctx.log.prepare(30, "a");
    match faulty.commit_batch(&p.batch()).await {
        Err(StorageError::Unavailable(_)) => {}
        r => bail!("fault not injected: {r:?}"),
    }
    // Retrying blindly from the old size must not write it twice ...
    match s.commit_batch(&p.batch()).await {
        Err(StorageError::Conflict(_)) => {}
        r => bail!("blind retry after a lost acknowledgement: {r:?}"),
    }
    // ... and reloading the state shows the batch committed, whole.
    let st = faulty.log_state(LOG).await?.context("log")?;
    ensure!(st.tree_size == 50, "reloaded size {}", st.tree_size);
    let keys: Vec<Hash> = p.entries.iter().map(|e| e.dedup_key).collect();
    ctx.log.accept(p);
    ctx.check(&s).await?;
    ensure!(
        faulty.find_dedup(LOG, &keys).await?.len() == 30,
        "dedup keys of the batch"
    );
    ctx.commit(&*s, 5).await?;
    ctx.done(&s).await
}
