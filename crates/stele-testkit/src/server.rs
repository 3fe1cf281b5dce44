//! An in-process Stele server for tests: the engine on SQLite in a
//! temporary directory or on a fresh PostgreSQL database, the HTTP API
//! bound to `127.0.0.1:0`, one registered agency.
//!
//! ```ignore
//! let app = spawn_app(Backend::Sqlite).await?;
//! let resp = reqwest::Client::new()
//!     .post(format!("{}/logs/default/records", app.base_url))
//!     .bearer_auth(&app.token)
//!     .json(&serde_json::json!({"type": "land.transfer"}))
//!     .send()
//!     .await?;
//! app.stop().await;
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use stele_core::note::Signer;

use stele::api::{self, AppState, Limits};
use stele::engine::{Engine, EngineConfig, LogConfig};
use stele::metrics::Metrics;
use stele::names::LogName;
use stele::storage::Storage;

use crate::agency::register_agency;
use crate::store::TestStore;

pub use crate::store::Backend;

/// Knobs of a test server.
#[derive(Clone, Debug)]
pub struct AppOptions {
    pub engine: EngineConfig,
    pub limits: Limits,
    /// Name of the log (origin `stele.test/<name>`).
    pub log: String,
    /// Name of the agency whose token [`TestApp::token`] is.
    pub agency: String,
    /// Its record-type patterns (empty: all).
    pub agency_types: Vec<String>,
    /// Whether the agency is a registry admin.
    pub agency_admin: bool,
    /// Whether the log accepts record types its registry does not know.
    /// On by default: most suites submit ad-hoc types; the registry suite
    /// turns it off, as production has it.
    pub accept_unregistered: bool,
    /// Put the storage behind a fault injector ([`TestApp::faults`]).
    pub faults: bool,
}

impl Default for AppOptions {
    fn default() -> Self {
        AppOptions {
            // Revocations must bite at once in tests.
            engine: EngineConfig {
                token_cache_ttl: Duration::ZERO,
                max_wait: Duration::from_millis(2),
                ..EngineConfig::default()
            },
            limits: Limits::default(),
            log: "default".into(),
            agency: "test-agency".into(),
            agency_types: vec![],
            agency_admin: false,
            accept_unregistered: true,
            faults: false,
        }
    }
}

/// A running test server. Dropping it aborts the server; [`TestApp::stop`]
/// shuts it down gracefully.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub base_url: String,
    pub addr: SocketAddr,
    pub backend: Backend,
    /// The log's name and origin.
    pub log: String,
    pub origin: String,
    /// The log's verifier key.
    pub vkey: String,
    /// Bearer token of the agency named in [`AppOptions::agency`].
    pub token: String,
    pub engine: Arc<Engine>,
    pub storage: Arc<dyn Storage>,
    pub metrics: Arc<Metrics>,
    /// The switches of the storage's faults, with [`AppOptions::faults`].
    pub faults: Option<Arc<crate::faults::Faults>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    /// Keeps the SQLite directory (or the PostgreSQL database) alive.
    _store: TestStore,
}

/// Starts a server with default options.
pub async fn spawn_app(backend: Backend) -> anyhow::Result<TestApp> {
    spawn_app_with(backend, AppOptions::default()).await
}

/// Starts a server. For PostgreSQL, a database is created and migrated for
/// this server alone; if the server is unreachable the error is (or wraps)
/// [`crate::pg::PgUnavailable`].
pub async fn spawn_app_with(backend: Backend, opts: AppOptions) -> anyhow::Result<TestApp> {
    let store = TestStore::new(backend).await?;
    let mut storage = store.open().await?.storage();
    let mut faults = None;
    if opts.faults {
        let (faulty, f) = crate::faults::Faulty::wrap(storage);
        storage = faulty;
        faults = Some(f);
    }
    let origin = format!("stele.test/{}", opts.log);
    let (signer, _skey) = Signer::generate(&origin).map_err(|e| anyhow::anyhow!("{e}"))?;
    let vkey = signer.vkey();
    let metrics = Arc::new(Metrics::new());
    let logs = vec![LogConfig {
        accept_unregistered: opts.accept_unregistered,
        ..LogConfig::for_signer(LogName::parse(&opts.log)?, signer)
    }];
    let engine = Engine::start(storage.clone(), logs, opts.engine.clone(), metrics.clone()).await?;
    let types: Vec<&str> = opts.agency_types.iter().map(String::as_str).collect();
    let token = crate::agency::register_agency_as(
        storage.as_ref(),
        &opts.agency,
        &types,
        opts.agency_admin,
    )
    .await?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let state = AppState::new(engine.clone(), metrics.clone(), opts.limits.clone(), true);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(api::serve(listener, api::router(state), async move {
        let _ = rx.await;
    }));
    Ok(TestApp {
        base_url: format!("http://{addr}"),
        addr,
        backend,
        log: opts.log,
        origin,
        vkey,
        token,
        engine,
        storage,
        metrics,
        faults,
        shutdown: Some(tx),
        server: Some(server),
        _store: store,
    })
}

impl TestApp {
    /// `base_url` + `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// `base_url/logs/<log>` + `rest`.
    pub fn log_url(&self, rest: &str) -> String {
        format!("{}/logs/{}{}", self.base_url, self.log, rest)
    }

    /// The test's database (its SQLite file, its PostgreSQL URL).
    pub fn store(&self) -> &TestStore {
        &self._store
    }

    /// Registers another agency; returns its token.
    pub async fn add_agency(&self, name: &str, types: &[&str]) -> anyhow::Result<String> {
        register_agency(self.storage.as_ref(), name, types).await
    }

    /// Stops accepting connections, waits for requests in flight, then shuts
    /// the engine down.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
        }
        self.engine.shutdown().await;
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}
