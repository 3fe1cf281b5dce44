//! `stele mirror URL DIR`: a verified local copy of any C2SP tlog-tiles
//! log (Stele's or another's) — a static directory any web server can
//! serve as the same log, and an independent backup that a restored
//! database can be checked against.
//!
//! Every tile is checked before it joins the copy: the auditor of `stele
//! monitor --audit` rebuilds the tree from the entry bundles, compares every
//! hash tile with the rebuilt one and the root with a checkpoint verified
//! under the log's key (and its witness policy, if given). Tiles fetched in
//! this run wait under `DIR/.stele-mirror/staging` and are moved into place
//! only after the whole tree checked out; the checkpoint is written last.
//! So `DIR` only ever holds a verified log, and an interrupted run resumes
//! from what it staged (nothing is fetched twice). A log that fails the
//! check (a tampered tile, a rolled-back or forked tree) is an alarm: the
//! staged tiles are thrown away and the copy keeps its last verified tree.
//!
//! Layout: `DIR/checkpoint`, `DIR/tile/...` exactly as the log serves them
//! (serve `DIR` as the log's URL; keep the web server off `.stele-mirror`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use stele_core::note::open_checkpoint;
use stele_core::tile::TilePath;

use super::audit::{audit, Alarm, AuditState, TileSource};
use super::client::{block_on, check_quorum, describe_key, LogClient, LogKeyArgs, TlsArgs};
use super::monitor::{check_against, EXIT_ALARM, EXIT_UNCHECKED};
use crate::files::write_atomic;

/// Command-line arguments of `stele mirror`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The log's URL (its checkpoint is `<URL>/checkpoint`), e.g.
    /// `https://host/logs/default`.
    pub url: String,
    /// The directory of the copy (created if missing).
    pub dir: PathBuf,
    #[command(flatten)]
    pub key: LogKeyArgs,
    /// Tiles fetched at once.
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub concurrency: usize,
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// What the mirror keeps beside the copy, in `DIR/.stele-mirror/state.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct State {
    /// The verifier key the copy was checked with.
    vkey: String,
    /// The audited tree of `DIR/checkpoint`.
    verified: Option<AuditState>,
    /// The audit of the staged tiles so far (an interrupted run).
    progress: Option<AuditState>,
}

/// The log's tiles through the copy: what `DIR` (verified) or the staging
/// area (this run's, or an interrupted run's) holds is read from disk;
/// anything else is fetched and staged.
struct Source {
    client: LogClient,
    dir: PathBuf,
    staging: PathBuf,
    fetched: AtomicU64,
    reused: AtomicU64,
}

#[async_trait]
impl TileSource for Source {
    async fn tile(&self, path: TilePath) -> anyhow::Result<Vec<u8>> {
        let rel = path.to_path();
        for base in [&self.dir, &self.staging] {
            let file = base.join(&rel);
            match tokio::fs::read(&file).await {
                Ok(data) => {
                    self.reused.fetch_add(1, Ordering::Relaxed);
                    return Ok(data);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
            }
        }
        let data = LogClient::tile(&self.client, path).await?;
        let file = self.staging.join(&rel);
        let staged = data.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            write_atomic(&file, &staged)
        })
        .await??;
        self.fetched.fetch_add(1, Ordering::Relaxed);
        Ok(data)
    }
}

