//! Cross-check against an independent implementation: `tlog_tiles` (a port
//! of Go's `golang.org/x/mod/sumdb/tlog`), which stores hashes by sumdb
//! stored-hash index.

use stele_core::merkle;
use stele_core::Hash;
use tlog_tiles::tlog;

struct Stored(Vec<tlog::Hash>);

impl tlog::HashReader for Stored {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<tlog::Hash>, tlog::Error> {
        indexes
            .iter()
            .map(|&i| {
                self.0
                    .get(i as usize)
                    .copied()
                    .ok_or(tlog::Error::IndexesNotInTree)
            })
            .collect()
    }
}

fn ours(h: tlog::Hash) -> Hash {
    Hash(h.0)
}

#[test]
fn same_roots_and_proofs_as_tlog_tiles() {
    const N: u64 = 400;
    let mut stored = Stored(Vec::new());
    let mut leaves = Vec::new();
    for i in 0..N {
        let data = format!("record {i}");
        let new = tlog::stored_hashes(i, data.as_bytes(), &stored).unwrap();
        stored.0.extend(new);
        leaves.push(stele_core::leaf_hash(data.as_bytes()));
        assert_eq!(leaves[i as usize], ours(tlog::record_hash(data.as_bytes())));
    }
    let flat: &[Hash] = &leaves;
    for size in 1..=N {
        let root = ours(tlog::tree_hash(size, &stored).unwrap());
        assert_eq!(merkle::tree_root(size, flat).unwrap(), root, "size {size}");
        let sample: Vec<u64> = if size <= 64 {
            (0..size).collect()
        } else {
            vec![0, 1, size / 3, size / 2, size - 2, size - 1]
        };
        for &i in &sample {
            let theirs: Vec<Hash> = tlog::prove_record(size, i, &stored)
                .unwrap()
                .into_iter()
                .map(ours)
                .collect();
            let mine = merkle::prove_inclusion(i, size, flat).unwrap();
            assert_eq!(mine, theirs, "inclusion {i} in {size}");
            let p: Vec<tlog::Hash> = mine.iter().map(|h| tlog::Hash(h.0)).collect();
            tlog::check_record(
                &p,
                size,
                tlog::Hash(root.0),
                i,
                tlog::Hash(leaves[i as usize].0),
            )
            .unwrap();
        }
        for &old in &sample {
            let old = old + 1;
            let theirs: Vec<Hash> = tlog::prove_tree(size, old, &stored)
                .unwrap()
                .into_iter()
                .map(ours)
                .collect();
            let mine = merkle::prove_consistency(old, size, flat).unwrap();
            assert_eq!(mine, theirs, "consistency {old} -> {size}");
            let old_root = merkle::tree_root(old, flat).unwrap();
            merkle::verify_consistency(old, size, &old_root, &root, &theirs).unwrap();
            let p: Vec<tlog::Hash> = mine.iter().map(|h| tlog::Hash(h.0)).collect();
            tlog::check_tree(&p, size, tlog::Hash(root.0), old, tlog::Hash(old_root.0)).unwrap();
        }
    }
}
