//! The tile cache's second tier: full hash tiles with their interiors in a
//! scratch file, read with `pread`.
//!
//! A proof for a random index needs the level-0 tile that holds it. At ten
//! million entries those tiles and their interiors take 640 MB, far more
//! than the in-memory tier may hold under the memory budget, and a miss
//! costs a database query plus up to 254 hashes. This tier keeps them in a
//! file instead: its pages live in the kernel's page cache (not in the
//! process's resident memory) and a hit costs one 16 KiB `pread` (8 KiB
//! when only the tile is wanted: serving it, rather than proving with it).
//!
//! - The file is created unlinked (`O_TMPFILE` where available) in the data
//!   directory: it belongs to this process alone, vanishes when the process
//!   exits or crashes, and never needs recovery. A new process starts empty
//!   and refills it from storage on misses.
//! - Only immutable data goes in (full tiles), so an entry is never stale.
//! - Direct-mapped: slot `i` holds one tile (8 KiB) and its interior
//!   (8,128 bytes). A tile's slot follows from its index, so one log's
//!   level-0 tiles fill consecutive slots and do not collide until the file
//!   is full; a colliding tile replaces the older one.
//! - Each slot has a tag (which tile it holds) and a sequence number in
//!   memory (16 bytes per 16 KiB slot). A writer makes the sequence odd
//!   while it writes; a reader keeps what it read only if the sequence was
//!   even and unchanged around its read and the tag matched (a seqlock), so
//!   a torn or replaced slot reads as a miss, never as wrong data.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{fence, AtomicU64, Ordering};

use bytes::Bytes;
use stele_core::tile::TILE_WIDTH;
use stele_core::HASH_SIZE;

/// Bytes of a full hash tile.
pub(crate) const TILE_BYTES: usize = TILE_WIDTH as usize * HASH_SIZE;
/// Bytes of a full tile's interior (levels 1 to 7: 254 hashes).
pub(crate) const INTERIOR_BYTES: usize = (TILE_WIDTH as usize - 2) * HASH_SIZE;
/// Bytes per slot: the tile, then its interior, padded to 16 KiB.
pub(crate) const SLOT_BYTES: u64 = 16 << 10;

/// Which tile a slot holds: log number, level and index packed into 64 bits
/// (0 = empty). Tiles beyond what fits are simply not cached here.
fn tag(log: u16, level: u8, index: u64) -> Option<u64> {
    (log < 0x0fff && level < 16 && index < 1 << 48)
        .then(|| (u64::from(log) + 1) << 52 | u64::from(level) << 48 | index)
}

struct Slot {
    tag: AtomicU64,
    /// Even: stable. Odd: a writer is filling the slot.
    seq: AtomicU64,
}

pub(crate) struct DiskTier {
    file: File,
    slots: Box<[Slot]>,
}

impl DiskTier {
    /// A tier of `bytes` (rounded down to whole 16 KiB slots) in a new
    /// unlinked file in `dir`. `None` if that is less than one slot.
    pub(crate) fn create(dir: &Path, bytes: u64) -> std::io::Result<Option<DiskTier>> {
        let n = bytes / SLOT_BYTES;
        if n == 0 {
            return Ok(None);
        }
        let file = tempfile::tempfile_in(dir)?;
        // Sparse: disk blocks are allocated only as slots are written.
        file.set_len(n * SLOT_BYTES)?;
        let slots = (0..n)
            .map(|_| Slot {
                tag: AtomicU64::new(0),
                seq: AtomicU64::new(0),
            })
            .collect();
        Ok(Some(DiskTier { file, slots }))
    }

    fn slot(&self, log: u16, level: u8, index: u64) -> usize {
        // Consecutive indexes of one level of one log → consecutive slots;
        // levels and logs start at unrelated offsets.
        let start = u64::from(log)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .wrapping_add(u64::from(level).wrapping_mul(0xc2b2_ae3d_27d4_eb4f));
        (start.wrapping_add(index) % self.slots.len() as u64) as usize
    }

    /// The tile and its interior, if this tier holds them.
    pub(crate) fn get(&self, log: u16, level: u8, index: u64) -> Option<(Bytes, Bytes)> {
        let buf = self.read(log, level, index, TILE_BYTES + INTERIOR_BYTES)?;
        Some((buf.slice(..TILE_BYTES), buf.slice(TILE_BYTES..)))
    }

    /// The tile alone (half the slot: serving a tile needs no interior).
    pub(crate) fn get_tile(&self, log: u16, level: u8, index: u64) -> Option<Bytes> {
        self.read(log, level, index, TILE_BYTES)
    }

    /// The first `len` bytes of the slot of tile `(log, level, index)`, if
    /// it holds that tile and no writer touched it during the read.
    fn read(&self, log: u16, level: u8, index: u64, len: usize) -> Option<Bytes> {
        let want = tag(log, level, index)?;
        let i = self.slot(log, level, index);
        let s = &self.slots[i];
        let before = s.seq.load(Ordering::Acquire);
        if before % 2 == 1 || s.tag.load(Ordering::Acquire) != want {
            return None;
        }
        let mut buf = vec![0u8; len];
        if let Err(e) = self.file.read_exact_at(&mut buf, i as u64 * SLOT_BYTES) {
            tracing::warn!("tile disk cache: read failed: {e}");
            return None;
        }
        fence(Ordering::Acquire);
        if s.seq.load(Ordering::Relaxed) != before {
            return None;
        }
        Some(Bytes::from(buf))
    }

