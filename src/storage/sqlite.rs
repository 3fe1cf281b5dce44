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

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite};
use stele_core::Hash;

use super::{
    hash_from, to_i64, to_u64, AgencyRecord, Batch, LogState, Result, Storage, StorageError,
    StoredEntry, WriterLease,
};

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
            .connect_with(base.clone().pragma("cache_size", "-65536"))
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

fn entry_from(row: &SqliteRow) -> Result<StoredEntry> {
    Ok(StoredEntry {
        index: to_u64(get(row, "idx")?)?,
        leaf: get(row, "leaf")?,
        leaf_hash: hash_from(get(row, "leaf_hash")?)?,
    })
}

fn agency_from(row: &SqliteRow) -> Result<AgencyRecord> {
    let types: String = get(row, "types")?;
    Ok(AgencyRecord {
        name: get(row, "name")?,
        token_hash: hash_from(get(row, "token_hash")?)?.0,
        types: serde_json::from_str(&types)
            .map_err(|e| StorageError::Other(format!("agency types: {e}")))?,
        revoked: get(row, "revoked")?,
        created_ms: get(row, "created")?,
    })
}

/// An exclusive lock on the log's lock file, released when dropped.
struct FileLease {
    _file: File,
}

impl WriterLease for FileLease {
    fn is_held(&self) -> bool {
        true
    }
}

#[async_trait]
impl Storage for SqliteStorage {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ensure_log(&self, name: &str, origin: &str) -> Result<LogState> {
        sqlx::query("INSERT INTO logs (name, origin) VALUES (?, ?) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(origin)
            .execute(&self.writer)
            .await
            .map_err(map_err)?;
        super::expect_origin(self.log_state(name).await?, name, origin)
    }

    async fn log_state(&self, log: &str) -> Result<Option<LogState>> {
        let row = sqlx::query(
            "SELECT name, origin, tree_size, checkpoint, last_ts FROM logs WHERE name = ?",
        )
        .bind(log)
        .fetch_optional(&self.reader)
        .await
        .map_err(map_err)?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(LogState {
            name: get(&row, "name")?,
            origin: get(&row, "origin")?,
            tree_size: to_u64(get(&row, "tree_size")?)?,
            checkpoint: get(&row, "checkpoint")?,
            last_ts_ms: get(&row, "last_ts")?,
        }))
    }

