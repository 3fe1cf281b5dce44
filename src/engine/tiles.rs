//! Reading hash tiles for proofs: work out which tiles a set of proofs
//! needs (a dry run over zero-filled tiles), fetch them once (overlay →
//! latest partial tiles → cache → one storage round trip), then compute the
//! proofs synchronously with `stele_core`.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use stele_core::merkle::{prove_consistency, prove_inclusion};
use stele_core::tile::{TileHashReader, TileId, TileReader, TILE_WIDTH};
use stele_core::{Error as CoreError, Hash, HASH_SIZE};

use crate::engine::cache::{Key, Kind, TileCache};
use crate::engine::{storage_error, LogError};
use crate::storage::Storage;

/// What the read paths know about a log at one moment: the latest signed
/// size and checkpoint and, on the writer, the partial hash tiles at that
/// size. Replaced as a whole; readers keep the `Arc` they took.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    pub size: u64,
    pub checkpoint: Option<String>,
    /// `(level, index)` → contents of the partial tile at `size`. Empty on a
    /// process that is not the writer (reads then go to storage).
    pub partials: HashMap<(u8, u64), Bytes>,
}

/// A proof to compute.
#[derive(Clone, Copy, Debug)]
pub(crate) enum ProofJob {
    Inclusion { index: u64, size: u64 },
    Consistency { from: u64, to: u64 },
}

fn run(job: ProofJob, r: &impl TileReader) -> Result<Vec<Hash>, CoreError> {
    match job {
        ProofJob::Inclusion { index, size } => {
            prove_inclusion(index, size, &TileHashReader::new(size, r))
        }
        ProofJob::Consistency { from, to } => {
            prove_consistency(from, to, &TileHashReader::new(to, r))
        }
    }
}

/// Records the tiles a proof reads, answering with zeros.
#[derive(Default)]
struct Recorder {
    wanted: RefCell<BTreeMap<(u8, u64), u16>>,
}

impl TileReader for Recorder {
    type Data = Vec<u8>;
    fn read_tiles(&self, tiles: &[TileId]) -> Result<Vec<Vec<u8>>, CoreError> {
        let mut wanted = self.wanted.borrow_mut();
        Ok(tiles
            .iter()
            .map(|t| {
                let w = wanted.entry((t.level, t.index)).or_insert(0);
                *w = (*w).max(t.width);
                vec![0u8; usize::from(t.width) * HASH_SIZE]
            })
            .collect())
    }
}

/// Tiles fetched ahead of a computation.
#[derive(Default)]
pub(crate) struct FetchedTiles {
    tiles: HashMap<(u8, u64), Bytes>,
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
    pub log: &'a Arc<str>,
    pub storage: &'a dyn Storage,
    pub cache: &'a TileCache,
    pub snapshot: &'a Snapshot,
    /// Tiles just written by the sequencer (not yet in the snapshot).
    pub overlay: Option<&'a HashMap<(u8, u64), Bytes>>,
}

impl TileSource<'_> {
    fn hash_key(&self, level: u8, index: u64) -> Key {
        Key {
            log: self.log.clone(),
            kind: Kind::Hash,
            level,
            index,
        }
    }

    /// Fetches hash tiles, each at least `width` hashes wide. Full tiles read
    /// from storage are cached. A tile that storage lacks, or has narrower
    /// than needed, is an internal error (the caller only asks for tiles
    /// inside a tree it holds a checkpoint for).
    pub async fn fetch(&self, wanted: &BTreeMap<(u8, u64), u16>) -> Result<FetchedTiles, LogError> {
        let mut out = FetchedTiles::default();
        let mut missing = Vec::new();
        for (&(level, index), &width) in wanted {
            let need = usize::from(width) * HASH_SIZE;
            let local = self
                .overlay
                .and_then(|o| o.get(&(level, index)))
                .or_else(|| self.snapshot.partials.get(&(level, index)))
                .filter(|d| d.len() >= need)
                .cloned()
                .or_else(|| self.cache.get(&self.hash_key(level, index)));
            match local {
                Some(d) => {
                    out.tiles.insert((level, index), d);
                }
                None => missing.push((level, index)),
            }
        }
        if !missing.is_empty() {
            let got = self
                .storage
                .read_tiles(self.log, &missing)
                .await
                .map_err(storage_error)?;
            if got.len() != missing.len() {
                return Err(LogError::Internal(anyhow::anyhow!(
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
                            && d.len() % HASH_SIZE == 0 =>
                    {
                        Bytes::from(d)
                    }
                    Some(d) => {
                        return Err(LogError::Internal(anyhow::anyhow!(
                            "stored tile {level}/{index} has {} bytes, need {width} hashes",
                            d.len()
                        )))
                    }
                    None => {
                        return Err(LogError::Internal(anyhow::anyhow!(
                            "stored tile {level}/{index} is missing"
                        )))
                    }
                };
                if data.len() == TILE_WIDTH as usize * HASH_SIZE {
                    self.cache.insert(self.hash_key(level, index), data.clone());
                }
                out.tiles.insert((level, index), data);
            }
        }
        Ok(out)
    }

    /// Computes proofs, fetching every tile they need at once.
    pub async fn prove(&self, jobs: &[ProofJob]) -> Result<Vec<Vec<Hash>>, LogError> {
        let recorder = Recorder::default();
        for job in jobs {
            run(*job, &recorder).map_err(proof_error)?;
        }
        let fetched = self.fetch(&recorder.wanted.into_inner()).await?;
        jobs.iter()
            .map(|job| run(*job, &fetched).map_err(proof_error))
            .collect()
    }

    /// One hash tile at exactly `width`, or None if it does not exist.
    pub async fn hash_tile(&self, level: u8, index: u64, width: u16) -> Result<Bytes, LogError> {
        let mut wanted = BTreeMap::new();
        wanted.insert((level, index), width);
        let fetched = self.fetch(&wanted).await?;
        let t = TileId::new(level, index, width);
        Ok(fetched.read_tiles(&[t]).map_err(proof_error)?.remove(0))
    }
}

fn proof_error(e: CoreError) -> LogError {
    match e {
        CoreError::InvalidRange(m) => LogError::invalid("tree_size", m),
        other => LogError::Internal(anyhow::Error::new(other)),
    }
}
