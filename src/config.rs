//! Configuration: one typed [`Config`]; its field docs are the reference.
//!
//! Layers, later wins: built-in defaults < TOML file (`--config FILE` or
//! `STELE_CONFIG`) < environment (`STELE_` prefix, nested with `__`, e.g.
//! `STELE_SEQUENCER__MAX_BATCH=500`; plain `DATABASE_URL` is read too, below
//! `STELE_DATABASE_URL`) < command-line flags. [`Config::validate`] runs at
//! start-up; nothing starts with an invalid configuration.
//!
//! Two modes:
//! - **embedded** (no `database_url`): SQLite at `<data_dir>/stele.db`; the
//!   data directory, the database and missing log keys are created on first
//!   start.
//! - **production** (`database_url` set): PostgreSQL; nothing critical is
//!   created silently — a missing key file is a start-up error.
//!
//! Secrets (database passwords, keys) are never printed: [`Config`]'s
//! `Debug` redacts the database URL's password.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::bail;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::api::{ConnectionLimits, Limits, TlsFiles};
use crate::engine::{EngineConfig, QuotaConfig, Rate};
use crate::names::{AgencyName, LogName};
use crate::records::MAX_BULK_RECORDS;
use crate::storage::postgres::PgOptions;
use crate::storage::{redact_url, Location};

/// The whole configuration of `stele serve` (and of the commands that open
/// the same storage: `stele agency ...`).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the HTTP server binds. Default `127.0.0.1:8080`; port 0 picks
    /// a free port (see `stele serve --addr-file`).
    pub listen: SocketAddr,
    /// Directory for the embedded database and generated keys. Default
    /// `stele-data` (relative to the working directory).
    pub data_dir: PathBuf,
    /// PostgreSQL URL (`postgres://user:password@host/db`). Unset → embedded
    /// SQLite at `<data_dir>/stele.db`. Also read from plain `DATABASE_URL`.
    pub database_url: Option<String>,
    /// Set `true` to run a configured deployment (key files of its own) on
    /// the embedded SQLite database. Without it, configured key files and
    /// no `database_url` is a start-up error: a production configuration
    /// that lost its `DATABASE_URL` must not quietly become a demo.
    pub embedded: bool,
    /// The logs this deployment serves. Default: one log `default` with origin
    /// `stele.localhost/default`.
    pub logs: Vec<LogSettings>,
    /// The per-log sequencer.
    pub sequencer: SequencerSettings,
    /// Request size limits (`max_body_bytes`, default 65536;
    /// `max_bulk_records`, default and maximum 1000; `max_bulk_body_bytes`,
    /// default 16 MiB).
    pub limits: Limits,
    /// Bytes of full tiles and entry bundles cached in memory. Default 64 MiB.
    pub cache_bytes: u64,
    /// Bytes of the tile cache's disk tier: full hash tiles with their
    /// interiors, in an unlinked scratch file under `data_dir` that lives in
    /// the kernel's page cache rather than in the process's memory and
    /// vanishes with the process. It keeps inclusion proofs off the
    /// database on trees too big for `cache_bytes` (64 bytes per entry:
    /// 1 GiB covers ~16M entries). Default 1 GiB; 0 disables it.
    pub disk_cache_bytes: u64,
    /// How long the registered agencies (token hashes) are held in memory
    /// before they are read again, in milliseconds: a revocation bites, and
    /// a new agency is known, within this time (an unknown name triggers a
    /// re-read at most once a second). Token checks never query the
    /// database per request. 0 reads them for every check. Default 5000.
    pub token_cache_ttl_ms: u64,
    /// PostgreSQL connection pool.
    pub db: DbSettings,
    /// Connections: TLS, timeouts, how many.
    pub http: HttpSettings,
    /// Per-agency quotas.
    pub quotas: QuotaSettings,
    /// The payload store's key-encryption key (a file written by `stele
    /// vault keygen`), which seals the content of private records. Embedded
    /// mode defaults to `<data_dir>/keys/payload.key`, generated if
    /// missing; otherwise unset means no private records on this server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_key_file: Option<PathBuf>,
    /// Earlier payload keys, kept only while `stele vault rotate-kek`
    /// re-wraps the data keys they wrapped: they open payloads, never seal.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub old_payload_key_files: Vec<PathBuf>,
    /// Publishing every log's tiles and checkpoint to S3-compatible object
    /// storage (`[publish]`); unset: no publishing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<PublishSettings>,
    /// Run as a read node (`[read_node]`): serve the public API from a
    /// PostgreSQL streaming replica of the writer's database, with each
    /// log's public key (`vkey`) and no signing key; writes are refused
    /// with `421` naming the writer. Unset: this process is (or waits to
    /// become) the writer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_node: Option<ReadNodeSettings>,
    /// The configuration file this was read from (not a setting).
    #[serde(skip)]
    pub source_file: Option<PathBuf>,
}

