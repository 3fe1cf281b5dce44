//! The storage contract (`src/storage/mod.rs`), run once per backend:
//! SQLite on a fresh temporary directory, PostgreSQL on a fresh database per
//! test. When PostgreSQL is unreachable its tests are reported as ignored
//! with the reason printed, or fail under `STELE_REQUIRE_POSTGRES=1`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context};
use libtest_mimic::{Arguments, Completion, Failed, Trial};
use sha2::{Digest, Sha256};
use stele::storage::postgres::{PgOptions, PostgresStorage};
use stele::storage::sqlite::SqliteStorage;
use stele::storage::{
    AgencyRecord, Batch, LogReader, LogState, LogWriter, NewEntry, Storage, StorageError,
    StoredEntry, WriterLease,
};
use stele_core::tile::TileId;
use stele_core::Hash;
use stele_testkit::faults::{Faults, Faulty};
use stele_testkit::pg::{fresh_database, pg_policy, PgPolicy, TestDb};

const LOG: &str = "land";
const ORIGIN: &str = "records.example.gov/land";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Sqlite,
    Postgres,
}

/// Where one test's database lives; `open` makes a new storage on it.
struct Fixture {
    kind: Kind,
    dir: tempfile::TempDir,
    pg: Option<TestDb>,
}

/// An opened storage, closable so a test can reopen the same database.
enum Opened {
    Sqlite(Arc<SqliteStorage>),
    Postgres(Arc<PostgresStorage>),
}

impl Opened {
    fn s(&self) -> Arc<dyn Storage> {
        match self {
            Opened::Sqlite(s) => s.clone(),
            Opened::Postgres(s) => s.clone(),
        }
    }
    async fn close(self) {
        match self {
            Opened::Sqlite(s) => s.close().await,
            Opened::Postgres(s) => s.close().await,
        }
    }
}

impl Fixture {
    async fn new(kind: Kind) -> anyhow::Result<Self> {
        let pg = match kind {
            Kind::Postgres => Some(fresh_database().await?),
            Kind::Sqlite => None,
        };
        Ok(Fixture {
            kind,
            dir: tempfile::tempdir()?,
            pg,
        })
    }

    async fn open(&self) -> anyhow::Result<Opened> {
        Ok(match self.kind {
            Kind::Sqlite => Opened::Sqlite(Arc::new(
                SqliteStorage::open(&self.dir.path().join("stele.db")).await?,
            )),
            Kind::Postgres => {
                let url = &self.pg.as_ref().expect("postgres fixture").url;
                let opts = PgOptions {
                    lease_check_interval: Duration::from_millis(200),
                    ..Default::default()
                };
                Opened::Postgres(Arc::new(PostgresStorage::connect(url, opts).await?))
            }
        })
    }

    async fn finish(self) -> anyhow::Result<()> {
        if let Some(db) = self.pg {
            db.drop_db().await?;
        }
        Ok(())
    }
}

fn sha(parts: &[&[u8]]) -> Hash {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    Hash(h.finalize().into())
}

/// Entry `i` of a test log: a ~300-byte leaf, its RFC 6962 leaf hash and a dedup key.
fn entry(i: u64, tag: &str) -> NewEntry {
    let leaf = format!(
        r#"{{"agency":"{tag}","attributes":{{"pad":"{}"}},"subject":"parcel-{i}","type":"land.transfer","v":1}}"#,
        "x".repeat(200)
    )
    .into_bytes();
    NewEntry {
        index: i,
        leaf_hash: sha(&[&[0], &leaf]),
        dedup_key: sha(&[tag.as_bytes(), &[0], &i.to_be_bytes()]),
        leaf: leaf.into(),
        ts_ms: 1_700_000_000_000 + i as i64,
    }
}

/// Deterministic contents of hash tile (level, index) at `width`.
fn tile_data(level: u8, index: u64, width: u16) -> Vec<u8> {
    (0..width)
        .flat_map(|j| sha(&[&[level], &index.to_be_bytes(), &j.to_be_bytes()]).0)
        .collect()
}

