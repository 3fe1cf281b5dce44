//! Reading and writing a log on PostgreSQL (see the module docs of
//! [`super`] for the life of a batch).

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::postgres::PgRow;
use sqlx::Row;
use stele_core::Hash;

use super::{map_err, ts_from_ms, Pool, PostgresStorage};
use crate::storage::{
    hash_from, to_i64, to_u64, Batch, Effect, LogReader, LogState, LogWriter, Result, StorageError,
    StoredEntry, StoredPayload,
};

/// How a dedup key is stored: `SHA-256(log || 0x00 || key)`. Uniqueness is
/// enforced by an exclusion constraint over a one-column hash index
/// (migration 0003), so the log is part of the stored key.
fn stored_dedup_key(log: &str, key: &Hash) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(log.as_bytes());
    h.update([0]);
    h.update(key.0);
    h.finalize().into()
}

fn log_state_from(row: &PgRow) -> Result<LogState> {
    let last_ts: Option<DateTime<Utc>> = row.try_get("last_ts").map_err(map_err)?;
    Ok(LogState {
        name: row.try_get("name").map_err(map_err)?,
        origin: row.try_get("origin").map_err(map_err)?,
        tree_size: to_u64(row.try_get("tree_size").map_err(map_err)?)?,
        checkpoint: row.try_get("checkpoint").map_err(map_err)?,
        last_ts_ms: last_ts.map_or(0, |t| t.timestamp_millis()),
    })
}

fn entry_from(row: &PgRow) -> Result<StoredEntry> {
    let leaf_hash: Vec<u8> = row.try_get("leaf_hash").map_err(map_err)?;
    Ok(StoredEntry {
        index: to_u64(row.try_get("idx").map_err(map_err)?)?,
        leaf: row.try_get("leaf").map_err(map_err)?,
        leaf_hash: hash_from(&leaf_hash)?,
    })
}

impl PostgresStorage {
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
            .fetch_all(&mut *self.conn(Pool::Read).await?)
            .await
            .map_err(map_err)?;
        rows.iter().map(entry_from).collect()
    }
}

#[async_trait]
impl LogReader for PostgresStorage {
    async fn log_state(&self, log: &str) -> Result<Option<LogState>> {
        let row = sqlx::query(
            "SELECT name, origin, tree_size, checkpoint, last_ts FROM logs WHERE name = $1",
        )
        .bind(log)
        .fetch_optional(&mut *self.conn(Pool::Write).await?)
        .await
        .map_err(map_err)?;
        row.as_ref().map(log_state_from).transpose()
    }

    async fn read_tiles(&self, log: &str, tiles: &[(u8, u64)]) -> Result<Vec<Option<Vec<u8>>>> {
        if tiles.is_empty() {
            return Ok(Vec::new());
        }
        let levels: Vec<i16> = tiles.iter().map(|t| i16::from(t.0)).collect();
        let idxs = tiles
            .iter()
            .map(|t| to_i64(t.1, "tile index"))
            .collect::<Result<Vec<_>>>()?;
        // One round trip; `ord` maps each row back to its request.
        let rows = sqlx::query(
            "SELECT q.ord, t.data FROM UNNEST($2::smallint[], $3::bigint[]) \
             WITH ORDINALITY AS q(level, idx, ord) \
             JOIN tiles t ON t.log = $1 AND t.level = q.level AND t.idx = q.idx",
        )
        .bind(log)
        .bind(&levels)
        .bind(&idxs)
        .fetch_all(&mut *self.conn(Pool::Read).await?)
        .await
        .map_err(map_err)?;
        let mut out = vec![None; tiles.len()];
        for r in rows {
            let ord: i64 = r.try_get("ord").map_err(map_err)?;
            let slot = usize::try_from(ord - 1)
                .ok()
                .and_then(|i| out.get_mut(i))
                .ok_or_else(|| StorageError::Other(format!("bad ordinality {ord}")))?;
            *slot = Some(r.try_get("data").map_err(map_err)?);
        }
        Ok(out)
    }

