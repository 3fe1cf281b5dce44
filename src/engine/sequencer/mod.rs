//! The sequencer: one task per log, the only writer of that log.
//!
//! It is a state machine: each step takes the current [`Mode`] and returns
//! the next, and the log's [`Status`] (what submissions are told) changes
//! only together with the mode, in the transition helpers below.
//!
//! ```text
//!            start ──▶ become_writer ──▶ Writer ──▶ (batch) ──▶ Writer
//!                          │   ▲           │  commit outcome unknown
//!             lease taken  │   │ retry     ▼
//!             elsewhere /  ▼   │        Reload ──▶ Writer | Follower | Refused
//!             db down    Follower ◀──── lease lost, CAS conflict, other writer
//!                          state fails verification ──▶ Refused (reads only)
//! ```
//!
//! Life of a batch (`batch.rs`, `commit.rs`, `receipts.rs`): gather
//! requests (the first one, then whatever queued up meanwhile, up to
//! `max_batch` records; an idle sequencer may also wait up to `max_wait`,
//! default 0, for more) → deduplicate within the batch → assign indexes and `ts` → append
//! leaf hashes to a *copy* of the tree builder → sign the checkpoint →
//! `LogWriter::commit_batch` (one transaction, CAS on the size) → only then
//! adopt the new state and hand the batch to a receipt task, which answers
//! every waiter with its [`Integrated`](super::Integrated) receipt parts.
//!
//! Crash points:
//! - Before the commit returns: nothing in memory changed; a crash loses only
//!   unacknowledged submissions.
//! - Commit fails (`Unavailable` or any error): the outcome is unknown. Every
//!   waiter gets 503; the sequencer then reloads the stored state (retrying
//!   with backoff while the database is down, answering new submissions with
//!   503 at once). Stored size = the batch's new size with this batch's
//!   checkpoint → the commit happened (lost acknowledgement): adopt it, and a
//!   retry of the same body finds it by dedup key. Stored size = the old size
//!   → nothing happened: continue. Anything else → another writer: stop
//!   writing.
//! - `Conflict` (CAS failed) → another writer moved the log: stop writing,
//!   drop the lease, and serve reads until the lease can be taken again (then
//!   the whole state is reloaded and verified from storage).

use std::sync::Arc;
use std::time::Duration;

use stele_core::tile::TreeBuilder;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::cache::TileCache;
use super::config::EngineConfig;
use super::log::{Log, Request, Status};
use crate::error::LogError;
use crate::metrics::Metrics;
use crate::storage::{Storage, WriterLease};

mod batch;
mod commit;
pub(crate) mod mark;
mod reader;
mod receipts;
mod recovery;

use commit::Prepared;
pub use mark::mark_file_for;
pub(crate) use receipts::Reply;

/// How often a process that is not the writer tries to take the lease (and
/// refreshes its view of the log).
pub(crate) const LEASE_RETRY: Duration = Duration::from_secs(2);
/// How often an idle writer checks that it still holds the lease.
const LEASE_CHECK: Duration = Duration::from_millis(500);
/// Longest pause between reload attempts while the database is down.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Shared by the engine's read paths and every sequencer.
pub(crate) struct Ctx {
    pub storage: Arc<dyn Storage>,
    pub cache: TileCache,
    pub metrics: Arc<Metrics>,
    pub config: EngineConfig,
}

/// What the sequencer is doing; each step returns the next one.
pub(crate) enum Mode {
    /// This process holds the lease and its state matches storage.
    Writer,
    /// Another process is the writer (or the database was down when we
    /// tried): serve reads, retry the lease.
    Follower,
    /// A commit's outcome is unknown: find out before writing again.
    Reload { old_size: u64, prepared: Prepared },
    /// The stored state failed verification: never write.
    Refused,
    /// A read node: follow the replica, never write.
    Reader,
}

pub(crate) struct Sequencer {
    log: Arc<Log>,
    ctx: Arc<Ctx>,
    rx: mpsc::UnboundedReceiver<Request>,
    stop: watch::Receiver<bool>,
    /// The right edge of the committed tree.
    builder: TreeBuilder,
    /// `ts` of the newest committed entry (ms); `ts` never decreases.
    last_ts: i64,
    lease: Option<Box<dyn WriterLease>>,
    /// A request that did not fit the last batch; it starts the next one.
    held: Option<Request>,
    /// The record-type registry of the committed tree (published to the
    /// log, for submissions, after each change).
    registry: Arc<crate::registry::Registry>,
    /// The leaves of the committed tree's partial entry bundle, when known
    /// (from the first bundle boundary this writer committed across):
    /// every bundle it fills goes into the tile cache, and the partial one
    /// into the snapshot, so that bundle reads of the log's head (the
    /// publisher, monitors, mirrors) need no database query.
    bundle_edge: Option<Vec<bytes::Bytes>>,
    /// On a read node: the newest checkpoint it served (its served mark,
    /// `reader.rs`), if any.
    served_mark: Option<stele_core::checkpoint::Checkpoint>,
}

