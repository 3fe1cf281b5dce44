//! `stele serve`: configuration → storage → keys → engine → HTTP.
//!
//! Start-up order, and what each mode may create:
//! 1. configuration ([`Config::load`]), validated;
//! 2. keys: embedded mode generates a missing key file (and logs its vkey);
//!    production mode refuses to start without it;
//! 3. storage: embedded mode creates the data directory and the SQLite
//!    database; production mode connects to PostgreSQL (migrations run);
//! 4. engine (recovery check, writer lease, sequencers);
//! 5. embedded mode with no agency at all registers agency `demo` and prints
//!    its token once;
//! 6. bind, write `--addr-file`, serve until SIGINT/SIGTERM; then stop
//!    accepting, finish requests in flight, and shut the engine down (the
//!    batch in flight is committed), exit 0.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use stele_core::note::Signer;

use crate::api::{self, AppState};
use crate::config::{Config, Overrides};
use crate::engine::{Engine, LogConfig};
use crate::metrics::Metrics;
use crate::names::AgencyName;
use crate::storage::{Agencies, AgencyRecord};

/// Command-line arguments of `stele serve`.
#[derive(Debug, Default, clap::Args)]
pub struct Args {
    /// TOML configuration file (also `STELE_CONFIG`).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on (port 0: any free port).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Once listening, write the bound address (`127.0.0.1:PORT`) to this file.
    #[arg(long, value_name = "FILE")]
    pub addr_file: Option<PathBuf>,
    /// Data directory of the embedded mode.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL URL (production mode); also `DATABASE_URL`.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
}

impl Args {
    pub fn overrides(&self) -> Overrides {
        Overrides {
            config_file: self.config.clone(),
            listen: self.listen,
            data_dir: self.data_dir.clone(),
            database_url: self.database_url.clone(),
        }
    }
}

/// How long shutdown waits for requests in flight before giving up on them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.overrides())?;
    super::runtime()?.block_on(serve(config, args.addr_file))?;
    Ok(ExitCode::SUCCESS)
}