    async fn read_entries(&self, log: &str, start: u64, end: u64) -> Result<Vec<StoredEntry>> {
        const ALL: &str = "SELECT idx, leaf, leaf_hash FROM entries \
             WHERE log = $1 AND idx >= $2 AND idx < $3 ORDER BY idx";
        self.entries_in(ALL, log, start, end).await
    }

    async fn registry_entries(&self, log: &str, start: u64, end: u64) -> Result<Vec<StoredEntry>> {
        // The predicate of the partial index `entries_registry` (migration 0004).
        const REGISTRY: &str = "SELECT idx, leaf, leaf_hash FROM entries \
             WHERE log = $1 AND idx >= $2 AND idx < $3 \
             AND substring(leaf FROM octet_length(leaf) - 26) = '\\x2c2274797065223a227374656c652e74797065222c2276223a317d'::bytea \
             ORDER BY idx";
        self.entries_in(REGISTRY, log, start, end).await
    }

    async fn entry_by_leaf_hash(&self, log: &str, leaf_hash: &Hash) -> Result<Option<StoredEntry>> {
        let row = sqlx::query(
            "SELECT idx, leaf, leaf_hash FROM entries \
             WHERE log = $1 AND leaf_hash = $2 ORDER BY idx LIMIT 1",
        )
        .bind(log)
        .bind(leaf_hash.0.as_slice())
        .fetch_optional(&mut *self.conn(Pool::Read).await?)
        .await
        .map_err(map_err)?;
        row.as_ref().map(entry_from).transpose()
    }

    async fn checkpoint_at(&self, log: &str, tree_size: u64) -> Result<Option<String>> {
        let Ok(size) = i64::try_from(tree_size) else {
            return Ok(None);
        };
        sqlx::query_scalar("SELECT note FROM checkpoints WHERE log = $1 AND tree_size = $2")
            .bind(log)
            .bind(size)
            .fetch_optional(&mut *self.conn(Pool::Read).await?)
            .await
            .map_err(map_err)
    }

    async fn checkpoints(&self, log: &str) -> Result<Vec<(u64, String)>> {
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT tree_size, note FROM checkpoints WHERE log = $1 ORDER BY tree_size",
        )
        .bind(log)
        .fetch_all(&mut *self.conn(Pool::Read).await?)
        .await
        .map_err(map_err)?;
        rows.into_iter().map(|(s, n)| Ok((to_u64(s)?, n))).collect()
    }
    async fn witnessed_checkpoint(&self, log: &str) -> Result<Option<(u64, String)>> {
        let row: Option<(Option<i64>, Option<String>)> =
            sqlx::query_as("SELECT witnessed_size, witnessed_note FROM logs WHERE name = $1")
                .bind(log)
                .fetch_optional(&mut *self.conn(Pool::Read).await?)
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
            sqlx::query_scalar("SELECT disclosure FROM payloads WHERE log = $1 AND idx = $2")
                .bind(log)
                .bind(idx)
                .fetch_optional(&mut *self.conn(Pool::Read).await?)
                .await
                .map_err(map_err)?;
        h.flatten().map(|h| hash_from(&h).map(|h| h.0)).transpose()
    }

    async fn payload_events(&self, log: &str, record: u64) -> Result<Vec<u64>> {
        let Ok(record) = i64::try_from(record) else {
            return Ok(Vec::new());
        };
        let rows: Vec<i64> = sqlx::query_scalar(
            "SELECT idx FROM payload_events WHERE log = $1 AND record = $2 ORDER BY idx",
        )
        .bind(log)
        .bind(record)
        .fetch_all(&mut *self.conn(Pool::Read).await?)
        .await
        .map_err(map_err)?;
        rows.into_iter().map(to_u64).collect()
    }

    async fn payload(&self, log: &str, index: u64) -> Result<Option<StoredPayload>> {
        let Ok(idx) = i64::try_from(index) else {
            return Ok(None);
        };
        let row = sqlx::query(
            "SELECT kek_id, wrapped_key, ciphertext, erased_by FROM payloads \
             WHERE log = $1 AND idx = $2",
        )
        .bind(log)
        .bind(idx)
        .fetch_optional(&mut *self.conn(Pool::Read).await?)
        .await
        .map_err(map_err)?;
        let Some(row) = row else { return Ok(None) };
        let erased_by: Option<i64> = row.try_get("erased_by").map_err(map_err)?;
        crate::storage::payload_from(
            row.try_get("kek_id").map_err(map_err)?,
            row.try_get("wrapped_key").map_err(map_err)?,
            row.try_get("ciphertext").map_err(map_err)?,
            erased_by,
        )
        .map(Some)
    }
}

