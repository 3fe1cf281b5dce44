//! Where the checker reads a log: [`LogView`], and its three
//! implementations — the public HTTP API ([`HttpView`], through the CLI's
//! own [`LogClient`]), an [`Engine`]'s read methods ([`EngineView`]), and a
//! storage backend with proofs computed by the core ([`StorageView`]).

use std::sync::Arc;

use anyhow::{anyhow, bail, ensure, Context, Result};
use async_trait::async_trait;
use stele::cli::client::LogClient;
use stele::engine::{Engine, Locator};
use stele::storage::LogReader;
use stele::wire;
use stele_core::merkle::{prove_consistency, prove_inclusion};
use stele_core::tile::{
    encode_bundle, TileHashReader, TileMap, TilePath, TileReader, TileWants, TILE_WIDTH,
};
use stele_core::Error as CoreError;

/// One log, as the checker sees it. Answers are unverified: checking them
/// is the checker's job.
#[async_trait]
pub trait LogView: Send + Sync {
    /// Where the view reads, for messages.
    fn describe(&self) -> String;

    /// The latest checkpoint note.
    async fn checkpoint(&self) -> Result<String>;

    /// A hash tile or entry bundle at exactly the width asked.
    async fn tile(&self, path: TilePath) -> Result<Vec<u8>>;

    /// A consistency proof from `from` to `to`.
    async fn consistency(&self, from: u64, to: u64) -> Result<wire::Consistency>;

    /// An inclusion proof of entry `index` in the tree of `tree_size`.
    async fn inclusion(&self, index: u64, tree_size: u64) -> Result<wire::Inclusion>;

    /// Entry `index`.
    async fn entry(&self, index: u64) -> Result<wire::Entry>;

    /// Every checkpoint the log stored, oldest first, as `(tree_size,
    /// note)`; `None` when this view cannot see them (the public API serves
    /// only the latest).
    async fn stored_checkpoints(&self) -> Result<Option<Vec<(u64, String)>>>;
}

/// The public HTTP API of one log, read with [`LogClient`] (the client
/// `stele submit`, `verify --online` and `monitor` use). Optionally with a
/// reader of the log's storage, for the checkpoints the API does not serve.
#[derive(Clone)]
pub struct HttpView {
    client: LogClient,
    log: String,
    stored: Option<Arc<dyn LogReader>>,
}

impl HttpView {
    /// The log `log` served at `base_url` (`http://127.0.0.1:PORT`).
    pub fn new(base_url: &str, log: &str) -> Result<Self> {
        let url = format!("{}/logs/{log}", base_url.trim_end_matches('/'));
        Ok(HttpView {
            client: LogClient::new(&url)?,
            log: log.to_string(),
            stored: None,
        })
    }

    /// [`HttpView::new`] over TLS, trusting `tls.ca_file` too.
    pub fn with_tls(base_url: &str, log: &str, tls: &stele::cli::client::TlsArgs) -> Result<Self> {
        let url = format!("{}/logs/{log}", base_url.trim_end_matches('/'));
        Ok(HttpView {
            client: LogClient::with_tls(&url, tls)?,
            log: log.to_string(),
            stored: None,
        })
    }

    /// Also reads every stored checkpoint of the log from `storage`.
    pub fn with_storage(mut self, storage: Arc<dyn LogReader>) -> Self {
        self.stored = Some(storage);
        self
    }

    /// The same log (and storage) served by another process at `base_url`.
    pub fn at(&self, base_url: &str) -> Result<Self> {
        Ok(HttpView {
            stored: self.stored.clone(),
            ..HttpView::new(base_url, &self.log)?
        })
    }

    /// The log's base URL (`http://127.0.0.1:PORT/logs/NAME`).
    pub fn log_url(&self) -> &str {
        self.client.base()
    }
}

#[async_trait]
impl LogView for HttpView {
    fn describe(&self) -> String {
        self.client.base().to_string()
    }
    async fn checkpoint(&self) -> Result<String> {
        self.client.checkpoint().await
    }
    async fn tile(&self, path: TilePath) -> Result<Vec<u8>> {
        Ok(self.client.tile(path).await?)
    }
    async fn consistency(&self, from: u64, to: u64) -> Result<wire::Consistency> {
        self.client.consistency_answer(from, to).await
    }
    async fn inclusion(&self, index: u64, tree_size: u64) -> Result<wire::Inclusion> {
        self.client.inclusion(index, tree_size).await
    }
    async fn entry(&self, index: u64) -> Result<wire::Entry> {
        self.client.entry(index).await
    }
    async fn stored_checkpoints(&self) -> Result<Option<Vec<(u64, String)>>> {
        match &self.stored {
            None => Ok(None),
            Some(storage) => Ok(Some(storage.checkpoints(&self.log).await?)),
        }
    }
}