/// The level-0 hash tiles that change from `old` to `new` leaves.
fn level0_tiles(old: u64, new: u64) -> Vec<(TileId, Vec<u8>)> {
    if new <= old {
        return Vec::new();
    }
    (old / 256..=(new - 1) / 256)
        .map(|n| {
            let w = (new - n * 256).min(256) as u16;
            (TileId::new(0, n, w), tile_data(0, n, w))
        })
        .collect()
}

fn note(size: u64) -> String {
    format!("{ORIGIN}\n{size}\nroot-{size}\n\n— test sig{size}\n")
}

/// Everything a batch borrows, owned.
struct Parts {
    old: u64,
    new: u64,
    entries: Vec<NewEntry>,
    tiles: Vec<(TileId, Vec<u8>)>,
    checkpoint: String,
}

impl Parts {
    fn new(old: u64, n: u64, tag: &str) -> Self {
        let new = old + n;
        Parts {
            old,
            new,
            entries: (old..new).map(|i| entry(i, tag)).collect(),
            tiles: level0_tiles(old, new),
            checkpoint: note(new),
        }
    }
    fn batch(&self) -> Batch<'_> {
        Batch {
            log: LOG,
            old_size: self.old,
            new_size: self.new,
            entries: &self.entries,
            tiles: &self.tiles,
            checkpoint: &self.checkpoint,
            root: sha(&[self.checkpoint.as_bytes()]),
        }
    }
}

async fn commit(s: &dyn Storage, old: u64, n: u64) -> anyhow::Result<()> {
    Ok(s.commit_batch(&Parts::new(old, n, "a").batch()).await?)
}

/// Checks the whole stored log against what `size` leaves from tag "a" must look like.
async fn check_log(s: &dyn Storage, size: u64) -> anyhow::Result<()> {
    let st = s.log_state(LOG).await?.context("log missing")?;
    ensure!(st.tree_size == size, "tree size {} != {size}", st.tree_size);
    if size > 0 {
        ensure!(
            st.checkpoint.as_deref() == Some(note(size).as_str()),
            "latest checkpoint"
        );
        ensure!(
            st.last_ts_ms == entry(size - 1, "a").ts_ms,
            "last_ts {}",
            st.last_ts_ms
        );
    }
    let got = s.read_entries(LOG, 0, u64::MAX).await?;
    let want: Vec<StoredEntry> = (0..size)
        .map(|i| {
            let e = entry(i, "a");
            StoredEntry {
                index: i,
                leaf: e.leaf.to_vec(),
                leaf_hash: e.leaf_hash,
            }
        })
        .collect();
    ensure!(
        got == want,
        "entries differ: {} stored, {size} expected",
        got.len()
    );
    let ids: Vec<(u8, u64)> = (0..size.div_ceil(256)).map(|n| (0, n)).collect();
    let tiles = s.read_tiles(LOG, &ids).await?;
    for (&(l, n), t) in ids.iter().zip(&tiles) {
        let w = (size - n * 256).min(256) as u16;
        ensure!(
            t.as_deref() == Some(tile_data(l, n, w).as_slice()),
            "tile {l}/{n} at width {w}"
        );
    }
    Ok(())
}

type TestFn = fn(Fixture) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

macro_rules! tests {
    ($($name:ident),* $(,)?) => {
        &[$((stringify!($name), {
            fn wrap(f: Fixture) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>> {
                Box::pin($name(f))
            }
            wrap as TestFn
        })),*]
    };
}

#[path = "storage_contract/pg_outage.rs"]
mod pg_outage;
use pg_outage::outage_answers_unavailable_then_recovers;

/// PostgreSQL-only tests.
const PG_TESTS: &[(&str, TestFn)] = tests![outage_answers_unavailable_then_recovers];

const TESTS: &[(&str, TestFn)] = tests![
    ensure_log_is_idempotent_and_keeps_its_origin,
    commit_batch_is_visible_as_a_whole,
    cas_conflict_changes_nothing,
    failed_batch_rolls_back_entirely,
    malformed_batch_is_rejected,
    racing_writers_from_one_size_one_wins,
    entries_by_range_and_by_leaf_hash,
    dedup_lookup,
    tiles_never_narrow,
    checkpoints_are_stored_and_listed,
    agencies_add_list_get_revoke,
    durable_across_reopen,
    writer_lease_is_exclusive,
    readers_never_see_a_partial_batch,
    lost_acknowledgement_is_seen_on_reload,
];

