//! Storage: traits by role — [`LogReader`], [`LogWriter`], [`WriterLock`],
//! [`Agencies`], together a [`Storage`] — and two native backends
//! (PostgreSQL, SQLite), one folder each, one file per role.
//!
//! # Contract (every backend)
//!
//! - **Durability**: when a write method returns `Ok`, the write has been
//!   committed durably (PostgreSQL with `synchronous_commit = on`; SQLite in
//!   WAL mode with `synchronous = FULL`). A crash after `Ok` loses nothing.
//! - **Atomicity**: [`LogWriter::commit_batch`] writes entries, tiles, the
//!   checkpoint and the new tree size in one transaction: after a crash
//!   either all of it is visible or none of it.
//! - **Compare-and-set**: `commit_batch` advances the tree size only if the
//!   stored size still equals `batch.old_size`; otherwise it changes nothing
//!   and returns [`StorageError::Conflict`]. Two writers can never both extend
//!   a log from the same size.
//! - **Concurrency**: reads may run concurrently with a commit and see either
//!   the state before it or after it, never part of it. Readers must not
//!   assume entries or tiles beyond the tree size they read are absent: a
//!   reader only asks for what a checkpoint it holds covers.
//! - **Errors**: [`StorageError::Unavailable`] means the database could not be
//!   reached or timed out (answer 503, retry later); the outcome of a
//!   `commit_batch` that failed this way is *unknown* — it may have committed
//!   (a lost acknowledgement) — so the caller must reload the log state before
//!   writing again.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use stele_core::tile::TileId;
use stele_core::Hash;

pub mod postgres;
pub mod sqlite;

/// Where a deployment keeps its data.
#[derive(Clone, Debug)]
pub enum Location {
    /// PostgreSQL (production); the URL may carry a password: print it with
    /// [`Location::describe`] only.
    Postgres {
        url: String,
        options: postgres::PgOptions,
    },
    /// An embedded SQLite database file.
    Sqlite { path: PathBuf },
}

impl Location {
    /// Safe to log: the password is redacted.
    pub fn describe(&self) -> String {
        match self {
            Location::Postgres { url, .. } => format!("PostgreSQL {}", redact_url(url)),
            Location::Sqlite { path } => format!("SQLite {}", path.display()),
        }
    }
}

/// Opens the storage at `location`, running its migrations. SQLite's
/// directory is created if missing; PostgreSQL must be reachable now.
pub async fn open(location: &Location) -> anyhow::Result<Arc<dyn Storage>> {
    match location {
        Location::Postgres { url, options } => {
            let s = postgres::PostgresStorage::connect(url, options.clone())
                .await
                .with_context(|| format!("connecting to {}", location.describe()))?;
            Ok(Arc::new(s))
        }
        Location::Sqlite { path } => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating data directory {}", dir.display()))?;
            }
            let s = sqlite::SqliteStorage::open(path)
                .await
                .with_context(|| format!("opening {}", path.display()))?;
            Ok(Arc::new(s))
        }
    }
}

/// The URL with its password (and any `password=` query parameter)
/// replaced by `***`, safe to log. Conservative: whatever lies between the
/// user name's `:` and the *last* `@` is taken for the password, so a
/// password holding `/`, `?` or `@` (unencoded, as people type them) is
/// hidden whole; query parameters are read with the `url` crate.
pub fn redact_url(raw: &str) -> String {
    let redacted = match raw.split_once("://") {
        Some((scheme, rest)) => match rest.rfind('@') {
            Some(at) => match rest[..at].split_once(':') {
                Some((user, _)) => format!("{scheme}://{user}:***@{}", &rest[at + 1..]),
                None => raw.to_string(),
            },
            None => raw.to_string(),
        },
        None => raw.to_string(),
    };
    match url::Url::parse(&redacted) {
        Ok(mut u)
            if u.query_pairs()
                .any(|(k, _)| k.eq_ignore_ascii_case("password")) =>
        {
            let pairs: Vec<(String, String)> = u
                .query_pairs()
                .map(|(k, v)| {
                    let v = if k.eq_ignore_ascii_case("password") {
                        "***".to_string()
                    } else {
                        v.into_owned()
                    };
                    (k.into_owned(), v)
                })
                .collect();
            u.query_pairs_mut().clear().extend_pairs(pairs);
            u.to_string()
        }
        _ => redacted,
    }
}

/// A log as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogState {
    pub name: String,
    pub origin: String,
    /// Size of the tree covered by `checkpoint`.
    pub tree_size: u64,
    /// Latest signed checkpoint note (None before the first one is stored).
    pub checkpoint: Option<String>,
    /// `ts` of the newest entry, milliseconds since the Unix epoch (0 if empty).
    pub last_ts_ms: i64,
}

