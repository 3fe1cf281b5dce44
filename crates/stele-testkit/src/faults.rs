//! A storage wrapper that injects faults: commits that fail before writing
//! or after (a lost acknowledgement), an outage, corrupted tiles, slow
//! commits; and counts what reached the storage underneath.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use stele::storage::{
    Agencies, AgencyRecord, Batch, LogReader, LogState, LogWriter, Result, Storage, StorageError,
    StoredEntry, StoredPayload, WriterLease, WriterLock,
};
use stele_core::Hash;

/// Faults to inject into a wrapped storage.
#[derive(Default)]
pub struct Faults {
    /// The next N commits fail without writing anything.
    pub fail_before: AtomicU32,
    /// The next N commits write, then report `Unavailable` (a lost ack).
    pub fail_after: AtomicU32,
    /// Every call fails with `Unavailable`.
    pub down: AtomicBool,
    /// `read_tiles` flips a bit in every tile it returns.
    pub corrupt_tiles: AtomicBool,
    /// Each commit waits this long first.
    pub commit_delay_ms: AtomicU64,
    pub commits: AtomicU32,
    /// Tiles returned by `read_tiles`.
    pub tiles_read: AtomicU64,
    /// Entries returned by `read_entries`.
    pub entries_read: AtomicU64,
    /// `read_entries` makes up an entry at `start` where storage has none
    /// (storage holding rows beyond its tree size).
    pub phantom_entry: AtomicBool,
    /// `log_state` answers this instead of what is stored (a database
    /// restored to an older state, or another tree).
    pub log_state_override: std::sync::Mutex<Option<LogState>>,
}

/// A storage that injects [`Faults`] into every call it passes on.
pub struct Faulty {
    pub inner: Arc<dyn Storage>,
    pub f: Arc<Faults>,
}

impl Faulty {
    /// `inner` behind a fault injector, and the switches of its faults.
    pub fn wrap(inner: Arc<dyn Storage>) -> (Arc<Faulty>, Arc<Faults>) {
        let f = Arc::new(Faults::default());
        let faulty = Arc::new(Faulty {
            inner,
            f: f.clone(),
        });
        (faulty, f)
    }

