//! The invariant checker every suite runs after every step that writes
//! (Sunlight's `CheckLog`).
//!
//! [`LogChecker`] looks at a log only through a [`LogView`] — the public
//! HTTP API, an engine's read methods, or a storage backend — and the core
//! verifier, the way an outside monitor would:
//!
//! - every checkpoint it sees (fetched, carried by a receipt, or stored)
//!   must be signed by the log's key, and two checkpoints of the same size
//!   must have the same root (anything else is a fork);
//! - every checkpoint it has seen, and every stored one, must be consistent
//!   with the newest one it has verified (the log is append-only);
//! - every receipt handed to it must verify offline, no two receipts may
//!   claim one index for different leaves, and each is re-proven through
//!   the proof API;
//! - [`LogChecker::audit`] rebuilds the whole tree from the entry bundles
//!   with the same auditor as `stele monitor --audit`
//!   ([`stele::cli::audit`]) and compares every hash tile and the root,
//!   trusting nothing beyond the signed checkpoint;
//! - every entry is read back and its inclusion proven through the proof API.
//!
//! [`LogChecker::check_all`] does all of it; the steps are public for
//! suites that check a live log while it grows.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{anyhow, bail, ensure, Context, Result};
use futures::stream::{self, StreamExt, TryStreamExt};
use stele_core::checkpoint::Checkpoint;
use stele_core::merkle::verify_consistency;
use stele_core::note::{open_checkpoint, Verifier};
use stele_core::receipt::Receipt;
use stele_core::Hash;

mod tree;
mod view;
pub use view::{published_log, EngineView, HttpView, LogView, StorageView};

#[cfg(test)]
mod tests;

/// How many reads the checker keeps in flight at once.
const PARALLEL: usize = 16;

/// The result of [`LogChecker::audit`].
#[derive(Clone, Debug)]
pub struct Audit {
    /// The checkpoint the audit reproduced.
    pub checkpoint: Checkpoint,
    /// Every leaf of the tree, in index order.
    pub leaves: Vec<Vec<u8>>,
}

/// What [`LogChecker::check_all`] verified.
#[derive(Clone, Debug)]
pub struct Report {
    /// The newest checkpoint, which everything was checked against.
    pub checkpoint: Checkpoint,
    /// Every leaf of the tree, in index order.
    pub leaves: Vec<Vec<u8>>,
    /// Receipts re-proven (all the checker was given).
    pub receipts: usize,
    /// Stored checkpoints verified, when the view can see them.
    pub stored: Option<usize>,
    /// Entries read back and proven through the proof API.
    pub entries: usize,
}

/// Keeps what a monitor of one log has verified so far. See the module docs.
pub struct LogChecker<V: LogView = HttpView> {
    view: V,
    verifier: Verifier,
    /// The newest checkpoint verified so far.
    latest: Option<Checkpoint>,
    /// Root of every signed tree size seen (fork detection).
    roots: BTreeMap<u64, Hash>,
    /// Sizes seen whose consistency with `latest` is not proven yet.
    unproven: BTreeMap<u64, Hash>,
    /// Leaf hash of every receipt seen, by index.
    leaves: BTreeMap<u64, Hash>,
    /// At most this many entries are read back by `check_all` (spread over
    /// the log); None: all of them.
    entry_limit: Option<usize>,
    /// The registry rules the audit checks every record against (None:
    /// the tree only, for logs of opaque leaves).
    rules: Option<stele::cli::audit::Rules>,
}

impl LogChecker<HttpView> {
    /// A checker for log `log` served at `base_url` (`http://127.0.0.1:PORT`)
    /// whose checkpoints are signed by `vkey`.
    pub fn over_http(base_url: &str, log: &str, vkey: &str) -> Result<Self> {
        Self::new(HttpView::new(base_url, log)?, vkey)
    }

    /// A checker that takes the log's vkey from `GET /logs` (trust on first use).
    pub async fn discover(base_url: &str, log: &str) -> Result<Self> {
        let info = published_log(base_url, log).await?;
        Self::over_http(base_url, log, &info.vkey)
    }

    /// Points the checker at another process serving the same log (after a
    /// restart, or to the other of two servers). Everything verified so far
    /// is kept and must stay true there.
    pub fn set_base_url(&mut self, base_url: &str) -> Result<()> {
        self.view = self.view.at(base_url)?;
        Ok(())
    }
}

impl<V: LogView> LogChecker<V> {
    /// A checker reading through `view`, for a log signed by `vkey`.
    pub fn new(view: V, vkey: &str) -> Result<Self> {
        let verifier = Verifier::from_vkey(vkey).map_err(|e| anyhow!("bad vkey {vkey:?}: {e}"))?;
        Ok(LogChecker {
            view,
            verifier,
            latest: None,
            roots: BTreeMap::new(),
            unproven: BTreeMap::new(),
            leaves: BTreeMap::new(),
            entry_limit: None,
            // Suites submit ad-hoc types to logs that accept them; every
            // registered type is still checked at every index.
            rules: Some(stele::cli::audit::Rules {
                allow_unregistered: true,
            }),
        })
    }

    pub fn view(&self) -> &V {
        &self.view
    }

