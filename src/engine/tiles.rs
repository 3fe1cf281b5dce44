//! Reading hash tiles for proofs: work out which tiles a set of proofs
//! needs (a dry run of `stele_core`'s proof generation with a recording
//! `HashReader`), fetch them once (overlay → latest partial tiles → cache →
//! one storage round trip), then run the proofs again over the fetched
//! tiles, synchronously.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use rustc_hash::FxHashMap;
use stele_core::merkle::{prove_consistency, prove_inclusion, HashReader, NodeId};
use stele_core::tile::{node_location, tile_width, TileId, TileReader, TILE_HEIGHT, TILE_WIDTH};
use stele_core::{node_hash, Error as CoreError, Hash, HASH_SIZE};

use super::cache::{DiskWrite, Key, Kind, TileCache};
use super::disk_cache::TILE_BYTES;
use super::interior::{interior, Interior};
use crate::error::LogError;
use crate::storage::LogReader;

/// What the read paths know about a log at one moment: the latest signed
/// size and checkpoint and the partial hash tiles at that size. Replaced as a whole; readers keep the `Arc` they took.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    pub size: u64,
    pub checkpoint: Option<String>,
    /// `(level, index)` → contents of the partial tile at `size` (on a
    /// follower or a read node, read from storage with the checkpoint and
    /// checked against its root). Empty: reads go to storage.
    pub partials: HashMap<(u8, u64), Bytes>,
    /// Interiors of `partials`, computed on first use.
    pub partial_interiors: OnceLock<HashMap<(u8, u64), Interior>>,
    /// The partial entry bundle at `size` (bundle `size / 256`), when the
    /// writer knows its leaves; None: read it from storage.
    pub bundle: Option<Bytes>,
}

impl Snapshot {
    pub fn new(size: u64, checkpoint: Option<String>, partials: HashMap<(u8, u64), Bytes>) -> Self {
        Snapshot {
            size,
            checkpoint,
            partials,
            partial_interiors: OnceLock::new(),
            bundle: None,
        }
    }

    /// The same, with the partial entry bundle at `size`.
    pub fn with_bundle(mut self, bundle: Option<Bytes>) -> Self {
        self.bundle = bundle;
        self
    }

    fn partial_interior(&self, key: (u8, u64)) -> Option<&Interior> {
        self.partial_interiors
            .get_or_init(|| {
                self.partials
                    .iter()
                    .filter_map(|(&k, d)| interior(d).ok().map(|i| (k, i)))
                    .collect()
            })
            .get(&key)
    }
}

/// A proof to compute.
#[derive(Clone, Copy, Debug)]
pub(crate) enum ProofJob {
    Inclusion { index: u64, size: u64 },
    Consistency { from: u64, to: u64 },
}

fn run<R: HashReader + ?Sized>(job: ProofJob, r: &R) -> Result<Vec<Hash>, CoreError> {
    match job {
        ProofJob::Inclusion { index, size } => prove_inclusion(index, size, r),
        ProofJob::Consistency { from, to } => prove_consistency(from, to, r),
    }
}

/// The tile holding the level-`8L` descendants of `node`, and the range of
/// positions they occupy in it: `(tile level, tile index, start, end)`.
fn tile_span(node: NodeId) -> (u8, u64, u16, u16) {
    let (level, index, start, count) = node_location(node);
    (level, index, start, start + count)
}

/// Records the nodes a proof reads, answering with zeros (proof shapes do
/// not depend on hash values).
#[derive(Default)]
struct Recorder {
    wanted: RefCell<BTreeMap<(u8, u64), u16>>,
}

impl HashReader for Recorder {
    fn read_hashes(&self, nodes: &[NodeId]) -> Result<Vec<Hash>, CoreError> {
        let mut wanted = self.wanted.borrow_mut();
        for &n in nodes {
            let (level, index, _, end) = tile_span(n);
            let w = wanted.entry((level, index)).or_insert(0);
            *w = (*w).max(end);
        }
        Ok(vec![Hash::default(); nodes.len()])
    }
}

