//! RFC 6962 §2.1 Merkle tree roots, inclusion and consistency proofs
//! (generation and verification; RFC 9162 §2.1.3 and §2.1.4 algorithms).
//!
//! Proof generation reads perfect-subtree hashes through the narrow
//! [`HashReader`] trait; storage decides where they come from (tiles, a
//! cache, memory).

use crate::{Error, Hash};

/// Sizes and indexes must be below this (2^63): the ecosystem's formats
/// (Go's `int64`) cannot represent larger trees.
pub const MAX_TREE_SIZE: u64 = 1 << 63;

/// A perfect subtree: the `2^level` leaves starting at leaf `index << level`.
/// Level 0 nodes are leaf hashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    pub level: u8,
    pub index: u64,
}

impl NodeId {
    pub const fn new(level: u8, index: u64) -> Self {
        NodeId { level, index }
    }
}

/// Reads hashes of perfect subtrees. This is the only way proof generation
/// touches storage.
///
/// Contract: returns exactly one hash per requested node, in request order,
/// or an error. Only nodes that lie entirely inside the tree being proven are
/// ever requested.
pub trait HashReader {
    fn read_hashes(&self, nodes: &[NodeId]) -> Result<Vec<Hash>, Error>;
}

/// A `HashReader` over a slice of all leaf hashes (tests, small trees).
impl HashReader for [Hash] {
    fn read_hashes(&self, nodes: &[NodeId]) -> Result<Vec<Hash>, Error> {
        todo!()
    }
}

/// The perfect subtrees that make up a tree of `size` leaves, left to right
/// (largest first). Empty for size 0.
pub fn subtrees(size: u64) -> Vec<NodeId> {
    todo!()
}

/// Root of the tree made of these leaf hashes (`EMPTY_ROOT` for none).
pub fn root_of(leaf_hashes: &[Hash]) -> Hash {
    todo!()
}

/// Root of the tree of `size` leaves, read through `r`.
pub fn tree_root<R: HashReader + ?Sized>(size: u64, r: &R) -> Result<Hash, Error> {
    todo!()
}

/// Inclusion proof of leaf `index` in the tree of `size` leaves.
pub fn prove_inclusion<R: HashReader + ?Sized>(index: u64, size: u64, r: &R) -> Result<Vec<Hash>, Error> {
    todo!()
}

/// Consistency proof from the tree of `old` leaves to the tree of `new` leaves.
/// Empty when `old == 0` or `old == new`.
pub fn prove_consistency<R: HashReader + ?Sized>(old: u64, new: u64, r: &R) -> Result<Vec<Hash>, Error> {
    todo!()
}

/// The root that `proof` implies for `leaf_hash` at `index` in a tree of `size`.
pub fn root_from_inclusion_proof(leaf_hash: &Hash, index: u64, size: u64, proof: &[Hash]) -> Result<Hash, Error> {
    todo!()
}

/// Checks an inclusion proof against a root.
pub fn verify_inclusion(leaf_hash: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> Result<(), Error> {
    todo!()
}

/// Checks a consistency proof between two roots.
pub fn verify_consistency(old_size: u64, new_size: u64, old_root: &Hash, new_root: &Hash, proof: &[Hash]) -> Result<(), Error> {
    todo!()
}
