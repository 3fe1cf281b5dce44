//! The witness's state in SQLite (the default).
//!
//! WAL mode with `synchronous = FULL`: a statement is durable when it
//! returns. The compare-and-set is one statement (an `INSERT … ON CONFLICT
//! DO NOTHING` for the first checkpoint of an origin, an `UPDATE … WHERE
//! tree_size = ? AND root = ?` after that), so it is its own transaction;
//! SQLite serialises writers (a busy writer waits up to the busy timeout),
//! so two processes sharing the file are as safe as two requests.
//!
//! Schema (created on open):
//!
//! ```sql
//! CREATE TABLE IF NOT EXISTS witness_checkpoints (
//!     origin      TEXT PRIMARY KEY,
//!     tree_size   INTEGER NOT NULL,
//!     root        BLOB NOT NULL,     -- 32 bytes
//!     cosigned_at INTEGER NOT NULL,  -- seconds since the epoch
//!     checkpoint  TEXT NOT NULL      -- the cosigned note served to monitors
//! );
//! ```

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use stele_core::witness::WitnessedState;

use super::{to_i64, StoreError, StoredCheckpoint, WitnessStore};

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS witness_checkpoints (
    origin      TEXT PRIMARY KEY,
    tree_size   INTEGER NOT NULL,
    root        BLOB NOT NULL,
    cosigned_at INTEGER NOT NULL,
    checkpoint  TEXT NOT NULL
)";

/// The SQLite [`WitnessStore`].
pub struct SqliteWitnessStore {
    pool: SqlitePool,
}

impl SqliteWitnessStore {
    /// Opens (creating if needed) the database file at `path`.
    pub async fn open(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        sqlx::query(SCHEMA).execute(&pool).await?;
        Ok(SqliteWitnessStore { pool })
    }

    /// Closes the pool (checkpointing the WAL).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn map_err(e: sqlx::Error) -> StoreError {
    use sqlx::Error as E;
    match &e {
        E::Io(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed => {
            StoreError::Unavailable(e.to_string())
        }
        E::Database(db) => {
            let code: i64 = db.code().and_then(|c| c.parse().ok()).unwrap_or(0);
            // BUSY, LOCKED, IOERR, FULL, CANTOPEN.
            match code & 0xff {
                5 | 6 | 10 | 13 | 14 => StoreError::Unavailable(e.to_string()),
                _ => StoreError::Other(e.to_string()),
            }
        }
        _ => StoreError::Other(e.to_string()),
    }
}

#[async_trait]
impl WitnessStore for SqliteWitnessStore {
    async fn latest(&self, origin: &str) -> Result<Option<StoredCheckpoint>, StoreError> {
        let row: Option<super::Row> = sqlx::query_as(&format!(
            "SELECT {} FROM witness_checkpoints WHERE origin = ?",
            super::SELECT_COLUMNS
        ))
        .bind(origin)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        row.map(|r| super::checkpoint_from(origin, r)).transpose()
    }

    async fn compare_and_set(
        &self,
        expected: Option<&WitnessedState>,
        new: &StoredCheckpoint,
    ) -> Result<bool, StoreError> {
        let (size, time) = (to_i64(new.state.size)?, to_i64(new.state.timestamp)?);
        let root = new.state.root.as_bytes().to_vec();
        let done = match expected {
            None => sqlx::query(
                "INSERT INTO witness_checkpoints (origin, tree_size, root, cosigned_at, checkpoint)
                 VALUES (?, ?, ?, ?, ?) ON CONFLICT (origin) DO NOTHING",
            )
            .bind(&new.origin)
            .bind(size)
            .bind(root)
            .bind(time)
            .bind(&new.note),
            Some(old) => sqlx::query(
                "UPDATE witness_checkpoints SET tree_size = ?, root = ?, cosigned_at = ?, checkpoint = ?
                 WHERE origin = ? AND tree_size = ? AND root = ?",
            )
            .bind(size)
            .bind(root)
            .bind(time)
            .bind(&new.note)
            .bind(&new.origin)
            .bind(to_i64(old.size)?)
            .bind(old.root.as_bytes().to_vec()),
        }
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(done.rows_affected() == 1)
    }
}
