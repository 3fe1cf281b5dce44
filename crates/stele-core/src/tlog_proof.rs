//! C2SP `tlog-proof@v1`: an offline-verifiable proof of inclusion.
//!
//! ```text
//! c2sp.org/tlog-proof@v1
//! [extra <base64>]
//! index <N>
//! <base64 hash>...
//!
//! <checkpoint note, verbatim>
//! ```

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::checkpoint::{parse_size, short, Checkpoint};
use crate::note::Verifier;
use crate::step::{ReceiptError, Step};
use crate::{Error, Hash};

/// A parsed `tlog-proof@v1`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlogProof {
    pub extra: Option<Vec<u8>>,
    pub index: u64,
    pub proof: Vec<Hash>,
    /// The signed checkpoint note, verbatim.
    pub checkpoint: String,
}

/// The first line of every `tlog-proof@v1`.
pub const HEADER: &str = "c2sp.org/tlog-proof@v1";

/// Appends everything of a `tlog-proof@v1` before the checkpoint (header,
/// `extra` and `index` lines, the proof hashes, the empty line), ending each
/// line with `newline`: `b"\n"` for the text itself, or `b"\\n"` to write it
/// inside a JSON string (the head is ASCII with no other character that JSON
/// escapes), as the receipt writer of the HTTP layer does.
pub fn write_head(
    out: &mut Vec<u8>,
    extra: Option<&[u8]>,
    index: u64,
    proof: &[Hash],
    newline: &[u8],
) {
    out.extend_from_slice(HEADER.as_bytes());
    out.extend_from_slice(newline);
    if let Some(extra) = extra {
        out.extend_from_slice(b"extra ");
        out.extend_from_slice(STANDARD.encode(extra).as_bytes());
        out.extend_from_slice(newline);
    }
    out.extend_from_slice(b"index ");
    out.extend_from_slice(index.to_string().as_bytes());
    out.extend_from_slice(newline);
    for h in proof {
        let mut buf = [0u8; 44];
        let n = STANDARD
            .encode_slice(h.as_bytes(), &mut buf)
            .expect("44 bytes hold the base64 of 32");
        out.extend_from_slice(&buf[..n]);
        out.extend_from_slice(newline);
    }
    out.extend_from_slice(newline);
}

/// Inclusion proofs in trees below 2^63 leaves have at most 63 hashes.
const MAX_PROOF_HASHES: usize = 63;

impl TlogProof {
    /// Parses strictly: the header line, an optional `extra <base64>` line,
    /// `index <N>` (canonical decimal below 2^63), zero or more base64
    /// hashes (exactly 32 bytes each), an empty line, then a non-empty
    /// checkpoint note kept verbatim (its signature is checked by
    /// [`TlogProof::verify`], not here).
    pub fn parse(text: &str) -> Result<Self, Error> {
        let bad = |why: String| Error::malformed("tlog-proof", why);
        let mut rest = text;
        let mut next_line = |what: &str| -> Result<&str, Error> {
            let (line, tail) = rest
                .split_once('\n')
                .ok_or_else(|| Error::malformed("tlog-proof", format!("ends before the {what}")))?;
            rest = tail;
            Ok(line)
        };
        if next_line("header")? != HEADER {
            return Err(bad(format!("first line is not {HEADER:?}")));
        }
        let mut line = next_line("index line")?;
        let mut extra = None;
        if let Some(b64) = line.strip_prefix("extra ") {
            extra = Some(
                STANDARD
                    .decode(b64)
                    .map_err(|e| bad(format!("extra is not base64: {e}")))?,
            );
            line = next_line("index line")?;
        }
        let index_text = line
            .strip_prefix("index ")
            .ok_or_else(|| bad(format!("expected \"index <N>\", got {:?}", short(line))))?;
        let index = parse_size(index_text).ok_or_else(|| {
            bad(format!(
                "index {:?} is not a canonical decimal below 2^63",
                short(index_text)
            ))
        })?;
        let mut proof = Vec::new();
        loop {
            let line = next_line("empty line before the checkpoint")?;
            if line.is_empty() {
                break;
            }
            if proof.len() == MAX_PROOF_HASHES {
                return Err(bad(format!("more than {MAX_PROOF_HASHES} proof hashes")));
            }
            let h = Hash::from_base64(line)
                .map_err(|e| bad(format!("proof hash {}: {e}", proof.len())))?;
            proof.push(h);
        }
        if rest.is_empty() {
            return Err(bad("no checkpoint after the empty line".into()));
        }
        Ok(TlogProof {
            extra,
            index,
            proof,
            checkpoint: rest.to_string(),
        })
    }

    pub fn encode(&self) -> String {
        let mut out = Vec::with_capacity(64 + 45 * self.proof.len() + self.checkpoint.len());
        write_head(
            &mut out,
            self.extra.as_deref(),
            self.index,
            &self.proof,
            b"\n",
        );
        out.extend_from_slice(self.checkpoint.as_bytes());
        String::from_utf8(out).expect("ASCII head, UTF-8 checkpoint")
    }

    /// Verifies that `leaf` is at `index` in the checkpoint, and that the
    /// checkpoint is signed by `verifier`.
    pub fn verify(&self, leaf: &[u8], verifier: &Verifier) -> Result<Checkpoint, ReceiptError> {
        let checkpoint =
            crate::note::open_checkpoint(&self.checkpoint, verifier).map_err(|e| ReceiptError {
                step: Step::CheckpointSignature,
                detail: e.to_string(),
            })?;
        crate::merkle::verify_inclusion(
            &crate::leaf_hash(leaf),
            self.index,
            checkpoint.size,
            &self.proof,
            &checkpoint.root,
        )
        .map_err(|e| ReceiptError {
            step: Step::InclusionProof,
            detail: format!(
                "leaf {} in tree of size {}: {e}",
                self.index, checkpoint.size
            ),
        })?;
        Ok(checkpoint)
    }
}
