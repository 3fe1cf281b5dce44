//! Reads: entries by range and by leaf hash, dedup keys per log, tiles that
//! never narrow, stored checkpoints, and readers that never see part of a
//! batch while batches commit.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{ensure, Context};
use stele::storage::{Storage, StoredEntry};
use stele_core::tile::TileId;
use stele_core::Hash;
use stele_testkit::checker::{LogChecker, StorageView};
use stele_testkit::harness::{TestFn, TestResult};
use stele_testkit::synthetic::{entry, TestLog};

use super::{Ctx, LOG};

pub const TESTS: &[(&str, TestFn<Ctx>)] = stele_testkit::tests![Ctx:
    entries_by_range_and_by_leaf_hash,
    dedup_lookup,
    tiles_never_narrow,
    checkpoints_are_stored_and_listed,
    witnessed_checkpoint_only_moves_forward,
    readers_never_see_a_partial_batch,
];

async fn entries_by_range_and_by_leaf_hash(mut ctx: Ctx) -> TestResult {
    let s = ctx.open_log().await?;
    s.ensure_log("other", "records.example.gov/other").await?;
    ctx.commit(&*s, 50).await?;
    ctx.check(&s).await?;
    let got = s.read_entries(LOG, 10, 20).await?;
    ensure!(
        got.iter().map(|e| e.index).eq(10..20),
        "range 10..20: {:?}",
        got.len()
    );
    ensure!(got[0].leaf == entry(10, "a").leaf, "leaf bytes");
    ensure!(
        s.read_entries(LOG, 45, 60).await?.len() == 5,
        "range past the end"
    );
    ensure!(s.read_entries(LOG, 20, 20).await?.is_empty(), "empty range");
    ensure!(
        s.read_entries(LOG, 30, 10).await?.is_empty(),
        "reversed range"
    );
    ensure!(
        s.read_entries(LOG, u64::MAX - 1, u64::MAX)
            .await?
            .is_empty(),
        "range beyond 2^63"
    );
    ensure!(
        s.read_entries("other", 0, 50).await?.is_empty(),
        "other log sees entries"
    );
    let e = entry(42, "a");
    let found = s
        .entry_by_leaf_hash(LOG, &e.leaf_hash)
        .await?
        .context("by leaf hash")?;
    ensure!(
        found.index == 42 && found.leaf == e.leaf,
        "wrong entry {}",
        found.index
    );
    ensure!(
        s.entry_by_leaf_hash("other", &e.leaf_hash).await?.is_none(),
        "other log"
    );
    ensure!(
        s.entry_by_leaf_hash(LOG, &Hash([7; 32])).await?.is_none(),
        "unknown hash"
    );
    // The same leaf twice (different dedup keys): the lowest index answers.
    let twice = (50..52)
        .map(|i| stele::storage::NewEntry {
            leaf: e.leaf.clone(),
            leaf_hash: e.leaf_hash,
            ..entry(i, "b")
        })
        .collect();
    let p = ctx.log.prepare_entries(twice);
    s.commit_batch(&p.batch()).await?;
    ctx.log.accept(p);
    ctx.check(&s).await?;
    let found = s
        .entry_by_leaf_hash(LOG, &e.leaf_hash)
        .await?
        .context("by leaf hash")?;
    ensure!(
        found.index == 42,
        "lowest index expected, got {}",
        found.index
    );
    ctx.finish().await
}

