//! C2SP `tlog-witness` without I/O: the request body (the spec's example
//! byte for byte), every decision of a witness, and reading its answers.

use stele_core::checkpoint::Checkpoint;
use stele_core::cosignature::{verify_cosignatures, Cosigner};
use stele_core::merkle::{prove_consistency, root_of};
use stele_core::note::{Signer, Verifier};
use stele_core::witness::{
    monitoring_path, parse_response, verify_cosignatures_response, AddCheckpointRequest,
    AddCheckpointResponse, Rejection, Witness, WitnessedState, MAX_PROOF_LINES, MAX_REQUEST_BYTES,
    SIZE_CONTENT_TYPE,
};
use stele_core::{leaf_hash, Hash, EMPTY_ROOT};

/// The example request body of tlog-witness, "add-checkpoint".
const SPEC_REQUEST: &str = "old 20852014
PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=
jrJZDmY8Y7SyJE0MWLpLozkIVMSMZcD5kvuKxPC3swk=
5+pKlUdi2LeF/BcMHBn+Ku6yhPGNCswZZD1X/6QgPd8=
/6WVhPs2CwSsb5rYBH5cjHV/wSmA79abXAwhXw3Kj/0=

example.com/behind-the-sofa
20852163
CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=

— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=
— example.com/behind-the-sofa opLqBQsREYCgu6xQkYQwJr9fo45a62DN9EdmHXnZdXNqlcVGlCum2Wks+49/V6267UEjw6QUXTS5Rovnzv++qbSzm9Q=
";

#[test]
fn spec_example_request_parses_and_encodes_byte_for_byte() {
    let req = AddCheckpointRequest::parse(SPEC_REQUEST.as_bytes()).unwrap();
    assert_eq!(req.old_size, 20852014);
    assert_eq!(req.proof.len(), 4);
    assert_eq!(
        req.proof[0].to_base64(),
        "PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw="
    );
    assert!(req
        .checkpoint
        .starts_with("example.com/behind-the-sofa\n20852163\n"));
    assert_eq!(req.origin(), Some("example.com/behind-the-sofa"));
    assert_eq!(req.encode(), SPEC_REQUEST);
    // No proof lines: `old N`, the empty line, the checkpoint.
    let bare = AddCheckpointRequest::new(0, vec![], "o\n1\nx\n\n— o y\n");
    assert_eq!(bare.encode(), "old 0\n\no\n1\nx\n\n— o y\n");
    assert_eq!(
        AddCheckpointRequest::parse(bare.encode().as_bytes()).unwrap(),
        bare
    );
}

#[test]
fn malformed_request_bodies() {
    let cp = "example.com/log\n1\nPlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=\n\n— example.com/log AAAA\n";
    let h = "PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=";
    let too_many = format!(
        "old 1\n{}\n{cp}",
        format!("{h}\n").repeat(MAX_PROOF_LINES + 1)
    );
    let max = format!("old 1\n{}\n{cp}", format!("{h}\n").repeat(MAX_PROOF_LINES));
    assert_eq!(
        AddCheckpointRequest::parse(max.as_bytes())
            .unwrap()
            .proof
            .len(),
        63
    );
    let cases = vec![
        format!("old 1\n{cp}"),    // no empty line after the proof
        format!("old 01\n\n{cp}"), // leading zero
        format!("old -1\n\n{cp}"), // sign
        format!("old +1\n\n{cp}"),
        format!("old  1\n\n{cp}"), // two spaces
        format!("Old 1\n\n{cp}"),
        format!("old 1 \n\n{cp}"),
        format!("old\n\n{cp}"),
        format!("old 9223372036854775808\n\n{cp}"), // 2^63
        format!("old 1\n{}\n\n{cp}", &h[..43]),     // short base64
        format!("old 1\nPlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpka==\n\n{cp}"), // 31 bytes
        format!("old 1\nPlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkax=\n\n{cp}"), // non-canonical
        format!("old 1\n\n"),                       // no checkpoint
        too_many,
        "old 1".to_string(),
        String::new(),
    ];
    for body in cases {
        assert!(
            AddCheckpointRequest::parse(body.as_bytes()).is_err(),
            "{body:?}"
        );
    }
    assert!(AddCheckpointRequest::parse(b"old 1\n\n\xff\n").is_err());
    let huge = format!("old 0\n\n{}", "a".repeat(MAX_REQUEST_BYTES));
    assert!(AddCheckpointRequest::parse(huge.as_bytes()).is_err());
}

