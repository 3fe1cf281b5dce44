//! Errors of the tree math, tiles and parsers.

/// What went wrong in tree math, proof checking or parsing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A hash was not exactly 32 bytes, or not valid hex/base64.
    #[error("invalid hash: {0}")]
    InvalidHash(String),
    /// `index >= size`, a size of 0 where a leaf is needed, `old > new`, or a
    /// size at or above 2^63.
    #[error("invalid index or size: {0}")]
    InvalidRange(String),
    /// The proof has the wrong number of hashes for its index and size.
    #[error("proof has wrong length: expected {expected}, got {got}")]
    ProofLength { expected: usize, got: usize },
    /// The proof does not lead to the expected root.
    #[error("proof does not match the root")]
    RootMismatch,
    /// A tile path, bundle, checkpoint or proof text was malformed.
    #[error("malformed {what}: {why}")]
    Malformed { what: &'static str, why: String },
    /// The hash reader could not provide hashes (storage error, missing tile).
    #[error("hash reader: {0}")]
    Read(String),
}

impl Error {
    pub(crate) fn malformed(what: &'static str, why: impl Into<String>) -> Self {
        Error::Malformed {
            what,
            why: why.into(),
        }
    }
}
