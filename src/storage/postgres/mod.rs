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

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Postgres};

use super::{Result, Storage, StorageError};

mod agencies;
mod lease;
mod log;

/// Connection settings for [`PostgresStorage::connect`].
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// Connections for public reads (entries, tiles, checkpoints).
    pub max_connections: u32,
    /// Connections for token checks: a flood of reads (or of bogus tokens)
    /// never takes the ones agencies' writes authenticate with.
    pub auth_connections: u32,
    /// Connections of the writer side: the kept commit connection, dedup
    /// look-ups, recovery and readiness pings.
    pub write_connections: u32,
    /// How long a caller waits for a pooled connection (or a new one) before
    /// getting `Unavailable`. Keep it short so an outage answers 503 quickly.
    pub acquire_timeout: Duration,
    /// How often the writer lease checks that its session is still alive.
    pub lease_check_interval: Duration,
    /// A read node's connection to a streaming replica (read-only): the
    /// migrations are checked, not run (the writer runs them, and the
    /// replica receives them).
    pub replica: bool,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            max_connections: 7,
            auth_connections: 1,
            write_connections: 2,
            acquire_timeout: Duration::from_secs(2),
            lease_check_interval: Duration::from_secs(1),
            replica: false,
        }
    }
}

/// Which pool a query takes its connection from (see [`PgOptions`]).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Pool {
    Read,
    Auth,
    Write,
}

/// The PostgreSQL [`Storage`].
pub struct PostgresStorage {
    reads: PgPool,
    auth: PgPool,
    writes: PgPool,
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

/// A read node on a replica: every migration this binary knows must have
/// been applied (by the writer); a replica behind the binary, or ahead of
/// it, is refused with what to do.
async fn check_migrated(migrator: &sqlx::migrate::Migrator, pool: &PgPool) -> anyhow::Result<()> {
    let applied: Vec<i64> = match sqlx::query_scalar(
        "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version",
    )
    .fetch_all(pool)
    .await
    {
        Ok(v) => v,
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let known: Vec<i64> = migrator.iter().map(|m| m.version).collect();
    if let Some(missing) = known.iter().find(|v| !applied.contains(v)) {
        anyhow::bail!(
            "the replica's schema lacks migration {missing}: start (or upgrade) the writer first, which migrates the primary, and let the replica catch up"
        );
    }
    if let Some(newer) = applied.iter().find(|v| !known.contains(v)) {
        anyhow::bail!(
            "the replica's schema has migration {newer}, which this binary does not know: upgrade this read node to the writer's version"
        );
    }
    Ok(())
}

impl PostgresStorage {
    /// Connects, runs the migrations under `migrations/postgres`, and returns
    /// the storage. Fails if the database is unreachable now; later outages
    /// surface as `Unavailable` and the pool reconnects on its own.
    pub async fn connect(url: &str, opts: PgOptions) -> anyhow::Result<Self> {
        let connect = PgConnectOptions::from_str(url)?
            .options([("synchronous_commit", "on")])
            .application_name("stele")
            .disable_statement_logging();
        let pool = |size: u32| {
            PgPoolOptions::new()
                .max_connections(size.max(1))
                .acquire_timeout(opts.acquire_timeout)
                .test_before_acquire(true)
                .connect_lazy_with(connect.clone())
        };
        let writes = pool(opts.write_connections);
        let migrator = sqlx::migrate!("./migrations/postgres");
        if opts.replica {
            check_migrated(&migrator, &writes).await?;
        } else {
            migrator.run(&writes).await?;
        }
        Ok(PostgresStorage {
            reads: pool(opts.max_connections),
            auth: pool(opts.auth_connections),
            writes,
            connect,
            opts,
            down: AtomicBool::new(false),
            writer: tokio::sync::Mutex::new(None),
        })
    }

    /// A connection from `pool` (checked with a ping before it is handed
    /// out).
    async fn conn(&self, pool: Pool) -> Result<PoolConnection<Postgres>> {
        let pool = match pool {
            Pool::Read => &self.reads,
            Pool::Auth => &self.auth,
            Pool::Write => &self.writes,
        };
        let down = self.down.load(Ordering::Relaxed);
        let limit = if down {
            FAST_FAIL.min(self.opts.acquire_timeout)
        } else {
            self.opts.acquire_timeout
        };
        let got = match tokio::time::timeout(limit, pool.acquire()).await {
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
        self.reads.close().await;
        self.auth.close().await;
        self.writes.close().await;
    }
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

#[async_trait]
impl Storage for PostgresStorage {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&mut *self.conn(Pool::Write).await?)
            .await
            .map_err(map_err)?;
        Ok(())
    }
}
