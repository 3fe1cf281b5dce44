//! Verification core throughput. Raw SHA-256 of 64-byte inputs is measured
//! in the same run so results can be quoted as ratios to the hash rate.

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use sha2::{Digest, Sha256};
use stele_core::merkle;
use stele_core::tile::TreeBuilder;
use stele_core::{leaf_hash, Hash};

fn leaves(n: u64) -> Vec<Hash> {
    (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("sha256");
    g.throughput(Throughput::Elements(1));
    let input = [7u8; 64];
    g.bench_function("64-byte input", |b| {
        b.iter(|| Sha256::digest(black_box(&input)))
    });
    g.finish();

    // A tree of 2^16 leaves; proofs for a leaf in the middle of a tree of
    // 1,000,000 leaves come from a reader that recomputes nothing.
    let hashes = leaves(1 << 16);
    let mut g = c.benchmark_group("root");
    g.throughput(Throughput::Elements(1 << 16));
    g.bench_function("root_of 2^16 leaves", |b| {
        b.iter(|| merkle::root_of(black_box(&hashes)))
    });
    g.finish();

    let size = 50_000u64;
    let small = leaves(size);
    let flat: &[Hash] = &small;
    let root = merkle::root_of(flat);
    let index = 31_337u64;
    let proof = merkle::prove_inclusion(index, size, flat).unwrap();
    let old = 20_001u64;
    let old_root = merkle::root_of(&small[..old as usize]);
    let cproof = merkle::prove_consistency(old, size, flat).unwrap();
    let mut g = c.benchmark_group("verify");
    g.throughput(Throughput::Elements(1));
    g.bench_function("inclusion (50,000 leaves)", |b| {
        b.iter(|| {
            merkle::verify_inclusion(
                black_box(&small[index as usize]),
                index,
                size,
                black_box(&proof),
                &root,
            )
            .unwrap()
        })
    });
    g.bench_function("consistency (20,001 -> 50,000)", |b| {
        b.iter(|| {
            merkle::verify_consistency(old, size, &old_root, &root, black_box(&cproof)).unwrap()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("tree_builder");
    g.throughput(Throughput::Elements(1000));
    let base = leaves(1_000_123);
    let mut start = TreeBuilder::new();
    start.append(&base);
    let batch = leaves(1000);
    g.bench_function("append 1,000 leaves to 1,000,123", |b| {
        b.iter_batched(
            || start.clone(),
            |mut t| {
                let tiles = t.append(black_box(&batch));
                (t.root(), tiles.len())
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
