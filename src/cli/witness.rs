//! `stele witness keygen` and `stele witness serve`: a C2SP tlog-witness an
//! agency runs (see [`crate::witness`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use stele_core::cosignature::Cosigner;

use crate::files::write_secret_file;
use crate::witness::config::WitnessConfig;
use crate::witness::postgres::PostgresWitnessStore;
use crate::witness::server::{self, system_clock, WitnessApp};
use crate::witness::sqlite::SqliteWitnessStore;
use crate::witness::{WitnessStore, TEST_PAUSE_ENV};

/// Command-line arguments of `stele witness`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: WitnessCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum WitnessCommand {
    /// Generate the witness's signing key (prints its cosignature vkey).
    Keygen(KeygenArgs),
    /// Run the witness (POST /add-checkpoint, GET /<origin hash>/checkpoint).
    Serve(ServeArgs),
}

#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// The witness's name (its key name), a schema-less URL such as
    /// `witness.land-registry.example.gov`. It is part of the vkey: a new
    /// name is a new witness.
    #[arg(long)]
    pub name: String,
    /// Where to write the private key (mode 0600; never overwritten).
    /// Without it the private key goes to stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The witness's TOML configuration (see `crate::witness::config`).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Address to listen on, overriding the file (port 0: any free port).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Once listening, write the bound address (`127.0.0.1:PORT`) to this file.
    #[arg(long, value_name = "FILE")]
    pub addr_file: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        WitnessCommand::Keygen(a) => keygen(a),
        WitnessCommand::Serve(a) => {
            super::runtime()?.block_on(serve(a))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn keygen(args: KeygenArgs) -> anyhow::Result<ExitCode> {
    let (cosigner, skey) = Cosigner::generate(&args.name)
        .map_err(|e| anyhow::anyhow!("cannot make a witness key named {:?}: {e}", args.name))?;
    match &args.out {
        Some(path) => {
            write_secret_file(path, &format!("{skey}\n"))?;
            eprintln!(
                "wrote the witness's private key to {} (keep it secret)",
                path.display()
            );
            println!("{}", cosigner.vkey());
        }
        None => {
            println!("{skey}");
            eprintln!("witness vkey: {}", cosigner.vkey());
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = WitnessConfig::load(&args.config)?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    // Keys and logs first: a bad configuration fails before any database.
    let witness = config.witness()?;
    let store: Arc<dyn WitnessStore> = match &config.database_url {
        Some(url) => Arc::new(
            PostgresWitnessStore::connect(url)
                .await
                .with_context(|| format!("connecting to {}", config.describe_storage()))?,
        ),
        None => Arc::new(
            SqliteWitnessStore::open(&config.database)
                .await
                .with_context(|| format!("opening {}", config.describe_storage()))?,
        ),
    };
    let pause = std::env::var(TEST_PAUSE_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_millis);
    if let Some(p) = pause {
        tracing::warn!("{TEST_PAUSE_ENV} is set: pausing {p:?} after each write (tests only)");
    }
    tracing::info!(
        vkey = %witness.cosigner().vkey(),
        storage = %config.describe_storage(),
        logs = witness.origins().count(),
        "witness starting"
    );
    let app = WitnessApp::new(witness, store, system_clock(), pause);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    if let Some(path) = &args.addr_file {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, format!("{addr}\n"))?;
        std::fs::rename(&tmp, path)?;
    }
    tracing::info!("witness listening on http://{addr}");
    server::run(listener, app, super::serve::shutdown_signal()).await?;
    tracing::info!("witness stopped");
    Ok(())
}
