//! `stele monitor --audit`: rebuilds a log's tree from its public C2SP
//! tlog-tiles (entry bundles and hash tiles, nothing else) and checks that
//! it reproduces a verified checkpoint's root and that every served hash
//! tile equals the rebuilt one.
//!
//! Resumable: the audited prefix is kept as its right edge (the partial
//! hash tiles of a [`TreeBuilder`]), saved after every chunk of bundles. A
//! prefix is only ever trusted because the final root must match a signed
//! checkpoint: bad bundles anywhere make that check fail.
//!
//! The auditor reads tiles through [`TileSource`], which [`LogClient`]
//! implements over HTTP; the test suites' invariant checker runs this same
//! code over the engine and over storage.

use std::collections::BTreeMap;
use std::io::IsTerminal;

use async_trait::async_trait;
use base64::Engine as _;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use stele_core::checkpoint::Checkpoint;
use stele_core::tile::{decode_bundle, partial_tiles, TileId, TilePath, TreeBuilder, TILE_WIDTH};
use stele_core::{leaf_hash, Hash};

use super::client::LogClient;

/// Where the auditor reads a log's tiles.
///
/// Contract: `tile` returns the hash tile or entry bundle at exactly the
/// width asked (a source that holds a wider version of a partial tile cuts
/// it down: tiles only grow at the end). An error means the tile could not
/// be read (the audit is then inconclusive, not an alarm); wrong contents
/// are for the auditor to find.
#[async_trait]
pub trait TileSource: Send + Sync {
    async fn tile(&self, path: TilePath) -> anyhow::Result<Vec<u8>>;

    /// Whether an audit of this source draws a progress bar (it does only
    /// on a terminal).
    fn show_progress(&self) -> bool {
        true
    }
}

#[async_trait]
impl TileSource for LogClient {
    async fn tile(&self, path: TilePath) -> anyhow::Result<Vec<u8>> {
        Ok(LogClient::tile(self, path).await?)
    }
}

/// The log misbehaved: the report, and the evidence (what the monitor and
/// the audit raise).
#[derive(Debug)]
pub struct Alarm {
    pub what: String,
    pub evidence: String,
}

impl std::fmt::Display for Alarm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.what)?;
        for line in self.evidence.lines() {
            write!(f, "\n  {line}")?;
        }
        Ok(())
    }
}

/// Bundles fetched and hashed between two saves of the progress.
const CHUNK_BUNDLES: u64 = 512;

/// The audited prefix of a tree: its size and its right edge.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuditState {
    /// Leaves hashed so far.
    pub size: u64,
    /// The partial hash tiles of the tree of `size`.
    pub tiles: Vec<EdgeTile>,
    /// The registry entries of the prefix, `(index, leaf)`, replayed to
    /// resume the check of the records' rules.
    #[serde(default)]
    pub registry: Vec<(u64, String)>,
}

/// Which rules of the record-type registry the audit checks.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    /// Records of types never registered, naming no version, pass (a log
    /// configured with `accept_unregistered_types`).
    pub allow_unregistered: bool,
}

/// The registry replayed so far, and the first rule broken.
struct RuleCheck {
    /// None: the tree only (opaque leaves).
    rules: Option<Rules>,
    registry: crate::registry::Registry,
    entries: Vec<(u64, String)>,
    broken: Option<Alarm>,
}

impl RuleCheck {
    fn resume(rules: Option<Rules>, prior: Option<&AuditState>) -> anyhow::Result<Self> {
        let mut registry = crate::registry::Registry::default();
        let entries = prior.map(|s| s.registry.clone()).unwrap_or_default();
        for (index, leaf) in &entries {
            registry
                .replay(*index, leaf.as_bytes(), true)
                .map_err(|e| {
                    anyhow::anyhow!("the saved audit state's registry is unusable: {e}")
                })?;
        }
        Ok(RuleCheck {
            rules,
            registry,
            entries,
            broken: None,
        })
    }

    /// Checks the leaf at `index`; the first violation is kept (and raised
    /// only once the root proves the entries authentic).
    fn check(&mut self, index: u64, leaf: &[u8]) {
        let Some(rules) = self.rules.filter(|_| self.broken.is_none()) else {
            return;
        };
        match self.registry.replay(index, leaf, rules.allow_unregistered) {
            Ok(true) => self
                .entries
                .push((index, String::from_utf8_lossy(leaf).into_owned())),
            Ok(false) => {}
            Err(why) => {
                let text = String::from_utf8_lossy(leaf);
                let shown: String = text.chars().take(2000).collect();
                self.broken = Some(Alarm {
                    what: format!("entry {index} breaks the log's record-type rules: {why}"),
                    evidence: format!("leaf: {shown}"),
                });
            }
        }
    }
}

