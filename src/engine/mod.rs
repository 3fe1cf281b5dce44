//! The engine: logs, their sequencers, caches and read paths. Everything the
//! HTTP layer and the CLI need, with no HTTP types.
//!
//! Vocabulary: a submission is *pending* in the sequencer queue, *sequenced*
//! once it has an index in a batch, and *integrated* once the batch's
//! transaction (entries, tiles, checkpoint, tree size) has committed. Only
//! integrated records get receipts.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use stele_core::note::Signer;
use stele_core::receipt::Receipt;
use stele_core::tile::TilePath;
use stele_core::Hash;

use crate::metrics::{LogLabel, Metrics, SubmissionLabels};
use crate::storage::{Storage, StorageError};

use self::log::{Integration, Log, Pending, Request, Status};
use self::sequencer::{status_error, Ctx, Sequencer};
use self::tiles::{ProofJob, Snapshot, TileSource};

pub mod agency;
mod cache;
mod disk_cache;
mod log;
pub mod records;
mod sequencer;
mod tiles;

#[cfg(test)]
mod tests;

pub use records::Record;

/// Errors sorted by what the caller must do (the HTTP layer maps each to a
/// status and a problem `type`).
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// 400: not UTF-8, not JSON, not a JSON object.
    #[error("{0}")]
    Malformed(String),
    /// 401: missing, unknown or revoked token.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: the agency may not submit this record type.
    #[error("{0}")]
    Forbidden(String),
    /// 404: unknown log, entry, or checkpoint.
    #[error("{0}")]
    NotFound(String),
    /// 413: body, leaf or attributes too large.
    #[error("{0}")]
    TooLarge(String),
    /// 422: a field is invalid (unknown field, wrong type, bad value,
    /// index or size out of range).
    #[error("{field}: {detail}")]
    Invalid { field: String, detail: String },
    /// 503 + Retry-After: the queue is full, or the log is not writable yet.
    #[error("{detail}")]
    Pushback {
        detail: String,
        retry_after: Duration,
    },
    /// 503 + Retry-After: the database is unreachable.
    #[error("{0}")]
    Unavailable(String),
    /// 500: a bug or corrupted state; the cause is logged, not shown.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl LogError {
    pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        LogError::Invalid {
            field: field.into(),
            detail: detail.into(),
        }
    }
}

/// One log's static configuration.
pub struct LogConfig {
    /// URL segment, `[a-z0-9-]+`.
    pub name: String,
    /// Checkpoint origin; must equal the signer's key name.
    pub origin: String,
    pub signer: Arc<Signer>,
}

/// Sequencer and cache knobs.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Most records in one batch (one transaction).
    pub max_batch: usize,
    /// Longest a batch waits to fill once it has a first record.
    pub max_wait: Duration,
    /// Pending submissions per log beyond which new ones get 503.
    pub queue_capacity: usize,
    /// Bytes of full tiles and entry bundles kept in memory.
    pub cache_bytes: u64,
    /// Directory and size in bytes of the tile cache's disk tier (full hash
    /// tiles with their interiors in an unlinked scratch file); `None`: no
    /// disk tier.
    pub disk_cache: Option<(std::path::PathBuf, u64)>,
    /// How long a verified token is trusted before it is checked again
    /// (revocations take at most this long to bite). Zero disables the cache.
    pub token_cache_ttl: Duration,
    /// Retry-After sent with 503s.
    pub retry_after: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_batch: 1000,
            max_wait: Duration::from_millis(5),
            queue_capacity: 20_000,
            cache_bytes: 64 << 20,
            disk_cache: None,
            token_cache_ttl: Duration::from_secs(5),
            retry_after: Duration::from_secs(1),
        }
    }
}

/// A public view of a log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogInfo {
    pub name: String,
    pub origin: String,
    pub vkey: String,
    pub tree_size: u64,
}

/// An authenticated agency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agency {
    pub name: String,
    pub types: Vec<String>,
}

/// The answer to a submission: what its receipt is made of. [`receipt`]
/// assembles it; the HTTP layer writes the same receipt straight to JSON
/// (`api::receipt_json`) without building its strings first.
///
/// [`receipt`]: Submitted::receipt
#[derive(Clone, Debug)]
pub struct Submitted {
    /// The log's origin.
    pub origin: Arc<str>,
    pub index: u64,
    /// The exact leaf bytes.
    pub leaf: String,
    /// Inclusion proof of the leaf in `checkpoint`'s tree.
    pub proof: Vec<Hash>,
    /// The signed checkpoint note (one per batch, shared by its receipts).
    pub checkpoint: Arc<str>,
    /// false when the same agency had already submitted the same body.
    pub created: bool,
}

