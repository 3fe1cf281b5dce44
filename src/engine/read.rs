//! Reads: the logs, checkpoints, tiles and bundles, entries, and proofs.
//! Full tiles and bundles come from the cache; partial tiles from the
//! writer's latest state; storage only on a miss.

use bytes::Bytes;
use stele_core::tile::{TilePath, TILE_WIDTH};
use stele_core::Hash;

use super::cache;
use super::log::Log;
use super::sequencer::Ctx;
use super::tiles::{ProofJob, Snapshot, TileSource};
use super::{Engine, Integrated, LogError};
use crate::storage::StoredEntry;
use std::sync::Arc;

/// A public view of a log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogInfo {
    pub name: String,
    pub origin: String,
    pub vkey: String,
    pub tree_size: u64,
}

/// One entry. The leaf is checked to be UTF-8 (every Stele leaf is JSON).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryView {
    pub index: u64,
    pub leaf: String,
    pub leaf_hash: Hash,
}

/// How an inclusion proof names its leaf.
#[derive(Clone, Copy, Debug)]
pub enum Locator {
    Index(u64),
    LeafHash(Hash),
}

#[derive(Clone, Debug)]
pub struct InclusionProof {
    pub index: u64,
    pub tree_size: u64,
    pub leaf_hash: Hash,
    pub proof: Vec<Hash>,
    /// The checkpoint the log signed at `tree_size`, if it signed one there.
    pub checkpoint: Option<String>,
}

#[derive(Clone, Debug)]
pub struct ConsistencyProof {
    pub from: u64,
    pub to: u64,
    pub proof: Vec<Hash>,
    /// The checkpoint the log signed at `to`, if it signed one there.
    pub checkpoint: Option<String>,
}

/// A tile or bundle and whether it is immutable (full).
/// `Cache-Control` of full tiles and full entry bundles: they never change.
pub const CACHE_IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// `Cache-Control` of partial tiles: they grow as the log grows.
pub const CACHE_PARTIAL: &str = "public, max-age=5";
/// `Cache-Control` of the checkpoint: always ask again.
pub const CACHE_CHECKPOINT: &str = "no-cache";

#[derive(Clone, Debug)]
pub struct TileData {
    pub data: Bytes,
    pub immutable: bool,
}

impl Engine {
    pub async fn logs(&self) -> Vec<LogInfo> {
        self.logs
            .iter()
            .map(|l| LogInfo {
                name: l.name.to_string(),
                origin: l.origin.to_string(),
                vkey: l.vkey.clone(),
                tree_size: l.snapshot().size,
            })
            .collect()
    }

    /// Latest published checkpoint note: with a witness policy, the latest
    /// one a quorum cosigned (with their cosignature lines); without, the
    /// latest the log signed.
    pub async fn checkpoint(&self, log: &str) -> Result<String, LogError> {
        let log = self.log(log)?;
        if let Some((_, note)) = log.public_checkpoint() {
            return Ok(note.to_string());
        }
        Err(match &log.witnesses {
            Some(f) => LogError::Pushback {
                detail: format!(
                    "no checkpoint of this log has reached its witness quorum yet{}",
                    f.failure().map(|w| format!(" ({w})")).unwrap_or_default()
                ),
                retry_after: self.retry_after(),
            },
            None => LogError::NotFound("the log has no checkpoint yet".into()),
        })
    }

    /// How long `?wait=witnessed` waits: two witnessing intervals and two
    /// witness timeouts. `422` for a log without a witness policy.
    pub fn witness_wait(&self, log: &str) -> Result<std::time::Duration, LogError> {
        let log = self.log(log)?;
        match &log.witnesses {
            Some(f) => Ok(f.config.interval * 2 + f.config.timeout * 2),
            None => Err(LogError::invalid(
                "wait",
                format!(
                    "log {} has no witness policy: there is no witnessed checkpoint to wait for",
                    log.name
                ),
            )),
        }
    }

    /// The log's witness policy file, as configured (`NotFound` without one).
    pub fn witness_policy(&self, log: &str) -> Result<String, LogError> {
        let log = self.log(log)?;
        log.witnesses
            .as_ref()
            .map(|f| f.config.policy_text.clone())
            .ok_or_else(|| LogError::NotFound(format!("log {} has no witness policy", log.name)))
    }

