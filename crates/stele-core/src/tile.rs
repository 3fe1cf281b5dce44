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
        TileId {
            level,
            index,
            width,
        }
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
        let bad = |why: &str| Error::malformed("tile path", format!("{why}: {:?}", truncate(path)));
        // The longest canonical path is well under 100 bytes; this bounds
        // the work on hostile input.
        if path.len() > 100 {
            return Err(bad("too long"));
        }
        let rest = path
            .strip_prefix("tile/")
            .ok_or_else(|| bad("does not start with tile/"))?;
        let (first, rest) = rest.split_once('/').ok_or_else(|| bad("no tile index"))?;
        let entries = first == "entries";
        let level = if entries {
            0
        } else {
            let l = parse_decimal(first).ok_or_else(|| bad("level is not a canonical decimal"))?;
            if l > 63 {
                return Err(bad("level above 63"));
            }
            l as u8
        };
        let (index_part, width) = match rest.split_once(".p/") {
            Some((idx, w)) => {
                let w = parse_decimal(w).ok_or_else(|| bad("width is not a canonical decimal"))?;
                if !(1..TILE_WIDTH).contains(&w) {
                    return Err(bad("partial width not in 1..=255"));
                }
                (idx, w as u16)
            }
            None => (rest, TILE_WIDTH as u16),
        };
        let mut index: u64 = 0;
        let elements: Vec<&str> = index_part.split('/').collect();
        for (i, e) in elements.iter().enumerate() {
            let digits = if i + 1 < elements.len() {
                e.strip_prefix('x')
                    .ok_or_else(|| bad("index element without x prefix"))?
            } else {
                e
            };
            if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("index element is not three digits"));
            }
            let d: u64 = digits
                .parse()
                .map_err(|_| bad("index element is not three digits"))?;
            index = index
                .checked_mul(1000)
                .and_then(|n| n.checked_add(d))
                .ok_or_else(|| bad("index overflows"))?;
        }
        let id = TileId::new(level, index, width);
        let parsed = if entries {
            TilePath::Entries(id)
        } else {
            TilePath::Hash(id)
        };
        // Rejects leading x000 elements and any other non-canonical spelling.
        if parsed.to_path() != path {
            return Err(bad("not in canonical form"));
        }
        Ok(parsed)
    }
    /// The canonical relative path.
    pub fn to_path(&self) -> String {
        let (level, id) = match self {
            TilePath::Hash(id) => (id.level.to_string(), id),
            TilePath::Entries(id) => ("entries".to_string(), id),
        };
        let mut p = format!("tile/{level}/{}", encode_index(id.index));
        if !id.is_full() {
            p.push_str(&format!(".p/{}", id.width));
        }
        p
    }
}

impl std::fmt::Display for TilePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_path())
    }
}

/// The tlog-tiles index encoding: `x001/x234/067` for 1234067.
pub fn encode_index(n: u64) -> String {
    let mut groups = vec![n % 1000];
    let mut rest = n / 1000;
    while rest > 0 {
        groups.push(rest % 1000);
        rest /= 1000;
    }
    let mut out = String::with_capacity(groups.len() * 5);
    for (i, g) in groups.iter().rev().enumerate() {
        if i + 1 < groups.len() {
            out.push_str(&format!("x{g:03}/"));
        } else {
            out.push_str(&format!("{g:03}"));
        }
    }
    out
}

/// A decimal with no sign and no leading zeros (except `0` itself).
fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