/// A new entry in a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEntry {
    pub index: u64,
    /// The exact leaf bytes (canonical JSON of the record).
    pub leaf: bytes::Bytes,
    pub leaf_hash: Hash,
    /// Deduplication key: SHA-256 over the agency and its canonical submission.
    pub dedup_key: Hash,
    /// `ts` of the entry, milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// What storing the entry also does to the payload store.
    pub effect: Effect,
}

/// What committing an entry does besides storing it, in the same
/// transaction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Effect {
    #[default]
    None,
    /// A private record: its sealed content is stored beside it.
    Seal(Arc<crate::vault::SealedPayload>),
    /// An access entry about private record `record`: listed among the
    /// record's events (what its disclosure shows).
    Access { record: u64 },
    /// An erasure entry: the sealed content of `record` is destroyed (its
    /// row keeps only this entry's index and its disclosure), and that
    /// record's dedup key — a hash of its content — is replaced by
    /// `new_dedup_key` (random). Listed among the record's events.
    Erase { record: u64, new_dedup_key: Hash },
}

/// A private record's payload as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoredPayload {
    Sealed(crate::vault::SealedPayload),
    /// Erased by the erasure entry at this index.
    Erased {
        by: u64,
    },
}

/// One sequenced batch, committed atomically.
#[derive(Clone, Debug)]
pub struct Batch<'a> {
    pub log: &'a str,
    pub old_size: u64,
    pub new_size: u64,
    /// Entries `old_size .. new_size`, in order.
    pub entries: &'a [NewEntry],
    /// Every hash tile that changed, with its full new contents.
    pub tiles: &'a [(TileId, Vec<u8>)],
    /// The signed checkpoint note for `new_size`.
    pub checkpoint: &'a str,
    pub root: Hash,
}

/// A stored entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEntry {
    pub index: u64,
    pub leaf: Vec<u8>,
    pub leaf_hash: Hash,
}

/// An agency as stored (the token itself is never stored).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgencyRecord {
    /// Agency id, `[a-z0-9-]+`; appears as `agency` in its leaves.
    pub name: String,
    /// SHA-256 of the token's secret part.
    pub token_hash: [u8; 32],
    /// Record-type patterns it may submit at most (`*`, `land.*`,
    /// `land.transfer`); empty = no limit beyond the registry, which grants
    /// each type to its writers.
    pub types: Vec<String>,
    pub revoked: bool,
    /// May change the record-type registry of every log
    /// (`POST /logs/{log}/types`).
    pub registry_admin: bool,
    /// May erase the content of any private record of every log (a
    /// data-protection officer), not only those it wrote.
    pub eraser: bool,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The compare-and-set failed: another writer moved the log.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database is unreachable or timed out; retry later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A uniqueness rule was violated (duplicate agency name, duplicate dedup key).
    #[error("duplicate: {0}")]
    Duplicate(String),
    /// Anything else: a bug or corrupted data.
    #[error("storage error: {0}")]
    Other(String),
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Both backends store sizes and indexes as signed 64-bit integers.
pub(crate) fn to_i64(v: u64, what: &str) -> Result<i64> {
    i64::try_from(v).map_err(|_| StorageError::Other(format!("{what} {v} out of range")))
}

pub(crate) fn to_u64(v: i64) -> Result<u64> {
    u64::try_from(v).map_err(|_| StorageError::Other(format!("negative value {v} in database")))
}

/// A stored 32-byte hash; anything else is corrupt data.
pub(crate) fn hash_from(b: &[u8]) -> Result<Hash> {
    <[u8; 32]>::try_from(b)
        .map(Hash)
        .map_err(|_| StorageError::Other(format!("stored hash has {} bytes", b.len())))
}

/// A payload row as both backends read it: sealed, or erased.
pub(crate) fn payload_from(
    kek_id: Option<String>,
    wrapped_key: Option<Vec<u8>>,
    ciphertext: Option<Vec<u8>>,
    erased_by: Option<i64>,
) -> Result<StoredPayload> {
    match (kek_id, wrapped_key, ciphertext, erased_by) {
        (Some(kek_id), Some(wrapped_key), Some(ciphertext), None) => {
            Ok(StoredPayload::Sealed(crate::vault::SealedPayload {
                kek_id,
                wrapped_key,
                ciphertext,
            }))
        }
        (None, None, None, Some(by)) => Ok(StoredPayload::Erased { by: to_u64(by)? }),
        _ => Err(StorageError::Other(
            "a payload row is neither sealed nor erased".into(),
        )),
    }
}

