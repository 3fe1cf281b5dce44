//! PostgreSQL backend (production).
//!
//! # Life of a batch
//!
//! [`Storage::commit_batch`] is **one statement** — one round trip, one
//! implicit `READ COMMITTED` transaction with `synchronous_commit = on` — on
//! a connection the writer keeps between batches. Its data-modifying CTEs:
//!
//! 1. `moved`: `UPDATE logs SET tree_size = new ... WHERE name = $log AND
//!    tree_size = old RETURNING 1` — the compare-and-set. It also row-locks
//!    the log, so a second writer's CAS waits for this statement and then
//!    matches no row (`Conflict`).
//! 2. `INSERT INTO entries SELECT * FROM UNNEST(...)` — every entry at once;
//!    a stored dedup key fails the whole statement (`Duplicate`, nothing
//!    written), which the sequencer relies on to skip the dedup look-up in
//!    the common case. Dedup keys are unique through an exclusion
//!    constraint over a hash index (one column, so the stored key is
//!    `SHA-256(log || 0x00 || key)`); leaf hashes have a hash index too.
//!    Both keep inserts cheap at tens of millions of entries (migration
//!    `0003_hash_indexes.sql`).
//! 3. `INSERT INTO tiles ... ON CONFLICT DO UPDATE ... WHERE wider` — a
//!    partial tile grows in place and never narrows.
//! 4. `INSERT INTO checkpoints`.
//!
//! Steps 2–4 select `WHERE EXISTS (SELECT FROM moved)`, so a failed CAS
//! writes nothing.
//!
//! A crash (of this process or of PostgreSQL) before `COMMIT` is durable
//! leaves the log exactly as it was; after it, all of the batch is there even
//! if the acknowledgement never arrived, which is why `Unavailable` from a
//! commit means "unknown outcome: reload the state".
//!
//! # Writer lease
//!
//! A session-level `pg_try_advisory_lock` on a dedicated connection (outside
//! the pool), keyed by a hash of the log name. A background heartbeat runs
//! `SELECT 1` on that connection every `lease_check_interval`; the first
//! failure or timeout marks the lease lost for good (`is_held() == false`).
//! Dropping the lease closes the connection, which releases the lock.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{ConnectOptions, Connection, PgConnection, Postgres, Row};
use stele_core::Hash;

use super::{
    hash_from, to_i64, to_u64, AgencyRecord, Batch, LogState, Result, Storage, StorageError,
    StoredEntry, WriterLease,
};

/// Connection settings for [`PostgresStorage::connect`].
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// Pool size.
    pub max_connections: u32,
    /// How long a caller waits for a pooled connection (or a new one) before
    /// getting `Unavailable`. Keep it short so an outage answers 503 quickly.
    pub acquire_timeout: Duration,
    /// How often the writer lease checks that its session is still alive.
    pub lease_check_interval: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(3),
            lease_check_interval: Duration::from_secs(1),
        }
    }
}

/// The PostgreSQL [`Storage`].
pub struct PostgresStorage {
    pool: PgPool,
    connect: PgConnectOptions,
    opts: PgOptions,
    /// Set when a caller could not get a connection; cleared by the next
    /// caller that does. While set, callers wait at most [`FAST_FAIL`].
    down: AtomicBool,
    /// The connection `commit_batch` keeps between batches (taken from the
    /// pool on first use, dropped after any error but `Duplicate`), so a
    /// commit is one round trip: no pool check-out, no liveness ping.
    writer: tokio::sync::Mutex<Option<PoolConnection<Postgres>>>,
}

/// How long a caller waits for a connection while the database is known to
/// be unreachable, so that an outage answers 503 promptly on every request
/// (not once per `acquire_timeout` per storage call) and a recovered
/// database is still noticed by the next caller.
pub const FAST_FAIL: Duration = Duration::from_secs(1);

impl PostgresStorage {
    /// Connects, runs the migrations under `migrations/postgres`, and returns
    /// the storage. Fails if the database is unreachable now; later outages
    /// surface as `Unavailable` and the pool reconnects on its own.
    pub async fn connect(url: &str, opts: PgOptions) -> anyhow::Result<Self> {
        let connect = PgConnectOptions::from_str(url)?
            .options([("synchronous_commit", "on")])
            .application_name("stele")
            .disable_statement_logging();
        let pool = PgPoolOptions::new()
            .max_connections(opts.max_connections)
            .acquire_timeout(opts.acquire_timeout)
            .test_before_acquire(true)
            .connect_with(connect.clone())
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(PostgresStorage {
            pool,
            connect,
            opts,
            down: AtomicBool::new(false),
            writer: tokio::sync::Mutex::new(None),
        })
    }

