//! The storage contract (`src/storage/mod.rs`), run once per backend:
//! SQLite on a fresh temporary directory, PostgreSQL on a fresh database per
//! test. When PostgreSQL is unreachable its tests are reported as ignored
//! with the reason printed, or fail under `STELE_REQUIRE_POSTGRES=1`.
//!
//! The tests commit real batches (entries, the Merkle tiles that change,
//! checkpoints signed by a test key) and after every commit [`Ctx::check`]
//! holds the stored log to exactly what was committed and runs the one
//! invariant checker over the storage itself.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context};
use stele::storage::postgres::PgOptions;
use stele::storage::{Storage, StoredEntry, WriterLease};
use stele_core::tile::{changed_tiles, TilePath};
use stele_testkit::checker::{LogChecker, StorageView};
use stele_testkit::harness::{Suite, TestFn, TestResult};
use stele_testkit::store::{Backend, Opened, TestStore};
use stele_testkit::synthetic::TestLog;

mod agencies;
mod batches;
mod lease;
mod pg_outage;
mod reads;

const LOG: &str = "land";
const ORIGIN: &str = "records.example.gov/land";

/// One test's database, the log as the test committed it, and the checker
/// that has watched it since the first commit.
pub struct Ctx {
    pub store: TestStore,
    pub log: TestLog,
    checker: Option<LogChecker<StorageView>>,
    /// Everything opened on the store, closed by [`Ctx::finish`].
    opened: Vec<Opened>,
}

impl Ctx {
    async fn new(backend: Backend) -> anyhow::Result<Self> {
        let store = TestStore::new(backend).await?.with_pg_options(PgOptions {
            lease_check_interval: Duration::from_millis(200),
            ..PgOptions::default()
        });
        Ok(Ctx {
            store,
            log: TestLog::new(LOG, ORIGIN),
            checker: None,
            opened: Vec::new(),
        })
    }

    /// A new, independent storage on the test's database.
    pub async fn open(&mut self) -> anyhow::Result<Arc<dyn Storage>> {
        let opened = self.store.open().await?;
        let storage = opened.storage();
        self.opened.push(opened);
        Ok(storage)
    }

    /// [`Ctx::open`], with the log `LOG` ensured.
    pub async fn open_log(&mut self) -> anyhow::Result<Arc<dyn Storage>> {
        let s = self.open().await?;
        s.ensure_log(LOG, ORIGIN).await?;
        Ok(s)
    }

    /// Closes every storage opened so far.
    pub async fn close_all(&mut self) {
        for o in self.opened.drain(..) {
            o.close().await;
        }
    }

    /// Commits the next `n` entries (tag "a") through `s`.
    pub async fn commit(&mut self, s: &dyn Storage, n: u64) -> anyhow::Result<()> {
        Ok(self.log.commit(s, n, "a").await?)
    }

    /// The stored log is exactly what was committed — its state, every
    /// entry byte for byte, every checkpoint, every hash tile at exactly its
    /// width — and the invariant checker, reading through `s`, verifies it:
    /// signatures, consistency of every stored checkpoint, the tree rebuilt
    /// from the entries against every tile and the root, every entry's
    /// inclusion.
    pub async fn check(&mut self, s: &Arc<dyn Storage>) -> anyhow::Result<()> {
        let size = self.log.size();
        let st = s.log_state(LOG).await?.context("log missing")?;
        ensure!(st.tree_size == size, "tree size {} != {size}", st.tree_size);
        let newest = self.log.checkpoints().last().map(|(_, note)| note.as_str());
        ensure!(st.checkpoint.as_deref() == newest, "latest checkpoint");
        if let Some(last) = self.log.entries().last() {
            ensure!(st.last_ts_ms == last.ts_ms, "last_ts {}", st.last_ts_ms);
        }
        let got = s.read_entries(LOG, 0, u64::MAX).await?;
        let want: Vec<StoredEntry> = self
            .log
            .entries()
            .iter()
            .map(|e| StoredEntry {
                index: e.index,
                leaf: e.leaf.to_vec(),
                leaf_hash: e.leaf_hash,
            })
            .collect();
        ensure!(
            got == want,
            "entries differ: {} stored, {size} expected",
            got.len()
        );
        ensure!(
            s.checkpoints(LOG).await? == self.log.checkpoints(),
            "stored checkpoints differ from those committed"
        );
        let ids = changed_tiles(0, size);
        let keys: Vec<(u8, u64)> = ids.iter().map(|t| (t.level, t.index)).collect();
        for (id, t) in ids.iter().zip(s.read_tiles(LOG, &keys).await?) {
            let width = t.as_ref().map(|t| t.len() / 32);
            ensure!(
                width == Some(usize::from(id.width)),
                "{} stored at width {width:?}",
                TilePath::Hash(*id)
            );
        }
        if newest.is_none() {
            return Ok(());
        }
        let view = StorageView::new(s.clone(), LOG);
        let checker = match &mut self.checker {
            Some(c) => {
                c.set_view(view);
                c
            }
            None => self
                .checker
                .insert(LogChecker::new(view, &self.log.vkey())?),
        };
        let report = checker.check_all().await?;
        ensure!(
            report.checkpoint.size == size && report.entries as u64 == size,
            "checked {} entries of a tree of {}",
            report.entries,
            report.checkpoint.size
        );
        Ok(())
    }

    /// The end of a test: [`Ctx::check`] through `s`, then [`Ctx::finish`].
    pub async fn done(mut self, s: &Arc<dyn Storage>) -> anyhow::Result<()> {
        self.check(s).await?;
        self.finish().await
    }

    /// Closes everything opened and drops the database.
    pub async fn finish(mut self) -> anyhow::Result<()> {
        self.close_all().await;
        self.store.finish().await
    }
}

/// Takes the writer lease of `LOG` through `s`, waiting for it to be
/// released for at most `limit`.
pub async fn acquire_within(
    s: &dyn Storage,
    limit: Duration,
) -> anyhow::Result<Box<dyn WriterLease>> {
    let start = std::time::Instant::now();
    loop {
        if let Some(l) = s.try_acquire_writer(LOG).await? {
            return Ok(l);
        }
        ensure!(
            start.elapsed() <= limit,
            "lease not released within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn run(backend: Backend, test: TestFn<Ctx>) -> TestResult {
    test(Ctx::new(backend).await?).await
}

fn main() {
    let mut suite = Suite::new().timeout(Duration::from_secs(120));
    let tables = [batches::TESTS, reads::TESTS, lease::TESTS, agencies::TESTS];
    suite.per_backend_tables(Backend::ALL, &tables, run);
    suite.per_backend_tables(&[Backend::Postgres], &[pg_outage::TESTS], run);
    suite.run()
}