/// Runs the service until SIGINT or SIGTERM.
pub async fn serve(config: Config, addr_file: Option<PathBuf>) -> anyhow::Result<()> {
    tracing::info!(storage = %config.describe_storage(), logs = config.logs.len(), "starting");
    // Keys first: a production start with a missing key fails before it
    // touches the database.
    let logs = load_logs(&config)?;
    let mut settings = config.settings();
    settings.engine.vault = load_vault(&config)?;
    settings.engine.publish = open_publishing(&config)?;
    let storage = crate::storage::open(&settings.storage).await?;
    let metrics = Arc::new(Metrics::new());
    // TLS files are checked before anything starts.
    let tls = settings.tls.clone().map(api::Tls::new).transpose()?;
    let engine = Engine::start(storage.clone(), logs, settings.engine, metrics.clone()).await?;
    if config.quick_start() {
        ensure_demo_agency(storage.as_ref()).await?;
        // Not fatal: a log that is not writable now (another process is its
        // writer) gets them at a later first start, or by `stele type apply`.
        if let Err(e) = register_example_types(&engine).await {
            tracing::warn!("the example record types were not registered: {e:#}");
        }
    }

    let listener = api::serve::bind(settings.listen).await?;
    let addr = listener.local_addr()?;
    if let Some(t) = &tls {
        t.reload_on_sighup();
    } else if !addr.ip().is_loopback() {
        tracing::warn!(
            "listening on {addr} without TLS: bearer tokens cross the network in clear text; \
             set http.tls_cert_file and http.tls_key_file, or put a TLS proxy in front"
        );
    }
    if let Some(m) = settings.metrics_listen {
        let l = api::serve::bind(m).await?;
        tracing::info!("metrics on http://{}/metrics", l.local_addr()?);
        let router = api::metrics_router(metrics.clone());
        tokio::spawn(api::serve::serve(
            l,
            router,
            api::ServeOptions::default(),
            std::future::pending(),
        ));
    }
    if let Some(path) = &addr_file {
        write_addr_file(path, addr)?;
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!("listening on {scheme}://{addr}");

    let state = AppState::new(
        engine.clone(),
        metrics.clone(),
        settings.limits,
        settings.metrics_listen.is_none(),
    );
    let options = api::ServeOptions {
        limits: settings.connections,
        tls,
        metrics: Some(metrics),
    };
    let (drained_tx, drained_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(api::serve::serve(
        listener,
        api::router(state),
        options,
        async move {
            shutdown_signal().await;
            let _ = drained_tx.send(());
        },
    ));
    // Once the signal has come, give requests in flight DRAIN_TIMEOUT to finish.
    let result = tokio::select! {
        r = server => Some(r),
        _ = async {
            let _ = drained_rx.await;
            tokio::time::sleep(DRAIN_TIMEOUT).await;
        } => None,
    };
    match result {
        Some(Ok(Ok(()))) => {}
        Some(Ok(Err(e))) => tracing::error!(error = %e, "HTTP server failed"),
        Some(Err(e)) => tracing::error!(error = %e, "HTTP server task failed"),
        None => {
            tracing::warn!("requests still in flight after {DRAIN_TIMEOUT:?}; shutting down anyway")
        }
    }
    tracing::info!("finishing the batch in flight");
    engine.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// Reads the payload key (embedded mode: creates it if missing). None: no
/// payload key configured, so this server takes no private records.
/// The `[publish]` bucket, if configured (opened, not yet contacted: the
/// publisher reads its checkpoint when it starts).
pub fn open_publishing(
    config: &Config,
) -> anyhow::Result<Option<Arc<crate::engine::PublishTarget>>> {
    let Some(p) = &config.publish else {
        return Ok(None);
    };
    let target = crate::engine::PublishTarget::s3(
        &p.url,
        p.endpoint.as_deref(),
        &p.region,
        p.concurrency,
        Duration::from_secs(p.max_lag_s),
        Duration::from_millis(p.interval_ms),
    )?;
    tracing::info!("publishing tiles to {}", target.describe);
    Ok(Some(Arc::new(target)))
}

pub fn load_vault(config: &Config) -> anyhow::Result<Option<Arc<crate::vault::Vault>>> {
    use crate::vault::{Kek, KeyWrapper, Vault};
    let Some(path) = config.payload_key_path() else {
        return Ok(None);
    };
    let kek = if path.exists() {
        let text = crate::files::read_secret_file(&path, !config.uses_sqlite())?;
        Kek::parse(&text).with_context(|| format!("payload key {}", path.display()))?
    } else if config.uses_sqlite() && config.payload_key_file.is_none() {
        let (kek, text) = Kek::generate();
        crate::files::write_secret_file(&path, &text)?;
        tracing::info!(key_file = %path.display(), kek = kek.id(), "generated a payload key");
        kek
    } else {
        bail!(
            "payload key file {} does not exist; create it with `stele vault keygen --out {}`",
            path.display(),
            path.display()
        );
    };
    let mut old = Vec::new();
    for f in &config.old_payload_key_files {
        let text = crate::files::read_secret_file(f, !config.uses_sqlite())?;
        old.push(Kek::parse(&text).with_context(|| format!("old payload key {}", f.display()))?);
    }
    tracing::info!(kek = kek.id(), old_keys = old.len(), "payload store");
    Ok(Some(Arc::new(Vault::new(kek, old))))
}

/// Reads (embedded mode: creates if missing) every log's signing key; a
/// read node takes each log's `vkey` instead, and keeps its served mark in
/// the data directory.
pub fn load_logs(config: &Config) -> anyhow::Result<Vec<LogConfig>> {
    let mut out = Vec::with_capacity(config.logs.len());
    for log in &config.logs {
        if config.read_node.is_some() {
            let vkey = log
                .vkey
                .clone()
                .expect("validated: a read node's logs have a vkey");
            tracing::info!(log = %log.name, origin = %log.origin, vkey = %vkey, "log (read node)");
            let mark = config.served_mark_file(log);
            if let Some(dir) = mark.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            out.push(LogConfig {
                name: log.name.clone(),
                origin: log.origin.clone(),
                signer: None,
                witnesses: witness_config(log, &vkey)?,
                vkey,
                mark_file: Some(mark),
                accept_unregistered: log.accept_unregistered_types,
            });
            continue;
        }
        let path = config.key_file(log);
        let signer = if path.exists() {
            // In production a key others can read is refused.
            let skey = crate::files::read_secret_file(&path, !config.uses_sqlite())?;
            Signer::from_skey(&skey).map_err(|e| {
                anyhow::anyhow!("key file {} is not a signing key: {e}", path.display())
            })?
        } else if config.uses_sqlite() && log.key_file.is_none() {
            let (signer, skey) = Signer::generate(&log.origin).map_err(|e| {
                anyhow::anyhow!("cannot make a key for origin {:?}: {e}", log.origin)
            })?;
            crate::files::write_secret_file(&path, &format!("{skey}\n"))?;
            tracing::info!(log = %log.name, key_file = %path.display(), vkey = %signer.vkey(), "generated a signing key");
            signer
        } else {
            bail!(
                "key file {} of log {:?} does not exist; create it with `stele keygen --origin {} --out {}`",
                path.display(),
                log.name,
                log.origin,
                path.display()
            );
        };
        if signer.name() != log.origin {
            bail!(
                "key file {} is for origin {:?}, but log {:?} has origin {:?}",
                path.display(),
                signer.name(),
                log.name,
                log.origin
            );
        }
        let vkey = signer.vkey();
        tracing::info!(log = %log.name, origin = %log.origin, vkey = %vkey, "log");
        out.push(LogConfig {
            name: log.name.clone(),
            origin: log.origin.clone(),
            witnesses: witness_config(log, &vkey)?,
            vkey,
            signer: Some(Arc::new(signer)),
            mark_file: Some(crate::engine::mark_file_for(&path)),
            accept_unregistered: log.accept_unregistered_types,
        });
    }
    Ok(out)
}

/// The log's witness policy, read and checked against its key `vkey`.
fn witness_config(
    log: &crate::config::LogSettings,
    vkey: &str,
) -> anyhow::Result<Option<crate::engine::WitnessConfig>> {
    let witnesses = match &log.witness_policy {
        Some(policy) => {
            let text = std::fs::read_to_string(policy).with_context(|| {
                format!(
                    "log {:?}: cannot read the witness policy {}",
                    log.name,
                    policy.display()
                )
            })?;
            let w = crate::engine::WitnessConfig::new(
                text,
                vkey,
                std::time::Duration::from_millis(log.witness_interval_ms),
                std::time::Duration::from_millis(log.witness_timeout_ms),
            )
            .with_context(|| format!("log {:?}: witness policy {}", log.name, policy.display()))?;
            tracing::info!(log = %log.name, policy = %policy.display(), witnesses = w.policy.witnesses().len(), "witness policy");
            Some(w)
        }
        None => None,
    };
    Ok(witnesses)
}

/// Embedded mode, first start: registers agency `demo` (all record types)
/// and prints its token once, so a newcomer can submit at once.
async fn ensure_demo_agency(storage: &dyn Agencies) -> anyhow::Result<()> {
    if !storage.list_agencies().await?.is_empty() {
        return Ok(());
    }
    let demo = AgencyName::parse("demo").expect("a valid name");
    let (token, token_hash) = crate::engine::agency::new_token(&demo);
    let record = AgencyRecord {
        name: demo.to_string(),
        token_hash,
        types: vec![],
        revoked: false,
        registry_admin: true,
        eraser: false,
        created_ms: chrono::Utc::now().timestamp_millis(),
    };
    storage.add_agency(&record).await?;
    let line = "=".repeat(72);
    eprintln!(
        "\n{line}\n  First start: registered agency `demo` (registry admin; writer of the\n  \
         example record types land.transfer, health.vaccination, disease.covid-test, parking.status,\n  \
         and reader too of the private health.case).\n  \
         Its bearer token is shown ONCE; store it now:\n\n    {token}\n\n  \
         Register more with `stele agency add NAME`.\n{line}\n"
    );
    Ok(())
}

/// The example record types (`examples/types/`), built into the binary.
pub const EXAMPLE_TYPES: [(&str, &str); 5] = [
    (
        "land.transfer.toml",
        include_str!("../../examples/types/land.transfer.toml"),
    ),
    (
        "health.vaccination.toml",
        include_str!("../../examples/types/health.vaccination.toml"),
    ),
    (
        "disease.covid-test.toml",
        include_str!("../../examples/types/disease.covid-test.toml"),
    ),
    (
        "parking.status.toml",
        include_str!("../../examples/types/parking.status.toml"),
    ),
    (
        "health.case.toml",
        include_str!("../../examples/types/health.case.toml"),
    ),
];

/// Embedded mode: a log whose registry is empty gets the example types,
/// applied by `demo` and granted to it besides their own writers (and
/// readers, for the private `health.case`), so the quick start can submit
/// at once.
async fn register_example_types(engine: &Engine) -> anyhow::Result<()> {
    let demo = crate::engine::Agency {
        name: AgencyName::parse("demo").expect("a valid name"),
        types: vec![],
        registry_admin: true,
        eraser: false,
    };
    for log in engine.logs().await {
        let (registry, _) = engine.registry(&log.name)?;
        if !registry.is_empty() {
            continue;
        }
        for (file, text) in EXAMPLE_TYPES {
            let mut def = crate::registry::TypeDefinition::parse(text)
                .with_context(|| format!("example type {file}"))?;
            def.writers
                .push(crate::registry::Writer::Agency(demo.name.clone()));
            if def.visibility == crate::registry::Visibility::Private {
                def.readers.push(demo.name.clone());
            }
            engine
                .apply_type(&log.name, &demo, def)
                .await
                .with_context(|| {
                    format!("log {}: registering the example type {file}", log.name)
                })?;
        }
        tracing::info!(log = %log.name, "registered the example record types for agency demo");
    }
    Ok(())
}

/// Writes `ADDR\n` atomically (write a temporary file, then rename), so a
/// reader never sees a partial address.
fn write_addr_file(path: &std::path::Path, addr: SocketAddr) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{addr}\n"))
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT: shutting down"),
        _ = term => tracing::info!("SIGTERM: shutting down"),
    }
}
