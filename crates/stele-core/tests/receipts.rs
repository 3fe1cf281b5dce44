//! tlog-proof@v1 and receipts: round trips, each verification step's
//! failure, and parsers that never panic on hostile input.

use proptest::prelude::*;
use stele_core::checkpoint::Checkpoint;
use stele_core::merkle;
use stele_core::note::{self, Signer, Verifier};
use stele_core::receipt::{Receipt, Step};
use stele_core::tlog_proof::TlogProof;
use stele_core::{leaf_hash, Hash};

const ORIGIN: &str = "records.example.gov/land";

struct Log {
    signer: Signer,
    verifier: Verifier,
    leaves: Vec<String>,
}

impl Log {
    fn new(n: usize) -> Self {
        let (signer, _) = Signer::generate(ORIGIN).unwrap();
        let verifier = Verifier::from_vkey(&signer.vkey()).unwrap();
        let leaves = (0..n).map(|i| format!("{{\"v\":1,\"n\":{i}}}")).collect();
        Log {
            signer,
            verifier,
            leaves,
        }
    }

    fn receipt(&self, index: usize) -> Receipt {
        let hashes: Vec<Hash> = self
            .leaves
            .iter()
            .map(|l| leaf_hash(l.as_bytes()))
            .collect();
        let size = hashes.len() as u64;
        let proof = merkle::prove_inclusion(index as u64, size, hashes.as_slice()).unwrap();
        let cp = Checkpoint::new(ORIGIN, size, merkle::root_of(&hashes));
        let note = self.signer.sign_checkpoint(&cp).unwrap();
        Receipt::new(
            ORIGIN,
            index as u64,
            self.leaves[index].clone(),
            &proof,
            note,
        )
    }
}

#[test]
fn receipts_verify_and_round_trip_through_json() {
    let log = Log::new(13);
    for i in 0..13 {
        let r = log.receipt(i);
        let v = r.verify(&log.verifier).unwrap();
        assert_eq!(v.index, i as u64);
        assert_eq!(v.checkpoint.size, 13);
        assert_eq!(r.leaf_hash, leaf_hash(r.leaf.as_bytes()).to_hex());
        let json = serde_json::to_string(&r).unwrap();
        let back: Receipt = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
        // The tlog-proof alone verifies too.
        let tp = TlogProof::parse(&r.tlog_proof).unwrap();
        assert_eq!(tp.encode(), r.tlog_proof);
        assert_eq!(
            tp.verify(r.leaf.as_bytes(), &log.verifier).unwrap().size,
            13
        );
        assert!(tp.verify(b"another leaf", &log.verifier).is_err());
    }
}

fn step_of(r: &Receipt, v: &Verifier) -> Step {
    r.verify(v).unwrap_err().step
}

#[test]
fn each_step_fails_with_its_name() {
    let log = Log::new(6);
    let good = log.receipt(3);
    let v = &log.verifier;

    let mut r = good.clone();
    r.leaf_hash = "zz".into();
    assert_eq!(step_of(&r, v), Step::Parse);
    let mut r = good.clone();
    r.inclusion_proof[0].push('0');
    assert_eq!(step_of(&r, v), Step::Parse);
    let mut r = good.clone();
    r.checkpoint = "not a note".into();
    assert_eq!(step_of(&r, v), Step::Parse);
    let mut r = good.clone();
    r.tlog_proof = r.tlog_proof.replacen("tlog-proof@v1", "tlog-proof@v2", 1);
    assert_eq!(step_of(&r, v), Step::Parse);

    let mut r = good.clone();
    r.leaf.push(' ');
    let e = r.verify(v).unwrap_err();
    assert_eq!(e.step, Step::LeafHash);
    assert!(e.detail.contains(&good.leaf_hash), "{}", e.detail);

    let (other, _) = Signer::generate(ORIGIN).unwrap();
    let other_v = Verifier::from_vkey(&other.vkey()).unwrap();
    assert_eq!(step_of(&good, &other_v), Step::CheckpointSignature);
    let mut r = good.clone();
    r.log = "records.example.gov/health".into();
    let e = r.verify(v).unwrap_err();
    assert_eq!(e.step, Step::CheckpointSignature);
    assert!(e.detail.contains("health"), "{}", e.detail);
    let mut r = good.clone();
    r.checkpoint = r.checkpoint.replacen("\n6\n", "\n7\n", 1);
    assert_eq!(step_of(&r, v), Step::CheckpointSignature);

    let mut r = good.clone();
    r.index = 2;
    assert_eq!(step_of(&r, v), Step::InclusionProof);
    let mut r = good.clone();
    r.inclusion_proof.swap(0, 1);
    assert_eq!(step_of(&r, v), Step::InclusionProof);
    let mut r = good.clone();
    r.inclusion_proof.pop();
    let e = r.verify(v).unwrap_err();
    assert_eq!(e.step, Step::InclusionProof);
    assert!(e.detail.contains("expected 3, got 2"), "{}", e.detail);

    // The tlog-proof must agree with the JSON fields.
    let other_receipt = log.receipt(4);
    let mut r = good.clone();
    r.tlog_proof = other_receipt.tlog_proof.clone();
    assert_eq!(step_of(&r, v), Step::TlogProof);
    let mut tp = TlogProof::parse(&good.tlog_proof).unwrap();
    tp.proof[0] = Hash([0; 32]);
    let mut r = good.clone();
    r.tlog_proof = tp.encode();
    assert_eq!(step_of(&r, v), Step::TlogProof);
    let mut tp = TlogProof::parse(&good.tlog_proof).unwrap();
    tp.checkpoint = log
        .signer
        .sign_checkpoint(&Checkpoint::new(ORIGIN, 6, Hash([1; 32])))
        .unwrap();
    let mut r = good.clone();
    r.tlog_proof = tp.encode();
    assert_eq!(step_of(&r, v), Step::TlogProof);
    // Extra data is carried but not trusted.
    let mut tp = TlogProof::parse(&good.tlog_proof).unwrap();
    tp.extra = Some(b"context".to_vec());
    let mut r = good.clone();
    r.tlog_proof = tp.encode();
    assert!(r.tlog_proof.contains("\nextra Y29udGV4dA==\n"));
    assert!(r.verify(v).is_ok());
}

