//! C2SP `signed-note` with Ed25519, built on the `signed_note` crate (a port
//! of Go's `golang.org/x/mod/sumdb/note`).
//!
//! The crate does the note grammar, key ids and signature checks; this module
//! adds what it leaves to callers: recovering the `vkey` of an `skey`,
//! canonical `vkey` text, a verifier list that tolerates the same key given
//! twice, and mapping its errors to [`NoteError`].

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use signed_note::{
    Note, NoteError as CrateError, Signer as _, StandardSigner, StandardVerifier,
    VerificationError, Verifier as _, Verifiers,
};

use crate::checkpoint::{short, Checkpoint};

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

/// Algorithm byte of Ed25519 keys in `vkey`/`skey` forms.
const ALG_ED25519: u8 = 0x01;

/// An Ed25519 note signer (`PRIVATE+KEY+<name>+<id>+<base64>`).
pub struct Signer {
    inner: StandardSigner,
    vkey: String,
}

impl Signer {
    /// Parses an `skey`.
    pub fn from_skey(skey: &str) -> Result<Self, NoteError> {
        let inner =
            StandardSigner::new(skey).map_err(|e| NoteError::MalformedKey(format!("skey: {e}")))?;
        // The crate checked the form; recover the public key for the vkey.
        // The key is everything after the fourth '+' (base64 may contain '+').
        let key64 = skey.splitn(5, '+').nth(4).unwrap_or_default();
        let key = STANDARD
            .decode(key64)
            .map_err(|_| NoteError::MalformedKey("skey: bad base64".into()))?;
        let seed: [u8; 32] = match key.split_first() {
            Some((&ALG_ED25519, seed)) => seed
                .try_into()
                .map_err(|_| NoteError::MalformedKey("skey: Ed25519 key is not 32 bytes".into()))?,
            _ => return Err(NoteError::MalformedKey("skey: not an Ed25519 key".into())),
        };
        let public = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key();
        let vkey = signed_note::new_ed25519_verifier_key(inner.name(), &public);
        Ok(Signer { inner, vkey })
    }

    /// Generates a fresh key pair for `name`; returns the signer and its `skey`.
    pub fn generate(name: &str) -> Result<(Self, String), NoteError> {
        if !signed_note::is_key_name_valid(name) {
            return Err(NoteError::MalformedKey(format!(
                "key name {:?} is empty or has spaces or '+'",
                short(name)
            )));
        }
        let (skey, _vkey) = signed_note::generate_key(&mut rand_core::OsRng, name);
        let signer = Self::from_skey(&skey)?;
        Ok((signer, skey))
    }

    pub fn name(&self) -> &str {
        self.inner.name()
    }

    pub fn key_id(&self) -> u32 {
        self.inner.key_id()
    }

    /// The matching `vkey`: `<name>+<8 hex id>+<base64(0x01 || pubkey)>`.
    pub fn vkey(&self) -> String {
        self.vkey.clone()
    }

    /// Signs `text` (which must end in a newline) and returns the whole note.
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        let mut note = Note::new(text.as_bytes(), &[]).map_err(|_| {
            NoteError::Malformed(
                "text must be UTF-8 without control characters and end in a newline".into(),
            )
        })?;
        note.add_sigs(&[&self.inner])
            .map_err(|e| NoteError::Malformed(format!("signing failed: {e}")))?;
        String::from_utf8(note.to_bytes())
            .map_err(|_| NoteError::Malformed("note is not UTF-8".into()))
    }

    /// Signs a checkpoint body; returns the note text.
    pub fn sign_checkpoint(&self, checkpoint: &Checkpoint) -> Result<String, NoteError> {
        let body = checkpoint.to_body();
        // Never sign text that verifiers would refuse, or read differently
        // (a newline inside the origin or an extension line).
        let parsed = Checkpoint::parse(&body).map_err(|e| NoteError::Checkpoint(e.to_string()))?;
        if parsed != *checkpoint {
            return Err(NoteError::Checkpoint("a field contains a newline".into()));
        }
        self.sign(&body)
    }
}

/// An Ed25519 note verifier, from a `vkey`.
#[derive(Clone)]
pub struct Verifier {
    inner: StandardVerifier,
    vkey: String,
}

impl Verifier {
    pub fn from_vkey(vkey: &str) -> Result<Self, NoteError> {
        let inner = StandardVerifier::new(vkey)
            .map_err(|e| NoteError::MalformedKey(format!("vkey: {e}")))?;
        // Canonical text: lowercase key id, whatever case the input used.
        let key64 = vkey.splitn(3, '+').nth(2).unwrap_or_default();
        let vkey = format!("{}+{:08x}+{}", inner.name(), inner.key_id(), key64);
        Ok(Verifier { inner, vkey })
    }

    pub fn name(&self) -> &str {
        self.inner.name()
    }

    pub fn key_id(&self) -> u32 {
        self.inner.key_id()
    }

    pub fn vkey(&self) -> String {
        self.vkey.clone()
    }
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Verifier").field(&self.vkey).finish()
    }
}

