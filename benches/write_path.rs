//! Per-record CPU costs of the write path, without I/O: body parsing and
//! validation, the dedup key, the canonical leaf, appending to the tree,
//! signing a checkpoint, and assembling one receipt.
//!
//! ```text
//! cargo bench --bench write_path
//! ```

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use stele::names::AgencyName;
use stele::records::{dedup_key, leaf_bytes, parse_record};
use stele_core::checkpoint::Checkpoint;
use stele_core::note::Signer;
use stele_core::receipt::Receipt;
use stele_core::tile::TreeBuilder;
use stele_core::{leaf_hash, Hash};

const BODY: &[u8] = br#"{"type":"bench.load","subject":"run1-c7-n12345","attributes":{"seq":12345,"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}"#;

fn records(c: &mut Criterion) {
    let record = parse_record(BODY).expect("valid body");
    let agency = AgencyName::parse("bench").expect("a valid name");
    c.bench_function("parse_record", |b| {
        b.iter(|| parse_record(black_box(BODY)).unwrap())
    });
    c.bench_function("dedup_key", |b| {
        b.iter(|| dedup_key(black_box(&agency), black_box(&record)))
    });
    c.bench_function("leaf_bytes", |b| {
        b.iter(|| {
            leaf_bytes(
                black_box(&agency),
                black_box(&record),
                None,
                1_767_225_600_000,
            )
        })
    });
}

fn tree(c: &mut Criterion) {
    let hashes: Vec<Hash> = (0u32..1000).map(|i| leaf_hash(&i.to_be_bytes())).collect();
    let mut g = c.benchmark_group("tree");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("append 1000 leaves at 100k", |b| {
        let mut base = TreeBuilder::new();
        for _ in 0..100 {
            base.append(&hashes);
        }
        b.iter(|| base.clone().append(black_box(&hashes)))
    });
    g.finish();

    let (signer, _) = Signer::generate("bench.stele.test/default").expect("key");
    let cp = Checkpoint::new("bench.stele.test/default", 100_000, hashes[0]);
    c.bench_function("sign checkpoint", |b| {
        b.iter(|| signer.sign_checkpoint(black_box(&cp)).unwrap())
    });
    let note = signer.sign_checkpoint(&cp).unwrap();
    let leaf = String::from_utf8(leaf_bytes(
        &AgencyName::parse("bench").expect("a valid name"),
        &parse_record(BODY).unwrap(),
        None,
        1_767_225_600_000,
    ))
    .unwrap();
    let proof: Vec<Hash> = hashes[..17].to_vec();
    c.bench_function("receipt (17-hash proof)", |b| {
        b.iter(|| {
            Receipt::new(
                "bench.stele.test/default",
                99_999,
                leaf.clone(),
                black_box(&proof),
                note.clone(),
            )
        })
    });
}

criterion_group!(benches, records, tree);
criterion_main!(benches);
