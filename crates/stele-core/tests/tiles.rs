//! C2SP tlog-tiles: paths, tile math, bundles, TileHashReader and
//! TreeBuilder.

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use stele_core::merkle::{self, HashReader, NodeId};
use stele_core::tile::{self, TileId, TilePath, TileReader, TreeBuilder};
use stele_core::{leaf_hash, Error, Hash, EMPTY_ROOT};

#[test]
fn index_encoding_and_paths() {
    assert_eq!(tile::encode_index(0), "000");
    assert_eq!(tile::encode_index(7), "007");
    assert_eq!(tile::encode_index(1000), "x001/000");
    assert_eq!(tile::encode_index(1234067), "x001/x234/067");
    assert_eq!(
        tile::encode_index(u64::MAX),
        "x018/x446/x744/x073/x709/x551/615"
    );
    let cases = [
        ("tile/0/000", TilePath::Hash(TileId::new(0, 0, 256))),
        (
            "tile/1/x001/x234/067",
            TilePath::Hash(TileId::new(1, 1234067, 256)),
        ),
        (
            "tile/1/x001/x234/067.p/7",
            TilePath::Hash(TileId::new(1, 1234067, 7)),
        ),
        ("tile/63/000.p/255", TilePath::Hash(TileId::new(63, 0, 255))),
        (
            "tile/entries/000",
            TilePath::Entries(TileId::new(0, 0, 256)),
        ),
        (
            "tile/entries/x001/234.p/1",
            TilePath::Entries(TileId::new(0, 1234, 1)),
        ),
        (
            "tile/2/x018/x446/x744/x073/x709/x551/615",
            TilePath::Hash(TileId::new(2, u64::MAX, 256)),
        ),
    ];
    for (path, want) in cases {
        assert_eq!(TilePath::parse(path).unwrap(), want, "{path}");
        assert_eq!(want.to_path(), path);
    }
    for bad in [
        "",
        "tile",
        "tile/",
        "tile/0",
        "tile/0/",
        "tile/0/0",
        "tile/0/00",
        "tile/0/0000",
        "tile/00/000",
        "tile/01/000",
        "tile/64/000",
        "tile/-1/000",
        "tile/+1/000",
        "tile/data/000",
        "tile/8/0/000",
        "tile/0/x000/001",
        "tile/0/x001",
        "tile/0/001/002",
        "tile/0/x01/002",
        "tile/0/xx001/002",
        "tile/0/000.p/0",
        "tile/0/000.p/256",
        "tile/0/000.p/07",
        "tile/0/000.p/",
        "tile/0/000.p",
        "tile/0/000.p/7/",
        "tile/0/000/",
        "/tile/0/000",
        "tile/0/000.p/7.p/7",
        "tile/entries/000.p/300",
        "tile/entries/x000/000",
        "tile/0/x018/x446/x744/x073/x709/x551/616",
        "tile/0/x999/x999/x999/x999/x999/x999/x999/999",
        "tile/0/ 000",
        "tile/0/٠٠٠",
        "checkpoint",
    ] {
        assert!(TilePath::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn tile_math_matches_the_spec_example() {
    // "a tree of size 70,000 will be represented by 273 full level 0 tiles,
    // one partial level 0 tile of width 112, one full level 1 tile, one
    // partial level 1 tile of width 17, and one partial level 2 tile of
    // width 1."
    assert_eq!(
        tile::partial_tiles(70_000),
        vec![
            TileId::new(0, 273, 112),
            TileId::new(1, 1, 17),
            TileId::new(2, 0, 1)
        ]
    );
    assert_eq!(tile::tile_count(0, 70_000), 274);
    assert_eq!(tile::tile_count(1, 70_000), 2);
    assert_eq!(tile::tile_count(2, 70_000), 1);
    assert_eq!(tile::tile_count(3, 70_000), 0);
    assert_eq!(tile::tile_width(0, 272, 70_000), 256);
    assert_eq!(tile::tile_width(0, 273, 70_000), 112);
    assert_eq!(tile::tile_width(0, 274, 70_000), 0);
    assert_eq!(tile::tile_width(1, 0, 70_000), 256);
    assert_eq!(tile::tile_width(1, 1, 70_000), 17);
    // "a tree of size 256 will be represented by a full level 0 tile and a
    // partial level 1 tile of width 1."
    assert_eq!(tile::partial_tiles(256), vec![TileId::new(1, 0, 1)]);
    assert!(tile::partial_tiles(0).is_empty());
    assert_eq!(tile::tile_count(7, u64::MAX), 1);
    assert_eq!(tile::tile_count(8, u64::MAX), 0);
    assert_eq!(tile::tile_count(255, u64::MAX), 0);
    assert_eq!(tile::tile_width(255, 0, u64::MAX), 0);
    // Changed tiles, lowest level first, at their new widths.
    assert_eq!(
        tile::changed_tiles(250, 520),
        vec![
            TileId::new(0, 0, 256),
            TileId::new(0, 1, 256),
            TileId::new(0, 2, 8),
            TileId::new(1, 0, 2)
        ]
    );
    assert_eq!(tile::changed_tiles(256, 257), vec![TileId::new(0, 1, 1)]);
    assert!(tile::changed_tiles(5, 5).is_empty());
    assert!(tile::changed_tiles(6, 5).is_empty());
    assert_eq!(
        tile::changed_bundles(250, 520),
        vec![
            TileId::new(0, 0, 256),
            TileId::new(0, 1, 256),
            TileId::new(0, 2, 8)
        ]
    );
    assert_eq!(tile::changed_bundles(0, 1), vec![TileId::new(0, 0, 1)]);
    assert!(tile::changed_bundles(3, 3).is_empty());
    // Node locations.
    assert_eq!(tile::node_location(NodeId::new(0, 5)), (0, 0, 5, 1));
    assert_eq!(tile::node_location(NodeId::new(0, 300)), (0, 1, 44, 1));
    assert_eq!(tile::node_location(NodeId::new(3, 33)), (0, 1, 8, 8));
    assert_eq!(tile::node_location(NodeId::new(8, 5)), (1, 0, 5, 1));
    assert_eq!(tile::node_location(NodeId::new(15, 3)), (1, 1, 128, 128));
    let _ = tile::node_location(NodeId::new(255, u64::MAX));
}

#[test]
fn bundles_and_tile_data() {
    let leaves: Vec<Vec<u8>> = vec![vec![], b"a".to_vec(), vec![7u8; 65_535]];
    let data = tile::encode_bundle(leaves.iter().map(Vec::as_slice)).unwrap();
    assert_eq!(&data[..3], &[0, 0, 0]);
    assert_eq!(&data[2..5], &[0, 1, b'a']);
    let back = tile::decode_bundle(&data).unwrap();
    assert_eq!(back, leaves.iter().map(Vec::as_slice).collect::<Vec<_>>());
    assert!(tile::encode_bundle([vec![0u8; 65_536].as_slice()]).is_err());
    assert!(tile::decode_bundle(&[]).unwrap().is_empty());
    assert!(tile::decode_bundle(&[0]).is_err());
    assert!(tile::decode_bundle(&[0, 2, 1]).is_err());
    assert!(tile::decode_bundle(&data[..data.len() - 1]).is_err());
    let hashes = tile::tile_hashes(&[9u8; 64]).unwrap();
    assert_eq!(hashes, vec![Hash([9; 32]), Hash([9; 32])]);
    assert!(tile::tile_hashes(&[]).is_err());
    assert!(tile::tile_hashes(&[0; 33]).is_err());
    assert!(tile::tile_hashes(&vec![0; 32 * 257]).is_err());
    assert_eq!(tile::tile_hashes(&vec![0; 32 * 256]).unwrap().len(), 256);
}

/// Tiles as a store keeps them: the latest (widest) version of each.
#[derive(Default)]
struct Store {
    tiles: HashMap<(u8, u64), Vec<u8>>,
    reads: std::cell::Cell<usize>,
}

impl TileReader for Store {
    type Data = Vec<u8>;
    fn read_tiles(&self, tiles: &[TileId]) -> Result<Vec<Vec<u8>>, Error> {
        self.reads.set(self.reads.get() + 1);
        let mut seen = std::collections::HashSet::new();
        tiles
            .iter()
            .map(|t| {
                assert!(
                    seen.insert((t.level, t.index)),
                    "tile {t:?} requested twice in one call"
                );
                self.tiles
                    .get(&(t.level, t.index))
                    .cloned()
                    .ok_or_else(|| Error::Read(format!("no tile {t:?}")))
            })
            .collect()
    }
}

fn leaves(n: usize) -> Vec<Hash> {
    (0..n)
        .map(|i| leaf_hash(&(i as u64).to_be_bytes()))
        .collect()
}

/// Appends `hashes` in batches of the given sizes, checking each step, and
/// returns the builder and every tile it produced.
fn build(hashes: &[Hash], batches: &[usize]) -> (TreeBuilder, Store) {
    let mut b = TreeBuilder::new();
    let mut store = Store::default();
    let mut done = 0;
    for &n in batches {
        let n = n.min(hashes.len() - done);
        let old = b.size();
        let changed = b.append(&hashes[done..done + n]);
        done += n;
        assert_eq!(b.size(), done as u64);
        let ids: Vec<TileId> = changed.iter().map(|(t, _)| *t).collect();
        assert_eq!(
            ids,
            tile::changed_tiles(old, done as u64),
            "{old} -> {done}"
        );
        for (t, data) in changed {
            assert_eq!(data.len(), 32 * usize::from(t.width));
            store.tiles.insert((t.level, t.index), data);
        }
        assert_eq!(b.root(), merkle::root_of(&hashes[..done]), "root at {done}");
    }
    if done < hashes.len() {
        b.append(&hashes[done..]).into_iter().for_each(|(t, d)| {
            store.tiles.insert((t.level, t.index), d);
        });
    }
    (b, store)
}

#[test]
fn builder_tiles_give_the_same_proofs() {
    let all = leaves(70_000);
    let (b, store) = build(&all, &[1, 255, 1, 300, 65_000, 3_000]);
    assert_eq!(b.size(), 70_000);
    assert_eq!(b.root(), merkle::root_of(&all));
    // The spec's example tree: 274 + 2 + 1 tiles.
    assert_eq!(store.tiles.len(), 277);
    // Every hash tile is what the level below says it is.
    for ((level, index), data) in &store.tiles {
        let hashes = tile::tile_hashes(data).unwrap();
        for (i, h) in hashes.iter().enumerate() {
            let node = NodeId::new(8 * level, index * 256 + i as u64);
            assert_eq!(*h, all[..].read_hashes(&[node]).unwrap()[0], "{node:?}");
        }
    }
    // Proofs through tiles equal proofs from the leaves, at many sizes.
    let flat: &[Hash] = &all;
    for size in [
        1u64, 2, 255, 256, 257, 65_535, 65_536, 65_537, 69_999, 70_000,
    ] {
        let r = tile::TileHashReader::new(size, &store);
        assert_eq!(
            merkle::tree_root(size, &r).unwrap(),
            merkle::root_of(&all[..size as usize])
        );
        for index in [0, size / 3, size / 2, size - 1] {
            let before = store.reads.get();
            let p = merkle::prove_inclusion(index, size, &r).unwrap();
            assert_eq!(store.reads.get() - before, usize::from(!p.is_empty()));
            assert_eq!(
                p,
                merkle::prove_inclusion(index, size, flat).unwrap(),
                "{index} in {size}"
            );
            let old = index.max(1);
            assert_eq!(
                merkle::prove_consistency(old, size, &r).unwrap(),
                merkle::prove_consistency(old, size, flat).unwrap(),
                "{old} -> {size}"
            );
        }
    }
    // Nodes outside the tree are refused, not read.
    let r = tile::TileHashReader::new(1000, &store);
    assert!(r.read_hashes(&[NodeId::new(0, 1000)]).is_err());
    assert!(r.read_hashes(&[NodeId::new(10, 0)]).is_err());
    assert!(r.read_hashes(&[NodeId::new(63, 0)]).is_err());
    assert!(r.read_hashes(&[NodeId::new(0, u64::MAX)]).is_err());
}

#[test]
fn builder_resumes_from_partial_tiles() {
    let all = leaves(1_500);
    let (full, full_store) = build(&all, &[1_500]);
    for cut in [0usize, 1, 255, 256, 257, 700, 1_499] {
        let (first, store) = build(&all[..cut], &[cut]);
        let partial: Vec<(TileId, Vec<u8>)> = tile::partial_tiles(cut as u64)
            .into_iter()
            .map(|t| (t, store.tiles[&(t.level, t.index)].clone()))
            .collect();
        let refs: Vec<(TileId, &[u8])> = partial.iter().map(|(t, d)| (*t, d.as_slice())).collect();
        let mut resumed = TreeBuilder::from_partial_tiles(cut as u64, &refs).unwrap();
        assert_eq!(resumed.root(), first.root());
        let mut tiles = store.tiles;
        for (t, d) in resumed.append(&all[cut..]) {
            tiles.insert((t.level, t.index), d);
        }
        assert_eq!(resumed.root(), full.root());
        assert_eq!(tiles, full_store.tiles, "cut {cut}");
    }
    // Wider versions are truncated; missing or unrelated tiles are refused.
    let wide = full_store.tiles[&(0, 2)].clone();
    let b = TreeBuilder::from_partial_tiles(
        600,
        &[
            (TileId::new(0, 2, 88), &wide),
            (TileId::new(1, 0, 2), &full_store.tiles[&(1, 0)]),
        ],
    )
    .unwrap();
    assert_eq!(b.root(), merkle::root_of(&all[..600]));
    assert!(TreeBuilder::from_partial_tiles(600, &[(TileId::new(0, 2, 88), &wide)]).is_err());
    assert!(TreeBuilder::from_partial_tiles(600, &[]).is_err());
    assert!(TreeBuilder::from_partial_tiles(
        600,
        &[
            (TileId::new(0, 2, 88), &wide),
            (TileId::new(1, 0, 2), &full_store.tiles[&(1, 0)]),
            (TileId::new(0, 0, 256), &wide)
        ]
    )
    .is_err());
    assert!(TreeBuilder::from_partial_tiles(
        600,
        &[
            (TileId::new(0, 2, 88), &wide[..32]),
            (TileId::new(1, 0, 2), &full_store.tiles[&(1, 0)])
        ]
    )
    .is_err());
    assert_eq!(
        TreeBuilder::from_partial_tiles(0, &[]).unwrap().root(),
        EMPTY_ROOT
    );
    assert!(TreeBuilder::from_partial_tiles(1 << 63, &[]).is_err());
    assert!(TreeBuilder::from_partial_tiles(u64::MAX, &[]).is_err());
    assert!(TreeBuilder::new().append(&[]).is_empty());
    assert_eq!(TreeBuilder::new().root(), EMPTY_ROOT);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Any batch split gives the same root and the same final tiles.
    #[test]
    fn batch_splits_do_not_matter(n in 1usize..2_000, cuts in proptest::collection::vec(0usize..600, 0..12)) {
        let all = leaves(n);
        let (one, one_store) = build(&all, &[n]);
        let (many, many_store) = build(&all, &cuts);
        prop_assert_eq!(one.root(), many.root());
        let a: BTreeMap<_, _> = one_store.tiles.into_iter().collect();
        let b: BTreeMap<_, _> = many_store.tiles.into_iter().collect();
        prop_assert_eq!(a, b);
    }

    #[test]
    fn tile_paths_round_trip(level in 0u8..=63, index in any::<u64>(), width in 1u16..=256, entries in any::<bool>()) {
        let id = TileId::new(if entries { 0 } else { level }, index, width);
        let p = if entries { TilePath::Entries(id) } else { TilePath::Hash(id) };
        prop_assert_eq!(TilePath::parse(&p.to_path()).unwrap(), p);
    }

    #[test]
    fn tile_parsers_never_panic(s in "\\PC{0,80}", t in "tile/(entries|[0-9]{1,3})/[x0-9/.p]{0,40}", data in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = TilePath::parse(&s);
        if let Ok(p) = TilePath::parse(&t) {
            prop_assert_eq!(p.to_path(), t);
        }
        let _ = tile::decode_bundle(&data);
        let _ = tile::tile_hashes(&data);
        let _ = TreeBuilder::from_partial_tiles(data.len() as u64 * 3, &[(TileId::new(0, 0, 3), &data)]);
    }
}

#[test]
fn a_narrower_bundle_is_a_prefix_of_a_wider_one() {
    use stele_core::tile::{decode_bundle, encode_bundle, truncate_bundle};
    let leaves: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; usize::from(i) * 3]).collect();
    let full = encode_bundle(leaves.iter().map(|l| l.as_slice())).unwrap();
    for w in 0..=5u16 {
        let cut = truncate_bundle(&full, w).unwrap();
        let want = encode_bundle(leaves[..usize::from(w)].iter().map(|l| l.as_slice())).unwrap();
        assert_eq!(cut, &want[..]);
        assert_eq!(decode_bundle(cut).unwrap().len(), usize::from(w));
    }
    assert!(truncate_bundle(&full, 6).is_err());
    assert!(truncate_bundle(&full[..full.len() - 1], 5).is_err());
}

/// Two passes, as a client that fetches its tiles does: `TileWants` names
/// the tiles a proof reads, a `TileMap` of exactly those gives the same
/// proof as the leaves themselves.
#[test]
fn proofs_in_two_passes_over_fetched_tiles() {
    let hashes = leaves(70_000);
    let (_, store) = build(&hashes, &[70_000]);
    for (old, new) in [
        (1u64, 2u64),
        (255, 256),
        (256, 70_000),
        (1_000, 65_537),
        (69_999, 70_000),
    ] {
        let wanted = tile::TileWants::default();
        assert!(
            merkle::prove_consistency(old, new, &tile::TileHashReader::new(new, &wanted)).is_err()
        );
        let mut fetched = tile::TileMap::default();
        let ids = wanted.into_wanted();
        assert!(!ids.is_empty(), "{old} -> {new}");
        for id in ids {
            let data = store.tiles[&(id.level, id.index)].clone();
            fetched.insert(id, data);
        }
        let proof =
            merkle::prove_consistency(old, new, &tile::TileHashReader::new(new, &fetched)).unwrap();
        let expected = merkle::prove_consistency(old, new, &hashes[..new as usize]).unwrap();
        assert_eq!(proof, expected, "{old} -> {new}");
    }
    // A computation that fails before reading asks for nothing.
    let wanted = tile::TileWants::default();
    assert!(merkle::prove_consistency(5, 3, &tile::TileHashReader::new(3, &wanted)).is_err());
    assert!(wanted.into_wanted().is_empty());
}