    /// Stores a full tile and its interior, replacing whatever the slot held.
    /// Skipped (it is only a cache) if another writer holds the slot.
    pub(crate) fn put(&self, log: u16, level: u8, index: u64, tile: &[u8], interior: &[u8]) {
        let Some(want) = tag(log, level, index) else {
            return;
        };
        if tile.len() != TILE_BYTES || interior.len() != INTERIOR_BYTES {
            return;
        }
        let i = self.slot(log, level, index);
        let s = &self.slots[i];
        let seq = s.seq.load(Ordering::Relaxed);
        if seq % 2 == 1 || s.tag.load(Ordering::Relaxed) == want {
            return;
        }
        if s.seq
            .compare_exchange(seq, seq + 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        fence(Ordering::Release);
        let mut buf = Vec::with_capacity(TILE_BYTES + INTERIOR_BYTES);
        buf.extend_from_slice(tile);
        buf.extend_from_slice(interior);
        let ok = match self.file.write_all_at(&buf, i as u64 * SLOT_BYTES) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!("tile disk cache: write failed: {e}");
                false
            }
        };
        s.tag.store(if ok { want } else { 0 }, Ordering::Relaxed);
        s.seq.store(seq + 2, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn tile(seed: u64) -> (Vec<u8>, Vec<u8>) {
        let t: Vec<u8> = (0..TILE_BYTES)
            .map(|i| (seed as usize * 31 + i) as u8)
            .collect();
        let n: Vec<u8> = (0..INTERIOR_BYTES)
            .map(|i| (seed as usize * 17 + i * 3) as u8)
            .collect();
        (t, n)
    }

    fn tier(dir: &tempfile::TempDir, slots: u64) -> DiskTier {
        DiskTier::create(dir.path(), slots * SLOT_BYTES)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn round_trip_and_misses() {
        let dir = tempfile::tempdir().unwrap();
        let d = tier(&dir, 8);
        assert!(d.get(0, 0, 3).is_none(), "empty tier");
        let (t, n) = tile(3);
        d.put(0, 0, 3, &t, &n);
        let (gt, gn) = d.get(0, 0, 3).expect("hit");
        assert_eq!(&gt[..], &t[..]);
        assert_eq!(&gn[..], &n[..]);
        assert_eq!(&d.get_tile(0, 0, 3).expect("hit")[..], &t[..]);
        // Same slot position, other log or level: a miss, not tile 3.
        assert!(d.get(1, 0, 3).is_none());
        assert!(d.get(0, 1, 3).is_none());
        assert!(d.get_tile(1, 0, 3).is_none());
        // Index 11 maps to tile 3's slot (8 slots) and replaces it.
        let (t11, n11) = tile(11);
        d.put(0, 0, 11, &t11, &n11);
        assert!(d.get(0, 0, 3).is_none(), "replaced");
        assert!(d.get_tile(0, 0, 3).is_none(), "replaced");
        assert_eq!(&d.get(0, 0, 11).unwrap().0[..], &t11[..]);
        // Wrong sizes are refused.
        d.put(0, 0, 4, &t[..100], &n);
        assert!(d.get(0, 0, 4).is_none());
        // Less than one slot: no tier.
        assert!(DiskTier::create(dir.path(), SLOT_BYTES - 1)
            .unwrap()
            .is_none());
        // The file is unlinked: the directory stays empty.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn one_logs_consecutive_tiles_do_not_collide() {
        let dir = tempfile::tempdir().unwrap();
        let d = tier(&dir, 64);
        for i in 0..64 {
            let (t, n) = tile(i);
            d.put(2, 0, 1000 + i, &t, &n);
        }
        for i in 0..64 {
            assert_eq!(&d.get(2, 0, 1000 + i).unwrap().0[..], &tile(i).0[..]);
        }
    }

    /// Readers racing writers that keep replacing one slot only ever see a
    /// tile exactly as it was written, or a miss.
    #[test]
    fn concurrent_readers_never_see_a_torn_slot() {
        let dir = tempfile::tempdir().unwrap();
        let d = Arc::new(tier(&dir, 1));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writers: Vec<_> = (0..2)
            .map(|w| {
                let (d, stop) = (d.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut i = w;
                    while !stop.load(Ordering::Relaxed) {
                        let (t, n) = tile(i % 4);
                        d.put(0, 0, i % 4, &t, &n);
                        i += 1;
                        // Leave the slot stable now and then, so that
                        // readers also hit (and check what they read).
                        if i % 8 == 0 {
                            std::thread::sleep(std::time::Duration::from_micros(100));
                        }
                    }
                })
            })
            .collect();
        let mut hits = 0;
        let started = std::time::Instant::now();
        let mut round = 0u64;
        while started.elapsed() < std::time::Duration::from_millis(300) {
            round += 1;
            let index = round % 4;
            if let Some((t, n)) = d.get(0, 0, index) {
                let (et, en) = tile(index);
                assert!(
                    t[..] == et[..] && n[..] == en[..],
                    "torn read of tile {index}"
                );
                hits += 1;
            }
        }
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.join().unwrap();
        }
        assert!(hits > 0, "no read ever hit");
    }
}