    /// `what`, and where the view reads: for error messages.
    fn at(&self, what: impl std::fmt::Display) -> String {
        format!("{}: {what}", self.view.describe())
    }

    /// Reads through another view of the same log (a restarted engine, a
    /// reopened storage). Everything verified so far must stay true there.
    pub fn set_view(&mut self, view: V) {
        self.view = view;
    }

    /// Reads back at most `limit` entries (spread over the log, first and
    /// last included) in [`LogChecker::check_all`]: for logs so large that
    /// one request per entry is too slow. The audit still covers every
    /// entry, and every receipt is still re-proven.
    pub fn limit_entries(&mut self, limit: usize) {
        self.entry_limit = Some(limit.max(2));
    }

    /// Audits the tree only, not the records' rules (a log whose leaves
    /// are not Stele records).
    pub fn opaque_leaves(&mut self) {
        self.rules = None;
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

    /// Everything, once, against the latest checkpoint: its signature,
    /// every stored checkpoint (when the view sees them) and every one seen
    /// consistent with it, the audit, every receipt and every entry proven.
    /// Call it when the log is quiet: a checkpoint seen beyond the latest
    /// (from a process that is ahead) is an error here.
    pub async fn check_all(&mut self) -> Result<Report> {
        let stored = self.check_stored().await?;
        let checkpoint = match stored {
            Some(_) => self.latest.clone().expect("check_stored checked"),
            None => self.check().await?,
        };
        ensure!(
            self.pending().is_empty(),
            "{}: checkpoints of sizes {:?} were never proven consistent with the newest (size {})",
            self.view.describe(),
            self.pending(),
            checkpoint.size
        );
        let audit = self.audit().await?;
        let entries = self.check_entries(&audit).await?;
        let receipts = self.leaves.len();
        Ok(Report {
            checkpoint,
            leaves: audit.leaves,
            receipts,
            stored,
            entries,
        })
    }

    /// Fetches the latest checkpoint, verifies its signature, and proves
    /// that every checkpoint seen so far that is not larger is consistent
    /// with it. Larger ones (carried by receipts from a process that is
    /// ahead of this one) stay pending until a later check reaches them; see
    /// [`LogChecker::pending`]. Returns the fetched checkpoint, which
    /// [`LogChecker::check_inclusion`] and [`LogChecker::audit`] then use.
    pub async fn check(&mut self) -> Result<Checkpoint> {
        let note = self
            .view
            .checkpoint()
            .await
            .with_context(|| self.at("the latest checkpoint"))?;
        let fetched = self.add_note(&note)?;
        let older: Vec<(u64, Hash)> = self
            .unproven
            .range(..fetched.size)
            .map(|(s, r)| (*s, *r))
            .collect();
        // The futures are collected first: a stream over a closure that
        // borrows would not be `Send` for every lifetime.
        let proofs: Vec<_> = older
            .iter()
            .map(|(size, root)| self.prove_consistency(*size, root, &fetched))
            .collect();
        stream::iter(proofs)
            .buffer_unordered(PARALLEL)
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

    /// Every checkpoint the log stored (when the view sees them: `None`
    /// otherwise, and nothing is checked): each must verify and say the
    /// size it is stored under; every signed size seen must be stored; and
    /// after a [`LogChecker::check`], all of them must be proven consistent
    /// with the latest, which must be the newest stored. Returns how many
    /// were stored.
    pub async fn check_stored(&mut self) -> Result<Option<usize>> {
        let Some(stored) = self
            .view
            .stored_checkpoints()
            .await
            .with_context(|| self.at("the stored checkpoints"))?
        else {
            return Ok(None);
        };
        let sizes: BTreeSet<u64> = stored.iter().map(|(size, _)| *size).collect();
        for (size, note) in &stored {
            let checkpoint = self
                .add_note(note)
                .with_context(|| format!("stored checkpoint of size {size}"))?;
            ensure!(
                checkpoint.size == *size,
                "checkpoint stored as size {size} says {}",
                checkpoint.size
            );
        }
        for size in self.roots.keys() {
            ensure!(
                *size == 0 || sizes.contains(size),
                "a checkpoint of size {size} was signed but is not stored"
            );
        }
        let newest = self.check().await?;
        ensure!(
            self.pending().is_empty() && sizes.last() == Some(&newest.size),
            "stored checkpoints up to {:?}, latest {}; unproven {:?}",
            sizes.last(),
            newest.size,
            self.pending()
        );
        Ok(Some(stored.len()))
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
            let answer = self
                .view
                .consistency(old_size, new.size)
                .await
                .with_context(|| self.at(format!("consistency {old_size} -> {}", new.size)))?;
            ensure!(
                answer.from == old_size && answer.to == new.size,
                "asked for consistency {old_size}->{}, got {}->{}",
                new.size,
                answer.from,
                answer.to
            );
            answer.consistency_proof
        };
        verify_consistency(old_size, new.size, old_root, &new.root, &proof).map_err(|e| {
            anyhow!(
                "checkpoint of size {old_size} (root {old_root}) is not consistent with size {} (root {}): {e}",
                new.size,
                new.root
            )
        })
    }
}