    /// A receipt for entry `index`: with a witness policy, against the
    /// latest witnessed checkpoint (waiting up to `wait` for one that
    /// covers the entry; without `wait`, or when it runs out, `503` naming
    /// what is missing); without a policy, against the latest checkpoint.
    pub async fn receipt(
        &self,
        log_name: &str,
        index: u64,
        wait: Option<std::time::Duration>,
    ) -> Result<Integrated, LogError> {
        let log = self.log(log_name)?;
        let snapshot = log.snapshot();
        if index >= snapshot.size {
            return Err(LogError::NotFound(format!(
                "no entry {index}: the tree has {} entries",
                snapshot.size
            )));
        }
        let (size, note) = match &log.witnesses {
            None => match &snapshot.checkpoint {
                Some(c) => (snapshot.size, Arc::<str>::from(c.as_str())),
                None => return Err(LogError::NotFound("the log has no checkpoint yet".into())),
            },
            Some(f) => {
                let mut rx = f.subscribe();
                let deadline = wait.map(|w| tokio::time::Instant::now() + w);
                loop {
                    let current = rx.borrow_and_update().clone();
                    if let Some(p) = current.filter(|p| p.size > index) {
                        break (p.size, p.note.clone());
                    }
                    let waited = match deadline {
                        Some(d) => {
                            f.hurry();
                            tokio::time::timeout_at(d, rx.changed()).await
                        }
                        None => Ok(Ok(())),
                    };
                    if deadline.is_none() || !matches!(waited, Ok(Ok(()))) {
                        return Err(LogError::Pushback {
                            detail: format!(
                                "entry {index} is integrated and has a log-signed receipt, but no checkpoint that covers it has reached the witness quorum yet{}",
                                f.failure().map(|w| format!(" ({w})")).unwrap_or_default()
                            ),
                            retry_after: self.retry_after(),
                        });
                    }
                }
            }
        };
        self.receipt_in(log, index, size, note).await
    }

    /// A receipt for entry `index` in the tree of `note`, whose size is
    /// `size` (beyond `index`).
    pub(super) async fn receipt_in(
        &self,
        log: &Log,
        index: u64,
        size: u64,
        note: Arc<str>,
    ) -> Result<Integrated, LogError> {
        let snapshot = log.snapshot();
        let source = self.source(log, &snapshot);
        let (leaf_hash, proof) = source.leaf_and_inclusion(index, size).await?;
        let entry = self.entry(&log.name, index).await?;
        Ok(Integrated {
            origin: log.origin.clone(),
            index,
            leaf: Bytes::from(entry.leaf.into_bytes()),
            leaf_hash,
            proof,
            checkpoint: note,
            created: false,
            witnessed: log.witnesses.is_some(),
        })
    }

    pub async fn tile(&self, log: &str, path: TilePath) -> Result<TileData, LogError> {
        self.ctx.tile(self.log(log)?, path).await
    }

    pub async fn entry(&self, log: &str, index: u64) -> Result<EntryView, LogError> {
        let log = self.log(log)?;
        let size = log.snapshot().size;
        if index >= size {
            return Err(LogError::NotFound(format!(
                "no entry {index}: the tree has {size} entries"
            )));
        }
        let stored = self
            .ctx
            .storage
            .read_entries(&log.name, index, index + 1)
            .await?;
        match stored.into_iter().next() {
            Some(e) if e.index == index => entry_view(e),
            _ => Err(LogError::bug(format!(
                "entry {index} is missing from storage"
            ))),
        }
    }

    pub async fn entry_by_leaf_hash(
        &self,
        log: &str,
        leaf_hash: &Hash,
    ) -> Result<EntryView, LogError> {
        let log = self.log(log)?;
        let size = log.snapshot().size;
        match self
            .ctx
            .storage
            .entry_by_leaf_hash(&log.name, leaf_hash)
            .await?
        {
            Some(e) if e.index < size => entry_view(e),
            _ => Err(LogError::NotFound(format!(
                "no entry with leaf hash {}",
                leaf_hash.to_hex()
            ))),
        }
    }