/// Connections (`[http]`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// PEM certificate chain; with `tls_key_file`, the service speaks HTTPS
    /// only (both are re-read on `SIGHUP`). Bearer tokens must only cross a
    /// network over TLS: without it, listen on loopback or behind a
    /// TLS-terminating proxy.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// Longest a client may take to send a request's headers, and longest
    /// a kept-alive connection may sit idle, in milliseconds. Default 10000.
    pub header_read_timeout_ms: u64,
    /// Most connections open at once; one beyond is closed at once.
    /// Default 4096 (keep it below the process's file descriptor limit).
    pub max_connections: usize,
    /// Serve `/metrics` on this address alone (e.g. `127.0.0.1:9090`),
    /// not on `listen`. Default: on `listen`.
    pub metrics_listen: Option<SocketAddr>,
}

/// Publishing to object storage (`[publish]`): the writer uploads each log's
/// tiles, entry bundles and checkpoint to `<url>/<log>/...`, so that the
/// bucket behind a CDN is a complete C2SP tlog-tiles log. Credentials come
/// from the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// optionally `AWS_SESSION_TOKEN`), never from this file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishSettings {
    /// `s3://bucket` or `s3://bucket/prefix`.
    pub url: String,
    /// An S3-compatible service instead of AWS, e.g. `http://127.0.0.1:9000`
    /// (path-style requests; `http://` only here).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Default `us-east-1`.
    #[serde(default = "default_publish_region")]
    pub region: String,
    /// Publishing further behind than this, in seconds, fails `/readyz`.
    /// Default 60.
    #[serde(default = "default_publish_max_lag_s")]
    pub max_lag_s: u64,
    /// Objects uploaded at once. Default 16.
    #[serde(default = "default_publish_concurrency")]
    pub concurrency: usize,
    /// Shortest time between two publishing rounds, in milliseconds: each
    /// round uploads the partial tiles and the checkpoint again, so under a
    /// steady write load this trades a little delay for fewer objects.
    /// Default 200.
    #[serde(default = "default_publish_interval_ms")]
    pub interval_ms: u64,
}

/// A read node (`[read_node]`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadNodeSettings {
    /// The writer's public URL (`https://log.example.gov`), named in the
    /// `421` problem a write sent here gets. Optional.
    #[serde(default)]
    pub writer_url: Option<String>,
    /// How often the replica's state is read again, in milliseconds (each
    /// new checkpoint is verified before it is served). Default 500.
    #[serde(default = "default_read_node_refresh_ms")]
    pub refresh_ms: u64,
}

fn default_read_node_refresh_ms() -> u64 {
    500
}

fn default_publish_interval_ms() -> u64 {
    200
}

fn default_publish_region() -> String {
    "us-east-1".into()
}

fn default_publish_max_lag_s() -> u64 {
    60
}

fn default_publish_concurrency() -> usize {
    16
}

/// Per-agency quotas (`[quotas]`): token buckets, refilled continuously.
/// 0 means no limit. Overrides per agency under `[quotas.agencies.NAME]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaSettings {
    /// Records per second an agency may submit. Default 0 (no limit).
    pub records_per_s: u32,
    /// Record bytes (type, subject, content hash, canonical attributes)
    /// per second. Default 0 (no limit).
    pub bytes_per_s: u32,
    /// Seconds of its rate an idle agency may spend at once. Default 1.
    pub burst_s: u32,
    /// Largest share of a log's queue one agency may hold (0 to 1], so that
    /// one agency's flood never fills the queue for the others. Default 0.5.
    pub max_queue_share: f64,
    /// Overrides by agency name.
    pub agencies: std::collections::BTreeMap<AgencyName, AgencyQuota>,
}

/// One agency's quota (`[quotas.agencies.NAME]`); unset fields take the
/// `[quotas]` value.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgencyQuota {
    pub records_per_s: Option<u32>,
    pub bytes_per_s: Option<u32>,
    pub burst_s: Option<u32>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        let c = ConnectionLimits::default();
        HttpSettings {
            tls_cert_file: None,
            tls_key_file: None,
            header_read_timeout_ms: c.header_read_timeout.as_millis() as u64,
            max_connections: c.max_connections,
            metrics_listen: None,
        }
    }
}