async fn ensure_log_is_idempotent_and_keeps_its_origin(f: Fixture) -> anyhow::Result<()> {
    let o = f.open().await?;
    let s = o.s();
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
    commit(&*s, 0, 3).await?;
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
    o.close().await;
    f.finish().await
}

async fn commit_batch_is_visible_as_a_whole(f: Fixture) -> anyhow::Result<()> {
    let o = f.open().await?;
    let s = o.s();
    s.ensure_log(LOG, ORIGIN).await?;
    commit(&*s, 0, 300).await?;
    check_log(&*s, 300).await?;
    commit(&*s, 300, 1).await?;
    check_log(&*s, 301).await?;
    commit(&*s, 301, 1000).await?;
    check_log(&*s, 1301).await?;
    o.close().await;
    f.finish().await
}

async fn cas_conflict_changes_nothing(f: Fixture) -> anyhow::Result<()> {
    let o = f.open().await?;
    let s = o.s();
    s.ensure_log(LOG, ORIGIN).await?;
    commit(&*s, 0, 10).await?;
    // A writer that still believes the log is at 5 (or at 0) must not move it.
    for stale in [0, 5, 11] {
        let p = Parts::new(stale, 10, "stale");
        match s.commit_batch(&p.batch()).await {
            Err(StorageError::Conflict(_)) => {}
            r => bail!("stale commit from {stale}: {r:?}"),
        }
    }
    check_log(&*s, 10).await?;
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
    let mut p = Parts::new(0, 1, "x");
    p.checkpoint = note(1);
    let b = Batch {
        log: "nope",
        ..p.batch()
    };
    ensure!(
        matches!(s.commit_batch(&b).await, Err(StorageError::Conflict(_))),
        "unknown log"
    );
    o.close().await;
    f.finish().await
}

async fn failed_batch_rolls_back_entirely(f: Fixture) -> anyhow::Result<()> {
    let o = f.open().await?;
    let s = o.s();
    s.ensure_log(LOG, ORIGIN).await?;
    commit(&*s, 0, 10).await?;
    // The last entry repeats a stored dedup key: the CAS and the other rows
    // were already written inside the transaction, and must all roll back.
    let mut p = Parts::new(10, 300, "a");
    p.entries.last_mut().unwrap().dedup_key = entry(3, "a").dedup_key;
    match s.commit_batch(&p.batch()).await {
        Err(StorageError::Duplicate(_)) => {}
        r => bail!("duplicate dedup key: {r:?}"),
    }
    check_log(&*s, 10).await?;
    ensure!(
        s.checkpoint_at(LOG, 310).await?.is_none(),
        "checkpoint of failed batch"
    );
    ensure!(
        s.read_tiles(LOG, &[(0, 1)]).await? == vec![None],
        "tile of failed batch"
    );
    commit(&*s, 10, 300).await?;
    check_log(&*s, 310).await?;
    o.close().await;
    f.finish().await
}

async fn malformed_batch_is_rejected(f: Fixture) -> anyhow::Result<()> {
    let o = f.open().await?;
    let s = o.s();
    s.ensure_log(LOG, ORIGIN).await?;
    commit(&*s, 0, 4).await?;
    let mut gap = Parts::new(4, 3, "a");
    gap.entries[1].index = 9;
    let mut short = Parts::new(4, 3, "a");
    short.new = 8;
    for p in [gap, short] {
        match s.commit_batch(&p.batch()).await {
            Err(StorageError::Other(_)) => {}
            r => bail!("malformed batch: {r:?}"),
        }
    }
    check_log(&*s, 4).await?;
    o.close().await;
    f.finish().await
}

