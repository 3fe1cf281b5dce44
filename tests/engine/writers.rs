//! One writer per log: a second engine (another process's sessions) reads
//! until it gets the lease, never writes meanwhile, and continues from the
//! first's state; PostgreSQL upgrades keep deduplicating; and a throughput
//! measurement.

use anyhow::Context;
use stele::engine::{EngineConfig, LogError};
use stele::records::Record;
use stele::storage::postgres::{PgOptions, PostgresStorage};
use stele::storage::{Batch, LogWriter, NewEntry, StorageError};
use stele_core::leaf_hash;
use stele_testkit::harness::{TestFn, TestResult};
use stele_testkit::store::TestStore;

use super::{config, rec, retry_submit, Ctx, LOG, ORIGIN};

pub const TESTS: &[(&str, TestFn<Ctx>)] = stele_testkit::tests![Ctx:
    a_second_process_reads_only_until_it_gets_the_lease,
    two_engines_never_fork,
];

/// PostgreSQL only, on a database no storage has opened (migrated) yet.
pub const PG_TESTS: &[(&str, TestFn<TestStore>)] =
    stele_testkit::tests![TestStore: upgrade_keeps_dedup];

/// A measurement, run only when asked for.
pub const THROUGHPUT: (&str, TestFn<Ctx>) = stele_testkit::tests![Ctx: throughput][0];

