//! The engine on PostgreSQL, where it behaves differently from SQLite: many
//! concurrent submissions over a connection pool, and two engines (two
//! processes' worth of sessions) on one database, where the advisory-lock
//! lease and the compare-and-set must keep the log from forking.
//!
//! Unreachable server: the tests are reported ignored with the reason, or
//! fail when `STELE_REQUIRE_POSTGRES=1`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use libtest_mimic::{Arguments, Completion, Failed, Trial};
use stele::engine::agency::new_token;
use stele::engine::{Agency, Engine, EngineConfig, Integrated, Locator, LogConfig, LogError};
use stele::metrics::Metrics;
use stele::names::{AgencyName, LogName};
use stele::records::{parse_record, Record};
use stele::storage::postgres::{PgOptions, PostgresStorage};
use stele::storage::{AgencyRecord, LogWriter, Storage};
use stele_core::leaf_hash;
use stele_core::merkle::{verify_consistency, verify_inclusion};
use stele_core::note::{open_checkpoint, Signer, Verifier};
use stele_testkit::pg::{fresh_database, pg_policy, PgPolicy};

const LOG: &str = "default";
const ORIGIN: &str = "records.example.test/default";

type TestResult = anyhow::Result<()>;

/// A fresh signing key for the test log.
fn test_key() -> String {
    Signer::generate(ORIGIN).unwrap().1
}

async fn engine(url: &str, skey: &str) -> anyhow::Result<Arc<Engine>> {
    let storage: Arc<dyn Storage> =
        Arc::new(PostgresStorage::connect(url, PgOptions::default()).await?);
    let signer = Arc::new(Signer::from_skey(skey)?);
    let logs = vec![LogConfig {
        name: LogName::parse(LOG)?,
        origin: ORIGIN.into(),
        signer,
    }];
    let config = EngineConfig {
        max_wait: Duration::from_millis(2),
        ..EngineConfig::default()
    };
    Engine::start(storage, logs, config, Arc::new(Metrics::new())).await
}

async fn add_agency(engine: &Engine, name: &str) -> anyhow::Result<Agency> {
    let (token, token_hash) = new_token(&AgencyName::parse(name)?);
    let rec = AgencyRecord {
        name: name.into(),
        token_hash,
        types: vec![],
        revoked: false,
        created_ms: 0,
    };
    engine.storage().add_agency(&rec).await?;
    Ok(engine.authenticate(&token).await?)
}

fn rec(i: usize) -> Record {
    parse_record(format!(r#"{{"type":"land.transfer","subject":"parcel {i}"}}"#).as_bytes())
        .unwrap()
}

/// Every stored checkpoint verifies and is consistent with the latest;
/// every entry is included in the latest.
async fn check_log(engine: &Engine) -> TestResult {
    let v = Verifier::from_vkey(&engine.logs().await[0].vkey)?;
    let latest = open_checkpoint(&engine.checkpoint(LOG).await?, &v)?;
    for (size, text) in engine.storage().checkpoints(LOG).await? {
        let cp = open_checkpoint(&text, &v)?;
        anyhow::ensure!(
            cp.size == size,
            "checkpoint stored at {size} says {}",
            cp.size
        );
        let p = engine
            .consistency_proof(LOG, size, Some(latest.size))
            .await?;
        verify_consistency(size, latest.size, &cp.root, &latest.root, &p.proof)?;
    }
    for i in 0..latest.size {
        let e = engine.entry(LOG, i).await?;
        anyhow::ensure!(e.leaf_hash == leaf_hash(e.leaf.as_bytes()));
        let p = engine.inclusion_proof(LOG, Locator::Index(i), None).await?;
        verify_inclusion(&e.leaf_hash, i, latest.size, &p.proof, &latest.root)?;
    }
    Ok(())
}

async fn retry_submit(engine: &Engine, agency: &Agency, r: Record) -> anyhow::Result<Integrated> {
    for _ in 0..400 {
        match engine.submit(LOG, agency, r.clone()).await {
            Ok(s) => return Ok(s),
            Err(LogError::Unavailable(_)) | Err(LogError::Pushback { .. }) => {
                tokio::time::sleep(Duration::from_millis(25)).await
            }
            Err(e) => return Err(e.into()),
        }
    }
    anyhow::bail!("the engine did not become writable")
}

async fn concurrent_submissions(url: String) -> TestResult {
    let skey = test_key();
    let engine = engine(&url, &skey).await?;
    let agency = add_agency(&engine, "transport").await?;
    let v = Verifier::from_vkey(&engine.logs().await[0].vkey)?;
    let mut tasks = Vec::new();
    for t in 0..20 {
        let (engine, agency) = (engine.clone(), agency.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in 0..25 {
                out.push(engine.submit(LOG, &agency, rec(t * 1000 + i)).await?);
            }
            Ok::<_, LogError>(out)
        }));
    }
    let mut indexes = HashSet::new();
    for t in tasks {
        for sub in t.await?? {
            anyhow::ensure!(sub.created);
            anyhow::ensure!(
                indexes.insert(sub.receipt().verify(&v)?.index),
                "index handed out twice"
            );
        }
    }
    anyhow::ensure!(
        indexes == (0..500).collect::<HashSet<u64>>(),
        "indexes are not 0..500"
    );
    // A repeat is a duplicate, across the pool's connections.
    let again = engine.submit(LOG, &agency, rec(7)).await?;
    anyhow::ensure!(!again.created);
    check_log(&engine).await?;
    engine.shutdown().await;
    Ok(())
}