impl Sequencer {
    pub(crate) fn new(
        log: Arc<Log>,
        ctx: Arc<Ctx>,
        rx: mpsc::UnboundedReceiver<Request>,
        stop: watch::Receiver<bool>,
    ) -> Self {
        Sequencer {
            log,
            ctx,
            rx,
            stop,
            builder: TreeBuilder::new(),
            last_ts: 0,
            lease: None,
            held: None,
            registry: Default::default(),
            bundle_edge: None,
            served_mark: None,
        }
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Runs from `mode` (the outcome of [`Sequencer::become_writer`]) until
    /// `shutdown`.
    pub(crate) async fn run(mut self, mut mode: Mode) {
        while !self.stopping() {
            mode = match mode {
                Mode::Writer => self.write_step().await,
                Mode::Follower => self.follower_step().await,
                Mode::Reload { old_size, prepared } => self.reload(old_size, prepared).await,
                Mode::Refused => self.refused_step().await,
                Mode::Reader => self.reader_step().await,
            };
        }
        // A shutdown with a commit outcome unknown leaves it to the next
        // start, which recovers from storage.
        self.finish();
    }

    // ---- transitions: the mode and the log's status change together ----

    fn writer(&mut self) -> Mode {
        self.log.set_status(Status::Writable);
        Mode::Writer
    }

    /// Stops writing (dropping the lease, if held) and serves reads in
    /// `status` until the lease can be taken again.
    fn follower(&mut self, status: Status) -> Mode {
        self.lease = None;
        self.log.set_status(status);
        Mode::Follower
    }

    /// Never writes again in this process (an operator must look).
    fn refused(&mut self, why: String) -> Mode {
        tracing::error!(log = %self.log.name, "{why}");
        self.lease = None;
        self.log.set_status(Status::Refused(why));
        Mode::Refused
    }

    /// The status of a log whose tree another writer moved.
    fn moved_under_us(&mut self) -> Mode {
        let why = format!(
            "log {}: another writer moved the log; this process serves reads only",
            self.log.name
        );
        self.follower(Status::NotWriter(why))
    }

    /// Still the writer? If the lease was lost, becomes a follower.
    fn check_lease(&mut self) -> Mode {
        if let Some(why) = self.log.witness_alarm() {
            return self.refused(why);
        }
        if self.lease.as_ref().is_some_and(|l| l.is_held()) {
            return Mode::Writer;
        }
        tracing::error!(log = %self.log.name, "lost the writer lease; serving reads only until it is taken again");
        let why = format!("log {} lost its writer lease", self.log.name);
        self.follower(Status::NotWriter(why))
    }

    // ---- steps ----

    /// Waits for a request (checking the lease while idle) and sequences,
    /// commits and answers one batch.
    async fn write_step(&mut self) -> Mode {
        let backlog = self.held.is_some() || !self.rx.is_empty();
        let first = match self.held.take() {
            Some(r) => r,
            None => {
                let mut stop = self.stop.clone();
                tokio::select! {
                    _ = stop.changed() => return Mode::Writer,
                    r = self.rx.recv() => match r {
                        Some(r) => r,
                        None => return Mode::Writer,
                    },
                    _ = tokio::time::sleep(LEASE_CHECK) => return self.check_lease(),
                }
            }
        };
        // A witness showed this tree is not an extension of what it
        // cosigned: sign nothing more.
        if let Some(why) = self.log.witness_alarm() {
            self.held = Some(first);
            return self.refused(why);
        }
        let requests = self.gather(first, backlog).await;
        self.process(requests).await
    }

    async fn follower_step(&mut self) -> Mode {
        self.idle(LEASE_RETRY).await;
        if self.stopping() {
            return Mode::Follower;
        }
        if matches!(self.refresh_snapshot().await, recovery::Refreshed::Refused) {
            // Storage went back or forked: never write on it (an operator
            // must look); keep serving what was verified.
            self.lease = None;
            return Mode::Refused;
        }
        self.become_writer().await
    }

    async fn refused_step(&mut self) -> Mode {
        self.idle(LEASE_RETRY).await;
        self.refresh_snapshot().await;
        Mode::Refused
    }

    /// Waits `d` (or until shutdown), answering anything that arrives with
    /// the log's current status as an error.
    async fn idle(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        let reply = self.reply();
        if let Some(r) = self.held.take() {
            reply.answer(r, Err(self.status_error()));
        }
        let mut stop = self.stop.clone();
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                _ = stop.changed() => break,
                r = self.rx.recv() => match r {
                    Some(r) => {
                        reply.answer(r, Err(self.status_error()));
                        reply.update_queue_depth();
                    }
                    None => break,
                },
            }
        }
    }

    fn status_error(&self) -> LogError {
        self.log
            .status()
            .error(self.ctx.config.retry_after)
            .unwrap_or_else(|| LogError::Pushback {
                detail: "the log is not writable right now".into(),
                retry_after: self.ctx.config.retry_after,
            })
    }

    fn finish(&mut self) {
        self.rx.close();
        let stopped = LogError::Pushback {
            detail: "the service is shutting down".into(),
            retry_after: self.ctx.config.retry_after,
        };
        let reply = self.reply();
        let mut left: Vec<Request> = self.held.take().into_iter().collect();
        while let Ok(r) = self.rx.try_recv() {
            left.push(r);
        }
        reply.fail_all(left, stopped);
        // Dropping the lease releases it.
        self.lease = None;
    }

    fn reply(&self) -> Reply {
        Reply {
            log: self.log.clone(),
            ctx: self.ctx.clone(),
        }
    }
}
