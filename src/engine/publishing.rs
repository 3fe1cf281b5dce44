//! Publishing a log's tiles to S3-compatible object storage, so that the
//! bucket (behind a CDN) is a complete C2SP tlog-tiles log that any client
//! can audit with no Stele process running.
//!
//! After each committed batch (or witnessed checkpoint), the writer's
//! publisher uploads what changed since the bucket's checkpoint: new full
//! hash tiles and entry bundles, then the partial ones, then the
//! checkpoint — never a checkpoint before every tile it needs. Every tile
//! object is put create-only (`If-None-Match: *`): an object already there
//! with the same bytes counts as done (a restarted publisher uploading
//! again), one with other bytes is an **alarm** — it is never overwritten,
//! and this log's publishing stops until an operator looks. The checkpoint
//! is replaced only with a compare-and-set on the ETag the publisher last
//! saw, and only by a larger tree (or the same tree with other
//! cosignatures).
//!
//! The publisher keeps nothing of its own: on start it reads the bucket's
//! checkpoint, checks that this log signed it and that the database holds
//! the same tree at that size (a bucket ahead of the database, or holding
//! another tree, is an alarm), and uploads from there, reading everything
//! from the database (through the tile cache). So a killed publisher
//! resumes without gaps, and what it uploads again is found identical.
//! Publishing lags behind the log but never holds up a commit or a receipt;
//! its lag is a metric and, beyond `max_lag`, makes `/readyz` fail.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{
    Attribute, Attributes, ObjectStore, ObjectStoreExt, PutMode, PutOptions, UpdateVersion,
};
use sha2::{Digest, Sha256};
use stele_core::tile::{changed_bundles, changed_tiles, TilePath};
use tokio::sync::watch;

use super::log::{Log, Status};
use super::sequencer::Ctx;
use super::{CACHE_CHECKPOINT, CACHE_IMMUTABLE, CACHE_PARTIAL};

/// How often a publisher that has nothing new, or whose last round failed,
/// looks again.
const IDLE_ROUND: Duration = Duration::from_secs(1);

/// Unpublished tree sizes remembered for the delay metric (a long outage
/// keeps the oldest: a later publication covers the rest).
const MAX_SEEN: usize = 10_000;

/// Where and how tiles are published (the `[publish]` configuration, with
/// its store opened).
pub struct PublishTarget {
    pub store: Arc<dyn ObjectStore>,
    /// Objects of log `L` live under `<prefix>/L/` ("" = the bucket's root).
    pub prefix: String,
    /// For logs and readiness: the bucket URL, without credentials.
    pub describe: String,
    /// Objects uploaded at once.
    pub concurrency: usize,
    /// Publishing further behind than this fails readiness.
    pub max_lag: Duration,
    /// Shortest time between the starts of two rounds: under a steady
    /// write load each round uploads every partial tile and the
    /// checkpoint again, so fewer rounds mean fewer objects.
    pub interval: Duration,
}

/// `s3://bucket` or `s3://bucket/prefix` → the bucket and the prefix
/// (without surrounding slashes; "" for the bucket's root).
pub fn parse_bucket_url(url: &str) -> anyhow::Result<(String, String)> {
    let parsed = url::Url::parse(url).map_err(|e| anyhow::anyhow!("publish.url {url:?}: {e}"))?;
    match parsed
        .host_str()
        .filter(|h| parsed.scheme() == "s3" && !h.is_empty())
    {
        Some(bucket) => Ok((
            bucket.to_string(),
            parsed.path().trim_matches('/').to_string(),
        )),
        None => anyhow::bail!("publish.url {url:?} must be s3://bucket or s3://bucket/prefix"),
    }
}

impl std::fmt::Debug for PublishTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishTarget")
            .field("bucket", &self.describe)
            .field("concurrency", &self.concurrency)
            .field("max_lag", &self.max_lag)
            .field("interval", &self.interval)
            .finish()
    }
}

