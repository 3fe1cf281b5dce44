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
/// ever requested. [`tree_root`], [`prove_inclusion`] and
/// [`prove_consistency`] each make at most one call, so a reader backed by
/// storage can fetch everything in one round trip.
pub trait HashReader {
    fn read_hashes(&self, nodes: &[NodeId]) -> Result<Vec<Hash>, Error>;
}

/// A `HashReader` over a slice of all leaf hashes (tests, small trees).
/// Each node is recomputed from its leaves, so reads cost `O(2^level)`.
impl HashReader for [Hash] {
    fn read_hashes(&self, nodes: &[NodeId]) -> Result<Vec<Hash>, Error> {
        nodes
            .iter()
            .map(|n| {
                let (start, end) = node_range(*n)
                    .filter(|&(_, end)| end <= self.len() as u64)
                    .ok_or_else(|| {
                        Error::Read(format!("node {n:?} is outside {} leaves", self.len()))
                    })?;
                Ok(root_of(&self[start as usize..end as usize]))
            })
            .collect()
    }
}

/// The leaf range `[start, end)` a node covers, or `None` if it does not fit
/// in a `u64`.
fn node_range(n: NodeId) -> Option<(u64, u64)> {
    if n.level >= 64 {
        return None;
    }
    let start = n
        .index
        .checked_shl(u32::from(n.level))
        .filter(|s| s >> n.level == n.index)?;
    let end = start.checked_add(1u64 << n.level)?;
    Some((start, end))
}

fn check_size(size: u64) -> Result<(), Error> {
    if size >= MAX_TREE_SIZE {
        return Err(Error::InvalidRange(format!(
            "tree size {size} is not below 2^63"
        )));
    }
    Ok(())
}

/// Number of significant bits of `x` (0 for 0).
fn bit_len(x: u64) -> u32 {
    64 - x.leading_zeros()
}

/// The perfect subtrees that make up a tree of `size` leaves, left to right
/// (largest first). Empty for size 0.
pub fn subtrees(size: u64) -> Vec<NodeId> {
    subtrees_from(0, size)
}

/// The perfect subtrees of a tree of `size` leaves that lie in `[start, size)`,
/// where `start` is a subtree boundary of `size` (or `size` itself).
fn subtrees_from(start: u64, size: u64) -> Vec<NodeId> {
    let mut out = Vec::new();
    let mut begin = 0u64;
    for level in (0..64u8).rev() {
        if size & (1u64 << level) != 0 {
            if begin >= start {
                out.push(NodeId::new(level, begin >> level));
            }
            begin += 1u64 << level;
        }
    }
    out
}

/// Folds perfect-subtree hashes (left to right, largest first) into a root.
fn fold_right(hashes: &[Hash]) -> Hash {
    let mut iter = hashes.iter().rev();
    let Some(last) = iter.next() else {
        return crate::EMPTY_ROOT;
    };
    iter.fold(*last, |acc, h| crate::node_hash(h, &acc))
}

/// Root of the tree made of these leaf hashes (`EMPTY_ROOT` for none).
pub fn root_of(leaf_hashes: &[Hash]) -> Hash {
    // A stack of perfect-subtree roots, like a compact range: after leaf i,
    // one entry per set bit of i + 1.
    let mut stack: Vec<Hash> = Vec::with_capacity(64);
    for (i, leaf) in leaf_hashes.iter().enumerate() {
        let mut h = *leaf;
        let mut count = i as u64 + 1;
        while count & 1 == 0 {
            let left = stack.pop().expect("one stack entry per set bit");
            h = crate::node_hash(&left, &h);
            count >>= 1;
        }
        stack.push(h);
    }
    fold_right(&stack)
}

fn read_exact<R: HashReader + ?Sized>(r: &R, nodes: &[NodeId]) -> Result<Vec<Hash>, Error> {
    if nodes.is_empty() {
        return Ok(Vec::new());
    }
    let hashes = r.read_hashes(nodes)?;
    if hashes.len() != nodes.len() {
        return Err(Error::Read(format!(
            "asked for {} hashes, got {}",
            nodes.len(),
            hashes.len()
        )));
    }
    Ok(hashes)
}