/// The trusted keys, looked up by `(name, key id)`. The same key listed
/// twice is one key; two different keys with one name and id are ambiguous.
struct TrustedKeys<'a>(&'a [Verifier]);

impl Verifiers for TrustedKeys<'_> {
    fn verifier(
        &self,
        name: &str,
        id: u32,
    ) -> Result<&dyn signed_note::Verifier, VerificationError> {
        let mut found = self
            .0
            .iter()
            .filter(|v| v.name() == name && v.key_id() == id);
        let Some(first) = found.next() else {
            return Err(VerificationError::UnknownKey {
                name: name.to_owned(),
                id,
            });
        };
        if found.any(|v| v.vkey != first.vkey) {
            return Err(VerificationError::AmbiguousKey {
                name: name.to_owned(),
                id,
            });
        }
        Ok(&first.inner)
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

pub(crate) fn parse_note(note: &str) -> Result<Note, NoteError> {
    Note::from_bytes(note.as_bytes()).map_err(|_| {
        NoteError::Malformed(
            "expected UTF-8 text without control characters, a blank line, then one or more \
             \"— <name> <base64>\" signature lines each ending in a newline"
                .into(),
        )
    })
}

/// Verifies `note` against `keys` (any [`Verifiers`]: log keys here,
/// witness keys in [`crate::cosignature`]) and returns its text and the
/// signatures that verified. The rules of [`open`]; `trusted` describes the
/// keys for the error when none of them signed.
pub(crate) fn open_with(
    note: &str,
    keys: &impl Verifiers,
    trusted: impl FnOnce() -> Vec<String>,
) -> Result<(String, Vec<signed_note::Signature>), NoteError> {
    let parsed = parse_note(note)?;
    let (verified, _unknown) = parsed.verify(keys).map_err(|e| match e {
        CrateError::UnverifiedNote => {
            let trusted = trusted();
            NoteError::UnknownKey(format!(
                "trusted: {}",
                if trusted.is_empty() {
                    "none".into()
                } else {
                    trusted.join(", ")
                }
            ))
        }
        CrateError::InvalidSignature { name, id } => {
            NoteError::InvalidSignature(format!("{name}+{id:08x}"))
        }
        other => NoteError::Malformed(other.to_string()),
    })?;
    let text = String::from_utf8(parsed.text().to_vec())
        .map_err(|_| NoteError::Malformed("text is not UTF-8".into()))?;
    Ok((text, verified))
}

/// Opens a note: at least one signature must come from one of `verifiers`
/// and verify; signatures by unknown keys are ignored, as the spec says; a
/// signature by a known key that does not verify rejects the note.
pub fn open(note: &str, verifiers: &[Verifier]) -> Result<VerifiedNote, NoteError> {
    open_with_signatures(note, verifiers).map(|(opened, _lines)| opened)
}

/// [`open`], and also the signature lines that verified, verbatim (each
/// `— <name> <base64>\n`), e.g. to keep a checkpoint with only its trusted
/// signatures.
pub fn open_with_signatures(
    note: &str,
    verifiers: &[Verifier],
) -> Result<(VerifiedNote, Vec<String>), NoteError> {
    let (text, verified) = open_with(note, &TrustedKeys(verifiers), || {
        verifiers
            .iter()
            .map(|v| format!("{}+{:08x}", v.name(), v.key_id()))
            .collect()
    })?;
    let lines = verified
        .iter()
        .map(|s| String::from_utf8_lossy(&s.to_bytes()).into_owned())
        .collect();
    let signed_by = verified
        .iter()
        .map(|s| (s.name().to_owned(), s.id()))
        .collect();
    Ok((VerifiedNote { text, signed_by }, lines))
}

/// Opens a checkpoint note signed by `verifier` and checks that its origin
/// is the key's name.
pub fn open_checkpoint(note: &str, verifier: &Verifier) -> Result<Checkpoint, NoteError> {
    let opened = open(note, std::slice::from_ref(verifier))?;
    let checkpoint =
        Checkpoint::parse(&opened.text).map_err(|e| NoteError::Checkpoint(e.to_string()))?;
    if checkpoint.origin != verifier.name() {
        return Err(NoteError::OriginMismatch {
            want: verifier.name().to_owned(),
            got: checkpoint.origin,
        });
    }
    Ok(checkpoint)
}

/// The text of a note (ending in a newline), without checking any signature.
pub fn parse_unverified_text(note: &str) -> Result<String, NoteError> {
    let parsed = parse_note(note)?;
    String::from_utf8(parsed.text().to_vec())
        .map_err(|_| NoteError::Malformed("text is not UTF-8".into()))
}

/// Splits a note into its text and the checkpoint it carries, without
/// checking any signature (for display, and to find the origin).
pub fn parse_unverified_checkpoint(note: &str) -> Result<Checkpoint, NoteError> {
    let parsed = parse_note(note)?;
    let text = std::str::from_utf8(parsed.text())
        .map_err(|_| NoteError::Malformed("text is not UTF-8".into()))?;
    Checkpoint::parse(text).map_err(|e| NoteError::Checkpoint(e.to_string()))
}