    fn check(&self) -> Result<()> {
        if self.f.down.load(Ordering::SeqCst) {
            return Err(StorageError::Unavailable("injected: database down".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl LogReader for Faulty {
    async fn log_state(&self, log: &str) -> Result<Option<LogState>> {
        self.check()?;
        if let Some(s) = self
            .f
            .log_state_override
            .lock()
            .expect("faults lock")
            .clone()
        {
            return Ok(Some(s));
        }
        self.inner.log_state(log).await
    }
    async fn read_tiles(&self, log: &str, tiles: &[(u8, u64)]) -> Result<Vec<Option<Vec<u8>>>> {
        self.check()?;
        let mut out = self.inner.read_tiles(log, tiles).await?;
        self.f
            .tiles_read
            .fetch_add(out.len() as u64, Ordering::SeqCst);
        if self.f.corrupt_tiles.load(Ordering::SeqCst) {
            for t in out.iter_mut().flatten() {
                if let Some(b) = t.first_mut() {
                    *b ^= 1;
                }
            }
        }
        Ok(out)
    }
    async fn registry_entries(&self, log: &str, start: u64, end: u64) -> Result<Vec<StoredEntry>> {
        self.check()?;
        self.inner.registry_entries(log, start, end).await
    }
    async fn read_entries(&self, log: &str, start: u64, end: u64) -> Result<Vec<StoredEntry>> {
        self.check()?;
        let mut out = self.inner.read_entries(log, start, end).await?;
        if out.is_empty() && start < end && self.f.phantom_entry.load(Ordering::SeqCst) {
            out.push(StoredEntry {
                index: start,
                leaf: b"{}".to_vec(),
                leaf_hash: stele_core::leaf_hash(b"{}"),
            });
        }
        self.f
            .entries_read
            .fetch_add(out.len() as u64, Ordering::SeqCst);
        Ok(out)
    }
    async fn entry_by_leaf_hash(&self, log: &str, leaf_hash: &Hash) -> Result<Option<StoredEntry>> {
        self.check()?;
        self.inner.entry_by_leaf_hash(log, leaf_hash).await
    }
    async fn checkpoint_at(&self, log: &str, tree_size: u64) -> Result<Option<String>> {
        self.check()?;
        self.inner.checkpoint_at(log, tree_size).await
    }
    async fn checkpoints(&self, log: &str) -> Result<Vec<(u64, String)>> {
        self.check()?;
        self.inner.checkpoints(log).await
    }
    async fn witnessed_checkpoint(&self, log: &str) -> Result<Option<(u64, String)>> {
        self.check()?;
        self.inner.witnessed_checkpoint(log).await
    }
    async fn payload(&self, log: &str, index: u64) -> Result<Option<StoredPayload>> {
        self.check()?;
        self.inner.payload(log, index).await
    }
    async fn disclosure(&self, log: &str, index: u64) -> Result<Option<[u8; 32]>> {
        self.check()?;
        self.inner.disclosure(log, index).await
    }
    async fn payload_events(&self, log: &str, record: u64) -> Result<Vec<u64>> {
        self.check()?;
        self.inner.payload_events(log, record).await
    }
}

#[async_trait]
impl LogWriter for Faulty {
    async fn ensure_log(&self, name: &str, origin: &str) -> Result<LogState> {
        self.check()?;
        self.inner.ensure_log(name, origin).await
    }
    async fn commit_batch(&self, batch: &Batch<'_>) -> Result<()> {
        let delay = self.f.commit_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        self.check()?;
        let take = |c: &AtomicU32| {
            c.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        };
        if take(&self.f.fail_before) {
            return Err(StorageError::Unavailable(
                "injected: connection reset before commit".into(),
            ));
        }
        self.inner.commit_batch(batch).await?;
        self.f.commits.fetch_add(1, Ordering::SeqCst);
        if take(&self.f.fail_after) {
            return Err(StorageError::Unavailable(
                "injected: connection reset after commit".into(),
            ));
        }
        Ok(())
    }
    async fn find_dedup(&self, log: &str, keys: &[Hash]) -> Result<Vec<(Hash, StoredEntry)>> {
        self.check()?;
        self.inner.find_dedup(log, keys).await
    }
    async fn store_witnessed(&self, log: &str, tree_size: u64, note: &str) -> Result<bool> {
        self.check()?;
        self.inner.store_witnessed(log, tree_size, note).await
    }
    async fn set_disclosure(&self, log: &str, index: u64, hash: &[u8; 32]) -> Result<bool> {
        self.check()?;
        self.inner.set_disclosure(log, index, hash).await
    }
    async fn payloads_to_rewrap(
        &self,
        log: &str,
        kek_id: &str,
        after: Option<u64>,
        limit: u32,
    ) -> Result<Vec<(u64, stele::vault::SealedPayload)>> {
        self.check()?;
        self.inner
            .payloads_to_rewrap(log, kek_id, after, limit)
            .await
    }
    async fn rewrap_payload(
        &self,
        log: &str,
        index: u64,
        old_kek_id: &str,
        new: &stele::vault::SealedPayload,
    ) -> Result<bool> {
        self.check()?;
        self.inner.rewrap_payload(log, index, old_kek_id, new).await
    }
}

#[async_trait]
impl WriterLock for Faulty {
    async fn try_acquire_writer(&self, log: &str) -> Result<Option<Box<dyn WriterLease>>> {
        self.check()?;
        self.inner.try_acquire_writer(log).await
    }
}

#[async_trait]
impl Agencies for Faulty {
    async fn add_agency(&self, agency: &AgencyRecord) -> Result<()> {
        self.check()?;
        self.inner.add_agency(agency).await
    }
    async fn list_agencies(&self) -> Result<Vec<AgencyRecord>> {
        self.check()?;
        self.inner.list_agencies().await
    }
    async fn agency(&self, name: &str) -> Result<Option<AgencyRecord>> {
        self.check()?;
        self.inner.agency(name).await
    }
    async fn revoke_agency(&self, name: &str) -> Result<bool> {
        self.check()?;
        self.inner.revoke_agency(name).await
    }
}

#[async_trait]
impl Storage for Faulty {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn ping(&self) -> Result<()> {
        self.check()?;
        self.inner.ping().await
    }
}
