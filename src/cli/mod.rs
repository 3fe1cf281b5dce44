//! The `stele` command line: `serve`, `keygen` and `agency` live here;
//! `submit`, `verify` and `monitor` in their own modules.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod agency;
pub mod audit;
pub mod client;
pub mod content;
pub mod keygen;
pub mod mirror;
pub mod monitor;
pub mod receipt_print;
pub mod serve;
pub mod submit;
pub mod types;
pub mod vault;
pub mod verify;
pub mod witness;

/// Stele: a verifiable record log.
#[derive(Debug, Parser)]
#[command(name = "stele", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the log service (HTTP API, sequencers).
    Serve(serve::Args),
    /// Generate a log signing key (prints the verifier key).
    Keygen(keygen::Args),
    /// Register, list and revoke agencies (writers).
    Agency(agency::Args),
    /// Submit a record to a log and save its receipt.
    Submit(submit::Args),
    /// Read a private record's content (stating the purpose) and check it
    /// against the commitment in its signed, included leaf.
    Fetch(content::FetchArgs),
    /// Erase a private record's content (the writing agency).
    Erase(content::EraseArgs),
    /// Issue a disclosure of a private record for its data subject (the
    /// writing agency).
    Disclose(content::DiscloseArgs),
    /// With a disclosure: who read the record, when and why, each entry
    /// checked against the signed tree.
    Accesses(content::AccessesArgs),
    /// The payload store's key: `keygen`, `rotate-kek`.
    Vault(vault::Args),
    /// The record-type registry of a log: `apply`, `list`, `show`.
    Type(types::Args),
    /// Verify a receipt or a .tlog-proof file.
    Verify(verify::Args),
    /// Watch a log: verify every new checkpoint and its consistency.
    Monitor(monitor::Args),
    /// Copy any tlog-tiles log into a directory, verifying every tile
    /// against a checked checkpoint (resumable; a static copy any web
    /// server can serve).
    Mirror(mirror::Args),
    /// A C2SP tlog-witness: `keygen` and `serve`.
    Witness(witness::Args),
    /// Print the OpenAPI document (regenerate the checked-in copy with
    /// `cargo run -- openapi > openapi/stele.json`).
    #[command(hide = true)]
    Openapi,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Keygen(args) => keygen::run(args),
        Command::Agency(args) => agency::run(args),
        Command::Submit(args) => submit::run(args),
        Command::Fetch(args) => content::fetch(args),
        Command::Erase(args) => content::erase(args),
        Command::Disclose(args) => content::disclose(args),
        Command::Accesses(args) => content::accesses(args),
        Command::Vault(args) => vault::run(args),
        Command::Type(args) => types::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Monitor(args) => monitor::run(args),
        Command::Mirror(args) => mirror::run(args),
        Command::Witness(args) => witness::run(args),
        Command::Openapi => {
            print!("{}", crate::api::ops::OPENAPI_JSON.as_str());
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr. Filter from `STELE_LOG`, else `RUST_LOG`, else `info`;
/// JSON lines when `STELE_LOG_FORMAT=json`.
pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("STELE_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let json = std::env::var("STELE_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    // A subscriber may already be set (tests); that is fine.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// A multi-threaded runtime for the async commands.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
