//! The payload store's keys. The content of a private record is sealed
//! with XChaCha20-Poly1305 (RustCrypto's `chacha20poly1305`) under a fresh
//! random data key of its own; the data key is wrapped (sealed the same
//! way) by a key-encryption key, the KEK. Storage holds only the wrapped
//! data key and the ciphertext, so erasing a record's row destroys its
//! content, and a copy of the row (a backup, a dead tuple) is readable only
//! while its KEK exists: rotating the KEK (`stele vault rotate-kek`, which
//! re-wraps every live data key) and destroying the old one bounds what
//! old copies can reveal.
//!
//! A KEK lives in a key file (`payload_key_file`): one line,
//! `stele-kek-v1:` and 32 bytes in standard base64 ([`Kek`]). The vault
//! only ever asks a KEK to wrap and unwrap a data key ([`KeyWrapper`]): an
//! external KMS (its own key id, a network call per wrap) implements that
//! trait, and the key never enters this process.
//!
//! Encodings: a wrapped key and a ciphertext are each `nonce (24 bytes) ||
//! AEAD output`. The data key is bound to the record by associated data
//! (the log and the record's commitment), so a row moved to another record
//! or log does not open.

use std::path::Path;

use anyhow::Context;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::XChaCha20Poly1305;
use sha2::{Digest, Sha256};

const KEY_PREFIX: &str = "stele-kek-v1:";
const NONCE_LEN: usize = 24;

/// A record's sealed content as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedPayload {
    /// Which KEK wrapped the data key ([`Kek::id`]).
    pub kek_id: String,
    pub wrapped_key: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// Why a payload does not open.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("the payload was wrapped by key {0}, which this server does not have")]
    UnknownKek(String),
    #[error("the payload does not decrypt (tampered, or sealed for another record)")]
    Corrupt,
}

/// What the vault needs of a key-encryption key: an id (stored with every
/// payload it wrapped) and wrapping. Implemented by [`Kek`] (a key file);
/// a KMS client implements it to keep the key out of this process.
pub trait KeyWrapper: Send + Sync + std::fmt::Debug {
    /// A stable id of the key (never the key itself).
    fn id(&self) -> &str;
    /// Seals a data key, bound to `aad`.
    fn wrap(&self, data_key: &[u8; 32], aad: &[u8]) -> Vec<u8>;
    /// Opens a wrapped data key bound to `aad`.
    fn unwrap(&self, wrapped: &[u8], aad: &[u8]) -> Result<[u8; 32], VaultError>;
}

/// A key-encryption key read from a key file.
pub struct Kek {
    id: String,
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kek").field("id", &self.id).finish()
    }
}