/// At most 64 characters of untrusted input, for error messages.
fn truncate(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Number of hashes at Merkle level `8 * level` in a tree of `size`.
fn hashes_at(level: u8, size: u64) -> u64 {
    let shift = 8 * u32::from(level);
    size.checked_shr(shift).unwrap_or(0)
}

/// The partial hash tile at each tile level of a tree of `size` (none where
/// the level has only full tiles), lowest level first. These, and only these,
/// are needed to compute the root and to keep appending.
pub fn partial_tiles(size: u64) -> Vec<TileId> {
    let mut out = Vec::new();
    let mut level = 0u8;
    loop {
        let n = hashes_at(level, size);
        if n == 0 {
            break;
        }
        let w = n % TILE_WIDTH;
        if w != 0 {
            out.push(TileId::new(level, n / TILE_WIDTH, w as u16));
        }
        level += 1;
    }
    out
}

/// Hash tiles that exist in a tree of `new` leaves but not (or narrower) in
/// one of `old` leaves, lowest level first. Each at its width in `new`.
pub fn changed_tiles(old: u64, new: u64) -> Vec<TileId> {
    let mut out = Vec::new();
    if old >= new {
        return out;
    }
    let mut level = 0u8;
    loop {
        let (o, n) = (hashes_at(level, old), hashes_at(level, new));
        if o == n {
            break;
        }
        for index in o / TILE_WIDTH..=(n - 1) / TILE_WIDTH {
            out.push(TileId::new(level, index, tile_width(level, index, new)));
        }
        level += 1;
    }
    out
}

/// Entry bundles that are new or grew from `old` to `new` leaves.
pub fn changed_bundles(old: u64, new: u64) -> Vec<TileId> {
    if old >= new {
        return Vec::new();
    }
    (old / TILE_WIDTH..=(new - 1) / TILE_WIDTH)
        .map(|index| TileId::new(0, index, tile_width(0, index, new)))
        .collect()
}

/// Number of hash tiles (full and partial) a tree of `size` has at `level`.
pub fn tile_count(level: u8, size: u64) -> u64 {
    hashes_at(level, size).div_ceil(TILE_WIDTH)
}

/// Width of tile `index` at `level` in a tree of `size` (0 if it does not exist).
pub fn tile_width(level: u8, index: u64, size: u64) -> u16 {
    let n = hashes_at(level, size);
    let full = n / TILE_WIDTH;
    if index < full {
        TILE_WIDTH as u16
    } else if index == full {
        (n % TILE_WIDTH) as u16
    } else {
        0
    }
}

/// Encodes an entry bundle: each leaf prefixed by its length as a big-endian u16.
/// Leaves longer than [`MAX_LEAF_SIZE`] are rejected.
pub fn encode_bundle<'a, I: IntoIterator<Item = &'a [u8]>>(leaves: I) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    for (i, leaf) in leaves.into_iter().enumerate() {
        let len = u16::try_from(leaf.len()).map_err(|_| {
            Error::malformed(
                "entry bundle",
                format!("leaf {i} has {} bytes, above {MAX_LEAF_SIZE}", leaf.len()),
            )
        })?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(leaf);
    }
    Ok(out)
}

/// Decodes an entry bundle into its leaves. Truncated data is rejected.
pub fn decode_bundle(data: &[u8]) -> Result<Vec<&[u8]>, Error> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let [a, b, tail @ ..] = rest else {
            return Err(Error::malformed(
                "entry bundle",
                format!("truncated length prefix of entry {}", out.len()),
            ));
        };
        let len = usize::from(u16::from_be_bytes([*a, *b]));
        if tail.len() < len {
            return Err(Error::malformed(
                "entry bundle",
                format!("entry {} needs {len} bytes, {} left", out.len(), tail.len()),
            ));
        }
        let (leaf, next) = tail.split_at(len);
        out.push(leaf);
        rest = next;
    }
    Ok(out)
}

/// The first `width` entries of an entry bundle (tiles only grow at the
/// end, so a narrower bundle is a prefix of a wider one).
pub fn truncate_bundle(data: &[u8], width: u16) -> Result<&[u8], Error> {
    let mut pos = 0;
    for i in 0..width {
        let (Some(&a), Some(&b)) = (data.get(pos), data.get(pos + 1)) else {
            return Err(Error::malformed(
                "entry bundle",
                format!("has fewer than {width} entries (entry {i} missing)"),
            ));
        };
        pos += 2 + usize::from(u16::from_be_bytes([a, b]));
        if pos > data.len() {
            return Err(Error::malformed(
                "entry bundle",
                format!("entry {i} is truncated"),
            ));
        }
    }
    Ok(&data[..pos])
}

/// Splits hash-tile data into hashes; length must be a multiple of 32, at most 256 hashes.
pub fn tile_hashes(data: &[u8]) -> Result<Vec<Hash>, Error> {
    if data.is_empty() || !data.len().is_multiple_of(32) || data.len() > 32 * TILE_WIDTH as usize {
        return Err(Error::malformed(
            "hash tile",
            format!("{} bytes is not 1 to 256 hashes of 32 bytes", data.len()),
        ));
    }
    Ok(data
        .chunks_exact(32)
        .map(|c| Hash(c.try_into().expect("32-byte chunk")))
        .collect())
}

