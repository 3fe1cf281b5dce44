//! C2SP `tlog-cosignature`: timestamped Ed25519 witness cosignatures
//! (`cosignature/v1`, signature type `0x04`).
//!
//! A cosignature is a signed-note signature line on a checkpoint,
//! `— <witness name> base64(key ID || timestamp || signature)`, where
//!
//! - the key ID is `SHA-256(<name> || "\n" || 0x04 || public key)[:4]`
//!   ([`key_id`]);
//! - the timestamp is a big-endian `u64` of seconds since the UNIX epoch, at
//!   most 2^63 - 1 ([`MAX_TIMESTAMP`]);
//! - the Ed25519 signature is over [`signed_message`]:
//!   `cosignature/v1\ntime <timestamp>\n` followed by the whole checkpoint
//!   body (extension lines included).
//!
//! Keys: a witness's verifier key is the vkey
//! `<name>+<8 hex key ID>+base64(0x04 || 32-byte public key)`; its private key
//! is written like a note `skey` with the same type byte,
//! `PRIVATE+KEY+<name>+<8 hex key ID>+base64(0x04 || 32-byte seed)` (the form
//! `transparency-dev/formats` also reads). The type byte keeps witness keys
//! and log keys apart: a cosigning key is not accepted where a log key
//! (`0x01`) is expected, and the other way round.
//!
//! Only the Ed25519 type is implemented; the ML-DSA-44 type (`0x06`,
//! `subtree/v1`) is not. Time is always passed in: nothing here reads a
//! clock.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::{Signature as Ed25519Signature, Signer as _, SigningKey, VerifyingKey};
use rand_core::RngCore;
use signed_note::{VerificationError, Verifiers};

use crate::checkpoint::{short, Checkpoint};
use crate::note::NoteError;

/// Signature type byte of `cosignature/v1` Ed25519 keys (C2SP signed-note).
pub const SIGNATURE_TYPE: u8 = 0x04;
/// The header line of the signed message (domain separation).
pub const HEADER: &str = "cosignature/v1";
/// Bytes of a cosignature after the key ID: 8 of timestamp, 64 of Ed25519.
pub const COSIGNATURE_LEN: usize = 72;
/// Largest timestamp a cosignature may carry (2^63 - 1).
pub const MAX_TIMESTAMP: u64 = i64::MAX as u64;

/// The key ID of a cosignature key:
/// `SHA-256(name || "\n" || 0x04 || public key)[:4]`, big-endian.
pub fn key_id(name: &str, public_key: &[u8; 32]) -> u32 {
    let mut key = Vec::with_capacity(33);
    key.push(SIGNATURE_TYPE);
    key.extend_from_slice(public_key);
    signed_note::key_id(name, &key)
}

/// The message a `cosignature/v1` signs: the header line, the time line and
/// the checkpoint body `text` (which ends in a newline).
pub fn signed_message(text: &str, timestamp: u64) -> Vec<u8> {
    format!("{HEADER}\ntime {timestamp}\n{text}").into_bytes()
}

fn bad_key(why: impl Into<String>) -> NoteError {
    NoteError::MalformedKey(why.into())
}

fn check_name(name: &str) -> Result<(), NoteError> {
    if signed_note::is_key_name_valid(name) {
        Ok(())
    } else {
        Err(bad_key(format!(
            "witness name {:?} is empty or has spaces or '+'",
            short(name)
        )))
    }
}

/// Splits `<name>+<8 hex id>+<base64 key>` and checks the id's form.
fn split_key(key: &str) -> Result<(&str, u32, Vec<u8>), NoteError> {
    let mut parts = key.splitn(3, '+');
    let (Some(name), Some(id16), Some(key64)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad_key("expected <name>+<8 hex key id>+<base64 key>"));
    };
    check_name(name)?;
    if id16.len() != 8 || !id16.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad_key(format!(
            "key id {:?} is not 8 hex digits",
            short(id16)
        )));
    }
    let id = u32::from_str_radix(id16, 16).map_err(|_| bad_key("key id is not hex"))?;
    let bytes = STANDARD
        .decode(key64)
        .map_err(|_| bad_key("key is not standard base64"))?;
    Ok((name, id, bytes))
}

/// Strips the type byte of a decoded key and checks it is a 32-byte
/// `cosignature/v1` key.
fn cosignature_key(bytes: &[u8], what: &str) -> Result<[u8; 32], NoteError> {
    match bytes.split_first() {
        Some((&SIGNATURE_TYPE, key)) => key.try_into().map_err(|_| {
            bad_key(format!(
                "{what}: an Ed25519 key is 32 bytes, got {}",
                key.len()
            ))
        }),
        Some((&t, _)) => Err(bad_key(format!(
            "{what}: signature type 0x{t:02x}, expected 0x04 (cosignature/v1); \
             a log key (0x01) cannot be a witness key"
        ))),
        None => Err(bad_key(format!("{what}: empty key"))),
    }
}

