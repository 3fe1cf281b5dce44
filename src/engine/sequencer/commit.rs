//! Committing a sequenced batch: append to a copy of the tree, sign, one
//! `commit_batch`, and only on `Ok` adopt the new state.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use stele_core::checkpoint::Checkpoint;
use stele_core::tile::{encode_bundle, partial_tiles, TileId, TreeBuilder, TILE_WIDTH};
use stele_core::Hash;
use tokio::time::Instant;

use super::{Mode, Sequencer};
use crate::engine::cache::{Key, Kind};
use crate::engine::log::Status;
use crate::engine::tiles::Snapshot;
use crate::error::LogError;
use crate::error::DATABASE_UNAVAILABLE;
use crate::registry::Registry;
use crate::storage::{Batch, NewEntry, StorageError};

/// Tiles a batch changed, by `(level, index)`: the receipts of that batch
/// read them before the snapshot is consulted.
pub(super) type Overlay = HashMap<(u8, u64), Bytes>;

/// A batch that was signed and sent to storage.
pub(crate) struct Prepared {
    pub builder: TreeBuilder,
    pub ts_ms: i64,
    pub note: String,
    changed: Vec<(TileId, Vec<u8>)>,
    /// The registry after this batch, if the batch changes it.
    registry: Option<Arc<Registry>>,
}

/// Why a batch was not committed.
pub(super) enum Commit {
    /// A dedup key of the batch is already stored; nothing was written.
    Duplicate(String),
    /// Not committed: answer every waiter with this error, then go on in
    /// this mode (carry on, reload, or follow).
    Failed(LogError, Mode),
}

impl Sequencer {
    pub(super) fn sign(&self, size: u64, root: Hash) -> Result<String, String> {
        self.log
            .signer
            .as_ref()
            .ok_or("a read node holds no signing key")?
            .sign_checkpoint(&Checkpoint::new(self.log.origin.to_string(), size, root))
            .map_err(|e| format!("cannot sign a checkpoint: {e}"))
    }

    /// Appends `entries` to a copy of the tree, signs the checkpoint and
    /// commits. On success the new state is adopted and the changed tiles
    /// are returned (for this batch's receipts).
    pub(super) async fn commit(
        &mut self,
        old_size: u64,
        entries: &[NewEntry],
        ts_ms: i64,
        registry: Option<Arc<Registry>>,
    ) -> Result<Overlay, Commit> {
        let name = self.log.name.clone();
        let hashes: Vec<Hash> = entries.iter().map(|e| e.leaf_hash).collect();
        let mut builder = self.builder.clone();
        let changed = builder.append(&hashes);
        let new_size = builder.size();
        let root = builder.root();
        let note = match self.sign(new_size, root) {
            Ok(n) => n,
            Err(why) => {
                tracing::error!(log = %name, "{why}");
                let e = LogError::bug("cannot sign a checkpoint");
                return Err(Commit::Failed(e, Mode::Writer));
            }
        };
        if let mode @ Mode::Follower = self.check_lease() {
            let e = LogError::Pushback {
                detail: "this process lost the writer lease".into(),
                retry_after: self.ctx.config.retry_after,
            };
            return Err(Commit::Failed(e, mode));
        }
        let batch = Batch {
            log: &name,
            old_size,
            new_size,
            entries,
            tiles: &changed,
            checkpoint: &note,
            root,
        };
        let started = Instant::now();
        let result = self.ctx.storage.commit_batch(&batch).await;
        let m = &self.ctx.metrics;
        m.batch_commit_seconds
            .get_or_create(&self.log.label)
            .observe(started.elapsed().as_secs_f64());
        let prepared = Prepared {
            builder,
            ts_ms,
            note,
            changed,
            registry,
        };
        match result {
            Ok(()) => {
                // The mark covers a checkpoint before anything serves it.
                if let Err(why) = self.mark(&prepared.note).await {
                    let e = LogError::Unavailable(
                        "the record was committed but the log cannot record its high-water mark; retry (a retry is deduplicated)".into(),
                    );
                    return Err(Commit::Failed(e, self.refused(why)));
                }
                self.log.set_commit_failure(None);
                m.batch_size
                    .get_or_create(&self.log.label)
                    .observe(entries.len() as f64);
                self.extend_bundles(old_size, entries);
                Ok(self.adopt(prepared))
            }
            Err(StorageError::Duplicate(why)) => Err(Commit::Duplicate(why)),
            Err(StorageError::Conflict(why)) => {
                tracing::error!(log = %name, "another writer moved the log ({why}); this process stops writing");
                let e = LogError::Unavailable("the log moved under this writer; retry".into());
                Err(Commit::Failed(e, self.moved_under_us()))
            }
            Err(e) => {
                // Outcome unknown: answer 503 now, find out before writing again.
                tracing::warn!(log = %name, "commit of {old_size}..{new_size} failed: {e}; reloading");
                self.log.set_commit_failure(Some(match &e {
                    StorageError::Unavailable(_) => DATABASE_UNAVAILABLE.to_string(),
                    _ => "a storage error (see the server log)".to_string(),
                }));
                self.log
                    .set_status(Status::Unavailable(DATABASE_UNAVAILABLE.into()));
                let answer = LogError::Unavailable(
                    "the record could not be committed; retry (a retry is deduplicated)".into(),
                );
                Err(Commit::Failed(answer, Mode::Reload { old_size, prepared }))
            }
        }
    }