/// A log with leaves 0..n, and a witness of it.
struct Setup {
    log: Signer,
    leaves: Vec<Hash>,
    witness: Witness,
    witness_key: stele_core::cosignature::CosignatureVerifier,
}

fn setup() -> Setup {
    let (log, _) = Signer::generate("example.com/log").unwrap();
    let (cosigner, _) = Cosigner::generate("witness.example/w1").unwrap();
    let witness_key = cosigner.verifier();
    let verifier = Verifier::from_vkey(&log.vkey()).unwrap();
    let witness = Witness::new(cosigner, vec![("example.com/log".into(), vec![verifier])]).unwrap();
    let leaves = (0..64u64).map(|i| leaf_hash(&i.to_be_bytes())).collect();
    Setup {
        log,
        leaves,
        witness,
        witness_key,
    }
}

impl Setup {
    fn note(&self, size: u64) -> String {
        let cp = Checkpoint::new(
            "example.com/log",
            size,
            root_of(&self.leaves[..size as usize]),
        );
        self.log.sign_checkpoint(&cp).unwrap()
    }
    fn request(&self, old: u64, size: u64) -> AddCheckpointRequest {
        let proof = if old == 0 {
            vec![]
        } else {
            prove_consistency(old, size, self.leaves.as_slice()).unwrap()
        };
        AddCheckpointRequest::new(old, proof, self.note(size))
    }
    fn state(&self, size: u64, timestamp: u64) -> WitnessedState {
        WitnessedState {
            size,
            root: root_of(&self.leaves[..size as usize]),
            timestamp,
        }
    }
}

#[test]
fn first_checkpoint_then_consistent_growth_is_cosigned() {
    let s = setup();
    let first = s
        .witness
        .add_checkpoint(&s.request(0, 5), None, 1000)
        .unwrap();
    assert_eq!(first.state, s.state(5, 1000));
    assert_eq!(first.checkpoint.size, 5);
    // The 200 body: exactly one cosignature line of this witness, over the
    // checkpoint that was sent.
    assert_eq!(first.response.matches('\n').count(), 1);
    assert!(first.response.starts_with("— witness.example/w1 "));
    let cos = verify_cosignatures_response(&s.note(5), &first.response, &s.witness_key).unwrap();
    assert_eq!(cos.len(), 1);
    assert_eq!(cos[0].timestamp, 1000);
    // What the witness keeps: the log's signature and its cosignature.
    assert_eq!(first.note, format!("{}{}", s.note(5), first.response));
    let kept = verify_cosignatures(&first.note, std::slice::from_ref(&s.witness_key)).unwrap();
    assert_eq!(kept.len(), 1);
    // Growth with a consistency proof from the stored size.
    let next = s
        .witness
        .add_checkpoint(&s.request(5, 13), Some(&first.state), 1001)
        .unwrap();
    assert_eq!(next.state, s.state(13, 1001));
    // The same checkpoint again (old = size): cosigned again, newer time.
    let again = s
        .witness
        .add_checkpoint(&s.request(13, 13), Some(&next.state), 1001)
        .unwrap();
    assert_eq!(again.state.size, 13);
    // A size-0 checkpoint with the empty root, then growth from 0.
    let zero = AddCheckpointRequest::new(0, vec![], s.note(0));
    let z = s.witness.add_checkpoint(&zero, None, 5).unwrap();
    assert_eq!(z.state.root, EMPTY_ROOT);
    assert!(s
        .witness
        .add_checkpoint(&s.request(0, 3), Some(&z.state), 6)
        .is_ok());
}

