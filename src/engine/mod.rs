//! The engine: logs, their sequencers, caches and read paths. Everything the
//! HTTP layer and the CLI need, with no HTTP types.
//!
//! Vocabulary: a submission is *pending* in the sequencer queue, *sequenced*
//! once it has an index in a batch, and *integrated* once the batch's
//! transaction (entries, tiles, checkpoint, tree size) has committed. Only
//! integrated records get receipts.

use std::sync::Arc;
use std::time::Duration;

use stele_core::note::Signer;
use stele_core::receipt::Receipt;
use stele_core::tile::TilePath;
use stele_core::Hash;

use crate::metrics::Metrics;
use crate::storage::Storage;

pub mod records;

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
    Pushback { detail: String, retry_after: Duration },
    /// 503 + Retry-After: the database is unreachable.
    #[error("{0}")]
    Unavailable(String),
    /// 500: a bug or corrupted state; the cause is logged, not shown.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl LogError {
    pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        LogError::Invalid { field: field.into(), detail: detail.into() }
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

/// The answer to a submission.
#[derive(Clone, Debug)]
pub struct Submitted {
    pub receipt: Receipt,
    /// false when the same agency had already submitted the same body.
    pub created: bool,
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

/// All logs of one deployment.
pub struct Engine {
    // implementation detail
}

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
        todo!()
    }

    pub fn storage(&self) -> &Arc<dyn Storage> {
        todo!()
    }

    pub async fn logs(&self) -> Vec<LogInfo> {
        todo!()
    }

    /// Checks a bearer token (`<agency>.<secret>`), in constant time.
    pub async fn authenticate(&self, token: &str) -> Result<Agency, LogError> {
        todo!()
    }

    /// Submits one record and waits for its receipt.
    pub async fn submit(&self, log: &str, agency: &Agency, record: Record) -> Result<Submitted, LogError> {
        todo!()
    }

    /// Submits up to 1,000 records, all-or-nothing validation, one receipt each.
    pub async fn submit_bulk(&self, log: &str, agency: &Agency, records: Vec<Record>) -> Result<Vec<Submitted>, LogError> {
        todo!()
    }

    /// Latest checkpoint note.
    pub async fn checkpoint(&self, log: &str) -> Result<String, LogError> {
        todo!()
    }

    pub async fn tile(&self, log: &str, path: TilePath) -> Result<TileData, LogError> {
        todo!()
    }

    pub async fn entry(&self, log: &str, index: u64) -> Result<EntryView, LogError> {
        todo!()
    }

    pub async fn entry_by_leaf_hash(&self, log: &str, leaf_hash: &Hash) -> Result<EntryView, LogError> {
        todo!()
    }

    pub async fn inclusion_proof(&self, log: &str, at: Locator, tree_size: Option<u64>) -> Result<InclusionProof, LogError> {
        todo!()
    }

    pub async fn consistency_proof(&self, log: &str, from: u64, to: Option<u64>) -> Result<ConsistencyProof, LogError> {
        todo!()
    }

    /// Ok when the database answers and every sequencer is running and writable.
    pub async fn ready(&self) -> Result<(), String> {
        todo!()
    }

    /// Stops taking submissions, finishes the batch in flight, releases leases.
    pub async fn shutdown(&self) {
        todo!()
    }
}