/// One partial hash tile of the audited prefix.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EdgeTile {
    pub level: u8,
    pub index: u64,
    pub width: u16,
    /// The tile's hashes, concatenated, standard base64.
    pub hashes: String,
}

/// The edge being built: partial tiles by (level, index), latest contents.
type Edge = BTreeMap<(u8, u64), Vec<u8>>;

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn resume(prior: Option<&AuditState>, cp: &Checkpoint) -> anyhow::Result<(TreeBuilder, Edge)> {
    let Some(s) = prior.filter(|s| s.size <= cp.size) else {
        return Ok((TreeBuilder::new(), Edge::new()));
    };
    let mut data = Vec::new();
    for t in &s.tiles {
        data.push((
            TileId::new(t.level, t.index, t.width),
            b64().decode(&t.hashes)?,
        ));
    }
    let refs: Vec<(TileId, &[u8])> = data.iter().map(|(id, d)| (*id, d.as_slice())).collect();
    let builder = TreeBuilder::from_partial_tiles(s.size, &refs)
        .map_err(|e| anyhow::anyhow!("the saved audit state is unusable: {e}"))?;
    let edge = data
        .into_iter()
        .map(|(id, d)| ((id.level, id.index), d))
        .collect();
    Ok((builder, edge))
}

fn snapshot(size: u64, edge: &Edge, rules: &RuleCheck) -> anyhow::Result<AuditState> {
    let mut tiles = Vec::new();
    for id in partial_tiles(size) {
        let d = edge
            .get(&(id.level, id.index))
            .ok_or_else(|| anyhow::anyhow!("rebuilt edge lacks tile {}/{}", id.level, id.index))?;
        let want = usize::from(id.width) * 32;
        anyhow::ensure!(
            d.len() >= want,
            "rebuilt tile {}/{} is too short",
            id.level,
            id.index
        );
        tiles.push(EdgeTile {
            level: id.level,
            index: id.index,
            width: id.width,
            hashes: b64().encode(&d[..want]),
        });
    }
    Ok(AuditState {
        size,
        tiles,
        registry: rules.entries.clone(),
    })
}

fn progress(len: u64, start: u64, show: bool) -> indicatif::ProgressBar {
    if !show || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(len);
    pb.set_position(start);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "auditing [{bar:40}] {pos}/{len} entries ({per_sec}, eta {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    pb
}

/// Compares served hash tiles with rebuilt ones.
async fn check_tiles<S: TileSource + ?Sized>(
    source: &S,
    tiles: Vec<(TileId, Vec<u8>)>,
    concurrency: usize,
) -> anyhow::Result<Result<(), Alarm>> {
    let mut served = futures::stream::iter(tiles.into_iter().map(|(id, rebuilt)| async move {
        let got = source.tile(TilePath::Hash(id)).await;
        (id, rebuilt, got)
    }))
    .buffer_unordered(concurrency.max(1));
    while let Some((id, rebuilt, got)) = served.next().await {
        let got = got?;
        if got != rebuilt {
            let path = TilePath::Hash(id).to_path();
            return Ok(Err(Alarm {
                what: format!(
                    "served hash tile {path} differs from the one rebuilt from the entries"
                ),
                evidence: format!(
                    "served:  {} bytes, SHA-256 {}\nrebuilt: {} bytes, SHA-256 {}",
                    got.len(),
                    hex::encode(Sha256::digest(&got)),
                    rebuilt.len(),
                    hex::encode(Sha256::digest(&rebuilt))
                ),
            }));
        }
    }
    Ok(Ok(()))
}

/// Audits the tree up to `cp` (already verified), resuming from `slot`,
/// and every entry against the record-type registry replayed from the
/// entries themselves (`rules`). On success `slot` holds the audited state
/// at `cp.size` and the answer is the number of entries fetched and hashed
/// by this call; after each chunk the progress is put in `slot` and handed
/// to `save` (progress stops being saved at the first broken rule).
pub async fn audit<S: TileSource + ?Sized>(
    source: &S,
    cp: &Checkpoint,
    slot: &mut Option<AuditState>,
    concurrency: usize,
    rules: Option<Rules>,
    save: &mut (dyn FnMut(&AuditState) -> anyhow::Result<()> + Send),
) -> anyhow::Result<Result<u64, Alarm>> {
    audit_visiting(source, cp, slot, concurrency, rules, save, &mut |_, _| {}).await
}