async fn a_second_process_reads_only_until_it_gets_the_lease(mut s: Ctx) -> TestResult {
    let first = s.engine(config()).await?;
    let agency = s.signed_in(&first, "land", &[]).await?;
    let sub = first.submit(LOG, &agency, rec(0)).await.unwrap();
    s.check_with(&first, [&sub]).await?;

    let second = s.engine_on(s.another_process().await?, config()).await?;
    let why = second.ready().await.unwrap_err();
    assert!(why.contains("another process"), "{why}");
    match second.submit(LOG, &agency, rec(1)).await {
        Err(LogError::Pushback { detail, .. }) => {
            assert!(detail.contains("another process"), "{detail}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        second.checkpoint(LOG).await.unwrap(),
        first.checkpoint(LOG).await.unwrap()
    );
    let sub = first.submit(LOG, &agency, rec(1)).await.unwrap();
    s.check_with(&first, [&sub]).await?;
    first.shutdown().await;

    // The second takes over, reloads the state the first left, and continues.
    let sub = retry_submit(&second, &agency, rec(2)).await?;
    assert_eq!((sub.receipt().index, sub.created), (2, true));
    assert_eq!(second.ready().await, Ok(()));
    s.done(&second, [&sub]).await
}

/// Two engines on one database take submissions at once: only the lease
/// holder's succeed, the other pushes back; when the first stops, the
/// second takes the lease, reloads and continues. The advisory lock (or the
/// lock file) and the compare-and-set keep the log from forking.
async fn two_engines_never_fork(mut s: Ctx) -> TestResult {
    let first = s.engine(config()).await?;
    let agency = s.signed_in(&first, "land", &[]).await?;
    let sub = first.submit(LOG, &agency, rec(0)).await?;
    s.check_with(&first, [&sub]).await?;
    let second = s.engine_on(s.another_process().await?, config()).await?;
    let why = second.ready().await.err().unwrap_or_default();
    anyhow::ensure!(
        why.contains("another process"),
        "second engine should not be the writer: {why:?}"
    );

    // Both take submissions at once: only the writer's succeed.
    let mut handles = Vec::new();
    for (n, e) in [first.clone(), second.clone()].into_iter().enumerate() {
        let agency = agency.clone();
        handles.push(tokio::spawn(async move {
            let mut ok = Vec::new();
            for i in 0..50 {
                match e.submit(LOG, &agency, rec(1000 * (n + 1) + i)).await {
                    Ok(sub) => ok.push(sub),
                    Err(LogError::Pushback { .. }) => {}
                    Err(other) => return Err(anyhow::anyhow!("{other}")),
                }
            }
            Ok::<_, anyhow::Error>(ok)
        }));
    }
    let first_ok = handles.remove(0).await??;
    let second_ok = handles.remove(0).await??;
    anyhow::ensure!(
        first_ok.len() == 50 && second_ok.is_empty(),
        "writes: first {}, second {}",
        first_ok.len(),
        second_ok.len()
    );
    anyhow::ensure!(first.logs().await[0].tree_size == 51);
    s.check_with(&first, &first_ok).await?;
    first.shutdown().await;

    // The second takes the lease, reloads the first's state and continues.
    let sub = retry_submit(&second, &agency, rec(9999)).await?;
    anyhow::ensure!(
        sub.receipt().index == 51,
        "continued at {}",
        sub.receipt().index
    );
    anyhow::ensure!(second.ready().await.is_ok());
    s.done(&second, [&sub]).await
}

/// A database created before migration 0003 (dedup keys stored bare, under a
/// B-tree) keeps deduplicating after the upgrade: the migration rewrites
/// the stored keys into the per-log form the backend now looks up.
async fn upgrade_keeps_dedup(store: TestStore) -> TestResult {
    let url = store.database_url().context("a PostgreSQL database")?;
    let pool = sqlx::PgPool::connect(url).await?;
    let mut before_0003 = sqlx::migrate!("./migrations/postgres");
    before_0003.migrations = before_0003
        .migrations
        .iter()
        .filter(|m| m.version < 3)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    before_0003.run(&pool).await?;
    let key = stele_core::Hash([7; 32]);
    let leaf = b"{}".to_vec();
    sqlx::query("INSERT INTO logs (name, origin, tree_size) VALUES ($1, $2, 1)")
        .bind(LOG)
        .bind(ORIGIN)
        .execute(&pool)
        .await?;
    sqlx::query(
        "INSERT INTO entries (log, idx, leaf, leaf_hash, dedup_key, ts) VALUES ($1, 0, $2, $3, $4, now())",
    )
    .bind(LOG)
    .bind(&leaf)
    .bind(leaf_hash(&leaf).0.as_slice())
    .bind(key.0.as_slice())
    .execute(&pool)
    .await?;
    pool.close().await;

    let storage = PostgresStorage::connect(url, PgOptions::default()).await?;
    let found = storage.find_dedup(LOG, &[key]).await?;
    anyhow::ensure!(
        found.len() == 1 && found[0].0 == key && found[0].1.index == 0 && found[0].1.leaf == leaf,
        "after the upgrade: {found:?}"
    );
    let again = [NewEntry {
        index: 1,
        leaf_hash: leaf_hash(&leaf),
        leaf: leaf.clone().into(),
        dedup_key: key,
        ts_ms: 0,
        effect: Default::default(),
    }];
    let batch = Batch {
        log: LOG,
        old_size: 1,
        new_size: 2,
        entries: &again,
        tiles: &[],
        checkpoint: "not checked here",
        root: stele_core::Hash([0; 32]),
    };
    match storage.commit_batch(&batch).await {
        Err(StorageError::Duplicate(_)) => {}
        other => anyhow::bail!("a stored key committed again: {other:?}"),
    }
    storage.close().await;
    store.finish().await
}

/// Throughput through `Engine::submit` (run with `--ignored --nocapture`;
/// prints records/s).
async fn throughput(mut s: Ctx) -> TestResult {
    let engine = s.engine(EngineConfig::default()).await?;
    let agency = s.signed_in(&engine, "load", &[]).await?;
    let (clients, each) = (100, 200);
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for t in 0..clients {
        let (engine, agency) = (engine.clone(), agency.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..each {
                engine
                    .submit(LOG, &agency, rec(t * 100_000 + i))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    let n = clients * each;
    println!(
        "{n} records from {clients} clients in {secs:.2} s: {:.0} records/s",
        n as f64 / secs
    );
    let started = std::time::Instant::now();
    let batch: Vec<Record> = (0..1000).map(|i| rec(10_000_000 + i)).collect();
    engine.submit_bulk(LOG, &agency, batch).await.unwrap();
    println!(
        "one bulk of 1000: {:.1} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );
    s.done(&engine, []).await
}
