//! The high-water mark: the newest checkpoint this log's key signed that
//! storage acknowledged, kept in a file beside the key.
//!
//! Storage alone cannot tell that it went back: a database restored from an
//! older backup, or an empty (or wrong) database given a key that already
//! signed a tree, looks like a valid log, and signing on it would fork the
//! log. The mark outlives the database: before the writer signs anything
//! after a start, a restore or a lease takeover (`recovery.rs`), the stored
//! tree must extend the mark — not smaller, the same root at the marked
//! size, and provably consistent with it — or the log refuses writes and
//! says which it found.
//!
//! The mark holds the signed checkpoint note itself, so it is checked with
//! the log's key when read. It is moved after every commit and before the
//! commit's checkpoint is adopted (served, or carried by a receipt), so it
//! sits on the write path of every batch: one durable write, not the four
//! syncs of a replaced file (temporary file, fsync, rename, directory
//! fsync).
//!
//! ## The file: two slots, written in place
//!
//! The file is two slots of `S` bytes (`S` a multiple of 4096; the file is
//! `2·S` long and never changes length once made). Each slot is one header
//! line, the note, and newline padding:
//!
//! ```text
//! stele-mark <seq> <note length> <hex SHA-256 of seq (8 bytes, big-endian) ‖ note>
//! <the signed checkpoint note>
//! ```
//!
//! A move writes the *older* slot in place with the next sequence number
//! and `fdatasync`s it; the newer slot is never touched, so a write torn
//! by a crash damages only the slot being written, and its digest says so.
//! Reading takes the valid slot with the larger checkpoint (then the larger
//! sequence number). After a torn write that is the previous mark: storage
//! is then ahead of the mark, which recovery allows (it moves the mark up).
//!
//! The file is made (and remade: a note larger than its slots, or a mark in
//! the earlier one-note format) through `files::write_atomic`, so no reader
//! ever sees half a file. A file that is just a signed note, the format
//! before slots, is still read.
//!
//! Crash points: between the commit and the mark's write, storage is ahead
//! of the mark; the next start finds the stored tree consistent with the
//! mark and moves the mark up. A mark that cannot be written stops the
//! writer until the process is restarted (the batch is committed but not
//! acknowledged; clients' retries are deduplicated against it once a
//! restarted writer has moved the mark up).
//!
//! Written here rather than taken from a crate: the crates for durable
//! files replace them by rename (the cost this layout removes), and a
//! double-buffered record with a digest is a few dozen lines.

use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use stele_core::checkpoint::Checkpoint;
use stele_core::note::{self, Verifier};

/// The smallest slot, and the unit slots grow by.
const SLOT_UNIT: usize = 4096;
const MAGIC: &str = "stele-mark ";

/// The mark file of a log whose key is `key_file`: `<key_file>.mark`.
pub fn mark_file_for(key_file: &Path) -> PathBuf {
    let mut name = key_file.as_os_str().to_owned();
    name.push(".mark");
    PathBuf::from(name)
}

/// Reads the mark (the newest checkpoint it holds): `None` when the file does not exist (a key that never
/// signed here before, or a deployment from before marks). A mark that
/// cannot be read or does not verify with the log's key is an error: the
/// log must not sign until an operator looks.
pub(crate) async fn load(path: &Path, verifier: &Verifier) -> Result<Option<Checkpoint>, String> {
    let p = path.to_path_buf();
    let read = tokio::task::spawn_blocking(move || std::fs::read(&p))
        .await
        .map_err(|e| format!("reading the high-water mark failed: {e}"))?;
    let bytes = match read {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(format!(
                "cannot read the high-water mark {}: {e}",
                path.display()
            ))
        }
    };
    newest(&bytes, verifier).map(Some).map_err(|e| {
        format!(
            "the high-water mark {} {e}; if the key was replaced on purpose, move the mark away",
            path.display()
        )
    })
}

/// Moves the mark to `note` (a checkpoint storage acknowledged), durably:
/// the older slot is written in place and synced.
pub(crate) async fn store(path: &Path, note: &str) -> Result<(), String> {
    let p = path.to_path_buf();
    let note = note.as_bytes().to_vec();
    tokio::task::spawn_blocking(move || store_blocking(&p, &note))
        .await
        .map_err(|e| format!("writing the high-water mark failed: {e}"))?
        .map_err(|e| format!("cannot write the high-water mark {}: {e:#}", path.display()))
}