/// [`audit`], showing every leaf it reads to `visit` (index, leaf bytes).
/// The leaves are authentic only once the audit returns `Ok(Ok(_))`: the
/// tree rebuilt from them reproduced the checkpoint's root.
pub async fn audit_visiting<S: TileSource + ?Sized>(
    source: &S,
    cp: &Checkpoint,
    slot: &mut Option<AuditState>,
    concurrency: usize,
    rules: Option<Rules>,
    save: &mut (dyn FnMut(&AuditState) -> anyhow::Result<()> + Send),
    visit: &mut (dyn FnMut(u64, &[u8]) + Send),
) -> anyhow::Result<Result<u64, Alarm>> {
    let prior = slot.as_ref().filter(|s| s.size <= cp.size);
    let mut checks = RuleCheck::resume(rules, prior)?;
    let (mut builder, mut edge) = resume(slot.as_ref(), cp)?;
    let start = builder.size();
    let pb = progress(cp.size, start, source.show_progress());
    let first_bundle = start / TILE_WIDTH;
    let end_bundle = cp.size.div_ceil(TILE_WIDTH);

    let mut chunk_start = first_bundle;
    while chunk_start < end_bundle {
        let chunk_end = (chunk_start + CHUNK_BUNDLES).min(end_bundle);
        let mut bundles = futures::stream::iter((chunk_start..chunk_end).map(|k| {
            let width = (cp.size - k * TILE_WIDTH).min(TILE_WIDTH) as u16;
            async move {
                let got = source
                    .tile(TilePath::Entries(TileId::new(0, k, width)))
                    .await;
                (k, width, got)
            }
        }))
        .buffered(concurrency.max(1));
        let mut full_tiles = Vec::new();
        while let Some((k, width, got)) = bundles.next().await {
            let data = got?;
            let path = TilePath::Entries(TileId::new(0, k, width)).to_path();
            let leaves = match decode_bundle(&data) {
                Ok(l) => l,
                Err(e) => {
                    return Ok(Err(Alarm {
                        what: format!("entry bundle {path} is malformed: {e}"),
                        evidence: String::new(),
                    }))
                }
            };
            if leaves.len() != usize::from(width) {
                return Ok(Err(Alarm {
                    what: format!(
                        "entry bundle {path} holds {} entries, not {width}",
                        leaves.len()
                    ),
                    evidence: String::new(),
                }));
            }
            let skip = if k == first_bundle {
                (start % TILE_WIDTH) as usize
            } else {
                0
            };
            for (j, l) in leaves.iter().enumerate().skip(skip) {
                checks.check(k * TILE_WIDTH + j as u64, l);
                visit(k * TILE_WIDTH + j as u64, l);
            }
            let hashes: Vec<Hash> = leaves[skip..].iter().map(|l| leaf_hash(l)).collect();
            for (id, data) in builder.append(&hashes) {
                if id.is_full() {
                    edge.remove(&(id.level, id.index));
                    full_tiles.push((id, data));
                } else {
                    edge.insert((id.level, id.index), data);
                }
            }
            pb.inc(hashes.len() as u64);
        }
        drop(bundles);
        if let Err(alarm) = check_tiles(source, full_tiles, concurrency).await? {
            return Ok(Err(alarm));
        }
        if checks.broken.is_none() {
            let progress = snapshot(builder.size(), &edge, &checks)?;
            save(&progress)?;
            *slot = Some(progress);
        }
        chunk_start = chunk_end;
    }
    pb.finish_and_clear();

    let root = builder.root();
    if builder.size() != cp.size || root != cp.root {
        return Ok(Err(Alarm {
            what: format!(
                "audit: the entries rebuild a tree of {} with root {}, but the checkpoint says size {} with root {}",
                builder.size(),
                root.to_base64(),
                cp.size,
                cp.root.to_base64()
            ),
            evidence: String::new(),
        }));
    }
    let state = snapshot(cp.size, &edge, &checks)?;
    let mut partial = Vec::new();
    for t in &state.tiles {
        partial.push((
            TileId::new(t.level, t.index, t.width),
            b64().decode(&t.hashes)?,
        ));
    }
    if let Err(alarm) = check_tiles(source, partial, concurrency).await? {
        return Ok(Err(alarm));
    }
    // The entries are authentic (they rebuild the signed root): a broken
    // rule among them is the log's.
    if let Some(alarm) = checks.broken {
        return Ok(Err(alarm));
    }
    *slot = Some(state);
    Ok(Ok(cp.size - start))
}