/// Root of the tree of `size` leaves, read through `r`.
pub fn tree_root<R: HashReader + ?Sized>(size: u64, r: &R) -> Result<Hash, Error> {
    check_size(size)?;
    let hashes = read_exact(r, &subtrees(size))?;
    Ok(fold_right(&hashes))
}

/// One element of a proof: a perfect subtree, or the root of the right edge
/// `[start, size)` of the tree (several subtrees folded).
enum Part {
    Node(NodeId),
    Edge(Vec<NodeId>),
}

/// The proof parts that lead from node `(level, index)` to the root of the
/// tree of `size` leaves, bottom up. The node must lie inside the tree.
fn path_parts(level: u8, index: u64, size: u64) -> Vec<Part> {
    let last = (size - 1) >> level;
    let inner = bit_len(index ^ last);
    let mut parts = Vec::new();
    for i in 0..inner {
        let lvl = level + i as u8;
        let sibling = (index >> i) ^ 1;
        let start = sibling << lvl;
        // Only the topmost inner sibling can stick out of the tree (it is
        // then the root of the right edge); all lower ones lie inside.
        if start
            .checked_add(1u64 << lvl)
            .is_some_and(|end| end <= size)
        {
            parts.push(Part::Node(NodeId::new(lvl, sibling)));
        } else {
            parts.push(Part::Edge(subtrees_from(start, size)));
        }
    }
    for i in inner..(64 - u32::from(level)) {
        if (index >> i) & 1 == 1 {
            parts.push(Part::Node(NodeId::new(level + i as u8, (index >> i) ^ 1)));
        }
    }
    parts
}

/// Reads the hashes of `parts` in one `read_hashes` call and folds each.
fn read_parts<R: HashReader + ?Sized>(
    head: Option<NodeId>,
    parts: &[Part],
    r: &R,
) -> Result<Vec<Hash>, Error> {
    let mut nodes: Vec<NodeId> = head.into_iter().collect();
    for p in parts {
        match p {
            Part::Node(n) => nodes.push(*n),
            Part::Edge(ns) => nodes.extend_from_slice(ns),
        }
    }
    let hashes = read_exact(r, &nodes)?;
    let mut out = Vec::with_capacity(parts.len() + 1);
    let mut pos = 0;
    if head.is_some() {
        out.push(hashes[0]);
        pos = 1;
    }
    for p in parts {
        match p {
            Part::Node(_) => {
                out.push(hashes[pos]);
                pos += 1;
            }
            Part::Edge(ns) => {
                out.push(fold_right(&hashes[pos..pos + ns.len()]));
                pos += ns.len();
            }
        }
    }
    Ok(out)
}

/// Inclusion proof of leaf `index` in the tree of `size` leaves.
pub fn prove_inclusion<R: HashReader + ?Sized>(
    index: u64,
    size: u64,
    r: &R,
) -> Result<Vec<Hash>, Error> {
    check_size(size)?;
    if index >= size {
        return Err(Error::InvalidRange(format!(
            "index {index} is not below tree size {size}"
        )));
    }
    read_parts(None, &path_parts(0, index, size), r)
}

/// The node a consistency proof from `old` starts from: the largest perfect
/// subtree ending at `old`. Requires `0 < old`.
fn consistency_start(old: u64) -> (u8, u64) {
    let level = old.trailing_zeros() as u8;
    (level, (old - 1) >> level)
}

/// Consistency proof from the tree of `old` leaves to the tree of `new` leaves.
/// Empty when `old == 0` or `old == new`.
pub fn prove_consistency<R: HashReader + ?Sized>(
    old: u64,
    new: u64,
    r: &R,
) -> Result<Vec<Hash>, Error> {
    check_size(new)?;
    if old > new {
        return Err(Error::InvalidRange(format!(
            "old size {old} is above new size {new}"
        )));
    }
    if old == 0 || old == new {
        return Ok(Vec::new());
    }
    let (level, index) = consistency_start(old);
    // When `old` is a power of two the verifier already knows that node: it
    // is the old root.
    let head = (index != 0).then_some(NodeId::new(level, index));
    read_parts(head, &path_parts(level, index, new), r)
}