/// A witness's signing key for `cosignature/v1`.
pub struct Cosigner {
    name: String,
    id: u32,
    key: SigningKey,
}

impl Cosigner {
    /// A key from a 32-byte Ed25519 seed.
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Self, NoteError> {
        check_name(name)?;
        let key = SigningKey::from_bytes(seed);
        let id = key_id(name, key.verifying_key().as_bytes());
        Ok(Cosigner {
            name: name.to_owned(),
            id,
            key,
        })
    }

    /// A fresh key for `name` from the OS's random source; returns it and
    /// its private key text (see [`Cosigner::skey`]).
    pub fn generate(name: &str) -> Result<(Self, String), NoteError> {
        let mut seed = [0u8; 32];
        rand_core::OsRng.fill_bytes(&mut seed);
        let cosigner = Self::from_seed(name, &seed)?;
        let skey = cosigner.skey();
        Ok((cosigner, skey))
    }

    /// Parses `PRIVATE+KEY+<name>+<8 hex id>+base64(0x04 || seed)`; the key
    /// id must be the one the key has.
    pub fn from_skey(skey: &str) -> Result<Self, NoteError> {
        let rest = skey
            .strip_prefix("PRIVATE+KEY+")
            .ok_or_else(|| bad_key("a witness skey starts with PRIVATE+KEY+"))?;
        let (name, id, bytes) = split_key(rest)?;
        let seed = cosignature_key(&bytes, "witness skey")?;
        let cosigner = Self::from_seed(name, &seed)?;
        if cosigner.id != id {
            return Err(bad_key(format!(
                "witness skey: key id {id:08x} is not the key's id {:08x}",
                cosigner.id
            )));
        }
        Ok(cosigner)
    }

    /// The private key text: `PRIVATE+KEY+<name>+<id>+base64(0x04 || seed)`.
    /// A secret: whoever has it can cosign as this witness.
    pub fn skey(&self) -> String {
        let mut key = vec![SIGNATURE_TYPE];
        key.extend_from_slice(self.key.as_bytes());
        format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.name,
            self.id,
            STANDARD.encode(key)
        )
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> u32 {
        self.id
    }

    /// The verifier for this key.
    pub fn verifier(&self) -> CosignatureVerifier {
        CosignatureVerifier {
            name: self.name.clone(),
            id: self.id,
            key: self.key.verifying_key(),
        }
    }

    /// The vkey: `<name>+<8 hex id>+base64(0x04 || public key)`.
    pub fn vkey(&self) -> String {
        self.verifier().vkey()
    }

    /// Cosigns the checkpoint body `text` (the note text, ending in a
    /// newline, extension lines included) as of `timestamp`; returns the
    /// note signature line `— <name> <base64>\n`.
    ///
    /// Refuses text that is not a checkpoint body and timestamps above
    /// [`MAX_TIMESTAMP`]: a witness cosigns checkpoints, nothing else.
    pub fn cosign(&self, text: &str, timestamp: u64) -> Result<String, NoteError> {
        if timestamp > MAX_TIMESTAMP {
            return Err(NoteError::Malformed(format!(
                "cosignature timestamp {timestamp} is above 2^63 - 1"
            )));
        }
        Checkpoint::parse(text).map_err(|e| NoteError::Checkpoint(e.to_string()))?;
        let signature = self.key.sign(&signed_message(text, timestamp));
        let mut bytes = Vec::with_capacity(4 + COSIGNATURE_LEN);
        bytes.extend_from_slice(&self.id.to_be_bytes());
        bytes.extend_from_slice(&timestamp.to_be_bytes());
        bytes.extend_from_slice(&signature.to_bytes());
        Ok(format!("— {} {}\n", self.name, STANDARD.encode(bytes)))
    }
}

impl std::fmt::Debug for Cosigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private key.
        f.debug_tuple("Cosigner").field(&self.vkey()).finish()
    }
}

/// A witness's public key, from its vkey; verifies its cosignatures.
#[derive(Clone, PartialEq, Eq)]
pub struct CosignatureVerifier {
    name: String,
    id: u32,
    key: VerifyingKey,
}

