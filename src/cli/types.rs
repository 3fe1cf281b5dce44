//! `stele type apply|list|show`: the record-type registry of a log, over
//! the log's HTTP API (a running service holds the writer lease, so the
//! registry is changed through it, by a registry admin's token).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Subcommand;
use stele_core::merkle::verify_inclusion;
use stele_core::note::open_checkpoint;
use stele_core::receipt::Receipt;

use super::client::{block_on, load_verifier, problem_message, read_token, LogClient, TlsArgs};
use crate::registry::TypeDefinition;
use crate::wire;

/// Command-line arguments of `stele type`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The log: its name on `--server`, or its whole URL
    /// (`http://127.0.0.1:8080/logs/default`).
    #[arg(long, default_value = "default", global = true)]
    pub log: String,
    /// The service a log name is on.
    #[arg(
        long,
        env = "STELE_SERVER",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub server: String,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, Subcommand)]
pub enum Action {
    /// Apply type definitions (TOML or JSON files), in order. Each becomes
    /// an entry of the log; applying the same file again is a no-op.
    Apply {
        /// Definition files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// A registry admin's bearer token (also `STELE_TOKEN`).
        #[arg(
            long,
            env = "STELE_TOKEN",
            hide_env_values = true,
            conflicts_with = "token_file"
        )]
        token: Option<String>,
        /// A file holding the token.
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
    },
    /// List the types in force: name, version, the entry that defined it,
    /// its writers.
    List,
    /// Print a type's definition (the version in force, or `--version N`);
    /// with `--vkey`, first check every version's entry is in the log.
    #[command(disable_version_flag = true)]
    Show {
        name: String,
        /// The version to print (default: the one in force).
        #[arg(long)]
        version: Option<u32>,
        /// Check the inclusion proofs against the log's checkpoint, signed
        /// by this verifier key.
        #[arg(long)]
        vkey: Option<String>,
        #[arg(long, value_name = "FILE")]
        vkey_file: Option<PathBuf>,
    },
}

fn log_url(args: &Args) -> String {
    if args.log.contains("://") {
        args.log.clone()
    } else {
        format!("{}/logs/{}", args.server.trim_end_matches('/'), args.log)
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let client = LogClient::with_tls(&log_url(&args), &args.tls)?;
    match args.action {
        Action::Apply {
            files,
            token,
            token_file,
        } => {
            let token = read_token(token.as_deref(), token_file.as_deref())?;
            // Every file is read and checked before the first is applied.
            let mut defs = Vec::new();
            for f in &files {
                let text = std::fs::read_to_string(f)
                    .with_context(|| format!("reading {}", f.display()))?;
                let def = TypeDefinition::parse(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
                defs.push((f, def));
            }
            for (f, def) in defs {
                let body = serde_json::to_vec(&def)?;
                let (status, retry, bytes) = block_on(client.post_json("types", &token, body))?;
                if !status.is_success() {
                    eprintln!(
                        "error: {}: the log refused {} version {}: {}",
                        f.display(),
                        def.name,
                        def.version,
                        problem_message(status, retry.as_deref(), &bytes)
                    );
                    return Ok(ExitCode::FAILURE);
                }
                let receipt: Receipt =
                    serde_json::from_slice(&bytes).context("the log's answer is not a receipt")?;
                let what = if status == reqwest::StatusCode::CREATED {
                    "applied"
                } else {
                    "already in force"
                };
                println!(
                    "{} version {}: {what} (entry {})",
                    def.name, def.version, receipt.index
                );
            }
        }
        Action::List => {
            let types: wire::Types = block_on(client.get_json("types"))?;
            if types.types.is_empty() {
                eprintln!("no record types are registered in this log");
            }
            for t in types.types {
                let writers = t
                    .definition
                    .get("writers")
                    .and_then(|w| w.as_array())
                    .map(|w| {
                        w.iter()
                            .filter_map(|a| a.as_str())
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default();
                println!(
                    "{}\tv{}\tentry {}\twriters {}",
                    t.name, t.version, t.index, writers
                );
            }
        }
        Action::Show {
            name,
            version,
            vkey,
            vkey_file,
        } => {
            let h: wire::TypeHistory = block_on(client.get_json(&format!("types/{name}")))?;
            if vkey.is_some() || vkey_file.is_some() {
                let v = load_verifier(vkey.as_deref(), vkey_file.as_deref())?;
                let note = h
                    .checkpoint
                    .as_deref()
                    .context("the answer carries no checkpoint")?;
                let cp = open_checkpoint(note, &v).context("the checkpoint does not verify")?;
                if cp.size != h.tree_size {
                    bail!(
                        "the checkpoint is for size {}, not {}",
                        cp.size,
                        h.tree_size
                    );
                }
                for p in &h.versions {
                    let leaf = stele_core::leaf_hash(p.leaf.as_bytes());
                    verify_inclusion(
                        &leaf,
                        p.version.index,
                        cp.size,
                        &p.inclusion_proof,
                        &cp.root,
                    )
                    .with_context(|| {
                        format!(
                            "version {}: its entry is not proven in the log",
                            p.version.version
                        )
                    })?;
                    let def: serde_json::Value = serde_json::from_str(&p.leaf)?;
                    if def.get("attributes") != Some(&p.version.definition) {
                        bail!(
                            "version {}: the definition shown is not the one in its entry",
                            p.version.version
                        );
                    }
                }
                eprintln!(
                    "verified: {} version(s), each entry included in the tree of size {}",
                    h.versions.len(),
                    cp.size
                );
            }
            let chosen = match version {
                Some(n) => h.versions.iter().find(|p| p.version.version == n),
                None => h.versions.last(),
            };
            let Some(p) = chosen else {
                bail!("{name} has no version {}", version.unwrap_or_default());
            };
            eprintln!(
                "{} version {} (of {}), defined at entry {} by {}",
                p.version.name,
                p.version.version,
                h.versions.len(),
                p.version.index,
                p.version.agency
            );
            println!("{}", serde_json::to_string_pretty(&p.version.definition)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}