fn store_blocking(path: &Path, note: &[u8]) -> anyhow::Result<()> {
    let mut file = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return create(path, 1, note),
        Err(e) => return Err(e.into()),
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let Some(slots) = Slots::of(&bytes) else {
        // The one-note format of before: remade with slots.
        return create(path, 1, note);
    };
    // Keep the slot a reader takes; write the other one.
    let Some((at, _)) = slots.valid().max_by_key(|(_, s)| s.rank()) else {
        anyhow::bail!(
            "neither of its slots is valid; it was damaged, so it is left for an operator to look at"
        );
    };
    let seq = slots.valid().map(|(_, s)| s.seq).max().unwrap_or(0) + 1;
    let Some(slot) = encode(seq, note, slots.size) else {
        // Larger than the slots: remade with larger ones.
        return create(path, seq, note);
    };
    let other = 1 - at;
    file.write_all_at(&slot, (other * slots.size) as u64)?;
    file.sync_data()?;
    Ok(())
}

/// Makes the file anew, atomically: `note` in slot 0, slot 1 empty.
fn create(path: &Path, seq: u64, note: &[u8]) -> anyhow::Result<()> {
    let size = (header(seq, note).len() + note.len() + 1).div_ceil(SLOT_UNIT) * SLOT_UNIT;
    let mut data = encode(seq, note, size).expect("the slot was sized for the note");
    data.resize(2 * size, b'\n');
    crate::files::write_atomic(path, &data)
}

fn digest(seq: u64, note: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(seq.to_be_bytes());
    h.update(note);
    hex::encode(h.finalize())
}

fn header(seq: u64, note: &[u8]) -> String {
    format!("{MAGIC}{seq} {} {}\n", note.len(), digest(seq, note))
}

/// One slot of `size` bytes holding `note`; `None` if it does not fit.
fn encode(seq: u64, note: &[u8], size: usize) -> Option<Vec<u8>> {
    let mut slot = header(seq, note).into_bytes();
    slot.extend_from_slice(note);
    if slot.len() > size {
        return None;
    }
    slot.resize(size, b'\n');
    Some(slot)
}

struct Slot<'a> {
    seq: u64,
    note: &'a str,
}

impl Slot<'_> {
    /// The order slots are read in: the larger checkpoint, then the later
    /// write. (A note that does not parse ranks lowest; reading it fails.)
    fn rank(&self) -> (u64, u64) {
        let size = note::parse_unverified_checkpoint(self.note).map_or(0, |cp| cp.size);
        (size, self.seq)
    }
}

/// A slotted mark file as read.
struct Slots<'a> {
    size: usize,
    slots: [Option<Slot<'a>>; 2],
}

impl<'a> Slots<'a> {
    /// `None` when `bytes` is not in the slotted layout: not two equal
    /// slots of a multiple of 4096 bytes, or neither slot begins like one
    /// (a slot's beginning is only ever damaged while the other is whole).
    fn of(bytes: &'a [u8]) -> Option<Self> {
        let size = bytes.len() / 2;
        if size == 0 || !size.is_multiple_of(SLOT_UNIT) || bytes.len() != 2 * size {
            return None;
        }
        let (a, b) = bytes.split_at(size);
        if !a.starts_with(MAGIC.as_bytes()) && !b.starts_with(MAGIC.as_bytes()) {
            return None;
        }
        Some(Slots {
            size,
            slots: [decode(a), decode(b)],
        })
    }

    fn valid(&self) -> impl Iterator<Item = (usize, &Slot<'a>)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (i, s)))
    }
}

