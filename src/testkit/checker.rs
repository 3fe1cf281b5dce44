//! The invariant checker the integration suites run after every step.
//!
//! [`LogChecker`] looks at a live log only through its public HTTP API and
//! the core verifier, the way an outside monitor would:
//!
//! - every checkpoint it sees (fetched, or carried by a receipt) must be
//!   signed by the log's key, and two checkpoints of the same size must have
//!   the same root (anything else is a fork);
//! - every checkpoint it has seen must be consistent with the newest one it
//!   has verified (the log is append-only);
//! - every receipt handed to it must verify offline, and no two receipts may
//!   claim one index for different leaves;
//! - [`LogChecker::check_inclusion`] re-proves every receipt's leaf against
//!   the newest checkpoint through the proof API;
//! - [`LogChecker::audit`] rebuilds the whole tree from the public entry
//!   bundles and compares every hash tile and the root, trusting nothing the
//!   server says beyond the signed checkpoint.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context, Result};
use futures::stream::{self, StreamExt, TryStreamExt};
use serde::Deserialize;
use stele_core::checkpoint::Checkpoint;
use stele_core::merkle::{verify_consistency, verify_inclusion};
use stele_core::note::{open_checkpoint, Verifier};
use stele_core::receipt::Receipt;
use stele_core::tile::{self, TileId, TilePath, TreeBuilder, TILE_WIDTH};
use stele_core::{leaf_hash, Hash};

/// How many proof requests the checker keeps in flight at once.
const PARALLEL_REQUESTS: usize = 16;

/// The result of a full audit.
#[derive(Clone, Debug)]
pub struct Audit {
    /// The checkpoint the audit reproduced.
    pub checkpoint: Checkpoint,
    /// Every leaf of the tree, in index order.
    pub leaves: Vec<Vec<u8>>,
}

#[derive(Deserialize)]
struct LogsAnswer {
    logs: Vec<LogEntry>,
}

#[derive(Deserialize)]
struct LogEntry {
    name: String,
    vkey: String,
}

#[derive(Deserialize)]
struct ConsistencyAnswer {
    from: u64,
    to: u64,
    consistency_proof: Vec<String>,
}

#[derive(Deserialize)]
struct InclusionAnswer {
    index: u64,
    tree_size: u64,
    leaf_hash: String,
    inclusion_proof: Vec<String>,
}

/// Keeps what a monitor of one log has verified so far. See the module docs.
pub struct LogChecker {
    client: reqwest::Client,
    base_url: String,
    log: String,
    verifier: Verifier,
    /// The newest checkpoint verified so far.
    latest: Option<Checkpoint>,
    /// Root of every signed tree size seen (fork detection).
    roots: BTreeMap<u64, Hash>,
    /// Sizes seen whose consistency with `latest` is not proven yet.
    unproven: BTreeMap<u64, Hash>,
    /// Leaf hash of every receipt seen, by index.
    leaves: BTreeMap<u64, Hash>,
}

impl LogChecker {
    /// A checker for log `log` served at `base_url` (e.g. `http://127.0.0.1:4000`)
    /// whose checkpoints are signed by `vkey`.
    pub fn new(base_url: &str, log: &str, vkey: &str) -> Result<Self> {
        let verifier = Verifier::from_vkey(vkey).map_err(|e| anyhow!("bad vkey {vkey:?}: {e}"))?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .context("building the HTTP client")?;
        Ok(LogChecker {
            client,
            base_url: base_url.trim_end_matches('/').to_string(),
            log: log.to_string(),
            verifier,
            latest: None,
            roots: BTreeMap::new(),
            unproven: BTreeMap::new(),
            leaves: BTreeMap::new(),
        })
    }

