//! C2SP `tlog-witness`, the `add-checkpoint` protocol, without I/O: the
//! request body ([`AddCheckpointRequest`]), the decision of a witness
//! ([`Witness::add_checkpoint`]), and what a log makes of the answer
//! ([`parse_response`]).
//!
//! # The request
//!
//! ```text
//! old <size>\n
//! <base64 hash>\n      (zero to 63 consistency proof lines)
//! \n
//! <checkpoint note>    (the log's signed checkpoint, verbatim)
//! ```
//!
//! # The decision, in the spec's order
//!
//! | check | answer |
//! |---|---|
//! | the body is not the form above, or over [`MAX_REQUEST_BYTES`] | `400` |
//! | the checkpoint's origin is not a log this witness witnesses | `404` |
//! | no signature from the log's key, or one that does not verify | `403` |
//! | the note or the checkpoint body is malformed | `400` |
//! | old size above the checkpoint's size | `400` |
//! | old size is not the size last cosigned (0 if never) | `409`, `text/x.tlog.size`, `<size>\n` |
//! | a size-0 checkpoint whose root is not the empty tree's | `422` |
//! | same size as last cosigned, different root | `409` (plain text: no size, so a client does not retry from it) |
//! | the consistency proof from the stored root does not verify (or is not empty when the old size is 0) | `422` |
//! | the clock reads earlier than the last cosignature | `503` (never date a larger tree before a smaller one) |
//! | otherwise | `200`, the cosignature line |
//!
//! The `409` for a root mismatch carries no `text/x.tlog.size` body: the
//! spec defines that body for a stale old size, and clients (Tessera's)
//! retry from it, which for a fork would loop forever. The size-0 rule and
//! the monitoring path [`monitoring_path`] are from the spec's editor's
//! draft; the rest is `tlog-witness` as published.
//!
//! What a witness stores per origin is [`WitnessedState`]; the caller must
//! read it, decide, and store the new state with a compare-and-set on the
//! old one, durably, before answering (see the witness server).

use sha2::{Digest, Sha256};

use crate::checkpoint::{parse_size, short, Checkpoint};
use crate::cosignature::{verify_cosignature_lines, Cosignature, CosignatureVerifier, Cosigner};
use crate::merkle::verify_consistency;
use crate::note::{self, NoteError, Verifier};
use crate::{Hash, EMPTY_ROOT};

/// Most consistency proof lines a request may carry (the spec's limit).
pub const MAX_PROOF_LINES: usize = 63;
/// Largest request body a witness reads, in bytes: room for a checkpoint
/// with many signatures (the spec's note limit is at least 16 signatures,
/// post-quantum ones up to ~5 kB each) and 63 proof lines.
pub const MAX_REQUEST_BYTES: usize = 128 * 1024;
/// Content type of a `409` body naming the witness's size.
pub const SIZE_CONTENT_TYPE: &str = "text/x.tlog.size";
/// The path of the call, under the witness's submission prefix.
pub const ADD_CHECKPOINT_PATH: &str = "/add-checkpoint";

/// A parsed `add-checkpoint` request body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddCheckpointRequest {
    /// The size of the checkpoint the log believes the witness last
    /// cosigned (0 if it does not know).
    pub old_size: u64,
    /// Consistency proof from `old_size` to the checkpoint's size.
    pub proof: Vec<Hash>,
    /// The signed checkpoint note, verbatim.
    pub checkpoint: String,
}

/// Why a request body is not an `add-checkpoint` request (a `400`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed add-checkpoint request: {0}")]
pub struct MalformedRequest(pub String);

impl AddCheckpointRequest {
    pub fn new(old_size: u64, proof: Vec<Hash>, checkpoint: impl Into<String>) -> Self {
        AddCheckpointRequest {
            old_size,
            proof,
            checkpoint: checkpoint.into(),
        }
    }

    /// The request body, byte for byte as the spec writes it.
    pub fn encode(&self) -> String {
        let mut out = format!("old {}\n", self.old_size);
        for h in &self.proof {
            out.push_str(&h.to_base64());
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&self.checkpoint);
        out
    }

