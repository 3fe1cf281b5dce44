//! Reading and writing a log on SQLite (see the module docs of [`super`]
//! for the life of a batch).

use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Sqlite};
use stele_core::Hash;

use super::{get, map_err, SqliteStorage, ENTRY_CHUNK};
use crate::storage::{
    hash_from, to_i64, to_u64, Batch, Effect, LogReader, LogState, LogWriter, Result, StorageError,
    StoredEntry, StoredPayload,
};

fn entry_from(row: &SqliteRow) -> Result<StoredEntry> {
    Ok(StoredEntry {
        index: to_u64(get(row, "idx")?)?,
        leaf: get(row, "leaf")?,
        leaf_hash: hash_from(get(row, "leaf_hash")?)?,
    })
}

impl SqliteStorage {
    /// The entries `start <= index < end` that `sql` selects (its
    /// parameters: log, start, end).
    async fn entries_in(
        &self,
        sql: &str,
        log: &str,
        start: u64,
        end: u64,
    ) -> Result<Vec<StoredEntry>> {
        let end = end.min(i64::MAX as u64);
        if start >= end {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(sql)
            .bind(log)
            .bind(to_i64(start, "index")?)
            .bind(to_i64(end, "index")?)
            .fetch_all(&self.reader)
            .await
            .map_err(map_err)?;
        rows.iter().map(entry_from).collect()
    }
}

#[async_trait]
impl LogReader for SqliteStorage {
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
        const ALL: &str = "SELECT idx, leaf, leaf_hash FROM entries \
             WHERE log = ? AND idx >= ? AND idx < ? ORDER BY idx";
        self.entries_in(ALL, log, start, end).await
    }