#[test]
fn signatures_by_unknown_keys_are_ignored_and_kept_out() {
    let s = setup();
    let (stranger, _) = Signer::generate("example.com/log").unwrap();
    let note = s.note(4);
    let text = &note[..note.rfind("\n\n").unwrap() + 1];
    let other_line = stranger.sign(text).unwrap();
    let other_line = other_line.split_once("\n\n").unwrap().1;
    let with_stranger = format!("{note}{other_line}");
    let req = AddCheckpointRequest::new(0, vec![], with_stranger);
    let c = s.witness.add_checkpoint(&req, None, 1).unwrap();
    assert!(
        !c.note.contains(other_line),
        "an unverified signature was kept"
    );
}

fn status(r: Result<stele_core::witness::Cosigned, Rejection>) -> (u16, Rejection) {
    let e = r.expect_err("cosigned");
    (e.status(), e)
}

#[test]
fn every_refusal_has_the_specs_status() {
    let s = setup();
    let at5 = s.state(5, 100);
    // 404: unknown origin (even with a valid signature of that origin).
    let (other, _) = Signer::generate("example.com/other").unwrap();
    let cp = Checkpoint::new("example.com/other", 1, s.leaves[0]);
    let req = AddCheckpointRequest::new(0, vec![], other.sign_checkpoint(&cp).unwrap());
    assert!(matches!(
        status(s.witness.add_checkpoint(&req, None, 1)),
        (404, Rejection::UnknownOrigin(_))
    ));
    // 403: signed by another key with the log's name.
    let (impostor, _) = Signer::generate("example.com/log").unwrap();
    let cp = Checkpoint::new("example.com/log", 5, root_of(&s.leaves[..5]));
    let req = AddCheckpointRequest::new(0, vec![], impostor.sign_checkpoint(&cp).unwrap());
    assert!(matches!(
        status(s.witness.add_checkpoint(&req, None, 1)),
        (403, Rejection::Forbidden(_))
    ));
    // 403: the log's key, but the signature does not verify.
    let good = s.note(5);
    let tampered = good.replacen("\n5\n", "\n6\n", 1);
    let req = AddCheckpointRequest::new(0, vec![], tampered);
    assert_eq!(status(s.witness.add_checkpoint(&req, None, 1)).0, 403);
    // 400: the note is not a note.
    let req = AddCheckpointRequest::new(0, vec![], "example.com/log\n5\nnot a note\n");
    assert!(matches!(
        status(s.witness.add_checkpoint(&req, None, 1)),
        (400, Rejection::Malformed(_))
    ));
    // 400: signed, but not a checkpoint body.
    let req =
        AddCheckpointRequest::new(0, vec![], s.log.sign("example.com/log\nfive\nx\n").unwrap());
    assert!(matches!(
        status(s.witness.add_checkpoint(&req, None, 1)),
        (400, Rejection::Malformed(_))
    ));
    // 400: old size above the checkpoint's size.
    let req = AddCheckpointRequest::new(9, vec![], s.note(5));
    assert_eq!(
        status(s.witness.add_checkpoint(&req, Some(&at5), 200)),
        (400, Rejection::OldSizeTooLarge { old: 9, size: 5 })
    );
    // 409 + size: the old size is not the stored size, either way, and 0
    // for a witness that never cosigned.
    for (old, state) in [(3, Some(&at5)), (0, Some(&at5)), (4, None)] {
        let req = s.request(old, 8);
        let (code, e) = status(s.witness.add_checkpoint(&req, state, 200));
        let current = state.map_or(0, |s| s.size);
        assert_eq!((code, &e), (409, &Rejection::SizeConflict { old, current }));
        assert_eq!(e.body(), (SIZE_CONTENT_TYPE, format!("{current}\n")));
    }
    // 422: size 0 with a root that is not the empty tree's.
    let cp = Checkpoint::new("example.com/log", 0, s.leaves[0]);
    let req = AddCheckpointRequest::new(0, vec![], s.log.sign_checkpoint(&cp).unwrap());
    assert_eq!(status(s.witness.add_checkpoint(&req, None, 1)).0, 422);
    // 409 (plain): a fork at the stored size.
    let mut forked = s.leaves.clone();
    forked[2] = leaf_hash(b"rewritten");
    let cp = Checkpoint::new("example.com/log", 5, root_of(&forked[..5]));
    let req = AddCheckpointRequest::new(5, vec![], s.log.sign_checkpoint(&cp).unwrap());
    let (code, e) = status(s.witness.add_checkpoint(&req, Some(&at5), 200));
    assert_eq!((code, &e), (409, &Rejection::RootMismatch { size: 5 }));
    assert_ne!(
        e.body().0,
        SIZE_CONTENT_TYPE,
        "a fork must not look like a stale size"
    );
    // 422: a fork that grew, with a proof from the forked tree.
    let cp = Checkpoint::new("example.com/log", 9, root_of(&forked[..9]));
    let proof = prove_consistency(5, 9, &forked[..9]).unwrap();
    let req = AddCheckpointRequest::new(5, proof, s.log.sign_checkpoint(&cp).unwrap());
    assert!(matches!(
        status(s.witness.add_checkpoint(&req, Some(&at5), 200)),
        (422, Rejection::InvalidProof { .. })
    ));
    // 422: a wrong or missing proof, a proof with old size 0, a proof at equal sizes.
    let mut req = s.request(5, 9);
    req.proof[0] = s.leaves[0];
    assert_eq!(
        status(s.witness.add_checkpoint(&req, Some(&at5), 200)).0,
        422
    );
    let mut req = s.request(5, 9);
    req.proof.clear();
    assert_eq!(
        status(s.witness.add_checkpoint(&req, Some(&at5), 200)).0,
        422
    );
    let mut req = s.request(0, 9);
    req.proof = vec![s.leaves[0]];
    assert_eq!(status(s.witness.add_checkpoint(&req, None, 200)).0, 422);
    let mut req = s.request(5, 5);
    req.proof = vec![s.leaves[0]];
    assert_eq!(
        status(s.witness.add_checkpoint(&req, Some(&at5), 200)).0,
        422
    );
    // 503: the clock is behind the last cosignature.
    assert_eq!(
        status(s.witness.add_checkpoint(&s.request(5, 9), Some(&at5), 99)),
        (503, Rejection::ClockBehind { now: 99, last: 100 })
    );
}

