//! `stele agency add|list|revoke`: the writers of the logs. They open the
//! storage that `stele serve` would use (same configuration resolution), so
//! they work while the service runs. A token is printed once; only the hash
//! of its secret is stored.
//!
//! A revocation takes effect in a running service within its
//! `token_cache_ttl_ms`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::Subcommand;

use crate::config::{Config, Overrides};
use crate::engine::agency::{new_token, valid_type_pattern};
use crate::names::AgencyName;
use crate::storage::{AgencyRecord, StorageError};

/// Where the operators' commands (`agency`, `vault`) find the storage
/// `stele serve` uses: the same configuration resolution.
#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    /// TOML configuration file (also `STELE_CONFIG`).
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Data directory of the embedded mode.
    #[arg(long, value_name = "DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL URL (production mode); also `DATABASE_URL`.
    #[arg(long, value_name = "URL", global = true)]
    pub database_url: Option<String>,
}

impl StoreArgs {
    /// The configuration `stele serve` would run with.
    pub fn config(&self) -> anyhow::Result<Config> {
        Config::load(&Overrides {
            config_file: self.config.clone(),
            listen: None,
            data_dir: self.data_dir.clone(),
            database_url: self.database_url.clone(),
        })
    }
}

/// Command-line arguments of `stele agency`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, Subcommand)]
pub enum Action {
    /// Register an agency and print its bearer token (shown only once).
    Add {
        /// Agency id, `[a-z0-9-]+`; appears as `agency` in its records.
        name: AgencyName,
        /// Record types it may submit at most: `land.transfer`, `land.*`
        /// or `*` (default: no limit beyond the registry). What it may write
        /// in a log is what that log's registry grants it: the types whose
        /// `writers` name it.
        #[arg(long = "types", value_name = "PATTERN", num_args = 1..)]
        types: Vec<String>,
        /// It may change the record-type registry of every log
        /// (`stele type apply`).
        #[arg(long)]
        registry_admin: bool,
        /// It may erase the content of any private record of every log (a
        /// data-protection officer), not only those it wrote.
        #[arg(long)]
        eraser: bool,
    },
    /// List the agencies (never their tokens).
    List,
    /// Revoke an agency's token.
    Revoke { name: String },
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = args.store.config()?;
    super::runtime()?.block_on(run_action(&config, args.action))
}

async fn run_action(config: &Config, action: Action) -> anyhow::Result<ExitCode> {
    let storage = crate::storage::open(&config.storage_location()).await?;
    match action {
        Action::Add {
            name,
            types,
            registry_admin,
            eraser,
        } => {
            for t in &types {
                if !valid_type_pattern(t) {
                    bail!("type pattern {t:?} must be `*`, `prefix.*` or a dotted lowercase type");
                }
            }
            let (token, token_hash) = new_token(&name);
            let record = AgencyRecord {
                name: name.to_string(),
                token_hash,
                types,
                revoked: false,
                registry_admin,
                eraser,
                created_ms: chrono::Utc::now().timestamp_millis(),
            };
            match storage.add_agency(&record).await {
                Ok(()) => {}
                Err(StorageError::Duplicate(_)) => bail!("agency {name:?} already exists"),
                Err(e) => return Err(e.into()),
            }
            eprintln!(
                "registered agency {name:?}. It is granted no record type by this: it may write \
                 a type in a log only once that log's registry lists it among the type's writers \
                 (stele type apply).{}",
                match (registry_admin, eraser) {
                    (true, true) => " It may change every log's registry, and erase any private record's content.",
                    (true, false) => " It may change every log's registry.",
                    (false, true) => " It may erase any private record's content.",
                    (false, false) => "",
                }
            );
            eprintln!("Its token is shown once, store it now:");
            println!("{token}");
        }
        Action::List => {
            let agencies = storage.list_agencies().await?;
            if agencies.is_empty() {
                eprintln!("no agencies");
            }
            for a in agencies {
                let created = chrono::DateTime::from_timestamp_millis(a.created_ms)
                    .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
                    .unwrap_or_default();
                let types = if a.types.is_empty() {
                    "*".to_string()
                } else {
                    a.types.join(",")
                };
                let mut status = vec![if a.revoked { "revoked" } else { "active" }];
                if !a.revoked && a.registry_admin {
                    status.push("registry-admin");
                }
                if !a.revoked && a.eraser {
                    status.push("eraser");
                }
                let status = status.join(",");
                println!("{}\t{status}\t{types}\t{created}", a.name);
            }
        }
        Action::Revoke { name } => {
            if !storage.revoke_agency(&name).await? {
                bail!("no agency {name:?}");
            }
            eprintln!("revoked agency {name:?}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