    /// Parses a request body strictly: `old <canonical decimal>`, at most
    /// [`MAX_PROOF_LINES`] lines of padded base64 of exactly 32 bytes, an
    /// empty line, then the checkpoint (whose note grammar and signatures
    /// are checked later, by [`Witness::add_checkpoint`]).
    pub fn parse(body: &[u8]) -> Result<Self, MalformedRequest> {
        let bad = |why: String| MalformedRequest(why);
        if body.len() > MAX_REQUEST_BYTES {
            return Err(bad(format!("body is over {MAX_REQUEST_BYTES} bytes")));
        }
        let body = std::str::from_utf8(body).map_err(|_| bad("body is not UTF-8".into()))?;
        let (head, checkpoint) = body
            .split_once("\n\n")
            .ok_or_else(|| bad("no empty line before the checkpoint".into()))?;
        let mut lines = head.split('\n');
        let old_line = lines.next().unwrap_or_default();
        let old = old_line.strip_prefix("old ").ok_or_else(|| {
            bad(format!(
                "first line {:?} is not `old <size>`",
                short(old_line)
            ))
        })?;
        let old_size = parse_size(old).ok_or_else(|| {
            bad(format!(
                "old size {:?} is not a decimal below 2^63 without leading zeroes",
                short(old)
            ))
        })?;
        let mut proof = Vec::new();
        for line in lines {
            if proof.len() == MAX_PROOF_LINES {
                return Err(bad(format!(
                    "more than {MAX_PROOF_LINES} consistency proof lines"
                )));
            }
            proof
                .push(Hash::from_base64(line).map_err(|e| {
                    bad(format!("consistency proof line {}: {e}", proof.len() + 1))
                })?);
        }
        if checkpoint.is_empty() {
            return Err(bad("no checkpoint after the empty line".into()));
        }
        Ok(AddCheckpointRequest {
            old_size,
            proof,
            checkpoint: checkpoint.to_owned(),
        })
    }

    /// The checkpoint's origin: its first line (unverified).
    pub fn origin(&self) -> Option<&str> {
        self.checkpoint.split_once('\n').map(|(o, _)| o)
    }
}

/// What a witness keeps per origin: its latest cosigned checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WitnessedState {
    pub size: u64,
    pub root: Hash,
    /// The timestamp of its cosignature.
    pub timestamp: u64,
}

/// Why a witness refuses a checkpoint; [`Rejection::status`] is the HTTP
/// status the spec prescribes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// `400`: the body, the note or the checkpoint is malformed.
    #[error("{0}")]
    Malformed(String),
    /// `400`: the old size is above the checkpoint's size.
    #[error("old size {old} is above the checkpoint size {size}")]
    OldSizeTooLarge { old: u64, size: u64 },
    /// `404`: not a log this witness witnesses.
    #[error("unknown origin {0:?}")]
    UnknownOrigin(String),
    /// `403`: no signature from the log's key verifies, or one fails.
    #[error("no valid signature from the log's key: {0}")]
    Forbidden(String),
    /// `409` with `text/x.tlog.size`: the witness's size is `current`.
    #[error("old size {old} is not the witness's size {current}")]
    SizeConflict { old: u64, current: u64 },
    /// `409` (plain): same size as the cosigned checkpoint, another root.
    #[error("the witness cosigned a different root at size {size}: refusing a fork")]
    RootMismatch { size: u64 },
    /// `422`: the consistency proof does not verify.
    #[error("consistency proof from size {old} to {size} does not verify: {why}")]
    InvalidProof { old: u64, size: u64, why: String },
    /// `503`: the clock reads before the witness's last cosignature.
    #[error("clock reads {now}, before the last cosignature's time {last}")]
    ClockBehind { now: u64, last: u64 },
}