impl Default for QuotaSettings {
    fn default() -> Self {
        let q = QuotaConfig::default();
        QuotaSettings {
            records_per_s: q.default.records_per_s,
            bytes_per_s: q.default.bytes_per_s,
            burst_s: q.default.burst_s.max(1),
            max_queue_share: q.max_queue_share,
            agencies: Default::default(),
        }
    }
}

impl QuotaSettings {
    fn quota_config(&self) -> QuotaConfig {
        let rate = Rate {
            records_per_s: self.records_per_s,
            bytes_per_s: self.bytes_per_s,
            burst_s: self.burst_s,
        };
        QuotaConfig {
            default: rate,
            agencies: self
                .agencies
                .iter()
                .map(|(name, a)| {
                    (
                        name.clone(),
                        Rate {
                            records_per_s: a.records_per_s.unwrap_or(rate.records_per_s),
                            bytes_per_s: a.bytes_per_s.unwrap_or(rate.bytes_per_s),
                            burst_s: a.burst_s.unwrap_or(rate.burst_s),
                        },
                    )
                })
                .collect(),
            max_queue_share: self.max_queue_share,
        }
    }
}

/// One log.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// URL segment, `[a-z0-9-]+` (at most 64 characters): the log lives
    /// under `/logs/{name}`.
    pub name: LogName,
    /// Checkpoint origin (first line of every checkpoint), e.g.
    /// `records.example.gov/land`. Must equal the key's name.
    pub origin: String,
    /// The Ed25519 signing key (`PRIVATE+KEY+...`, as written by `stele
    /// keygen`). Default `<data_dir>/keys/<name>.skey`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// The log's verifier key (`origin+hash+key`, as `stele keygen`
    /// prints it): what a read node checks every checkpoint with. Only
    /// for read nodes (a writer takes it from its signing key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vkey: Option<String>,
    /// Accept records of types the log's registry does not know (stored
    /// unvalidated, without `type_version`, writable by any agency whose
    /// `--types` allow them). Only for logs that predate the registry,
    /// while their types are being registered; default false (fail closed:
    /// a record type must be registered first).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub accept_unregistered_types: bool,
    /// A C2SP tlog-policy file naming the log's witnesses (each with its
    /// URL) and the quorum. With it, `GET checkpoint` serves only
    /// checkpoints the quorum cosigned, and the writer checks the
    /// witnesses before it signs after any start. The policy must list
    /// this log's key in a `log` line. Without it: no witnesses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub witness_policy: Option<PathBuf>,
    /// Milliseconds between witnessing rounds. Default 1000.
    #[serde(default = "default_witness_interval_ms")]
    pub witness_interval_ms: u64,
    /// Longest one request to a witness may take, in milliseconds. Default 5000.
    #[serde(default = "default_witness_timeout_ms")]
    pub witness_timeout_ms: u64,
}

fn default_witness_interval_ms() -> u64 {
    1000
}

fn default_witness_timeout_ms() -> u64 {
    5000
}

/// Sequencer knobs (per log).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SequencerSettings {
    /// Most records committed in one transaction. Default 1000.
    pub max_batch: usize,
    /// How long an idle sequencer waits for more records once it has a
    /// first one, in milliseconds. Default 0: it commits at once, and what
    /// arrives during that commit is the next batch (group commit without a
    /// pause; a pause only saves commits when submissions trickle in, and
    /// costs every one of them its length in latency).
    pub max_wait_ms: u64,
    /// Pending submissions beyond which new ones get `503`. Default 20000.
    pub queue_capacity: usize,
    /// `Retry-After` sent with `503` answers, in seconds. Default 1.
    pub retry_after_s: u64,
}

/// PostgreSQL pool settings (ignored in embedded mode).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DbSettings {
    /// Connections for public reads. Default 7 (10 connections in all, as
    /// a single pool had).
    pub max_connections: u32,
    /// Connections for token checks (separate, so that floods of reads or
    /// of bogus tokens never starve agencies' writes; the agencies are read
    /// once per `token_cache_ttl_ms`). Default 1.
    pub auth_connections: u32,
    /// Connections of the writer side (commits, dedup look-ups, recovery,
    /// readiness). Default 2.
    pub write_connections: u32,
    /// How long a query waits for a connection before the request gets
    /// `503`, in milliseconds. Default 2000.
    pub acquire_timeout_ms: u64,
}