async fn two_engines_never_fork(url: String) -> TestResult {
    let skey = test_key();
    let first = engine(&url, &skey).await?;
    let agency = add_agency(&first, "land").await?;
    first.submit(LOG, &agency, rec(0)).await?;
    let second = engine(&url, &skey).await?;
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
            let mut ok = 0;
            for i in 0..50 {
                match e.submit(LOG, &agency, rec(1000 * (n + 1) + i)).await {
                    Ok(_) => ok += 1,
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
        first_ok == 50 && second_ok == 0,
        "writes: first {first_ok}, second {second_ok}"
    );
    anyhow::ensure!(first.logs().await[0].tree_size == 51);
    first.shutdown().await;

    // The second takes the lease, reloads the first's state and continues.
    let sub = retry_submit(&second, &agency, rec(9999)).await?;
    anyhow::ensure!(
        sub.receipt().index == 51,
        "continued at {}",
        sub.receipt().index
    );
    anyhow::ensure!(second.ready().await.is_ok());
    check_log(&second).await?;
    second.shutdown().await;
    Ok(())
}

/// A database created before migration 0003 (dedup keys stored bare, under a
/// B-tree) keeps deduplicating after the upgrade: the migration rewrites
/// the stored keys into the per-log form the backend now looks up.
async fn upgrade_keeps_dedup(url: String) -> TestResult {
    use stele::storage::{Batch, NewEntry, StorageError};
    let pool = sqlx::PgPool::connect(&url).await?;
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

    let storage = PostgresStorage::connect(&url, PgOptions::default()).await?;
    let found = storage.find_dedup(LOG, &[key]).await?;
    anyhow::ensure!(found == vec![(key, 0)], "after the upgrade: {found:?}");
    let again = [NewEntry {
        index: 1,
        leaf_hash: leaf_hash(&leaf),
        leaf: leaf.clone().into(),
        dedup_key: key,
        ts_ms: 0,
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
    Ok(())
}

type TestFn = fn(String) -> std::pin::Pin<Box<dyn std::future::Future<Output = TestResult> + Send>>;

const TESTS: &[(&str, TestFn)] = &[
    ("concurrent_submissions", |u| {
        Box::pin(concurrent_submissions(u))
    }),
    ("two_engines_never_fork", |u| {
        Box::pin(two_engines_never_fork(u))
    }),
    ("upgrade_keeps_dedup", |u| Box::pin(upgrade_keeps_dedup(u))),
];

fn run(test: TestFn) -> TestResult {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let db = fresh_database().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let result = test(db.url.clone()).await;
        db.drop_db().await?;
        result
    })
}

fn main() {
    let args = Arguments::from_args();
    let policy = pg_policy();
    let names: Vec<String> = TESTS
        .iter()
        .map(|(n, _)| format!("postgres::{n}"))
        .collect();
    policy.announce(&names);
    let trials = TESTS
        .iter()
        .map(|&(name, test)| {
            let policy = policy.clone();
            Trial::ignorable_test(format!("postgres::{name}"), move || match policy {
                PgPolicy::Run => run(test)
                    .map(|()| Completion::Completed)
                    .map_err(|e| Failed::from(format!("{e:#}"))),
                PgPolicy::Skip(e) => Ok(Completion::ignored_with(e)),
                PgPolicy::Fail(e) => Err(Failed::from(format!("{e} and STELE_REQUIRE_POSTGRES=1"))),
            })
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}