    /// Moves the high-water mark (if the log has one) to `note`, a
    /// checkpoint storage acknowledged.
    pub(super) async fn mark(&self, note: &str) -> Result<(), String> {
        match &self.log.mark_file {
            Some(path) => super::mark::store(path, note)
                .await
                .map_err(|e| format!("log {}: {e}; refusing to sign", self.log.name)),
            None => Ok(()),
        }
    }

    /// Adds a committed batch's leaves to the bundle edge: each bundle they
    /// fill goes into the tile cache (bundles never change once full).
    fn extend_bundles(&mut self, old_size: u64, entries: &[NewEntry]) {
        for (index, e) in (old_size..).zip(entries) {
            if index % TILE_WIDTH == 0 && self.bundle_edge.is_none() {
                self.bundle_edge = Some(Vec::with_capacity(TILE_WIDTH as usize));
            }
            let Some(edge) = &mut self.bundle_edge else {
                continue;
            };
            edge.push(e.leaf.clone());
            if edge.len() == TILE_WIDTH as usize {
                match encode_bundle(edge.iter().map(|l| l.as_ref())) {
                    Ok(b) => self.ctx.cache.insert(
                        Key {
                            log: self.log.name.as_arc().clone(),
                            kind: Kind::Entries,
                            level: 0,
                            index: index / TILE_WIDTH,
                        },
                        Bytes::from(b),
                    ),
                    Err(e) => {
                        tracing::warn!(log = %self.log.name, "bundle {}: {e}", index / TILE_WIDTH)
                    }
                }
                edge.clear();
            }
        }
    }

    /// The partial entry bundle of the committed tree, if its leaves are
    /// known.
    fn partial_bundle(&self) -> Option<Bytes> {
        let edge = self.bundle_edge.as_ref().filter(|e| !e.is_empty())?;
        encode_bundle(edge.iter().map(|l| l.as_ref()))
            .ok()
            .map(Bytes::from)
    }

    /// Makes a committed batch the current state. Returns the changed tiles
    /// (for the receipts of this batch).
    pub(super) fn adopt(&mut self, p: Prepared) -> Overlay {
        let new_size = p.builder.size();
        self.builder = p.builder;
        self.last_ts = p.ts_ms;
        // The registry changes before the batch's checkpoint is served, so
        // a registry entry's receipt means its version is in force.
        if let Some(r) = p.registry {
            self.registry = r;
        }
        self.log.set_registry(self.registry.clone(), new_size);
        let mut partials = self.log.snapshot().partials.clone();
        let mut overlay = HashMap::with_capacity(p.changed.len());
        for (id, data) in p.changed {
            let data = Bytes::from(data);
            if id.is_full() {
                partials.remove(&(id.level, id.index));
                self.ctx.cache.insert(
                    Key {
                        log: self.log.name.as_arc().clone(),
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
        self.log.set_snapshot(
            Snapshot::new(new_size, Some(p.note), partials).with_bundle(self.partial_bundle()),
        );
        self.ctx
            .metrics
            .tree_size
            .get_or_create(&self.log.label)
            .set(new_size as i64);
        overlay
    }
}