impl CosignatureVerifier {
    /// Parses `<name>+<8 hex id>+base64(0x04 || public key)`. The key id
    /// must match the key; keys of other signature types, invalid points and
    /// small-order ("weak") keys, under which anyone could forge, are refused.
    pub fn from_vkey(vkey: &str) -> Result<Self, NoteError> {
        let (name, id, bytes) = split_key(vkey)?;
        let key = cosignature_key(&bytes, "witness vkey")?;
        let expected = key_id(name, &key);
        if id != expected {
            return Err(bad_key(format!(
                "witness vkey: key id {id:08x} is not the key's id {expected:08x}"
            )));
        }
        let key = VerifyingKey::from_bytes(&key)
            .map_err(|_| bad_key("witness vkey: not a valid Ed25519 public key"))?;
        if key.is_weak() {
            return Err(bad_key("witness vkey: a small-order Ed25519 key"));
        }
        Ok(CosignatureVerifier {
            name: name.to_owned(),
            id,
            key,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> u32 {
        self.id
    }

    /// The 32-byte Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// Canonical vkey text (lowercase key id).
    pub fn vkey(&self) -> String {
        let mut key = vec![SIGNATURE_TYPE];
        key.extend_from_slice(self.key.as_bytes());
        format!("{}+{:08x}+{}", self.name, self.id, STANDARD.encode(key))
    }

    /// Checks a cosignature's bytes after the key ID (timestamp ||
    /// signature) on the checkpoint body `text`; returns its timestamp.
    pub fn verify(&self, text: &str, cosignature: &[u8]) -> Option<u64> {
        let bytes: &[u8; COSIGNATURE_LEN] = cosignature.try_into().ok()?;
        let timestamp = u64::from_be_bytes(bytes[..8].try_into().ok()?);
        if timestamp > MAX_TIMESTAMP {
            return None;
        }
        let signature = Ed25519Signature::from_bytes(bytes[8..].try_into().ok()?);
        self.key
            .verify_strict(&signed_message(text, timestamp), &signature)
            .ok()
            .map(|()| timestamp)
    }
}

impl std::fmt::Debug for CosignatureVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CosignatureVerifier")
            .field(&self.vkey())
            .finish()
    }
}

impl signed_note::Verifier for CosignatureVerifier {
    fn name(&self) -> &str {
        &self.name
    }
    fn key_id(&self) -> u32 {
        self.id
    }
    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        std::str::from_utf8(msg)
            .is_ok_and(|text| CosignatureVerifier::verify(self, text, sig).is_some())
    }
}

/// The witness keys, looked up by `(name, key id)`; one key listed twice is
/// one key, two different keys with one name and id are ambiguous.
struct WitnessKeys<'a>(&'a [CosignatureVerifier]);

impl Verifiers for WitnessKeys<'_> {
    fn verifier(
        &self,
        name: &str,
        id: u32,
    ) -> Result<&dyn signed_note::Verifier, VerificationError> {
        let mut found = self.0.iter().filter(|v| v.name == name && v.id == id);
        let Some(first) = found.next() else {
            return Err(VerificationError::UnknownKey {
                name: name.to_owned(),
                id,
            });
        };
        if found.any(|v| v.key != first.key) {
            return Err(VerificationError::AmbiguousKey {
                name: name.to_owned(),
                id,
            });
        }
        Ok(first)
    }
}

/// A cosignature that verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cosignature {
    /// The witness's key name.
    pub name: String,
    pub key_id: u32,
    /// Seconds since the UNIX epoch, as the witness signed it.
    pub timestamp: u64,
    /// The signature line, verbatim (`— <name> <base64>\n`).
    pub line: String,
}

/// The name, key ID and timestamp of a `cosignature/v1` signature line,
/// without checking the signature (to show when a witness says it
/// cosigned; trust it only after [`verify_cosignatures`]). The line may end
/// in a newline; its signature must be 4 + 72 bytes.
pub fn parse_line_unverified(line: &str) -> Result<(String, u32, u64), NoteError> {
    let sig =
        signed_note::Signature::from_bytes(line.strip_suffix('\n').unwrap_or(line).as_bytes())
            .map_err(|_| {
                NoteError::Malformed("not a \"— <name> <base64>\" signature line".into())
            })?;
    let bytes = sig.signature();
    if bytes.len() != COSIGNATURE_LEN {
        return Err(NoteError::Malformed(format!(
            "a cosignature/v1 signature is 4 + {COSIGNATURE_LEN} bytes, got 4 + {}",
            bytes.len()
        )));
    }
    let timestamp = u64::from_be_bytes(bytes[..8].try_into().expect("72 bytes"));
    Ok((sig.name().to_owned(), sig.id(), timestamp))
}