/// Where a node's hash is computed from: the tile at `(tile_level, tile_index)`
/// and the hashes `start .. start + count` inside it (`count` is a power of two).
pub fn node_location(node: NodeId) -> (u8, u64, u16, u16) {
    let tile_level = node.level / TILE_HEIGHT;
    let sub = u32::from(node.level % TILE_HEIGHT);
    let tile_index = node.index >> (8 - sub);
    let start = (node.index << sub) % TILE_WIDTH;
    (tile_level, tile_index, start as u16, 1u16 << sub)
}

/// Reads hash tiles. `read_tiles` must return one data blob per requested
/// tile, each at least as wide as requested (a wider version of a partial
/// tile is fine: tiles only grow at the end).
pub trait TileReader {
    type Data: AsRef<[u8]>;
    fn read_tiles(&self, tiles: &[TileId]) -> Result<Vec<Self::Data>, Error>;
}

/// The first pass of a computation over hash tiles that must be fetched
/// first (over a network, from a database): answers no tile and notes
/// which ones were asked for. Fetch those, put them in a [`TileMap`] and
/// run the computation again.
#[derive(Debug, Default)]
pub struct TileWants(std::sync::Mutex<Vec<TileId>>);

impl TileWants {
    /// The tiles asked for (none: the computation failed before it read any).
    pub fn into_wanted(self) -> Vec<TileId> {
        self.0.into_inner().unwrap_or_else(|e| e.into_inner())
    }
}

impl TileReader for TileWants {
    type Data = Vec<u8>;
    fn read_tiles(&self, tiles: &[TileId]) -> Result<Vec<Vec<u8>>, Error> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(tiles);
        Err(Error::Read("only collecting the tiles to read".into()))
    }
}

/// The second pass: hash tiles already fetched, by `(level, index)` (each
/// at least as wide as asked, as [`TileReader`] allows).
#[derive(Debug, Default)]
pub struct TileMap(std::collections::HashMap<(u8, u64), Vec<u8>>);

impl TileMap {
    pub fn insert(&mut self, id: TileId, data: Vec<u8>) {
        self.0.insert((id.level, id.index), data);
    }
}

impl TileReader for TileMap {
    type Data = Vec<u8>;
    fn read_tiles(&self, tiles: &[TileId]) -> Result<Vec<Vec<u8>>, Error> {
        tiles
            .iter()
            .map(|t| {
                self.0
                    .get(&(t.level, t.index))
                    .cloned()
                    .ok_or_else(|| Error::Read(format!("tile {} not fetched", TilePath::Hash(*t))))
            })
            .collect()
    }
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
        // Where each node comes from, and the distinct tiles to read.
        let mut wanted: Vec<TileId> = Vec::new();
        let mut slot: std::collections::HashMap<(u8, u64), usize> =
            std::collections::HashMap::new();
        let mut plan = Vec::with_capacity(nodes.len());
        for n in nodes {
            let inside = n.level < 63
                && n.index
                    .checked_add(1)
                    .and_then(|e| e.checked_mul(1u64 << n.level))
                    .is_some_and(|end| end <= self.size);
            if !inside {
                return Err(Error::Read(format!(
                    "node {n:?} is not inside a tree of {} leaves",
                    self.size
                )));
            }
            let (tl, ti, start, count) = node_location(*n);
            let k = *slot.entry((tl, ti)).or_insert_with(|| {
                wanted.push(TileId::new(tl, ti, tile_width(tl, ti, self.size)));
                wanted.len() - 1
            });
            plan.push((k, usize::from(start), usize::from(count)));
        }
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let data = self.tiles.read_tiles(&wanted)?;
        if data.len() != wanted.len() {
            return Err(Error::Read(format!(
                "asked for {} tiles, got {}",
                wanted.len(),
                data.len()
            )));
        }
        for (t, d) in wanted.iter().zip(&data) {
            let d = d.as_ref();
            if d.len() % 32 != 0
                || d.len() < 32 * usize::from(t.width)
                || d.len() > 32 * TILE_WIDTH as usize
            {
                return Err(Error::Read(format!(
                    "tile {} has {} bytes, need {} hashes",
                    TilePath::Hash(*t),
                    d.len(),
                    t.width
                )));
            }
        }
        Ok(plan
            .into_iter()
            .map(|(k, start, count)| {
                let bytes = &data[k].as_ref()[32 * start..32 * (start + count)];
                let hashes: Vec<Hash> = bytes
                    .chunks_exact(32)
                    .map(|c| Hash(c.try_into().expect("32-byte chunk")))
                    .collect();
                crate::merkle::root_of(&hashes)
            })
            .collect())
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
        if size >= crate::merkle::MAX_TREE_SIZE {
            return Err(Error::InvalidRange(format!(
                "tree size {size} is not below 2^63"
            )));
        }
        let expected = partial_tiles(size);
        let mut edge: Vec<Vec<Hash>> = Vec::new();
        for (t, _) in tiles {
            if !expected
                .iter()
                .any(|e| e.level == t.level && e.index == t.index)
            {
                return Err(Error::malformed(
                    "partial tiles",
                    format!(
                        "tile {} is not a partial tile of a tree of {size}",
                        TilePath::Hash(*t)
                    ),
                ));
            }
        }
        for e in &expected {
            let (_, data) = tiles
                .iter()
                .find(|(t, _)| t.level == e.level && t.index == e.index)
                .ok_or_else(|| {
                    Error::malformed(
                        "partial tiles",
                        format!("missing tile {}", TilePath::Hash(*e)),
                    )
                })?;
            let hashes = tile_hashes(data)?;
            if hashes.len() < usize::from(e.width) {
                return Err(Error::malformed(
                    "partial tiles",
                    format!(
                        "tile {} has {} hashes, need {}",
                        TilePath::Hash(*e),
                        hashes.len(),
                        e.width
                    ),
                ));
            }
            let level = usize::from(e.level);
            if edge.len() <= level {
                edge.resize(level + 1, Vec::new());
            }
            edge[level] = hashes[..usize::from(e.width)].to_vec();
        }
        Ok(TreeBuilder { size, edge })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Root of the tree so far.
    pub fn root(&self) -> Hash {
        // The tree's perfect subtrees, largest first: the highest tile
        // level's partial tile first, each split by the bits of its width.
        let mut subtrees: Vec<Hash> = Vec::new();
        for hashes in self.edge.iter().rev() {
            let mut pos = 0usize;
            for bit in (0..8).rev() {
                let chunk = 1usize << bit;
                if hashes.len() & chunk != 0 {
                    subtrees.push(crate::merkle::root_of(&hashes[pos..pos + chunk]));
                    pos += chunk;
                }
            }
        }
        let mut iter = subtrees.iter().rev();
        match iter.next() {
            None => crate::EMPTY_ROOT,
            Some(last) => iter.fold(*last, |acc, h| crate::node_hash(h, &acc)),
        }
    }