/// What `stele serve` runs with, derived from a validated [`Config`] in one
/// place ([`Config::settings`]).
#[derive(Clone, Debug)]
pub struct Settings {
    pub listen: SocketAddr,
    pub engine: EngineConfig,
    pub limits: Limits,
    pub connections: ConnectionLimits,
    pub tls: Option<TlsFiles>,
    pub metrics_listen: Option<SocketAddr>,
    pub storage: Location,
}

impl Default for Config {
    fn default() -> Self {
        let engine = EngineConfig::default();
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("stele-data"),
            database_url: None,
            embedded: false,
            logs: vec![LogSettings {
                name: LogName::parse("default").expect("a valid name"),
                origin: "stele.localhost/default".into(),
                key_file: None,
                vkey: None,
                accept_unregistered_types: false,
                witness_policy: None,
                witness_interval_ms: default_witness_interval_ms(),
                witness_timeout_ms: default_witness_timeout_ms(),
            }],
            sequencer: SequencerSettings::default(),
            limits: Limits::default(),
            cache_bytes: engine.cache_bytes,
            disk_cache_bytes: 1 << 30,
            token_cache_ttl_ms: engine.token_cache_ttl.as_millis() as u64,
            db: DbSettings::default(),
            http: HttpSettings::default(),
            quotas: QuotaSettings::default(),
            payload_key_file: None,
            old_payload_key_files: Vec::new(),
            publish: None,
            read_node: None,
            source_file: None,
        }
    }
}

impl Default for SequencerSettings {
    fn default() -> Self {
        let e = EngineConfig::default();
        SequencerSettings {
            max_batch: e.max_batch,
            max_wait_ms: e.max_wait.as_millis() as u64,
            queue_capacity: e.queue_capacity,
            retry_after_s: e.retry_after.as_secs(),
        }
    }
}

impl Default for DbSettings {
    fn default() -> Self {
        let pg = PgOptions::default();
        DbSettings {
            max_connections: pg.max_connections,
            auth_connections: pg.auth_connections,
            write_connections: pg.write_connections,
            acquire_timeout_ms: pg.acquire_timeout.as_millis() as u64,
        }
    }
}

/// Command-line overrides (the top layer). `None` leaves a setting alone.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub config_file: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
}

/// Top-level keys taken from `STELE_*` variables; other `STELE_*` variables
/// (`STELE_LOG`, `STELE_CONFIG`, test settings, ...) belong to other parts.
const ENV_KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "database_url",
    "logs",
    "sequencer",
    "limits",
    "cache_bytes",
    "disk_cache_bytes",
    "token_cache_ttl_ms",
    "db",
    "embedded",
    "http",
    "quotas",
    "publish",
    "read_node",
];

impl Config {
    /// Resolves the layers and validates the result.
    pub fn load(overrides: &Overrides) -> anyhow::Result<Config> {
        let file = overrides
            .config_file
            .clone()
            .or_else(|| std::env::var_os("STELE_CONFIG").map(PathBuf::from));
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = &file {
            if !file.exists() {
                bail!("configuration file {} does not exist", file.display());
            }
            fig = fig.merge(Toml::file(file));
        }
        fig = fig.merge(Env::raw().only(&["database_url"])).merge(
            Env::prefixed("STELE_")
                .filter(|k| {
                    let top = k.as_str().split("__").next().unwrap_or_default();
                    ENV_KEYS.iter().any(|known| top.eq_ignore_ascii_case(known))
                })
                .split("__"),
        );
        if let Some(v) = overrides.listen {
            fig = fig.merge(Serialized::default("listen", v));
        }
        if let Some(v) = &overrides.data_dir {
            fig = fig.merge(Serialized::default("data_dir", v));
        }
        if let Some(v) = &overrides.database_url {
            fig = fig.merge(Serialized::default("database_url", v));
        }
        let mut config: Config = fig.extract().map_err(|e| {
            // figment errors name the key and the layer it came from; they
            // never include the value of a secret except for type mismatches
            // on it, which cannot happen for the string-typed URL.
            anyhow::anyhow!("invalid configuration: {e}")
        })?;
        config.source_file = file;
        config.validate()?;
        Ok(config)
    }

