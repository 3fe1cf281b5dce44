//! C2SP `tlog-checkpoint` bodies.

use crate::{Error, Hash};

/// A checkpoint body: origin, tree size, root hash, optional extension lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    /// Extension lines, without their newlines.
    pub extensions: Vec<String>,
}

impl Checkpoint {
    pub fn new(origin: impl Into<String>, size: u64, root: Hash) -> Self {
        Checkpoint { origin: origin.into(), size, root, extensions: Vec::new() }
    }

    /// Parses a checkpoint body (the note text, ending in a newline).
    pub fn parse(body: &str) -> Result<Self, Error> {
        todo!()
    }

    /// The body text: `origin\nsize\nbase64(root)\n[extensions\n]`.
    pub fn to_body(&self) -> String {
        todo!()
    }
}
