//! The checks against the tree of the newest checkpoint: the audit (the
//! tree rebuilt from the entry bundles by `stele monitor --audit`'s
//! auditor), every entry read back, and inclusion proofs through the proof
//! API for entries and receipts.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use anyhow::{anyhow, bail, ensure, Context, Result};
use async_trait::async_trait;
use futures::stream::{self, StreamExt, TryStreamExt};
use stele::cli::audit::{audit, AuditState, TileSource};
use stele_core::checkpoint::Checkpoint;
use stele_core::merkle::verify_inclusion;
use stele_core::note::open_checkpoint;
use stele_core::tile::{decode_bundle, TilePath, TILE_WIDTH};
use stele_core::{leaf_hash, Hash};

use super::{Audit, LogChecker, LogView, PARALLEL};

impl<V: LogView> LogChecker<V> {
    fn latest_or_err(&self) -> Result<Checkpoint> {
        self.latest
            .clone()
            .ok_or_else(|| anyhow!("check() has not run yet"))
    }

    /// Re-proves, through the proof API, the inclusion of every receipt's
    /// leaf in the newest verified checkpoint. Call [`LogChecker::check`] first.
    pub async fn check_inclusion(&self) -> Result<usize> {
        let latest = self.latest_or_err()?;
        let leaves: Vec<(u64, Hash)> = self.leaves.iter().map(|(i, h)| (*i, *h)).collect();
        if let Some((index, _)) = self.leaves.range(latest.size..).next() {
            bail!(
                "receipt index {index} is beyond the newest checkpoint (size {})",
                latest.size
            );
        }
        self.prove_all(&leaves, &latest, None).await?;
        Ok(leaves.len())
    }