    pub async fn inclusion_proof(
        &self,
        log: &str,
        at: Locator,
        tree_size: Option<u64>,
    ) -> Result<InclusionProof, LogError> {
        let log = self.log(log)?;
        let snapshot = log.snapshot();
        let size = tree_size.unwrap_or(snapshot.size);
        if size > snapshot.size {
            return Err(LogError::invalid(
                "tree_size",
                format!("{size} is beyond the current tree size {}", snapshot.size),
            ));
        }
        let source = self.source(log, &snapshot);
        let (index, leaf_hash, proof) = match at {
            Locator::Index(index) => {
                if index >= size {
                    return Err(LogError::invalid(
                        "index",
                        format!("{index} is not below the tree size {size}"),
                    ));
                }
                let (leaf_hash, proof) = source.leaf_and_inclusion(index, size).await?;
                (index, leaf_hash, proof)
            }
            Locator::LeafHash(h) => match self.ctx.storage.entry_by_leaf_hash(&log.name, &h).await?
            {
                Some(e) if e.index < size => {
                    let proof = source
                        .prove(&[ProofJob::Inclusion {
                            index: e.index,
                            size,
                        }])
                        .await?
                        .remove(0);
                    (e.index, h, proof)
                }
                _ => {
                    return Err(LogError::NotFound(format!(
                        "no entry with leaf hash {} in the tree of size {size}",
                        h.to_hex()
                    )))
                }
            },
        };
        let checkpoint = self.checkpoint_at(log, &snapshot, size).await?;
        Ok(InclusionProof {
            index,
            tree_size: size,
            leaf_hash,
            proof,
            checkpoint,
        })
    }

    pub async fn consistency_proof(
        &self,
        log: &str,
        from: u64,
        to: Option<u64>,
    ) -> Result<ConsistencyProof, LogError> {
        let log = self.log(log)?;
        let snapshot = log.snapshot();
        let to = to.unwrap_or(snapshot.size);
        if to > snapshot.size {
            return Err(LogError::invalid(
                "to",
                format!("{to} is beyond the current tree size {}", snapshot.size),
            ));
        }
        if from > to {
            return Err(LogError::invalid(
                "from",
                format!("{from} is larger than to ({to})"),
            ));
        }
        let proof = self
            .source(log, &snapshot)
            .prove(&[ProofJob::Consistency { from, to }])
            .await?
            .remove(0);
        let checkpoint = self.checkpoint_at(log, &snapshot, to).await?;
        Ok(ConsistencyProof {
            from,
            to,
            proof,
            checkpoint,
        })
    }

    pub(super) async fn checkpoint_at(
        &self,
        log: &Log,
        snapshot: &Snapshot,
        size: u64,
    ) -> Result<Option<String>, LogError> {
        if let Some(p) = log.witnesses.as_ref().and_then(|f| f.published()) {
            if p.size == size {
                return Ok(Some(p.note.to_string()));
            }
        }
        if size == snapshot.size && snapshot.checkpoint.is_some() {
            return Ok(snapshot.checkpoint.clone());
        }
        Ok(self.ctx.storage.checkpoint_at(&log.name, size).await?)
    }
}

fn entry_view(e: StoredEntry) -> Result<EntryView, LogError> {
    let leaf = String::from_utf8(e.leaf).map_err(LogError::internal)?;
    Ok(EntryView {
        index: e.index,
        leaf,
        leaf_hash: e.leaf_hash,
    })
}

/// One version of a type with its entry and that entry's inclusion proof.
pub struct ProvenVersion {
    pub version: std::sync::Arc<crate::registry::CompiledType>,
    pub leaf: String,
    pub proof: Vec<Hash>,
}

impl Engine {
    /// The log's record-type registry and the tree size it is read at.
    pub fn registry(
        &self,
        log: &str,
    ) -> Result<(std::sync::Arc<crate::registry::Registry>, u64), LogError> {
        Ok(self.log(log)?.registry_at())
    }

