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
//! The file holds the signed checkpoint note itself, so it needs no format
//! of its own and is checked with the log's key when read. It is replaced
//! atomically (`files::write_atomic`: a synced temporary file renamed over
//! it) after every commit and before the commit's checkpoint is adopted
//! (served, or carried by a receipt).
//!
//! Crash points: between the commit and the mark's write, storage is ahead
//! of the mark; the next start finds the stored tree consistent with the
//! mark and moves the mark up. A mark that cannot be written stops the
//! writer until the process is restarted (the batch is committed but not
//! acknowledged; clients' retries are deduplicated against it once a
//! restarted writer has moved the mark up).

use std::path::{Path, PathBuf};

use stele_core::checkpoint::Checkpoint;
use stele_core::note::{self, Verifier};

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
    let read = tokio::task::spawn_blocking(move || std::fs::read_to_string(&p))
        .await
        .map_err(|e| format!("reading the high-water mark failed: {e}"))?;
    let text = match read {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(format!(
                "cannot read the high-water mark {}: {e}",
                path.display()
            ))
        }
    };
    note::open_checkpoint(&text, verifier).map(Some).map_err(|e| {
        format!(
            "the high-water mark {} does not verify with the log's key ({e}); if the key was replaced on purpose, move the mark away",
            path.display()
        )
    })
}

/// Replaces the mark with `note` (a checkpoint storage acknowledged),
/// durably and atomically.
pub(crate) async fn store(path: &Path, note: &str) -> Result<(), String> {
    let p = path.to_path_buf();
    let data = note.as_bytes().to_vec();
    tokio::task::spawn_blocking(move || crate::files::write_atomic(&p, &data))
        .await
        .map_err(|e| format!("writing the high-water mark failed: {e}"))?
        .map_err(|e| format!("cannot write the high-water mark {}: {e:#}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mark_lives_beside_the_key() {
        assert_eq!(
            mark_file_for(Path::new("/etc/stele/keys/land.skey")),
            PathBuf::from("/etc/stele/keys/land.skey.mark")
        );
    }
}
