//! The writer lease on PostgreSQL: a session-level advisory lock on a
//! connection of its own (see the module docs of [`super`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use sqlx::{ConnectOptions, Connection, PgConnection};

use super::{map_err, PostgresStorage};
use crate::storage::{Result, StorageError, WriterLease, WriterLock};

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
impl WriterLock for PostgresStorage {
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
}
