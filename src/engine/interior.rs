//! The interior of a hash tile: its nodes above level 0, computed once per
//! tile (at most 254 hashes) so that proofs through the tile read them
//! instead of hashing up to 255 nodes each.

use bytes::Bytes;
use stele_core::tile::{TILE_HEIGHT, TILE_WIDTH};
use stele_core::{node_hash, Error as CoreError, Hash, HASH_SIZE};

/// Hashes in the interior of a full tile: levels 1 to 7 relative to the
/// tile's own level (128 + 64 + ... + 2 nodes).
const INTERIOR_NODES: usize = TILE_WIDTH as usize - 2;

/// Position of the first node of relative level `r` (1..=7) in an interior.
fn interior_offset(r: u8) -> usize {
    TILE_WIDTH as usize - (TILE_WIDTH as usize >> (r - 1))
}

/// The interior nodes of a tile, level by level from relative level 1, at
/// fixed positions (see [`interior_offset`]). For a partial tile of width
/// `w` only the nodes whose descendants all lie in the first `w` hashes are
/// computed (the rest stay zero; [`Interior::get`] never returns them).
/// Tile contents never change for a given width, so neither does the
/// interior: computing it once (at most 254 hashes) saves up to 255 hashes
/// per proof that passes through the tile.
pub(crate) fn interior(tile: &[u8]) -> Result<Interior, CoreError> {
    let width = tile.len() / HASH_SIZE;
    let pair = |d: &[u8]| -> Result<[u8; HASH_SIZE], CoreError> {
        let l = Hash::from_slice(&d[..HASH_SIZE])?;
        let r = Hash::from_slice(&d[HASH_SIZE..2 * HASH_SIZE])?;
        Ok(node_hash(&l, &r).0)
    };
    let mut out = vec![0u8; INTERIOR_NODES * HASH_SIZE];
    for r in 1..TILE_HEIGHT {
        let base = interior_offset(r);
        for i in 0..(width >> r) {
            let h = if r == 1 {
                pair(&tile[2 * i * HASH_SIZE..(2 * i + 2) * HASH_SIZE])?
            } else {
                let at = (interior_offset(r - 1) + 2 * i) * HASH_SIZE;
                pair(&out[at..at + 2 * HASH_SIZE])?
            };
            let at = (base + i) * HASH_SIZE;
            out[at..at + HASH_SIZE].copy_from_slice(&h);
        }
    }
    Ok(Interior {
        data: Bytes::from(out),
        width,
    })
}

/// See [`interior`].
#[derive(Clone, Debug)]
pub(crate) struct Interior {
    pub(crate) data: Bytes,
    /// Width of the tile it was computed from.
    pub(crate) width: usize,
}

impl Interior {
    /// The cached interior of a full tile.
    pub(crate) fn full(data: Bytes) -> Self {
        Interior {
            data,
            width: TILE_WIDTH as usize,
        }
    }

    /// Node `pos` of relative level `r` (1..=7), if it was computed.
    pub(crate) fn get(&self, r: u8, pos: usize) -> Option<Result<Hash, CoreError>> {
        if (pos + 1) << r > self.width {
            return None;
        }
        let off = (interior_offset(r) + pos) * HASH_SIZE;
        Some(Hash::from_slice(&self.data[off..off + HASH_SIZE]))
    }
}