async fn dedup_lookup(mut ctx: Ctx) -> TestResult {
    let s = ctx.open_log().await?;
    s.ensure_log("other", "records.example.gov/other").await?;
    ctx.commit(&*s, 1200).await?;
    ctx.check(&s).await?;
    ensure!(s.find_dedup(LOG, &[]).await?.is_empty(), "no keys");
    let keys: Vec<Hash> = (0..1200)
        .step_by(3)
        .map(|i| entry(i, "a").dedup_key)
        .collect();
    let mut asked = keys.clone();
    asked.push(Hash([9; 32]));
    let mut got = s.find_dedup(LOG, &asked).await?;
    got.sort_by_key(|(_, e)| e.index);
    // Each key with its entry as stored: the index, the exact leaf, its hash.
    let want: Vec<(Hash, StoredEntry)> = (0..1200)
        .step_by(3)
        .map(|i| {
            let e = entry(i, "a");
            let stored = StoredEntry {
                index: i,
                leaf: e.leaf.to_vec(),
                leaf_hash: e.leaf_hash,
            };
            (e.dedup_key, stored)
        })
        .collect();
    ensure!(got == want, "found {} of {} keys", got.len(), want.len());
    ensure!(
        s.find_dedup("other", &keys).await?.is_empty(),
        "keys leak across logs"
    );
    // The same key in another log is another entry, found in that log only.
    let mut other = TestLog::new("other", "records.example.gov/other");
    other
        .commit(&*s, 3, "a")
        .await
        .context("same dedup keys in another log")?;
    let got = s.find_dedup("other", &keys[..1]).await?;
    ensure!(
        got.len() == 1 && got[0].0 == keys[0] && got[0].1.index == 0,
        "other log: {got:?}"
    );
    let got = s.find_dedup(LOG, &keys[..1]).await?;
    ensure!(got == vec![want[0].clone()], "first log still: {got:?}");
    LogChecker::new(StorageView::new(s.clone(), "other"), &other.vkey())?
        .check_all()
        .await
        .context("the other log")?;
    ctx.done(&s).await
}

async fn tiles_never_narrow(mut ctx: Ctx) -> TestResult {
    let s = ctx.open_log().await?;
    let stored = |tiles: &'static [(u8, u64)]| {
        let s = s.clone();
        async move { s.read_tiles(LOG, tiles).await }
    };
    let widths = |t: &[Option<Vec<u8>>]| -> Vec<Option<usize>> {
        t.iter().map(|d| d.as_ref().map(|d| d.len() / 32)).collect()
    };
    // 300 entries: 0/0 full, 0/1 of 44, 1/0 of 1.
    ctx.commit(&*s, 300).await?;
    ctx.check(&s).await?;
    let full = stored(&[(0, 0)]).await?.remove(0).context("tile 0/0")?;

    // A batch that also carries an older, narrower 0/0 (its first 10
    // hashes): ignored; 0/1 grows to 45.
    let mut p = ctx.log.prepare(1, "a");
    p.tiles
        .push((TileId::new(0, 0, 10), full[..10 * 32].to_vec()));
    s.commit_batch(&p.batch()).await?;
    ctx.log.accept(p);
    let got = stored(&[(0, 0), (1, 0), (2, 0), (0, 2)]).await?;
    ensure!(
        widths(&got) == [Some(256), Some(1), None, None] && got[0].as_ref() == Some(&full),
        "after a narrowing attempt: widths {:?}",
        widths(&got)
    );
    ctx.check(&s).await?;

    // Same width, different bytes: the stored tile is kept as it is.
    let mut p = ctx.log.prepare(1, "a");
    let mut other = full.clone();
    other[0] ^= 1;
    p.tiles.push((TileId::new(0, 0, 256), other));
    s.commit_batch(&p.batch()).await?;
    ctx.log.accept(p);
    ensure!(
        stored(&[(0, 0)]).await? == vec![Some(full.clone())],
        "same-width tile rewritten"
    );
    ctx.check(&s).await?;

    // Growing to 520: 0/1 becomes full, 0/2 appears, and the wider level-1
    // tile (2 hashes) replaces the old one.
    ctx.commit(&*s, 218).await?;
    let got = stored(&[(0, 2), (0, 1), (0, 1), (1, 0)]).await?;
    ensure!(
        widths(&got) == [Some(8), Some(256), Some(256), Some(2)],
        "after growing: widths {:?}",
        widths(&got)
    );
    ctx.check(&s).await?;
    ensure!(s.read_tiles(LOG, &[]).await?.is_empty(), "no tiles asked");
    ensure!(
        s.read_tiles("other", &[(0, 0)]).await? == vec![None],
        "unknown log"
    );
    ctx.finish().await
}

async fn checkpoints_are_stored_and_listed(mut ctx: Ctx) -> TestResult {
    let s = ctx.open_log().await?;
    // An empty log's first checkpoint (size 0) is a batch with no entries.
    for n in [0, 1, 7, 300] {
        ctx.commit(&*s, n).await?;
        ctx.check(&s).await?;
    }
    let listed = s.checkpoints(LOG).await?;
    ensure!(
        listed.iter().map(|(size, _)| *size).eq([0, 1, 8, 308]) && listed == ctx.log.checkpoints(),
        "checkpoints listed"
    );
    let note_8 = ctx.log.checkpoints()[2].1.clone();
    ensure!(
        s.checkpoint_at(LOG, 8).await? == Some(note_8),
        "checkpoint_at 8"
    );
    ensure!(
        s.checkpoint_at(LOG, 5).await?.is_none(),
        "no checkpoint at 5"
    );
    ensure!(s.checkpoint_at(LOG, u64::MAX).await?.is_none(), "huge size");
    ensure!(s.checkpoints("other").await?.is_empty(), "unknown log");
    ctx.finish().await
}

