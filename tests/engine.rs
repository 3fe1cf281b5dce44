//! Engine tests on SQLite in a temp dir, with a fault-injecting storage
//! wrapper. After every step that writes, `check_log` re-verifies the whole
//! log through the public verifier.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use stele::engine::agency;
use stele::engine::{
    Agency, Engine, EngineConfig, InclusionProof, Integrated, Locator, LogConfig, LogError,
};
use stele::metrics::Metrics;
use stele::names::{AgencyName, LogName};
use stele::records::{self, Record};
use stele::storage::sqlite::SqliteStorage;
use stele::storage::{AgencyRecord, Storage};
use stele_core::merkle::{verify_consistency, verify_inclusion};
use stele_core::note::{self, Signer, Verifier};
use stele_core::tile::{decode_bundle, tile_hashes, TileId, TilePath};
use stele_core::{leaf_hash, Hash};
use stele_testkit::faults::{Faults, Faulty};

const LOG: &str = "default";
const ORIGIN: &str = "records.example.test/default";

struct Setup {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    signer_skey: String,
    faults: Arc<Faults>,
    storage: Arc<dyn Storage>,
}

impl Setup {
    async fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stele.db");
        let signer_skey = test_key();
        let faults = Arc::new(Faults::default());
        let inner: Arc<dyn Storage> = Arc::new(SqliteStorage::open(&path).await.unwrap());
        let storage: Arc<dyn Storage> = Arc::new(Faulty {
            inner,
            f: faults.clone(),
        });
        Setup {
            _dir: dir,
            path,
            signer_skey,
            faults,
            storage,
        }
    }

    /// A second, independent connection to the same database file.
    async fn another_process(&self) -> Arc<dyn Storage> {
        Arc::new(SqliteStorage::open(&self.path).await.unwrap())
    }

    async fn engine_on(&self, storage: Arc<dyn Storage>, config: EngineConfig) -> Arc<Engine> {
        let signer = Arc::new(Signer::from_skey(&self.signer_skey).unwrap());
        let logs = vec![LogConfig {
            name: LogName::parse(LOG).unwrap(),
            origin: ORIGIN.into(),
            signer,
        }];
        Engine::start(storage, logs, config, Arc::new(Metrics::new()))
            .await
            .unwrap()
    }

    async fn engine(&self, config: EngineConfig) -> Arc<Engine> {
        self.engine_on(self.storage.clone(), config).await
    }

    /// A new agency, authenticated by its token.
    async fn signed_in(&self, engine: &Engine, name: &str, types: &[&str]) -> Agency {
        engine
            .authenticate(&self.agency(name, types).await)
            .await
            .unwrap()
    }

    async fn agency(&self, name: &str, types: &[&str]) -> String {
        let (token, token_hash) = agency::new_token(&ag(name));
        let rec = AgencyRecord {
            name: name.into(),
            token_hash,
            types: types.iter().map(|s| s.to_string()).collect(),
            revoked: false,
            created_ms: 0,
        };
        self.storage.add_agency(&rec).await.unwrap();
        token
    }
}

fn ag(name: &str) -> AgencyName {
    AgencyName::parse(name).unwrap()
}

/// A fresh signing key for the test log.
fn test_key() -> String {
    Signer::generate(ORIGIN).unwrap().1
}

fn config() -> EngineConfig {
    EngineConfig {
        max_wait: Duration::from_millis(2),
        ..EngineConfig::default()
    }
}