/// Computes perfect-subtree hashes from fetched tiles, remembering every
/// node it computed: the proofs of one batch share most of their nodes, so a
/// batch of 1,000 receipts costs about 2,000 hashes, not 1,000 × 255.
/// Only nodes entirely inside the tree are requested (the `HashReader`
/// contract), so every node is a perfect subtree whose level-`8L`
/// descendants sit in one tile.
struct MemoReader<'a> {
    tiles: &'a FetchedTiles,
    memo: RefCell<FxHashMap<NodeId, Hash>>,
}

impl MemoReader<'_> {
    fn node(&self, n: NodeId) -> Result<Hash, CoreError> {
        if let Some(h) = self.memo.borrow().get(&n) {
            return Ok(*h);
        }
        let r = n.level % TILE_HEIGHT;
        if r != 0 {
            let (level, index, start, _) = tile_span(n);
            if let Some(h) = self
                .tiles
                .interiors
                .get(&(level, index))
                .and_then(|i| i.get(r, usize::from(start) >> r))
            {
                return h;
            }
        }
        let h = if r == 0 {
            let (level, index, start, _) = tile_span(n);
            let off = usize::from(start) * HASH_SIZE;
            match self.tiles.tiles.get(&(level, index)) {
                Some(d) if d.len() >= off + HASH_SIZE => {
                    Hash::from_slice(&d[off..off + HASH_SIZE])?
                }
                _ => {
                    return Err(CoreError::Read(format!(
                        "tile {level}/{index} was not fetched or is short"
                    )))
                }
            }
        } else {
            let l = self.node(NodeId::new(n.level - 1, n.index * 2))?;
            let r = self.node(NodeId::new(n.level - 1, n.index * 2 + 1))?;
            node_hash(&l, &r)
        };
        self.memo.borrow_mut().insert(n, h);
        Ok(h)
    }
}

impl HashReader for MemoReader<'_> {
    fn read_hashes(&self, nodes: &[NodeId]) -> Result<Vec<Hash>, CoreError> {
        nodes.iter().map(|&n| self.node(n)).collect()
    }
}

/// Tiles fetched ahead of a computation.
#[derive(Default)]
pub(crate) struct FetchedTiles {
    tiles: FxHashMap<(u8, u64), Bytes>,
    /// Interiors of tiles among `tiles` (see [`interior`]).
    interiors: FxHashMap<(u8, u64), Interior>,
}

impl TileReader for FetchedTiles {
    type Data = Bytes;
    fn read_tiles(&self, tiles: &[TileId]) -> Result<Vec<Bytes>, CoreError> {
        tiles
            .iter()
            .map(|t| {
                let need = usize::from(t.width) * HASH_SIZE;
                match self.tiles.get(&(t.level, t.index)) {
                    Some(d) if d.len() >= need => Ok(d.slice(..need)),
                    _ => Err(CoreError::Read(format!(
                        "tile {}/{} (width {}) was not fetched",
                        t.level, t.index, t.width
                    ))),
                }
            })
            .collect()
    }
}

/// Where tiles come from for one log.
pub(crate) struct TileSource<'a> {
    log: &'a Arc<str>,
    storage: &'a dyn LogReader,
    cache: &'a TileCache,
    snapshot: &'a Snapshot,
    /// Tiles just written by the sequencer (not yet in the snapshot).
    overlay: Option<&'a HashMap<(u8, u64), Bytes>>,
    /// Full tiles whose interior this source computed, for the disk tier
    /// (written, off the async workers, before a proof returns).
    to_disk: Mutex<Vec<DiskWrite>>,
}

impl<'a> TileSource<'a> {
    pub fn new(
        log: &'a Arc<str>,
        storage: &'a dyn LogReader,
        cache: &'a TileCache,
        snapshot: &'a Snapshot,
        overlay: Option<&'a HashMap<(u8, u64), Bytes>>,
    ) -> Self {
        TileSource {
            log,
            storage,
            cache,
            snapshot,
            overlay,
            to_disk: Mutex::new(Vec::new()),
        }
    }

