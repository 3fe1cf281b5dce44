//! C2SP `tlog-tiles`: tile math, tile paths, entry bundles, reading hashes
//! from tiles, and the right-edge [`TreeBuilder`] used by the sequencer.
//!
//! Tiles are 256 hashes wide (height 8). A hash tile at level `L`, index `N`
//! holds the Merkle-level-`8L` hashes `256N .. 256N+W`.

use crate::merkle::{HashReader, NodeId};
use crate::{Error, Hash};

/// Tile height (levels of the Merkle tree per tile level).
pub const TILE_HEIGHT: u8 = 8;
/// Hashes (or entries) in a full tile.
pub const TILE_WIDTH: u64 = 256;
/// Largest leaf an entry bundle can carry (u16 length prefix).
pub const MAX_LEAF_SIZE: usize = 65_535;

/// A hash tile or an entry bundle: level, index, and width `1..=256`.
/// For entry bundles `level` is 0 and the tile covers entries
/// `256*index .. 256*index+width`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TileId {
    pub level: u8,
    pub index: u64,
    pub width: u16,
}

impl TileId {
    pub const fn new(level: u8, index: u64, width: u16) -> Self {
        TileId { level, index, width }
    }
    pub fn is_full(&self) -> bool {
        u64::from(self.width) == TILE_WIDTH
    }
}

/// A path under a log's prefix that the tiles API serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TilePath {
    /// `tile/<L>/<N>[.p/<W>]`
    Hash(TileId),
    /// `tile/entries/<N>[.p/<W>]` (level is always 0)
    Entries(TileId),
}

impl TilePath {
    /// Parses a path relative to the log prefix, e.g. `tile/1/x001/234.p/7`
    /// or `tile/entries/000`. Strict: the path must be in canonical form.
    pub fn parse(path: &str) -> Result<Self, Error> {
        todo!()
    }
    /// The canonical relative path.
    pub fn to_path(&self) -> String {
        todo!()
    }
}

impl std::fmt::Display for TilePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_path())
    }
}

/// The tlog-tiles index encoding: `x001/x234/067` for 1234067.
pub fn encode_index(n: u64) -> String {
    todo!()
}

/// The partial hash tile at each tile level of a tree of `size` (none where
/// the level has only full tiles), lowest level first. These, and only these,
/// are needed to compute the root and to keep appending.
pub fn partial_tiles(size: u64) -> Vec<TileId> {
    todo!()
}

/// Hash tiles that exist in a tree of `new` leaves but not (or narrower) in
/// one of `old` leaves, lowest level first. Each at its width in `new`.
pub fn changed_tiles(old: u64, new: u64) -> Vec<TileId> {
    todo!()
}

/// Entry bundles that are new or grew from `old` to `new` leaves.
pub fn changed_bundles(old: u64, new: u64) -> Vec<TileId> {
    todo!()
}

/// Number of hash tiles (full and partial) a tree of `size` has at `level`.
pub fn tile_count(level: u8, size: u64) -> u64 {
    todo!()
}

/// Width of tile `index` at `level` in a tree of `size` (0 if it does not exist).
pub fn tile_width(level: u8, index: u64, size: u64) -> u16 {
    todo!()
}

/// Encodes an entry bundle: each leaf prefixed by its length as a big-endian u16.
/// Leaves longer than [`MAX_LEAF_SIZE`] are rejected.
pub fn encode_bundle<'a, I: IntoIterator<Item = &'a [u8]>>(leaves: I) -> Result<Vec<u8>, Error> {
    todo!()
}

/// Decodes an entry bundle into its leaves. Truncated data is rejected.
pub fn decode_bundle(data: &[u8]) -> Result<Vec<&[u8]>, Error> {
    todo!()
}

/// Splits hash-tile data into hashes; length must be a multiple of 32, at most 256 hashes.
pub fn tile_hashes(data: &[u8]) -> Result<Vec<Hash>, Error> {
    todo!()
}

/// Where a node's hash is computed from: the tile at `(tile_level, tile_index)`
/// and the hashes `start .. start + count` inside it (`count` is a power of two).
pub fn node_location(node: NodeId) -> (u8, u64, u16, u16) {
    todo!()
}

/// Reads hash tiles. `read_tiles` must return one data blob per requested
/// tile, each at least as wide as requested (a wider version of a partial
/// tile is fine: tiles only grow at the end).
pub trait TileReader {
    type Data: AsRef<[u8]>;
    fn read_tiles(&self, tiles: &[TileId]) -> Result<Vec<Self::Data>, Error>;
}

/// A [`HashReader`] over hash tiles of a tree of `size` leaves: every node
/// hash is computed from the tile that holds its level-8L descendants.
pub struct TileHashReader<'a, T: TileReader + ?Sized> {
    size: u64,
    tiles: &'a T,
}

impl<'a, T: TileReader + ?Sized> TileHashReader<'a, T> {
    pub fn new(size: u64, tiles: &'a T) -> Self {
        TileHashReader { size, tiles }
    }
}

impl<T: TileReader + ?Sized> HashReader for TileHashReader<'_, T> {
    fn read_hashes(&self, nodes: &[NodeId]) -> Result<Vec<Hash>, Error> {
        let _ = (self.size, self.tiles);
        todo!()
    }
}

/// The right edge of a growing tree, kept as its partial tiles: appends leaf
/// hashes, reports which hash tiles changed, and computes the root. Memory is
/// bounded (at most 255 hashes per tile level).
#[derive(Clone, Debug, Default)]
pub struct TreeBuilder {
    size: u64,
    /// `edge[L]`: hashes of the partial tile at tile level `L`.
    edge: Vec<Vec<Hash>>,
}

impl TreeBuilder {
    /// The empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds the right edge of a tree of `size` from its partial tiles
    /// (exactly those [`partial_tiles`] lists, in any order; wider versions
    /// are truncated).
    pub fn from_partial_tiles(size: u64, tiles: &[(TileId, &[u8])]) -> Result<Self, Error> {
        todo!()
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Root of the tree so far.
    pub fn root(&self) -> Hash {
        let _ = &self.edge;
        todo!()
    }

    /// Appends leaf hashes. Returns every hash tile that changed, at its new
    /// width, with its full contents (lowest level first).
    pub fn append(&mut self, leaf_hashes: &[Hash]) -> Vec<(TileId, Vec<u8>)> {
        todo!()
    }
}
