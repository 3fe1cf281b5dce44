//! The tile cache: full hash tiles and full entry bundles of every log,
//! bounded by bytes. Only immutable data goes in, so an entry is never
//! stale; partial tiles come from the sequencer's latest state or storage.
//! Behind the in-memory tier, an optional [`DiskTier`] keeps full hash
//! tiles with their interiors outside the process's memory.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use crate::engine::disk_cache::DiskTier;

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

pub(crate) struct TileCache {
    inner: quick_cache::sync::Cache<Key, Bytes, ByBytes>,
    disk: Option<DiskTier>,
    /// Log name → the number the disk tier knows it by.
    log_numbers: HashMap<Arc<str>, u16>,
}

impl TileCache {
    /// `bytes` of memory; `disk`, if any, for the logs named in `logs`.
    pub(crate) fn new(bytes: u64, disk: Option<DiskTier>, logs: &[Arc<str>]) -> Self {
        let items = (bytes / 8192).clamp(16, 1 << 20) as usize;
        TileCache {
            inner: quick_cache::sync::Cache::with_weighter(items, bytes, ByBytes),
            disk,
            log_numbers: logs
                .iter()
                .zip(0u16..)
                .map(|(l, n)| (l.clone(), n))
                .collect(),
        }
    }

    /// From memory; full hash tiles and interiors also from the disk tier
    /// (see [`TileCache::hash_tile`]).
    pub(crate) fn get(&self, key: &Key) -> Option<Bytes> {
        if let Some(v) = self.inner.get(key) {
            return Some(v);
        }
        if key.kind == Kind::Entries {
            return None;
        }
        let (tile, interior) = self.read_disk(key)?;
        Some(if key.kind == Kind::Hash {
            tile
        } else {
            interior
        })
    }

    /// The full hash tile `key` (of kind `Hash`) and its interior if cached.
    /// A disk-tier hit yields both at once, and brings both back into memory.
    pub(crate) fn hash_tile(&self, key: &Key) -> Option<(Bytes, Option<Bytes>)> {
        debug_assert_eq!(key.kind, Kind::Hash);
        if let Some(tile) = self.inner.get(key) {
            let interior = self.inner.get(&Key {
                kind: Kind::Interior,
                ..key.clone()
            });
            return Some((tile, interior));
        }
        self.read_disk(key).map(|(t, i)| (t, Some(i)))
    }

    /// A tile and its interior from the disk tier, put back into memory.
    fn read_disk(&self, key: &Key) -> Option<(Bytes, Bytes)> {
        let disk = self.disk.as_ref()?;
        let log = *self.log_numbers.get(&key.log)?;
        let (tile, interior) = disk.get(log, key.level, key.index)?;
        let mut k = key.clone();
        k.kind = Kind::Hash;
        self.inner.insert(k.clone(), tile.clone());
        k.kind = Kind::Interior;
        self.inner.insert(k, interior.clone());
        Some((tile, interior))
    }

    /// Caches the interior of the full hash tile `tile`, in memory and in
    /// the disk tier (with the tile).
    pub(crate) fn insert_interior(&self, key: Key, tile: &[u8], interior: Bytes) {
        debug_assert_eq!(key.kind, Kind::Interior);
        if let (Some(disk), Some(&log)) = (&self.disk, self.log_numbers.get(&key.log)) {
            disk.put(log, key.level, key.index, tile, &interior);
        }
        self.inner.insert(key, interior);
    }

    /// Caches a full tile or bundle (callers pass only immutable data).
    pub(crate) fn insert(&self, key: Key, data: Bytes) {
        self.inner.insert(key, data);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner.len()
    }
}
