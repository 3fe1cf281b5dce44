//! `stele monitor`: watches a log. Every checkpoint it fetches must be signed
//! by the trusted key, must not be smaller than the last verified one, must
//! be provably consistent with it, and must not disagree with any root seen
//! before for the same size (a split view). With `--audit` it also rebuilds
//! the whole tree from the public entry bundles and checks the root.
//!
//! State (the last verified checkpoint, the roots of every size seen, the
//! audited prefix) is kept in a JSON file replaced atomically after each
//! verified checkpoint: after a crash the monitor resumes from the last
//! state that was fully verified, never from a half-written one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use stele_core::checkpoint::Checkpoint;
use stele_core::merkle::verify_consistency;
use stele_core::note::{open_checkpoint, Verifier};
use stele_core::Hash;

use super::audit::{audit, Alarm, AuditState, Rules};
use super::client::{block_on, check_quorum, describe_key, LogClient, LogKeyArgs, TlsArgs};
use crate::files::write_atomic;

/// Command-line arguments of `stele monitor`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The log's URL, e.g. `https://host/logs/default`.
    pub url: String,
    #[command(flatten)]
    pub key: LogKeyArgs,
    /// Where to keep what has been verified across restarts.
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// Seconds between polls.
    #[arg(long, default_value_t = 60.0, value_name = "S")]
    pub interval: f64,
    /// Check once and exit (0: all good, 1: the log misbehaved, 2: could not check).
    #[arg(long)]
    pub once: bool,
    /// Also rebuild the tree from the entry bundles and hash tiles and check
    /// it reproduces each checkpoint's root, and replay the record-type
    /// registry from the entries and check every record against the
    /// version in force at its index (resumable through --state).
    #[arg(long)]
    pub audit: bool,
    /// With --audit: records of types the registry never defined, naming no
    /// version, pass (a log configured with `accept_unregistered_types`).
    #[arg(long, requires = "audit")]
    pub allow_unregistered: bool,
    /// With --audit: check the tree only, not the records' rules (a
    /// tlog-tiles log whose leaves are not Stele records).
    #[arg(long, requires = "audit", conflicts_with = "allow_unregistered")]
    pub tree_only: bool,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Tiles fetched at once while auditing.
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub concurrency: usize,
}

/// Exit status when the log misbehaved.
pub(crate) const EXIT_ALARM: u8 = 1;
/// Exit status when the log could not be checked (network, bad answers).
pub(crate) const EXIT_UNCHECKED: u8 = 2;

/// What the monitor keeps on disk.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct State {
    /// The verifier key the state was built with.
    pub vkey: String,
    /// The last verified checkpoint note, verbatim.
    pub checkpoint: Option<String>,
    /// Root (hex) of every tree size seen in a verified checkpoint.
    pub roots: BTreeMap<u64, String>,
    /// The audited prefix of the tree, when `--audit` is used.
    pub audit: Option<AuditState>,
}