async fn racing_writers_from_one_size_one_wins(f: Fixture) -> anyhow::Result<()> {
    let (a, b) = (f.open().await?, f.open().await?);
    a.s().ensure_log(LOG, ORIGIN).await?;
    commit(&*a.s(), 0, 5).await?;
    for round in 0..5u64 {
        let old = 5 + round * 100;
        let (sa, sb) = (a.s(), b.s());
        let ta = tokio::spawn(async move { commit(&*sa, old, 100).await });
        let tb = tokio::spawn(async move { commit(&*sb, old, 100).await });
        let results = [ta.await?, tb.await?];
        let wins = results.iter().filter(|r| r.is_ok()).count();
        ensure!(wins == 1, "round {round}: {wins} writers won: {results:?}");
        for r in results.iter().filter_map(|r| r.as_ref().err()) {
            let e = r.downcast_ref::<StorageError>();
            ensure!(
                matches!(e, Some(StorageError::Conflict(_))),
                "loser got {r:?}"
            );
        }
    }
    check_log(&*a.s(), 505).await?;
    a.close().await;
    b.close().await;
    f.finish().await
}

async fn entries_by_range_and_by_leaf_hash(f: Fixture) -> anyhow::Result<()> {
    let o = f.open().await?;
    let s = o.s();
    s.ensure_log(LOG, ORIGIN).await?;
    s.ensure_log("other", "records.example.gov/other").await?;
    commit(&*s, 0, 50).await?;
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
    let mut p = Parts::new(50, 2, "b");
    p.entries[0].leaf = e.leaf.clone();
    p.entries[0].leaf_hash = e.leaf_hash;
    p.entries[1].leaf = e.leaf.clone();
    p.entries[1].leaf_hash = e.leaf_hash;
    s.commit_batch(&p.batch()).await?;
    let found = s
        .entry_by_leaf_hash(LOG, &e.leaf_hash)
        .await?
        .context("by leaf hash")?;
    ensure!(
        found.index == 42,
        "lowest index expected, got {}",
        found.index
    );
    o.close().await;
    f.finish().await
}

async fn dedup_lookup(f: Fixture) -> anyhow::Result<()> {
    let o = f.open().await?;
    let s = o.s();
    s.ensure_log(LOG, ORIGIN).await?;
    s.ensure_log("other", "records.example.gov/other").await?;
    commit(&*s, 0, 1200).await?;
    ensure!(s.find_dedup(LOG, &[]).await?.is_empty(), "no keys");
    let keys: Vec<Hash> = (0..1200)
        .step_by(3)
        .map(|i| entry(i, "a").dedup_key)
        .collect();
    let mut asked = keys.clone();
    asked.push(Hash([9; 32]));
    let mut got = s.find_dedup(LOG, &asked).await?;
    got.sort_by_key(|&(_, i)| i);
    let want: Vec<(Hash, u64)> = (0..1200)
        .step_by(3)
        .map(|i| (entry(i, "a").dedup_key, i))
        .collect();
    ensure!(got == want, "found {} of {} keys", got.len(), want.len());
    ensure!(
        s.find_dedup("other", &keys).await?.is_empty(),
        "keys leak across logs"
    );
    // The same key in another log is another entry, found in that log only.
    let again = Parts::new(0, 3, "a");
    let mut b = again.batch();
    b.log = "other";
    s.commit_batch(&b)
        .await
        .context("same dedup keys in another log")?;
    let got = s.find_dedup("other", &keys[..1]).await?;
    ensure!(got == vec![(keys[0], 0)], "other log: {got:?}");
    let got = s.find_dedup(LOG, &keys[..1]).await?;
    ensure!(got == vec![(keys[0], 0)], "first log still: {got:?}");
    o.close().await;
    f.finish().await
}