/// One log of an [`Engine`], read through its public read methods (what
/// the HTTP API serves), and its stored checkpoints from its storage.
#[derive(Clone)]
pub struct EngineView {
    engine: Arc<Engine>,
    log: String,
}

impl EngineView {
    pub fn new(engine: Arc<Engine>, log: &str) -> Self {
        EngineView {
            engine,
            log: log.to_string(),
        }
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }
}

#[async_trait]
impl LogView for EngineView {
    fn describe(&self) -> String {
        format!("the engine's log {}", self.log)
    }
    async fn checkpoint(&self) -> Result<String> {
        Ok(self.engine.checkpoint(&self.log).await?)
    }
    async fn tile(&self, path: TilePath) -> Result<Vec<u8>> {
        Ok(self.engine.tile(&self.log, path).await?.data.to_vec())
    }
    async fn consistency(&self, from: u64, to: u64) -> Result<wire::Consistency> {
        let p = self
            .engine
            .consistency_proof(&self.log, from, Some(to))
            .await?;
        Ok(wire::Consistency {
            from: p.from,
            to: p.to,
            consistency_proof: p.proof,
            checkpoint: p.checkpoint,
        })
    }
    async fn inclusion(&self, index: u64, tree_size: u64) -> Result<wire::Inclusion> {
        let p = self
            .engine
            .inclusion_proof(&self.log, Locator::Index(index), Some(tree_size))
            .await?;
        Ok(wire::Inclusion {
            index: p.index,
            tree_size: p.tree_size,
            leaf_hash: p.leaf_hash,
            inclusion_proof: p.proof,
            checkpoint: p.checkpoint,
        })
    }
    async fn entry(&self, index: u64) -> Result<wire::Entry> {
        let e = self.engine.entry(&self.log, index).await?;
        Ok(wire::Entry {
            index: e.index,
            leaf: e.leaf,
            leaf_hash: e.leaf_hash,
        })
    }
    async fn stored_checkpoints(&self) -> Result<Option<Vec<(u64, String)>>> {
        Ok(Some(self.engine.storage().checkpoints(&self.log).await?))
    }
}

/// One log as a storage backend holds it: tiles from `read_tiles` (cut to
/// the width asked), bundles from `read_entries`, and proofs computed by
/// the core from the stored tiles — no engine involved.
#[derive(Clone)]
pub struct StorageView {
    storage: Arc<dyn LogReader>,
    log: String,
}

impl StorageView {
    pub fn new(storage: Arc<dyn LogReader>, log: &str) -> Self {
        StorageView {
            storage,
            log: log.to_string(),
        }
    }