/// The latest witnessed checkpoint: durable, never moved back, never
/// beyond the tree, replaced at the same size (newer cosignatures).
async fn witnessed_checkpoint_only_moves_forward(mut ctx: Ctx) -> TestResult {
    let s = ctx.open_log().await?;
    ensure!(
        s.witnessed_checkpoint(LOG).await?.is_none(),
        "none at first"
    );
    ctx.commit(&*s, 10).await?;
    ensure!(s.store_witnessed(LOG, 4, "at 4\n").await?, "store at 4");
    ensure!(
        s.witnessed_checkpoint(LOG).await? == Some((4, "at 4\n".into())),
        "read back at 4"
    );
    ensure!(
        !s.store_witnessed(LOG, 3, "at 3\n").await?,
        "a smaller size is refused"
    );
    ensure!(
        !s.store_witnessed(LOG, 11, "at 11\n").await?,
        "beyond the tree is refused"
    );
    ensure!(
        s.store_witnessed(LOG, 4, "at 4 again\n").await?,
        "the same size replaces"
    );
    ensure!(s.store_witnessed(LOG, 10, "at 10\n").await?, "store at 10");
    ensure!(!s.store_witnessed("other", 0, "x\n").await?, "unknown log");
    ctx.close_all().await;
    let s = ctx.open().await?;
    ensure!(
        s.witnessed_checkpoint(LOG).await? == Some((10, "at 10\n".into())),
        "durable across a reopen"
    );
    ensure!(
        s.witnessed_checkpoint("other").await?.is_none(),
        "unknown log reads none"
    );
    ctx.finish().await
}

async fn readers_never_see_a_partial_batch(mut ctx: Ctx) -> TestResult {
    const BATCH: u64 = 40;
    const BATCHES: u64 = 30;
    let s = ctx.open_log().await?;
    let done = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..3 {
        let (s, done) = (s.clone(), done.clone());
        readers.push(tokio::spawn(async move {
            let mut looks = 0u32;
            while !done.load(Ordering::SeqCst) {
                look(&*s).await?;
                looks += 1;
            }
            Ok::<_, anyhow::Error>(looks)
        }));
    }
    for _ in 0..BATCHES {
        ctx.commit(&*s, BATCH).await?;
    }
    done.store(true, Ordering::SeqCst);
    for r in readers {
        let looks = r.await??;
        ensure!(looks > 0, "a reader never looked");
    }
    ctx.done(&s).await
}

/// One reader's look at a log that grows by batches of 40: it must see
/// whole batches only, and everything the state says is there.
async fn look(s: &dyn Storage) -> anyhow::Result<()> {
    const BATCH: u64 = 40;
    let cps = s.checkpoints(LOG).await?;
    let st = s.log_state(LOG).await?.context("log")?;
    let entries = s.read_entries(LOG, 0, u64::MAX).await?;
    let n = entries.len() as u64;
    ensure!(n.is_multiple_of(BATCH), "saw {n} entries: a partial batch");
    ensure!(
        entries.iter().map(|e| e.index).eq(0..n),
        "entries not contiguous"
    );
    let newest = cps.last().map_or(0, |c| c.0);
    ensure!(
        st.tree_size >= newest,
        "size {} < checkpoint {newest}",
        st.tree_size
    );
    ensure!(
        n >= st.tree_size,
        "size {} but only {n} entries",
        st.tree_size
    );
    if st.tree_size > 0 {
        let cp = s.checkpoint_at(LOG, st.tree_size).await?;
        ensure!(
            cp == st.checkpoint,
            "checkpoint at {} missing",
            st.tree_size
        );
        let t = (st.tree_size - 1) / 256;
        let tile = s
            .read_tiles(LOG, &[(0, t)])
            .await?
            .remove(0)
            .context("tile")?;
        ensure!(
            tile.len() as u64 >= (st.tree_size - t * 256) * 32,
            "narrow tile"
        );
    }
    Ok(())
}