impl Submitted {
    pub fn receipt(&self) -> Receipt {
        Receipt::new(
            &self.origin,
            self.index,
            self.leaf.clone(),
            &self.proof,
            self.checkpoint.to_string(),
        )
    }
}

/// One entry.
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
#[derive(Clone, Debug)]
pub struct TileData {
    pub data: bytes::Bytes,
    pub immutable: bool,
}

/// Longest `ready()` waits for the database to answer a ping.
const READY_PING_TIMEOUT: Duration = Duration::from_secs(1);

/// All logs of one deployment.
pub struct Engine {
    ctx: Arc<Ctx>,
    logs: Vec<Arc<Log>>,
    by_name: HashMap<String, Arc<Log>>,
    auth: agency::Authenticator,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: tokio::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// Maps a storage error to what the caller must do.
pub(crate) fn storage_error(e: StorageError) -> LogError {
    match e {
        StorageError::Unavailable(m) => LogError::Unavailable(format!("database unavailable: {m}")),
        other => LogError::Internal(other.into()),
    }
}

/// Most records in one bulk submission.
pub const MAX_BULK: usize = 1000;

impl Engine {
    /// Loads every log, checks that the stored tiles reproduce the root of
    /// the last signed checkpoint, takes the writer lease and starts one
    /// sequencer per log. A log whose check fails is served read-only and
    /// reported by [`Engine::ready`].
    pub async fn start(
        storage: Arc<dyn Storage>,
        logs: Vec<LogConfig>,
        config: EngineConfig,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Arc<Engine>> {
        let names: Vec<Arc<str>> = logs.iter().map(|l| Arc::from(l.name.as_str())).collect();
        let disk = match &config.disk_cache {
            Some((dir, bytes)) => match std::fs::create_dir_all(dir)
                .and_then(|()| disk_cache::DiskTier::create(dir, *bytes))
            {
                Ok(tier) => tier,
                Err(e) => {
                    // Only a cache: proofs still work, from storage.
                    tracing::warn!(
                        "no disk tier for the tile cache (cannot create a scratch file in {}): {e}",
                        dir.display()
                    );
                    None
                }
            },
            None => None,
        };
        let ctx = Arc::new(Ctx {
            storage: storage.clone(),
            cache: cache::TileCache::new(config.cache_bytes, disk, &names),
            metrics,
            config,
        });
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let mut engine_logs = Vec::new();
        let mut by_name = HashMap::new();
        let mut tasks = Vec::new();
        for lc in logs {
            anyhow::ensure!(
                agency::valid_agency_name(&lc.name),
                "log name {:?} must match [a-z0-9-]+ (at most 64 characters)",
                lc.name
            );
            anyhow::ensure!(
                !by_name.contains_key(&lc.name),
                "log {:?} is configured twice",
                lc.name
            );
            anyhow::ensure!(
                lc.signer.name() == lc.origin,
                "log {}: the signing key is named {:?} but the origin is {:?}",
                lc.name,
                lc.signer.name(),
                lc.origin
            );
            let state = storage
                .ensure_log(&lc.name, &lc.origin)
                .await
                .map_err(|e| anyhow::anyhow!("log {}: {e}", lc.name))?;
            let vkey = lc.signer.vkey();
            let verifier = stele_core::note::Verifier::from_vkey(&vkey)
                .map_err(|e| anyhow::anyhow!("log {}: {e}", lc.name))?;
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let log = Arc::new(Log {
                name: Arc::from(lc.name.as_str()),
                origin: lc.origin,
                signer: lc.signer,
                verifier,
                vkey,
                label: LogLabel {
                    log: lc.name.clone(),
                },
                snapshot: RwLock::new(Arc::new(Snapshot::new(
                    state.tree_size,
                    state.checkpoint,
                    HashMap::new(),
                ))),
                status: RwLock::new(Status::NotWriter("starting".into())),
                queue: tx,
                slots: Arc::new(tokio::sync::Semaphore::new(ctx.config.queue_capacity)),
            });
            ctx.metrics
                .tree_size
                .get_or_create(&log.label)
                .set(state.tree_size as i64);
            let mut seq = Sequencer::new(log.clone(), ctx.clone(), rx, stop_rx.clone());
            seq.become_writer().await;
            tasks.push(tokio::spawn(seq.run()));
            by_name.insert(lc.name, log.clone());
            engine_logs.push(log);
        }
        Ok(Arc::new(Engine {
            auth: agency::Authenticator::new(storage, ctx.config.token_cache_ttl),
            ctx,
            logs: engine_logs,
            by_name,
            stop,
            tasks: tokio::sync::Mutex::new(tasks),
        }))
    }

    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.ctx.storage
    }

