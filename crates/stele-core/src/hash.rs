//! RFC 6962 §2.1 hashing.

use std::fmt;

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
        todo!()
    }
    /// From 64 hex digits (either case).
    pub fn from_hex(s: &str) -> Result<Self, crate::Error> {
        todo!()
    }
    /// From standard padded base64 of 32 bytes.
    pub fn from_base64(s: &str) -> Result<Self, crate::Error> {
        todo!()
    }
    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        todo!()
    }
    /// Standard padded base64.
    pub fn to_base64(&self) -> String {
        todo!()
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
    todo!()
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    todo!()
}