/// Runs the command: 0 the copy holds the log's verified tree, 1 the log
/// misbehaved (alarm), 2 it could not be checked (network, disk).
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (verifier, policy) = args.key.load()?;
    let client = LogClient::with_tls(&args.url, &args.tls)?;
    let meta = args.dir.join(".stele-mirror");
    std::fs::create_dir_all(&meta).with_context(|| format!("creating {}", meta.display()))?;
    let state_file = meta.join("state.json");
    let mut state: State = match std::fs::read(&state_file) {
        Ok(b) => serde_json::from_slice(&b)
            .with_context(|| format!("state file {}", state_file.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", state_file.display())),
    };
    if state.vkey.is_empty() {
        state.vkey = verifier.vkey();
    } else if state.vkey != verifier.vkey() {
        anyhow::bail!(
            "{} was mirrored with key {}, not {}",
            args.dir.display(),
            state.vkey,
            verifier.vkey()
        );
    }
    // The copy's own checkpoint: what was verified before.
    let cp_file = args.dir.join("checkpoint");
    let previous = match std::fs::read_to_string(&cp_file) {
        Ok(note) => Some(open_checkpoint(&note, &verifier).map_err(|e| {
            anyhow::anyhow!(
                "{} does not verify under {}: {e}",
                cp_file.display(),
                describe_key(&verifier)
            )
        })?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", cp_file.display())),
    };
    if previous.as_ref().map(|c| c.size) != state.verified.as_ref().map(|v| v.size) {
        // The state does not describe this copy (lost, or a copy from
        // elsewhere): audit it again from the start, reading from disk.
        state.verified = None;
        state.progress = None;
    }
    println!(
        "mirroring {} into {} with {}",
        client.base(),
        args.dir.display(),
        describe_key(&verifier)
    );
    let source = Source {
        client,
        dir: args.dir.clone(),
        staging: meta.join("staging"),
        fetched: AtomicU64::new(0),
        reused: AtomicU64::new(0),
    };
    let outcome = block_on(mirror_once(
        &source,
        &verifier,
        policy.as_ref(),
        previous,
        &mut state,
        &state_file,
        args.concurrency,
    ));
    match outcome {
        Ok(Ok(msg)) => {
            println!(
                "✓ {msg}: {} tiles fetched, {} already here",
                source.fetched.load(Ordering::Relaxed),
                source.reused.load(Ordering::Relaxed)
            );
            Ok(ExitCode::SUCCESS)
        }
        Ok(Err(alarm)) => {
            println!("ALARM: {}", alarm.what);
            for line in alarm.evidence.lines() {
                println!("  {line}");
            }
            // What was staged is suspect: the copy keeps its verified tree.
            let _ = std::fs::remove_dir_all(&source.staging);
            state.progress = None;
            save(&state_file, &state)?;
            let _ = write_atomic(
                &meta.join("alarm.txt"),
                format!("ALARM: {}\n{}\n", alarm.what, alarm.evidence).as_bytes(),
            );
            Ok(ExitCode::from(EXIT_ALARM))
        }
        Err(e) => {
            eprintln!("could not mirror the log: {e:#}");
            Ok(ExitCode::from(EXIT_UNCHECKED))
        }
    }
}

fn save(path: &Path, state: &State) -> anyhow::Result<()> {
    write_atomic(path, &serde_json::to_vec_pretty(state)?)
}

async fn mirror_once(
    source: &Source,
    verifier: &stele_core::note::Verifier,
    policy: Option<&stele_core::policy::Policy>,
    previous: Option<stele_core::checkpoint::Checkpoint>,
    state: &mut State,
    state_file: &Path,
    concurrency: usize,
) -> anyhow::Result<Result<String, Alarm>> {
    let note = source.client.checkpoint().await?;
    let cp = match open_checkpoint(&note, verifier) {
        Ok(cp) => cp,
        Err(e) => {
            return Ok(Err(Alarm {
                what: format!(
                    "bad checkpoint signature: {e} (trusted key: {})",
                    describe_key(verifier)
                ),
                evidence: format!("checkpoint served:\n{note}"),
            }))
        }
    };
    if let Some(p) = policy {
        if let Err(why) = check_quorum(p, &note) {
            return Ok(Err(Alarm {
                what: format!(
                    "the checkpoint of size {} does not meet the witness policy: {why}",
                    cp.size
                ),
                evidence: format!("checkpoint served:\n{note}"),
            }));
        }
    }
    if let Some(prev) = &previous {
        let seen = super::monitor::State {
            roots: BTreeMap::from([(prev.size, prev.root.to_hex())]),
            ..Default::default()
        };
        if let Some(alarm) = check_against(&cp, &note, &seen, Some(prev)) {
            return Ok(Err(alarm));
        }
    }
    // Resume the staged audit, else from the verified copy; the final root
    // check covers whatever the audit resumes from.
    let mut slot = state
        .progress
        .clone()
        .filter(|p| p.size <= cp.size)
        .or_else(|| state.verified.clone());
    let verified = State {
        progress: None,
        ..state.clone()
    };
    let mut save_progress = |a: &AuditState| -> anyhow::Result<()> {
        save(
            state_file,
            &State {
                progress: Some(a.clone()),
                ..verified.clone()
            },
        )
    };
    if let Err(alarm) = audit(
        source,
        &cp,
        &mut slot,
        concurrency,
        None,
        &mut save_progress,
    )
    .await?
    {
        return Ok(Err(alarm));
    }
    // Verified: the staged tiles join the copy, then the checkpoint.
    let staging = source.staging.clone();
    let dir = source.dir.clone();
    tokio::task::spawn_blocking(move || {
        let mut moved = BTreeSet::new();
        promote(&staging, &staging, &dir, &mut moved)?;
        sync_dirs(&moved)
    })
    .await??;
    write_atomic(&source.dir.join("checkpoint"), note.as_bytes())?;
    state.verified = slot;
    state.progress = None;
    save(state_file, state)?;
    let _ = std::fs::remove_dir_all(&source.staging);
    Ok(Ok(format!(
        "the copy holds the verified tree of size {} (root {})",
        cp.size,
        cp.root.to_base64()
    )))
}

/// Moves every file under `from` (a part of `root`, the staging area) to
/// the same place under `dir`, noting the directories it moved them into.
fn promote(
    root: &Path,
    from: &Path,
    dir: &Path,
    moved: &mut BTreeSet<PathBuf>,
) -> anyhow::Result<()> {
    let entries = match std::fs::read_dir(from) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", from.display())),
    };
    for entry in entries {
        let path = entry?.path();
        if path.is_dir() {
            promote(root, &path, dir, moved)?;
            continue;
        }
        let rel = path.strip_prefix(root).expect("under the staging area");
        let to = dir.join(rel);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::rename(&path, &to)
            .with_context(|| format!("moving {} to {}", path.display(), to.display()))?;
        moved.insert(to.parent().unwrap_or(dir).to_path_buf());
    }
    Ok(())
}

/// Makes the renames into these directories durable.
fn sync_dirs(dirs: &BTreeSet<PathBuf>) -> anyhow::Result<()> {
    for d in dirs {
        std::fs::File::open(d)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("syncing {}", d.display()))?;
    }
    Ok(())
}