async fn tiles_never_narrow(f: Fixture) -> anyhow::Result<()> {
    let o = f.open().await?;
    let s = o.s();
    s.ensure_log(LOG, ORIGIN).await?;
    let write = |old: u64, tiles: Vec<(TileId, Vec<u8>)>| {
        let s = s.clone();
        async move {
            let mut p = Parts::new(old, 1, "a");
            p.tiles = tiles;
            s.commit_batch(&p.batch()).await
        }
    };
    let t = |l: u8, n: u64, w: u16| (TileId::new(l, n, w), tile_data(l, n, w));
    write(0, vec![t(0, 0, 10), t(1, 0, 1)]).await?;
    // Narrower level-0 data is ignored; the wider level-1 tile replaces the old one.
    write(1, vec![t(0, 0, 5), t(1, 0, 2)]).await?;
    let got = s.read_tiles(LOG, &[(0, 0), (1, 0), (2, 0), (0, 1)]).await?;
    let want = vec![
        Some(tile_data(0, 0, 10)),
        Some(tile_data(1, 0, 2)),
        None,
        None,
    ];
    ensure!(
        got == want,
        "after narrowing attempt: widths {:?}",
        widths(&got)
    );
    // Same width, different bytes: the stored tile is kept as it is.
    let mut other = t(0, 0, 10);
    other.1[0] ^= 1;
    write(2, vec![other]).await?;
    let got = s.read_tiles(LOG, &[(0, 0)]).await?;
    ensure!(
        got == vec![Some(tile_data(0, 0, 10))],
        "same-width tile rewritten"
    );
    write(3, vec![t(0, 0, 256), t(0, 1, 3)]).await?;
    let got = s.read_tiles(LOG, &[(0, 1), (0, 0), (0, 0)]).await?;
    let want = vec![
        Some(tile_data(0, 1, 3)),
        Some(tile_data(0, 0, 256)),
        Some(tile_data(0, 0, 256)),
    ];
    ensure!(got == want, "after growing: widths {:?}", widths(&got));
    ensure!(s.read_tiles(LOG, &[]).await?.is_empty(), "no tiles asked");
    ensure!(
        s.read_tiles("other", &[(0, 0)]).await? == vec![None],
        "unknown log"
    );
    o.close().await;
    f.finish().await
}

fn widths(t: &[Option<Vec<u8>>]) -> Vec<Option<usize>> {
    t.iter().map(|d| d.as_ref().map(|d| d.len() / 32)).collect()
}

async fn checkpoints_are_stored_and_listed(f: Fixture) -> anyhow::Result<()> {
    let o = f.open().await?;
    let s = o.s();
    s.ensure_log(LOG, ORIGIN).await?;
    // An empty log's first checkpoint (size 0) is a batch with no entries.
    let p = Parts::new(0, 0, "a");
    s.commit_batch(&p.batch()).await?;
    let mut size = 0;
    for n in [1, 7, 300] {
        commit(&*s, size, n).await?;
        size += n;
    }
    let want: Vec<(u64, String)> = [0, 1, 8, 308].iter().map(|&n| (n, note(n))).collect();
    ensure!(s.checkpoints(LOG).await? == want, "checkpoints listed");
    ensure!(
        s.checkpoint_at(LOG, 8).await? == Some(note(8)),
        "checkpoint_at 8"
    );
    ensure!(
        s.checkpoint_at(LOG, 5).await?.is_none(),
        "no checkpoint at 5"
    );
    ensure!(s.checkpoint_at(LOG, u64::MAX).await?.is_none(), "huge size");
    ensure!(s.checkpoints("other").await?.is_empty(), "unknown log");
    o.close().await;
    f.finish().await
}

async fn agencies_add_list_get_revoke(f: Fixture) -> anyhow::Result<()> {
    let o = f.open().await?;
    let s = o.s();
    let land = AgencyRecord {
        name: "land-registry".into(),
        token_hash: [1; 32],
        types: vec!["land.*".into(), "parking.status".into()],
        revoked: false,
        created_ms: 1_700_000_000_123,
    };
    let health = AgencyRecord {
        name: "health".into(),
        token_hash: [2; 32],
        types: vec![],
        revoked: false,
        created_ms: 1_700_000_000_456,
    };
    ensure!(s.list_agencies().await?.is_empty(), "no agencies at first");
    s.add_agency(&land).await?;
    s.add_agency(&health).await?;
    let dup = AgencyRecord {
        token_hash: [3; 32],
        ..land.clone()
    };
    match s.add_agency(&dup).await {
        Err(StorageError::Duplicate(_)) => {}
        r => bail!("duplicate agency name: {r:?}"),
    }
    ensure!(
        s.agency("land-registry").await? == Some(land.clone()),
        "get after add"
    );
    ensure!(s.agency("nobody").await?.is_none(), "unknown agency");
    ensure!(
        s.list_agencies().await? == vec![health.clone(), land.clone()],
        "list by name"
    );
    ensure!(s.revoke_agency("land-registry").await?, "revoke existing");
    ensure!(!s.revoke_agency("nobody").await?, "revoke unknown");
    let revoked = AgencyRecord {
        revoked: true,
        ..land
    };
    ensure!(
        s.agency("land-registry").await? == Some(revoked),
        "revoked flag stored"
    );
    ensure!(
        s.agency("health").await? == Some(health),
        "other agency untouched"
    );
    o.close().await;
    f.finish().await
}

