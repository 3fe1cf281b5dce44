//! SQLite backend (the embedded default).
//!
//! # Life of a batch
//!
//! The database runs in WAL mode with `synchronous = FULL`, so a transaction
//! is durable when `COMMIT` returns. Writes go through a pool of exactly one
//! connection (in-process writers queue there) and start with
//! `BEGIN IMMEDIATE`, so a writer in another process waits on the busy
//! timeout instead of failing on a lock upgrade. [`Storage::commit_batch`]:
//!
//! 1. `UPDATE logs ... WHERE name = ? AND tree_size = old` (the
//!    compare-and-set; no row → `Conflict`, rolled back);
//! 2. multi-row `INSERT INTO entries` in chunks of [`ENTRY_CHUNK`] rows;
//! 3. tile upserts that only ever widen a tile;
//! 4. `INSERT INTO checkpoints`, `COMMIT`.
//!
//! Readers use a separate pool and see the last committed WAL snapshot, so
//! they see a batch entirely or not at all. A crash before `COMMIT` reaches
//! the WAL leaves the log as it was; after it, the whole batch is there.
//!
//! # Writer lease
//!
//! An exclusive OS file lock (`flock` on Unix) on `<database>.<log>.writer`
//! next to the database file. The OS releases it when the lease is dropped or
//! the process dies; it cannot be lost while held, so `is_held` stays true.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite};

use super::{Result, Storage, StorageError};

mod agencies;
mod lease;
mod log;

/// Rows per multi-row entry insert (6 parameters each, well under SQLite's
/// 32,766-parameter limit).
pub const ENTRY_CHUNK: usize = 500;

/// The SQLite [`Storage`].
pub struct SqliteStorage {
    path: PathBuf,
    reader: SqlitePool,
    writer: SqlitePool,
}

impl SqliteStorage {
    /// Opens (creating if needed) the database file at `path` and runs the
    /// migrations under `migrations/sqlite`.
    pub async fn open(path: &Path) -> anyhow::Result<Self> {
        let base = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        // Page cache, bounded per connection: 64 MiB for the one writer (the
        // leaf-hash and dedup-key indexes take random inserts and outgrow the
        // 2 MiB default), 8 MiB for each reader (reads are mostly served from
        // the engine's tile cache). At most 96 MiB in all.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(
                base.clone()
                    .pragma("cache_size", "-65536")
                    // Erased payloads are overwritten with zeros in the file.
                    .pragma("secure_delete", "ON"),
            )
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(base.pragma("cache_size", "-8192"))
            .await?;
        Ok(SqliteStorage {
            path: path.to_path_buf(),
            reader,
            writer,
        })
    }

    /// Closes both pools (checkpointing the WAL when the last connection closes).
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }

    fn lock_path(&self, log: &str) -> PathBuf {
        let safe = log
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        let tag = if safe && !log.is_empty() {
            log.to_string()
        } else {
            hex::encode(log)
        };
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".{tag}.writer"));
        self.path.with_file_name(name)
    }
}

/// Sorts a sqlx error by what the caller must do.
fn map_err(e: sqlx::Error) -> StorageError {
    use sqlx::Error as E;
    match &e {
        E::Io(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed => {
            StorageError::Unavailable(e.to_string())
        }
        E::Database(db) if db.is_unique_violation() => StorageError::Duplicate(db.message().into()),
        E::Database(db) => {
            let code: i64 = db.code().and_then(|c| c.parse().ok()).unwrap_or(0);
            // BUSY, LOCKED, IOERR, FULL, CANTOPEN: the file is busy or unusable right now.
            match code & 0xff {
                5 | 6 | 10 | 13 | 14 => StorageError::Unavailable(e.to_string()),
                _ => StorageError::Other(e.to_string()),
            }
        }
        _ => StorageError::Other(e.to_string()),
    }
}

fn get<'r, T: sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>>(
    row: &'r SqliteRow,
    col: &str,
) -> Result<T> {
    row.try_get(col).map_err(map_err)
}

#[async_trait]
impl Storage for SqliteStorage {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.reader)
            .await
            .map_err(map_err)?;
        Ok(())
    }
}