/// Whether `note` carries a line shaped like a `cosignature/v1` signature
/// (a witnessed checkpoint), for saying which kind a receipt is. Nothing is
/// verified: only [`verify_cosignatures`] (or a policy) says whose it is.
pub fn has_cosignature_lines(note: &str) -> bool {
    note.rfind("\n\n").is_some_and(|at| {
        note[at + 2..]
            .lines()
            .any(|l| parse_line_unverified(l).is_ok())
    })
}

/// Verifies the cosignatures on a checkpoint note against `witnesses` and
/// returns each valid one (at most one per key), in note order.
///
/// As signed-note says: signatures by other keys (the log's, unknown
/// witnesses') are ignored; a line whose name and key ID match a witness key
/// but whose signature does not verify rejects the whole note
/// ([`NoteError::InvalidSignature`]). A note without any cosignature from
/// `witnesses` gives an empty list, not an error: whether that is enough is
/// the policy's question ([`crate::policy`]). The note text must be a
/// checkpoint body. Timestamps are returned, not judged: a verifier that
/// wants fresh cosignatures compares them with its own clock.
pub fn verify_cosignatures(
    note: &str,
    witnesses: &[CosignatureVerifier],
) -> Result<Vec<Cosignature>, NoteError> {
    let (text, verified) = match crate::note::open_with(note, &WitnessKeys(witnesses), Vec::new) {
        Ok(opened) => opened,
        Err(NoteError::UnknownKey(_)) => {
            // Well-formed, with no cosignature from these witnesses.
            let parsed = crate::note::parse_note(note)?;
            let text = String::from_utf8(parsed.text().to_vec())
                .map_err(|_| NoteError::Malformed("text is not UTF-8".into()))?;
            (text, Vec::new())
        }
        Err(e) => return Err(e),
    };
    Checkpoint::parse(&text).map_err(|e| NoteError::Checkpoint(e.to_string()))?;
    Ok(verified
        .iter()
        .map(|s| Cosignature {
            name: s.name().to_owned(),
            key_id: s.id(),
            timestamp: u64::from_be_bytes(
                s.signature()[..8]
                    .try_into()
                    .expect("a verified cosignature is 72 bytes"),
            ),
            line: String::from_utf8_lossy(&s.to_bytes()).into_owned(),
        })
        .collect())
}

/// Verifies signature lines a witness returned for the checkpoint body
/// `text` (the body of a `200` to `add-checkpoint`): the lines must be
/// well-formed note signature lines; those from `witnesses` are verified
/// and returned, others are ignored.
pub fn verify_cosignature_lines(
    text: &str,
    lines: &str,
    witnesses: &[CosignatureVerifier],
) -> Result<Vec<Cosignature>, NoteError> {
    verify_cosignatures(&format!("{text}\n{lines}"), witnesses)
}

/// Adds signature lines (e.g. [`Cosignature::line`]s) to a note: a line
/// from a key that already signed the note (same name and key ID) replaces
/// that key's line; others are appended in order. The note and every line
/// must be well-formed; no signature is checked here.
pub fn add_signature_lines<'a>(
    note: &str,
    lines: impl IntoIterator<Item = &'a str>,
) -> Result<String, NoteError> {
    let malformed = |why: &str| NoteError::Malformed(why.to_owned());
    crate::note::parse_note(note)?;
    let split = note
        .rfind("\n\n")
        .ok_or_else(|| malformed("no blank line before the signatures"))?;
    let (text, block) = (&note[..split + 1], &note[split + 2..]);
    let key_of = |line: &str| -> Result<(String, u32), NoteError> {
        let sig = signed_note::Signature::from_bytes(line.trim_end_matches('\n').as_bytes())
            .map_err(|_| malformed("not a \"— <name> <base64>\" signature line"))?;
        Ok((sig.name().to_owned(), sig.id()))
    };
    let mut kept: Vec<(String, u32, String)> = Vec::new();
    for line in block.split_inclusive('\n') {
        let (name, id) = key_of(line)?;
        kept.push((name, id, line.to_owned()));
    }
    for line in lines {
        if !line.ends_with('\n') || line[..line.len() - 1].contains('\n') {
            return Err(malformed(
                "a signature line is one line ending in a newline",
            ));
        }
        let (name, id) = key_of(line)?;
        kept.retain(|(n, i, _)| !(*n == name && *i == id));
        kept.push((name, id, line.to_owned()));
    }
    let mut out = String::with_capacity(note.len());
    out.push_str(text);
    out.push('\n');
    for (_, _, line) in &kept {
        out.push_str(line);
    }
    crate::note::parse_note(&out)?;
    Ok(out)
}