#[async_trait]
impl LogWriter for PostgresStorage {
    async fn ensure_log(&self, name: &str, origin: &str) -> Result<LogState> {
        sqlx::query(
            "INSERT INTO logs (name, origin) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(origin)
        .execute(&mut *self.conn(Pool::Write).await?)
        .await
        .map_err(map_err)?;
        crate::storage::expect_origin(self.log_state(name).await?, name, origin)
    }

    async fn store_witnessed(&self, log: &str, tree_size: u64, note: &str) -> Result<bool> {
        let size = to_i64(tree_size, "tree size")?;
        let done = sqlx::query(
            "UPDATE logs SET witnessed_size = $2, witnessed_note = $3 WHERE name = $1 \
             AND tree_size >= $2 AND (witnessed_size IS NULL OR witnessed_size <= $2)",
        )
        .bind(log)
        .bind(size)
        .bind(note)
        .execute(&mut *self.conn(Pool::Write).await?)
        .await
        .map_err(map_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn commit_batch(&self, batch: &Batch<'_>) -> Result<()> {
        batch.check()?;
        let n = batch.entries.len();
        let (mut idx, mut leaf, mut leaf_hash, mut dedup, mut ts) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for e in batch.entries {
            idx.push(to_i64(e.index, "index")?);
            leaf.push(&e.leaf[..]);
            leaf_hash.push(e.leaf_hash.0.as_slice());
            dedup.push(stored_dedup_key(batch.log, &e.dedup_key));
            ts.push(ts_from_ms(e.ts_ms)?);
        }
        let last_ts = ts.last().copied();
        let mut sealed = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut erased = (Vec::new(), Vec::new(), Vec::new());
        let mut events = (Vec::new(), Vec::new());
        for e in batch.entries {
            match &e.effect {
                Effect::None => {}
                Effect::Access { record } => {
                    events.0.push(to_i64(*record, "index")?);
                    events.1.push(to_i64(e.index, "index")?);
                }
                Effect::Seal(p) => {
                    sealed.0.push(to_i64(e.index, "index")?);
                    sealed.1.push(p.kek_id.as_str());
                    sealed.2.push(p.wrapped_key.as_slice());
                    sealed.3.push(p.ciphertext.as_slice());
                }
                Effect::Erase {
                    record,
                    new_dedup_key,
                } => {
                    erased.0.push(to_i64(*record, "index")?);
                    erased.1.push(to_i64(e.index, "index")?);
                    erased.2.push(new_dedup_key.0.as_slice());
                    events.0.push(to_i64(*record, "index")?);
                    events.1.push(to_i64(e.index, "index")?);
                }
            }
        }
        let mut t_level = Vec::with_capacity(batch.tiles.len());
        let mut t_idx = Vec::with_capacity(batch.tiles.len());
        let mut t_data = Vec::with_capacity(batch.tiles.len());
        for (id, data) in batch.tiles {
            t_level.push(i16::from(id.level));
            t_idx.push(to_i64(id.index, "tile index")?);
            t_data.push(data.as_slice());
        }

        let mut writer = self.writer.lock().await;
        if writer.is_none() {
            *writer = Some(self.conn(Pool::Write).await?);
        }
        let conn = writer.as_mut().expect("set above");
        // One statement, one round trip, one implicit transaction: the CAS
        // runs in `moved`, and every insert is conditioned on it. A failed
        // CAS writes nothing (0 rows moved → `Conflict`); any error (a stored
        // dedup key → `Duplicate`) aborts the whole statement.
        // The payload store's parts are only in the statement when the
        // batch has them: with empty arrays the planner may still scan
        // `payloads` or `entries` for the joins of an erasure.
        let mut sql = String::from(
            "WITH moved AS ( \
                 UPDATE logs SET tree_size = $3, root = $4, checkpoint = $5, \
                 last_ts = COALESCE($6, last_ts) WHERE name = $1 AND tree_size = $2 \
                 RETURNING 1 \
             ), new_entries AS ( \
                 INSERT INTO entries (log, idx, leaf, leaf_hash, dedup_key, ts) \
                 SELECT $1, u.* FROM UNNEST($7::bigint[], $8::bytea[], $9::bytea[], \
                 $10::bytea[], $11::timestamptz[]) AS u WHERE EXISTS (SELECT FROM moved) \
             ), new_tiles AS ( \
                 INSERT INTO tiles (log, level, idx, data) \
                 SELECT $1, u.* FROM UNNEST($12::smallint[], $13::bigint[], $14::bytea[]) AS u \
                 WHERE EXISTS (SELECT FROM moved) \
                 ON CONFLICT (log, level, idx) DO UPDATE SET data = EXCLUDED.data \
                 WHERE octet_length(EXCLUDED.data) > octet_length(tiles.data) \
             ), new_checkpoint AS ( \
                 INSERT INTO checkpoints (log, tree_size, note) \
                 SELECT $1, $3, $5 WHERE EXISTS (SELECT FROM moved) \
             )",
        );
        let mut n = 14;
        let mut param = || {
            n += 1;
            format!("${n}")
        };
        if !sealed.0.is_empty() {
            let (a, b, c, d) = (param(), param(), param(), param());
            sql.push_str(&format!(
                ", new_payloads AS ( \
                 INSERT INTO payloads (log, idx, kek_id, wrapped_key, ciphertext) \
                 SELECT $1, u.* FROM UNNEST({a}::bigint[], {b}::text[], {c}::bytea[], \
                 {d}::bytea[]) AS u WHERE EXISTS (SELECT FROM moved))"
            ));
        }
        if !erased.0.is_empty() {
            let (a, b, c) = (param(), param(), param());
            sql.push_str(&format!(
                ", erased AS ( \
                 UPDATE payloads p SET kek_id = NULL, wrapped_key = NULL, ciphertext = NULL, \
                 erased_by = u.by FROM UNNEST({a}::bigint[], {b}::bigint[]) AS u(record, by) \
                 WHERE p.log = $1 AND p.idx = u.record AND p.erased_by IS NULL \
                 AND EXISTS (SELECT FROM moved)), \
                 scrubbed AS ( \
                 UPDATE entries e SET dedup_key = u.key \
                 FROM UNNEST({a}::bigint[], {c}::bytea[]) AS u(record, key) \
                 WHERE e.log = $1 AND e.idx = u.record AND EXISTS (SELECT FROM moved))"
            ));
        }
        if !events.0.is_empty() {
            let (a, b) = (param(), param());
            sql.push_str(&format!(
                ", new_events AS ( \
                 INSERT INTO payload_events (log, record, idx) \
                 SELECT $1, u.* FROM UNNEST({a}::bigint[], {b}::bigint[]) AS u \
                 WHERE EXISTS (SELECT FROM moved))"
            ));
        }
        sql.push_str(" SELECT count(*) FROM moved");
        let mut q = sqlx::query(&sql)
            .bind(batch.log)
            .bind(to_i64(batch.old_size, "tree size")?)
            .bind(to_i64(batch.new_size, "tree size")?)
            .bind(batch.root.0.as_slice())
            .bind(batch.checkpoint)
            .bind(last_ts)
            .bind(&idx)
            .bind(&leaf)
            .bind(&leaf_hash)
            .bind(&dedup)
            .bind(&ts)
            .bind(&t_level)
            .bind(&t_idx)
            .bind(&t_data);
        if !sealed.0.is_empty() {
            q = q
                .bind(&sealed.0)
                .bind(&sealed.1)
                .bind(&sealed.2)
                .bind(&sealed.3);
        }
        if !erased.0.is_empty() {
            q = q.bind(&erased.0).bind(&erased.1).bind(&erased.2);
        }
        if !events.0.is_empty() {
            q = q.bind(&events.0).bind(&events.1);
        }
        let result = q.fetch_one(&mut **conn).await.map_err(map_err);
        // Crash point: if the connection drops before the answer arrives the
        // outcome is unknown to us; the caller reloads the state (see the
        // trait docs). The connection is not reused after such an error.
        let moved: i64 = match result {
            Ok(row) => row.try_get(0).map_err(map_err)?,
            Err(e) => {
                if !matches!(e, StorageError::Duplicate(_)) {
                    if let Some(mut c) = writer.take() {
                        c.close_on_drop();
                    }
                }
                return Err(e);
            }
        };
        if moved != 1 {
            return Err(StorageError::Conflict(format!(
                "log {} is no longer at size {}",
                batch.log, batch.old_size
            )));
        }
        Ok(())
    }

    async fn set_disclosure(&self, log: &str, index: u64, hash: &[u8; 32]) -> Result<bool> {
        let done = sqlx::query("UPDATE payloads SET disclosure = $3 WHERE log = $1 AND idx = $2")
            .bind(log)
            .bind(to_i64(index, "index")?)
            .bind(hash.as_slice())
            .execute(&mut *self.conn(Pool::Write).await?)
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
             WHERE log = $1 AND idx > $2 AND erased_by IS NULL AND kek_id <> $3 \
             ORDER BY idx LIMIT $4",
        )
        .bind(log)
        .bind(after)
        .bind(kek_id)
        .bind(i64::from(limit))
        .fetch_all(&mut *self.conn(Pool::Write).await?)
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
            "UPDATE payloads SET kek_id = $4, wrapped_key = $5 \
             WHERE log = $1 AND idx = $2 AND kek_id = $3 AND erased_by IS NULL",
        )
        .bind(log)
        .bind(to_i64(index, "index")?)
        .bind(old_kek_id)
        .bind(&new.kek_id)
        .bind(new.wrapped_key.as_slice())
        .execute(&mut *self.conn(Pool::Write).await?)
        .await
        .map_err(map_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn find_dedup(&self, log: &str, keys: &[Hash]) -> Result<Vec<(Hash, StoredEntry)>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let stored: HashMap<[u8; 32], Hash> = keys
            .iter()
            .map(|k| (stored_dedup_key(log, k), *k))
            .collect();
        let asked: Vec<[u8; 32]> = stored.keys().copied().collect();
        let rows = sqlx::query(
            "SELECT dedup_key, idx, leaf, leaf_hash FROM entries \
             WHERE dedup_key = ANY($2::bytea[]) AND log = $1",
        )
        .bind(log)
        .bind(&asked)
        .fetch_all(&mut *self.conn(Pool::Write).await?)
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(|r| {
                let key: Vec<u8> = r.try_get("dedup_key").map_err(map_err)?;
                let key = stored
                    .get(key.as_slice())
                    .ok_or_else(|| StorageError::Other("find_dedup: unasked key".into()))?;
                Ok((*key, entry_from(r)?))
            })
            .collect()
    }
}
