//! A deployment to start `stele serve` processes from, made the way an
//! operator makes one: the signing key from `stele keygen`, a configuration
//! file naming the log, the storage (a SQLite data directory or a
//! PostgreSQL URL), and an agency registered with `stele agency add`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, ensure, Result};
use stele::storage::postgres::{PgOptions, PostgresStorage};
use stele::storage::sqlite::SqliteStorage;
use stele::storage::LogReader;

use super::{command, parse_vkey, run_async, ServeOptions, ServerProcess};
use crate::agency::parse_token;
use crate::checker::{published_log, HttpView, LogChecker};
use crate::store::{Opened, TestStore};

const START_TIMEOUT: Duration = Duration::from_secs(60);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// What to deploy.
#[derive(Clone, Debug)]
pub struct DeploymentSpec {
    /// The log's name and origin.
    pub log: String,
    pub origin: String,
    /// The agency to register, and the record-type patterns it may submit.
    pub agency: String,
    pub types: Vec<String>,
    /// Whether the log accepts record types its registry does not know
    /// (`accept_unregistered_types`): suites about other things submit
    /// ad-hoc types; the registry's suite leaves it off, as production does.
    pub accept_unregistered: bool,
    /// More environment variables for the servers.
    pub env: Vec<(String, String)>,
    /// More configuration (TOML sections such as `[http]` or `[quotas]`),
    /// written before the log's `[[logs]]` table.
    pub config: String,
    /// More keys of the log's `[[logs]]` table (e.g. `witness_policy`).
    pub log_config: String,
}

/// Key, configuration, storage and an agency token. The files live in a
/// temporary directory removed on drop.
pub struct Deployment {
    bin: PathBuf,
    spec: DeploymentSpec,
    dir: tempfile::TempDir,
    /// How servers of this deployment are started.
    pub options: ServeOptions,
    /// The bearer token of the spec's agency.
    pub token: String,
    /// The vkey `stele keygen` printed.
    pub vkey: String,
}

impl Deployment {
    /// A deployment on `store`: its SQLite directory as the data directory,
    /// or its PostgreSQL database.
    pub async fn on_store(bin: &Path, store: &TestStore, spec: DeploymentSpec) -> Result<Self> {
        match store.database_url() {
            Some(url) => Self::new(bin, None, Some(url), spec).await,
            None => Self::new(bin, Some(store.dir()), None, spec).await,
        }
    }

