//! The engine: logs, their sequencers, caches and read paths. Everything the
//! HTTP layer and the CLI need, with no HTTP types.
//!
//! Vocabulary: a submission is *pending* while it waits in its log's
//! in-memory queue (unlike Tessera, whose pending entries are already
//! durably sequenced, nothing of a pending submission is stored yet), is
//! *sequenced* once it has an index in a batch, and *integrated* once the
//! batch's transaction (entries, tiles, checkpoint, tree size) has
//! committed. Only integrated records get receipts.
//!
//! Files: `config.rs` (what it is started with), `error.rs` (errors by what
//! the caller must do), `submit.rs` (writes), `read.rs` (reads),
//! `agency.rs` (tokens), `log.rs` (one log's state and queue),
//! `sequencer/` (the writer), `tiles.rs`, `interior.rs`, `cache.rs`,
//! `disk_cache.rs` (proofs and their tiles).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::metrics::{LogLabel, Metrics};
use crate::names::LogName;
use crate::storage::Storage;

use self::log::{Log, Status};
use self::sequencer::{Ctx, Sequencer};
use self::tiles::{Snapshot, TileSource};

pub mod agency;
mod cache;
mod config;
mod disk_cache;
mod interior;
mod log;
mod private;
mod publishing;
mod quota;
mod read;
mod sequencer;
mod submit;
mod tiles;
mod witnessing;

pub use crate::error::LogError;
pub use agency::Agency;
pub use config::{EngineConfig, LogConfig, ReadNode};
pub use log::Integrated;
pub use private::{Accesses, Content, Disclosure, ProvenEntry};
pub use publishing::{parse_bucket_url, PublishTarget};
pub use quota::{QuotaConfig, Rate};
pub use read::{
    ConsistencyProof, EntryView, InclusionProof, Locator, LogInfo, TileData, CACHE_CHECKPOINT,
    CACHE_IMMUTABLE, CACHE_PARTIAL,
};
pub use sequencer::mark_file_for;
pub use witnessing::{Published, WitnessConfig};

/// Longest `ready()` waits for the database to answer a ping.
const READY_PING_TIMEOUT: Duration = Duration::from_secs(1);

