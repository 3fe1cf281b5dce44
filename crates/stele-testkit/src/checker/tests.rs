//! The checker against a minimal in-memory log served over loopback: it
//! accepts an honest log and catches a corrupted tile, a wrong inclusion
//! proof, a wrong entry, a fork, a receipt reusing another's index, and a
//! history rewrite.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::Router;
use stele_core::merkle::{prove_consistency, prove_inclusion, root_of};
use stele_core::note::Signer;

use stele_core::tile::{self, TilePath, TILE_WIDTH};
use stele_core::{leaf_hash, Hash};

use super::*;

#[derive(Default)]
struct Faults {
    corrupt_tile: Option<String>,
    wrong_inclusion: bool,
    wrong_entry: Option<u64>,
}

struct Fake {
    signer: Signer,
    leaves: Mutex<Vec<Vec<u8>>>,
    faults: Mutex<Faults>,
}

impl Fake {
    fn hashes(&self, size: usize) -> Vec<Hash> {
        self.leaves.lock().unwrap()[..size]
            .iter()
            .map(|l| leaf_hash(l))
            .collect()
    }
    fn note(&self, size: usize) -> String {
        let root = root_of(&self.hashes(size));
        self.signer
            .sign_checkpoint(&Checkpoint::new(self.signer.name(), size as u64, root))
            .unwrap()
    }
    fn push(&self, n: usize) -> Vec<Receipt> {
        let start = self.leaves.lock().unwrap().len();
        for i in start..start + n {
            self.leaves
                .lock()
                .unwrap()
                .push(format!("{{\"n\":{i}}}").into_bytes());
        }
        let size = start + n;
        let hashes = self.hashes(size);
        let note = self.note(size);
        (start..size)
            .map(|i| {
                let proof = prove_inclusion(i as u64, size as u64, &hashes[..]).unwrap();
                let leaf = String::from_utf8(self.leaves.lock().unwrap()[i].clone()).unwrap();
                Receipt::new(self.signer.name(), i as u64, leaf, &proof, note.clone())
            })
            .collect()
    }
}

async fn checkpoint(State(f): State<Arc<Fake>>) -> String {
    let size = f.leaves.lock().unwrap().len();
    f.note(size)
}

async fn tile(State(f): State<Arc<Fake>>, Path(rest): Path<String>) -> Vec<u8> {
    let path = format!("tile/{rest}");
    let size = f.leaves.lock().unwrap().len();
    let hashes = f.hashes(size);
    let mut data = match TilePath::parse(&path).unwrap() {
        TilePath::Entries(id) => {
            let leaves = f.leaves.lock().unwrap();
            let start = (id.index * TILE_WIDTH) as usize;
            let end = start + usize::from(id.width);
            tile::encode_bundle(leaves[start..end].iter().map(|l| l.as_slice())).unwrap()
        }
        TilePath::Hash(id) => {
            let mut out = Vec::new();
            for k in 0..u64::from(id.width) {
                let span = 1usize << (8 * u32::from(id.level));
                let first = ((id.index * TILE_WIDTH + k) as usize) * span;
                out.extend_from_slice(root_of(&hashes[first..first + span]).as_bytes());
            }
            out
        }
    };
    if f.faults.lock().unwrap().corrupt_tile.as_deref() == Some(path.as_str()) {
        data[0] ^= 1;
    }
    data
}

async fn consistency(State(f): State<Arc<Fake>>, Query(q): Query<HashMap<String, u64>>) -> String {
    let (from, to) = (q["from"], q["to"]);
    let hashes = f.hashes(to as usize);
    let proof = prove_consistency(from, to, &hashes[..]).unwrap();
    serde_json::json!({"from": from, "to": to, "consistency_proof": proof.iter().map(Hash::to_hex).collect::<Vec<_>>(), "checkpoint": null}).to_string()
}

async fn inclusion(State(f): State<Arc<Fake>>, Query(q): Query<HashMap<String, u64>>) -> String {
    let (index, size) = (q["index"], q["tree_size"]);
    let hashes = f.hashes(size as usize);
    let mut proof = prove_inclusion(index, size, &hashes[..]).unwrap();
    if f.faults.lock().unwrap().wrong_inclusion && !proof.is_empty() {
        proof[0] = Hash::default();
    }
    serde_json::json!({"index": index, "tree_size": size, "leaf_hash": hashes[index as usize].to_hex(),
        "inclusion_proof": proof.iter().map(Hash::to_hex).collect::<Vec<_>>(), "checkpoint": null})
    .to_string()
}

