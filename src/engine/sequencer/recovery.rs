//! Becoming the writer (lease, then load and verify the stored state) and
//! finding out what happened to a commit whose outcome is unknown.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use stele_core::note;
use stele_core::tile::{partial_tiles, TileId, TreeBuilder};
use stele_core::{EMPTY_ROOT, HASH_SIZE};

use super::commit::Prepared;
use super::{mark, Mode, Sequencer, MAX_BACKOFF};
use crate::engine::log::Status;
use crate::engine::tiles::{ProofJob, Snapshot, TileSource};
use crate::error::DATABASE_UNAVAILABLE;
use crate::registry::Registry;
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
                        self.follower(Status::Unavailable(DATABASE_UNAVAILABLE.into()))
                    }
                }
            }
            Ok(None) => self.follower(Status::NotWriter(format!(
                "another process is the writer of log {name}; this one serves reads only"
            ))),
            Err(e) => {
                tracing::warn!(log = %name, "could not take the writer lease: {e}");
                self.follower(Status::Unavailable(DATABASE_UNAVAILABLE.into()))
            }
        }
    }

    /// Loads the stored state and checks that the stored partial tiles
    /// reproduce the root of the stored checkpoint, signed by this log's key.
    /// An empty log gets its first (size 0) checkpoint here.
    async fn recover(&mut self) -> Result<(), Recovery> {
        let storage = &self.ctx.storage;
        let name = self.log.name.as_str();
        let mark = match &self.log.mark_file {
            Some(path) => mark::load(path, &self.log.verifier)
                .await
                .map_err(Recovery::Refuse)?
                .map(|m| (path.clone(), m)),
            None => None,
        };
        let mut state = storage
            .log_state(name)
            .await?
            .ok_or_else(|| Recovery::Refuse("the log does not exist in storage".into()))?;
        if let Some((path, m)) = &mark {
            if state.tree_size == 0 && m.size > 0 {
                return Err(Recovery::Refuse(format!(
                    "the database holds an empty log, but this log's key already signed a tree of size {} (high-water mark {}): an empty or wrong database with a used key; refusing to sign",
                    m.size,
                    path.display()
                )));
            }
        }
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
        // Entries beyond the signed size would make every commit fail.
        if let Some(e) = storage
            .read_entries(name, size, size.saturating_add(1))
            .await?
            .first()
        {
            return Err(Recovery::Refuse(format!(
                "storage holds entry {} beyond the tree size {size} (a restore or a manual change?)",
                e.index
            )));
        }
        let (partials, builder) = self.stored_partials(size).await?;
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
        // What this key signed before (the mark) and what this process
        // served before (as reader or writer) must be prefixes of what it
        // now writes on.
        if let Some((path, m)) = &mark {
            self.extends(&cp, &note_text, m)
                .await
                .map_err(|d| Recovery::Refuse(d.against_mark(&cp, m, path)))?;
        }
        self.extends_served(&cp, &note_text)
            .await
            .map_err(Recovery::Refuse)?;
        // Storage ahead of the mark (a crash between a commit and the mark's
        // write, or a first start with marks): move the mark up.
        if mark.as_ref().map(|(_, m)| m.size) != Some(cp.size) {
            self.mark(&note_text).await.map_err(Recovery::Refuse)?;
        }
        let registry = self.replay_registry(&Registry::default(), 0, size).await?;
        self.registry = Arc::new(registry);
        self.log.set_registry(self.registry.clone(), size);
        self.builder = builder;
        self.last_ts = state.last_ts_ms;
        self.bundle_edge = (size % stele_core::tile::TILE_WIDTH == 0).then(Vec::new);
        self.log
            .set_snapshot(Snapshot::new(size, Some(note_text), partials));
        self.ctx
            .metrics
            .tree_size
            .get_or_create(&self.log.label)
            .set(size as i64);
        // Before signing anything new: what the witnesses cosigned must be
        // a prefix of this tree (an unreachable witness is only a failure;
        // the high-water mark still guards this key).
        if let Some(f) = self.log.witnesses.clone() {
            f.load(&self.log, &self.ctx).await;
            if let Some(alarm) = f.collect(&self.log, &self.ctx, true).await {
                return Err(Recovery::Refuse(alarm));
            }
        }
        Ok(())
    }

    /// `base` with the registry entries of `start..end` replayed onto it.
    /// An entry that breaks the registry's rules means storage was written
    /// around the sequencer: refuse.
    async fn replay_registry(
        &self,
        base: &Registry,
        start: u64,
        end: u64,
    ) -> Result<Registry, Recovery> {
        let entries = self
            .ctx
            .storage
            .registry_entries(&self.log.name, start, end)
            .await?;
        let mut registry = base.clone();
        for e in entries {
            match registry.replay(e.index, &e.leaf, false) {
                Ok(true) => {}
                Ok(false) => {
                    return Err(Recovery::Refuse(format!(
                        "storage returned entry {} as a registry entry, but it is not one",
                        e.index
                    )))
                }
                Err(why) => {
                    return Err(Recovery::Refuse(format!(
                        "the registry entry at index {} breaks the registry's rules: {why}",
                        e.index
                    )))
                }
            }
        }
        Ok(registry)
    }

    /// The stored partial hash tiles of the tree of `size` leaves, each cut
    /// to its width at that size (storage may hold a wider one: tiles only
    /// grow), and the right edge they make.
    async fn stored_partials(
        &self,
        size: u64,
    ) -> Result<(HashMap<(u8, u64), Bytes>, TreeBuilder), Recovery> {
        let ids = partial_tiles(size);
        let keys: Vec<(u8, u64)> = ids.iter().map(|t| (t.level, t.index)).collect();
        let data = self.ctx.storage.read_tiles(&self.log.name, &keys).await?;
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
        Ok((partials, builder))
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
                        if let Err(why) = self.mark(&prepared.note).await {
                            return self.refused(why);
                        }
                        // Its entries are not at hand: bundles come from
                        // storage until the next bundle boundary.
                        self.bundle_edge = None;
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
                        .set_status(Status::Unavailable(DATABASE_UNAVAILABLE.into()));
                    self.idle(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        Mode::Reload { old_size, prepared }
    }

    /// Re-reads the latest checkpoint from storage (not the writer: reads
    /// only need the size and the note; tiles come from storage). A stored
    /// checkpoint is served only if it verifies with the log's key and
    /// extends the one served so far: storage that went back (a restore)
    /// or forked is never served, and the log refuses writes.
    ///
    /// On a read node, the stored checkpoint must also extend the newest
    /// one this node ever served (its served mark, `reader.rs`): one
    /// smaller is not served yet ([`Refreshed::Behind`]), and the mark is
    /// moved up before a larger one is served.
    pub(super) async fn refresh_snapshot(&mut self) -> Refreshed {
        let s = match self.ctx.storage.log_state(&self.log.name).await {
            Ok(Some(s)) => s,
            Ok(None) => {
                return Refreshed::Behind(format!(
                    "the database holds no log {} (yet)",
                    self.log.name
                ))
            }
            Err(e) => {
                tracing::warn!(log = %self.log.name, "cannot read the log state: {e}");
                return Refreshed::Unreadable;
            }
        };
        let cur = self.log.snapshot();
        if s.tree_size == cur.size && s.checkpoint == cur.checkpoint {
            return Refreshed::Same;
        }
        let Some(note_text) = s.checkpoint else {
            return Refreshed::Same;
        };
        let checked = match note::open_checkpoint(&note_text, &self.log.verifier) {
            Ok(cp) if cp.size == s.tree_size && cp.origin.as_str() == &*self.log.origin => {
                if let Some(behind) = self.below_served_mark(&cp) {
                    return Refreshed::Behind(behind);
                }
                self.extends_served(&cp, &note_text).await.map(|()| cp)
            }
            Ok(cp) => Err(format!(
                "the stored checkpoint (size {}, origin {:?}) does not match the stored tree size {}",
                cp.size, cp.origin, s.tree_size
            )),
            Err(e) => Err(format!(
                "the stored checkpoint does not verify with the log's key: {e}"
            )),
        };
        match checked {
            Ok(cp) => {
                // The right edge in memory, as on the writer, so that a
                // proof reads no partial tile from storage; checked against
                // the root first.
                let partials = match self.stored_partials(cp.size).await {
                    Ok((p, b)) if b.root() == cp.root => p,
                    Ok(_) => {
                        return Refreshed::Behind(format!(
                            "the stored partial tiles at size {} do not reproduce the root of its checkpoint",
                            cp.size
                        ))
                    }
                    Err(Recovery::Refuse(why)) => return Refreshed::Behind(why),
                    Err(Recovery::Storage(e)) => {
                        tracing::warn!(log = %self.log.name, "cannot read the partial tiles: {e}");
                        return Refreshed::Unreadable;
                    }
                };
                if let Err(why) = self.move_served_mark(&cp, &note_text).await {
                    return Refreshed::Behind(why);
                }
                // The registry follows the tree (a reader answers the
                // registry's reads with it); if it cannot be read now, the
                // next refresh tries again from where it is.
                let (registry, covered) = self.log.registry_at();
                if cp.size > covered {
                    match self.replay_registry(&registry, covered, cp.size).await {
                        Ok(r) => self.log.set_registry(Arc::new(r), cp.size),
                        Err(Recovery::Refuse(why)) => {
                            tracing::error!(log = %self.log.name, "{why}");
                        }
                        Err(Recovery::Storage(e)) => {
                            tracing::warn!(log = %self.log.name, "could not read the registry: {e}");
                        }
                    }
                }
                self.log
                    .set_snapshot(Snapshot::new(cp.size, Some(note_text), partials));
                self.ctx
                    .metrics
                    .tree_size
                    .get_or_create(&self.log.label)
                    .set(cp.size as i64);
                Refreshed::Adopted
            }
            Err(why) => {
                tracing::error!(log = %self.log.name, "not serving what storage now holds: {why}");
                self.log.set_status(Status::Refused(format!(
                    "log {}: storage no longer extends the tree this process served: {why}",
                    self.log.name
                )));
                Refreshed::Refused
            }
        }
    }

    /// Whether `cp` (a verified checkpoint now in storage) extends the
    /// newest checkpoint this process served: on a read node its served
    /// mark (never below what it serves, since it is moved up first, and
    /// it outlives a restart), else the one it serves now.
    async fn extends_served(
        &self,
        cp: &stele_core::checkpoint::Checkpoint,
        note_text: &str,
    ) -> Result<(), String> {
        let old = match &self.served_mark {
            Some(m) => m.clone(),
            None => {
                let served = self.log.snapshot();
                let Some(old_text) = &served.checkpoint else {
                    return Ok(());
                };
                note::open_checkpoint(old_text, &self.log.verifier)
                    .map_err(|e| format!("the served checkpoint no longer verifies: {e}"))?
            }
        };
        self.extends(cp, note_text, &old)
            .await
            .map_err(|d| d.against_served(cp, &old))
    }

    /// Whether `cp` (a verified checkpoint now in storage) extends `old`:
    /// not smaller, the same root at the same size, and provably
    /// consistent (a proof from storage's tiles).
    async fn extends(
        &self,
        cp: &stele_core::checkpoint::Checkpoint,
        note_text: &str,
        old: &stele_core::checkpoint::Checkpoint,
    ) -> Result<(), Divergence> {
        if cp.size < old.size {
            return Err(Divergence::Smaller);
        }
        if cp.size == old.size {
            return if cp.root == old.root {
                Ok(())
            } else {
                Err(Divergence::Fork)
            };
        }
        let snapshot = Snapshot::new(cp.size, Some(note_text.to_string()), HashMap::new());
        let source = TileSource::new(
            self.log.name.as_arc(),
            &*self.ctx.storage,
            &self.ctx.cache,
            &snapshot,
            None,
        );
        let proof = source
            .prove(&[ProofJob::Consistency {
                from: old.size,
                to: cp.size,
            }])
            .await
            .map_err(|e| Divergence::NoProof(e.to_string()))?
            .remove(0);
        stele_core::merkle::verify_consistency(old.size, cp.size, &old.root, &cp.root, &proof)
            .map_err(|e| Divergence::Inconsistent(e.to_string()))
    }
}