async fn durable_across_reopen(f: Fixture) -> anyhow::Result<()> {
    let o = f.open().await?;
    let s = o.s();
    s.ensure_log(LOG, ORIGIN).await?;
    commit(&*s, 0, 700).await?;
    let agency = AgencyRecord {
        name: "transport".into(),
        token_hash: [4; 32],
        types: vec!["parking.*".into()],
        revoked: false,
        created_ms: 5,
    };
    s.add_agency(&agency).await?;
    drop(s);
    o.close().await;

    let o = f.open().await?;
    let s = o.s();
    ensure!(
        s.ensure_log(LOG, ORIGIN).await?.tree_size == 700,
        "size after reopen"
    );
    check_log(&*s, 700).await?;
    ensure!(
        s.checkpoints(LOG).await?.len() == 1,
        "checkpoints after reopen"
    );
    ensure!(
        s.agency("transport").await? == Some(agency),
        "agency after reopen"
    );
    commit(&*s, 700, 10).await?;
    check_log(&*s, 710).await?;
    o.close().await;
    f.finish().await
}

async fn writer_lease_is_exclusive(f: Fixture) -> anyhow::Result<()> {
    let (a, b) = (f.open().await?, f.open().await?);
    a.s().ensure_log(LOG, ORIGIN).await?;
    let lease = a
        .s()
        .try_acquire_writer(LOG)
        .await?
        .context("first lease")?;
    ensure!(lease.is_held(), "fresh lease not held");
    ensure!(
        a.s().try_acquire_writer(LOG).await?.is_none(),
        "same storage took it twice"
    );
    ensure!(
        b.s().try_acquire_writer(LOG).await?.is_none(),
        "second storage took it"
    );
    // Leases are per log.
    let other = b
        .s()
        .try_acquire_writer("other")
        .await?
        .context("lease on another log")?;
    ensure!(other.is_held(), "other log's lease");
    if f.kind == Kind::Postgres {
        // The heartbeat runs every 200 ms here; the lease must still be held.
        tokio::time::sleep(Duration::from_millis(600)).await;
        ensure!(lease.is_held(), "healthy lease reported lost");
    }
    drop(lease);
    // Release is asynchronous on PostgreSQL (the server ends the session).
    let again = acquire_within(&*b.s(), Duration::from_secs(5)).await?;
    ensure!(again.is_held(), "re-acquired lease");
    ensure!(
        a.s().try_acquire_writer(LOG).await?.is_none(),
        "taken back while held"
    );
    if let Some(db) = &f.pg {
        // Kill the session that holds the advisory lock: the lease must
        // notice (heartbeat every 200 ms) and the lock must be free again.
        use sqlx::{Connection, PgConnection};
        let mut admin = PgConnection::connect(&db.url).await?;
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
        let taken = acquire_within(&*a.s(), Duration::from_secs(5)).await?;
        ensure!(taken.is_held(), "lease after the holder's session died");
    }
    a.close().await;
    b.close().await;
    f.finish().await
}