#[test]
fn witness_refuses_log_keys_not_named_by_their_origin() {
    let (log, _) = Signer::generate("example.com/log").unwrap();
    let (c, _) = Cosigner::generate("w").unwrap();
    let v = Verifier::from_vkey(&log.vkey()).unwrap();
    assert!(Witness::new(c, vec![("example.com/other".into(), vec![v])]).is_err());
    let (c, _) = Cosigner::generate("w").unwrap();
    assert!(Witness::new(c, vec![("example.com/log".into(), vec![])]).is_err());
}

#[test]
fn responses_as_a_log_reads_them() {
    assert_eq!(
        parse_response(409, Some("text/x.tlog.size"), b"42\n").unwrap(),
        AddCheckpointResponse::SizeConflict(42)
    );
    assert_eq!(
        parse_response(409, Some("Text/X.Tlog.Size; charset=utf-8"), b"0\n").unwrap(),
        AddCheckpointResponse::SizeConflict(0)
    );
    for bad in [&b"42"[..], b"042\n", b"-1\n", b"\n", b"42\n\n", b"x\n"] {
        assert!(
            parse_response(409, Some("text/x.tlog.size"), bad).is_err(),
            "{bad:?}"
        );
    }
    assert!(matches!(
        parse_response(409, Some("text/plain"), b"fork at 5\n").unwrap(),
        AddCheckpointResponse::Refused { status: 409, .. }
    ));
    assert!(matches!(
        parse_response(422, None, b"bad proof").unwrap(),
        AddCheckpointResponse::Refused { status: 422, ref message } if message == "bad proof"
    ));
    assert_eq!(
        parse_response(200, Some("text/plain"), "— w x\n".as_bytes()).unwrap(),
        AddCheckpointResponse::Cosigned("— w x\n".into())
    );
}

#[test]
fn monitoring_path_is_the_hex_sha256_of_the_origin() {
    // `printf 'example.com/behind-the-sofa' | sha256sum`
    assert_eq!(
        monitoring_path("example.com/behind-the-sofa"),
        "/5fd2dc0beb4ce54da5050cf6d5c75248b023abad441c3cecde3976fbe9da4fe4/checkpoint"
    );
}
