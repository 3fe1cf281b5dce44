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

/// The checker against a minimal in-memory log served over loopback: it
/// accepts an honest log and catches a corrupted tile, a wrong inclusion
/// proof, a fork, and a receipt reusing another's index.
#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use axum::extract::{Path, Query, State};
    use axum::routing::get;
    use axum::Router;
    use stele_core::merkle::{prove_consistency, prove_inclusion, root_of};
    use stele_core::note::Signer;

    use super::*;

    #[derive(Default)]
    struct Faults {
        corrupt_tile: Option<String>,
        wrong_inclusion: bool,
    }

    struct Fake {
        signer: Signer,
        leaves: Mutex<Vec<Vec<u8>>>,
        faults: Mutex<Faults>,
    }

    impl Fake {
        fn hashes(&self, size: usize) -> Vec<Hash> {
            self.leaves.lock().unwrap()[..size]
                .iter()
                .map(|l| leaf_hash(l))
                .collect()
        }
        fn note(&self, size: usize) -> String {
            let root = root_of(&self.hashes(size));
            self.signer
                .sign_checkpoint(&Checkpoint::new(self.signer.name(), size as u64, root))
                .unwrap()
        }
        fn push(&self, n: usize) -> Vec<Receipt> {
            let start = self.leaves.lock().unwrap().len();
            for i in start..start + n {
                self.leaves
                    .lock()
                    .unwrap()
                    .push(format!("{{\"n\":{i}}}").into_bytes());
            }
            let size = start + n;
            let hashes = self.hashes(size);
            let note = self.note(size);
            (start..size)
                .map(|i| {
                    let proof = prove_inclusion(i as u64, size as u64, &hashes[..]).unwrap();
                    let leaf = String::from_utf8(self.leaves.lock().unwrap()[i].clone()).unwrap();
                    Receipt::new(self.signer.name(), i as u64, leaf, &proof, note.clone())
                })
                .collect()
        }
    }

    async fn checkpoint(State(f): State<Arc<Fake>>) -> String {
        let size = f.leaves.lock().unwrap().len();
        f.note(size)
    }

    async fn tile(State(f): State<Arc<Fake>>, Path(rest): Path<String>) -> Vec<u8> {
        let path = format!("tile/{rest}");
        let size = f.leaves.lock().unwrap().len();
        let hashes = f.hashes(size);
        let mut data = match TilePath::parse(&path).unwrap() {
            TilePath::Entries(id) => {
                let leaves = f.leaves.lock().unwrap();
                let start = (id.index * TILE_WIDTH) as usize;
                let end = start + usize::from(id.width);
                tile::encode_bundle(leaves[start..end].iter().map(|l| l.as_slice())).unwrap()
            }
            TilePath::Hash(id) => {
                let mut out = Vec::new();
                for k in 0..u64::from(id.width) {
                    let span = 1usize << (8 * u32::from(id.level));
                    let first = ((id.index * TILE_WIDTH + k) as usize) * span;
                    out.extend_from_slice(root_of(&hashes[first..first + span]).as_bytes());
                }
                out
            }
        };
        if f.faults.lock().unwrap().corrupt_tile.as_deref() == Some(path.as_str()) {
            data[0] ^= 1;
        }
        data
    }

    async fn consistency(
        State(f): State<Arc<Fake>>,
        Query(q): Query<HashMap<String, u64>>,
    ) -> String {
        let (from, to) = (q["from"], q["to"]);
        let hashes = f.hashes(to as usize);
        let proof = prove_consistency(from, to, &hashes[..]).unwrap();
        serde_json::json!({"from": from, "to": to, "consistency_proof": proof.iter().map(Hash::to_hex).collect::<Vec<_>>(), "checkpoint": null}).to_string()
    }

    async fn inclusion(
        State(f): State<Arc<Fake>>,
        Query(q): Query<HashMap<String, u64>>,
    ) -> String {
        let (index, size) = (q["index"], q["tree_size"]);
        let hashes = f.hashes(size as usize);
        let mut proof = prove_inclusion(index, size, &hashes[..]).unwrap();
        if f.faults.lock().unwrap().wrong_inclusion && !proof.is_empty() {
            proof[0] = Hash::default();
        }
        serde_json::json!({"index": index, "tree_size": size, "leaf_hash": hashes[index as usize].to_hex(),
            "inclusion_proof": proof.iter().map(Hash::to_hex).collect::<Vec<_>>(), "checkpoint": null})
        .to_string()
    }

    async fn serve() -> (Arc<Fake>, String) {
        let (signer, _) = Signer::generate("checker.test/log").unwrap();
        let fake = Arc::new(Fake {
            signer,
            leaves: Mutex::default(),
            faults: Mutex::default(),
        });
        let app = Router::new()
            .route("/logs/l/checkpoint", get(checkpoint))
            .route("/logs/l/tile/{*rest}", get(tile))
            .route("/logs/l/proofs/consistency", get(consistency))
            .route("/logs/l/proofs/inclusion", get(inclusion))
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (fake, url)
    }

    #[tokio::test]
    async fn accepts_an_honest_log_and_catches_each_fault() {
        let (fake, url) = serve().await;
        let mut checker = LogChecker::new(&url, "l", &fake.signer.vkey()).unwrap();
        assert_eq!(checker.check().await.unwrap().size, 0);
        for n in [1, 300, 255, 70] {
            for r in fake.push(n) {
                checker.add_receipt(&r).unwrap();
            }
            checker.check().await.unwrap();
        }
        assert!(checker.pending().is_empty());
        assert_eq!(checker.check_inclusion().await.unwrap(), 626);
        let audit = checker.audit().await.unwrap();
        assert_eq!((audit.checkpoint.size, audit.leaves.len()), (626, 626));

        // A hash tile that does not match the entries.
        fake.faults.lock().unwrap().corrupt_tile = Some("tile/0/001".into());
        let err = checker.audit().await.unwrap_err().to_string();
        assert!(err.contains("tile/0/001"), "{err}");
        // An entry bundle that does not match the receipts.
        fake.faults.lock().unwrap().corrupt_tile = Some("tile/entries/000".into());
        assert!(checker.audit().await.is_err());
        fake.faults.lock().unwrap().corrupt_tile = None;
        checker.audit().await.unwrap();

        fake.faults.lock().unwrap().wrong_inclusion = true;
        assert!(checker.check_inclusion().await.is_err());
        fake.faults.lock().unwrap().wrong_inclusion = false;

        // A receipt that reuses index 5 for another leaf.
        let mut other = fake.push(1).pop().unwrap();
        let proof = prove_inclusion(5, 627, &fake.hashes(627)[..]).unwrap();
        other = Receipt::new(fake.signer.name(), 5, other.leaf, &proof, other.checkpoint);
        assert!(checker.add_receipt(&other).is_err());

        // A second checkpoint of an already signed size with another root.
        let forked = fake
            .signer
            .sign_checkpoint(&Checkpoint::new(fake.signer.name(), 301, Hash([7; 32])))
            .unwrap();
        let err = checker.add_note(&forked).unwrap_err().to_string();
        assert!(err.contains("fork"), "{err}");

        // A history rewrite: the log now serves other leaves under a larger
        // size; the checkpoints already seen are not consistent with it.
        fake.leaves.lock().unwrap()[3] = b"rewritten".to_vec();
        let err = checker.check().await.unwrap_err().to_string();
        assert!(err.contains("not consistent"), "{err}");
    }
}
