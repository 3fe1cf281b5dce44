//! The witness's state in PostgreSQL.
//!
//! Connections set `synchronous_commit = on`, so a commit is durable on the
//! server when it returns. The compare-and-set is one statement (an
//! `INSERT … ON CONFLICT DO NOTHING` for the first checkpoint of an origin,
//! an `UPDATE … WHERE tree_size = $n AND root = $r` after that), hence one
//! implicit transaction under `READ COMMITTED`: a concurrent `UPDATE` of the
//! same row waits for the first to commit, then re-checks its `WHERE` on
//! the new row and matches nothing. Two witness processes on one database
//! are therefore as safe as two requests.
//!
//! Schema (created on connect):
//!
//! ```sql
//! CREATE TABLE IF NOT EXISTS witness_checkpoints (
//!     origin      TEXT PRIMARY KEY,
//!     tree_size   BIGINT NOT NULL CHECK (tree_size >= 0),
//!     root        BYTEA NOT NULL CHECK (octet_length(root) = 32),
//!     cosigned_at BIGINT NOT NULL CHECK (cosigned_at >= 0),
//!     checkpoint  TEXT NOT NULL
//! );
//! ```

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::ConnectOptions;
use stele_core::witness::WitnessedState;

use super::{to_i64, StoreError, StoredCheckpoint, WitnessStore};

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS witness_checkpoints (
    origin      TEXT PRIMARY KEY,
    tree_size   BIGINT NOT NULL CHECK (tree_size >= 0),
    root        BYTEA NOT NULL CHECK (octet_length(root) = 32),
    cosigned_at BIGINT NOT NULL CHECK (cosigned_at >= 0),
    checkpoint  TEXT NOT NULL
)";

/// The PostgreSQL [`WitnessStore`].
pub struct PostgresWitnessStore {
    pool: PgPool,
}

impl PostgresWitnessStore {
    /// Connects and creates the table if it is missing. Fails if the
    /// database is unreachable now; later outages are `Unavailable`.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let options = PgConnectOptions::from_str(url)?
            .options([("synchronous_commit", "on")])
            .application_name("stele-witness")
            .disable_statement_logging();
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(3))
            .connect_with(options)
            .await?;
        sqlx::query(SCHEMA).execute(&pool).await?;
        Ok(PostgresWitnessStore { pool })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn map_err(e: sqlx::Error) -> StoreError {
    use sqlx::Error as E;
    match &e {
        E::Io(_)
        | E::Tls(_)
        | E::PoolTimedOut
        | E::PoolClosed
        | E::WorkerCrashed
        | E::Protocol(_) => StoreError::Unavailable(e.to_string()),
        E::Database(db) => {
            let code = db.code().unwrap_or_default();
            if code.starts_with("08") || code.starts_with("57P") || code == "53300" {
                StoreError::Unavailable(e.to_string())
            } else {
                StoreError::Other(e.to_string())
            }
        }
        _ => StoreError::Other(e.to_string()),
    }
}

#[async_trait]
impl WitnessStore for PostgresWitnessStore {
    async fn latest(&self, origin: &str) -> Result<Option<StoredCheckpoint>, StoreError> {
        let row: Option<super::Row> = sqlx::query_as(&format!(
            "SELECT {} FROM witness_checkpoints WHERE origin = $1",
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
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (origin) DO NOTHING",
            )
            .bind(&new.origin)
            .bind(size)
            .bind(root)
            .bind(time)
            .bind(&new.note),
            Some(old) => sqlx::query(
                "UPDATE witness_checkpoints SET tree_size = $2, root = $3, cosigned_at = $4, checkpoint = $5
                 WHERE origin = $1 AND tree_size = $6 AND root = $7",
            )
            .bind(&new.origin)
            .bind(size)
            .bind(root)
            .bind(time)
            .bind(&new.note)
            .bind(to_i64(old.size)?)
            .bind(old.root.as_bytes().to_vec()),
        }
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(done.rows_affected() == 1)
    }
}
