//! `cosignature/v1` against the C2SP spec's examples and published witness
//! keys (`tests/vectors/cosignature/SOURCE.txt`), and round trips.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use stele_core::checkpoint::Checkpoint;
use stele_core::cosignature::{
    self, add_signature_lines, parse_line_unverified, signed_message, verify_cosignature_lines,
    verify_cosignatures, CosignatureVerifier, Cosigner, MAX_TIMESTAMP,
};
use stele_core::note::{NoteError, Signer, Verifier};
use stele_core::{leaf_hash, merkle, Hash};

/// The checkpoint of the C2SP examples (tlog-cosignature, tlog-witness).
const SPEC_CHECKPOINT: &str =
    "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";

#[test]
fn signed_message_is_the_specs_example_byte_for_byte() {
    // tlog-cosignature, "Signed message".
    let expected = "cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
    assert_eq!(
        signed_message(SPEC_CHECKPOINT, 1679315147),
        expected.as_bytes()
    );
    // No leading zeroes; zero is "0".
    assert!(signed_message(SPEC_CHECKPOINT, 0).starts_with(b"cosignature/v1\ntime 0\n"));
}

#[test]
fn spec_example_line_carries_the_example_time() {
    // tlog-cosignature's example cosignature line: its timestamp is the
    // time of the spec's signed-message example.
    let line = "— witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n";
    let (name, id, time) = parse_line_unverified(line).unwrap();
    assert_eq!(name, "witness.example.com/w1");
    assert_eq!(id, 0x8d66cf3f);
    assert_eq!(time, 1679315147);
    // transparency-dev/formats note_cosigv1_test.go TestCoSigV1Timestamp.
    let line = "— w ZGhGuQAAAABm/qTPeyKXD+R2rzyQsxPiP8mXum7qq/iF0u4vanlqJyocWODBt97w9uL+8qT7S5gxEHWWOworDcFiEBYJXORmnFBOBA==";
    assert_eq!(parse_line_unverified(line).unwrap().2, 1727964367);
    // Its "wrong type of signature" case: a plain Ed25519 note signature.
    let plain = "— w eQjRQm6eSKzFoiYalgwCPXu2y3ijtg68is9M46JKxuZB+dRfTmeQeDBoXnvxZx2ugnkyV+MUMLXpWs1hPb/W/4xkNQY=";
    assert!(parse_line_unverified(plain).is_err());
}

#[test]
fn published_witness_key_id_and_vkey() {
    // A witness in service: its cosignature vkey (transparency-dev/formats
    // tests) and its raw key (the Sigsum test policy) agree.
    let vkey = "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2";
    let v = CosignatureVerifier::from_vkey(vkey).unwrap();
    assert_eq!(v.name(), "remora.n621.de");
    assert_eq!(v.key_id(), 0xda77ade7);
    assert_eq!(
        hex::encode(v.public_key()),
        "ebcdeb78e7fdb2ef9227b2c1ef11e94600b55b4d6d9a57877e31ee89e59adc36"
    );
    assert_eq!(
        cosignature::key_id("remora.n621.de", &v.public_key()),
        0xda77ade7
    );
    assert_eq!(v.vkey(), vkey);
    // Upper-case hex is the same key; the canonical text is lower-case.
    let upper = CosignatureVerifier::from_vkey(&vkey.replace("da77ade7", "DA77ADE7")).unwrap();
    assert_eq!(upper.vkey(), vkey);
    // A wrong id, another name, or the log-key type byte are refused.
    for bad in [
        vkey.replace("da77ade7", "da77ade8"),
        vkey.replace("remora.n621.de", "remora.n621.de.evil"),
        format!(
            "remora.n621.de+da77ade7+{}",
            STANDARD.encode([&[0x01u8][..], &v.public_key()].concat())
        ),
        "remora.n621.de+da77ade7".to_string(),
        "remora.n621.de+da77ade+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2".to_string(),
        "remora n621+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2".to_string(),
        "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw".to_string(),
    ] {
        assert!(
            matches!(
                CosignatureVerifier::from_vkey(&bad),
                Err(NoteError::MalformedKey(_))
            ),
            "{bad} was accepted"
        );
    }
    // A small-order point is refused even with its correct key id.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let weak = format!(
        "w+{:08x}+{}",
        cosignature::key_id("w", &identity),
        STANDARD.encode([&[0x04u8][..], &identity].concat())
    );
    assert!(CosignatureVerifier::from_vkey(&weak).is_err());
}