async fn acquire_within(s: &dyn Storage, limit: Duration) -> anyhow::Result<Box<dyn WriterLease>> {
    let start = std::time::Instant::now();
    loop {
        if let Some(l) = s.try_acquire_writer(LOG).await? {
            return Ok(l);
        }
        if start.elapsed() > limit {
            bail!("lease not released within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn readers_never_see_a_partial_batch(f: Fixture) -> anyhow::Result<()> {
    const BATCH: u64 = 40;
    const BATCHES: u64 = 30;
    let o = f.open().await?;
    let s = o.s();
    s.ensure_log(LOG, ORIGIN).await?;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..3 {
        let (s, done) = (s.clone(), done.clone());
        readers.push(tokio::spawn(async move {
            let mut looks = 0u32;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
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
                looks += 1;
            }
            Ok::<_, anyhow::Error>(looks)
        }));
    }
    for k in 0..BATCHES {
        commit(&*s, k * BATCH, BATCH).await?;
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    for r in readers {
        let looks = r.await??;
        ensure!(looks > 0, "a reader never looked");
    }
    check_log(&*s, BATCH * BATCHES).await?;
    o.close().await;
    f.finish().await
}

async fn lost_acknowledgement_is_seen_on_reload(f: Fixture) -> anyhow::Result<()> {
    let o = f.open().await?;
    // Commits, then reports the database as unreachable: the
    // acknowledgement was lost after the transaction committed.
    let faults = Arc::new(Faults::default());
    faults
        .fail_after
        .store(1, std::sync::atomic::Ordering::SeqCst);
    let faulty = Faulty {
        inner: o.s(),
        f: faults,
    };
    faulty.ensure_log(LOG, ORIGIN).await?;
    commit(&*o.s(), 0, 20).await?;
    let p = Parts::new(20, 30, "a");
    match faulty.commit_batch(&p.batch()).await {
        Err(StorageError::Unavailable(_)) => {}
        r => bail!("fault not injected: {r:?}"),
    }
    // Retrying blindly from the old size must not write it twice ...
    match o.s().commit_batch(&p.batch()).await {
        Err(StorageError::Conflict(_)) => {}
        r => bail!("blind retry after a lost acknowledgement: {r:?}"),
    }
    // ... and reloading the state shows the batch committed, whole.
    let st = faulty.log_state(LOG).await?.context("log")?;
    ensure!(st.tree_size == 50, "reloaded size {}", st.tree_size);
    check_log(&*o.s(), 50).await?;
    let keys: Vec<Hash> = p.entries.iter().map(|e| e.dedup_key).collect();
    ensure!(
        faulty.find_dedup(LOG, &keys).await?.len() == 30,
        "dedup keys of the batch"
    );
    commit(&*o.s(), 50, 5).await?;
    check_log(&*o.s(), 55).await?;
    o.close().await;
    f.finish().await
}

fn run(kind: Kind, test: TestFn) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let f = Fixture::new(kind).await?;
        tokio::time::timeout(Duration::from_secs(120), test(f))
            .await
            .map_err(|_| anyhow!("timed out after 120 s"))?
    })
}

fn main() {
    let args = Arguments::from_args();
    let policy = pg_policy();
    let pg_names: Vec<String> = TESTS
        .iter()
        .chain(PG_TESTS)
        .map(|(n, _)| format!("postgres::{n}"))
        .collect();
    policy.announce(&pg_names);
    let mut trials = Vec::new();
    for &(name, test) in TESTS {
        trials.push(Trial::test(format!("sqlite::{name}"), move || {
            run(Kind::Sqlite, test).map_err(|e| Failed::from(format!("{e:#}")))
        }));
    }
    for &(name, test) in TESTS.iter().chain(PG_TESTS) {
        let policy = policy.clone();
        trials.push(Trial::ignorable_test(
            format!("postgres::{name}"),
            move || match policy {
                PgPolicy::Run => run(Kind::Postgres, test)
                    .map(|()| Completion::Completed)
                    .map_err(|e| Failed::from(format!("{e:#}"))),
                PgPolicy::Skip(e) => Ok(Completion::ignored_with(e)),
                PgPolicy::Fail(e) => Err(Failed::from(format!("{e} and STELE_REQUIRE_POSTGRES=1"))),
            },
        ));
    }
    libtest_mimic::run(&args, trials).exit();
}