#[test]
fn tlog_proof_format() {
    let cp = "example.com/fancylog\n109482\nsFodV/vSp5O8n9a8QpW6PRY97tfOSW5bsc2Xl/EQi08=\n\n— example.com/fancylog AAAA\n";
    let h = "gSKyXoYZUgZ6jduWYrkDOARinOMGJveXjgMkBTcdPlQ=";
    let text = format!("c2sp.org/tlog-proof@v1\nextra YWdl\nindex 73894\n{h}\n{h}\n\n{cp}");
    let p = TlogProof::parse(&text).unwrap();
    assert_eq!(p.extra.as_deref(), Some(&b"age"[..]));
    assert_eq!(p.index, 73894);
    assert_eq!(p.proof.len(), 2);
    assert_eq!(p.checkpoint, cp);
    assert_eq!(p.encode(), text);
    let no_proof = format!("c2sp.org/tlog-proof@v1\nindex 0\n\n{cp}");
    let p = TlogProof::parse(&no_proof).unwrap();
    assert!(p.proof.is_empty() && p.extra.is_none());
    assert_eq!(p.encode(), no_proof);
    let many = format!(
        "c2sp.org/tlog-proof@v1\nindex 0\n{}\n{cp}",
        format!("{h}\n").repeat(64)
    );
    for bad in [
        String::new(),
        "c2sp.org/tlog-proof@v1".to_string(),
        format!("c2sp.org/tlog-proof@v1\r\nindex 0\n\n{cp}"),
        format!("c2sp.org/tlog-proof@v2\nindex 0\n\n{cp}"),
        format!("c2sp.org/tlog-proof@v1\nindex 01\n\n{cp}"),
        format!("c2sp.org/tlog-proof@v1\nindex -1\n\n{cp}"),
        format!("c2sp.org/tlog-proof@v1\nindex 9223372036854775808\n\n{cp}"),
        format!("c2sp.org/tlog-proof@v1\nindex  1\n\n{cp}"),
        format!("c2sp.org/tlog-proof@v1\nextra !!\nindex 1\n\n{cp}"),
        format!("c2sp.org/tlog-proof@v1\nindex 1\nextra YWdl\n\n{cp}"),
        format!("c2sp.org/tlog-proof@v1\nindex 1\n{h}x\n\n{cp}"),
        format!("c2sp.org/tlog-proof@v1\nindex 1\nYWdl\n\n{cp}"),
        format!("c2sp.org/tlog-proof@v1\nindex 1\n{h}\n"),
        format!("c2sp.org/tlog-proof@v1\nindex 1\n{h}\n\n"),
        format!("c2sp.org/tlog-proof@v1\nindex 1\n{h}"),
        many,
    ] {
        assert!(TlogProof::parse(&bad).is_err(), "{bad:?}");
    }
}