/// Expected inclusion proof length for `index < size`.
fn inclusion_len(index: u64, size: u64) -> usize {
    let inner = bit_len(index ^ (size - 1));
    let border = (index >> inner).count_ones();
    (inner + border) as usize
}

/// The root that `proof` implies for `leaf_hash` at `index` in a tree of `size`.
pub fn root_from_inclusion_proof(
    leaf_hash: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
) -> Result<Hash, Error> {
    check_size(size)?;
    if index >= size {
        return Err(Error::InvalidRange(format!(
            "index {index} is not below tree size {size}"
        )));
    }
    let expected = inclusion_len(index, size);
    if proof.len() != expected {
        return Err(Error::ProofLength {
            expected,
            got: proof.len(),
        });
    }
    // RFC 9162 §2.1.3.2.
    let mut r = *leaf_hash;
    let walked = walk_proof(index, size - 1, proof, |left, p| {
        r = if left {
            crate::node_hash(p, &r)
        } else {
            crate::node_hash(&r, p)
        };
    });
    if !walked {
        return Err(Error::ProofLength {
            expected,
            got: proof.len(),
        });
    }
    Ok(r)
}

/// Checks an inclusion proof against a root.
pub fn verify_inclusion(
    leaf_hash: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), Error> {
    if root_from_inclusion_proof(leaf_hash, index, size, proof)? == *root {
        Ok(())
    } else {
        Err(Error::RootMismatch)
    }
}

/// Checks a consistency proof between two roots.
///
/// From size 0 the proof must be empty and `old_root` must be the empty
/// tree's root; between equal sizes the proof must be empty and the roots
/// equal.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), Error> {
    check_size(new_size)?;
    if old_size > new_size {
        return Err(Error::InvalidRange(format!(
            "old size {old_size} is above new size {new_size}"
        )));
    }
    if old_size == 0 || old_size == new_size {
        if !proof.is_empty() {
            return Err(Error::ProofLength {
                expected: 0,
                got: proof.len(),
            });
        }
        let ok = if old_size == 0 {
            *old_root == crate::EMPTY_ROOT && (new_size != 0 || *new_root == crate::EMPTY_ROOT)
        } else {
            old_root == new_root
        };
        return if ok { Ok(()) } else { Err(Error::RootMismatch) };
    }
    let (level, index) = consistency_start(old_size);
    let last = (new_size - 1) >> level;
    let inner = bit_len(index ^ last);
    let expected = usize::from(index != 0) + (inner + (index >> inner).count_ones()) as usize;
    if proof.len() != expected {
        return Err(Error::ProofLength {
            expected,
            got: proof.len(),
        });
    }
    // RFC 9162 §2.1.4.2, with the old root prepended when `old_size` is a
    // power of two.
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if index == 0 {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let (mut fn_, mut sn) = (old_size - 1, new_size - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    let walked = walk_proof(fn_, sn, &path[1..], |left, c| {
        if left {
            fr = crate::node_hash(c, &fr);
            sr = crate::node_hash(c, &sr);
        } else {
            sr = crate::node_hash(&sr, c);
        }
    });
    if !walked {
        return Err(Error::ProofLength {
            expected,
            got: proof.len(),
        });
    }
    if fr != *old_root || sr != *new_root {
        return Err(Error::RootMismatch);
    }
    Ok(())
}

/// The walk RFC 9162 §2.1.3.2 and §2.1.4.2 share: from `(fn, sn)`, each
/// proof hash is combined on the left (`true`) or on the right of the
/// running hash, and the bits of `fn`/`sn` shift as the spec says. False if
/// the proof runs past the root or ends before it (`sn` must end at 0).
fn walk_proof(
    mut fn_: u64,
    mut sn: u64,
    proof: &[Hash],
    mut step: impl FnMut(bool, &Hash),
) -> bool {
    for p in proof {
        if sn == 0 {
            return false;
        }
        let left = fn_ & 1 == 1 || fn_ == sn;
        step(left, p);
        if left && fn_ & 1 == 0 {
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0
}