    /// Every version of type `name` in the log, each with its defining
    /// entry and an inclusion proof against one checkpoint: `(tree size,
    /// checkpoint, versions)`. `NotFound` for an unknown type.
    pub async fn type_history(
        &self,
        log_name: &str,
        name: &str,
    ) -> Result<(u64, Option<String>, Vec<ProvenVersion>), LogError> {
        let log = self.log(log_name)?;
        let snapshot = log.snapshot();
        let size = snapshot.size;
        let registry = log.registry();
        // A version applied a moment ago may not be in the served tree yet.
        let versions: Vec<_> = registry
            .versions(name)
            .iter()
            .filter(|v| v.index < size)
            .cloned()
            .collect();
        if versions.is_empty() {
            return Err(LogError::NotFound(format!(
                "record type {name:?} is not registered in log {log_name}"
            )));
        }
        let mut out = Vec::with_capacity(versions.len());
        for v in versions {
            let entry = self.entry(log_name, v.index).await?;
            let p = self
                .inclusion_proof(log_name, Locator::Index(v.index), Some(size))
                .await?;
            out.push(ProvenVersion {
                version: v,
                leaf: entry.leaf,
                proof: p.proof,
            });
        }
        let checkpoint = self.checkpoint_at(log, &snapshot, size).await?;
        Ok((size, checkpoint, out))
    }
}

impl Ctx {
    /// The tiles of `log` as of `snapshot`: its latest state, the cache,
    /// then storage.
    pub(super) fn source<'a>(&'a self, log: &'a Log, snapshot: &'a Snapshot) -> TileSource<'a> {
        TileSource::new(
            log.name.as_arc(),
            &*self.storage,
            &self.cache,
            snapshot,
            None,
        )
    }

    /// A hash tile or entry bundle of `log` (the public tile read, and what
    /// the publisher uploads).
    pub(super) async fn tile(&self, log: &Log, path: TilePath) -> Result<TileData, LogError> {
        let snapshot = log.snapshot();
        let (id, entries) = match path {
            TilePath::Hash(id) => (id, false),
            TilePath::Entries(id) => (id, true),
        };
        let level = if entries { 0 } else { id.level };
        let exists = stele_core::tile::tile_width(level, id.index, snapshot.size);
        if id.width == 0 || id.width > exists || (entries && id.level != 0) {
            return Err(LogError::NotFound(format!(
                "{path} is not in the tree of size {}",
                snapshot.size
            )));
        }
        let immutable = id.is_full();
        if !entries {
            let data = self
                .source(log, &snapshot)
                .hash_tile(id.level, id.index, id.width)
                .await?;
            return Ok(TileData { data, immutable });
        }
        let key = cache::Key {
            log: log.name.as_arc().clone(),
            kind: cache::Kind::Entries,
            level: 0,
            index: id.index,
        };
        // A partial bundle of a bundle that is full by now is a prefix of
        // the full one, which is cached: so every anonymous bundle request
        // costs at most one storage read per full bundle, whatever width
        // it names.
        let full_exists = exists == TILE_WIDTH as u16;
        if full_exists {
            let full = match self.cache.get(&key) {
                Some(data) => data,
                None => {
                    let data = self.read_bundle(log, id.index, TILE_WIDTH as u16).await?;
                    self.cache.insert(key, data.clone());
                    data
                }
            };
            let data = if immutable {
                full
            } else {
                let len = stele_core::tile::truncate_bundle(&full, id.width)
                    .map_err(LogError::internal)?
                    .len();
                full.slice(..len)
            };
            return Ok(TileData { data, immutable });
        }
        // The log's head: the writer holds the partial bundle.
        if let Some(b) = snapshot
            .bundle
            .as_ref()
            .filter(|_| id.index == snapshot.size / TILE_WIDTH)
        {
            let len = stele_core::tile::truncate_bundle(b, id.width)
                .map_err(LogError::internal)?
                .len();
            return Ok(TileData {
                data: b.slice(..len),
                immutable,
            });
        }
        let data = self.read_bundle(log, id.index, id.width).await?;
        Ok(TileData { data, immutable })
    }

    /// Bundle `index` at `width` from storage.
    async fn read_bundle(&self, log: &Log, index: u64, width: u16) -> Result<Bytes, LogError> {
        let start = index * TILE_WIDTH;
        let end = start + u64::from(width);
        let stored = self.storage.read_entries(&log.name, start, end).await?;
        if stored.len() != usize::from(width)
            || stored.iter().zip(start..).any(|(e, i)| e.index != i)
        {
            return Err(LogError::bug(format!(
                "entries {start}..{end} are incomplete in storage"
            )));
        }
        let bundle = stele_core::tile::encode_bundle(stored.iter().map(|e| e.leaf.as_slice()))
            .map_err(LogError::internal)?;
        Ok(Bytes::from(bundle))
    }
}
