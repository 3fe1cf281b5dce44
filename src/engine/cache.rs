//! The tile cache: full hash tiles and full entry bundles of every log,
//! bounded by bytes. Only immutable data goes in, so an entry is never
//! stale; partial tiles come from the sequencer's latest state or storage.
//! Behind the in-memory tier, an optional [`DiskTier`] keeps full hash
//! tiles with their interiors outside the process's memory.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use super::disk_cache::{DiskTier, Lookup};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Hash,
    Entries,
    /// The interior nodes (levels 1 to 7 above the tile's own level) of a
    /// full hash tile, as computed by `tiles::interior`.
    Interior,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub log: Arc<str>,
    pub kind: Kind,
    pub level: u8,
    pub index: u64,
}

#[derive(Clone)]
struct ByBytes;

impl quick_cache::Weighter<Key, Bytes> for ByBytes {
    fn weight(&self, key: &Key, val: &Bytes) -> u64 {
        // Data plus a rough per-item overhead (key, bookkeeping).
        (val.len() + key.log.len() + 64) as u64
    }
}

/// A full hash tile and its interior, as the disk tier keeps them.
pub(crate) struct DiskWrite {
    pub level: u8,
    pub index: u64,
    pub tile: Bytes,
    pub interior: Bytes,
}

pub(crate) struct TileCache {
    inner: quick_cache::sync::Cache<Key, Bytes, ByBytes>,
    /// Written only on tokio's blocking threads ([`TileCache::write_disk`]),
    /// and read there too unless the slot is in the page cache
    /// ([`TileCache::read_disk`]): a `pread` is a disk read once the page
    /// cache is cold, and no async worker ever waits for one.
    disk: Option<Arc<DiskTier>>,
    /// Log name → the number the disk tier knows it by.
    log_numbers: HashMap<Arc<str>, u16>,
}

impl TileCache {
    /// `bytes` of memory; `disk`, if any, for the logs named in `logs`.
    pub(crate) fn new(bytes: u64, disk: Option<DiskTier>, logs: &[Arc<str>]) -> Self {
        let items = (bytes / 8192).clamp(16, 1 << 20) as usize;
        TileCache {
            inner: quick_cache::sync::Cache::with_weighter(items, bytes, ByBytes),
            disk: disk.map(Arc::new),
            log_numbers: logs
                .iter()
                .zip(0u16..)
                .map(|(l, n)| (l.clone(), n))
                .collect(),
        }
    }

    /// From memory.
    pub(crate) fn get(&self, key: &Key) -> Option<Bytes> {
        self.inner.get(key)
    }

    /// The full hash tile `key` (of kind `Hash`) from memory, with its
    /// interior if that is in memory too.
    pub(crate) fn hash_tile(&self, key: &Key) -> Option<(Bytes, Option<Bytes>)> {
        debug_assert_eq!(key.kind, Kind::Hash);
        let tile = self.inner.get(key)?;
        let interior = self.inner.get(&Key {
            kind: Kind::Interior,
            ..key.clone()
        });
        Some((tile, interior))
    }

    /// Whether there is a disk tier that could hold this log's tiles.
    pub(crate) fn has_disk(&self, log: &Arc<str>) -> bool {
        self.disk.is_some() && self.log_numbers.contains_key(log)
    }

    /// Full hash tiles `(level, index)` of `log` from the disk tier, with
    /// their interiors if `interiors` (proofs; serving a tile reads only
    /// the tile): what is in the page cache is read here, without waiting
    /// (the usual case: the file lives there), the rest in one trip to a
    /// blocking thread; hits are put back into memory, as read.
    pub(crate) async fn read_disk(
        &self,
        log: &Arc<str>,
        tiles: Vec<(u8, u64)>,
        interiors: bool,
    ) -> Vec<Option<(Bytes, Option<Bytes>)>> {
        let (Some(disk), Some(&n)) = (self.disk.clone(), self.log_numbers.get(log)) else {
            return vec![None; tiles.len()];
        };
        let mut got = Vec::with_capacity(tiles.len());
        let mut later = Vec::new();
        for (at, &(level, index)) in tiles.iter().enumerate() {
            got.push(match disk.try_get(n, level, index, interiors) {
                Lookup::Hit(t, i) => Some((t, i)),
                Lookup::Miss => None,
                Lookup::WouldBlock => {
                    later.push((at, level, index));
                    None
                }
            });
        }
        if !later.is_empty() {
            let read = tokio::task::spawn_blocking(move || {
                later
                    .into_iter()
                    .map(|(at, level, index)| {
                        (at, disk.lookup(n, level, index, interiors, false).hit())
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_else(|e| {
                tracing::warn!("tile disk cache: read task failed: {e}");
                Vec::new()
            });
            for (at, hit) in read {
                got[at] = hit;
            }
        }
        for (&(level, index), hit) in tiles.iter().zip(&got) {
            if let Some((tile, interior)) = hit {
                let mut k = Key {
                    log: log.clone(),
                    kind: Kind::Hash,
                    level,
                    index,
                };
                self.inner.insert(k.clone(), tile.clone());
                if let Some(interior) = interior {
                    k.kind = Kind::Interior;
                    self.inner.insert(k, interior.clone());
                }
            }
        }
        got
    }

    /// Puts full tiles with their interiors into the disk tier, on a
    /// blocking thread; done when it returns.
    pub(crate) async fn write_disk(&self, log: &Arc<str>, writes: Vec<DiskWrite>) {
        let (Some(disk), Some(&n)) = (self.disk.clone(), self.log_numbers.get(log)) else {
            return;
        };
        if writes.is_empty() {
            return;
        }
        let done = tokio::task::spawn_blocking(move || {
            for w in writes {
                disk.put(n, w.level, w.index, &w.tile, &w.interior);
            }
        })
        .await;
        if let Err(e) = done {
            tracing::warn!("tile disk cache: write task failed: {e}");
        }
    }

    /// Caches the interior of a full hash tile in memory (the disk tier is
    /// written with [`TileCache::write_disk`]).
    pub(crate) fn insert_interior(&self, key: Key, interior: Bytes) {
        debug_assert_eq!(key.kind, Kind::Interior);
        self.inner.insert(key, interior);
    }

    /// Caches a full tile or bundle (callers pass only immutable data).
    pub(crate) fn insert(&self, key: Key, data: Bytes) {
        self.inner.insert(key, data);
    }
}