    fn hash_key(&self, level: u8, index: u64) -> Key {
        Key {
            log: self.log.clone(),
            kind: Kind::Hash,
            level,
            index,
        }
    }

    fn interior_key(&self, level: u8, index: u64) -> Key {
        Key {
            kind: Kind::Interior,
            ..self.hash_key(level, index)
        }
    }

    /// Fetches hash tiles, each at least `width` hashes wide. Full tiles read
    /// from storage are cached. A tile that storage lacks, or has narrower
    /// than needed, is an internal error (the caller only asks for tiles
    /// inside a tree it holds a checkpoint for). With `interiors` (proofs),
    /// a full tile in memory without its interior is looked for in the disk
    /// tier, which holds both; without (serving or publishing a tile's
    /// bytes), a tile in memory is used as it is, with no trip to a
    /// blocking thread.
    pub async fn fetch(
        &self,
        wanted: &BTreeMap<(u8, u64), u16>,
        interiors: bool,
    ) -> Result<FetchedTiles, LogError> {
        let mut out = FetchedTiles::default();
        let mut missing = Vec::new();
        // Full tiles (or their interiors) to look for in the disk tier.
        let mut on_disk = Vec::new();
        let disk = self.cache.has_disk(self.log);
        for (&(level, index), &width) in wanted {
            let need = usize::from(width) * HASH_SIZE;
            let local = self
                .overlay
                .and_then(|o| o.get(&(level, index)))
                .or_else(|| self.snapshot.partials.get(&(level, index)))
                .filter(|d| d.len() >= need)
                .cloned()
                .map(|d| (d, None))
                .or_else(|| self.cache.hash_tile(&self.hash_key(level, index)));
            let full = tile_width(level, index, self.snapshot.size) == TILE_WIDTH as u16;
            match local {
                Some((d, interior)) => {
                    let cached = d.len() == TILE_BYTES;
                    out.tiles.insert((level, index), d);
                    match interior {
                        Some(i) => {
                            out.interiors.insert((level, index), Interior::full(i));
                        }
                        None if cached && disk && interiors => on_disk.push((level, index)),
                        None => {}
                    }
                }
                None if full && disk => on_disk.push((level, index)),
                None => missing.push((level, index)),
            }
        }
        if !on_disk.is_empty() {
            let got = self
                .cache
                .read_disk(self.log, on_disk.clone(), interiors)
                .await;
            for (key, hit) in on_disk.into_iter().zip(got) {
                match hit {
                    Some((tile, interior)) => {
                        out.tiles.insert(key, tile);
                        if let Some(i) = interior {
                            out.interiors.insert(key, Interior::full(i));
                        }
                    }
                    // The tile is here (its interior is computed later).
                    None if out.tiles.contains_key(&key) => {}
                    None => missing.push(key),
                }
            }
        }
        if !missing.is_empty() {
            let got = self.storage.read_tiles(self.log, &missing).await?;
            if got.len() != missing.len() {
                return Err(LogError::bug(format!(
                    "storage returned {} tiles for {}",
                    got.len(),
                    missing.len()
                )));
            }
            for ((level, index), data) in missing.into_iter().zip(got) {
                let width = wanted[&(level, index)];
                let data = match data {
                    Some(d)
                        if d.len() >= usize::from(width) * HASH_SIZE
                            && d.len() / HASH_SIZE * HASH_SIZE == d.len() =>
                    {
                        Bytes::from(d)
                    }
                    Some(d) => {
                        return Err(LogError::bug(format!(
                            "stored tile {level}/{index} has {} bytes, need {width} hashes",
                            d.len()
                        )))
                    }
                    None => {
                        return Err(LogError::bug(format!(
                            "stored tile {level}/{index} is missing"
                        )))
                    }
                };
                if data.len() == TILE_WIDTH as usize * HASH_SIZE {
                    // With its interior, which also puts it in the disk tier
                    // (and in memory only for proofs: a served tile's
                    // memory goes to more tiles).
                    self.cache.insert(self.hash_key(level, index), data.clone());
                    let i = self.cache_interior(level, index, &data, interiors)?;
                    if interiors {
                        out.interiors.insert((level, index), i);
                    }
                }
                out.tiles.insert((level, index), data);
            }
        }
        Ok(out)
    }

