//! C2SP `signed-note` with Ed25519, built on the `signed_note` crate (a port
//! of Go's `golang.org/x/mod/sumdb/note`).

use crate::checkpoint::Checkpoint;

/// Why a note was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("malformed key: {0}")]
    MalformedKey(String),
    #[error("malformed note: {0}")]
    Malformed(String),
    #[error("no signature from a trusted key ({0})")]
    UnknownKey(String),
    #[error("invalid signature by {0}")]
    InvalidSignature(String),
    #[error("malformed checkpoint: {0}")]
    Checkpoint(String),
    #[error("checkpoint origin {got:?} does not match key name {want:?}")]
    OriginMismatch { want: String, got: String },
}

/// An Ed25519 note signer (`PRIVATE+KEY+<name>+<id>+<base64>`).
pub struct Signer {
    // implementation detail
}

impl Signer {
    /// Parses an `skey`.
    pub fn from_skey(skey: &str) -> Result<Self, NoteError> {
        todo!()
    }
    /// Generates a fresh key pair for `name`; returns the signer and its `skey`.
    pub fn generate(name: &str) -> Result<(Self, String), NoteError> {
        todo!()
    }
    pub fn name(&self) -> &str {
        todo!()
    }
    pub fn key_id(&self) -> u32 {
        todo!()
    }
    /// The matching `vkey`: `<name>+<8 hex id>+<base64(0x01 || pubkey)>`.
    pub fn vkey(&self) -> String {
        todo!()
    }
    /// Signs `text` (which must end in a newline) and returns the whole note.
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        todo!()
    }
    /// Signs a checkpoint body; returns the note text.
    pub fn sign_checkpoint(&self, checkpoint: &Checkpoint) -> Result<String, NoteError> {
        todo!()
    }
}

/// An Ed25519 note verifier, from a `vkey`.
#[derive(Clone)]
pub struct Verifier {
    // implementation detail
}

impl Verifier {
    pub fn from_vkey(vkey: &str) -> Result<Self, NoteError> {
        todo!()
    }
    pub fn name(&self) -> &str {
        todo!()
    }
    pub fn key_id(&self) -> u32 {
        todo!()
    }
    pub fn vkey(&self) -> String {
        todo!()
    }
}

/// A note whose signature by a trusted key checked out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedNote {
    /// The signed text (ends in a newline).
    pub text: String,
    /// `(name, key id)` of each trusted key that signed it.
    pub signed_by: Vec<(String, u32)>,
}

/// Opens a note: at least one signature must come from one of `verifiers`
/// and verify; signatures by unknown keys are ignored, as the spec says; a
/// signature by a known key that does not verify rejects the note.
pub fn open(note: &str, verifiers: &[Verifier]) -> Result<VerifiedNote, NoteError> {
    todo!()
}

/// Opens a checkpoint note signed by `verifier` and checks that its origin
/// is the key's name.
pub fn open_checkpoint(note: &str, verifier: &Verifier) -> Result<Checkpoint, NoteError> {
    todo!()
}

/// Splits a note into its text and the checkpoint it carries, without
/// checking any signature (for display, and to find the origin).
pub fn parse_unverified_checkpoint(note: &str) -> Result<Checkpoint, NoteError> {
    todo!()
}