    /// Proves each `(index, leaf hash)` included in `latest` through the
    /// proof API, in parallel; with `leaves`, also reads each entry back
    /// and compares it with the leaf the audit rebuilt.
    async fn prove_all(
        &self,
        items: &[(u64, Hash)],
        latest: &Checkpoint,
        leaves: Option<&[Vec<u8>]>,
    ) -> Result<()> {
        let proofs: Vec<_> = items
            .iter()
            .map(|&(index, hash)| self.prove_entry(index, hash, latest, leaves))
            .collect();
        stream::iter(proofs)
            .buffer_unordered(PARALLEL)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    async fn prove_entry(
        &self,
        index: u64,
        hash: Hash,
        latest: &Checkpoint,
        leaves: Option<&[Vec<u8>]>,
    ) -> Result<()> {
        if let Some(leaves) = leaves {
            let entry = self.view.entry(index).await?;
            ensure!(
                entry.index == index
                    && entry.leaf.as_bytes() == leaves[index as usize].as_slice()
                    && entry.leaf_hash == leaf_hash(entry.leaf.as_bytes()),
                "entry {index} is served as index {} with leaf hash {} and a leaf the bundles do not hold",
                entry.index,
                entry.leaf_hash
            );
        }
        self.prove_included(index, &hash, latest).await
    }

    async fn prove_included(&self, index: u64, hash: &Hash, latest: &Checkpoint) -> Result<()> {
        let answer = self
            .view
            .inclusion(index, latest.size)
            .await
            .with_context(|| self.at(format!("inclusion of {index} in {}", latest.size)))?;
        ensure!(
            answer.index == index && answer.tree_size == latest.size,
            "asked for inclusion of {index} in {}, got {} in {}",
            latest.size,
            answer.index,
            answer.tree_size
        );
        ensure!(
            answer.leaf_hash == *hash,
            "index {index}: the log now holds leaf {}, expected {hash}",
            answer.leaf_hash
        );
        if let Some(note) = &answer.checkpoint {
            let cp = open_checkpoint(note, &self.verifier).map_err(|e| {
                anyhow!("inclusion of {index}: its checkpoint does not verify: {e}")
            })?;
            ensure!(
                cp.size == latest.size && cp.root == latest.root,
                "inclusion of {index}: the proof carries a checkpoint of size {} root {}, not the latest",
                cp.size,
                cp.root
            );
        }
        verify_inclusion(
            hash,
            index,
            latest.size,
            &answer.inclusion_proof,
            &latest.root,
        )
        .map_err(|e| anyhow!("inclusion of index {index} in size {}: {e}", latest.size))
    }

    /// Reads back every entry (or a spread of them, see
    /// [`LogChecker::limit_entries`]) and proves it included, then every
    /// receipt not among them. Returns how many entries were read back.
    pub(super) async fn check_entries(&self, audit: &Audit) -> Result<usize> {
        let size = audit.checkpoint.size;
        let indexes: BTreeSet<u64> = match self.entry_limit {
            Some(limit) if size > limit as u64 => (0..limit as u64)
                .map(|k| k * (size - 1) / (limit as u64 - 1))
                .collect(),
            _ => (0..size).collect(),
        };
        let items: Vec<(u64, Hash)> = indexes
            .iter()
            .map(|&i| (i, leaf_hash(&audit.leaves[i as usize])))
            .collect();
        self.prove_all(&items, &audit.checkpoint, Some(&audit.leaves))
            .await?;
        let receipts: Vec<(u64, Hash)> = self
            .leaves
            .iter()
            .filter(|(i, _)| !indexes.contains(i))
            .map(|(i, h)| (*i, *h))
            .collect();
        self.prove_all(&receipts, &audit.checkpoint, None).await?;
        Ok(items.len())
    }

    /// Full audit from the tiles alone, with the auditor of `stele monitor
    /// --audit`: rebuilds the tree of the newest verified checkpoint from
    /// its entry bundles, compares every hash tile and the root, and checks
    /// that every receipt's leaf sits at its index. Call
    /// [`LogChecker::check`] first.
    pub async fn audit(&self) -> Result<Audit> {
        let checkpoint = self.latest_or_err()?;
        let size = checkpoint.size;
        let source = Recording {
            view: &self.view,
            bundles: Mutex::default(),
        };
        let mut nothing = |_: &AuditState| Ok(());
        audit(
            &source,
            &checkpoint,
            &mut None,
            PARALLEL,
            self.rules,
            &mut nothing,
        )
        .await
        .with_context(|| self.at("auditing"))?
        .map_err(|alarm| anyhow!(self.at(alarm)))?;

        let bundles = source.bundles.into_inner().expect("bundles lock");
        let mut leaves = Vec::with_capacity(size as usize);
        for (index, data) in &bundles {
            ensure!(
                *index == leaves.len() as u64 / TILE_WIDTH,
                "the audit read bundle {index} out of order"
            );
            let decoded = decode_bundle(data).map_err(|e| anyhow!("entry bundle {index}: {e}"))?;
            leaves.extend(decoded.iter().map(|leaf| leaf.to_vec()));
        }
        ensure!(
            leaves.len() as u64 == size,
            "the audit read {} leaves of {size}",
            leaves.len()
        );
        for (index, expected) in &self.leaves {
            let Some(leaf) = leaves.get(*index as usize) else {
                bail!("receipt index {index} is beyond the audited size {size}");
            };
            let hash = leaf_hash(leaf);
            ensure!(
                hash == *expected,
                "index {index}: the entry bundle holds leaf {hash}, the receipt said {expected}"
            );
        }
        Ok(Audit { checkpoint, leaves })
    }
}

/// The checker's view as the auditor's tile source, keeping each entry
/// bundle it serves: the leaves the audit verified, for the checks after it.
struct Recording<'a, V: ?Sized> {
    view: &'a V,
    bundles: Mutex<BTreeMap<u64, Vec<u8>>>,
}

#[async_trait]
impl<V: LogView + ?Sized> TileSource for Recording<'_, V> {
    async fn tile(&self, path: TilePath) -> Result<Vec<u8>> {
        let data = self.view.tile(path).await?;
        if let TilePath::Entries(id) = path {
            self.bundles
                .lock()
                .expect("bundles lock")
                .insert(id.index, data.clone());
        }
        Ok(data)
    }

    fn show_progress(&self) -> bool {
        false
    }
}