fn rec(i: usize) -> Record {
    records::parse_record(
        format!(r#"{{"type":"land.transfer","subject":"parcel {i}","attributes":{{"n":{i}}}}}"#)
            .as_bytes(),
    )
    .unwrap()
}

async fn verifier(engine: &Engine) -> Verifier {
    Verifier::from_vkey(&engine.logs().await[0].vkey).unwrap()
}

/// Where each receipt put its record (verified), and whether it was new.
fn placed(subs: &[Integrated], v: &Verifier) -> Vec<(u64, bool)> {
    subs.iter()
        .map(|s| (s.receipt().verify(v).unwrap().index, s.created))
        .collect()
}

/// Re-verifies the whole log through the public verifier: the latest
/// checkpoint's signature, every stored checkpoint's consistency with it,
/// and the inclusion of every entry.
async fn check_log(engine: &Engine) {
    let v = verifier(engine).await;
    let latest = note::open_checkpoint(&engine.checkpoint(LOG).await.unwrap(), &v).unwrap();
    assert_eq!(engine.logs().await[0].tree_size, latest.size);
    for (size, text) in engine.storage().checkpoints(LOG).await.unwrap() {
        let cp = note::open_checkpoint(&text, &v).unwrap();
        assert_eq!(cp.size, size);
        let p = engine
            .consistency_proof(LOG, size, Some(latest.size))
            .await
            .unwrap();
        verify_consistency(size, latest.size, &cp.root, &latest.root, &p.proof).unwrap();
    }
    for i in 0..latest.size {
        let e = engine.entry(LOG, i).await.unwrap();
        assert_eq!(e.leaf_hash, leaf_hash(e.leaf.as_bytes()));
        let p = engine
            .inclusion_proof(LOG, Locator::Index(i), None)
            .await
            .unwrap();
        assert_eq!(p.leaf_hash, e.leaf_hash);
        verify_inclusion(&e.leaf_hash, i, latest.size, &p.proof, &latest.root).unwrap();
    }
}

#[tokio::test]
async fn submit_gives_a_verifiable_receipt_and_dedups() {
    let s = Setup::new().await;
    let engine = s.engine(config()).await;
    assert_eq!(engine.ready().await, Ok(()));
    // An empty log has a signed checkpoint of size 0 at once.
    let v = verifier(&engine).await;
    assert_eq!(
        note::open_checkpoint(&engine.checkpoint(LOG).await.unwrap(), &v)
            .unwrap()
            .size,
        0
    );

    let token = s.agency("land-registry", &["land.*"]).await;
    let agency = engine.authenticate(&token).await.unwrap();
    assert_eq!(agency.name, "land-registry");
    let first = engine.submit(LOG, &agency, rec(1)).await.unwrap();
    assert!(first.created);
    let verified = first.receipt().verify(&v).unwrap();
    assert_eq!(verified.index, 0);
    let leaf: serde_json::Value = serde_json::from_str(&first.receipt().leaf).unwrap();
    assert_eq!(leaf["agency"], "land-registry");
    assert_eq!(leaf["v"], 1);

    let second = engine.submit(LOG, &agency, rec(2)).await.unwrap();
    assert_eq!(second.receipt().verify(&v).unwrap().index, 1);
    let again = engine.submit(LOG, &agency, rec(1)).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.receipt().index, 0);
    assert_eq!(again.receipt().leaf, first.receipt().leaf);
    again.receipt().verify(&v).unwrap();

    // A different agency with the same body is a different record.
    let other = s.signed_in(&engine, "other", &[]).await;
    let third = engine.submit(LOG, &other, rec(1)).await.unwrap();
    assert!(third.created);
    assert_eq!(third.receipt().index, 2);

    let health = records::parse_record(br#"{"type":"health.vaccination"}"#).unwrap();
    assert!(matches!(
        engine.submit(LOG, &agency, health).await,
        Err(LogError::Forbidden(_))
    ));
    assert!(matches!(
        engine.submit("nope", &agency, rec(9)).await,
        Err(LogError::NotFound(_))
    ));
    check_log(&engine).await;
    engine.shutdown().await;
}

#[tokio::test]
async fn authentication_rejects_bad_tokens_alike() {
    let s = Setup::new().await;
    let engine = s
        .engine(EngineConfig {
            token_cache_ttl: Duration::ZERO,
            ..config()
        })
        .await;
    let token = s.agency("hospital-7", &[]).await;
    assert_eq!(
        engine.authenticate(&token).await.unwrap().name,
        "hospital-7"
    );
    let (wrong, _) = agency::new_token(&ag("hospital-7"));
    let (unknown, _) = agency::new_token(&ag("nobody"));
    for bad in [
        wrong.as_str(),
        unknown.as_str(),
        "garbage",
        "hospital-7.",
        "",
        "Hospital-7.abc",
    ] {
        match engine.authenticate(bad).await {
            Err(LogError::Unauthorized(m)) => assert_eq!(m, "unknown, revoked or malformed token"),
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    assert!(engine.storage().revoke_agency("hospital-7").await.unwrap());
    assert!(matches!(
        engine.authenticate(&token).await,
        Err(LogError::Unauthorized(_))
    ));
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_submissions_get_consecutive_indexes() {
    let s = Setup::new().await;
    let engine = s
        .engine(EngineConfig {
            max_batch: 64,
            ..config()
        })
        .await;
    let agency = s.signed_in(&engine, "transport", &["*"]).await;
    let v = verifier(&engine).await;
    let mut tasks = Vec::new();
    for t in 0..20 {
        let (engine, agency) = (engine.clone(), agency.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in 0..25 {
                out.push(
                    engine
                        .submit(LOG, &agency, rec(t * 1000 + i))
                        .await
                        .unwrap(),
                );
            }
            out
        }));
    }
    let mut indexes = HashSet::new();
    let mut receipts = Vec::new();
    for t in tasks {
        for sub in t.await.unwrap() {
            assert!(sub.created);
            assert!(indexes.insert(sub.receipt().verify(&v).unwrap().index));
            receipts.push(sub.receipt());
        }
    }
    assert_eq!(indexes, (0..500).collect::<HashSet<u64>>());
    check_log(&engine).await;
    // Every receipt's checkpoint is consistent with the final one.
    let latest = note::open_checkpoint(&engine.checkpoint(LOG).await.unwrap(), &v).unwrap();
    assert_eq!(latest.size, 500);
    for r in &receipts {
        let cp = note::open_checkpoint(&r.checkpoint, &v).unwrap();
        let p = engine.consistency_proof(LOG, cp.size, None).await.unwrap();
        verify_consistency(cp.size, latest.size, &cp.root, &latest.root, &p.proof).unwrap();
    }
    // Timestamps never decrease along the log.
    let mut last = String::new();
    for i in 0..500 {
        let leaf: serde_json::Value =
            serde_json::from_str(&engine.entry(LOG, i).await.unwrap().leaf).unwrap();
        let ts = leaf["ts"].as_str().unwrap().to_string();
        assert!(ts >= last, "ts went back at {i}");
        last = ts;
    }
    engine.shutdown().await;
}

#[tokio::test]
async fn bulk_submission_dedups_within_the_batch() {
    let s = Setup::new().await;
    let engine = s.engine(config()).await;
    let agency = s.signed_in(&engine, "parking", &[]).await;
    let v = verifier(&engine).await;
    let subs = engine
        .submit_bulk(LOG, &agency, vec![rec(1), rec(2), rec(1), rec(3)])
        .await
        .unwrap();
    let got = placed(&subs, &v);
    assert_eq!(got, vec![(0, true), (1, true), (0, false), (2, true)]);
    // No records: no receipts, nothing appended (an empty bulk request is
    // refused by the HTTP layer, which owns the request's shape).
    assert!(engine
        .submit_bulk(LOG, &agency, vec![])
        .await
        .unwrap()
        .is_empty());
    assert_eq!(engine.logs().await[0].tree_size, 3);
    check_log(&engine).await;
    engine.shutdown().await;
}

/// Stored duplicates are found by the optimistic commit failing with
/// `Duplicate`: the batch is then sequenced again with the stored indexes,
/// so the new records still get consecutive indexes (no hole where the
/// failed attempt had put the duplicates) and the duplicates their old ones.
#[tokio::test]
async fn batch_mixing_stored_duplicates_and_new_records_leaves_no_hole() {
    let s = Setup::new().await;
    let engine = s.engine(config()).await;
    let agency = s.signed_in(&engine, "parking", &[]).await;
    let v = verifier(&engine).await;
    engine
        .submit_bulk(LOG, &agency, vec![rec(1), rec(2), rec(3)])
        .await
        .unwrap();
    let subs = engine
        .submit_bulk(LOG, &agency, vec![rec(4), rec(2), rec(5), rec(3), rec(4)])
        .await
        .unwrap();
    let got = placed(&subs, &v);
    assert_eq!(
        got,
        vec![(3, true), (1, false), (4, true), (2, false), (3, false)]
    );
    // A batch of nothing but stored duplicates commits nothing.
    let again = engine
        .submit_bulk(LOG, &agency, vec![rec(5), rec(1)])
        .await
        .unwrap();
    let got = placed(&again, &v);
    assert_eq!(got, vec![(4, false), (0, false)]);
    assert_eq!(engine.logs().await[0].tree_size, 5);
    check_log(&engine).await;
    engine.shutdown().await;
}

#[tokio::test]
async fn failed_commit_loses_and_duplicates_nothing() {
    let s = Setup::new().await;
    let engine = s.engine(config()).await;
    let agency = s.signed_in(&engine, "land", &[]).await;
    engine.submit(LOG, &agency, rec(0)).await.unwrap();
    s.faults.fail_before.store(1, Ordering::SeqCst);
    match engine.submit(LOG, &agency, rec(1)).await {
        Err(LogError::Unavailable(_)) => {}
        other => panic!("expected 503, got {other:?}"),
    }
    // The engine reloads and continues on its own.
    let sub = retry_submit(&engine, &agency, rec(1)).await;
    assert!(sub.created);
    assert_eq!(sub.receipt().index, 1);
    assert_eq!(engine.logs().await[0].tree_size, 2);
    check_log(&engine).await;
    engine.shutdown().await;
}

async fn retry_submit(engine: &Engine, agency: &Agency, r: Record) -> Integrated {
    for _ in 0..200 {
        match engine.submit(LOG, agency, r.clone()).await {
            Ok(s) => return s,
            Err(LogError::Unavailable(_)) | Err(LogError::Pushback { .. }) => {
                tokio::time::sleep(Duration::from_millis(25)).await
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    panic!("the engine did not recover");
}

#[tokio::test]
async fn lost_acknowledgement_is_adopted() {
    let s = Setup::new().await;
    let engine = s.engine(config()).await;
    let agency = s.signed_in(&engine, "land", &[]).await;
    engine.submit(LOG, &agency, rec(0)).await.unwrap();
    s.faults.fail_after.store(1, Ordering::SeqCst);
    assert!(matches!(
        engine.submit(LOG, &agency, rec(1)).await,
        Err(LogError::Unavailable(_))
    ));
    // Committed in fact: the retry is a duplicate of index 1.
    let again = retry_submit(&engine, &agency, rec(1)).await;
    assert!(!again.created);
    assert_eq!(again.receipt().index, 1);
    again.receipt().verify(&verifier(&engine).await).unwrap();
    let next = engine.submit(LOG, &agency, rec(2)).await.unwrap();
    assert_eq!((next.receipt().index, next.created), (2, true));
    check_log(&engine).await;
    engine.shutdown().await;
}

#[tokio::test]
async fn database_outage_answers_503_and_recovers_without_restart() {
    let s = Setup::new().await;
    let engine = s.engine(config()).await;
    let agency = s.signed_in(&engine, "land", &[]).await;
    engine.submit(LOG, &agency, rec(0)).await.unwrap();
    s.faults.down.store(true, Ordering::SeqCst);
    for i in 1..5 {
        let started = std::time::Instant::now();
        let r = engine.submit(LOG, &agency, rec(i)).await;
        assert!(matches!(r, Err(LogError::Unavailable(_))), "{r:?}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "a 503 must not hang"
        );
    }
    assert!(engine.ready().await.is_err());
    s.faults.down.store(false, Ordering::SeqCst);
    let sub = retry_submit(&engine, &agency, rec(1)).await;
    assert_eq!((sub.receipt().index, sub.created), (1, true));
    assert_eq!(engine.ready().await, Ok(()));
    check_log(&engine).await;
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_pushes_back_at_once() {
    let s = Setup::new().await;
    let engine = s
        .engine(EngineConfig {
            queue_capacity: 2,
            // The whole queue may be one agency's (the test is the queue).
            quotas: stele::engine::QuotaConfig {
                max_queue_share: 1.0,
                ..Default::default()
            },
            max_batch: 1,
            ..config()
        })
        .await;
    let agency = s.signed_in(&engine, "land", &[]).await;
    s.faults.commit_delay_ms.store(400, Ordering::SeqCst);
    let mut pending = Vec::new();
    for i in 0..2 {
        let (engine, agency) = (engine.clone(), agency.clone());
        pending.push(tokio::spawn(async move {
            engine.submit(LOG, &agency, rec(i)).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    match engine.submit(LOG, &agency, rec(9)).await {
        Err(LogError::Pushback { retry_after, .. }) => {
            assert_eq!(retry_after, config().retry_after)
        }
        other => panic!("expected pushback, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_millis(100));
    for p in pending {
        assert!(p.await.unwrap().unwrap().created);
    }
    s.faults.commit_delay_ms.store(0, Ordering::SeqCst);
    assert_eq!(
        engine
            .submit(LOG, &agency, rec(9))
            .await
            .unwrap()
            .receipt()
            .index,
        2
    );
    engine.shutdown().await;
}

#[tokio::test]
async fn recovery_refuses_writes_when_a_tile_is_corrupted() {
    let s = Setup::new().await;
    let engine = s.engine(config()).await;
    let agency = s.signed_in(&engine, "land", &[]).await;
    for i in 0..3 {
        engine.submit(LOG, &agency, rec(i)).await.unwrap();
    }
    let before = engine.checkpoint(LOG).await.unwrap();
    engine.shutdown().await;

    s.faults.corrupt_tiles.store(true, Ordering::SeqCst);
    let engine = s.engine(config()).await;
    let why = engine.ready().await.unwrap_err();
    assert!(why.contains("do not reproduce the root"), "{why}");
    assert!(matches!(
        engine.submit(LOG, &agency, rec(7)).await,
        Err(LogError::Pushback { .. })
    ));
    // Reads keep working.
    assert_eq!(engine.checkpoint(LOG).await.unwrap(), before);
    assert_eq!(engine.entry(LOG, 2).await.unwrap().index, 2);
    engine.shutdown().await;

    // With intact tiles the log starts writable again.
    s.faults.corrupt_tiles.store(false, Ordering::SeqCst);
    let engine = s.engine(config()).await;
    assert_eq!(engine.ready().await, Ok(()));
    assert_eq!(
        engine
            .submit(LOG, &agency, rec(7))
            .await
            .unwrap()
            .receipt()
            .index,
        3
    );
    check_log(&engine).await;
    engine.shutdown().await;
}

#[tokio::test]
async fn tiles_match_what_a_client_rebuilds_from_bundles() {
    let s = Setup::new().await;
    let engine = s.engine(config()).await;
    let agency = s.signed_in(&engine, "land", &[]).await;
    let v = verifier(&engine).await;
    let mut sizes = Vec::new();
    for chunk in 0..3 {
        let batch: Vec<Record> = (0..150).map(|i| rec(chunk * 150 + i)).collect();
        engine.submit_bulk(LOG, &agency, batch).await.unwrap();
        sizes.push((chunk as u64 + 1) * 150);
    }
    let size = 450u64;

    let full = engine
        .tile(LOG, TilePath::Entries(TileId::new(0, 0, 256)))
        .await
        .unwrap();
    assert!(full.immutable);
    let leaves = decode_bundle(&full.data).unwrap();
    assert_eq!(leaves.len(), 256);
    let part = engine
        .tile(LOG, TilePath::Entries(TileId::new(0, 1, 194)))
        .await
        .unwrap();
    assert!(!part.immutable);
    let mut all: Vec<Vec<u8>> = leaves.iter().map(|l| l.to_vec()).collect();
    all.extend(
        decode_bundle(&part.data)
            .unwrap()
            .iter()
            .map(|l| l.to_vec()),
    );
    assert_eq!(all.len() as u64, size);
    let hashes: Vec<Hash> = all.iter().map(|l| leaf_hash(l)).collect();

    let t0 = engine
        .tile(LOG, TilePath::Hash(TileId::new(0, 0, 256)))
        .await
        .unwrap();
    assert!(t0.immutable);
    assert_eq!(tile_hashes(&t0.data).unwrap(), hashes[..256].to_vec());
    let t1 = engine
        .tile(LOG, TilePath::Hash(TileId::new(0, 1, 194)))
        .await
        .unwrap();
    assert_eq!(tile_hashes(&t1.data).unwrap(), hashes[256..].to_vec());
    // An older, narrower width of a partial tile is served truncated.
    let t1_old = engine
        .tile(LOG, TilePath::Hash(TileId::new(0, 1, 44)))
        .await
        .unwrap();
    assert_eq!(t1_old.data, t1.data.slice(..44 * 32));
    let l1 = engine
        .tile(LOG, TilePath::Hash(TileId::new(1, 0, 1)))
        .await
        .unwrap();
    assert_eq!(
        tile_hashes(&l1.data).unwrap(),
        vec![stele_core::merkle::root_of(&hashes[..256])]
    );

    for missing in [
        TilePath::Hash(TileId::new(0, 1, 195)),
        TilePath::Hash(TileId::new(0, 2, 1)),
        TilePath::Hash(TileId::new(1, 0, 2)),
        TilePath::Hash(TileId::new(2, 0, 1)),
        TilePath::Entries(TileId::new(0, 1, 200)),
    ] {
        assert!(
            matches!(engine.tile(LOG, missing).await, Err(LogError::NotFound(_))),
            "{missing:?}"
        );
    }

    // Proofs at older sizes, with the checkpoint the log signed there.
    let latest = note::open_checkpoint(&engine.checkpoint(LOG).await.unwrap(), &v).unwrap();
    assert_eq!(latest.root, stele_core::merkle::root_of(&hashes));
    for &old in &sizes {
        let p = engine
            .inclusion_proof(LOG, Locator::LeafHash(hashes[100]), Some(old))
            .await
            .unwrap();
        let cp = note::open_checkpoint(p.checkpoint.as_deref().unwrap(), &v).unwrap();
        assert_eq!(cp.size, old);
        verify_inclusion(&hashes[100], 100, old, &p.proof, &cp.root).unwrap();
        assert_eq!(
            cp.root,
            stele_core::merkle::root_of(&hashes[..old as usize])
        );
    }
    let p = engine
        .inclusion_proof(LOG, Locator::Index(300), Some(301))
        .await
        .unwrap();
    assert!(p.checkpoint.is_none());
    verify_inclusion(
        &hashes[300],
        300,
        301,
        &p.proof,
        &stele_core::merkle::root_of(&hashes[..301]),
    )
    .unwrap();
    let c = engine.consistency_proof(LOG, 7, Some(300)).await.unwrap();
    verify_consistency(
        7,
        300,
        &stele_core::merkle::root_of(&hashes[..7]),
        &stele_core::merkle::root_of(&hashes[..300]),
        &c.proof,
    )
    .unwrap();

    let invalid = |r: Result<InclusionProof, LogError>| matches!(r, Err(LogError::Invalid { .. }));
    assert!(invalid(
        engine.inclusion_proof(LOG, Locator::Index(450), None).await
    ));
    assert!(invalid(
        engine
            .inclusion_proof(LOG, Locator::Index(5), Some(451))
            .await
    ));
    assert!(invalid(
        engine
            .inclusion_proof(LOG, Locator::Index(5), Some(5))
            .await
    ));
    assert!(matches!(
        engine.consistency_proof(LOG, 10, Some(9)).await,
        Err(LogError::Invalid { .. })
    ));
    assert!(matches!(
        engine.consistency_proof(LOG, 1, Some(451)).await,
        Err(LogError::Invalid { .. })
    ));
    assert!(matches!(
        engine
            .inclusion_proof(LOG, Locator::LeafHash(Hash([7; 32])), None)
            .await,
        Err(LogError::NotFound(_))
    ));
    assert!(matches!(
        engine.entry(LOG, 450).await,
        Err(LogError::NotFound(_))
    ));
    assert_eq!(
        engine
            .entry_by_leaf_hash(LOG, &hashes[3])
            .await
            .unwrap()
            .index,
        3
    );
    // Full tiles and bundles are held in the cache: reading them again
    // reads nothing from storage.
    let full = [
        TilePath::Hash(TileId::new(0, 0, 256)),
        TilePath::Entries(TileId::new(0, 0, 256)),
    ];
    for path in full {
        engine.tile(LOG, path).await.unwrap();
    }
    let reads = || {
        (
            s.faults.tiles_read.load(Ordering::SeqCst),
            s.faults.entries_read.load(Ordering::SeqCst),
        )
    };
    let before = reads();
    for path in full {
        assert!(engine.tile(LOG, path).await.unwrap().immutable);
    }
    assert_eq!(reads(), before);
    check_log(&engine).await;
    engine.shutdown().await;
}

/// With a memory tier too small to hold anything, full tiles live in the
/// disk tier: put there by the receipts of their batch, or by the first
/// proof that had to read them from storage after a restart. Without the
/// disk tier every proof goes back to storage. Every proof verifies.
#[tokio::test]
async fn disk_tier_keeps_proofs_off_storage() {
    let s = Setup::new().await;
    let dir = tempfile::tempdir().unwrap();
    let tiny = |disk: bool| EngineConfig {
        cache_bytes: 0,
        disk_cache: disk.then(|| (dir.path().to_path_buf(), 1 << 20)),
        ..config()
    };
    let engine = s.engine(tiny(true)).await;
    let agency = s.signed_in(&engine, "land", &[]).await;
    for chunk in (0..1100).collect::<Vec<_>>().chunks(500) {
        engine
            .submit_bulk(LOG, &agency, chunk.iter().map(|&i| rec(i)).collect())
            .await
            .unwrap();
    }
    let v = verifier(&engine).await;
    let size = engine.logs().await[0].tree_size;
    assert_eq!(size, 1100);
    let cp = note::open_checkpoint(&engine.checkpoint(LOG).await.unwrap(), &v).unwrap();
    let prove_all = |engine: Arc<Engine>| async move {
        for i in 0..size {
            let p = engine
                .inclusion_proof(LOG, Locator::Index(i), None)
                .await
                .unwrap();
            verify_inclusion(&p.leaf_hash, i, size, &p.proof, &cp.root).unwrap();
        }
    };
    let reads = || s.faults.tiles_read.load(Ordering::SeqCst);

    let start = reads();
    prove_all(engine.clone()).await;
    assert_eq!(
        reads(),
        start,
        "the receipts put the full tiles in the disk tier"
    );
    engine.shutdown().await;

    // A restart starts with an empty tier: each of the four full level-0
    // tiles is read from storage once, then served from disk (proofs and
    // tile reads alike); the partial tiles are the writer's own.
    let engine = s.engine(tiny(true)).await;
    let start = reads();
    prove_all(engine.clone()).await;
    assert_eq!(reads() - start, 4);
    prove_all(engine.clone()).await;
    let t = engine
        .tile(LOG, TilePath::Hash(TileId::new(0, 2, 256)))
        .await
        .unwrap();
    assert_eq!(t.data.len(), 256 * 32);
    assert_eq!(reads() - start, 4);
    engine.shutdown().await;

    let engine = s.engine(tiny(false)).await;
    let start = reads();
    prove_all(engine.clone()).await;
    assert_eq!(
        reads() - start,
        1024,
        "without the disk tier, every proof in a full tile reads it again"
    );
    engine.shutdown().await;
}

#[tokio::test]
async fn shutdown_stops_taking_submissions() {
    let s = Setup::new().await;
    let engine = s.engine(config()).await;
    let agency = s.signed_in(&engine, "land", &[]).await;
    engine.submit(LOG, &agency, rec(0)).await.unwrap();
    engine.shutdown().await;
    assert!(matches!(
        engine.submit(LOG, &agency, rec(1)).await,
        Err(LogError::Pushback { .. })
    ));
    assert!(engine.ready().await.is_err());
    // Reads still answer.
    assert_eq!(engine.entry(LOG, 0).await.unwrap().index, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_reads_only_until_it_gets_the_lease() {
    let s = Setup::new().await;
    let first = s.engine(config()).await;
    let agency = s.signed_in(&first, "land", &[]).await;
    first.submit(LOG, &agency, rec(0)).await.unwrap();

    let second = s.engine_on(s.another_process().await, config()).await;
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
    first.submit(LOG, &agency, rec(1)).await.unwrap();
    first.shutdown().await;

    // The second takes over, reloads the state the first left, and continues.
    let sub = retry_submit(&second, &agency, rec(2)).await;
    assert_eq!((sub.receipt().index, sub.created), (2, true));
    assert_eq!(second.ready().await, Ok(()));
    check_log(&second).await;
    second.shutdown().await;
}

/// Throughput through `Engine::submit` on SQLite (run with `--ignored
/// --nocapture`; prints records/s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, not a check"]
async fn throughput_sqlite() {
    let s = Setup::new().await;
    let engine = s.engine(EngineConfig::default()).await;
    let agency = s.signed_in(&engine, "load", &[]).await;
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
    engine.shutdown().await;
}