impl State {
    fn load(path: &Path) -> anyhow::Result<Option<State>> {
        match std::fs::read(path) {
            Ok(b) => {
                Ok(Some(serde_json::from_slice(&b).with_context(|| {
                    format!("state file {}", path.display())
                })?))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
    fn save(&self, path: &Path) -> anyhow::Result<()> {
        write_atomic(path, &serde_json::to_vec_pretty(self)?)
    }
}

/// What one poll found.
enum Poll {
    Fine(String),
    Alarm(Alarm),
    Unchecked(anyhow::Error),
}

/// Runs the command; the exit code is the process's.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (verifier, policy) = args.key.load()?;
    let client = LogClient::with_tls(&args.url, &args.tls)?;
    let mut state = match &args.state {
        Some(p) => State::load(p)?.unwrap_or_default(),
        None => State::default(),
    };
    if state.vkey.is_empty() {
        state.vkey = verifier.vkey();
    } else if state.vkey != verifier.vkey() {
        anyhow::bail!(
            "the state file was built with key {}, not {}",
            state.vkey,
            verifier.vkey()
        );
    }
    let mut last = match &state.checkpoint {
        Some(note) => Some(
            open_checkpoint(note, &verifier)
                .map_err(|e| anyhow::anyhow!("the state file's checkpoint does not verify: {e}"))?,
        ),
        None => None,
    };
    println!(
        "monitoring {} with {}",
        client.base(),
        describe_key(&verifier)
    );
    if let Some(cp) = &last {
        println!(
            "resuming from the verified tree of size {} (root {})",
            cp.size,
            cp.root.to_base64()
        );
    }

    loop {
        let poll = block_on(poll_once(
            &client,
            &verifier,
            policy.as_ref(),
            &mut state,
            &mut last,
            &args,
        ));
        match poll {
            Poll::Fine(msg) => {
                if let Some(p) = &args.state {
                    state.save(p)?;
                }
                println!("✓ {msg}");
            }
            Poll::Alarm(a) => {
                println!("ALARM: {}", a.what);
                for line in a.evidence.lines() {
                    println!("  {line}");
                }
                if let Some(p) = &args.state {
                    // The alarm does not touch the verified state; the
                    // evidence is kept beside it.
                    let ev = p.with_extension("alarm.txt");
                    let _ = write_atomic(
                        &ev,
                        format!("ALARM: {}\n{}\n", a.what, a.evidence).as_bytes(),
                    );
                }
                return Ok(ExitCode::from(EXIT_ALARM));
            }
            Poll::Unchecked(e) => {
                eprintln!("could not check the log: {e:#}");
                if args.once {
                    return Ok(ExitCode::from(EXIT_UNCHECKED));
                }
            }
        }
        if args.once {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(Duration::from_secs_f64(args.interval.max(0.05)));
    }
}

async fn poll_once(
    client: &LogClient,
    verifier: &Verifier,
    policy: Option<&stele_core::policy::Policy>,
    state: &mut State,
    last: &mut Option<Checkpoint>,
    args: &Args,
) -> Poll {
    let note = match client.checkpoint().await {
        Ok(n) => n,
        Err(e) => return Poll::Unchecked(e),
    };
    let cp = match open_checkpoint(&note, verifier) {
        Ok(cp) => cp,
        Err(e) => {
            return Poll::Alarm(Alarm {
                what: format!(
                    "bad checkpoint signature: {e} (trusted key: {})",
                    describe_key(verifier)
                ),
                evidence: format!("checkpoint served:\n{note}"),
            })
        }
    };
    if let Some(a) = check_against(&cp, &note, state, last.as_ref()) {
        return Poll::Alarm(a);
    }
    let mut msg = format!("tree size {}, root {}", cp.size, cp.root.to_base64());
    if let Some(p) = policy {
        match check_quorum(p, &note) {
            Ok(who) => msg.push_str(&format!(", {who}")),
            Err(why) => {
                return Poll::Alarm(Alarm {
                    what: format!(
                        "the checkpoint of size {} does not meet the witness policy: {why}",
                        cp.size
                    ),
                    evidence: format!("checkpoint served:\n{note}"),
                })
            }
        }
    }
    if let Some(prev) = last.as_ref() {
        if cp.size > prev.size {
            let proof = match client.consistency_any(prev.size, cp.size).await {
                Ok(p) => p,
                Err(e) => return Poll::Unchecked(e),
            };
            if let Err(e) = verify_consistency(prev.size, cp.size, &prev.root, &cp.root, &proof) {
                return Poll::Alarm(Alarm {
                    what: format!("inconsistent tree: size {} is not an extension of the verified size {}: {e}", cp.size, prev.size),
                    evidence: format!(
                        "verified before (size {}): root {}\nnow (size {}): root {}\nconsistency proof: {} hashes\ncheckpoint served:\n{note}",
                        prev.size,
                        prev.root.to_base64(),
                        cp.size,
                        cp.root.to_base64(),
                        proof.len()
                    ),
                });
            }
            msg.push_str(&format!(", consistent with size {}", prev.size));
        } else {
            msg.push_str(", unchanged");
        }
    } else {
        msg.push_str(", first checkpoint (trusted on first use)");
    }

    if args.audit {
        // Progress is saved beside the last verified checkpoint, so an
        // interrupted audit resumes where it stopped.
        let verified = State {
            audit: None,
            ..state.clone()
        };
        let path = args.state.clone();
        let mut save = |a: &AuditState| -> anyhow::Result<()> {
            match &path {
                Some(p) => State {
                    audit: Some(a.clone()),
                    ..verified.clone()
                }
                .save(p),
                None => Ok(()),
            }
        };
        let rules = (!args.tree_only).then_some(Rules {
            allow_unregistered: args.allow_unregistered,
        });
        match audit(
            client,
            &cp,
            &mut state.audit,
            args.concurrency,
            rules,
            &mut save,
        )
        .await
        {
            Ok(Ok(hashed)) => {
                msg.push_str(&format!(
                    ", audited: the {} entries rebuilt from the tiles reproduce the root ({hashed} fetched now)",
                    cp.size
                ));
                if rules.is_some() {
                    msg.push_str(&format!(
                        " and follow the record-type registry ({} registry entries)",
                        state.audit.as_ref().map_or(0, |a| a.registry.len())
                    ));
                }
            }
            Ok(Err(alarm)) => return Poll::Alarm(alarm),
            Err(e) => return Poll::Unchecked(e),
        }
    }

    state.roots.insert(cp.size, cp.root.to_hex());
    state.checkpoint = Some(note);
    *last = Some(cp);
    Poll::Fine(msg)
}

/// Rollback and split-view checks against what was verified before.
pub(crate) fn check_against(
    cp: &Checkpoint,
    note: &str,
    state: &State,
    last: Option<&Checkpoint>,
) -> Option<Alarm> {
    if let Some(prev) = last {
        if cp.size < prev.size {
            return Some(Alarm {
                what: format!("the tree shrank: size {} after the verified size {} (rolled back)", cp.size, prev.size),
                evidence: format!(
                    "verified before: size {}, root {}\nnow: size {}, root {}\ncheckpoint served:\n{note}",
                    prev.size,
                    prev.root.to_base64(),
                    cp.size,
                    cp.root.to_base64()
                ),
            });
        }
    }
    if let Some(seen) = state.roots.get(&cp.size) {
        let seen = Hash::from_hex(seen).ok();
        if seen != Some(cp.root) {
            return Some(Alarm {
                what: format!(
                    "split view: two different signed roots for tree size {}",
                    cp.size
                ),
                evidence: format!(
                    "seen before: {}\nnow:         {}\ncheckpoint served:\n{note}",
                    seen.map(|h| h.to_base64())
                        .unwrap_or_else(|| "(unreadable)".into()),
                    cp.root.to_base64()
                ),
            });
        }
    }
    None
}