impl Rejection {
    /// The status the spec prescribes (`503` for the clock, which the spec
    /// does not cover: the witness is not able to answer right now).
    pub fn status(&self) -> u16 {
        match self {
            Rejection::Malformed(_) | Rejection::OldSizeTooLarge { .. } => 400,
            Rejection::Forbidden(_) => 403,
            Rejection::UnknownOrigin(_) => 404,
            Rejection::SizeConflict { .. } | Rejection::RootMismatch { .. } => 409,
            Rejection::InvalidProof { .. } => 422,
            Rejection::ClockBehind { .. } => 503,
        }
    }

    /// Content type and body of the answer: `text/x.tlog.size` and
    /// `<size>\n` for a size conflict; otherwise a line of plain text.
    pub fn body(&self) -> (&'static str, String) {
        match self {
            Rejection::SizeConflict { current, .. } => (SIZE_CONTENT_TYPE, format!("{current}\n")),
            other => ("text/plain; charset=utf-8", format!("{other}\n")),
        }
    }
}

/// What the witness answers and stores for an accepted checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cosigned {
    /// The body of the `200`: the witness's cosignature line(s).
    pub response: String,
    /// The state to store for the origin.
    pub state: WitnessedState,
    /// The checkpoint as the witness keeps it for monitors: the note text,
    /// the log signatures that verified, and this witness's cosignature.
    pub note: String,
    pub checkpoint: Checkpoint,
}

/// A witness: its key and the logs it witnesses (origin → log keys).
pub struct Witness {
    cosigner: Cosigner,
    logs: Vec<(String, Vec<Verifier>)>,
}

impl Witness {
    /// A witness of `logs`; each log's keys must be named by its origin.
    pub fn new(cosigner: Cosigner, logs: Vec<(String, Vec<Verifier>)>) -> Result<Self, NoteError> {
        for (origin, keys) in &logs {
            if keys.is_empty() {
                return Err(NoteError::MalformedKey(format!(
                    "log {origin:?} has no key"
                )));
            }
            if let Some(k) = keys.iter().find(|k| k.name() != origin) {
                return Err(NoteError::OriginMismatch {
                    want: origin.clone(),
                    got: k.name().to_owned(),
                });
            }
        }
        Ok(Witness { cosigner, logs })
    }

    pub fn cosigner(&self) -> &Cosigner {
        &self.cosigner
    }

    /// The keys of the log with `origin`, if witnessed.
    pub fn log_keys(&self, origin: &str) -> Option<&[Verifier]> {
        self.logs
            .iter()
            .find(|(o, _)| o == origin)
            .map(|(_, k)| k.as_slice())
    }

    pub fn origins(&self) -> impl Iterator<Item = &str> {
        self.logs.iter().map(|(o, _)| o.as_str())
    }

    /// The decision on `request`, given the witness's stored state for the
    /// checkpoint's origin (`None` if it never cosigned one) and the time.
    /// On acceptance the checkpoint is cosigned as of `now`; the caller
    /// must store [`Cosigned::state`] (compare-and-set on `state`) durably
    /// before sending [`Cosigned::response`].
    pub fn add_checkpoint(
        &self,
        request: &AddCheckpointRequest,
        state: Option<&WitnessedState>,
        now: u64,
    ) -> Result<Cosigned, Rejection> {
        let origin = request
            .origin()
            .ok_or_else(|| Rejection::Malformed("the checkpoint has no origin line".into()))?;
        let keys = self
            .log_keys(origin)
            .ok_or_else(|| Rejection::UnknownOrigin(short(origin).to_owned()))?;
        let (opened, log_lines) =
            note::open_with_signatures(&request.checkpoint, keys).map_err(|e| match e {
                NoteError::UnknownKey(_) | NoteError::InvalidSignature(_) => {
                    Rejection::Forbidden(e.to_string())
                }
                other => Rejection::Malformed(other.to_string()),
            })?;
        let checkpoint = Checkpoint::parse(&opened.text)
            .map_err(|e| Rejection::Malformed(format!("checkpoint: {e}")))?;
        let (old, size) = (request.old_size, checkpoint.size);
        if old > size {
            return Err(Rejection::OldSizeTooLarge { old, size });
        }
        let (stored_size, stored_root) = state.map_or((0, EMPTY_ROOT), |s| (s.size, s.root));
        if old != stored_size {
            return Err(Rejection::SizeConflict {
                old,
                current: stored_size,
            });
        }
        if size == 0 && checkpoint.root != EMPTY_ROOT {
            return Err(Rejection::InvalidProof {
                old,
                size,
                why: "a checkpoint of size 0 must have the empty tree's root".into(),
            });
        }
        if size == stored_size && checkpoint.root != stored_root {
            return Err(Rejection::RootMismatch { size });
        }
        verify_consistency(old, size, &stored_root, &checkpoint.root, &request.proof).map_err(
            |e| Rejection::InvalidProof {
                old,
                size,
                why: e.to_string(),
            },
        )?;
        if let Some(last) = state.map(|s| s.timestamp).filter(|last| now < *last) {
            return Err(Rejection::ClockBehind { now, last });
        }
        let line = self
            .cosigner
            .cosign(&opened.text, now)
            .map_err(|e| Rejection::Malformed(e.to_string()))?;
        let mut stored = format!("{}\n", opened.text);
        for l in &log_lines {
            stored.push_str(l);
        }
        stored.push_str(&line);
        Ok(Cosigned {
            response: line,
            state: WitnessedState {
                size,
                root: checkpoint.root,
                timestamp: now,
            },
            note: stored,
            checkpoint,
        })
    }
}