    async fn registry_entries(&self, log: &str, start: u64, end: u64) -> Result<Vec<StoredEntry>> {
        // The predicate of the partial index `entries_registry` (migration 0002).
        const REGISTRY: &str = "SELECT idx, leaf, leaf_hash FROM entries \
             WHERE log = ? AND idx >= ? AND idx < ? \
             AND substr(leaf, -27) = X'2c2274797065223a227374656c652e74797065222c2276223a317d' \
             ORDER BY idx";
        self.entries_in(REGISTRY, log, start, end).await
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
    async fn witnessed_checkpoint(&self, log: &str) -> Result<Option<(u64, String)>> {
        let row: Option<(Option<i64>, Option<String>)> =
            sqlx::query_as("SELECT witnessed_size, witnessed_note FROM logs WHERE name = ?")
                .bind(log)
                .fetch_optional(&self.reader)
                .await
                .map_err(map_err)?;
        match row {
            Some((Some(size), Some(note))) => Ok(Some((to_u64(size)?, note))),
            _ => Ok(None),
        }
    }

    async fn disclosure(&self, log: &str, index: u64) -> Result<Option<[u8; 32]>> {
        let Ok(idx) = i64::try_from(index) else {
            return Ok(None);
        };
        let h: Option<Option<Vec<u8>>> =
            sqlx::query_scalar("SELECT disclosure FROM payloads WHERE log = ? AND idx = ?")
                .bind(log)
                .bind(idx)
                .fetch_optional(&self.reader)
                .await
                .map_err(map_err)?;
        h.flatten().map(|h| hash_from(&h).map(|h| h.0)).transpose()
    }

    async fn payload_events(&self, log: &str, record: u64) -> Result<Vec<u64>> {
        let Ok(record) = i64::try_from(record) else {
            return Ok(Vec::new());
        };
        let rows: Vec<i64> = sqlx::query_scalar(
            "SELECT idx FROM payload_events WHERE log = ? AND record = ? ORDER BY idx",
        )
        .bind(log)
        .bind(record)
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        rows.into_iter().map(to_u64).collect()
    }

    async fn payload(&self, log: &str, index: u64) -> Result<Option<StoredPayload>> {
        let Ok(idx) = i64::try_from(index) else {
            return Ok(None);
        };
        #[allow(clippy::type_complexity)]
        let row: Option<(
            Option<String>,
            Option<Vec<u8>>,
            Option<Vec<u8>>,
            Option<i64>,
        )> = sqlx::query_as(
            "SELECT kek_id, wrapped_key, ciphertext, erased_by FROM payloads \
                 WHERE log = ? AND idx = ?",
        )
        .bind(log)
        .bind(idx)
        .fetch_optional(&self.reader)
        .await
        .map_err(map_err)?;
        row.map(|(k, w, c, e)| crate::storage::payload_from(k, w, c, e))
            .transpose()
    }
}

#[async_trait]
impl LogWriter for SqliteStorage {
    async fn ensure_log(&self, name: &str, origin: &str) -> Result<LogState> {
        sqlx::query("INSERT INTO logs (name, origin) VALUES (?, ?) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(origin)
            .execute(&self.writer)
            .await
            .map_err(map_err)?;
        crate::storage::expect_origin(self.log_state(name).await?, name, origin)
    }

    async fn store_witnessed(&self, log: &str, tree_size: u64, note: &str) -> Result<bool> {
        let size = to_i64(tree_size, "tree size")?;
        let done = sqlx::query(
            "UPDATE logs SET witnessed_size = ?2, witnessed_note = ?3 WHERE name = ?1 \
             AND tree_size >= ?2 AND (witnessed_size IS NULL OR witnessed_size <= ?2)",
        )
        .bind(log)
        .bind(size)
        .bind(note)
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        Ok(done.rows_affected() == 1)
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
                    .push_bind(&e.leaf[..])
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
        for e in batch.entries {
            let event = match &e.effect {
                Effect::Access { record } | Effect::Erase { record, .. } => Some(*record),
                _ => None,
            };
            if let Some(record) = event {
                sqlx::query("INSERT INTO payload_events (log, record, idx) VALUES (?, ?, ?)")
                    .bind(batch.log)
                    .bind(to_i64(record, "index")?)
                    .bind(to_i64(e.index, "index")?)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
            }
            match &e.effect {
                Effect::None | Effect::Access { .. } => {}
                Effect::Seal(p) => {
                    sqlx::query(
                        "INSERT INTO payloads (log, idx, kek_id, wrapped_key, ciphertext) \
                         VALUES (?, ?, ?, ?, ?)",
                    )
                    .bind(batch.log)
                    .bind(to_i64(e.index, "index")?)
                    .bind(&p.kek_id)
                    .bind(p.wrapped_key.as_slice())
                    .bind(p.ciphertext.as_slice())
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                }
                Effect::Erase {
                    record,
                    new_dedup_key,
                } => {
                    let record = to_i64(*record, "index")?;
                    sqlx::query(
                        "UPDATE payloads SET kek_id = NULL, wrapped_key = NULL, \
                         ciphertext = NULL, erased_by = ? \
                         WHERE log = ? AND idx = ? AND erased_by IS NULL",
                    )
                    .bind(to_i64(e.index, "index")?)
                    .bind(batch.log)
                    .bind(record)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                    sqlx::query("UPDATE entries SET dedup_key = ? WHERE log = ? AND idx = ?")
                        .bind(new_dedup_key.0.as_slice())
                        .bind(batch.log)
                        .bind(record)
                        .execute(&mut *tx)
                        .await
                        .map_err(map_err)?;
                }
            }
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

    async fn set_disclosure(&self, log: &str, index: u64, hash: &[u8; 32]) -> Result<bool> {
        let done = sqlx::query("UPDATE payloads SET disclosure = ? WHERE log = ? AND idx = ?")
            .bind(hash.as_slice())
            .bind(log)
            .bind(to_i64(index, "index")?)
            .execute(&self.writer)
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn payloads_to_rewrap(
        &self,
        log: &str,
        kek_id: &str,
        after: Option<u64>,
        limit: u32,
    ) -> Result<Vec<(u64, crate::vault::SealedPayload)>> {
        let after = after.map(|a| to_i64(a, "index")).transpose()?.unwrap_or(-1);
        let rows: Vec<(i64, String, Vec<u8>, Vec<u8>)> = sqlx::query_as(
            "SELECT idx, kek_id, wrapped_key, ciphertext FROM payloads \
             WHERE log = ? AND idx > ? AND erased_by IS NULL AND kek_id <> ? \
             ORDER BY idx LIMIT ?",
        )
        .bind(log)
        .bind(after)
        .bind(kek_id)
        .bind(i64::from(limit))
        .fetch_all(&self.writer)
        .await
        .map_err(map_err)?;
        crate::storage::sealed_rows(rows)
    }

    async fn rewrap_payload(
        &self,
        log: &str,
        index: u64,
        old_kek_id: &str,
        new: &crate::vault::SealedPayload,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE payloads SET kek_id = ?, wrapped_key = ? \
             WHERE log = ? AND idx = ? AND kek_id = ? AND erased_by IS NULL",
        )
        .bind(&new.kek_id)
        .bind(new.wrapped_key.as_slice())
        .bind(log)
        .bind(to_i64(index, "index")?)
        .bind(old_kek_id)
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn find_dedup(&self, log: &str, keys: &[Hash]) -> Result<Vec<(Hash, StoredEntry)>> {
        let mut out = Vec::new();
        for chunk in keys.chunks(ENTRY_CHUNK) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "SELECT dedup_key, idx, leaf, leaf_hash FROM entries WHERE log = ",
            );
            q.push_bind(log).push(" AND dedup_key IN (");
            let mut list = q.separated(", ");
            for k in chunk {
                list.push_bind(k.0.as_slice());
            }
            q.push(")");
            for row in q.build().fetch_all(&self.reader).await.map_err(map_err)? {
                out.push((hash_from(get(&row, "dedup_key")?)?, entry_from(&row)?));
            }
        }
        Ok(out)
    }
}