    /// Computes the interior of full tile `data` and caches it (in memory
    /// if `in_memory`, and, with the tile, in the disk tier once the
    /// request is done).
    fn cache_interior(
        &self,
        level: u8,
        index: u64,
        data: &Bytes,
        in_memory: bool,
    ) -> Result<Interior, LogError> {
        let i = interior(data).map_err(proof_error)?;
        if in_memory {
            self.cache
                .insert_interior(self.interior_key(level, index), i.data.clone());
        }
        self.to_disk.lock().expect("to_disk lock").push(DiskWrite {
            level,
            index,
            tile: data.clone(),
            interior: i.data.clone(),
        });
        Ok(i)
    }

    /// Writes what this source put in memory to the disk tier too.
    async fn flush_to_disk(&self) {
        let writes = std::mem::take(&mut *self.to_disk.lock().expect("to_disk lock"));
        self.cache.write_disk(self.log, writes).await;
    }

    /// Adds the interiors of the tiles in `fetched` that lack one: for full
    /// tiles from the cache (computed and cached on a miss), for partial
    /// tiles from the snapshot when it holds the same tile at the same width.
    fn add_interiors(&self, fetched: &mut FetchedTiles) -> Result<(), LogError> {
        let full = TILE_WIDTH as usize * HASH_SIZE;
        for (&(level, index), data) in &fetched.tiles {
            if fetched.interiors.contains_key(&(level, index)) {
                continue;
            }
            let inner = if data.len() == full {
                let key = self.interior_key(level, index);
                match self.cache.get(&key) {
                    Some(d) => Interior::full(d),
                    None => self.cache_interior(level, index, data, true)?,
                }
            } else {
                match self.snapshot.partial_interior((level, index)) {
                    Some(i) if i.width * HASH_SIZE == data.len() => i.clone(),
                    _ => continue,
                }
            };
            fetched.interiors.insert((level, index), inner);
        }
        Ok(())
    }

    /// Computes proofs, fetching every tile they need at once.
    pub async fn prove(&self, jobs: &[ProofJob]) -> Result<Vec<Vec<Hash>>, LogError> {
        Ok(self.read_and_prove(&[], jobs).await?.1)
    }

    /// The leaf hash at `index` and its inclusion proof in the tree of
    /// `size` (`index < size`), with one fetch for both.
    pub async fn leaf_and_inclusion(
        &self,
        index: u64,
        size: u64,
    ) -> Result<(Hash, Vec<Hash>), LogError> {
        let (leaf, mut proofs) = self
            .read_and_prove(
                &[NodeId::new(0, index)],
                &[ProofJob::Inclusion { index, size }],
            )
            .await?;
        Ok((leaf[0], proofs.remove(0)))
    }

    /// The hashes of `nodes` (each entirely inside the tree) and the proofs
    /// of `jobs`, from one fetch of every tile they read.
    async fn read_and_prove(
        &self,
        nodes: &[NodeId],
        jobs: &[ProofJob],
    ) -> Result<(Vec<Hash>, Vec<Vec<Hash>>), LogError> {
        let recorder = Recorder::default();
        recorder.read_hashes(nodes).map_err(proof_error)?;
        for job in jobs {
            run(*job, &recorder).map_err(proof_error)?;
        }
        let mut fetched = self.fetch(&recorder.wanted.into_inner(), true).await?;
        self.add_interiors(&mut fetched)?;
        self.flush_to_disk().await;
        let reader = MemoReader {
            tiles: &fetched,
            memo: RefCell::default(),
        };
        let hashes = reader.read_hashes(nodes).map_err(proof_error)?;
        let proofs = jobs
            .iter()
            .map(|job| run(*job, &reader).map_err(proof_error))
            .collect::<Result<_, _>>()?;
        Ok((hashes, proofs))
    }

