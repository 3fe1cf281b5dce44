//! Reads: tiles and bundles against what a client rebuilds, proofs at older
//! sizes, bad requests, the cache, and the disk tier that keeps proofs off
//! storage.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use stele::engine::{Engine, EngineConfig, InclusionProof, Locator, LogError};
use stele::records::Record;
use stele_core::merkle::{root_of, verify_consistency, verify_inclusion};
use stele_core::note;
use stele_core::tile::{decode_bundle, tile_hashes, TileId, TilePath};
use stele_core::{leaf_hash, Hash};
use stele_testkit::harness::{TestFn, TestResult};

use super::{config, rec, Ctx, LOG};

pub const TESTS: &[(&str, TestFn<Ctx>)] = stele_testkit::tests![Ctx:
    tiles_match_what_a_client_rebuilds_from_bundles,
    disk_tier_keeps_proofs_off_storage,
];

async fn tiles_match_what_a_client_rebuilds_from_bundles(mut s: Ctx) -> TestResult {
    let (engine, agency) = s.writer(config()).await?;
    let v = s.verifier();
    let mut sizes = Vec::new();
    for chunk in 0..3 {
        let batch: Vec<Record> = (0..150).map(|i| rec(chunk * 150 + i)).collect();
        let subs = engine.submit_bulk(LOG, &agency, batch).await.unwrap();
        s.check_with(&engine, &subs).await?;
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
        vec![root_of(&hashes[..256])]
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
    assert_eq!(latest.root, root_of(&hashes));
    for &old in &sizes {
        let p = engine
            .inclusion_proof(LOG, Locator::LeafHash(hashes[100]), Some(old))
            .await
            .unwrap();
        let cp = note::open_checkpoint(p.checkpoint.as_deref().unwrap(), &v).unwrap();
        assert_eq!(cp.size, old);
        verify_inclusion(&hashes[100], 100, old, &p.proof, &cp.root).unwrap();
        assert_eq!(cp.root, root_of(&hashes[..old as usize]));
    }
    let p = engine
        .inclusion_proof(LOG, Locator::Index(300), Some(301))
        .await
        .unwrap();
    assert!(p.checkpoint.is_none());
    verify_inclusion(&hashes[300], 300, 301, &p.proof, &root_of(&hashes[..301])).unwrap();
    let c = engine.consistency_proof(LOG, 7, Some(300)).await.unwrap();
    verify_consistency(
        7,
        300,
        &root_of(&hashes[..7]),
        &root_of(&hashes[..300]),
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
    s.done(&engine, []).await
}

/// The leaf hashes of `range`, concatenated (a level-0 tile's bytes), from
/// inclusion proofs.
async fn leaf_hashes(engine: &Engine, range: std::ops::Range<u64>) -> Vec<u8> {
    let mut out = Vec::new();
    for i in range {
        let p = engine
            .inclusion_proof(LOG, Locator::Index(i), None)
            .await
            .unwrap();
        out.extend_from_slice(&p.leaf_hash.0);
    }
    out
}

/// With a memory tier too small to hold anything, full tiles live in the
/// disk tier: put there by the receipts of their batch, or by the first
/// proof that had to read them from storage after a restart. Without the
/// disk tier every proof goes back to storage. Every proof verifies.
async fn disk_tier_keeps_proofs_off_storage(mut s: Ctx) -> TestResult {
    let dir = tempfile::tempdir().unwrap();
    let tiny = |disk: bool| EngineConfig {
        cache_bytes: 0,
        disk_cache: disk.then(|| (dir.path().to_path_buf(), 1 << 20)),
        ..config()
    };
    let engine = s.engine(tiny(true)).await?;
    let agency = s.signed_in(&engine, "land", &[]).await?;
    for chunk in (0..1100).collect::<Vec<_>>().chunks(500) {
        let subs = engine
            .submit_bulk(LOG, &agency, chunk.iter().map(|&i| rec(i)).collect())
            .await
            .unwrap();
        s.keep(&subs);
    }
    let v = s.verifier();
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
    let engine = s.engine(tiny(true)).await?;
    // Prove on the writer, once it has recovered: under a loaded test run
    // the restarted engine may still be starting (or waiting for the old
    // lease) when the first proof arrives.
    for _ in 0..100 {
        if engine.ready().await.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        engine.ready().await,
        Ok(()),
        "the restarted engine is the writer"
    );
    let start = reads();
    prove_all(engine.clone()).await;
    assert_eq!(reads() - start, 4);
    prove_all(engine.clone()).await;
    let t = engine
        .tile(LOG, TilePath::Hash(TileId::new(0, 2, 256)))
        .await
        .unwrap();
    assert_eq!(t.data[..], leaf_hashes(&engine, 512..768).await[..]);
    assert_eq!(reads() - start, 4);
    engine.shutdown().await;

    // Restarted again: a tile served first (its bytes from storage, its
    // interior computed for the disk tier, not kept in memory) is in the
    // disk tier for the proofs that come after it.
    let engine = s.engine(tiny(true)).await?;
    for _ in 0..100 {
        if engine.ready().await.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let start = reads();
    let t = engine
        .tile(LOG, TilePath::Hash(TileId::new(0, 1, 256)))
        .await
        .unwrap();
    assert_eq!(reads() - start, 1, "the tile from storage");
    for i in 256..512 {
        let p = engine
            .inclusion_proof(LOG, Locator::Index(i), None)
            .await
            .unwrap();
        verify_inclusion(&p.leaf_hash, i, size, &p.proof, &cp.root).unwrap();
    }
    assert_eq!(reads() - start, 1, "its proofs from the disk tier");
    assert_eq!(t.data[..], leaf_hashes(&engine, 256..512).await[..]);
    engine.shutdown().await;

    let engine = s.engine(tiny(false)).await?;
    let start = reads();
    prove_all(engine.clone()).await;
    assert_eq!(
        reads() - start,
        1024,
        "without the disk tier, every proof in a full tile reads it again"
    );
    // Checked last: the checker's reads would count above.
    s.done(&engine, []).await
}
