//! The tile cache: full hash tiles and full entry bundles of every log,
//! bounded by bytes. Only immutable data goes in, so an entry is never
//! stale; partial tiles come from the sequencer's latest state or storage.

use std::sync::Arc;

use bytes::Bytes;

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
}

impl TileCache {
    pub(crate) fn new(bytes: u64) -> Self {
        let items = (bytes / 8192).clamp(16, 1 << 20) as usize;
        TileCache {
            inner: quick_cache::sync::Cache::with_weighter(items, bytes, ByBytes),
        }
    }

    pub(crate) fn get(&self, key: &Key) -> Option<Bytes> {
        self.inner.get(key)
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
