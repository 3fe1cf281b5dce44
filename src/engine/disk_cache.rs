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
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};

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
    /// Whether non-blocking page-cache reads work here (cleared on the
    /// first error that says they do not).
    nowait: AtomicBool,
}

/// What a look-up in the tier found.
pub(crate) enum Lookup {
    /// The tile, and its interior if it was asked for.
    Hit(Bytes, Option<Bytes>),
    Miss,
    /// Not all in the page cache: ask again on a blocking thread.
    WouldBlock,
}

impl Lookup {
    pub(crate) fn hit(self) -> Option<(Bytes, Option<Bytes>)> {
        match self {
            Lookup::Hit(t, i) => Some((t, i)),
            Lookup::Miss | Lookup::WouldBlock => None,
        }
    }
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
        Ok(Some(DiskTier {
            file,
            slots,
            nowait: AtomicBool::new(true),
        }))
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
    #[cfg(test)]
    fn get(&self, log: u16, level: u8, index: u64) -> Option<(Bytes, Bytes)> {
        self.lookup(log, level, index, true, false)
            .hit()
            .map(|(t, i)| (t, i.expect("asked with the interior")))
    }

    /// The tile alone (half the slot: serving a tile needs no interior).
    #[cfg(test)]
    fn get_tile(&self, log: u16, level: u8, index: u64) -> Option<Bytes> {
        self.lookup(log, level, index, false, false)
            .hit()
            .map(|(t, _)| t)
    }

    /// As [`DiskTier::lookup`] without waiting for the disk: the slot is
    /// read only if it is all in the page cache (`preadv2` with
    /// `RWF_NOWAIT`, a memory copy), so it may run on an async worker.
    /// `Lookup::WouldBlock` sends the caller to a blocking thread.
    pub(crate) fn try_get(&self, log: u16, level: u8, index: u64, interior: bool) -> Lookup {
        self.lookup(log, level, index, interior, true)
    }

    /// The slot of tile `(log, level, index)` — its tile, and its interior
    /// if asked — if it holds that tile and no writer touched it during
    /// the read. Without `nowait` it may wait for the disk: only on a
    /// blocking thread.
    pub(crate) fn lookup(
        &self,
        log: u16,
        level: u8,
        index: u64,
        interior: bool,
        nowait: bool,
    ) -> Lookup {
        let Some(want) = tag(log, level, index) else {
            return Lookup::Miss;
        };
        let i = self.slot(log, level, index);
        let s = &self.slots[i];
        let before = s.seq.load(Ordering::Acquire);
        if before % 2 == 1 || s.tag.load(Ordering::Acquire) != want {
            return Lookup::Miss;
        }
        let len = TILE_BYTES + if interior { INTERIOR_BYTES } else { 0 };
        let mut buf = vec![0u8; len];
        let at = i as u64 * SLOT_BYTES;
        if nowait {
            if !self.read_cached(&mut buf, at) {
                return Lookup::WouldBlock;
            }
        } else if let Err(e) = self.file.read_exact_at(&mut buf, at) {
            tracing::warn!("tile disk cache: read failed: {e}");
            return Lookup::Miss;
        }
        fence(Ordering::Acquire);
        if s.seq.load(Ordering::Relaxed) != before {
            return Lookup::Miss;
        }
        let buf = Bytes::from(buf);
        match interior {
            true => Lookup::Hit(buf.slice(..TILE_BYTES), Some(buf.slice(TILE_BYTES..))),
            false => Lookup::Hit(buf, None),
        }
    }

    /// Fills `buf` from offset `at` if all of it is in the page cache.
    /// `false` if it is not (or the kernel cannot say: then never again).
    #[cfg(target_os = "linux")]
    fn read_cached(&self, buf: &mut [u8], at: u64) -> bool {
        use rustix::io::{preadv2, Errno, ReadWriteFlags};
        if !self.nowait.load(Ordering::Relaxed) {
            return false;
        }
        let len = buf.len();
        match preadv2(
            &self.file,
            &mut [std::io::IoSliceMut::new(buf)],
            at,
            ReadWriteFlags::NOWAIT,
        ) {
            Ok(n) => n == len,
            Err(Errno::AGAIN) => false,
            Err(e) => {
                // EOPNOTSUPP, EINVAL: a kernel or file system without it.
                tracing::info!("tile disk cache: no non-blocking reads here ({e}); every read goes to a blocking thread");
                self.nowait.store(false, Ordering::Relaxed);
                false
            }
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn read_cached(&self, _buf: &mut [u8], _at: u64) -> bool {
        false
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
    fn page_cached_slots_are_read_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let d = tier(&dir, 8);
        let (t, n) = tile(5);
        d.put(0, 0, 5, &t, &n);
        // Just written, so in the page cache: read here, not deferred.
        match d.try_get(0, 0, 5, true) {
            Lookup::Hit(gt, Some(gn)) => {
                assert_eq!(&gt[..], &t[..]);
                assert_eq!(&gn[..], &n[..]);
            }
            Lookup::WouldBlock if !d.nowait.load(Ordering::Relaxed) => {
                // A file system without RWF_NOWAIT: always deferred.
                eprintln!("no RWF_NOWAIT on this file system; the blocking path serves");
                return;
            }
            _ => panic!("a written slot is a hit"),
        }
        match d.try_get(0, 0, 5, false) {
            Lookup::Hit(gt, None) => assert_eq!(&gt[..], &t[..]),
            _ => panic!("the tile alone is a hit too"),
        }
        assert!(matches!(d.try_get(0, 0, 6, true), Lookup::Miss));
        assert!(matches!(d.try_get(1, 0, 5, false), Lookup::Miss));
        // A slot being written reads as a miss, not as what it held.
        let i = d.slot(0, 0, 5);
        d.slots[i].seq.fetch_add(1, Ordering::SeqCst);
        assert!(matches!(d.try_get(0, 0, 5, true), Lookup::Miss));
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
            // Both read paths: the blocking one and the page-cache one.
            let got = match round % 2 {
                0 => d.get(0, 0, index),
                _ => match d.try_get(0, 0, index, true) {
                    Lookup::Hit(t, n) => Some((t, n.expect("asked with the interior"))),
                    Lookup::Miss | Lookup::WouldBlock => None,
                },
            };
            if let Some((t, n)) = got {
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