/// The monitoring path of an origin's latest cosigned checkpoint, under the
/// witness's monitoring prefix: `/<lowercase hex SHA-256(origin)>/checkpoint`.
pub fn monitoring_path(origin: &str) -> String {
    format!(
        "/{}/checkpoint",
        hex::encode(Sha256::digest(origin.as_bytes()))
    )
}

/// What a witness answered to `add-checkpoint`, as a log reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddCheckpointResponse {
    /// `200`: the signature lines (verify them with [`verify_cosignatures_response`]).
    Cosigned(String),
    /// `409` with `text/x.tlog.size`: the witness's size; send a
    /// consistency proof from there.
    SizeConflict(u64),
    /// Any other answer: the status and the body's text (e.g. `409` for a
    /// fork, `422` for a bad proof, `403`, `404`).
    Refused { status: u16, message: String },
}

/// Most characters of a refusal's text kept in [`AddCheckpointResponse::Refused`].
const MAX_MESSAGE_CHARS: usize = 256;

/// Reads a witness's answer. A `409` whose content type is
/// `text/x.tlog.size` must hold `<size>\n`; anything else there is an
/// error. Content-type parameters are ignored.
pub fn parse_response(
    status: u16,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<AddCheckpointResponse, MalformedRequest> {
    let text = String::from_utf8_lossy(body);
    let media = content_type
        .map(|c| c.split(';').next().unwrap_or_default().trim())
        .unwrap_or_default();
    match status {
        200 => Ok(AddCheckpointResponse::Cosigned(text.into_owned())),
        409 if media.eq_ignore_ascii_case(SIZE_CONTENT_TYPE) => {
            let size = text
                .strip_suffix('\n')
                .and_then(parse_size)
                .ok_or_else(|| {
                    MalformedRequest(format!("409 body {:?} is not `<size>\\n`", short(&text)))
                })?;
            Ok(AddCheckpointResponse::SizeConflict(size))
        }
        _ => Ok(AddCheckpointResponse::Refused {
            status,
            message: text.trim_end().chars().take(MAX_MESSAGE_CHARS).collect(),
        }),
    }
}

/// Verifies the body of a `200` against the checkpoint note that was sent
/// and the witness's key: returns its valid cosignatures (none if the body
/// holds only lines of other keys; an error if a line is malformed or a
/// line of this key does not verify).
pub fn verify_cosignatures_response(
    checkpoint_note: &str,
    body: &str,
    witness: &CosignatureVerifier,
) -> Result<Vec<Cosignature>, NoteError> {
    let text = note::parse_unverified_text(checkpoint_note)?;
    verify_cosignature_lines(&text, body, std::slice::from_ref(witness))
}