async fn entry(State(f): State<Arc<Fake>>, Path(index): Path<u64>) -> String {
    let mut leaf = String::from_utf8(f.leaves.lock().unwrap()[index as usize].clone()).unwrap();
    if f.faults.lock().unwrap().wrong_entry == Some(index) {
        leaf.push(' ');
    }
    serde_json::json!({"index": index, "leaf": leaf, "leaf_hash": leaf_hash(leaf.as_bytes()).to_hex()})
        .to_string()
}

async fn serve() -> (Arc<Fake>, String) {
    let (signer, _) = Signer::generate("checker.test/log").unwrap();
    let fake = Arc::new(Fake {
        signer,
        leaves: Mutex::default(),
        faults: Mutex::default(),
    });
    let app = Router::new()
        .route("/logs/l/checkpoint", get(checkpoint))
        .route("/logs/l/tile/{*rest}", get(tile))
        .route("/logs/l/proofs/consistency", get(consistency))
        .route("/logs/l/proofs/inclusion", get(inclusion))
        .route("/logs/l/entries/{index}", get(entry))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (fake, url)
}

#[tokio::test]
async fn accepts_an_honest_log_and_catches_each_fault() {
    let (fake, url) = serve().await;
    let mut checker = LogChecker::over_http(&url, "l", &fake.signer.vkey()).unwrap();
    // Its leaves are `{"n":i}`, not records.
    checker.opaque_leaves();
    assert_eq!(checker.check().await.unwrap().size, 0);
    for n in [1, 300, 255, 70] {
        for r in fake.push(n) {
            checker.add_receipt(&r).unwrap();
        }
        checker.check().await.unwrap();
    }
    assert!(checker.pending().is_empty());
    assert_eq!(checker.check_inclusion().await.unwrap(), 626);
    let audit = checker.audit().await.unwrap();
    assert_eq!((audit.checkpoint.size, audit.leaves.len()), (626, 626));
    let report = checker.check_all().await.unwrap();
    assert_eq!(
        (
            report.checkpoint.size,
            report.receipts,
            report.entries,
            report.stored
        ),
        (626, 626, 626, None)
    );

    // An entry served with another leaf than its bundle holds.
    fake.faults.lock().unwrap().wrong_entry = Some(300);
    let err = format!("{:#}", checker.check_all().await.unwrap_err());
    assert!(err.contains("entry 300"), "{err}");
    fake.faults.lock().unwrap().wrong_entry = None;
    checker.limit_entries(10);
    assert_eq!(checker.check_all().await.unwrap().entries, 10);

    // A hash tile that does not match the entries.
    fake.faults.lock().unwrap().corrupt_tile = Some("tile/0/001".into());
    let err = format!("{:#}", checker.audit().await.unwrap_err());
    assert!(err.contains("tile/0/001"), "{err}");
    // An entry bundle that does not match the receipts.
    fake.faults.lock().unwrap().corrupt_tile = Some("tile/entries/000".into());
    assert!(checker.audit().await.is_err());
    fake.faults.lock().unwrap().corrupt_tile = None;
    checker.audit().await.unwrap();

    fake.faults.lock().unwrap().wrong_inclusion = true;
    assert!(checker.check_inclusion().await.is_err());
    fake.faults.lock().unwrap().wrong_inclusion = false;

    // A receipt that reuses index 5 for another leaf.
    let mut other = fake.push(1).pop().unwrap();
    let proof = prove_inclusion(5, 627, &fake.hashes(627)[..]).unwrap();
    other = Receipt::new(fake.signer.name(), 5, other.leaf, &proof, other.checkpoint);
    assert!(checker.add_receipt(&other).is_err());

    // A second checkpoint of an already signed size with another root.
    let forked = fake
        .signer
        .sign_checkpoint(&Checkpoint::new(fake.signer.name(), 301, Hash([7; 32])))
        .unwrap();
    let err = checker.add_note(&forked).unwrap_err().to_string();
    assert!(err.contains("fork"), "{err}");

    // A history rewrite: the log now serves other leaves under a larger
    // size; the checkpoints already seen are not consistent with it.
    fake.leaves.lock().unwrap()[3] = b"rewritten".to_vec();
    let err = checker.check().await.unwrap_err().to_string();
    assert!(err.contains("not consistent"), "{err}");
}
