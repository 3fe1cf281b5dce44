//! The sequencer: one task per log, the only writer of that log.
//!
//! Life of a batch: gather requests (the first one, then whatever queued up
//! meanwhile, up to `max_batch` records; an idle sequencer also waits up to
//! `max_wait` for more) → look up dedup keys → assign indexes and `ts` →
//! append leaf hashes to a *copy* of the tree builder → sign the checkpoint
//! → `Storage::commit_batch` (one transaction, CAS on the size) → only then
//! adopt the new state and answer every waiter with its index, leaf and
//! inclusion proof against this batch's checkpoint (the submitting task
//! turns that into the receipt).
//!
//! Crash points:
//! - Before the commit returns: nothing in memory changed; a crash loses only
//!   unacknowledged submissions.
//! - Commit fails (`Unavailable` or any error): the outcome is unknown. Every
//!   waiter gets 503; the sequencer then reloads the stored state (retrying
//!   with backoff while the database is down, answering new submissions with
//!   503 at once). Stored size = the batch's new size with this batch's
//!   checkpoint → the commit happened (lost acknowledgement): adopt it, and a
//!   retry of the same body finds it by dedup key. Stored size = the old size
//!   → nothing happened: continue. Anything else → another writer: stop
//!   writing.
//! - `Conflict` (CAS failed) → another writer moved the log: stop writing,
//!   drop the lease, and serve reads until the lease can be taken again (then
//!   the whole state is reloaded and verified from storage).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use stele_core::checkpoint::Checkpoint;
use stele_core::note;
use stele_core::tile::{partial_tiles, TileId, TreeBuilder};
use stele_core::{leaf_hash, Hash, EMPTY_ROOT, HASH_SIZE};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::engine::cache::{Key, Kind, TileCache};
use crate::engine::log::{Integrated, Integration, Log, Request, Status};
use crate::engine::records::leaf_bytes;
use crate::engine::tiles::{ProofJob, Snapshot, TileSource};
use crate::engine::{storage_error, EngineConfig, LogError};
use crate::metrics::{Metrics, SubmissionLabels};
use crate::storage::{Batch, NewEntry, Storage, StorageError, WriterLease};

/// How often a process that is not the writer tries to take the lease (and
/// refreshes its view of the log).
pub(crate) const LEASE_RETRY: Duration = Duration::from_secs(2);
/// How often an idle writer checks that it still holds the lease.
const LEASE_CHECK: Duration = Duration::from_millis(500);
/// Longest pause between reload attempts while the database is down.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Shared by the engine's read paths and every sequencer.
pub(crate) struct Ctx {
    pub storage: Arc<dyn Storage>,
    pub cache: TileCache,
    pub metrics: Arc<Metrics>,
    pub config: EngineConfig,
}

/// A batch that was signed and sent to storage.
struct Prepared {
    builder: TreeBuilder,
    ts_ms: i64,
    note: String,
    changed: Vec<(TileId, Vec<u8>)>,
}

enum Mode {
    Writer,
    /// Another process is the writer (or the database was down when we
    /// tried): serve reads, retry the lease.
    Follower,
    /// A commit's outcome is unknown: find out before writing again.
    Reload {
        old_size: u64,
        prepared: Prepared,
    },
    /// The stored state failed verification: never write.
    Refused,
}

enum Recovery {
    Refuse(String),
    Storage(StorageError),
}

impl From<StorageError> for Recovery {
    fn from(e: StorageError) -> Self {
        Recovery::Storage(e)
    }
}

/// Why a batch was not committed.
enum Commit {
    /// A dedup key of the batch is already stored; nothing was written.
    Duplicate(String),
    /// Not committed: answer every waiter with this error (the mode says
    /// what happens next: go on, reload, or follow).
    Failed(Box<dyn Fn() -> LogError + Send>),
}

/// Where each submitted record ended up.
#[derive(Clone, Copy)]
enum Slot {
    /// Position among this batch's new entries; `created` is false for a
    /// repeat of an earlier item of the same batch.
    New { pos: usize, created: bool },
    /// Already stored at this index.
    Existing(u64),
}