/// A slot whose header parses and whose digest matches its note.
fn decode(slot: &[u8]) -> Option<Slot<'_>> {
    let end = slot.iter().position(|&b| b == b'\n')?;
    let line = std::str::from_utf8(&slot[..end]).ok()?;
    let mut fields = line.strip_prefix(MAGIC)?.split(' ');
    let seq: u64 = fields.next()?.parse().ok()?;
    let len: usize = fields.next()?.parse().ok()?;
    let sum = fields.next()?;
    if fields.next().is_some() {
        return None;
    }
    let note = slot.get(end + 1..end + 1 + len)?;
    if digest(seq, note) != sum {
        return None;
    }
    Some(Slot {
        seq,
        note: std::str::from_utf8(note).ok()?,
    })
}

/// The checkpoint a mark file holds: the valid slot ranked first (as
/// `Slot::rank` ranks, from the verified checkpoint); every valid slot
/// must verify with the log's key, and each is verified once.
fn newest(bytes: &[u8], verifier: &Verifier) -> Result<Checkpoint, String> {
    let open = |text: &str| {
        note::open_checkpoint(text, verifier)
            .map_err(|e| format!("does not verify with the log's key ({e})"))
    };
    let Some(slots) = Slots::of(bytes) else {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| "is neither a signed note nor two mark slots".to_string())?;
        return open(text);
    };
    let mut best: Option<((u64, u64), Checkpoint)> = None;
    for (_, slot) in slots.valid() {
        let cp = open(slot.note)?;
        let rank = (cp.size, slot.seq);
        if best.as_ref().is_none_or(|(r, _)| rank > *r) {
            best = Some((rank, cp));
        }
    }
    best.map(|(_, cp)| cp)
        .ok_or_else(|| "is damaged: neither of its slots is valid".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use stele_core::note::Signer;
    use stele_core::Hash;

    #[test]
    fn the_mark_lives_beside_the_key() {
        assert_eq!(
            mark_file_for(Path::new("/etc/stele/keys/land.skey")),
            PathBuf::from("/etc/stele/keys/land.skey.mark")
        );
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        path: PathBuf,
        signer: Signer,
        verifier: Verifier,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.key.mark");
        let (signer, _) = Signer::generate("example.com/mark").unwrap();
        let verifier = Verifier::from_vkey(&signer.vkey()).unwrap();
        Fixture {
            _dir: dir,
            path,
            signer,
            verifier,
        }
    }

    impl Fixture {
        fn note(&self, size: u64) -> String {
            let root = Hash([size as u8; 32]);
            self.signer
                .sign_checkpoint(&Checkpoint::new("example.com/mark", size, root))
                .unwrap()
        }

        fn load(&self) -> Result<Option<Checkpoint>, String> {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(load(&self.path, &self.verifier))
        }

        fn size(&self) -> u64 {
            self.load().unwrap().expect("a mark").size
        }

        fn store(&self, size: u64) {
            store_blocking(&self.path, self.note(size).as_bytes()).unwrap();
        }
    }

    #[test]
    fn moves_alternate_between_two_slots_of_one_file_that_never_changes_length() {
        let f = fixture();
        assert_eq!(f.load().unwrap(), None);
        f.store(1);
        let len = std::fs::metadata(&f.path).unwrap().len();
        assert_eq!(len, 2 * SLOT_UNIT as u64);
        let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&f.path).unwrap());
        for size in 2..=6 {
            f.store(size);
            assert_eq!(f.size(), size);
            let meta = std::fs::metadata(&f.path).unwrap();
            assert_eq!(meta.len(), len);
            // Written in place, not replaced.
            assert_eq!(std::os::unix::fs::MetadataExt::ino(&meta), inode);
        }
        let bytes = std::fs::read(&f.path).unwrap();
        let slots = Slots::of(&bytes).unwrap();
        let seqs: Vec<u64> = slots.valid().map(|(_, s)| s.seq).collect();
        assert_eq!(seqs, vec![5, 6], "slot 0 holds move 5, slot 1 move 6");
    }

    #[test]
    fn a_torn_write_leaves_the_previous_mark() {
        let f = fixture();
        f.store(10);
        f.store(11);
        f.store(12); // slot 0: size 12 (seq 3); slot 1: size 11 (seq 2)
        let mut bytes = std::fs::read(&f.path).unwrap();
        // The crash tore the write of slot 0 (size 12): its second half
        // never reached the disk.
        for b in &mut bytes[200..SLOT_UNIT] {
            *b = 0;
        }
        std::fs::write(&f.path, &bytes).unwrap();
        assert_eq!(f.size(), 11);
        // The next move goes into the torn slot, not over size 11.
        f.store(13);
        assert_eq!(f.size(), 13);
        let bytes = std::fs::read(&f.path).unwrap();
        let slots = Slots::of(&bytes).unwrap();
        let seqs: Vec<u64> = slots.valid().map(|(_, s)| s.seq).collect();
        assert_eq!(seqs, vec![3, 2], "move 3 went into the torn slot 0");
        // A torn header (the first bytes of the slot) is as harmless.
        let mut bytes = std::fs::read(&f.path).unwrap();
        bytes[0] = b'X';
        std::fs::write(&f.path, &bytes).unwrap();
        assert_eq!(f.size(), 11);
    }

    #[test]
    fn a_file_with_no_valid_slot_is_refused_for_reading_and_writing() {
        let f = fixture();
        f.store(4);
        f.store(5);
        let mut bytes = std::fs::read(&f.path).unwrap();
        // One digit of each note changed: the digests no longer match.
        for at in [0, SLOT_UNIT] {
            let nl = at + bytes[at..].iter().position(|&b| b == b'\n').unwrap();
            bytes[nl + 1] ^= 1;
        }
        std::fs::write(&f.path, &bytes).unwrap();
        let err = f.load().unwrap_err();
        assert!(err.contains("neither of its slots is valid"), "{err}");
        let err = store_blocking(&f.path, f.note(6).as_bytes()).unwrap_err();
        assert!(format!("{err:#}").contains("damaged"), "{err:#}");
        assert_eq!(std::fs::read(&f.path).unwrap(), bytes, "left as it was");
    }

    #[test]
    fn a_mark_signed_by_another_key_is_refused() {
        let f = fixture();
        let other = fixture();
        f.store(3);
        std::fs::copy(&f.path, &other.path).unwrap();
        let err = other.load().unwrap_err();
        assert!(err.contains("does not verify with the log's key"), "{err}");
        // Also when only the older slot is another key's.
        let third = fixture();
        third.store(1);
        let theirs = std::fs::read(&third.path).unwrap();
        f.store(4);
        let mut bytes = std::fs::read(&f.path).unwrap();
        bytes[..SLOT_UNIT].copy_from_slice(&theirs[..SLOT_UNIT]);
        std::fs::write(&f.path, &bytes).unwrap();
        let err = f.load().unwrap_err();
        assert!(err.contains("does not verify with the log's key"), "{err}");
    }

    #[test]
    fn a_mark_in_the_one_note_format_is_read_and_then_remade_with_slots() {
        let f = fixture();
        std::fs::write(&f.path, f.note(7)).unwrap();
        assert_eq!(f.size(), 7);
        f.store(8);
        assert_eq!(f.size(), 8);
        assert_eq!(
            std::fs::metadata(&f.path).unwrap().len(),
            2 * SLOT_UNIT as u64
        );
        // A note that does not verify in that format is refused too.
        std::fs::write(&f.path, fixture().note(7)).unwrap();
        let err = f.load().unwrap_err();
        assert!(err.contains("does not verify"), "{err}");
    }

    #[test]
    fn a_note_larger_than_the_slots_remakes_the_file_with_larger_ones() {
        let f = fixture();
        f.store(1);
        // A checkpoint with extension lines beyond 4 KiB.
        let mut big = Checkpoint::new("example.com/mark", 2, Hash([2; 32]));
        big.extensions = (0..100)
            .map(|i| format!("extension line {i:060}"))
            .collect();
        let note = f.signer.sign_checkpoint(&big).unwrap();
        assert!(note.len() > SLOT_UNIT);
        store_blocking(&f.path, note.as_bytes()).unwrap();
        let len = std::fs::metadata(&f.path).unwrap().len();
        assert_eq!(len % (2 * SLOT_UNIT as u64), 0);
        assert!(len > 2 * SLOT_UNIT as u64);
        assert_eq!(f.load().unwrap().unwrap(), big);
        f.store(3);
        assert_eq!(f.size(), 3);
        assert_eq!(std::fs::metadata(&f.path).unwrap().len(), len);
    }
}
