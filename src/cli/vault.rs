//! `stele vault keygen|rotate-kek`: the payload store's key-encryption key
//! (see `crate::vault`).
//!
//! Rotation, which bounds what old copies of the database (backups, dead
//! rows) can reveal of erased content: write a new key (`keygen`); set it
//! as `payload_key_file` and move the old one to `old_payload_key_files`;
//! restart (new content is sealed under the new key, old content still
//! opens); run `rotate-kek`, which re-wraps every live data key the old key
//! wrapped; remove the old key from the configuration, restart, and
//! destroy the old key file. From then on no copy of any erased record's
//! data key can be unwrapped.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Subcommand;

use crate::config::Config;
use crate::storage::{Storage, StoredEntry};
use crate::vault::{Kek, KeyWrapper, Vault};

/// Command-line arguments of `stele vault`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub store: super::agency::StoreArgs,
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, Subcommand)]
pub enum Action {
    /// Write a new payload key (key-encryption key) to FILE (mode 0600).
    Keygen {
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Re-wrap every live data key under the configured `payload_key_file`
    /// (it must open them: the key that wrapped them is the current one or
    /// among `old_payload_key_files`). Safe while the service runs.
    RotateKek,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.action {
        Action::Keygen { out } => {
            if out.exists() {
                bail!(
                    "{} exists; a payload key is never overwritten",
                    out.display()
                );
            }
            let (kek, text) = Kek::generate();
            crate::files::write_secret_file(&out, &text)?;
            println!("wrote payload key {} to {}", kek.id(), out.display());
            Ok(ExitCode::SUCCESS)
        }
        Action::RotateKek => {
            let config = args.store.config()?;
            super::runtime()?.block_on(rotate(&config))
        }
    }
}

/// Re-wraps, log by log, every sealed payload not yet under the current key.
async fn rotate(config: &Config) -> anyhow::Result<ExitCode> {
    let vault = super::serve::load_vault(config)?
        .context("no payload_key_file is configured: there is nothing to rotate to")?;
    let storage = crate::storage::open(&config.storage_location()).await?;
    let logs: Vec<&str> = config.logs.iter().map(|l| l.name.as_str()).collect();
    let total = rotate_payloads(storage.as_ref(), &vault, &logs).await?;
    println!(
        "{total} data keys re-wrapped; every live payload is now under payload key {}",
        vault.current_id()
    );
    Ok(ExitCode::SUCCESS)
}

/// Re-wraps every sealed payload of `logs` whose data key another key than
/// `vault`'s current one wrapped; how many it re-wrapped.
pub async fn rotate_payloads(
    storage: &dyn Storage,
    vault: &Vault,
    logs: &[&str],
) -> anyhow::Result<u64> {
    let current = vault.current_id().to_string();
    let mut total = 0u64;
    for &log in logs {
        let mut after = None;
        let mut done = 0u64;
        loop {
            let batch = storage
                .payloads_to_rewrap(log, &current, after, 500)
                .await?;
            let Some(last) = batch.last().map(|(i, _)| *i) else {
                break;
            };
            for (index, sealed) in batch {
                let leaf = storage.read_entries(log, index, index + 1).await?;
                let commitment = commitment_of(leaf.first(), index)?;
                let new = vault
                    .rewrap(log, &commitment, &sealed)
                    .with_context(|| format!("log {log}: payload {index}"))?;
                if storage
                    .rewrap_payload(log, index, &sealed.kek_id, &new)
                    .await?
                {
                    done += 1;
                }
            }
            after = Some(last);
        }
        eprintln!("log {log}: re-wrapped {done} data keys under payload key {current}");
        total += done;
    }
    Ok(total)
}

fn commitment_of(entry: Option<&StoredEntry>, index: u64) -> anyhow::Result<String> {
    let e = entry.with_context(|| format!("payload {index} has no entry"))?;
    let leaf: serde_json::Value =
        serde_json::from_slice(&e.leaf).with_context(|| format!("entry {index} is not JSON"))?;
    leaf.get("commitment")
        .and_then(|c| c.as_str())
        .map(str::to_string)
        .with_context(|| format!("entry {index} has a payload but no commitment"))
}