    /// Checks everything that can be checked without touching the disk or
    /// the database.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.logs.is_empty() {
            bail!("invalid configuration: `logs` is empty; configure at least one log");
        }
        let mut names = std::collections::HashSet::new();
        let mut origins = std::collections::HashSet::new();
        for log in &self.logs {
            if !names.insert(log.name.as_str()) {
                bail!(
                    "invalid configuration: log name {:?} is used twice",
                    log.name
                );
            }
            if log.origin.is_empty()
                || log
                    .origin
                    .chars()
                    .any(|c| c.is_whitespace() || c == '+' || c.is_control())
            {
                bail!(
                    "invalid configuration: origin {:?} of log {:?} must be non-empty, without spaces or '+'",
                    log.origin,
                    log.name
                );
            }
            if !origins.insert(log.origin.as_str()) {
                bail!(
                    "invalid configuration: origin {:?} is used by two logs",
                    log.origin
                );
            }
        }
        let s = &self.sequencer;
        if s.max_batch == 0 {
            bail!("invalid configuration: sequencer.max_batch must be at least 1");
        }
        if s.queue_capacity < s.max_batch {
            bail!(
                "invalid configuration: sequencer.queue_capacity ({}) must be at least sequencer.max_batch ({})",
                s.queue_capacity,
                s.max_batch
            );
        }
        if s.retry_after_s == 0 {
            bail!("invalid configuration: sequencer.retry_after_s must be at least 1");
        }
        let l = &self.limits;
        if l.max_body_bytes < 1024 {
            bail!("invalid configuration: limits.max_body_bytes must be at least 1024");
        }
        if l.max_document_bytes > crate::records::MAX_DOCUMENT_BYTES {
            bail!(
                "limits.max_document_bytes is {}; at most {} is allowed",
                l.max_document_bytes,
                crate::records::MAX_DOCUMENT_BYTES
            );
        }
        if l.max_bulk_records == 0 || l.max_bulk_records > MAX_BULK_RECORDS {
            bail!("invalid configuration: limits.max_bulk_records must be between 1 and {MAX_BULK_RECORDS}");
        }
        if l.max_bulk_body_bytes < l.max_body_bytes {
            bail!("invalid configuration: limits.max_bulk_body_bytes must be at least limits.max_body_bytes");
        }
        if let Some(url) = &self.database_url {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                bail!(
                    "invalid configuration: database_url must be a postgres:// URL ({})",
                    redact_url(url)
                );
            }
        }
        if self.db.max_connections == 0
            || self.db.auth_connections == 0
            || self.db.write_connections < 2
        {
            bail!("invalid configuration: db.max_connections and db.auth_connections must be at least 1, db.write_connections at least 2 (the kept commit connection and one more)");
        }
        let h = &self.http;
        if h.tls_cert_file.is_some() != h.tls_key_file.is_some() {
            bail!("invalid configuration: http.tls_cert_file and http.tls_key_file go together");
        }
        if h.max_connections == 0 || h.header_read_timeout_ms == 0 {
            bail!("invalid configuration: http.max_connections and http.header_read_timeout_ms must be at least 1");
        }
        if l.max_body_bytes_in_flight < l.max_bulk_body_bytes {
            bail!("invalid configuration: limits.max_body_bytes_in_flight must be at least limits.max_bulk_body_bytes");
        }
        if l.body_timeout_ms == 0 || l.max_in_flight_writes == 0 || l.max_in_flight_reads == 0 {
            bail!("invalid configuration: limits.body_timeout_ms, limits.max_in_flight_writes and limits.max_in_flight_reads must be at least 1");
        }
        let q = &self.quotas;
        if !(q.max_queue_share > 0.0 && q.max_queue_share <= 1.0) {
            bail!("invalid configuration: quotas.max_queue_share must be above 0 and at most 1");
        }
        if q.burst_s == 0 {
            bail!("invalid configuration: quotas.burst_s must be at least 1");
        }
        if let Some(p) = &self.publish {
            crate::engine::parse_bucket_url(&p.url)
                .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
            if p.max_lag_s == 0 || p.concurrency == 0 {
                bail!("invalid configuration: publish.max_lag_s and publish.concurrency must be at least 1");
            }
            if let Some(ep) = &p.endpoint {
                if !(ep.starts_with("http://") || ep.starts_with("https://")) {
                    bail!("invalid configuration: publish.endpoint {ep:?} must be an http:// or https:// URL");
                }
            }
        }
        if let Some(r) = &self.read_node {
            self.validate_read_node(r)?;
        } else if let Some(log) = self.logs.iter().find(|l| l.vkey.is_some()) {
            bail!(
                "invalid configuration: log {:?} has a `vkey`, which only read nodes take (a writer reads its signing key); add `[read_node]` or remove it",
                log.name
            );
        }
        if self.database_url.is_none()
            && !self.embedded
            && self.logs.iter().any(|l| l.key_file.is_some())
        {
            bail!(
                "invalid configuration: the logs name key files but there is no database_url (is DATABASE_URL missing from the service's environment?); \
                 set `embedded = true` to run this configuration on the embedded SQLite database on purpose"
            );
        }
        Ok(())
    }

    fn validate_read_node(&self, r: &ReadNodeSettings) -> anyhow::Result<()> {
        if self.database_url.is_none() {
            bail!("invalid configuration: a read node follows a PostgreSQL streaming replica: set database_url to the replica");
        }
        if self.publish.is_some() {
            bail!("invalid configuration: a read node does not publish; `[publish]` belongs to the writer's configuration");
        }
        if r.refresh_ms == 0 {
            bail!("invalid configuration: read_node.refresh_ms must be at least 1");
        }
        if let Some(url) = &r.writer_url {
            match url::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                _ => bail!(
                    "invalid configuration: read_node.writer_url {url:?} must be an http:// or https:// URL"
                ),
            }
        }
        for log in &self.logs {
            if log.key_file.is_some() {
                bail!(
                    "invalid configuration: log {:?} names a key_file, but a read node holds no signing key; give its `vkey` instead",
                    log.name
                );
            }
            let Some(vkey) = &log.vkey else {
                bail!(
                    "invalid configuration: log {:?} needs its `vkey` on a read node (the verifier key `stele keygen` printed for it)",
                    log.name
                );
            };
            let verifier = stele_core::note::Verifier::from_vkey(vkey).map_err(|e| {
                anyhow::anyhow!("invalid configuration: log {:?}: vkey: {e}", log.name)
            })?;
            if verifier.name() != log.origin {
                bail!(
                    "invalid configuration: log {:?}: the vkey is for origin {:?}, but the log's origin is {:?}",
                    log.name,
                    verifier.name(),
                    log.origin
                );
            }
        }
        Ok(())
    }

    /// True when no `database_url` is set (SQLite under `data_dir`).
    pub fn uses_sqlite(&self) -> bool {
        self.database_url.is_none()
    }

    /// The no-configuration quick start: no configuration file, no database
    /// URL, no key files named. Only then is agency `demo` created.
    pub fn quick_start(&self) -> bool {
        self.source_file.is_none()
            && self.database_url.is_none()
            && self.logs.iter().all(|l| l.key_file.is_none())
    }

    /// Path of the embedded SQLite database.
    pub fn sqlite_path(&self) -> PathBuf {
        self.data_dir.join("stele.db")
    }

    /// The key file of a log (configured, or `<data_dir>/keys/<name>.skey`).
    pub fn key_file(&self, log: &LogSettings) -> PathBuf {
        log.key_file
            .clone()
            .unwrap_or_else(|| default_key_file(&self.data_dir, &log.name))
    }

    /// A read node's served mark for a log (the newest checkpoint it
    /// served): `<data_dir>/read-node/<name>.served`.
    pub fn served_mark_file(&self, log: &LogSettings) -> PathBuf {
        self.data_dir
            .join("read-node")
            .join(format!("{}.served", log.name))
    }

    /// The runtime settings of `stele serve`.
    pub fn settings(&self) -> Settings {
        let h = &self.http;
        Settings {
            listen: self.listen,
            engine: self.engine_config(),
            limits: self.limits.clone(),
            connections: ConnectionLimits {
                max_connections: h.max_connections,
                header_read_timeout: Duration::from_millis(h.header_read_timeout_ms),
            },
            tls: match (&h.tls_cert_file, &h.tls_key_file) {
                (Some(cert), Some(key)) => Some(TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                }),
                _ => None,
            },
            metrics_listen: h.metrics_listen,
            storage: self.storage_location(),
        }
    }

    /// Where the data lives: PostgreSQL when `database_url` is set, else
    /// SQLite under `data_dir`.
    pub fn storage_location(&self) -> Location {
        match &self.database_url {
            Some(url) => Location::Postgres {
                url: url.clone(),
                options: PgOptions {
                    max_connections: self.db.max_connections,
                    auth_connections: self.db.auth_connections,
                    write_connections: self.db.write_connections,
                    acquire_timeout: Duration::from_millis(self.db.acquire_timeout_ms),
                    replica: self.read_node.is_some(),
                    ..PgOptions::default()
                },
            },
            None => Location::Sqlite {
                path: self.sqlite_path(),
            },
        }
    }

    /// The engine's knobs.
    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            max_batch: self.sequencer.max_batch,
            max_wait: Duration::from_millis(self.sequencer.max_wait_ms),
            queue_capacity: self.sequencer.queue_capacity,
            cache_bytes: self.cache_bytes,
            disk_cache: (self.disk_cache_bytes > 0)
                .then(|| (self.data_dir.clone(), self.disk_cache_bytes)),
            token_cache_ttl: Duration::from_millis(self.token_cache_ttl_ms),
            retry_after: Duration::from_secs(self.sequencer.retry_after_s),
            quotas: self.quotas.quota_config(),
            // Loaded from its file by `stele serve` (`cli::serve::load_vault`).
            vault: None,
            // Opened by `stele serve` (`cli::serve::open_publishing`).
            publish: None,
            max_document_bytes: self.limits.max_document_bytes,
            read_node: self.read_node.as_ref().map(|r| crate::engine::ReadNode {
                writer_url: r.writer_url.clone(),
                refresh: Duration::from_millis(r.refresh_ms),
            }),
        }
    }

    /// The payload key file: configured, or in embedded mode
    /// `<data_dir>/keys/payload.key`; None: no private records.
    pub fn payload_key_path(&self) -> Option<PathBuf> {
        self.payload_key_file.clone().or_else(|| {
            self.uses_sqlite()
                .then(|| self.data_dir.join("keys").join("payload.key"))
        })
    }

    /// Where the data lives, safe to log (password redacted).
    pub fn describe_storage(&self) -> String {
        self.storage_location().describe()
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field(
                "database_url",
                &self.database_url.as_deref().map(redact_url),
            )
            .field("logs", &self.logs)
            .field("sequencer", &self.sequencer)
            .field("limits", &self.limits)
            .field("cache_bytes", &self.cache_bytes)
            .field("disk_cache_bytes", &self.disk_cache_bytes)
            .field("token_cache_ttl_ms", &self.token_cache_ttl_ms)
            .field("db", &self.db)
            .field("publish", &self.publish)
            .field("read_node", &self.read_node)
            .finish()
    }
}