impl PublishTarget {
    /// An S3-compatible bucket: `url` is `s3://bucket[/prefix]`; the
    /// credentials come from the environment (`AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, ...); `endpoint` names
    /// an S3-compatible service instead of AWS (path-style requests; plain
    /// `http://` allowed only there).
    pub fn s3(
        url: &str,
        endpoint: Option<&str>,
        region: &str,
        concurrency: usize,
        max_lag: Duration,
        interval: Duration,
    ) -> anyhow::Result<Self> {
        let (bucket, prefix) = parse_bucket_url(url)?;
        // Bounded: a round against an unreachable bucket fails within
        // seconds (and is retried next round) instead of waiting minutes.
        let retry = object_store::RetryConfig {
            backoff: object_store::BackoffConfig::default(),
            max_retries: 2,
            retry_timeout: Duration::from_secs(10),
        };
        let client = object_store::ClientOptions::new()
            .with_timeout(Duration::from_secs(30))
            .with_connect_timeout(Duration::from_secs(3));
        let mut b = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(&bucket)
            .with_region(region)
            .with_conditional_put(object_store::aws::S3ConditionalPut::ETagMatch)
            .with_retry(retry)
            .with_client_options(client)
            // Tiles are checked by every reader; hashing each body once
            // more for the request signature buys nothing over TLS.
            .with_unsigned_payload(true);
        let mut describe = format!("s3://{bucket}/{prefix}");
        if let Some(ep) = endpoint {
            b = b
                .with_endpoint(ep)
                .with_allow_http(ep.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
            describe.push_str(&format!(" at {}", crate::storage::redact_url(ep)));
        }
        let store = b
            .build()
            .map_err(|e| anyhow::anyhow!("publish: opening {describe}: {e}"))?;
        Ok(PublishTarget {
            store: Arc::new(store),
            prefix,
            describe,
            concurrency: concurrency.max(1),
            max_lag,
            interval,
        })
    }

    /// The object of `rel` (`checkpoint`, `tile/0/000`) of `log`.
    pub fn key(&self, log: &str, rel: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(format!("{log}/{rel}"))
        } else {
            ObjectPath::from(format!("{}/{log}/{rel}", self.prefix))
        }
    }
}

/// Why a round did not publish.
enum Failure {
    /// The bucket holds something this log would never have written there:
    /// stop publishing this log.
    Alarm(String),
    /// Try again next round (the bucket or the database is unreachable...).
    Retry(String),
}

/// What the publisher knows about the bucket.
#[derive(Default)]
struct Bucket {
    /// The bucket's checkpoint was read (and checked) since the start, or
    /// since a compare-and-set on it failed.
    loaded: bool,
    /// Tree size of the bucket's checkpoint (0: none).
    size: u64,
    /// The bucket's checkpoint note, as put or found.
    note: Option<Arc<str>>,
    /// Its version, for the next compare-and-set (None: create it).
    version: Option<UpdateVersion>,
    /// Since when the log has shown a checkpoint the bucket lacks.
    behind_since: Option<Instant>,
    /// Tree sizes the log showed, and when first seen, not yet published
    /// (for the publishing delay).
    seen: VecDeque<(u64, Instant)>,
    alarm: Option<String>,
    failure: Option<String>,
}

/// One log's publisher.
pub(crate) struct Publisher {
    pub target: Arc<PublishTarget>,
    bucket: Mutex<Bucket>,
}

impl Publisher {
    pub fn new(target: Arc<PublishTarget>) -> Self {
        Publisher {
            target,
            bucket: Mutex::new(Bucket::default()),
        }
    }