    /// A checker that takes the log's vkey from `GET /logs` (trust on first use).
    pub async fn discover(base_url: &str, log: &str) -> Result<Self> {
        let url = format!("{}/logs", base_url.trim_end_matches('/'));
        let answer: LogsAnswer = reqwest::get(&url).await?.error_for_status()?.json().await?;
        let entry = answer
            .logs
            .into_iter()
            .find(|l| l.name == log)
            .ok_or_else(|| anyhow!("GET /logs does not list log {log:?}"))?;
        Self::new(base_url, log, &entry.vkey)
    }

    /// Points the checker at another process serving the same log (after a
    /// restart, or to the other of two servers). Everything verified so far
    /// is kept and must stay true there.
    pub fn set_base_url(&mut self, base_url: &str) {
        self.base_url = base_url.trim_end_matches('/').to_string();
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The newest checkpoint verified so far.
    pub fn latest(&self) -> Option<&Checkpoint> {
        self.latest.as_ref()
    }

    /// Leaf hashes of every receipt seen, by index.
    pub fn receipt_leaves(&self) -> &BTreeMap<u64, Hash> {
        &self.leaves
    }

    /// Every signed tree size seen so far and its root.
    pub fn signed_roots(&self) -> &BTreeMap<u64, Hash> {
        &self.roots
    }

    /// Verifies a receipt offline and remembers its leaf and its checkpoint.
    /// Fails if it does not verify, or if another receipt claimed its index
    /// for a different leaf.
    pub fn add_receipt(&mut self, receipt: &Receipt) -> Result<u64> {
        let verified = receipt
            .verify(&self.verifier)
            .map_err(|e| anyhow!("receipt for index {} does not verify: {e}", receipt.index))?;
        ensure!(
            verified.index == receipt.index,
            "receipt index {} verified as {}",
            receipt.index,
            verified.index
        );
        if let Some(previous) = self.leaves.insert(verified.index, verified.leaf_hash) {
            ensure!(
                previous == verified.leaf_hash,
                "two receipts claim index {}: leaf hashes {previous} and {}",
                verified.index,
                verified.leaf_hash
            );
        }
        self.observe(&verified.checkpoint)?;
        Ok(verified.index)
    }

    /// Verifies a checkpoint note's signature and remembers it (its
    /// consistency with the newest checkpoint is proven at the next
    /// [`LogChecker::check`]).
    pub fn add_note(&mut self, note: &str) -> Result<Checkpoint> {
        let checkpoint = open_checkpoint(note, &self.verifier)
            .map_err(|e| anyhow!("checkpoint does not verify: {e}"))?;
        self.observe(&checkpoint)?;
        Ok(checkpoint)
    }

    fn observe(&mut self, checkpoint: &Checkpoint) -> Result<()> {
        match self.roots.get(&checkpoint.size) {
            Some(root) if *root != checkpoint.root => {
                bail!(
                    "fork: two signed checkpoints of size {} with roots {root} and {}",
                    checkpoint.size,
                    checkpoint.root
                )
            }
            Some(_) => {}
            None => {
                self.roots.insert(checkpoint.size, checkpoint.root);
                self.unproven.insert(checkpoint.size, checkpoint.root);
            }
        }
        Ok(())
    }

    /// Fetches the latest checkpoint, verifies its signature, and proves
    /// that every checkpoint seen so far that is not larger is consistent
    /// with it. Larger ones (carried by receipts from a process that is
    /// ahead of this one) stay pending until a later check reaches them; see
    /// [`LogChecker::pending`]. Returns the fetched checkpoint, which
    /// [`LogChecker::check_inclusion`] and [`LogChecker::audit`] then use.
    pub async fn check(&mut self) -> Result<Checkpoint> {
        let note = self
            .get_text(&format!("/logs/{}/checkpoint", self.log))
            .await?;
        let fetched = self.add_note(&note)?;
        let older: Vec<(u64, Hash)> = self
            .unproven
            .range(..fetched.size)
            .map(|(s, r)| (*s, *r))
            .collect();
        let this = &*self;
        let reference = &fetched;
        stream::iter(older.iter().map(|(size, root)| async move {
            this.prove_consistency(*size, root, reference).await
        }))
        .buffer_unordered(PARALLEL_REQUESTS)
        .try_collect::<Vec<()>>()
        .await?;
        self.unproven = self.unproven.split_off(&fetched.size);
        self.latest = Some(fetched.clone());
        Ok(fetched)
    }

    /// Sizes of checkpoints seen but not yet proven consistent with a later
    /// one, other than the newest fetched checkpoint itself. Empty once the
    /// last [`LogChecker::check`] reached everything seen.
    pub fn pending(&self) -> Vec<u64> {
        let latest = self.latest.as_ref().map(|c| c.size);
        self.unproven
            .keys()
            .copied()
            .filter(|s| Some(*s) != latest)
            .collect()
    }

    async fn prove_consistency(
        &self,
        old_size: u64,
        old_root: &Hash,
        new: &Checkpoint,
    ) -> Result<()> {
        let proof = if old_size == 0 || old_size == new.size {
            Vec::new()
        } else {
            let answer: ConsistencyAnswer = self
                .get_json(&format!(
                    "/logs/{}/proofs/consistency?from={old_size}&to={}",
                    self.log, new.size
                ))
                .await?;
            ensure!(
                answer.from == old_size && answer.to == new.size,
                "asked for consistency {old_size}->{}, got {}->{}",
                new.size,
                answer.from,
                answer.to
            );
            parse_hashes(&answer.consistency_proof)?
        };
        verify_consistency(old_size, new.size, old_root, &new.root, &proof).map_err(|e| {
            anyhow!(
                "checkpoint of size {old_size} (root {old_root}) is not consistent with size {} (root {}): {e}",
                new.size,
                new.root
            )
        })
    }

    /// Re-proves, through the proof API, the inclusion of every receipt's
    /// leaf in the newest verified checkpoint. Call [`LogChecker::check`] first.
    pub async fn check_inclusion(&self) -> Result<usize> {
        let latest = self
            .latest
            .as_ref()
            .ok_or_else(|| anyhow!("check() has not run yet"))?;
        let leaves: Vec<(u64, Hash)> = self.leaves.iter().map(|(i, h)| (*i, *h)).collect();
        for (index, _) in &leaves {
            ensure!(
                *index < latest.size,
                "receipt index {index} is beyond the newest checkpoint (size {})",
                latest.size
            );
        }
        stream::iter(leaves.iter().map(|(index, hash)| async move {
            let answer: InclusionAnswer = self
                .get_json(&format!(
                    "/logs/{}/proofs/inclusion?index={index}&tree_size={}",
                    self.log, latest.size
                ))
                .await?;
            ensure!(
                answer.index == *index && answer.tree_size == latest.size,
                "asked for inclusion of {index} in {}, got {} in {}",
                latest.size,
                answer.index,
                answer.tree_size
            );
            let served =
                Hash::from_hex(&answer.leaf_hash).map_err(|e| anyhow!("leaf_hash: {e}"))?;
            ensure!(
                served == *hash,
                "index {index}: the log now holds leaf {served}, the receipt said {hash}"
            );
            let proof = parse_hashes(&answer.inclusion_proof)?;
            verify_inclusion(hash, *index, latest.size, &proof, &latest.root)
                .map_err(|e| anyhow!("inclusion of index {index} in size {}: {e}", latest.size))
        }))
        .buffer_unordered(PARALLEL_REQUESTS)
        .try_collect::<Vec<()>>()
        .await?;
        Ok(leaves.len())
    }

    /// Full audit from the public tiles alone: fetches every entry bundle of
    /// the newest verified checkpoint, rebuilds the tree, compares every hash
    /// tile the server serves and the root, and checks that every receipt's
    /// leaf sits at its index. Call [`LogChecker::check`] first.
    pub async fn audit(&self) -> Result<Audit> {
        let checkpoint = self
            .latest
            .clone()
            .ok_or_else(|| anyhow!("check() has not run yet"))?;
        let size = checkpoint.size;
        let bundles: Vec<TileId> = tile::changed_bundles(0, size);
        let fetched: Vec<(TileId, Vec<u8>)> = stream::iter(bundles.iter().map(|id| async move {
            let data = self.get_tile(TilePath::Entries(*id)).await?;
            Ok::<_, anyhow::Error>((*id, data))
        }))
        .buffered(PARALLEL_REQUESTS)
        .try_collect()
        .await?;

        let mut builder = TreeBuilder::new();
        let mut tiles: BTreeMap<(u8, u64), Vec<u8>> = BTreeMap::new();
        let mut leaves = Vec::with_capacity(size as usize);
        for (id, data) in &fetched {
            let decoded =
                tile::decode_bundle(data).map_err(|e| anyhow!("entry bundle {}: {e}", id.index))?;
            ensure!(
                decoded.len() == usize::from(id.width),
                "entry bundle {} has {} leaves, expected {}",
                id.index,
                decoded.len(),
                id.width
            );
            let hashes: Vec<Hash> = decoded.iter().map(|leaf| leaf_hash(leaf)).collect();
            for (offset, hash) in hashes.iter().enumerate() {
                let index = id.index * TILE_WIDTH + offset as u64;
                if let Some(expected) = self.leaves.get(&index) {
                    ensure!(
                        expected == hash,
                        "index {index}: the entry bundle holds leaf {hash}, the receipt said {expected}"
                    );
                }
            }
            leaves.extend(decoded.iter().map(|leaf| leaf.to_vec()));
            for (tile_id, contents) in builder.append(&hashes) {
                tiles.insert((tile_id.level, tile_id.index), contents);
            }
        }
        ensure!(
            builder.size() == size,
            "rebuilt {} leaves, checkpoint says {size}",
            builder.size()
        );
        ensure!(
            builder.root() == checkpoint.root,
            "the entry bundles rebuild root {}, the checkpoint of size {size} says {}",
            builder.root(),
            checkpoint.root
        );
        if let Some((index, _)) = self.leaves.range(size..).next() {
            bail!("receipt index {index} is beyond the audited size {size}");
        }

        let expected: Vec<(TileId, Vec<u8>)> = tiles
            .into_iter()
            .map(|((level, index), contents)| {
                let width = (contents.len() / stele_core::HASH_SIZE) as u16;
                (TileId::new(level, index, width), contents)
            })
            .collect();
        stream::iter(expected.iter().map(|(id, contents)| async move {
            let served = self.get_tile(TilePath::Hash(*id)).await?;
            ensure!(
                served == *contents,
                "hash tile {} differs from the tile rebuilt from the entries",
                TilePath::Hash(*id)
            );
            Ok(())
        }))
        .buffer_unordered(PARALLEL_REQUESTS)
        .try_collect::<Vec<()>>()
        .await?;
        Ok(Audit { checkpoint, leaves })
    }

    async fn get_tile(&self, path: TilePath) -> Result<Vec<u8>> {
        let url = format!("{}/logs/{}/{}", self.base_url, self.log, path.to_path());
        let response = self
            .client
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = response.status();
        ensure!(status.is_success(), "GET {url}: {status}");
        Ok(response.bytes().await?.to_vec())
    }

    async fn get_text(&self, path: &str) -> Result<String> {
        let url = format!("{}{path}", self.base_url);
        let response = self
            .client
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = response.status();
        let body = response.text().await?;
        ensure!(status.is_success(), "GET {url}: {status}: {body}");
        Ok(body)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        let body = self.get_text(path).await?;
        serde_json::from_str(&body).with_context(|| format!("GET {path}: unexpected body {body}"))
    }
}

fn parse_hashes(hex: &[String]) -> Result<Vec<Hash>> {
    hex.iter()
        .map(|h| Hash::from_hex(h).map_err(|e| anyhow!("bad hash {h:?}: {e}")))
        .collect()
}