    fn log(&self, name: &str) -> Result<&Arc<Log>, LogError> {
        self.by_name
            .get(name)
            .ok_or_else(|| LogError::NotFound(format!("no log named {name:?}")))
    }

    fn source<'a>(&'a self, log: &'a Log, snapshot: &'a Snapshot) -> TileSource<'a> {
        TileSource {
            log: &log.name,
            storage: &*self.ctx.storage,
            cache: &self.ctx.cache,
            snapshot,
            overlay: None,
        }
    }

    pub async fn logs(&self) -> Vec<LogInfo> {
        self.logs
            .iter()
            .map(|l| LogInfo {
                name: l.name.to_string(),
                origin: l.origin.clone(),
                vkey: l.vkey.clone(),
                tree_size: l.snapshot().size,
            })
            .collect()
    }

    /// Checks a bearer token (`<agency>.<secret>`), in constant time.
    pub async fn authenticate(&self, token: &str) -> Result<Agency, LogError> {
        self.auth.authenticate(token).await
    }

    /// Submits one record and waits for its receipt.
    pub async fn submit(
        &self,
        log: &str,
        agency: &Agency,
        record: Record,
    ) -> Result<Submitted, LogError> {
        let mut out = self.submit_bulk_inner(log, agency, vec![record]).await?;
        out.pop()
            .ok_or_else(|| LogError::Internal(anyhow::anyhow!("no receipt for a submission")))
    }

    /// Submits up to 1,000 records, all-or-nothing validation, one receipt each.
    pub async fn submit_bulk(
        &self,
        log: &str,
        agency: &Agency,
        records: Vec<Record>,
    ) -> Result<Vec<Submitted>, LogError> {
        if records.is_empty() {
            return Err(LogError::invalid(
                "records",
                "at least one record is required",
            ));
        }
        if records.len() > MAX_BULK {
            return Err(LogError::TooLarge(format!(
                "at most {MAX_BULK} records per bulk submission"
            )));
        }
        self.submit_bulk_inner(log, agency, records).await
    }

    async fn submit_bulk_inner(
        &self,
        log_name: &str,
        agency: &Agency,
        records: Vec<Record>,
    ) -> Result<Vec<Submitted>, LogError> {
        let log = self.log(log_name)?;
        let m = &self.ctx.metrics;
        let count = |outcome: &str, n: usize| {
            m.submissions
                .get_or_create(&SubmissionLabels {
                    log: log_name.to_string(),
                    outcome: outcome.to_string(),
                })
                .inc_by(n as u64)
        };
        let n = records.len();
        if let Some(bad) = records
            .iter()
            .find(|r| !agency::type_allowed(&agency.types, &r.r#type))
        {
            count("rejected", n);
            return Err(LogError::Forbidden(format!(
                "agency {} may not submit records of type {}",
                agency.name, bad.r#type
            )));
        }
        if !agency::valid_agency_name(&agency.name) {
            count("rejected", n);
            return Err(LogError::Unauthorized(format!(
                "invalid agency name {:?}",
                agency.name
            )));
        }
        if let Some(e) = status_error(&log.status(), self.ctx.config.retry_after) {
            count("pushback", n);
            return Err(e);
        }
        let Ok(permit) = log.slots.clone().try_acquire_many_owned(n as u32) else {
            count("pushback", n);
            return Err(LogError::Pushback {
                detail: format!("log {log_name} has too many pending submissions; retry later"),
                retry_after: self.ctx.config.retry_after,
            });
        };
        let used = self
            .ctx
            .config
            .queue_capacity
            .saturating_sub(log.slots.available_permits());
        m.queue_depth.get_or_create(&log.label).set(used as i64);
        let items = records
            .into_iter()
            .map(|record| Pending {
                dedup_key: records::dedup_key(&agency.name, &record),
                agency: agency.name.clone(),
                record,
            })
            .collect();
        let (reply, answer) = tokio::sync::oneshot::channel();
        let request = Request {
            items,
            reply,
            enqueued: Instant::now(),
            _permit: permit,
        };
        let stopped = || LogError::Pushback {
            detail: "the service is shutting down".into(),
            retry_after: self.ctx.config.retry_after,
        };
        if log.queue.send(request).is_err() {
            count("pushback", n);
            return Err(stopped());
        }
        let Integration { checkpoint, items } = answer.await.map_err(|_| stopped())??;
        let origin: Arc<str> = log.origin.as_str().into();
        Ok(items
            .into_iter()
            .map(|i| Submitted {
                origin: origin.clone(),
                index: i.index,
                leaf: i.leaf,
                proof: i.proof,
                checkpoint: checkpoint.clone(),
                created: i.created,
            })
            .collect())
    }

    /// Latest checkpoint note.
    pub async fn checkpoint(&self, log: &str) -> Result<String, LogError> {
        let log = self.log(log)?;
        log.snapshot()
            .checkpoint
            .clone()
            .ok_or_else(|| LogError::NotFound("the log has no checkpoint yet".into()))
    }

    pub async fn tile(&self, log: &str, path: TilePath) -> Result<TileData, LogError> {
        let log = self.log(log)?;
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
            log: log.name.clone(),
            kind: cache::Kind::Entries,
            level: 0,
            index: id.index,
        };
        if immutable {
            if let Some(data) = self.ctx.cache.get(&key) {
                return Ok(TileData { data, immutable });
            }
        }
        let start = id.index * stele_core::tile::TILE_WIDTH;
        let end = start + u64::from(id.width);
        let stored = self
            .ctx
            .storage
            .read_entries(&log.name, start, end)
            .await
            .map_err(storage_error)?;
        if stored.len() != usize::from(id.width)
            || stored.iter().zip(start..).any(|(e, i)| e.index != i)
        {
            return Err(LogError::Internal(anyhow::anyhow!(
                "entries {start}..{end} are incomplete in storage"
            )));
        }
        let bundle = stele_core::tile::encode_bundle(stored.iter().map(|e| e.leaf.as_slice()))
            .map_err(|e| LogError::Internal(e.into()))?;
        let data = bytes::Bytes::from(bundle);
        if immutable {
            self.ctx.cache.insert(key, data.clone());
        }
        Ok(TileData { data, immutable })
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
            .await
            .map_err(storage_error)?;
        match stored.into_iter().next() {
            Some(e) if e.index == index => entry_view(e),
            _ => Err(LogError::Internal(anyhow::anyhow!(
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
            .await
            .map_err(storage_error)?
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
            Locator::LeafHash(h) => match self
                .ctx
                .storage
                .entry_by_leaf_hash(&log.name, &h)
                .await
                .map_err(storage_error)?
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

    async fn checkpoint_at(
        &self,
        log: &Log,
        snapshot: &Snapshot,
        size: u64,
    ) -> Result<Option<String>, LogError> {
        if size == snapshot.size && snapshot.checkpoint.is_some() {
            return Ok(snapshot.checkpoint.clone());
        }
        self.ctx
            .storage
            .checkpoint_at(&log.name, size)
            .await
            .map_err(storage_error)
    }

    /// Ok when the database answers and every sequencer is running and writable.
    pub async fn ready(&self) -> Result<(), String> {
        // Bounded, so a readiness probe gets its 503 quickly during an
        // outage instead of waiting out the pool's acquire timeout.
        match tokio::time::timeout(READY_PING_TIMEOUT, self.ctx.storage.ping()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("database unreachable: {e}")),
            Err(_) => {
                return Err(format!(
                    "database unreachable: no answer within {READY_PING_TIMEOUT:?}"
                ))
            }
        }
        let problems: Vec<String> = self
            .logs
            .iter()
            .filter_map(|l| match l.status() {
                Status::Writable => None,
                Status::NotWriter(m) | Status::Unavailable(m) | Status::Refused(m) => {
                    Some(format!("log {}: {m}", l.name))
                }
                Status::Stopped => Some(format!("log {}: shutting down", l.name)),
            })
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    /// Stops taking submissions, finishes the batch in flight, releases leases.
    pub async fn shutdown(&self) {
        for l in &self.logs {
            *l.status.write().expect("status lock") = Status::Stopped;
        }
        let _ = self.stop.send(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().await);
        for t in tasks {
            if let Err(e) = t.await {
                tracing::error!("a sequencer task failed: {e}");
            }
        }
    }
}

fn entry_view(e: crate::storage::StoredEntry) -> Result<EntryView, LogError> {
    let leaf = String::from_utf8(e.leaf).map_err(|e| LogError::Internal(e.into()))?;
    Ok(EntryView {
        index: e.index,
        leaf,
        leaf_hash: e.leaf_hash,
    })
}