/// Payload rows `(idx, kek_id, wrapped_key, ciphertext)` as both backends
/// read them for a re-wrap.
#[allow(clippy::type_complexity)]
pub(crate) fn sealed_rows(
    rows: Vec<(i64, String, Vec<u8>, Vec<u8>)>,
) -> Result<Vec<(u64, crate::vault::SealedPayload)>> {
    rows.into_iter()
        .map(|(i, kek_id, wrapped_key, ciphertext)| {
            Ok((
                to_u64(i)?,
                crate::vault::SealedPayload {
                    kek_id,
                    wrapped_key,
                    ciphertext,
                },
            ))
        })
        .collect()
}

/// The end of every backend's `ensure_log`: the log must exist now, and an
/// existing log's origin is never silently changed.
pub(crate) fn expect_origin(state: Option<LogState>, name: &str, origin: &str) -> Result<LogState> {
    let state = state.ok_or_else(|| StorageError::Other(format!("log {name} vanished")))?;
    if state.origin != origin {
        return Err(StorageError::Other(format!(
            "log {name} has origin {:?}, not {origin:?}",
            state.origin
        )));
    }
    Ok(state)
}

/// Held while this process is the only writer of a log. Dropping it
/// releases the lease. `is_held` turns false if the lease was lost (for
/// example the PostgreSQL session that held the advisory lock died) and
/// never turns true again: take a new lease. Loss is noticed by a periodic
/// check (PostgreSQL: every `PgOptions::lease_check_interval`), so it may
/// lag; the compare-and-set in `commit_batch` is what keeps a writer that
/// has not noticed yet from forking the log.
pub trait WriterLease: Send + Sync {
    fn is_held(&self) -> bool;
}

/// Reading a log: what the read paths, recovery and auditors need. Never
/// writes. Reads see committed batches whole (see the module docs), and
/// may run on another connection pool — or, on a read node, on a replica —
/// than the writer, so they can lag behind it but never show part of a
/// batch.
#[async_trait]
pub trait LogReader: Send + Sync {
    /// The log's state, or None if it does not exist.
    async fn log_state(&self, log: &str) -> Result<Option<LogState>>;

    /// The stored version of each hash tile `(level, index)` (the widest one
    /// written so far), or None where there is none.
    async fn read_tiles(&self, log: &str, tiles: &[(u8, u64)]) -> Result<Vec<Option<Vec<u8>>>>;

    /// Entries with `start <= index < end`, in index order.
    async fn read_entries(&self, log: &str, start: u64, end: u64) -> Result<Vec<StoredEntry>>;

    /// The entry with this leaf hash (the lowest index if several).
    async fn entry_by_leaf_hash(&self, log: &str, leaf_hash: &Hash) -> Result<Option<StoredEntry>>;

    /// The registry entries (leaves of type `stele.type`, see
    /// [`crate::registry`]) with `start <= index < end`, in index order.
    async fn registry_entries(&self, log: &str, start: u64, end: u64) -> Result<Vec<StoredEntry>>;

    /// The checkpoint note the log signed for exactly `tree_size`, if any.
    async fn checkpoint_at(&self, log: &str, tree_size: u64) -> Result<Option<String>>;

    /// Every checkpoint the log signed, oldest first, as `(tree_size, note)`
    /// (for audits and tests).
    async fn checkpoints(&self, log: &str) -> Result<Vec<(u64, String)>>;

    /// The latest witnessed checkpoint stored for the log (a quorum of its
    /// witnesses cosigned it): `(tree size, note with cosignature lines)`.
    async fn witnessed_checkpoint(&self, log: &str) -> Result<Option<(u64, String)>>;

    /// The payload of the private record at `index` (None: the entry is
    /// not a private record, or not stored).
    async fn payload(&self, log: &str, index: u64) -> Result<Option<StoredPayload>>;

    /// SHA-256 of the capability of private record `index`'s disclosure,
    /// if one was issued.
    async fn disclosure(&self, log: &str, index: u64) -> Result<Option<[u8; 32]>>;

    /// The indexes of the access and erasure entries about private record
    /// `record`, ascending.
    async fn payload_events(&self, log: &str, record: u64) -> Result<Vec<u64>>;
}

/// Writing a log: only its sequencer calls these, and only while it holds
/// the log's [`WriterLease`].
#[async_trait]
pub trait LogWriter: Send + Sync {
    /// Creates the log if it does not exist; returns its state. An existing
    /// log with a different origin is an error (never silently changed).
    async fn ensure_log(&self, name: &str, origin: &str) -> Result<LogState>;