    fn bucket(&self) -> std::sync::MutexGuard<'_, Bucket> {
        self.bucket.lock().expect("publisher lock")
    }

    /// Tree size of the bucket's checkpoint.
    pub fn published_size(&self) -> u64 {
        self.bucket().size
    }

    /// What readiness says about publishing (None: fine): an alarm, or a
    /// lag beyond `max_lag` (with the last failure, if any).
    pub fn problem(&self) -> Option<String> {
        let b = self.bucket();
        if let Some(a) = &b.alarm {
            return Some(format!(
                "publishing to {} stopped: {a}",
                self.target.describe
            ));
        }
        let lag = b.behind_since.map(|t| t.elapsed()).unwrap_or_default();
        (lag > self.target.max_lag).then(|| {
            format!(
                "publishing to {} is {:.0} s behind (the bucket has the tree of size {}){}",
                self.target.describe,
                lag.as_secs_f64(),
                b.size,
                b.failure
                    .as_ref()
                    .map(|f| format!("; last failure: {f}"))
                    .unwrap_or_default()
            )
        })
    }

    /// One round: publish the log's public checkpoint if the bucket lacks it.
    async fn round(&self, log: &Log, ctx: &Ctx) {
        if self.bucket().alarm.is_some() {
            return;
        }
        let result = self.publish(log, ctx).await;
        let lag = {
            let mut b = self.bucket();
            match result {
                Ok(()) => b.failure = None,
                Err(Failure::Retry(why)) => {
                    tracing::warn!(log = %log.name, "publishing to {}: {why}", self.target.describe);
                    b.failure = Some(why);
                    ctx.metrics.publish_failures.get_or_create(&log.label).inc();
                }
                Err(Failure::Alarm(why)) => {
                    tracing::error!(log = %log.name, "ALARM: publishing to {} stopped: {why}", self.target.describe);
                    b.alarm = Some(why);
                    ctx.metrics.publish_alarm.get_or_create(&log.label).set(1);
                }
            }
            b.behind_since.map(|t| t.elapsed()).unwrap_or_default()
        };
        let shown = log.public_checkpoint().map_or(0, |(s, _)| s);
        let published = self.published_size();
        let m = &ctx.metrics;
        m.published_tree_size
            .get_or_create(&log.label)
            .set(published as i64);
        m.publish_lag_entries
            .get_or_create(&log.label)
            .set(shown.saturating_sub(published) as i64);
        m.publish_lag_seconds
            .get_or_create(&log.label)
            .set(lag.as_secs_f64());
    }

    async fn publish(&self, log: &Log, ctx: &Ctx) -> Result<(), Failure> {
        let Some((size, note)) = log.public_checkpoint() else {
            return Ok(());
        };
        // Noted before the bucket is read, so that a bucket unreachable
        // from the start shows as lag.
        self.shown(size);
        if !self.bucket().loaded {
            self.load(log, ctx).await?;
        }
        let from = {
            let b = self.bucket();
            let up_to_date = size < b.size || b.note.as_deref() == Some(&*note);
            let from = b.size;
            drop(b);
            if up_to_date {
                self.settle(log, ctx);
                return Ok(());
            }
            from
        };
        // Full tiles first, then partial ones, then the checkpoint: a
        // client that sees the checkpoint finds every tile it needs.
        let mut full = Vec::new();
        let mut partial = Vec::new();
        for id in changed_tiles(from, size) {
            let list = if id.is_full() {
                &mut full
            } else {
                &mut partial
            };
            list.push(TilePath::Hash(id));
        }
        for id in changed_bundles(from, size) {
            let list = if id.is_full() {
                &mut full
            } else {
                &mut partial
            };
            list.push(TilePath::Entries(id));
        }
        self.put_tiles(log, ctx, full, CACHE_IMMUTABLE).await?;
        self.put_tiles(log, ctx, partial, CACHE_PARTIAL).await?;
        self.put_checkpoint(log, size, note).await?;
        self.settle(log, ctx);
        Ok(())
    }

    /// The log shows a tree of `size`: remember when, if the bucket lacks it.
    fn shown(&self, size: u64) {
        let mut b = self.bucket();
        if size <= b.size {
            return;
        }
        let now = Instant::now();
        if b.seen.back().is_none_or(|&(s, _)| s < size) && b.seen.len() < MAX_SEEN {
            b.seen.push_back((size, now));
        }
        b.behind_since.get_or_insert(now);
    }

    /// What the bucket now has is no longer behind: the delay of every
    /// size it covers is observed, and the lag runs from the oldest size
    /// still missing (none: no lag).
    fn settle(&self, log: &Log, ctx: &Ctx) {
        let mut b = self.bucket();
        let now = Instant::now();
        while let Some(&(s, t)) = b.seen.front() {
            if s > b.size {
                break;
            }
            ctx.metrics
                .publish_delay
                .get_or_create(&log.label)
                .observe(now.duration_since(t).as_secs_f64());
            b.seen.pop_front();
        }
        b.behind_since = b.seen.front().map(|&(_, t)| t);
    }

    /// Reads the bucket's checkpoint and checks it against the database.
    async fn load(&self, log: &Log, ctx: &Ctx) -> Result<(), Failure> {
        let key = self.target.key(&log.name, "checkpoint");
        let (size, note, version) = match self.target.store.get(&key).await {
            Err(object_store::Error::NotFound { .. }) => (0, None, None),
            Err(e) => return Err(Failure::Retry(format!("reading {key}: {e}"))),
            Ok(got) => {
                let version = UpdateVersion {
                    e_tag: got.meta.e_tag.clone(),
                    version: got.meta.version.clone(),
                };
                let bytes = got
                    .bytes()
                    .await
                    .map_err(|e| Failure::Retry(format!("reading {key}: {e}")))?;
                let text = String::from_utf8(bytes.to_vec()).map_err(|_| {
                    Failure::Alarm(format!("{key} is not a checkpoint (not UTF-8)"))
                })?;
                let cp = stele_core::note::open_checkpoint(&text, &log.verifier).map_err(|e| {
                    Failure::Alarm(format!(
                        "{key} is not a checkpoint this log signed ({e}); it is left as it is"
                    ))
                })?;
                let ours = log.snapshot().size;
                if cp.size > ours {
                    return Err(Failure::Alarm(format!(
                        "{key} holds a tree of size {}, larger than this log's {ours}: the database went back (restored from an older backup?) — publishing would make the bucket go back too",
                        cp.size
                    )));
                }
                let stored = ctx
                    .storage
                    .checkpoint_at(&log.name, cp.size)
                    .await
                    .map_err(|e| Failure::Retry(format!("reading checkpoint {}: {e}", cp.size)))?;
                let stored_root = stored.and_then(|n| {
                    stele_core::note::open_checkpoint(&n, &log.verifier)
                        .ok()
                        .map(|c| c.root)
                });
                if cp.size > 0 && stored_root != Some(cp.root) {
                    return Err(Failure::Alarm(format!(
                        "{key} holds a tree of size {} with root {} that this log's database does not hold: another tree was published there",
                        cp.size,
                        cp.root.to_base64()
                    )));
                }
                (cp.size, Some(Arc::<str>::from(text)), Some(version))
            }
        };
        let mut b = self.bucket();
        b.loaded = true;
        b.size = size;
        b.note = note;
        b.version = version;
        tracing::info!(log = %log.name, "publishing to {}: the bucket has the tree of size {size}", self.target.describe);
        Ok(())
    }

    /// Uploads tiles create-only; an identical object already there is
    /// done, another one an alarm.
    async fn put_tiles(
        &self,
        log: &Log,
        ctx: &Ctx,
        paths: Vec<TilePath>,
        cache_control: &'static str,
    ) -> Result<(), Failure> {
        let mut puts = futures::stream::iter(paths.into_iter().map(|path| async move {
            let data = ctx
                .tile(log, path)
                .await
                .map_err(|e| Failure::Retry(format!("reading {path}: {e}")))?
                .data;
            let key = self.target.key(&log.name, &path.to_path());
            self.put_once(log, ctx, &key, data, cache_control).await
        }))
        .buffer_unordered(self.target.concurrency);
        let mut first: Option<Failure> = None;
        while let Some(r) = puts.next().await {
            if let Err(f) = r {
                // An alarm wins over a failure to retry.
                if !matches!(first, Some(Failure::Alarm(_))) {
                    first = Some(f);
                }
            }
        }
        first.map_or(Ok(()), Err)
    }

    async fn put_once(
        &self,
        log: &Log,
        ctx: &Ctx,
        key: &ObjectPath,
        data: Bytes,
        cache_control: &'static str,
    ) -> Result<(), Failure> {
        let count = |outcome: &str| {
            ctx.metrics.published(&log.name, outcome);
        };
        let opts = PutOptions {
            mode: PutMode::Create,
            attributes: attributes(cache_control, "application/octet-stream"),
            ..Default::default()
        };
        match self
            .target
            .store
            .put_opts(key, data.clone().into(), opts)
            .await
        {
            Ok(_) => {
                count("new");
                Ok(())
            }
            Err(object_store::Error::AlreadyExists { .. }) => {
                let there = async { self.target.store.get(key).await?.bytes().await }
                    .await
                    .map_err(|e| Failure::Retry(format!("reading {key} back: {e}")))?;
                if there == data {
                    count("present");
                    Ok(())
                } else {
                    count("conflict");
                    Err(Failure::Alarm(format!(
                        "{key} already holds {} bytes (SHA-256 {}) that differ from this log's {} bytes (SHA-256 {}); it is left as it is",
                        there.len(),
                        hex::encode(Sha256::digest(&there)),
                        data.len(),
                        hex::encode(Sha256::digest(&data))
                    )))
                }
            }
            Err(e) => {
                count("failed");
                Err(Failure::Retry(format!("putting {key}: {e}")))
            }
        }
    }

    /// Replaces the bucket's checkpoint (compare-and-set on what was last
    /// seen there).
    async fn put_checkpoint(&self, log: &Log, size: u64, note: Arc<str>) -> Result<(), Failure> {
        let key = self.target.key(&log.name, "checkpoint");
        let mode = match self.bucket().version.clone() {
            Some(v) if v.e_tag.is_some() || v.version.is_some() => PutMode::Update(v),
            Some(_) => PutMode::Overwrite,
            None => PutMode::Create,
        };
        let opts = PutOptions {
            mode,
            attributes: attributes(CACHE_CHECKPOINT, "text/plain; charset=utf-8"),
            ..Default::default()
        };
        let payload = Bytes::copy_from_slice(note.as_bytes());
        match self.target.store.put_opts(&key, payload.into(), opts).await {
            Ok(r) => {
                let mut b = self.bucket();
                b.size = size;
                b.note = Some(note);
                b.version = Some(UpdateVersion {
                    e_tag: r.e_tag,
                    version: r.version,
                });
                Ok(())
            }
            Err(
                object_store::Error::Precondition { .. }
                | object_store::Error::AlreadyExists { .. },
            ) => {
                // Someone else wrote it: read and check it again first.
                self.bucket().loaded = false;
                Err(Failure::Retry(format!(
                    "{key} changed since this publisher read it; reading it again"
                )))
            }
            Err(e) => Err(Failure::Retry(format!("putting {key}: {e}"))),
        }
    }
}

