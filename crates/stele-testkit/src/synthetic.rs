//! Real batches for tests and tools that write storage directly, without an
//! engine: entries with their RFC 6962 leaf hashes, the hash tiles that
//! change (from the core's [`TreeBuilder`]), and checkpoints signed by a
//! test key, so that [`crate::checker::LogChecker`] over a
//! [`crate::checker::StorageView`] can verify what was stored.
//!
//! ```ignore
//! let mut log = TestLog::new("land", "records.example.gov/land");
//! let parts = log.prepare(300, "a");
//! storage.commit_batch(&parts.batch()).await?;
//! log.accept(parts);
//! ```

use sha2::{Digest, Sha256};
use stele::storage::{Batch, LogWriter, NewEntry, StorageError};
use stele_core::checkpoint::Checkpoint;
use stele_core::note::Signer;
use stele_core::tile::{TileId, TreeBuilder};
use stele_core::{leaf_hash, Hash};

/// A log as the tests mean to store it: what has been committed so far,
/// and the key its checkpoints are signed with.
pub struct TestLog {
    name: String,
    skey: String,
    signer: Signer,
    builder: TreeBuilder,
    entries: Vec<NewEntry>,
    /// Every checkpoint committed, oldest first.
    checkpoints: Vec<(u64, String)>,
}

/// One batch, owned: what [`Batch`] borrows, and the tree after it.
#[derive(Clone)]
pub struct Parts {
    pub log: String,
    pub old: u64,
    pub new: u64,
    pub entries: Vec<NewEntry>,
    pub tiles: Vec<(TileId, Vec<u8>)>,
    pub checkpoint: String,
    pub root: Hash,
    builder: TreeBuilder,
}

impl Parts {
    pub fn batch(&self) -> Batch<'_> {
        Batch {
            log: &self.log,
            old_size: self.old,
            new_size: self.new,
            entries: &self.entries,
            tiles: &self.tiles,
            checkpoint: &self.checkpoint,
            root: self.root,
        }
    }
}

/// Entry `index` of a test log: a ~300-byte JSON leaf naming `tag` and the
/// index, its leaf hash, and a dedup key over both.
pub fn entry(index: u64, tag: &str) -> NewEntry {
    let leaf = format!(
        r#"{{"agency":"{tag}","attributes":{{"pad":"{}"}},"subject":"parcel-{index}","type":"land.transfer","v":1}}"#,
        "x".repeat(200)
    )
    .into_bytes();
    NewEntry {
        index,
        leaf_hash: leaf_hash(&leaf),
        dedup_key: Hash(
            Sha256::new()
                .chain_update(tag.as_bytes())
                .chain_update([0])
                .chain_update(index.to_be_bytes())
                .finalize()
                .into(),
        ),
        leaf: leaf.into(),
        ts_ms: 1_700_000_000_000 + index as i64,
        effect: Default::default(),
    }
}

impl TestLog {
    /// An empty log `name` with origin `origin` and a fresh signing key.
    pub fn new(name: &str, origin: &str) -> Self {
        let (signer, skey) = Signer::generate(origin).expect("a valid origin");
        TestLog {
            name: name.to_string(),
            skey,
            signer,
            builder: TreeBuilder::new(),
            entries: Vec::new(),
            checkpoints: Vec::new(),
        }
    }

    /// A log `name` signed with this one's key that holds `entries` (not
    /// committed anywhere): a stale or forked writer, or the same content
    /// in a second log.
    pub fn replay(&self, name: &str, entries: Vec<NewEntry>) -> Self {
        let mut builder = TreeBuilder::new();
        builder.append(&entries.iter().map(|e| e.leaf_hash).collect::<Vec<_>>());
        TestLog {
            name: name.to_string(),
            skey: self.skey.clone(),
            signer: Signer::from_skey(&self.skey).expect("its own key"),
            builder,
            entries,
            checkpoints: Vec::new(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn origin(&self) -> &str {
        self.signer.name()
    }

    /// The verifier key of the log's checkpoints.
    pub fn vkey(&self) -> String {
        self.signer.vkey()
    }

    /// Entries committed so far.
    pub fn size(&self) -> u64 {
        self.builder.size()
    }

    /// Every entry committed, in order.
    pub fn entries(&self) -> &[NewEntry] {
        &self.entries
    }

    /// Every checkpoint committed, oldest first, as `(size, note)`.
    pub fn checkpoints(&self) -> &[(u64, String)] {
        &self.checkpoints
    }

    /// The batch of the next `n` entries of `tag` ([`entry`]).
    pub fn prepare(&self, n: u64, tag: &str) -> Parts {
        let old = self.size();
        self.prepare_entries((old..old + n).map(|i| entry(i, tag)).collect())
    }

    /// The batch that appends `entries` (whose leaf hashes the tiles are
    /// built from; their indexes are the caller's business).
    pub fn prepare_entries(&self, entries: Vec<NewEntry>) -> Parts {
        let mut builder = self.builder.clone();
        let old = builder.size();
        let hashes: Vec<Hash> = entries.iter().map(|e| e.leaf_hash).collect();
        let tiles = builder.append(&hashes);
        let root = builder.root();
        let checkpoint = self
            .signer
            .sign_checkpoint(&Checkpoint::new(self.origin(), builder.size(), root))
            .expect("signing a checkpoint");
        Parts {
            log: self.name.clone(),
            old,
            new: builder.size(),
            entries,
            tiles,
            checkpoint,
            root,
            builder,
        }
    }

    /// Takes `parts` as committed: the log now ends where they end.
    pub fn accept(&mut self, parts: Parts) {
        assert_eq!(parts.old, self.size(), "parts prepared at another size");
        self.entries.extend(parts.entries);
        self.checkpoints.push((parts.new, parts.checkpoint));
        self.builder = parts.builder;
    }

    /// Prepares, commits and accepts the next `n` entries of `tag`.
    pub async fn commit(
        &mut self,
        storage: &dyn LogWriter,
        n: u64,
        tag: &str,
    ) -> Result<(), StorageError> {
        let parts = self.prepare(n, tag);
        storage.commit_batch(&parts.batch()).await?;
        self.accept(parts);
        Ok(())
    }
}