    async fn try_acquire_writer(&self, log: &str) -> Result<Option<Box<dyn WriterLease>>> {
        let path = self.lock_path(log);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| StorageError::Unavailable(format!("{}: {e}", path.display())))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Box::new(FileLease { _file: file }))),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(StorageError::Unavailable(format!(
                "{}: {e}",
                path.display()
            ))),
        }
    }

    async fn commit_batch(&self, batch: &Batch<'_>) -> Result<()> {
        batch.check()?;
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)?;
        let moved = sqlx::query(
            "UPDATE logs SET tree_size = ?3, root = ?4, checkpoint = ?5, \
             last_ts = COALESCE(?6, last_ts) WHERE name = ?1 AND tree_size = ?2",
        )
        .bind(batch.log)
        .bind(to_i64(batch.old_size, "tree size")?)
        .bind(to_i64(batch.new_size, "tree size")?)
        .bind(batch.root.0.as_slice())
        .bind(batch.checkpoint)
        .bind(batch.entries.last().map(|e| e.ts_ms))
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        if moved.rows_affected() != 1 {
            // Dropping `tx` rolls back; nothing was written.
            return Err(StorageError::Conflict(format!(
                "log {} is no longer at size {}",
                batch.log, batch.old_size
            )));
        }
        for chunk in batch.entries.chunks(ENTRY_CHUNK) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO entries (log, idx, leaf, leaf_hash, dedup_key, ts) ",
            );
            let mut bad = None;
            q.push_values(chunk, |mut row, e| {
                let idx = i64::try_from(e.index).unwrap_or_else(|_| {
                    bad = Some(e.index);
                    -1
                });
                row.push_bind(batch.log)
                    .push_bind(idx)
                    .push_bind(e.leaf.as_slice())
                    .push_bind(e.leaf_hash.0.as_slice())
                    .push_bind(e.dedup_key.0.as_slice())
                    .push_bind(e.ts_ms);
            });
            if let Some(i) = bad {
                return Err(StorageError::Other(format!("index {i} out of range")));
            }
            q.build().execute(&mut *tx).await.map_err(map_err)?;
        }
        for (id, data) in batch.tiles {
            sqlx::query(
                "INSERT INTO tiles (log, level, idx, data) VALUES (?, ?, ?, ?) \
                 ON CONFLICT (log, level, idx) DO UPDATE SET data = excluded.data \
                 WHERE length(excluded.data) > length(tiles.data)",
            )
            .bind(batch.log)
            .bind(i64::from(id.level))
            .bind(to_i64(id.index, "tile index")?)
            .bind(data.as_slice())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        }
        sqlx::query("INSERT INTO checkpoints (log, tree_size, note) VALUES (?, ?, ?)")
            .bind(batch.log)
            .bind(to_i64(batch.new_size, "tree size")?)
            .bind(batch.checkpoint)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        // Crash point: once COMMIT is in the WAL (fsynced), the batch survives.
        tx.commit().await.map_err(map_err)
    }

    async fn find_dedup(&self, log: &str, keys: &[Hash]) -> Result<Vec<(Hash, u64)>> {
        let mut out = Vec::new();
        for chunk in keys.chunks(ENTRY_CHUNK) {
            let mut q =
                QueryBuilder::<Sqlite>::new("SELECT dedup_key, idx FROM entries WHERE log = ");
            q.push_bind(log).push(" AND dedup_key IN (");
            let mut list = q.separated(", ");
            for k in chunk {
                list.push_bind(k.0.as_slice());
            }
            q.push(")");
            for row in q.build().fetch_all(&self.reader).await.map_err(map_err)? {
                out.push((
                    hash_from(get(&row, "dedup_key")?)?,
                    to_u64(get(&row, "idx")?)?,
                ));
            }
        }
        Ok(out)
    }

    async fn read_tiles(&self, log: &str, tiles: &[(u8, u64)]) -> Result<Vec<Option<Vec<u8>>>> {
        // One read transaction, so every tile comes from the same snapshot.
        let mut tx = self.reader.begin().await.map_err(map_err)?;
        let mut out = Vec::with_capacity(tiles.len());
        for &(level, idx) in tiles {
            let Ok(idx) = i64::try_from(idx) else {
                out.push(None);
                continue;
            };
            let data: Option<Vec<u8>> = sqlx::query_scalar(
                "SELECT data FROM tiles WHERE log = ? AND level = ? AND idx = ?",
            )
            .bind(log)
            .bind(i64::from(level))
            .bind(idx)
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?;
            out.push(data);
        }
        tx.commit().await.map_err(map_err)?;
        Ok(out)
    }

    async fn read_entries(&self, log: &str, start: u64, end: u64) -> Result<Vec<StoredEntry>> {
        let end = end.min(i64::MAX as u64);
        if start >= end {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT idx, leaf, leaf_hash FROM entries \
             WHERE log = ? AND idx >= ? AND idx < ? ORDER BY idx",
        )
        .bind(log)
        .bind(to_i64(start, "index")?)
        .bind(to_i64(end, "index")?)
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        rows.iter().map(entry_from).collect()
    }

    async fn entry_by_leaf_hash(&self, log: &str, leaf_hash: &Hash) -> Result<Option<StoredEntry>> {
        let row = sqlx::query(
            "SELECT idx, leaf, leaf_hash FROM entries \
             WHERE log = ? AND leaf_hash = ? ORDER BY idx LIMIT 1",
        )
        .bind(log)
        .bind(leaf_hash.0.as_slice())
        .fetch_optional(&self.reader)
        .await
        .map_err(map_err)?;
        row.as_ref().map(entry_from).transpose()
    }

    async fn checkpoint_at(&self, log: &str, tree_size: u64) -> Result<Option<String>> {
        let Ok(size) = i64::try_from(tree_size) else {
            return Ok(None);
        };
        sqlx::query_scalar("SELECT note FROM checkpoints WHERE log = ? AND tree_size = ?")
            .bind(log)
            .bind(size)
            .fetch_optional(&self.reader)
            .await
            .map_err(map_err)
    }

    async fn checkpoints(&self, log: &str) -> Result<Vec<(u64, String)>> {
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT tree_size, note FROM checkpoints WHERE log = ? ORDER BY tree_size",
        )
        .bind(log)
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        rows.into_iter().map(|(s, n)| Ok((to_u64(s)?, n))).collect()
    }

    async fn add_agency(&self, agency: &AgencyRecord) -> Result<()> {
        let types = serde_json::to_string(&agency.types)
            .map_err(|e| StorageError::Other(format!("agency types: {e}")))?;
        sqlx::query(
            "INSERT INTO agencies (name, token_hash, types, revoked, created) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&agency.name)
        .bind(agency.token_hash.as_slice())
        .bind(types)
        .bind(agency.revoked)
        .bind(agency.created_ms)
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn list_agencies(&self) -> Result<Vec<AgencyRecord>> {
        let rows = sqlx::query(
            "SELECT name, token_hash, types, revoked, created FROM agencies ORDER BY name",
        )
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        rows.iter().map(agency_from).collect()
    }

    async fn agency(&self, name: &str) -> Result<Option<AgencyRecord>> {
        let row = sqlx::query(
            "SELECT name, token_hash, types, revoked, created FROM agencies WHERE name = ?",
        )
        .bind(name)
        .fetch_optional(&self.reader)
        .await
        .map_err(map_err)?;
        row.as_ref().map(agency_from).transpose()
    }

    async fn revoke_agency(&self, name: &str) -> Result<bool> {
        let done = sqlx::query("UPDATE agencies SET revoked = 1 WHERE name = ?")
            .bind(name)
            .execute(&self.writer)
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.reader)
            .await
            .map_err(map_err)?;
        Ok(())
    }
}