/// Random single-character edits of a valid input.
fn mutate(s: &str, ops: &[(usize, u8, char)]) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    for &(pos, op, c) in ops {
        if chars.is_empty() {
            chars.push(c);
            continue;
        }
        let i = pos % chars.len();
        match op % 3 {
            0 => chars[i] = c,
            1 => {
                chars.remove(i);
            }
            _ => chars.insert(i, c),
        }
    }
    chars.into_iter().collect()
}

fn edit_char() -> impl Strategy<Value = char> {
    prop_oneof![
        Just('\n'),
        Just(' '),
        Just('+'),
        Just('='),
        Just('0'),
        Just('—'),
        any::<char>()
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn parsers_never_panic_on_arbitrary_text(s in "\\PC{0,300}", bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let lossy = String::from_utf8_lossy(&bytes).into_owned();
        for input in [&s, &lossy] {
            let _ = Checkpoint::parse(input);
            let _ = TlogProof::parse(input);
            let _ = note::parse_unverified_checkpoint(input);
            let _ = Verifier::from_vkey(input);
            let _ = Signer::from_skey(input);
            let _ = Hash::from_hex(input);
            let _ = Hash::from_base64(input);
            if let Ok(r) = serde_json::from_str::<Receipt>(input) {
                let _ = r.verify(&Verifier::from_vkey("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW").unwrap());
            }
        }
    }

    /// Edited notes, proofs and receipts never panic, and whatever still
    /// verifies says exactly what was signed.
    #[test]
    fn mutated_inputs_never_verify_wrongly(
        ops in proptest::collection::vec((any::<usize>(), any::<u8>(), edit_char()), 1..4),
        field in 0u8..6,
    ) {
        thread_local! {
            static LOG: (Log, Receipt) = {
                let log = Log::new(5);
                let r = log.receipt(2);
                (log, r)
            };
        }
        LOG.with(|(log, good)| {
            let v = &log.verifier;
            let mut r = good.clone();
            match field {
                0 => r.checkpoint = mutate(&r.checkpoint, &ops),
                1 => r.tlog_proof = mutate(&r.tlog_proof, &ops),
                2 => r.leaf = mutate(&r.leaf, &ops),
                3 => r.leaf_hash = mutate(&r.leaf_hash, &ops),
                4 => r.inclusion_proof[0] = mutate(&r.inclusion_proof[0], &ops),
                _ => r.log = mutate(&r.log, &ops),
            }
            if let Ok(opened) = note::open(&r.checkpoint, std::slice::from_ref(v)) {
                let original = note::open(&good.checkpoint, std::slice::from_ref(v)).unwrap();
                assert_eq!(opened.text, original.text);
            }
            if let Ok(tp) = TlogProof::parse(&r.tlog_proof) {
                let _ = tp.verify(r.leaf.as_bytes(), v);
            }
            match r.verify(v) {
                Ok(ok) => {
                    // Only edits that changed nothing that matters (such as
                    // hex case) can pass.
                    assert_eq!(ok.index, 2);
                    assert_eq!(r.leaf, good.leaf);
                    assert_eq!(r.log, good.log);
                    assert_eq!(ok.leaf_hash, leaf_hash(good.leaf.as_bytes()));
                }
                Err(e) => assert!(!e.detail.is_empty()),
            }
            let json = serde_json::to_string(&r).unwrap();
            let _ = serde_json::from_str::<Receipt>(&mutate(&json, &ops)).map(|x| x.verify(v));
        });
    }

    #[test]
    fn vkeys_survive_a_round_trip(name in "[a-z0-9./-]{1,40}") {
        let (signer, skey) = Signer::generate(&name).unwrap();
        let v = Verifier::from_vkey(&signer.vkey()).unwrap();
        prop_assert_eq!(v.vkey(), signer.vkey());
        prop_assert_eq!(Signer::from_skey(&skey).unwrap().vkey(), signer.vkey());
    }
}

/// An `extra` line survives parse → encode byte for byte, and `write_head`
/// with another line ending writes the same lines.
#[test]
fn tlog_proof_with_extra_round_trips() {
    let h = leaf_hash(b"x");
    let text = format!(
        "c2sp.org/tlog-proof@v1\nextra AAEC\nindex 3\n{}\n\norigin\n4\nroot\n",
        h.to_base64()
    );
    let tp = TlogProof::parse(&text).unwrap();
    assert_eq!(tp.extra.as_deref(), Some(&[0u8, 1, 2][..]));
    assert_eq!(tp.encode(), text);
    let mut head = Vec::new();
    stele_core::tlog_proof::write_head(&mut head, Some(&[0, 1, 2]), 3, &[h], b"|");
    assert_eq!(
        String::from_utf8(head).unwrap(),
        format!(
            "c2sp.org/tlog-proof@v1|extra AAEC|index 3|{}||",
            h.to_base64()
        )
    );
}
