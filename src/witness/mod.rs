//! `stele witness`: a C2SP `tlog-witness` server an agency runs beside
//! nothing else.
//!
//! The protocol (parsing, every check, cosigning) is
//! [`stele_core::witness`]; this module adds what needs I/O: the
//! configuration ([`config`]), the durable state behind a small trait
//! ([`WitnessStore`], one file per backend: [`sqlite`], [`postgres`]) and the
//! HTTP server ([`server`]).
//!
//! # Life of an `add-checkpoint`
//!
//! 1. parse the body (`400`), find the log by the checkpoint's origin
//!    (`404`);
//! 2. read the origin's stored state ([`WitnessStore::latest`]);
//! 3. decide ([`stele_core::witness::Witness::add_checkpoint`]): signature
//!    (`403`), sizes (`400`, `409`), consistency (`409`, `422`), and on
//!    success the cosignature line, timestamped with the clock;
//! 4. [`WitnessStore::compare_and_set`] from the state read in 2 to the
//!    new one — one statement, durable when it returns. If another request
//!    moved the state in between, nothing is written and the decision is
//!    taken again on the new state (which answers `409` with the new size);
//! 5. only then answer `200` with the cosignature line.
//!
//! So two concurrent requests from one old size can never both be
//! cosigned, and a cosignature never leaves the process before the state
//! that justifies it is on disk.
//!
//! # Crash points
//!
//! - Before the write commits: nothing changed; the log retries.
//! - After it commits, before the answer (a lost acknowledgement): the
//!   witness already holds the new size. The log's retry from the old size
//!   gets `409` naming the new size; it retries from there (an empty proof,
//!   the same checkpoint) and gets a fresh cosignature. Nothing is rolled
//!   back.
//!
//! The test suite kills the process in exactly that window: with
//! `STELE_WITNESS_TEST_PAUSE_AFTER_WRITE_MS=N` in its environment, `stele
//! witness serve` sleeps N ms after the write commits and before it answers
//! (for tests only; a production witness never sets it).

use async_trait::async_trait;
use stele_core::witness::WitnessedState;

pub mod config;
pub mod postgres;
pub mod server;
pub mod sqlite;

/// The environment variable that makes `stele witness serve` pause between
/// the durable write and the answer (tests only).
pub const TEST_PAUSE_ENV: &str = "STELE_WITNESS_TEST_PAUSE_AFTER_WRITE_MS";

/// What a witness keeps per origin: the state it decides on, and the
/// cosigned checkpoint note it serves to monitors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub origin: String,
    pub state: WitnessedState,
    /// The checkpoint note: its text, the log signatures that verified, and
    /// this witness's cosignature.
    pub note: String,
}

/// Storage errors, sorted by what the caller must do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database is unreachable or busy: answer `503`; the outcome of a
    /// write that failed this way is unknown (it may have committed).
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// Anything else (corrupt row, schema mismatch): answer `500`.
    #[error("storage error: {0}")]
    Other(String),
}

/// The witness's durable state: the latest cosigned checkpoint per origin.
///
/// # Contract
///
/// - [`WitnessStore::compare_and_set`] is atomic and durable: it replaces
///   the origin's row only if the stored size and root are `expected`'s
///   (`None`: no row yet), in one transaction, and returns `Ok(true)` only
///   after that transaction is durable (SQLite WAL with `synchronous =
///   FULL`; PostgreSQL with `synchronous_commit = on`). If the stored state
///   differs it writes nothing and returns `Ok(false)`. So of two calls with
///   the same `expected` and different sizes, at most one succeeds —
///   across threads, connections and processes sharing the database.
/// - The stored size of an origin never decreases through this trait, and
///   at one size the root never changes (the witness's decision guarantees
///   it; the store enforces only the compare-and-set).
/// - [`WitnessStore::latest`] sees every write that returned `Ok(true)`.
/// - `Err(Unavailable)` from a write means "unknown outcome": the caller
///   answers `503` and sends no cosignature.
///
/// Both backends keep one table, `witness_checkpoints`, created by the
/// backend on open (`CREATE TABLE IF NOT EXISTS`, schema in each file)
/// rather than by migrations, so that a witness may share a database with
/// a Stele log, whose migration history it must not touch.
#[async_trait]
pub trait WitnessStore: Send + Sync {
    /// The latest cosigned checkpoint for `origin`, if any.
    async fn latest(&self, origin: &str) -> Result<Option<StoredCheckpoint>, StoreError>;

    /// Stores `new` for `new.origin` if the stored state is `expected`
    /// (compare-and-set on size and root). See the trait's contract.
    async fn compare_and_set(
        &self,
        expected: Option<&WitnessedState>,
        new: &StoredCheckpoint,
    ) -> Result<bool, StoreError>;
}

/// A row of `witness_checkpoints` as both backends read it:
/// `(tree_size, root, cosigned_at, checkpoint)`.
type Row = (i64, Vec<u8>, i64, String);

const SELECT_COLUMNS: &str = "tree_size, root, cosigned_at, checkpoint";

fn checkpoint_from(
    origin: &str,
    (size, root, at, note): Row,
) -> Result<StoredCheckpoint, StoreError> {
    Ok(StoredCheckpoint {
        origin: origin.to_owned(),
        state: WitnessedState {
            size: to_u64(size)?,
            root: hash_from(root)?,
            timestamp: to_u64(at)?,
        },
        note,
    })
}

/// `u64` → `i64` for the databases (sizes and times are below 2^63).
fn to_i64(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Other(format!("{v} does not fit in a BIGINT")))
}

fn to_u64(v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Other(format!("stored value {v} is negative")))
}

fn hash_from(bytes: Vec<u8>) -> Result<stele_core::Hash, StoreError> {
    stele_core::Hash::from_slice(&bytes).map_err(|e| StoreError::Other(format!("stored root: {e}")))
}