pub(crate) struct Sequencer {
    log: Arc<Log>,
    ctx: Arc<Ctx>,
    rx: mpsc::UnboundedReceiver<Request>,
    stop: watch::Receiver<bool>,
    builder: TreeBuilder,
    last_ts: i64,
    lease: Option<Box<dyn WriterLease>>,
    held: Option<Request>,
    mode: Mode,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Sequencer {
    pub(crate) fn new(
        log: Arc<Log>,
        ctx: Arc<Ctx>,
        rx: mpsc::UnboundedReceiver<Request>,
        stop: watch::Receiver<bool>,
    ) -> Self {
        Sequencer {
            log,
            ctx,
            rx,
            stop,
            builder: TreeBuilder::new(),
            last_ts: 0,
            lease: None,
            held: None,
            mode: Mode::Follower,
        }
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Tries to take the writer lease and, if it gets it, loads and verifies
    /// the stored state. Sets the mode and the log's status either way.
    pub(crate) async fn become_writer(&mut self) {
        let name = self.log.name.clone();
        match self.ctx.storage.try_acquire_writer(&name).await {
            Ok(Some(lease)) => {
                self.lease = Some(lease);
                match self.recover().await {
                    Ok(()) => {
                        tracing::info!(log = %name, tree_size = self.builder.size(), "writer of the log");
                        self.mode = Mode::Writer;
                        self.log.set_status(Status::Writable);
                    }
                    Err(Recovery::Refuse(why)) => {
                        tracing::error!(log = %name, "refusing writes: {why}");
                        self.lease = None;
                        self.mode = Mode::Refused;
                        self.log.set_status(Status::Refused(format!(
                            "log {name} refuses writes: {why}"
                        )));
                    }
                    Err(Recovery::Storage(e)) => {
                        tracing::warn!(log = %name, "could not load the log state: {e}");
                        self.follow(Status::Unavailable(format!("database unavailable: {e}")));
                    }
                }
            }
            Ok(None) => self.follow(Status::NotWriter(format!(
                "another process is the writer of log {name}; this one serves reads only"
            ))),
            Err(e) => {
                tracing::warn!(log = %name, "could not take the writer lease: {e}");
                self.follow(Status::Unavailable(format!("database unavailable: {e}")));
            }
        }
    }

    /// Loads the stored state and checks that the stored partial tiles
    /// reproduce the root of the stored checkpoint, signed by this log's key.
    /// An empty log gets its first (size 0) checkpoint here.
    async fn recover(&mut self) -> Result<(), Recovery> {
        let storage = &self.ctx.storage;
        let name = &*self.log.name;
        let mut state = storage
            .log_state(name)
            .await?
            .ok_or_else(|| Recovery::Refuse("the log does not exist in storage".into()))?;
        if state.checkpoint.is_none() && state.tree_size == 0 {
            let note = self.sign(0, EMPTY_ROOT).map_err(Recovery::Refuse)?;
            let batch = Batch {
                log: name,
                old_size: 0,
                new_size: 0,
                entries: &[],
                tiles: &[],
                checkpoint: &note,
                root: EMPTY_ROOT,
            };
            storage.commit_batch(&batch).await?;
            state.checkpoint = Some(note);
        }
        let size = state.tree_size;
        let Some(note_text) = state.checkpoint else {
            return Err(Recovery::Refuse(format!(
                "the log has {size} entries but no checkpoint"
            )));
        };
        let ids = partial_tiles(size);
        let keys: Vec<(u8, u64)> = ids.iter().map(|t| (t.level, t.index)).collect();
        let data = storage.read_tiles(name, &keys).await?;
        let mut tiles = Vec::with_capacity(ids.len());
        let mut partials = HashMap::new();
        for (id, d) in ids.iter().zip(data) {
            let need = usize::from(id.width) * HASH_SIZE;
            match d {
                Some(d) if d.len() >= need => {
                    let d = Bytes::from(d).slice(..need);
                    partials.insert((id.level, id.index), d.clone());
                    tiles.push((*id, d));
                }
                _ => {
                    return Err(Recovery::Refuse(format!(
                        "hash tile {}/{} (width {}) is missing or short in storage",
                        id.level, id.index, id.width
                    )))
                }
            }
        }
        let refs: Vec<(TileId, &[u8])> = tiles.iter().map(|(id, d)| (*id, &d[..])).collect();
        let builder = TreeBuilder::from_partial_tiles(size, &refs)
            .map_err(|e| Recovery::Refuse(format!("stored partial tiles are unusable: {e}")))?;
        let cp = note::open_checkpoint(&note_text, &self.log.verifier).map_err(|e| {
            Recovery::Refuse(format!(
                "the stored checkpoint does not verify with the log's key: {e}"
            ))
        })?;
        if cp.origin != self.log.origin {
            return Err(Recovery::Refuse(format!(
                "the stored checkpoint names origin {:?}, expected {:?}",
                cp.origin, self.log.origin
            )));
        }
        if cp.size != size {
            return Err(Recovery::Refuse(format!(
                "the stored checkpoint is for size {}, the tree size is {size}",
                cp.size
            )));
        }
        if cp.root != builder.root() {
            return Err(Recovery::Refuse(format!(
                "the stored tiles do not reproduce the root of the checkpoint at size {size} (tiles give {}, checkpoint says {})",
                builder.root(),
                cp.root
            )));
        }
        self.builder = builder;
        self.last_ts = state.last_ts_ms;
        self.log
            .set_snapshot(Snapshot::new(size, Some(note_text), partials));
        self.ctx
            .metrics
            .tree_size
            .get_or_create(&self.log.label)
            .set(size as i64);
        Ok(())
    }

    fn sign(&self, size: u64, root: Hash) -> Result<String, String> {
        self.log
            .signer
            .sign_checkpoint(&Checkpoint::new(self.log.origin.clone(), size, root))
            .map_err(|e| format!("cannot sign a checkpoint: {e}"))
    }

    /// Runs until `shutdown`.
    pub(crate) async fn run(mut self) {
        while !self.stopping() {
            match std::mem::replace(&mut self.mode, Mode::Follower) {
                Mode::Writer => {
                    self.mode = Mode::Writer;
                    self.writer_step().await;
                }
                Mode::Follower => self.follower_step().await,
                Mode::Refused => {
                    self.mode = Mode::Refused;
                    self.idle(LEASE_RETRY).await;
                    self.refresh_snapshot().await;
                }
                Mode::Reload { old_size, prepared } => self.reload(old_size, prepared).await,
            }
        }
        self.finish();
    }

    async fn writer_step(&mut self) {
        let backlog = self.held.is_some() || !self.rx.is_empty();
        let first = match self.held.take() {
            Some(r) => r,
            None => {
                let mut stop = self.stop.clone();
                tokio::select! {
                    _ = stop.changed() => return,
                    r = self.rx.recv() => match r {
                        Some(r) => r,
                        None => return,
                    },
                    _ = tokio::time::sleep(LEASE_CHECK) => {
                        self.check_lease();
                        return;
                    }
                }
            }
        };
        let requests = self.gather(first, backlog).await;
        self.process(requests).await;
    }

    /// Stops writing (dropping the lease, if held) and serves reads in
    /// `status` until the lease can be taken again.
    fn follow(&mut self, status: Status) {
        self.lease = None;
        self.mode = Mode::Follower;
        self.log.set_status(status);
    }

    fn check_lease(&mut self) -> bool {
        if self.lease.as_ref().is_some_and(|l| l.is_held()) {
            return true;
        }
        tracing::error!(log = %self.log.name, "lost the writer lease; serving reads only until it is taken again");
        let why = format!("log {} lost its writer lease", self.log.name);
        self.follow(Status::NotWriter(why));
        false
    }

    /// Collects a batch behind `first`. Under load (requests were already
    /// queued when the batch started, or one was held back from the last
    /// batch) the batch is whatever queued up while the previous one
    /// committed, taken without waiting: waiting would leave the database
    /// idle. Only a sequencer that was idle waits up to `max_wait` for
    /// company, to save commits when submissions trickle in.
    async fn gather(&mut self, first: Request, backlog: bool) -> Vec<Request> {
        let max = self.ctx.config.max_batch.max(1);
        let deadline = Instant::now() + self.ctx.config.max_wait;
        let mut n = first.items.len();
        let mut requests = vec![first];
        while n < max {
            let next = match self.rx.try_recv() {
                Ok(r) => r,
                Err(mpsc::error::TryRecvError::Empty) if backlog => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                        Ok(Some(r)) => r,
                        _ => break,
                    }
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            };
            if n + next.items.len() > max {
                self.held = Some(next);
                break;
            }
            n += next.items.len();
            requests.push(next);
        }
        requests
    }

    fn answer(&self, r: Request, result: Result<Integration, LogError>) {
        self.reply().answer(r, result)
    }

    fn fail_all(&self, requests: Vec<Request>, e: impl Fn() -> LogError) {
        self.reply().fail_all(requests, e)
    }

    fn update_queue_depth(&self) {
        self.reply().update_queue_depth()
    }

    fn reply(&self) -> Reply {
        Reply {
            log: self.log.clone(),
            ctx: self.ctx.clone(),
        }
    }

    /// Sequences, commits and answers one batch.
    async fn process(&mut self, requests: Vec<Request>) {
        let storage = self.ctx.storage.clone();
        let name = self.log.name.clone();
        let old_size = self.builder.size();

        // Deduplicate within the batch here; against storage optimistically:
        // the commit fails with `Duplicate` (writing nothing) if a key is
        // already stored, and only then are the keys looked up and the batch
        // sequenced again. New records, the common case, cost no look-up.
        let mut stored: HashMap<Hash, u64> = HashMap::new();
        let mut looked_up = false;
        let ts_ms = now_ms().max(self.last_ts);
        let (entries, slots, overlay) = loop {
            let (entries, slots) = self.sequence(&requests, &stored, old_size, ts_ms);
            if entries.is_empty() {
                break (entries, slots, HashMap::new());
            }
            match self.commit(&name, old_size, &entries, ts_ms).await {
                Ok(overlay) => break (entries, slots, overlay),
                Err(Commit::Duplicate(why)) if !looked_up => {
                    tracing::debug!(log = %name, "batch repeats stored records ({why}); looking them up");
                    looked_up = true;
                    let mut seen: HashSet<Hash> = HashSet::new();
                    let unique: Vec<Hash> = requests
                        .iter()
                        .flat_map(|r| r.items.iter().map(|p| p.dedup_key))
                        .filter(|k| seen.insert(*k))
                        .collect();
                    match storage.find_dedup(&name, &unique).await {
                        Ok(v) => stored = v.into_iter().collect(),
                        Err(e) => {
                            tracing::warn!(log = %name, "dedup lookup failed: {e}");
                            let msg = format!("database unavailable: {e}");
                            return self.fail_all(requests, || LogError::Unavailable(msg.clone()));
                        }
                    }
                }
                Err(Commit::Duplicate(why)) => {
                    // Found no stored key, yet a uniqueness rule failed: not a
                    // dedup race (this is the only writer); treat as unknown.
                    tracing::error!(log = %name, "commit of {old_size}.. failed after the dedup look-up: {why}");
                    return self.fail_all(requests, || {
                        LogError::Internal(anyhow::anyhow!("uniqueness violation in a batch"))
                    });
                }
                Err(Commit::Failed(e)) => return self.fail_all(requests, e),
            }
        };

        // Leaves of already stored duplicates (rare: one read each).
        let mut existing: HashMap<u64, String> = HashMap::new();
        for s in slots.iter().flatten() {
            if let Slot::Existing(index) = *s {
                if existing.contains_key(&index) {
                    continue;
                }
                match self.read_leaf(index).await {
                    Ok(leaf) => {
                        existing.insert(index, leaf);
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        return self.fail_all(requests, || LogError::Unavailable(msg.clone()));
                    }
                }
            }
        }

        // Receipts, all against the latest checkpoint (this batch's if it had
        // new entries), are built and sent by a task of their own so that the
        // sequencer can start on the next batch at once.
        let job = Answers {
            requests,
            slots,
            entries,
            existing,
            old_size,
            snapshot: self.log.snapshot(),
            overlay,
        };
        tokio::spawn(self.reply().send(job));
    }

    /// Assigns indexes: stored duplicates point at their entry, repeats
    /// within the batch share one new entry, the rest become new entries
    /// `old_size..` with leaves stamped `ts_ms`.
    fn sequence(
        &self,
        requests: &[Request],
        stored: &HashMap<Hash, u64>,
        old_size: u64,
        ts_ms: i64,
    ) -> (Vec<NewEntry>, Vec<Vec<Slot>>) {
        let mut entries: Vec<NewEntry> = Vec::new();
        let mut new_pos: HashMap<Hash, usize> = HashMap::new();
        let mut slots: Vec<Vec<Slot>> = Vec::with_capacity(requests.len());
        for r in requests {
            let mut s = Vec::with_capacity(r.items.len());
            for p in &r.items {
                if let Some(&index) = stored.get(&p.dedup_key) {
                    s.push(Slot::Existing(index));
                } else if let Some(&pos) = new_pos.get(&p.dedup_key) {
                    s.push(Slot::New {
                        pos,
                        created: false,
                    });
                } else {
                    let pos = entries.len();
                    let leaf = leaf_bytes(&p.agency, &p.record, ts_ms);
                    entries.push(NewEntry {
                        index: old_size + pos as u64,
                        leaf_hash: leaf_hash(&leaf),
                        leaf,
                        dedup_key: p.dedup_key,
                        ts_ms,
                    });
                    new_pos.insert(p.dedup_key, pos);
                    s.push(Slot::New { pos, created: true });
                }
            }
            slots.push(s);
        }
        (entries, slots)
    }

    /// Appends `entries` to a copy of the tree, signs the checkpoint and
    /// commits. On success the new state is adopted and the changed tiles
    /// are returned (for this batch's receipts). On any failure but
    /// `Duplicate` the mode is set for what must happen next.
    async fn commit(
        &mut self,
        name: &Arc<str>,
        old_size: u64,
        entries: &[NewEntry],
        ts_ms: i64,
    ) -> Result<HashMap<(u8, u64), Bytes>, Commit> {
        let hashes: Vec<Hash> = entries.iter().map(|e| e.leaf_hash).collect();
        let mut builder = self.builder.clone();
        let changed = builder.append(&hashes);
        let new_size = builder.size();
        let root = builder.root();
        let note = match self.sign(new_size, root) {
            Ok(n) => n,
            Err(why) => {
                tracing::error!(log = %name, "{why}");
                return Err(Commit::Failed(Box::new(|| {
                    LogError::Internal(anyhow::anyhow!("cannot sign a checkpoint"))
                })));
            }
        };
        if !self.check_lease() {
            let retry_after = self.ctx.config.retry_after;
            return Err(Commit::Failed(Box::new(move || LogError::Pushback {
                detail: "this process lost the writer lease".into(),
                retry_after,
            })));
        }
        let batch = Batch {
            log: name,
            old_size,
            new_size,
            entries,
            tiles: &changed,
            checkpoint: &note,
            root,
        };
        let started = Instant::now();
        let result = self.ctx.storage.commit_batch(&batch).await;
        self.ctx
            .metrics
            .batch_commit_seconds
            .get_or_create(&self.log.label)
            .observe(started.elapsed().as_secs_f64());
        let prepared = Prepared {
            builder,
            ts_ms,
            note,
            changed,
        };
        match result {
            Ok(()) => {
                self.ctx
                    .metrics
                    .batch_size
                    .get_or_create(&self.log.label)
                    .observe(entries.len() as f64);
                Ok(self.adopt(prepared))
            }
            Err(StorageError::Duplicate(why)) => Err(Commit::Duplicate(why)),
            Err(StorageError::Conflict(why)) => {
                tracing::error!(log = %name, "another writer moved the log ({why}); this process stops writing");
                self.follow(moved_under_us(name));
                Err(Commit::Failed(Box::new(|| {
                    LogError::Unavailable("the log moved under this writer; retry".into())
                })))
            }
            Err(e) => {
                // Outcome unknown: answer 503 now, find out before writing again.
                tracing::warn!(log = %name, "commit of {old_size}..{new_size} failed: {e}; reloading");
                self.log
                    .set_status(Status::Unavailable(format!("database unavailable: {e}")));
                self.mode = Mode::Reload { old_size, prepared };
                Err(Commit::Failed(Box::new(|| {
                    LogError::Unavailable(
                        "the record could not be committed; retry (a retry is deduplicated)".into(),
                    )
                })))
            }
        }
    }

    async fn read_leaf(&self, index: u64) -> Result<String, LogError> {
        let e = self
            .ctx
            .storage
            .read_entries(&self.log.name, index, index + 1)
            .await
            .map_err(storage_error)?;
        match e.into_iter().next() {
            Some(e) if e.index == index => {
                String::from_utf8(e.leaf).map_err(|e| LogError::Internal(e.into()))
            }
            _ => Err(LogError::Internal(anyhow::anyhow!(
                "entry {index} is deduplicated but missing"
            ))),
        }
    }

    /// Makes a committed batch the current state. Returns the changed tiles
    /// (for the receipts of this batch).
    fn adopt(&mut self, p: Prepared) -> HashMap<(u8, u64), Bytes> {
        let new_size = p.builder.size();
        self.builder = p.builder;
        self.last_ts = p.ts_ms;
        let mut partials = self.log.snapshot().partials.clone();
        let mut overlay = HashMap::with_capacity(p.changed.len());
        for (id, data) in p.changed {
            let data = Bytes::from(data);
            if id.is_full() {
                partials.remove(&(id.level, id.index));
                self.ctx.cache.insert(
                    Key {
                        log: self.log.name.clone(),
                        kind: Kind::Hash,
                        level: id.level,
                        index: id.index,
                    },
                    data.clone(),
                );
            } else {
                partials.insert((id.level, id.index), data.clone());
            }
            overlay.insert((id.level, id.index), data);
        }
        let keep: HashSet<(u8, u64)> = partial_tiles(new_size)
            .iter()
            .map(|t| (t.level, t.index))
            .collect();
        partials.retain(|k, _| keep.contains(k));
        self.log
            .set_snapshot(Snapshot::new(new_size, Some(p.note), partials));
        self.ctx
            .metrics
            .tree_size
            .get_or_create(&self.log.label)
            .set(new_size as i64);
        overlay
    }

    /// After a commit with an unknown outcome: find out what storage holds.
    async fn reload(&mut self, old_size: u64, prepared: Prepared) {
        let name = self.log.name.clone();
        let mut backoff = Duration::from_millis(50);
        while !self.stopping() {
            match self.ctx.storage.log_state(&name).await {
                Ok(Some(s)) => {
                    let new_size = prepared.builder.size();
                    if s.tree_size == new_size
                        && s.checkpoint.as_deref() == Some(prepared.note.as_str())
                    {
                        tracing::warn!(log = %name, "the failed commit of {old_size}..{new_size} had in fact committed; adopting it");
                        self.adopt(prepared);
                    } else if s.tree_size == old_size {
                        tracing::info!(log = %name, "the failed commit did not happen; continuing at {old_size}");
                    } else {
                        tracing::error!(
                            log = %name,
                            "stored tree size is {} (expected {old_size} or {new_size}): another writer; this process stops writing",
                            s.tree_size
                        );
                        self.follow(moved_under_us(&name));
                        return;
                    }
                    if self.check_lease() {
                        self.mode = Mode::Writer;
                        self.log.set_status(Status::Writable);
                    }
                    return;
                }
                Ok(None) => {
                    tracing::error!(log = %name, "the log disappeared from storage");
                    self.mode = Mode::Refused;
                    self.log.set_status(Status::Refused(format!(
                        "log {name} is missing from storage"
                    )));
                    return;
                }
                Err(e) => {
                    tracing::warn!(log = %name, "reload failed: {e}; retrying in {backoff:?}");
                    self.log
                        .set_status(Status::Unavailable(format!("database unavailable: {e}")));
                    self.idle(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        // Shutting down with the outcome unknown: the next start recovers from storage.
        self.mode = Mode::Reload { old_size, prepared };
    }

    async fn follower_step(&mut self) {
        self.idle(LEASE_RETRY).await;
        if self.stopping() {
            return;
        }
        self.refresh_snapshot().await;
        self.become_writer().await;
    }

    /// Re-reads the latest checkpoint from storage (not the writer: reads
    /// only need the size and the note; tiles come from storage).
    async fn refresh_snapshot(&mut self) {
        if let Ok(Some(s)) = self.ctx.storage.log_state(&self.log.name).await {
            let cur = self.log.snapshot();
            if s.tree_size != cur.size || s.checkpoint != cur.checkpoint {
                self.log
                    .set_snapshot(Snapshot::new(s.tree_size, s.checkpoint, HashMap::new()));
                self.ctx
                    .metrics
                    .tree_size
                    .get_or_create(&self.log.label)
                    .set(s.tree_size as i64);
            }
        }
    }

    /// Waits `d` (or until shutdown), answering anything that arrives with
    /// the log's current status as an error.
    async fn idle(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        if let Some(r) = self.held.take() {
            self.answer(r, Err(self.status_error()));
        }
        let mut stop = self.stop.clone();
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                _ = stop.changed() => break,
                r = self.rx.recv() => match r {
                    Some(r) => {
                        self.answer(r, Err(self.status_error()));
                        self.update_queue_depth();
                    }
                    None => break,
                },
            }
        }
    }

    fn status_error(&self) -> LogError {
        status_error(&self.log.status(), self.ctx.config.retry_after).unwrap_or_else(|| {
            LogError::Pushback {
                detail: "the log is not writable right now".into(),
                retry_after: self.ctx.config.retry_after,
            }
        })
    }

    fn finish(&mut self) {
        self.rx.close();
        let retry_after = self.ctx.config.retry_after;
        let stopped = || LogError::Pushback {
            detail: "the service is shutting down".into(),
            retry_after,
        };
        if let Some(r) = self.held.take() {
            self.answer(r, Err(stopped()));
        }
        while let Ok(r) = self.rx.try_recv() {
            self.answer(r, Err(stopped()));
        }
        self.update_queue_depth();
        // Dropping the lease releases it.
        self.lease = None;
    }
}

/// The status of a log whose tree another writer moved.
fn moved_under_us(name: &str) -> Status {
    Status::NotWriter(format!(
        "log {name}: another writer moved the log; this process serves reads only"
    ))
}

/// The error a submission gets for a log in this status (None: writable).
pub(crate) fn status_error(status: &Status, retry_after: Duration) -> Option<LogError> {
    match status {
        Status::Writable => None,
        Status::NotWriter(m) | Status::Refused(m) => Some(LogError::Pushback {
            detail: m.clone(),
            retry_after,
        }),
        Status::Unavailable(m) => Some(LogError::Unavailable(m.clone())),
        Status::Stopped => Some(LogError::Pushback {
            detail: "the service is shutting down".into(),
            retry_after,
        }),
    }
}

/// What the receipt task needs from a committed (or all-duplicate) batch.
struct Answers {
    requests: Vec<Request>,
    slots: Vec<Vec<Slot>>,
    entries: Vec<NewEntry>,
    existing: HashMap<u64, String>,
    old_size: u64,
    snapshot: Arc<Snapshot>,
    overlay: HashMap<(u8, u64), Bytes>,
}

/// Answers waiting submitters (from the sequencer or the receipt task).
struct Reply {
    log: Arc<Log>,
    ctx: Arc<Ctx>,
}

impl Reply {
    /// Builds every inclusion proof of the batch in one pass and answers
    /// each request.
    async fn send(self, job: Answers) {
        let Answers {
            requests,
            slots,
            entries,
            existing,
            old_size,
            snapshot,
            overlay,
        } = job;
        let Some(checkpoint) = snapshot.checkpoint.clone() else {
            return self.fail_all(requests, || {
                LogError::Internal(anyhow::anyhow!("no checkpoint after a batch"))
            });
        };
        let size = snapshot.size;
        let index_of = |s: &Slot| match *s {
            Slot::New { pos, .. } => old_size + pos as u64,
            Slot::Existing(i) => i,
        };
        let mut indexes: Vec<u64> = slots.iter().flatten().map(index_of).collect();
        indexes.sort_unstable();
        indexes.dedup();
        let jobs: Vec<ProofJob> = indexes
            .iter()
            .map(|&index| ProofJob::Inclusion { index, size })
            .collect();
        let source = TileSource {
            log: &self.log.name,
            storage: &*self.ctx.storage,
            cache: &self.ctx.cache,
            snapshot: &snapshot,
            overlay: Some(&overlay),
        };
        let proofs: HashMap<u64, Vec<Hash>> = match source.prove(&jobs).await {
            Ok(p) => indexes.iter().copied().zip(p).collect(),
            Err(e) => {
                tracing::error!(log = %self.log.name, "cannot build receipts: {e:?}");
                let msg = e.to_string();
                return self.fail_all(requests, || {
                    LogError::Unavailable(format!("receipt not available, retry: {msg}"))
                });
            }
        };
        let checkpoint: Arc<str> = checkpoint.into();
        for (r, s) in requests.into_iter().zip(slots) {
            let items = s
                .iter()
                .map(|slot| {
                    let index = index_of(slot);
                    let (leaf, created) = match *slot {
                        Slot::New { pos, created } => (
                            String::from_utf8_lossy(&entries[pos].leaf).into_owned(),
                            created,
                        ),
                        Slot::Existing(i) => (existing[&i].clone(), false),
                    };
                    Integrated {
                        index,
                        leaf,
                        proof: proofs[&index].clone(),
                        created,
                    }
                })
                .collect();
            self.answer(
                r,
                Ok(Integration {
                    checkpoint: checkpoint.clone(),
                    items,
                }),
            );
        }
        self.update_queue_depth();
    }

    fn answer(&self, r: Request, result: Result<Integration, LogError>) {
        let m = &self.ctx.metrics;
        let outcome = |o: &str| SubmissionLabels {
            log: self.log.name.to_string(),
            outcome: o.to_string(),
        };
        match &result {
            Ok(Integration { items: subs, .. }) => {
                let created = subs.iter().filter(|s| s.created).count() as u64;
                m.submissions
                    .get_or_create(&outcome("created"))
                    .inc_by(created);
                m.submissions
                    .get_or_create(&outcome("duplicate"))
                    .inc_by(subs.len() as u64 - created);
            }
            Err(LogError::Pushback { .. }) => {
                m.submissions
                    .get_or_create(&outcome("pushback"))
                    .inc_by(r.items.len() as u64);
            }
            Err(_) => {
                m.submissions
                    .get_or_create(&outcome("failed"))
                    .inc_by(r.items.len() as u64);
            }
        }
        m.time_to_receipt
            .get_or_create(&self.log.label)
            .observe(r.enqueued.elapsed().as_secs_f64());
        let _ = r.reply.send(result);
        // `r` (and its queue slots) is released here.
    }

    fn fail_all(&self, requests: Vec<Request>, e: impl Fn() -> LogError) {
        for r in requests {
            self.answer(r, Err(e()));
        }
        self.update_queue_depth();
    }

    fn update_queue_depth(&self) {
        let used = self
            .ctx
            .config
            .queue_capacity
            .saturating_sub(self.log.slots.available_permits());
        self.ctx
            .metrics
            .queue_depth
            .get_or_create(&self.log.label)
            .set(used as i64);
    }
}