/// All logs of one deployment.
pub struct Engine {
    ctx: Arc<Ctx>,
    logs: Vec<Arc<Log>>,
    by_name: HashMap<LogName, Arc<Log>>,
    auth: agency::Authenticator,
    quotas: quota::Quotas,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: tokio::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Engine {
    /// Loads every log, checks that the stored tiles reproduce the root of
    /// the last signed checkpoint, takes the writer lease and starts one
    /// sequencer per log. A log whose check fails is served read-only and
    /// reported by [`Engine::ready`].
    pub async fn start(
        storage: Arc<dyn Storage>,
        logs: Vec<LogConfig>,
        config: EngineConfig,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Arc<Engine>> {
        let names: Vec<Arc<str>> = logs.iter().map(|l| l.name.as_arc().clone()).collect();
        let disk = match &config.disk_cache {
            Some((dir, bytes)) => match std::fs::create_dir_all(dir)
                .and_then(|()| disk_cache::DiskTier::create(dir, *bytes))
            {
                Ok(tier) => tier,
                Err(e) => {
                    // Only a cache: proofs still work, from storage.
                    tracing::warn!(
                        "no disk tier for the tile cache (cannot create a scratch file in {}): {e}",
                        dir.display()
                    );
                    None
                }
            },
            None => None,
        };
        let ctx = Arc::new(Ctx {
            storage: storage.clone(),
            cache: cache::TileCache::new(config.cache_bytes, disk, &names),
            metrics,
            config,
        });
        let quotas = quota::Quotas::new(ctx.config.quotas.clone());
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let mut engine_logs = Vec::new();
        let mut by_name = HashMap::new();
        let mut tasks = Vec::new();
        for lc in logs {
            anyhow::ensure!(
                !by_name.contains_key(&lc.name),
                "log {} is configured twice",
                lc.name
            );
            let verifier = stele_core::note::Verifier::from_vkey(&lc.vkey)
                .map_err(|e| anyhow::anyhow!("log {}: {e}", lc.name))?;
            anyhow::ensure!(
                verifier.name() == lc.origin,
                "log {}: the key is named {:?} but the origin is {:?}",
                lc.name,
                verifier.name(),
                lc.origin
            );
            let reader = ctx.config.read_node.is_some();
            anyhow::ensure!(
                reader || lc.signer.is_some(),
                "log {}: a writer needs its signing key",
                lc.name
            );
            // A read node's replica is read-only: the log is never created
            // there, and a read node starts from nothing and adopts the
            // replica's state only once verified (`become_reader`).
            let (size, checkpoint) = if reader {
                (0, None)
            } else {
                let state = storage
                    .ensure_log(&lc.name, &lc.origin)
                    .await
                    .map_err(|e| anyhow::anyhow!("log {}: {e}", lc.name))?;
                (state.tree_size, state.checkpoint)
            };
            let vkey = lc.vkey;
            let witnesses = match lc.witnesses {
                Some(w) => {
                    Some(Arc::new(witnessing::Federation::new(w).map_err(|e| {
                        anyhow::anyhow!("log {}: witnesses: {e}", lc.name)
                    })?))
                }
                None => None,
            };
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let log = Arc::new(Log {
                label: LogLabel {
                    log: lc.name.to_string(),
                },
                name: lc.name.clone(),
                origin: Arc::from(lc.origin.as_str()),
                signer: lc.signer,
                verifier,
                vkey,
                mark_file: lc.mark_file,
                snapshot: RwLock::new(Arc::new(Snapshot::new(size, checkpoint, HashMap::new()))),
                status: RwLock::new(Status::NotWriter("starting".into())),
                queue: tx,
                slots: Arc::new(tokio::sync::Semaphore::new(ctx.config.queue_capacity)),
                capacity: ctx.config.queue_capacity,
                shares: quota::QueueShares::new(quotas.queue_share(ctx.config.queue_capacity)),
                commit_failure: RwLock::new(None),
                registry: RwLock::new((Default::default(), 0)),
                accept_unregistered: lc.accept_unregistered,
                witnesses,
                grown: tokio::sync::watch::channel(size).0,
                publisher: ctx
                    .config
                    .publish
                    .clone()
                    .map(|t| Arc::new(publishing::Publisher::new(t))),
            });
            ctx.metrics
                .tree_size
                .get_or_create(&log.label)
                .set(size as i64);
            let mut seq = Sequencer::new(log.clone(), ctx.clone(), rx, stop_rx.clone());
            let mode = match &ctx.config.read_node {
                Some(r) => seq.become_reader(r).await,
                None => seq.become_writer().await,
            };
            tasks.push(tokio::spawn(seq.run(mode)));
            if let Some(f) = &log.witnesses {
                tasks.push(tokio::spawn(witnessing::run(
                    f.clone(),
                    log.clone(),
                    ctx.clone(),
                    stop_rx.clone(),
                )));
            }
            if let Some(p) = &log.publisher {
                tasks.push(tokio::spawn(publishing::run(
                    p.clone(),
                    log.clone(),
                    ctx.clone(),
                    stop_rx.clone(),
                )));
            }
            by_name.insert(lc.name, log.clone());
            engine_logs.push(log);
        }
        Ok(Arc::new(Engine {
            auth: agency::Authenticator::new(storage, ctx.config.token_cache_ttl),
            quotas,
            ctx,
            logs: engine_logs,
            by_name,
            stop,
            tasks: tokio::sync::Mutex::new(tasks),
        }))
    }

    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.ctx.storage
    }

    fn log(&self, name: &str) -> Result<&Arc<Log>, LogError> {
        self.by_name
            .get(name)
            .ok_or_else(|| LogError::NotFound(format!("no log named {name:?}")))
    }

    fn source<'a>(&'a self, log: &'a Log, snapshot: &'a Snapshot) -> TileSource<'a> {
        self.ctx.source(log, snapshot)
    }

    /// The `Retry-After` of this engine's `503` and `429` answers.
    pub fn retry_after(&self) -> Duration {
        self.ctx.config.retry_after
    }

    /// Checks a bearer token (`<agency>.<secret>`), in constant time.
    pub async fn authenticate(&self, token: &str) -> Result<Agency, LogError> {
        self.auth.authenticate(token).await
    }

    /// Ok when the database answers, every sequencer is running and
    /// writable, and publishing (if configured) keeps up without an alarm.
    pub async fn ready(&self) -> Result<(), String> {
        // Bounded, so a readiness probe gets its 503 quickly during an
        // outage instead of waiting out the pool's acquire timeout.
        match tokio::time::timeout(READY_PING_TIMEOUT, self.ctx.storage.ping()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!("readiness: the database does not answer: {e}");
                return Err("database unreachable".into());
            }
            Err(_) => {
                return Err(format!(
                    "database unreachable: no answer within {READY_PING_TIMEOUT:?}"
                ))
            }
        }
        let mut problems: Vec<String> = self
            .logs
            .iter()
            .filter_map(|l| match l.status() {
                Status::Writable => l
                    .commit_failure()
                    .map(|why| format!("log {}: the last commit failed: {why}", l.name)),
                Status::Reader { behind, .. } => behind.map(|m| format!("log {}: {m}", l.name)),
                // Most of these already name the log.
                Status::NotWriter(m) | Status::Unavailable(m) | Status::Refused(m)
                    if m.starts_with(&format!("log {}", l.name)) =>
                {
                    Some(m)
                }
                Status::NotWriter(m) | Status::Unavailable(m) | Status::Refused(m) => {
                    Some(format!("log {}: {m}", l.name))
                }
                Status::Stopped => Some(format!("log {}: shutting down", l.name)),
            })
            .collect();
        for l in &self.logs {
            let Some(f) = &l.witnesses else { continue };
            if l.status() != Status::Writable {
                continue;
            }
            if let Some(why) = f.alarm().or_else(|| f.failure()) {
                problems.push(format!("log {}: {why}", l.name));
            }
        }
        for l in &self.logs {
            let Some(p) = &l.publisher else { continue };
            if l.status() != Status::Writable {
                continue;
            }
            if let Some(why) = p.problem() {
                problems.push(format!("log {}: {why}", l.name));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    /// Stops taking submissions, finishes the batch in flight, releases leases.
    pub async fn shutdown(&self) {
        for l in &self.logs {
            *l.status.write().expect("status lock") = Status::Stopped;
        }
        let _ = self.stop.send(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().await);
        for t in tasks {
            if let Err(e) = t.await {
                tracing::error!("a sequencer task failed: {e}");
            }
        }
    }
}