    /// Appends leaf hashes. Returns every hash tile that changed, at its new
    /// width, with its full contents (lowest level first).
    ///
    /// Cost: every new hash is copied once per tile it lands in, and one
    /// perfect-subtree root is computed per tile that fills up, so a batch
    /// costs `O(batch + levels * 256)`, independent of the tree size.
    ///
    /// Panics if the tree would reach 2^63 leaves (the sequencer must refuse
    /// such batches before calling).
    pub fn append(&mut self, leaf_hashes: &[Hash]) -> Vec<(TileId, Vec<u8>)> {
        let new_size = self
            .size
            .checked_add(leaf_hashes.len() as u64)
            .filter(|s| *s < crate::merkle::MAX_TREE_SIZE)
            .expect("tree size stays below 2^63");
        let mut out = Vec::new();
        let mut input: Vec<Hash> = leaf_hashes.to_vec();
        let mut level = 0usize;
        while !input.is_empty() {
            if self.edge.len() <= level {
                self.edge.push(Vec::new());
            }
            // Hashes at this tile level before the batch.
            let mut count = hashes_at(level as u8, self.size);
            let cur = &mut self.edge[level];
            let mut completed = Vec::new();
            for h in input.drain(..) {
                cur.push(h);
                count += 1;
                if cur.len() == TILE_WIDTH as usize {
                    let index = (count - 1) / TILE_WIDTH;
                    completed.push(crate::merkle::root_of(cur));
                    out.push((
                        TileId::new(level as u8, index, TILE_WIDTH as u16),
                        tile_bytes(cur),
                    ));
                    cur.clear();
                }
            }
            if !cur.is_empty() && hashes_at(level as u8, self.size) != count {
                let index = count / TILE_WIDTH;
                out.push((
                    TileId::new(level as u8, index, cur.len() as u16),
                    tile_bytes(cur),
                ));
            }
            input = completed;
            level += 1;
        }
        self.size = new_size;
        out
    }
}

fn tile_bytes(hashes: &[Hash]) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 * hashes.len());
    for h in hashes {
        out.extend_from_slice(&h.0);
    }
    out
}