/// What [`Sequencer::refresh_snapshot`] found.
pub(super) enum Refreshed {
    /// Nothing new.
    Same,
    /// A newer checkpoint, verified and now served.
    Adopted,
    /// Not served yet, and why (the database is behind what this read
    /// node served, or holds no such log yet, or the served mark could
    /// not be written).
    Behind(String),
    /// The database could not be read.
    Unreadable,
    /// Storage went back or forked: the log is now `Refused`.
    Refused,
}

/// How a stored tree fails to extend an earlier checkpoint.
enum Divergence {
    /// Smaller than it: storage went back.
    Smaller,
    /// A different root at its size.
    Fork,
    /// No consistency proof could be read from storage.
    NoProof(String),
    /// The proof from storage does not verify.
    Inconsistent(String),
}

impl Divergence {
    fn against_served(
        &self,
        cp: &stele_core::checkpoint::Checkpoint,
        old: &stele_core::checkpoint::Checkpoint,
    ) -> String {
        let (new, old) = (cp.size, old.size);
        match self {
            Divergence::Smaller => format!(
                "storage holds a tree of size {new}, smaller than the size {old} already served (restored from an older backup?)"
            ),
            Divergence::Fork => format!(
                "storage holds a different tree at the size {new} already served (a fork)"
            ),
            Divergence::NoProof(e) => format!("no consistency proof from storage: {e}"),
            Divergence::Inconsistent(e) => format!(
                "the stored tree of size {new} is not consistent with the size {old} already served: {e}"
            ),
        }
    }

    fn against_mark(
        &self,
        cp: &stele_core::checkpoint::Checkpoint,
        old: &stele_core::checkpoint::Checkpoint,
        path: &std::path::Path,
    ) -> String {
        let (new, old, path) = (cp.size, old.size, path.display());
        match self {
            Divergence::Smaller => format!(
                "the database holds a tree of size {new}, smaller than the size {old} this log's key already signed (high-water mark {path}): the database was restored from an older backup; refusing to sign a fork (restore the newest backup)"
            ),
            Divergence::Fork => format!(
                "the database holds a different tree at the size {new} this log's key already signed (high-water mark {path}): a fork; refusing to sign"
            ),
            Divergence::NoProof(e) => format!(
                "no consistency proof from storage to the size {old} of the high-water mark {path}: {e}"
            ),
            Divergence::Inconsistent(e) => format!(
                "the database's tree of size {new} is not consistent with the tree of size {old} this log's key already signed (high-water mark {path}): a fork; refusing to sign ({e})"
            ),
        }
    }
}