    /// One hash tile at exactly `width`, or None if it does not exist.
    pub async fn hash_tile(&self, level: u8, index: u64, width: u16) -> Result<Bytes, LogError> {
        let mut wanted = BTreeMap::new();
        wanted.insert((level, index), width);
        let fetched = self.fetch(&wanted, false).await?;
        self.flush_to_disk().await;
        let t = TileId::new(level, index, width);
        Ok(fetched.read_tiles(&[t]).map_err(proof_error)?.remove(0))
    }
}

fn proof_error(e: CoreError) -> LogError {
    match e {
        CoreError::InvalidRange(m) => LogError::invalid("tree_size", m),
        other => LogError::internal(other),
    }
}

#[cfg(test)]
mod tests {
    use stele_core::tile::{partial_tiles, TileHashReader, TreeBuilder};

    use super::*;

    /// The memoizing reader gives the same proofs as the core's
    /// `TileHashReader` over the same tiles, for every index and many sizes.
    #[test]
    fn memo_reader_agrees_with_the_core_tile_reader() {
        let leaves: Vec<Hash> = (0u32..700)
            .map(|i| stele_core::leaf_hash(&i.to_be_bytes()))
            .collect();
        let mut b = TreeBuilder::new();
        let mut fetched = FetchedTiles::default();
        for chunk in leaves.chunks(97) {
            for (id, data) in b.append(chunk) {
                fetched
                    .tiles
                    .insert((id.level, id.index), Bytes::from(data));
            }
        }
        for size in [1u64, 2, 3, 255, 256, 257, 511, 512, 513, 600, 700] {
            let core = TileHashReader::new(size, &fetched);
            let memo = MemoReader {
                tiles: &fetched,
                memo: RefCell::default(),
            };
            // Interiors of every tile, full or partial (cut to this size).
            let mut expanded = FetchedTiles {
                tiles: fetched.tiles.clone(),
                interiors: FxHashMap::default(),
            };
            for id in partial_tiles(size) {
                let d = fetched.tiles[&(id.level, id.index)].slice(..usize::from(id.width) * 32);
                expanded.tiles.insert((id.level, id.index), d);
            }
            for (&k, d) in &expanded.tiles {
                expanded.interiors.insert(k, interior(d).unwrap());
            }
            let fast = MemoReader {
                tiles: &expanded,
                memo: RefCell::default(),
            };
            for index in (0..size).step_by(7).chain([size - 1]) {
                let job = ProofJob::Inclusion { index, size };
                assert_eq!(
                    run(job, &memo).unwrap(),
                    run(job, &core).unwrap(),
                    "inclusion {index} in {size}"
                );
                assert_eq!(
                    run(job, &fast).unwrap(),
                    run(job, &core).unwrap(),
                    "inclusion {index} in {size} with tile interiors"
                );
                let rec = Recorder::default();
                run(job, &rec).unwrap();
                for ((level, tile), width) in rec.wanted.into_inner() {
                    assert!(u64::from(width) * 32 <= fetched.tiles[&(level, tile)].len() as u64);
                }
            }
            for from in (0..=size).step_by(13) {
                let job = ProofJob::Consistency { from, to: size };
                assert_eq!(
                    run(job, &memo).unwrap(),
                    run(job, &core).unwrap(),
                    "consistency {from}..{size}"
                );
                assert_eq!(
                    run(job, &fast).unwrap(),
                    run(job, &core).unwrap(),
                    "consistency {from}..{size} with tile interiors"
                );
            }
        }
    }
}