    /// A pooled connection (checked with a ping before it is handed out).
    async fn conn(&self) -> Result<PoolConnection<Postgres>> {
        let down = self.down.load(Ordering::Relaxed);
        let limit = if down {
            FAST_FAIL.min(self.opts.acquire_timeout)
        } else {
            self.opts.acquire_timeout
        };
        let got = match tokio::time::timeout(limit, self.pool.acquire()).await {
            Ok(r) => r.map_err(map_err),
            Err(_) => Err(StorageError::Unavailable(format!(
                "no database connection within {limit:?}"
            ))),
        };
        match &got {
            Ok(_) if down => self.down.store(false, Ordering::Relaxed),
            Err(StorageError::Unavailable(_)) => self.down.store(true, Ordering::Relaxed),
            _ => {}
        }
        got
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        // The writer's kept connection is "in use" for the pool: give it back first.
        drop(self.writer.lock().await.take());
        self.pool.close().await;
    }
}

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

/// Sorts a sqlx error by what the caller must do.
fn map_err(e: sqlx::Error) -> StorageError {
    use sqlx::Error as E;
    match &e {
        E::Io(_) | E::Tls(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed => {
            StorageError::Unavailable(e.to_string())
        }
        E::Protocol(_) => StorageError::Unavailable(e.to_string()),
        E::Database(db) => {
            let code = db.code().unwrap_or_default();
            // 23P01: the dedup key's exclusion constraint (migration 0003).
            if db.is_unique_violation() || code == "23P01" {
                StorageError::Duplicate(db.message().to_string())
            } else if code.starts_with("08") // connection exception
                || code.starts_with("57P") // shutdown, cannot connect now
                || code == "53300" // too many connections
                || code == "40001" // serialization failure
                || code == "40P01"
            {
                StorageError::Unavailable(e.to_string())
            } else {
                StorageError::Other(e.to_string())
            }
        }
        _ => StorageError::Other(e.to_string()),
    }
}

fn ts_from_ms(ms: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| StorageError::Other(format!("timestamp {ms} out of range")))
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

fn agency_from(row: &PgRow) -> Result<AgencyRecord> {
    let token_hash: Vec<u8> = row.try_get("token_hash").map_err(map_err)?;
    let created: DateTime<Utc> = row.try_get("created").map_err(map_err)?;
    Ok(AgencyRecord {
        name: row.try_get("name").map_err(map_err)?,
        token_hash: hash_from(&token_hash)?.0,
        types: row.try_get("types").map_err(map_err)?,
        revoked: row.try_get("revoked").map_err(map_err)?,
        created_ms: created.timestamp_millis(),
    })
}

/// The advisory-lock key of a log's writer lease.
fn lease_key(log: &str) -> i64 {
    let d = Sha256::new_with_prefix(b"stele writer lease\0")
        .chain_update(log)
        .finalize();
    i64::from_be_bytes(d[..8].try_into().expect("8 bytes"))
}

/// A held advisory lock; see the module docs.
struct PgLease {
    held: Arc<AtomicBool>,
    heartbeat: tokio::task::JoinHandle<()>,
}

impl WriterLease for PgLease {
    fn is_held(&self) -> bool {
        self.held.load(Ordering::SeqCst)
    }
}

impl Drop for PgLease {
    fn drop(&mut self) {
        // Aborting the task drops the connection: its socket closes and the
        // server ends the session, releasing the advisory lock.
        self.held.store(false, Ordering::SeqCst);
        self.heartbeat.abort();
    }
}

async fn heartbeat(mut conn: PgConnection, held: Arc<AtomicBool>, every: Duration) {
    let timeout = every.max(Duration::from_secs(1)) * 2;
    loop {
        tokio::time::sleep(every).await;
        let ok = matches!(tokio::time::timeout(timeout, conn.ping()).await, Ok(Ok(())));
        if !ok {
            held.store(false, Ordering::SeqCst);
            tracing::error!("writer lease lost: its PostgreSQL session is gone");
            return;
        }
    }
}

#[async_trait]
impl Storage for PostgresStorage {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ensure_log(&self, name: &str, origin: &str) -> Result<LogState> {
        sqlx::query(
            "INSERT INTO logs (name, origin) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(origin)
        .execute(&mut *self.conn().await?)
        .await
        .map_err(map_err)?;
        super::expect_origin(self.log_state(name).await?, name, origin)
    }

    async fn log_state(&self, log: &str) -> Result<Option<LogState>> {
        let row = sqlx::query(
            "SELECT name, origin, tree_size, checkpoint, last_ts FROM logs WHERE name = $1",
        )
        .bind(log)
        .fetch_optional(&mut *self.conn().await?)
        .await
        .map_err(map_err)?;
        row.as_ref().map(log_state_from).transpose()
    }

    async fn try_acquire_writer(&self, log: &str) -> Result<Option<Box<dyn WriterLease>>> {
        let connect = async {
            let mut conn = self.connect.connect().await?;
            let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(lease_key(log))
                .fetch_one(&mut conn)
                .await?;
            Ok::<_, sqlx::Error>((conn, got))
        };
        let (conn, got) = tokio::time::timeout(self.opts.acquire_timeout, connect)
            .await
            .map_err(|_| StorageError::Unavailable("timed out taking the writer lease".into()))?
            .map_err(map_err)?;
        if !got {
            return Ok(None);
        }
        let held = Arc::new(AtomicBool::new(true));
        let every = self.opts.lease_check_interval;
        let heartbeat = tokio::spawn(heartbeat(conn, held.clone(), every));
        Ok(Some(Box::new(PgLease { held, heartbeat })))
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
            leaf.push(e.leaf.as_slice());
            leaf_hash.push(e.leaf_hash.0.as_slice());
            dedup.push(stored_dedup_key(batch.log, &e.dedup_key));
            ts.push(ts_from_ms(e.ts_ms)?);
        }
        let last_ts = ts.last().copied();
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
            *writer = Some(self.conn().await?);
        }
        let conn = writer.as_mut().expect("set above");
        // One statement, one round trip, one implicit transaction: the CAS
        // runs in `moved`, and every insert is conditioned on it. A failed
        // CAS writes nothing (0 rows moved → `Conflict`); any error (a stored
        // dedup key → `Duplicate`) aborts the whole statement.
        let result = sqlx::query(
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
             ) \
             SELECT count(*) FROM moved",
        )
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
        .bind(&t_data)
        .fetch_one(&mut **conn)
        .await
        .map_err(map_err);
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

    async fn find_dedup(&self, log: &str, keys: &[Hash]) -> Result<Vec<(Hash, u64)>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let stored: HashMap<[u8; 32], Hash> = keys
            .iter()
            .map(|k| (stored_dedup_key(log, k), *k))
            .collect();
        let asked: Vec<[u8; 32]> = stored.keys().copied().collect();
        let rows = sqlx::query(
            "SELECT dedup_key, idx FROM entries WHERE dedup_key = ANY($2::bytea[]) AND log = $1",
        )
        .bind(log)
        .bind(&asked)
        .fetch_all(&mut *self.conn().await?)
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(|r| {
                let key: Vec<u8> = r.try_get("dedup_key").map_err(map_err)?;
                let key = stored
                    .get(key.as_slice())
                    .ok_or_else(|| StorageError::Other("find_dedup: unasked key".into()))?;
                Ok((*key, to_u64(r.try_get("idx").map_err(map_err)?)?))
            })
            .collect()
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
        .fetch_all(&mut *self.conn().await?)
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
        let end = end.min(i64::MAX as u64);
        if start >= end {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT idx, leaf, leaf_hash FROM entries \
             WHERE log = $1 AND idx >= $2 AND idx < $3 ORDER BY idx",
        )
        .bind(log)
        .bind(to_i64(start, "index")?)
        .bind(to_i64(end, "index")?)
        .fetch_all(&mut *self.conn().await?)
        .await
        .map_err(map_err)?;
        rows.iter().map(entry_from).collect()
    }

    async fn entry_by_leaf_hash(&self, log: &str, leaf_hash: &Hash) -> Result<Option<StoredEntry>> {
        let row = sqlx::query(
            "SELECT idx, leaf, leaf_hash FROM entries \
             WHERE log = $1 AND leaf_hash = $2 ORDER BY idx LIMIT 1",
        )
        .bind(log)
        .bind(leaf_hash.0.as_slice())
        .fetch_optional(&mut *self.conn().await?)
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
            .fetch_optional(&mut *self.conn().await?)
            .await
            .map_err(map_err)
    }

    async fn checkpoints(&self, log: &str) -> Result<Vec<(u64, String)>> {
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT tree_size, note FROM checkpoints WHERE log = $1 ORDER BY tree_size",
        )
        .bind(log)
        .fetch_all(&mut *self.conn().await?)
        .await
        .map_err(map_err)?;
        rows.into_iter().map(|(s, n)| Ok((to_u64(s)?, n))).collect()
    }

    async fn add_agency(&self, agency: &AgencyRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO agencies (name, token_hash, types, revoked, created) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&agency.name)
        .bind(agency.token_hash.as_slice())
        .bind(&agency.types)
        .bind(agency.revoked)
        .bind(ts_from_ms(agency.created_ms)?)
        .execute(&mut *self.conn().await?)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn list_agencies(&self) -> Result<Vec<AgencyRecord>> {
        let rows = sqlx::query(
            "SELECT name, token_hash, types, revoked, created FROM agencies ORDER BY name",
        )
        .fetch_all(&mut *self.conn().await?)
        .await
        .map_err(map_err)?;
        rows.iter().map(agency_from).collect()
    }

    async fn agency(&self, name: &str) -> Result<Option<AgencyRecord>> {
        let row = sqlx::query(
            "SELECT name, token_hash, types, revoked, created FROM agencies WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&mut *self.conn().await?)
        .await
        .map_err(map_err)?;
        row.as_ref().map(agency_from).transpose()
    }

    async fn revoke_agency(&self, name: &str) -> Result<bool> {
        let done = sqlx::query("UPDATE agencies SET revoked = true WHERE name = $1")
            .bind(name)
            .execute(&mut *self.conn().await?)
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&mut *self.conn().await?)
            .await
            .map_err(map_err)?;
        Ok(())
    }
}