    /// Creates the key with `stele keygen`, writes the configuration and
    /// registers the agency with `stele agency add`, on the data directory
    /// `data_dir` or the database `database_url`.
    pub async fn new(
        bin: &Path,
        data_dir: Option<&Path>,
        database_url: Option<&str>,
        spec: DeploymentSpec,
    ) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("stele-deploy-").tempdir()?;
        let key_file = dir.path().join("log.key");
        let config_file = dir.path().join("stele.toml");
        let key_arg = key_file.display().to_string();
        let out = run_async(
            command(
                bin,
                &["keygen", "--origin", &spec.origin, "--out", &key_arg],
            ),
            COMMAND_TIMEOUT,
        )
        .await?
        .ok()?;
        let vkey = parse_vkey(&out, &spec.origin)
            .ok_or_else(|| anyhow!("no vkey in `stele keygen` output: {out}"))?;
        // Key files without a database URL run on SQLite only when the
        // configuration says so.
        let embedded = if database_url.is_none() {
            "embedded = true\n"
        } else {
            ""
        };
        std::fs::write(
            &config_file,
            format!(
                "{embedded}{}\n[[logs]]\nname = {:?}\norigin = {:?}\nkey_file = {key_arg:?}\naccept_unregistered_types = {}\n{}\n",
                spec.config, spec.log, spec.origin, spec.accept_unregistered, spec.log_config
            ),
        )?;
        let options = ServeOptions {
            data_dir: data_dir.map(Path::to_path_buf),
            database_url: database_url.map(str::to_string),
            config: Some(config_file),
            env: spec.env.clone(),
            ..ServeOptions::default()
        };
        let mut deployment = Deployment {
            bin: bin.to_path_buf(),
            spec,
            dir,
            options,
            token: String::new(),
            vkey,
        };
        let types: Vec<&str> = deployment.spec.types.iter().map(String::as_str).collect();
        deployment.token = deployment
            .add_agency(&deployment.spec.agency.clone(), &types)
            .await?;
        Ok(deployment)
    }

    pub fn spec(&self) -> &DeploymentSpec {
        &self.spec
    }

    /// The directory of the key and the configuration.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Registers an agency with `stele agency add` on this deployment's
    /// storage; returns its token.
    pub async fn add_agency(&self, name: &str, types: &[&str]) -> Result<String> {
        let mut args = vec!["agency", "add", name];
        for t in types {
            args.extend(["--types", t]);
        }
        let storage = self.options.storage_args();
        args.extend(storage.iter().map(String::as_str));
        let out = run_async(command(&self.bin, &args), COMMAND_TIMEOUT)
            .await?
            .ok()?;
        parse_token(&out, name)
            .ok_or_else(|| anyhow!("no token in `stele agency add` output: {out}"))
    }

    /// Starts a server and waits until it is ready.
    pub async fn start(&self, name: &str) -> Result<ServerProcess> {
        ServerProcess::start(&self.bin, name, &self.options, START_TIMEOUT).await
    }

    /// Starts a server and waits only until it listens (a second process
    /// never becomes ready while another holds the writer lease).
    pub async fn spawn(&self, name: &str) -> Result<ServerProcess> {
        ServerProcess::spawn(&self.bin, name, &self.options, START_TIMEOUT).await
    }

    /// Starts a read node of this deployment's log (`[read_node]`, the
    /// log's vkey, no key file) on `database_url` (a streaming replica),
    /// with its own data directory (`data_dir`, where its served mark
    /// lives) and `writer_url` named to writers; waits until it listens.
    pub async fn spawn_read_node(
        &self,
        name: &str,
        database_url: &str,
        data_dir: &Path,
        writer_url: &str,
    ) -> Result<ServerProcess> {
        let config_file = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &config_file,
            format!(
                "data_dir = {:?}\n[read_node]\nwriter_url = {writer_url:?}\nrefresh_ms = 100\n\n[[logs]]\nname = {:?}\norigin = {:?}\nvkey = {:?}\naccept_unregistered_types = {}\n{}\n",
                data_dir.display().to_string(),
                self.spec.log,
                self.spec.origin,
                self.vkey,
                self.spec.accept_unregistered,
                self.spec.log_config
            ),
        )?;
        let options = ServeOptions {
            database_url: Some(database_url.to_string()),
            config: Some(config_file),
            env: self.spec.env.clone(),
            ..ServeOptions::default()
        };
        ServerProcess::spawn(&self.bin, name, &options, START_TIMEOUT).await
    }

    /// Opens this deployment's storage from the test process (beside the
    /// servers, as another reader would).
    pub async fn open_storage(&self) -> Result<Opened> {
        Ok(match (&self.options.database_url, &self.options.data_dir) {
            (Some(url), _) => Opened::Postgres(Arc::new(
                PostgresStorage::connect(url, PgOptions::default()).await?,
            )),
            (None, Some(dir)) => {
                Opened::Sqlite(Arc::new(SqliteStorage::open(&dir.join("stele.db")).await?))
            }
            (None, None) => anyhow::bail!("the deployment has no storage"),
        })
    }

    /// A checker for the log served by `server`, which also reads every
    /// stored checkpoint from the deployment's storage. The vkey `GET
    /// /logs` publishes must be the one `stele keygen` printed.
    pub async fn checker(&self, server: &ServerProcess) -> Result<LogChecker<HttpView>> {
        let storage: Arc<dyn LogReader> = self.open_storage().await?.storage();
        let published = published_log(&server.base_url(), &self.spec.log).await?;
        ensure!(
            published.vkey == self.vkey,
            "GET /logs publishes vkey {}, keygen printed {}",
            published.vkey,
            self.vkey
        );
        let view = HttpView::new(&server.base_url(), &self.spec.log)?.with_storage(storage);
        LogChecker::new(view, &self.vkey)
    }
}