#[test]
fn log_keys_and_witness_keys_do_not_mix() {
    let (log, log_skey) = Signer::generate("example.com/log").unwrap();
    assert!(CosignatureVerifier::from_vkey(&log.vkey()).is_err());
    assert!(Cosigner::from_skey(&log_skey).is_err());
    let (w, w_skey) = Cosigner::generate("witness.example/w1").unwrap();
    assert!(Verifier::from_vkey(&w.vkey()).is_err());
    assert!(Signer::from_skey(&w_skey).is_err());
}

#[test]
fn skey_round_trip_and_checks() {
    let (w, skey) = Cosigner::generate("witness.example/w1").unwrap();
    assert!(skey.starts_with(&format!(
        "PRIVATE+KEY+witness.example/w1+{:08x}+",
        w.key_id()
    )));
    let again = Cosigner::from_skey(&skey).unwrap();
    assert_eq!(again.vkey(), w.vkey());
    assert_eq!(again.skey(), skey);
    assert!(
        !format!("{w:?}").contains(&skey[30..]),
        "Debug shows the secret"
    );
    let vkey = w.vkey();
    assert_eq!(CosignatureVerifier::from_vkey(&vkey).unwrap(), w.verifier());
    // 0x04 first: base64 `B` then one of `A`-`P`.
    assert!(vkey.starts_with(&format!("witness.example/w1+{:08x}+B", w.key_id())));
    // Wrong id, missing prefix, bad name.
    let other_id = format!("{:08x}", w.key_id() ^ 1);
    let wrong = skey.replacen(&format!("{:08x}", w.key_id()), &other_id, 1);
    assert!(Cosigner::from_skey(&wrong).is_err());
    assert!(Cosigner::from_skey(skey.strip_prefix("PRIVATE+").unwrap()).is_err());
    assert!(Cosigner::generate("two words").is_err());
    assert!(Cosigner::generate("").is_err());
    assert!(Cosigner::generate("a+b").is_err());
}

#[test]
fn fixed_seed_and_time_give_a_fixed_line() {
    // Ed25519 is deterministic: this line is what any implementation of
    // cosignature/v1 must produce for this seed, time and checkpoint
    // (tests/witness.rs checks it against an independent one).
    let w = Cosigner::from_seed("witness.example/w1", &[7u8; 32]).unwrap();
    let line = w.cosign(SPEC_CHECKPOINT, 1679315147).unwrap();
    let (name, id, time) = parse_line_unverified(&line).unwrap();
    assert_eq!(
        (name.as_str(), id, time),
        ("witness.example/w1", w.key_id(), 1679315147)
    );
    assert_eq!(line, w.cosign(SPEC_CHECKPOINT, 1679315147).unwrap());
    // The line is `— name base64(id || time || ed25519(signed message))`.
    let b64 = line.trim_end().rsplit(' ').next().unwrap();
    let bytes = STANDARD.decode(b64).unwrap();
    assert_eq!(bytes.len(), 76);
    assert_eq!(&bytes[..4], &w.key_id().to_be_bytes());
    assert_eq!(&bytes[4..12], &1679315147u64.to_be_bytes());
    let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    use ed25519_dalek::Signer as _;
    let sig = key.sign(&signed_message(SPEC_CHECKPOINT, 1679315147));
    assert_eq!(&bytes[12..], &sig.to_bytes());
}

fn log_note(signer: &Signer, size: u64, extensions: &[&str]) -> String {
    let leaves: Vec<Hash> = (0..size).map(|i| leaf_hash(&i.to_be_bytes())).collect();
    let mut cp = Checkpoint::new(signer.name(), size, merkle::root_of(&leaves));
    cp.extensions = extensions.iter().map(|e| e.to_string()).collect();
    signer.sign_checkpoint(&cp).unwrap()
}

fn text_of(note: &str) -> &str {
    &note[..note.rfind("\n\n").unwrap() + 1]
}