fn attributes(cache_control: &'static str, content_type: &'static str) -> Attributes {
    let mut a = Attributes::new();
    a.insert(Attribute::CacheControl, cache_control.into());
    a.insert(Attribute::ContentType, content_type.into());
    a
}

/// Publishes `log` while this process is its writer, until `stop`: a round
/// whenever the tree grows or a witnessed checkpoint is published (at most
/// one per `interval`), and at least every [`IDLE_ROUND`] (retries, the lag
/// gauges).
pub(crate) async fn run(
    publisher: Arc<Publisher>,
    log: Arc<Log>,
    ctx: Arc<Ctx>,
    mut stop: watch::Receiver<bool>,
) {
    let mut grown = log.grown.subscribe();
    let mut witnessed = log.witnesses.as_ref().map(|f| f.subscribe());
    loop {
        if log.status() == Status::Writable {
            let started = tokio::time::Instant::now();
            // Shutdown never waits for the bucket; a round cut short is
            // safe (tiles are create-only, the checkpoint goes last).
            tokio::select! {
                _ = publisher.round(&log, &ctx) => {}
                _ = stop.changed() => return,
            }
            tokio::select! {
                _ = tokio::time::sleep_until(started + publisher.target.interval) => {}
                _ = stop.changed() => return,
            }
        }
        tokio::select! {
            _ = grown.changed() => {}
            _ = async {
                match &mut witnessed {
                    Some(w) => { let _ = w.changed().await; }
                    None => std::future::pending().await,
                }
            } => {}
            _ = tokio::time::sleep(IDLE_ROUND) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
    }
}
