//! RFC 6962 §2.1 hashing.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// Length of a SHA-256 hash.
pub const HASH_SIZE: usize = 32;

/// A SHA-256 hash: a leaf hash, a node hash or a tree root.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash(pub [u8; HASH_SIZE]);

/// Root of the empty tree: `SHA-256("")`.
pub const EMPTY_ROOT: Hash = Hash([
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
]);

impl Hash {
    /// From exactly 32 bytes; anything else is [`crate::Error::InvalidHash`].
    pub fn from_slice(b: &[u8]) -> Result<Self, crate::Error> {
        let arr: [u8; HASH_SIZE] = b.try_into().map_err(|_| {
            crate::Error::InvalidHash(format!("expected {HASH_SIZE} bytes, got {}", b.len()))
        })?;
        Ok(Hash(arr))
    }
    /// From 64 hex digits (either case).
    pub fn from_hex(s: &str) -> Result<Self, crate::Error> {
        if s.len() != 2 * HASH_SIZE {
            return Err(crate::Error::InvalidHash(format!(
                "expected {} hex digits, got {} characters",
                2 * HASH_SIZE,
                s.len()
            )));
        }
        let mut out = [0u8; HASH_SIZE];
        hex::decode_to_slice(s, &mut out)
            .map_err(|e| crate::Error::InvalidHash(format!("bad hex: {e}")))?;
        Ok(Hash(out))
    }
    /// From standard padded base64 of 32 bytes.
    pub fn from_base64(s: &str) -> Result<Self, crate::Error> {
        // 32 bytes are always 44 characters of padded base64; checking the
        // length first bounds the work done on hostile input.
        if s.len() != 44 {
            return Err(crate::Error::InvalidHash(format!(
                "expected 44 base64 characters, got {}",
                s.len()
            )));
        }
        let bytes = STANDARD
            .decode(s)
            .map_err(|e| crate::Error::InvalidHash(format!("bad base64: {e}")))?;
        Self::from_slice(&bytes)
    }
    /// Lowercase hex. (Through a fixed buffer: `hex::encode` goes through a
    /// `char` iterator, and every receipt encodes ~20 hashes.)
    pub fn to_hex(&self) -> String {
        String::from_utf8(self.hex_bytes().to_vec()).expect("hex is ASCII")
    }
    /// Lowercase hex as ASCII bytes, for writing into a buffer without a
    /// `String` per hash.
    pub fn hex_bytes(&self) -> [u8; 2 * HASH_SIZE] {
        let mut buf = [0u8; 2 * HASH_SIZE];
        hex::encode_to_slice(self.0, &mut buf).expect("the buffer fits 32 bytes");
        buf
    }
    /// Standard padded base64.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }
    pub fn as_bytes(&self) -> &[u8; HASH_SIZE] {
        &self.0
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.to_hex())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// `SHA-256(0x00 || leaf)`.
pub fn leaf_hash(leaf: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(leaf);
    Hash(h.finalize().into())
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left.0);
    h.update(right.0);
    Hash(h.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase_and_round_trips() {
        // RFC 6962 empty root, as every test vector spells it.
        let h = EMPTY_ROOT;
        assert_eq!(
            h.to_hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let all: Hash = Hash(core::array::from_fn(|i| (i * 8 + 7) as u8));
        assert_eq!(all.to_hex(), hex::encode(all.0));
        assert_eq!(Hash::from_hex(&all.to_hex()).unwrap(), all);
    }
}