fn seal_with(cipher: &XChaCha20Poly1305, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let ct = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("XChaCha20-Poly1305 encryption does not fail");
    let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

fn open_with(cipher: &XChaCha20Poly1305, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, VaultError> {
    if sealed.len() < NONCE_LEN {
        return Err(VaultError::Corrupt);
    }
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    cipher
        .decrypt(nonce.into(), Payload { msg: ct, aad })
        .map_err(|_| VaultError::Corrupt)
}

impl Kek {
    fn from_bytes(key: [u8; 32]) -> Kek {
        // The id names the key without revealing it.
        let mut h = Sha256::new();
        h.update(b"stele/kek-id/v1\0");
        h.update(key);
        Kek {
            id: hex::encode(&h.finalize()[..8]),
            cipher: XChaCha20Poly1305::new(&key.into()),
        }
    }

    /// A new random KEK and its key-file text.
    pub fn generate() -> (Kek, String) {
        let key: [u8; 32] = XChaCha20Poly1305::generate_key(&mut OsRng).into();
        let text = format!(
            "{KEY_PREFIX}{}\n",
            base64::engine::general_purpose::STANDARD.encode(key)
        );
        (Kek::from_bytes(key), text)
    }

    /// Parses a key file's text.
    pub fn parse(text: &str) -> anyhow::Result<Kek> {
        let b64 = text
            .trim()
            .strip_prefix(KEY_PREFIX)
            .with_context(|| format!("not a payload key (it must start with {KEY_PREFIX})"))?;
        let key = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .context("the payload key is not base64")?;
        let key: [u8; 32] = key.try_into().map_err(|k: Vec<u8>| {
            anyhow::anyhow!("the payload key has {} bytes, not 32", k.len())
        })?;
        Ok(Kek::from_bytes(key))
    }

    /// Reads a key file.
    pub fn load(path: &Path) -> anyhow::Result<Kek> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the payload key {}", path.display()))?;
        Kek::parse(&text).with_context(|| format!("payload key {}", path.display()))
    }
}

impl KeyWrapper for Kek {
    fn id(&self) -> &str {
        &self.id
    }

    fn wrap(&self, data_key: &[u8; 32], aad: &[u8]) -> Vec<u8> {
        seal_with(&self.cipher, aad, data_key)
    }

    fn unwrap(&self, wrapped: &[u8], aad: &[u8]) -> Result<[u8; 32], VaultError> {
        open_with(&self.cipher, aad, wrapped)?
            .try_into()
            .map_err(|_| VaultError::Corrupt)
    }
}

/// The KEKs a server holds: the first seals, any opens (the others are
/// older keys kept while `rotate-kek` runs).
#[derive(Debug)]
pub struct Vault {
    keks: Vec<Box<dyn KeyWrapper>>,
}

/// The associated data of a record's payload.
fn binding(log: &str, commitment: &str) -> Vec<u8> {
    let mut aad = b"stele/payload/v1\0".to_vec();
    aad.extend_from_slice(log.as_bytes());
    aad.push(0);
    aad.extend_from_slice(commitment.as_bytes());
    aad
}

impl Vault {
    pub fn new(current: Kek, older: Vec<Kek>) -> Vault {
        let mut keks: Vec<Box<dyn KeyWrapper>> = vec![Box::new(current)];
        keks.extend(
            older
                .into_iter()
                .map(|k| Box::new(k) as Box<dyn KeyWrapper>),
        );
        Vault { keks }
    }

    /// A vault over any key wrappers (a KMS): the first seals, any opens.
    pub fn with_wrappers(current: Box<dyn KeyWrapper>, older: Vec<Box<dyn KeyWrapper>>) -> Vault {
        let mut keks = vec![current];
        keks.extend(older);
        Vault { keks }
    }

    /// The id of the KEK that seals new payloads.
    pub fn current_id(&self) -> &str {
        self.keks[0].id()
    }

    /// Seals `plaintext` for the record of `log` with `commitment`.
    pub fn seal(&self, log: &str, commitment: &str, plaintext: &[u8]) -> SealedPayload {
        let aad = binding(log, commitment);
        let data_key: [u8; 32] = XChaCha20Poly1305::generate_key(&mut OsRng).into();
        let data = XChaCha20Poly1305::new(&data_key.into());
        SealedPayload {
            kek_id: self.keks[0].id().to_string(),
            wrapped_key: self.keks[0].wrap(&data_key, &aad),
            ciphertext: seal_with(&data, &aad, plaintext),
        }
    }

    fn kek(&self, id: &str) -> Result<&dyn KeyWrapper, VaultError> {
        self.keks
            .iter()
            .find(|k| k.id() == id)
            .map(|k| k.as_ref())
            .ok_or_else(|| VaultError::UnknownKek(id.to_string()))
    }

    /// Opens a payload sealed for the record of `log` with `commitment`.
    pub fn open(
        &self,
        log: &str,
        commitment: &str,
        p: &SealedPayload,
    ) -> Result<Vec<u8>, VaultError> {
        let aad = binding(log, commitment);
        let data_key = self.kek(&p.kek_id)?.unwrap(&p.wrapped_key, &aad)?;
        open_with(
            &XChaCha20Poly1305::new(&data_key.into()),
            &aad,
            &p.ciphertext,
        )
    }

    /// The same payload with its data key wrapped by the current KEK
    /// instead (the ciphertext is unchanged).
    pub fn rewrap(
        &self,
        log: &str,
        commitment: &str,
        p: &SealedPayload,
    ) -> Result<SealedPayload, VaultError> {
        let aad = binding(log, commitment);
        let data_key = self.kek(&p.kek_id)?.unwrap(&p.wrapped_key, &aad)?;
        Ok(SealedPayload {
            kek_id: self.keks[0].id().to_string(),
            wrapped_key: self.keks[0].wrap(&data_key, &aad),
            ciphertext: p.ciphertext.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_payloads_open_only_for_their_record_and_key() {
        let (kek, text) = Kek::generate();
        assert_eq!(Kek::parse(&text).unwrap().id(), kek.id());
        let vault = Vault::new(kek, vec![]);
        let p = vault.seal("land", "sha256:aa", b"secret content");
        assert!(!p.ciphertext.windows(6).any(|w| w == b"secret"));
        assert_eq!(
            vault.open("land", "sha256:aa", &p).unwrap(),
            b"secret content"
        );
        // Bound to the log and the commitment.
        assert!(matches!(
            vault.open("land", "sha256:ab", &p),
            Err(VaultError::Corrupt)
        ));
        assert!(matches!(
            vault.open("lane", "sha256:aa", &p),
            Err(VaultError::Corrupt)
        ));
        // Any flipped bit is caught.
        for field in 0..2 {
            let mut t = p.clone();
            let bytes = if field == 0 {
                &mut t.ciphertext
            } else {
                &mut t.wrapped_key
            };
            let last = bytes.len() - 1;
            bytes[last] ^= 1;
            assert!(matches!(
                vault.open("land", "sha256:aa", &t),
                Err(VaultError::Corrupt)
            ));
        }
        // Another KEK cannot open it; after a re-wrap only the new one is needed.
        let other = Vault::new(Kek::generate().0, vec![]);
        assert!(matches!(
            other.open("land", "sha256:aa", &p),
            Err(VaultError::UnknownKek(_))
        ));
        let (new, _) = Kek::generate();
        let old = Kek::parse(&text).unwrap();
        let rotating = Vault::new(new, vec![old]);
        let q = rotating.rewrap("land", "sha256:aa", &p).unwrap();
        assert_eq!(q.ciphertext, p.ciphertext);
        assert_eq!(q.kek_id, rotating.current_id());
        assert_eq!(
            rotating.open("land", "sha256:aa", &q).unwrap(),
            b"secret content"
        );
        assert!(Kek::parse("stele-kek-v1:AAAA").is_err());
        assert!(Kek::parse("nonsense").is_err());
    }
}