    /// Commits a batch atomically with compare-and-set on the tree size;
    /// durable when it returns `Ok`. `Duplicate` if a dedup key of the
    /// batch is already stored (nothing written); `Conflict` if the size
    /// moved (nothing written); `Unavailable`: outcome unknown.
    async fn commit_batch(&self, batch: &Batch<'_>) -> Result<()>;

    /// For each dedup key that is stored for `log`, the stored entry (index,
    /// leaf and leaf hash), in one look-up: a batch repeating stored records
    /// is answered from this alone.
    async fn find_dedup(&self, log: &str, keys: &[Hash]) -> Result<Vec<(Hash, StoredEntry)>>;

    /// Stores `note` as the log's latest witnessed checkpoint, durably, if
    /// `tree_size` is at least the stored one's and at most the tree's
    /// size; returns whether it did (false: a larger one is stored, or the
    /// tree is smaller). An equal size replaces the note (more, or newer,
    /// cosignatures of the same tree).
    async fn store_witnessed(&self, log: &str, tree_size: u64, note: &str) -> Result<bool>;

    /// Sets the capability hash of private record `index`'s disclosure
    /// (replacing an earlier one), durably; false if there is no such
    /// payload row.
    async fn set_disclosure(&self, log: &str, index: u64, hash: &[u8; 32]) -> Result<bool>;

    /// Up to `limit` sealed (not erased) payloads of `log` with an index
    /// above `after` (None: from the start) whose data key another KEK
    /// than `kek_id` wrapped, in index order (`stele vault rotate-kek`).
    async fn payloads_to_rewrap(
        &self,
        log: &str,
        kek_id: &str,
        after: Option<u64>,
        limit: u32,
    ) -> Result<Vec<(u64, crate::vault::SealedPayload)>>;

    /// Replaces the wrapped data key of payload `index`, durably, if it is
    /// still sealed with `old_kek_id`; returns whether it did (false: it
    /// was erased or re-wrapped meanwhile). The ciphertext is unchanged.
    async fn rewrap_payload(
        &self,
        log: &str,
        index: u64,
        old_kek_id: &str,
        new: &crate::vault::SealedPayload,
    ) -> Result<bool>;
}

/// The one-writer-per-log lock.
#[async_trait]
pub trait WriterLock: Send + Sync {
    /// Tries to become the only writer of `log`. `Ok(None)` if another
    /// process holds the lease. Never waits for the lease to be free.
    async fn try_acquire_writer(&self, log: &str) -> Result<Option<Box<dyn WriterLease>>>;
}

/// The registered agencies (writers) and their token hashes. Writes are
/// durable when they return.
#[async_trait]
pub trait Agencies: Send + Sync {
    /// Adds an agency; `Duplicate` if the name is taken.
    async fn add_agency(&self, agency: &AgencyRecord) -> Result<()>;
    async fn list_agencies(&self) -> Result<Vec<AgencyRecord>>;
    async fn agency(&self, name: &str) -> Result<Option<AgencyRecord>>;
    /// Marks the agency revoked; false if it does not exist.
    async fn revoke_agency(&self, name: &str) -> Result<bool>;
}

/// A whole backend: every role, plus what operations need. Components take
/// the narrowest role they use (`&dyn LogReader`, `Arc<dyn Agencies>`, ...);
/// a `&dyn Storage` coerces to any of them.
#[async_trait]
pub trait Storage: LogReader + LogWriter + WriterLock + Agencies + 'static {
    /// Which backend this is ("postgres" or "sqlite"), for logs and metrics.
    fn backend(&self) -> &'static str;

    /// Cheap round trip to the database (readiness).
    async fn ping(&self) -> Result<()>;
}

impl Batch<'_> {
    /// Checks the batch's shape: `new_size >= old_size`, and the entries are
    /// exactly `old_size .. new_size` in order. A malformed batch is `Other`
    /// (a caller bug) and is never written.
    pub fn check(&self) -> Result<()> {
        let count = self.new_size.checked_sub(self.old_size).ok_or_else(|| {
            StorageError::Other(format!(
                "batch shrinks the log from {} to {}",
                self.old_size, self.new_size
            ))
        })?;
        if count != self.entries.len() as u64 {
            return Err(StorageError::Other(format!(
                "batch from {} to {} carries {} entries",
                self.old_size,
                self.new_size,
                self.entries.len()
            )));
        }
        for (i, e) in self.entries.iter().enumerate() {
            if e.index != self.old_size + i as u64 {
                return Err(StorageError::Other(format!(
                    "batch entry {i} has index {}, expected {}",
                    e.index,
                    self.old_size + i as u64
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact_url("postgres://h/db?user=u&password=secret"),
            "postgres://h/db?user=u&password=***"
        );
        for raw in [
            "postgres://u:pa/ss@h/db",
            "postgres://u:pa?ss@h/db",
            "postgres://u:p@ss@h/db",
            "postgres://u:p%2Fss@h/db?sslmode=require",
        ] {
            let r = redact_url(raw);
            assert!(
                !r.contains("pa") && !r.contains("ss@") && !r.contains("p@"),
                "{raw} → {r}"
            );
            assert!(r.starts_with("postgres://u:***@h/db"), "{raw} → {r}");
        }
        assert!(!redact_url("postgres://h/db?PASSWORD=hunter2").contains("hunter2"));
    }
}