    /// Proves with the core over the stored hash tiles of a tree of `size`
    /// (a first pass learns which tiles the proof needs — each proof reads
    /// once — then they are read from storage and the proof is made
    /// again); with the checkpoint stored for `size`, if any.
    async fn prove<T>(
        &self,
        size: u64,
        prove: impl Fn(&TileHashReader<'_, dyn TileReader<Data = Vec<u8>>>) -> Result<T, CoreError>,
    ) -> Result<(T, Option<String>)> {
        let checkpoint = self.storage.checkpoint_at(&self.log, size).await?;
        Ok((self.prove_only(size, prove).await?, checkpoint))
    }

    async fn prove_only<T>(
        &self,
        size: u64,
        prove: impl Fn(&TileHashReader<'_, dyn TileReader<Data = Vec<u8>>>) -> Result<T, CoreError>,
    ) -> Result<T> {
        let wanted = TileWants::default();
        let first = match prove(&TileHashReader::new(
            size,
            &wanted as &dyn TileReader<Data = Vec<u8>>,
        )) {
            Ok(done) => return Ok(done),
            Err(e) => e,
        };
        let ids = wanted.into_wanted();
        if ids.is_empty() {
            bail!("{first}");
        }
        let keys: Vec<(u8, u64)> = ids.iter().map(|t| (t.level, t.index)).collect();
        let data = self.storage.read_tiles(&self.log, &keys).await?;
        let mut stored = TileMap::default();
        for (id, d) in ids.iter().zip(data) {
            let d = d.ok_or_else(|| anyhow!("{} is not stored", TilePath::Hash(*id)))?;
            stored.insert(*id, d);
        }
        prove(&TileHashReader::new(
            size,
            &stored as &dyn TileReader<Data = Vec<u8>>,
        ))
        .map_err(|e| anyhow!("proving from the stored tiles: {e}"))
    }
}

#[async_trait]
impl LogView for StorageView {
    fn describe(&self) -> String {
        format!("the stored log {}", self.log)
    }
    async fn checkpoint(&self) -> Result<String> {
        let state = self
            .storage
            .log_state(&self.log)
            .await?
            .ok_or_else(|| anyhow!("log {} is not stored", self.log))?;
        state
            .checkpoint
            .ok_or_else(|| anyhow!("log {} has no checkpoint yet", self.log))
    }
    async fn tile(&self, path: TilePath) -> Result<Vec<u8>> {
        match path {
            TilePath::Hash(id) => {
                let stored = self
                    .storage
                    .read_tiles(&self.log, &[(id.level, id.index)])
                    .await?
                    .pop()
                    .flatten()
                    .ok_or_else(|| anyhow!("{path} is not stored"))?;
                let want = usize::from(id.width) * stele_core::HASH_SIZE;
                ensure!(
                    stored.len() >= want,
                    "{path}: the stored tile holds {} bytes",
                    stored.len()
                );
                Ok(stored[..want].to_vec())
            }
            TilePath::Entries(id) => {
                let start = id.index * TILE_WIDTH;
                let end = start + u64::from(id.width);
                let entries = self.storage.read_entries(&self.log, start, end).await?;
                ensure!(
                    entries.iter().map(|e| e.index).eq(start..end),
                    "{path}: entries {start}..{end} are not all stored"
                );
                encode_bundle(entries.iter().map(|e| e.leaf.as_slice()))
                    .map_err(|e| anyhow!("{path}: {e}"))
            }
        }
    }
    async fn consistency(&self, from: u64, to: u64) -> Result<wire::Consistency> {
        let (consistency_proof, checkpoint) = self
            .prove(to, |r| prove_consistency(from, to, r))
            .await
            .with_context(|| format!("consistency {from} -> {to}"))?;
        Ok(wire::Consistency {
            from,
            to,
            consistency_proof,
            checkpoint,
        })
    }
    async fn inclusion(&self, index: u64, tree_size: u64) -> Result<wire::Inclusion> {
        let leaf_hash = self.entry(index).await?.leaf_hash;
        let (inclusion_proof, checkpoint) = self
            .prove(tree_size, |r| prove_inclusion(index, tree_size, r))
            .await
            .with_context(|| format!("inclusion of {index} in {tree_size}"))?;
        Ok(wire::Inclusion {
            index,
            tree_size,
            leaf_hash,
            inclusion_proof,
            checkpoint,
        })
    }
    async fn entry(&self, index: u64) -> Result<wire::Entry> {
        let stored = self
            .storage
            .read_entries(&self.log, index, index + 1)
            .await?
            .pop()
            .filter(|e| e.index == index)
            .ok_or_else(|| anyhow!("entry {index} is not stored"))?;
        Ok(wire::Entry {
            index,
            leaf: String::from_utf8(stored.leaf)
                .map_err(|_| anyhow!("entry {index}: the stored leaf is not UTF-8"))?,
            leaf_hash: stored.leaf_hash,
        })
    }
    async fn stored_checkpoints(&self) -> Result<Option<Vec<(u64, String)>>> {
        Ok(Some(self.storage.checkpoints(&self.log).await?))
    }
}

/// The log's entry in `GET /logs` of the server at `base_url`.
pub async fn published_log(base_url: &str, log: &str) -> Result<wire::LogInfo> {
    let url = format!("{}/logs", base_url.trim_end_matches('/'));
    let answer: wire::Logs = reqwest::get(&url)
        .await
        .with_context(|| format!("GET {url}"))?
        .error_for_status()?
        .json()
        .await
        .with_context(|| format!("GET {url}: not the expected JSON"))?;
    answer
        .logs
        .into_iter()
        .find(|l| l.name == log)
        .ok_or_else(|| anyhow!("GET {url} does not list log {log:?}"))
}
