//! Proof generation and verification against a naive recursive RFC 6962
//! implementation written here, for every tree size 1..=1000.

use std::collections::HashMap;

use proptest::prelude::*;
use stele_core::merkle::{self, HashReader, NodeId, MAX_TREE_SIZE};
use stele_core::{leaf_hash, node_hash, Error, Hash, EMPTY_ROOT};

const MAX: usize = 1000;

/// RFC 6962 §2.1, literally, with memoized subtree hashes.
struct Naive {
    leaves: Vec<Hash>,
    memo: HashMap<(usize, usize), Hash>,
}

fn split(n: usize) -> usize {
    // The largest power of two smaller than n (n >= 2).
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

impl Naive {
    fn new(n: usize) -> Self {
        let leaves = (0..n)
            .map(|i| leaf_hash(format!("leaf {i}").as_bytes()))
            .collect();
        Naive {
            leaves,
            memo: HashMap::new(),
        }
    }

    /// MTH(D[lo:hi]).
    fn mth(&mut self, lo: usize, hi: usize) -> Hash {
        if let Some(h) = self.memo.get(&(lo, hi)) {
            return *h;
        }
        let h = match hi - lo {
            0 => EMPTY_ROOT,
            1 => self.leaves[lo],
            n => {
                let k = split(n);
                let (l, r) = (self.mth(lo, lo + k), self.mth(lo + k, hi));
                node_hash(&l, &r)
            }
        };
        self.memo.insert((lo, hi), h);
        h
    }

    /// PATH(m, D[lo:hi]).
    fn path(&mut self, m: usize, lo: usize, hi: usize) -> Vec<Hash> {
        let n = hi - lo;
        if n == 1 {
            return Vec::new();
        }
        let k = split(n);
        if m < k {
            let mut p = self.path(m, lo, lo + k);
            p.push(self.mth(lo + k, hi));
            p
        } else {
            let mut p = self.path(m - k, lo + k, hi);
            p.push(self.mth(lo, lo + k));
            p
        }
    }

    /// SUBPROOF(m, D[lo:hi], b).
    fn subproof(&mut self, m: usize, lo: usize, hi: usize, b: bool) -> Vec<Hash> {
        let n = hi - lo;
        if m == n {
            return if b {
                Vec::new()
            } else {
                vec![self.mth(lo, hi)]
            };
        }
        let k = split(n);
        if m <= k {
            let mut p = self.subproof(m, lo, lo + k, b);
            p.push(self.mth(lo + k, hi));
            p
        } else {
            let mut p = self.subproof(m - k, lo + k, hi, false);
            p.push(self.mth(lo, lo + k));
            p
        }
    }
}

/// Every perfect-subtree hash of the first 1000 leaves, by level, so proofs
/// are generated without recomputing subtrees.
struct Table(Vec<Vec<Hash>>);

impl Table {
    fn new(leaves: &[Hash]) -> Self {
        let mut t = Vec::new();
        let mut level: Vec<Hash> = leaves.to_vec();
        while !level.is_empty() {
            let next = level
                .chunks_exact(2)
                .map(|c| node_hash(&c[0], &c[1]))
                .collect();
            t.push(level);
            level = next;
        }
        Table(t)
    }
}

impl HashReader for Table {
    fn read_hashes(&self, nodes: &[NodeId]) -> Result<Vec<Hash>, Error> {
        nodes
            .iter()
            .map(|n| {
                self.0
                    .get(usize::from(n.level))
                    .and_then(|l| l.get(n.index as usize))
                    .copied()
                    .ok_or_else(|| Error::Read(format!("{n:?}")))
            })
            .collect()
    }
}

/// Indexes to try in a tree of `size`: all of them in small trees, a
/// spread plus both ends and the power-of-two boundaries in larger ones.
fn sample(size: usize, all_below: usize, step: usize) -> Vec<usize> {
    if size <= all_below {
        return (0..size).collect();
    }
    let mut v: Vec<usize> = (0..size).step_by(step).collect();
    let mut p = 1;
    while p < size {
        v.extend([p - 1, p]);
        p *= 2;
    }
    v.extend([size / 2, size - 2, size - 1]);
    v.sort();
    v.dedup();
    v
}

/// The left/right pattern RFC 9162 §2.1.3.2 follows for `(index, size)`,
/// or `None` if no proof of `len` hashes fits. Two inputs with the same
/// pattern compute the same root from the same proof.
fn inclusion_shape(index: u64, size: u64, len: usize) -> Option<Vec<bool>> {
    if index >= size || size >= MAX_TREE_SIZE {
        return None;
    }
    walk_shape(index, size - 1, len)
}

/// The RFC 9162 verification walk from `(fn, sn)` over `steps` proof
/// hashes: true where the hash is on the left. `None` if the walk does not
/// end at the root.
fn walk_shape(mut f: u64, mut s: u64, steps: usize) -> Option<Vec<bool>> {
    let mut shape = Vec::new();
    for _ in 0..steps {
        if s == 0 {
            return None;
        }
        if f & 1 == 1 || f == s {
            shape.push(true);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            shape.push(false);
        }
        f >>= 1;
        s >>= 1;
    }
    (s == 0).then_some(shape)
}

/// Same for RFC 9162 §2.1.4.2 consistency: (old root prepended, ops).
fn consistency_shape(old: u64, new: u64, len: usize) -> Option<(bool, Vec<bool>)> {
    if old == 0 || old >= new || new >= MAX_TREE_SIZE {
        return None;
    }
    let pow2 = old.is_power_of_two();
    let total = len + usize::from(pow2);
    if total == 0 {
        return None;
    }
    let (mut f, mut s) = (old - 1, new - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    walk_shape(f, s, total - 1).map(|shape| (pow2, shape))
}

#[test]
fn inclusion_proofs_for_every_size_up_to_1000() {
    let mut naive = Naive::new(MAX);
    let table = Table::new(&naive.leaves.clone());
    for size in 1..=MAX {
        let root = naive.mth(0, size);
        assert_eq!(merkle::root_of(&naive.leaves[..size]), root, "size {size}");
        assert_eq!(
            merkle::tree_root(size as u64, &table).unwrap(),
            root,
            "size {size}"
        );
        for index in sample(size, 128, 29) {
            let proof = merkle::prove_inclusion(index as u64, size as u64, &table).unwrap();
            assert_eq!(
                proof,
                naive.path(index, 0, size),
                "index {index} size {size}"
            );
            let leaf = naive.leaves[index];
            merkle::verify_inclusion(&leaf, index as u64, size as u64, &proof, &root).unwrap();
        }
    }
}

#[test]
fn consistency_proofs_for_every_size_up_to_1000() {
    let mut naive = Naive::new(MAX);
    let table = Table::new(&naive.leaves.clone());
    for new in 1..=MAX {
        let new_root = naive.mth(0, new);
        let mut olds = sample(new, 64, 41);
        olds.push(new);
        for old in olds {
            let proof = merkle::prove_consistency(old as u64, new as u64, &table).unwrap();
            let want = if old == 0 || old == new {
                Vec::new()
            } else {
                naive.subproof(old, 0, new, true)
            };
            assert_eq!(proof, want, "{old} -> {new}");
            let old_root = naive.mth(0, old);
            merkle::verify_consistency(old as u64, new as u64, &old_root, &new_root, &proof)
                .unwrap();
        }
    }
}

fn flip(h: &Hash, bit: usize) -> Hash {
    let mut b = *h;
    b.0[bit / 8] ^= 1 << (bit % 8);
    b
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn inclusion_tampering_fails(size in 1usize..=MAX, index_seed in any::<usize>(), bit in 0usize..256) {
        let mut naive = Naive::new(MAX);
        let index = index_seed % size;
        let proof = naive.path(index, 0, size);
        let root = naive.mth(0, size);
        let leaf = naive.leaves[index];
        let (i, s) = (index as u64, size as u64);
        prop_assert!(merkle::verify_inclusion(&leaf, i, s, &proof, &root).is_ok());
        // Any proof hash, the root or the leaf with a flipped bit.
        for k in 0..proof.len() {
            let mut bad = proof.clone();
            bad[k] = flip(&bad[k], bit);
            prop_assert!(merkle::verify_inclusion(&leaf, i, s, &bad, &root).is_err());
        }
        prop_assert!(merkle::verify_inclusion(&leaf, i, s, &proof, &flip(&root, bit)).is_err());
        prop_assert!(merkle::verify_inclusion(&flip(&leaf, bit), i, s, &proof, &root).is_err());
        // Any bit of the index or the size: fails unless the proof follows
        // the same pattern (then it is the same computation, same root).
        let want = inclusion_shape(i, s, proof.len()).unwrap();
        for b in 0..64 {
            let (i2, s2) = (i ^ (1 << b), s ^ (1 << b));
            let same = inclusion_shape(i2, s, proof.len()).as_ref() == Some(&want);
            prop_assert_eq!(merkle::verify_inclusion(&leaf, i2, s, &proof, &root).is_ok(), same);
            let same = inclusion_shape(i, s2, proof.len()).as_ref() == Some(&want);
            prop_assert_eq!(merkle::verify_inclusion(&leaf, i, s2, &proof, &root).is_ok(), same);
        }
        // A proof with a hash added or removed.
        let mut longer = proof.clone();
        longer.push(root);
        prop_assert!(merkle::verify_inclusion(&leaf, i, s, &longer, &root).is_err());
        if !proof.is_empty() {
            prop_assert!(merkle::verify_inclusion(&leaf, i, s, &proof[1..], &root).is_err());
        }
    }

    #[test]
    fn consistency_tampering_fails(new in 2usize..=MAX, old_seed in any::<usize>(), bit in 0usize..256) {
        let mut naive = Naive::new(MAX);
        let old = 1 + old_seed % (new - 1);
        let proof = naive.subproof(old, 0, new, true);
        let (r1, r2) = (naive.mth(0, old), naive.mth(0, new));
        let (o, n) = (old as u64, new as u64);
        prop_assert!(merkle::verify_consistency(o, n, &r1, &r2, &proof).is_ok());
        for k in 0..proof.len() {
            let mut bad = proof.clone();
            bad[k] = flip(&bad[k], bit);
            prop_assert!(merkle::verify_consistency(o, n, &r1, &r2, &bad).is_err());
        }
        prop_assert!(merkle::verify_consistency(o, n, &flip(&r1, bit), &r2, &proof).is_err());
        prop_assert!(merkle::verify_consistency(o, n, &r1, &flip(&r2, bit), &proof).is_err());
        let want = consistency_shape(o, n, proof.len()).unwrap();
        for b in 0..64 {
            let (o2, n2) = (o ^ (1 << b), n ^ (1 << b));
            let same = consistency_shape(o2, n, proof.len()).as_ref() == Some(&want);
            prop_assert_eq!(merkle::verify_consistency(o2, n, &r1, &r2, &proof).is_ok(), same, "old {} -> {}", o2, n);
            let same = consistency_shape(o, n2, proof.len()).as_ref() == Some(&want);
            prop_assert_eq!(merkle::verify_consistency(o, n2, &r1, &r2, &proof).is_ok(), same, "old {} -> {}", o, n2);
        }
        let mut longer = proof.clone();
        longer.push(r2);
        prop_assert!(merkle::verify_consistency(o, n, &r1, &r2, &longer).is_err());
        if !proof.is_empty() {
            prop_assert!(merkle::verify_consistency(o, n, &r1, &r2, &proof[1..]).is_err());
        }
    }

    /// Verification never panics, whatever the numbers and hashes.
    #[test]
    fn verifiers_never_panic(index in any::<u64>(), size in any::<u64>(), old in any::<u64>(), len in 0usize..70, seed in any::<u8>()) {
        let proof: Vec<Hash> = (0..len).map(|i| Hash([seed.wrapping_add(i as u8); 32])).collect();
        let h = Hash([seed; 32]);
        let _ = merkle::verify_inclusion(&h, index, size, &proof, &h);
        let _ = merkle::root_from_inclusion_proof(&h, index, size, &proof);
        let _ = merkle::verify_consistency(old, size, &h, &h, &proof);
        let _ = merkle::subtrees(size);
    }
}

#[test]
fn edge_cases() {
    let leaves: Vec<Hash> = (0..8u8).map(|i| leaf_hash(&[i])).collect();
    let r: &[Hash] = &leaves;
    // Size 0.
    assert_eq!(merkle::tree_root(0, r).unwrap(), EMPTY_ROOT);
    assert!(merkle::subtrees(0).is_empty());
    assert!(matches!(
        merkle::prove_inclusion(0, 0, r),
        Err(Error::InvalidRange(_))
    ));
    assert!(merkle::verify_inclusion(&EMPTY_ROOT, 0, 0, &[], &EMPTY_ROOT).is_err());
    // Consistency from 0 is the empty proof, and only that.
    assert_eq!(
        merkle::prove_consistency(0, 5, r).unwrap(),
        Vec::<Hash>::new()
    );
    let root5 = merkle::root_of(&leaves[..5]);
    merkle::verify_consistency(0, 5, &EMPTY_ROOT, &root5, &[]).unwrap();
    merkle::verify_consistency(0, 0, &EMPTY_ROOT, &EMPTY_ROOT, &[]).unwrap();
    assert!(merkle::verify_consistency(0, 5, &EMPTY_ROOT, &root5, &[root5]).is_err());
    assert!(merkle::verify_consistency(0, 5, &root5, &root5, &[]).is_err());
    assert!(merkle::verify_consistency(0, 0, &EMPTY_ROOT, &root5, &[]).is_err());
    // Equal sizes.
    merkle::verify_consistency(5, 5, &root5, &root5, &[]).unwrap();
    assert!(merkle::verify_consistency(5, 5, &root5, &EMPTY_ROOT, &[]).is_err());
    assert!(merkle::verify_consistency(5, 5, &root5, &root5, &[root5]).is_err());
    // index >= size, old > new.
    assert!(matches!(
        merkle::prove_inclusion(8, 8, r),
        Err(Error::InvalidRange(_))
    ));
    assert!(matches!(
        merkle::prove_consistency(6, 5, r),
        Err(Error::InvalidRange(_))
    ));
    assert!(matches!(
        merkle::verify_inclusion(&leaves[0], 5, 5, &[], &root5),
        Err(Error::InvalidRange(_))
    ));
    assert!(matches!(
        merkle::verify_consistency(6, 5, &root5, &root5, &[]),
        Err(Error::InvalidRange(_))
    ));
    // Sizes at or above 2^63, and u64::MAX.
    for big in [MAX_TREE_SIZE, MAX_TREE_SIZE + 1, u64::MAX - 1, u64::MAX] {
        assert!(matches!(
            merkle::tree_root(big, r),
            Err(Error::InvalidRange(_))
        ));
        assert!(matches!(
            merkle::prove_inclusion(0, big, r),
            Err(Error::InvalidRange(_))
        ));
        assert!(matches!(
            merkle::prove_consistency(1, big, r),
            Err(Error::InvalidRange(_))
        ));
        assert!(matches!(
            merkle::verify_inclusion(&leaves[0], big - 1, big, &[], &root5),
            Err(Error::InvalidRange(_))
        ));
        assert!(matches!(
            merkle::verify_consistency(big - 1, big, &root5, &root5, &[]),
            Err(Error::InvalidRange(_))
        ));
        assert!(merkle::verify_consistency(big, big, &root5, &root5, &[]).is_err());
    }
    // The largest tree allowed: proofs of the right length are checked.
    let last = MAX_TREE_SIZE - 1;
    assert!(matches!(
        merkle::verify_inclusion(&leaves[0], last - 1, last, &[], &root5),
        Err(Error::ProofLength {
            expected: 62,
            got: 0
        })
    ));
    let proof = vec![leaves[0]; 62];
    assert!(matches!(
        merkle::verify_inclusion(&leaves[0], last - 1, last, &proof, &root5),
        Err(Error::RootMismatch)
    ));
    assert_eq!(merkle::subtrees(last).len(), 63);
    // A reader that returns the wrong number of hashes is an error, not a panic.
    struct Short;
    impl HashReader for Short {
        fn read_hashes(&self, _: &[NodeId]) -> Result<Vec<Hash>, Error> {
            Ok(vec![])
        }
    }
    assert!(matches!(
        merkle::prove_inclusion(0, 5, &Short),
        Err(Error::Read(_))
    ));
    assert!(matches!(merkle::tree_root(5, &Short), Err(Error::Read(_))));
    // Reading outside the slice is an error.
    assert!(matches!(
        r.read_hashes(&[NodeId::new(3, 1)]),
        Err(Error::Read(_))
    ));
    assert!(matches!(
        r.read_hashes(&[NodeId::new(200, 1)]),
        Err(Error::Read(_))
    ));
    assert!(matches!(
        r.read_hashes(&[NodeId::new(0, u64::MAX)]),
        Err(Error::Read(_))
    ));
}

#[test]
fn proofs_read_hashes_in_one_call() {
    use std::cell::Cell;
    struct Counting<'a>(&'a [Hash], Cell<usize>);
    impl HashReader for Counting<'_> {
        fn read_hashes(&self, nodes: &[NodeId]) -> Result<Vec<Hash>, Error> {
            self.1.set(self.1.get() + 1);
            self.0.read_hashes(nodes)
        }
    }
    let leaves: Vec<Hash> = (0..100u8).map(|i| leaf_hash(&[i])).collect();
    let c = Counting(&leaves, Cell::new(0));
    merkle::prove_inclusion(37, 99, &c).unwrap();
    merkle::prove_consistency(37, 99, &c).unwrap();
    merkle::tree_root(99, &c).unwrap();
    assert_eq!(c.1.get(), 3);
}