#[test]
fn cosignatures_verify_and_report_name_and_time() {
    let (log, _) = Signer::generate("example.com/log").unwrap();
    let (w1, _) = Cosigner::generate("witness.example/w1").unwrap();
    let (w2, _) = Cosigner::generate("witness.example/w2").unwrap();
    let (stranger, _) = Cosigner::generate("witness.example/stranger").unwrap();
    let note = log_note(&log, 10, &[]);
    let text = text_of(&note);
    let l1 = w1.cosign(text, 1_700_000_000).unwrap();
    let l2 = w2.cosign(text, 1_700_000_005).unwrap();
    let l3 = stranger.cosign(text, 1).unwrap();
    let cosigned = add_signature_lines(&note, [l1.as_str(), l3.as_str(), l2.as_str()]).unwrap();
    let found = verify_cosignatures(&cosigned, &[w1.verifier(), w2.verifier()]).unwrap();
    let got: Vec<(&str, u64)> = found
        .iter()
        .map(|c| (c.name.as_str(), c.timestamp))
        .collect();
    assert_eq!(
        got,
        vec![
            ("witness.example/w1", 1_700_000_000),
            ("witness.example/w2", 1_700_000_005)
        ]
    );
    assert_eq!(found[0].line, l1);
    assert_eq!(found[0].key_id, w1.key_id());
    // The log's own signature still verifies on the cosigned note.
    assert!(stele_core::note::open_checkpoint(
        &cosigned,
        &Verifier::from_vkey(&log.vkey()).unwrap()
    )
    .is_ok());
    // No known witness: an empty list, not an error.
    assert!(verify_cosignatures(&note, &[w1.verifier()])
        .unwrap()
        .is_empty());
    // The same line twice counts once.
    let twice = add_signature_lines(&note, [l1.as_str()]).unwrap();
    let twice = format!("{twice}{l1}");
    assert_eq!(
        verify_cosignatures(&twice, &[w1.verifier()]).unwrap().len(),
        1
    );
    // Only the response lines (a witness's 200 body).
    let from_body = verify_cosignature_lines(text, &format!("{l1}{l3}"), &[w1.verifier()]).unwrap();
    assert_eq!(from_body.len(), 1);
}

#[test]
fn a_bad_cosignature_by_a_known_witness_rejects_the_note() {
    let (log, _) = Signer::generate("example.com/log").unwrap();
    let (w1, _) = Cosigner::generate("witness.example/w1").unwrap();
    let note = log_note(&log, 10, &["ext line"]);
    let text = text_of(&note);
    let line = w1.cosign(text, 1000).unwrap();
    // On another checkpoint (the size changed).
    let other = log_note(&log, 11, &["ext line"]);
    let moved = add_signature_lines(&other, [line.as_str()]).unwrap();
    assert!(matches!(
        verify_cosignatures(&moved, &[w1.verifier()]),
        Err(NoteError::InvalidSignature(_))
    ));
    // The extension line is covered.
    let no_ext = log_note(&log, 10, &["other ext"]);
    let moved = add_signature_lines(&no_ext, [line.as_str()]).unwrap();
    assert!(verify_cosignatures(&moved, &[w1.verifier()]).is_err());
    // A different time in the line than the one signed.
    let b64 = line.trim_end().rsplit(' ').next().unwrap();
    let mut bytes = STANDARD.decode(b64).unwrap();
    bytes[11] ^= 1;
    let retimed = format!("— witness.example/w1 {}\n", STANDARD.encode(&bytes));
    let note2 = add_signature_lines(&note, [retimed.as_str()]).unwrap();
    assert!(verify_cosignatures(&note2, &[w1.verifier()]).is_err());
    // A timestamp above 2^63 - 1 is never valid.
    assert!(w1.cosign(text, MAX_TIMESTAMP + 1).is_err());
    assert!(w1.cosign(text, MAX_TIMESTAMP).is_ok());
    // Only checkpoints are cosigned.
    assert!(w1.cosign("just some text\n", 5).is_err());
}

#[test]
fn add_signature_lines_replaces_a_keys_line_and_checks_form() {
    let (log, _) = Signer::generate("example.com/log").unwrap();
    let (w1, _) = Cosigner::generate("witness.example/w1").unwrap();
    let note = log_note(&log, 3, &[]);
    let text = text_of(&note);
    let old = w1.cosign(text, 100).unwrap();
    let new = w1.cosign(text, 200).unwrap();
    let once = add_signature_lines(&note, [old.as_str()]).unwrap();
    let replaced = add_signature_lines(&once, [new.as_str()]).unwrap();
    assert_eq!(replaced, format!("{note}{new}"));
    let found = verify_cosignatures(&replaced, &[w1.verifier()]).unwrap();
    assert_eq!(found[0].timestamp, 200);
    for bad in [
        "no dash line\n",
        "— name\n",
        "— witness.example/w1 AAAA",
        "— a b\n— c d\n",
    ] {
        assert!(add_signature_lines(&note, [bad]).is_err(), "{bad:?}");
    }
    assert!(add_signature_lines("not a note", [new.as_str()]).is_err());
}

#[test]
fn has_cosignature_lines_tells_a_witnessed_note_from_a_log_signed_one() {
    let (log, _) = Signer::generate("example.com/log").unwrap();
    let (w, _) = Cosigner::generate("witness.example/w1").unwrap();
    let note = log_note(&log, 3, &[]);
    assert!(!cosignature::has_cosignature_lines(&note));
    let line = w.cosign(text_of(&note), 1_700_000_000).unwrap();
    let cosigned = add_signature_lines(&note, [line.as_str()]).unwrap();
    assert!(cosignature::has_cosignature_lines(&cosigned));
    assert!(!cosignature::has_cosignature_lines("not a note"));
}