/// `<data_dir>/keys/<name>.skey`.
pub fn default_key_file(data_dir: &Path, log: &str) -> PathBuf {
    data_dir.join("keys").join(format!("{log}.skey"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        let c = Config {
            database_url: Some("postgres://u:hunter2@h/db".into()),
            ..Config::default()
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!c.describe_storage().contains("hunter2"));
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn layers_file_env_flags() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "stele.toml",
                r#"
                listen = "127.0.0.1:9000"
                data_dir = "from-file"
                [sequencer]
                max_batch = 10
                queue_capacity = 100
                [[logs]]
                name = "land"
                origin = "records.example.gov/land"
                "#,
            )?;
            jail.set_env("STELE_SEQUENCER__MAX_WAIT_MS", "7");
            jail.set_env("STELE_DATA_DIR", "from-env");
            jail.set_env("DATABASE_URL", "postgres://plain/db");
            jail.set_env("STELE_LOG", "debug");
            let c = Config::load(&Overrides {
                config_file: Some("stele.toml".into()),
                listen: Some("127.0.0.1:9001".parse().unwrap()),
                ..Overrides::default()
            })
            .map_err(|e| e.to_string())?;
            assert_eq!(c.listen.port(), 9001);
            assert_eq!(c.data_dir, PathBuf::from("from-env"));
            assert_eq!(c.sequencer.max_batch, 10);
            assert_eq!(c.sequencer.max_wait_ms, 7);
            assert_eq!(c.sequencer.queue_capacity, 100);
            assert_eq!(c.logs.len(), 1);
            assert_eq!(c.logs[0].name, "land");
            assert_eq!(c.database_url.as_deref(), Some("postgres://plain/db"));
            jail.set_env("STELE_DATABASE_URL", "postgres://stele/db");
            let c = Config::load(&Overrides {
                config_file: Some("stele.toml".into()),
                ..Overrides::default()
            })
            .map_err(|e| e.to_string())?;
            assert_eq!(c.database_url.as_deref(), Some("postgres://stele/db"));
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn rejects_bad_settings() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("typo.toml", "listn = \"127.0.0.1:1\"\n")?;
            let e = Config::load(&Overrides {
                config_file: Some("typo.toml".into()),
                ..Overrides::default()
            })
            .unwrap_err()
            .to_string();
            assert!(e.contains("listn"), "{e}");
            jail.create_file(
                "bad.toml",
                "[[logs]]\nname = \"Bad Name\"\norigin = \"x\"\n",
            )?;
            let e = Config::load(&Overrides {
                config_file: Some("bad.toml".into()),
                ..Overrides::default()
            })
            .unwrap_err()
            .to_string();
            assert!(e.contains("Bad Name"), "{e}");
            jail.set_env("STELE_SEQUENCER__MAX_BATCH", "0");
            let e = Config::load(&Overrides::default()).unwrap_err().to_string();
            assert!(e.contains("max_batch"), "{e}");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn example_production_config_is_valid() {
        let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/stele.toml");
        figment::Jail::expect_with(|jail| {
            jail.set_env("DATABASE_URL", "postgres://stele:pw@db.internal/stele");
            let c = Config::load(&Overrides {
                config_file: Some(example.clone()),
                ..Overrides::default()
            })
            .map_err(|e| e.to_string())?;
            assert!(!c.uses_sqlite());
            assert_eq!(c.logs.len(), 2);
            assert_eq!(
                c.key_file(&c.logs[0]),
                PathBuf::from("/etc/stele/keys/land.skey")
            );
            assert_eq!(
                c.payload_key_path(),
                Some(PathBuf::from("/etc/stele/keys/payload.key"))
            );
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn example_read_node_config_is_valid() {
        let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("deploy/scale-out/stele-read-node.toml");
        figment::Jail::expect_with(|jail| {
            jail.set_env("DATABASE_URL", "postgres://stele_reader:pw@replica/stele");
            let c = Config::load(&Overrides {
                config_file: Some(example.clone()),
                ..Overrides::default()
            })
            .map_err(|e| e.to_string())?;
            let r = c.read_node.as_ref().expect("a read node");
            assert_eq!(r.writer_url.as_deref(), Some("https://records.example.gov"));
            assert!(c.logs.iter().all(|l| l.vkey.is_some()));
            let Location::Postgres { options, .. } = c.storage_location() else {
                panic!("a read node is on PostgreSQL");
            };
            assert!(options.replica);
            assert!(c.engine_config().read_node.is_some());
            Ok(())
        });
    }

    #[test]
    fn read_node_settings_are_checked() {
        let vkey = "records.example.gov/land+523b0478+AXjrSUlUD6hwTowN1uhixJ+AxO8OGgYSaWN3/XWVDdoQ";
        let node = |f: &dyn Fn(&mut Config)| {
            let mut c = Config {
                database_url: Some("postgres://replica/stele".into()),
                read_node: Some(ReadNodeSettings {
                    writer_url: Some("https://records.example.gov".into()),
                    refresh_ms: 500,
                }),
                ..Config::default()
            };
            c.logs[0].origin = "records.example.gov/land".into();
            c.logs[0].vkey = Some(vkey.into());
            f(&mut c);
            c.validate().map_err(|e| e.to_string())
        };
        node(&|_| {}).unwrap();
        type Change<'a> = &'a dyn Fn(&mut Config);
        let cases: [(Change, &str); 7] = [
            (&|c| c.database_url = None, "PostgreSQL streaming replica"),
            (&|c| c.logs[0].vkey = None, "needs its `vkey`"),
            (
                &|c| c.logs[0].key_file = Some("/k".into()),
                "holds no signing key",
            ),
            (
                &|c| c.logs[0].origin = "records.example.gov/other".into(),
                "the vkey is for origin",
            ),
            (&|c| c.logs[0].vkey = Some("nonsense".into()), "vkey"),
            (
                &|c| c.read_node.as_mut().unwrap().writer_url = Some("ftp://x".into()),
                "writer_url",
            ),
            (
                &|c| {
                    c.publish = Some(PublishSettings {
                        url: "s3://b".into(),
                        endpoint: None,
                        region: default_publish_region(),
                        max_lag_s: 60,
                        concurrency: 1,
                        interval_ms: 200,
                    })
                },
                "does not publish",
            ),
        ];
        for (change, says) in cases {
            let e = node(change).unwrap_err();
            assert!(e.contains(says), "{e} (expected {says:?})");
        }
        // A writer takes no vkey.
        let mut c = Config::default();
        c.logs[0].vkey = Some(vkey.into());
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("only read nodes"), "{e}");
    }

    #[test]
    fn defaults_are_valid_and_embedded() {
        let c = Config::default();
        c.validate().unwrap();
        assert!(c.uses_sqlite());
        assert!(c.quick_start());
        assert_eq!(
            c.key_file(&c.logs[0]),
            PathBuf::from("stele-data/keys/default.skey")
        );
    }
}
