//! Becoming the writer (lease, then load and verify the stored state) and
//! finding out what happened to a commit whose outcome is unknown.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use stele_core::note;
use stele_core::tile::{partial_tiles, TileId, TreeBuilder};
use stele_core::{EMPTY_ROOT, HASH_SIZE};

use super::commit::Prepared;
use super::{Mode, Sequencer, MAX_BACKOFF};
use crate::engine::log::Status;
use crate::engine::tiles::Snapshot;
use crate::storage::{Batch, StorageError};

/// Why the stored state could not be taken over.
enum Recovery {
    /// It failed verification: never write.
    Refuse(String),
    /// The database could not be read: try again later.
    Storage(StorageError),
}

impl From<StorageError> for Recovery {
    fn from(e: StorageError) -> Self {
        Recovery::Storage(e)
    }
}

impl Sequencer {
    /// Tries to take the writer lease and, if it gets it, loads and verifies
    /// the stored state. Returns the mode to run in.
    pub(crate) async fn become_writer(&mut self) -> Mode {
        let name = self.log.name.clone();
        match self.ctx.storage.try_acquire_writer(&name).await {
            Ok(Some(lease)) => {
                self.lease = Some(lease);
                match self.recover().await {
                    Ok(()) => {
                        tracing::info!(log = %name, tree_size = self.builder.size(), "writer of the log");
                        self.writer()
                    }
                    Err(Recovery::Refuse(why)) => {
                        self.refused(format!("log {name} refuses writes: {why}"))
                    }
                    Err(Recovery::Storage(e)) => {
                        tracing::warn!(log = %name, "could not load the log state: {e}");
                        self.follower(Status::Unavailable(format!("database unavailable: {e}")))
                    }
                }
            }
            Ok(None) => self.follower(Status::NotWriter(format!(
                "another process is the writer of log {name}; this one serves reads only"
            ))),
            Err(e) => {
                tracing::warn!(log = %name, "could not take the writer lease: {e}");
                self.follower(Status::Unavailable(format!("database unavailable: {e}")))
            }
        }
    }

    /// Loads the stored state and checks that the stored partial tiles
    /// reproduce the root of the stored checkpoint, signed by this log's key.
    /// An empty log gets its first (size 0) checkpoint here.
    async fn recover(&mut self) -> Result<(), Recovery> {
        let storage = &self.ctx.storage;
        let name = self.log.name.as_str();
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
        if cp.origin.as_str() != &*self.log.origin {
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

    /// After a commit with an unknown outcome: find out what storage holds.
    pub(super) async fn reload(&mut self, old_size: u64, prepared: Prepared) -> Mode {
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
                        return self.moved_under_us();
                    }
                    return match self.check_lease() {
                        Mode::Writer => self.writer(),
                        other => other,
                    };
                }
                Ok(None) => {
                    return self.refused(format!("log {name} is missing from storage"));
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
        Mode::Reload { old_size, prepared }
    }

    /// Re-reads the latest checkpoint from storage (not the writer: reads
    /// only need the size and the note; tiles come from storage).
    pub(super) async fn refresh_snapshot(&mut self) {
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
}
