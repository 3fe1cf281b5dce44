//! Property-based fuzzing of every parser that reads bytes from the
//! network or from a file: arbitrary input never panics, and what a parser
//! accepts re-encodes to something it accepts again. Bounded (the case
//! count below, or `PROPTEST_CASES`), run with the other tests.
//!
//! Inputs are drawn two ways: arbitrary bytes/strings, and mutations of a
//! valid example (so the parsers' deeper paths are reached, not only their
//! first line).

use proptest::prelude::*;
use stele_core::checkpoint::Checkpoint;
use stele_core::note::{self, Signer, Verifier};
use stele_core::policy::Policy;
use stele_core::receipt::Receipt;
use stele_core::tile::{decode_bundle, TilePath};
use stele_core::tlog_proof::TlogProof;
use stele_core::witness::AddCheckpointRequest;
use stele_core::{leaf_hash, Hash};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(2000),
        ..ProptestConfig::default()
    }
}

/// A signed checkpoint note and the tlog-proof / receipt around it.
fn valid_note() -> (String, Verifier) {
    let (signer, _) = Signer::generate("fuzz.example/log").unwrap();
    let cp = Checkpoint::new("fuzz.example/log", 3, leaf_hash(b"root"));
    let text = signer.sign_checkpoint(&cp).unwrap();
    (text, Verifier::from_vkey(&signer.vkey()).unwrap())
}

/// `s` with bytes replaced, inserted or deleted at the given positions.
fn mutate(s: &str, edits: &[(usize, u8, u8)]) -> Vec<u8> {
    let mut b = s.as_bytes().to_vec();
    for &(pos, op, byte) in edits {
        if b.is_empty() {
            b.push(byte);
            continue;
        }
        let i = pos % b.len();
        match op % 3 {
            0 => b[i] = byte,
            1 => b.insert(i, byte),
            _ => {
                b.remove(i);
            }
        }
    }
    b
}

fn edits() -> impl Strategy<Value = Vec<(usize, u8, u8)>> {
    prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 0..8)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn checkpoint_bodies(body in ".{0,300}") {
        if let Ok(cp) = Checkpoint::parse(&body) {
            prop_assert_eq!(Checkpoint::parse(&cp.to_body()).unwrap(), cp);
        }
    }

    #[test]
    fn signed_notes(e in edits(), raw in prop::collection::vec(any::<u8>(), 0..400)) {
        let (text, verifier) = valid_note();
        for input in [mutate(&text, &e), raw.clone()] {
            let Ok(s) = std::str::from_utf8(&input) else { continue };
            let _ = note::open_checkpoint(s, &verifier);
            let _ = note::parse_unverified_checkpoint(s);
            let _ = note::parse_unverified_text(s);
        }
    }

    #[test]
    fn tile_paths(path in "(tile/)?[0-9a-z./x]{0,40}") {
        if let Ok(p) = TilePath::parse(&path) {
            prop_assert_eq!(TilePath::parse(&p.to_path()).unwrap(), p);
        }
    }

    #[test]
    fn entry_bundles(raw in prop::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(leaves) = decode_bundle(&raw) {
            let again = stele_core::tile::encode_bundle(leaves.iter().copied()).unwrap();
            prop_assert_eq!(again, raw);
        }
    }

    #[test]
    fn tlog_proofs(e in edits(), raw in ".{0,400}") {
        let (text, verifier) = valid_note();
        let proof = TlogProof { extra: None, index: 1, proof: vec![Hash([7; 32])], checkpoint: text };
        let good = proof.encode();
        for input in [String::from_utf8_lossy(&mutate(&good, &e)).into_owned(), raw.clone()] {
            if let Ok(p) = TlogProof::parse(&input) {
                prop_assert_eq!(TlogProof::parse(&p.encode()).unwrap(), p.clone());
                let _ = p.verify(b"leaf", &verifier);
            }
        }
    }

    #[test]
    fn receipts(e in edits()) {
        let (text, verifier) = valid_note();
        let r = Receipt::new("fuzz.example/log", 1, "leaf".into(), &[Hash([1; 32])], text);
        let json = serde_json::to_string(&r).unwrap();
        let mutated = mutate(&json, &e);
        if let Ok(r) = serde_json::from_slice::<Receipt>(&mutated) {
            let _ = r.verify(&verifier);
        }
    }

    #[test]
    fn witness_requests(e in edits(), raw in prop::collection::vec(any::<u8>(), 0..400)) {
        let (text, _) = valid_note();
        let good = AddCheckpointRequest::new(2, vec![Hash([3; 32])], text).encode();
        for input in [mutate(&good, &e), raw.clone()] {
            if let Ok(req) = AddCheckpointRequest::parse(&input) {
                prop_assert_eq!(AddCheckpointRequest::parse(req.encode().as_bytes()).unwrap(), req);
            }
        }
    }

    #[test]
    fn policies(e in edits(), raw in prop::collection::vec(any::<u8>(), 0..400)) {
        let (signer, _) = Signer::generate("fuzz.example/log").unwrap();
        let good = format!("log {}\nquorum none\n", signer.vkey());
        for input in [mutate(&good, &e), raw.clone()] {
            let _ = Policy::parse(&input);
        }
    }
}
