//! Signed notes and checkpoints against the C2SP and Go vectors
//! (`tests/vectors/signed-note/`, sources in its `SOURCE.txt`).

use std::path::Path;

use stele_core::checkpoint::Checkpoint;
use stele_core::note::{self, NoteError, Signer, Verifier};
use stele_core::Hash;

fn vector(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors/signed-note")
        .join(name);
    std::fs::read_to_string(p).unwrap()
}

fn key(name: &str) -> String {
    vector(name).trim_end().to_string()
}

const GO_TEXT: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";

#[test]
fn c2sp_example_verifies() {
    let v = Verifier::from_vkey(&key("c2sp-example.vkey")).unwrap();
    assert_eq!(v.name(), "example.com/foo");
    assert_eq!(v.key_id(), 0x530d903a);
    assert_eq!(v.vkey(), key("c2sp-example.vkey"));
    let opened = note::open(&vector("c2sp-example.note"), &[v]).unwrap();
    assert_eq!(opened.text, "This is an example message.\n");
    assert_eq!(
        opened.signed_by,
        vec![("example.com/foo".to_string(), 0x530d903a)]
    );
}

#[test]
fn go_signature_is_reproduced_byte_for_byte() {
    let signer = Signer::from_skey(&key("go-peterneumann.skey")).unwrap();
    assert_eq!(signer.name(), "PeterNeumann");
    assert_eq!(signer.key_id(), 0xc74f20a3);
    assert_eq!(signer.vkey(), key("go-peterneumann.vkey"));
    let note_text = signer.sign(GO_TEXT).unwrap();
    assert_eq!(note_text, vector("go-peterneumann.note"));
    let v = Verifier::from_vkey(&key("go-peterneumann.vkey")).unwrap();
    assert_eq!(note::open(&note_text, &[v]).unwrap().text, GO_TEXT);
}

#[test]
fn wrong_key_and_unknown_signatures() {
    let note_text = vector("go-peterneumann.note");
    let peter = Verifier::from_vkey(&key("go-peterneumann.vkey")).unwrap();
    let enoch = Verifier::from_vkey(&key("go-enochroot.vkey")).unwrap();
    // Only an unknown key signed it.
    assert!(matches!(
        note::open(&note_text, std::slice::from_ref(&enoch)),
        Err(NoteError::UnknownKey(_))
    ));
    assert!(matches!(
        note::open(&note_text, &[]),
        Err(NoteError::UnknownKey(_))
    ));
    // Extra signatures by unknown keys are ignored, before or after.
    let (other, _) = Signer::generate("someone.example/witness").unwrap();
    let other_sig = other.sign(GO_TEXT).unwrap();
    let other_line = other_sig.split_once("\n\n").unwrap().1;
    let with_extra = format!("{note_text}{other_line}");
    let opened = note::open(&with_extra, &[peter.clone(), enoch.clone()]).unwrap();
    assert_eq!(
        opened.signed_by,
        vec![("PeterNeumann".to_string(), 0xc74f20a3)]
    );
    let (text, sig) = note_text.split_once("\n\n").unwrap();
    let extra_first = format!("{text}\n\n{other_line}{sig}");
    assert!(note::open(&extra_first, std::slice::from_ref(&peter)).is_ok());
    // The same trusted key listed twice is still one key.
    assert!(note::open(&note_text, &[peter.clone(), peter.clone()]).is_ok());
}

#[test]
fn tampered_notes_are_rejected() {
    let note_text = vector("go-peterneumann.note");
    let peter = Verifier::from_vkey(&key("go-peterneumann.vkey")).unwrap();
    let vs = std::slice::from_ref(&peter);
    // Changed text.
    let changed = note_text.replacen("cryptography", "cryptographY", 1);
    assert!(matches!(
        note::open(&changed, vs),
        Err(NoteError::InvalidSignature(_))
    ));
    // Changed signature byte (still valid base64, same key id).
    let (text, sig_line) = note_text.split_once("\n\n").unwrap();
    let mut chars: Vec<char> = sig_line.chars().collect();
    let pos = chars.len() - 10;
    chars[pos] = if chars[pos] == 'A' { 'B' } else { 'A' };
    let bad_sig = format!("{text}\n\n{}", chars.into_iter().collect::<String>());
    assert!(matches!(
        note::open(&bad_sig, vs),
        Err(NoteError::InvalidSignature(_))
    ));
    // Malformed notes.
    for bad in [
        "".to_string(),
        text.to_string(),
        format!("{text}\n\n"),
        format!("{text}\n\n{}", sig_line.trim_end()),
        format!("{text}\n\n{}", sig_line.replacen("— ", "-- ", 1)),
        format!(
            "{text}\n\n{}",
            sig_line.replacen("PeterNeumann ", "PeterNeumann  ", 1)
        ),
        format!("{text}\n\n— PeterNeumann !!!!\n"),
        format!("{text}\n\n— PeterNeumann AAAA\n"),
        format!("{text}\r\n\n{sig_line}"),
        format!("{text}\n\n{sig_line}trailing garbage\n"),
    ] {
        assert!(
            matches!(note::open(&bad, vs), Err(NoteError::Malformed(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn malformed_keys() {
    let vkey = key("go-peterneumann.vkey");
    let skey = key("go-peterneumann.skey");
    for bad in [
        "",
        "PeterNeumann",
        "PeterNeumann+c74f20a3",
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T",
        "PeterNeumann+c74f20a3+AhpC2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ] {
        assert!(
            matches!(Verifier::from_vkey(bad), Err(NoteError::MalformedKey(_))),
            "{bad:?}"
        );
    }
    assert!(Verifier::from_vkey(&skey).is_err());
    assert!(Signer::from_skey(&vkey).is_err());
    assert!(Signer::from_skey(&skey.replacen("PRIVATE", "private", 1)).is_err());
    assert!(Signer::from_skey(&skey.replacen("c74f20a3", "c74f20a4", 1)).is_err());
    assert!(Signer::generate("bad name").is_err());
    assert!(Signer::generate("").is_err());
    assert!(Signer::generate("a+b").is_err());
}

#[test]
fn generated_keys_round_trip() {
    let (signer, skey) = Signer::generate("records.example.gov/land").unwrap();
    let again = Signer::from_skey(&skey).unwrap();
    assert_eq!(again.vkey(), signer.vkey());
    let v = Verifier::from_vkey(&signer.vkey()).unwrap();
    assert_eq!(v.key_id(), signer.key_id());
    let cp = Checkpoint::new("records.example.gov/land", 42, Hash([7; 32]));
    let n = signer.sign_checkpoint(&cp).unwrap();
    assert_eq!(note::open_checkpoint(&n, &v).unwrap(), cp);
    assert_eq!(note::parse_unverified_checkpoint(&n).unwrap(), cp);
    // A checkpoint whose origin is not the key name is refused on open.
    let other = Checkpoint::new("records.example.gov/health", 1, Hash([1; 32]));
    let n = signer.sign_checkpoint(&other).unwrap();
    assert!(matches!(
        note::open_checkpoint(&n, &v),
        Err(NoteError::OriginMismatch { .. })
    ));
    // A signed note that is not a checkpoint.
    let n = signer
        .sign("records.example.gov/land\nnot a size\n")
        .unwrap();
    assert!(matches!(
        note::open_checkpoint(&n, &v),
        Err(NoteError::Checkpoint(_))
    ));
    // Checkpoints that would read back differently are refused at signing.
    let mut sneaky = cp.clone();
    sneaky.extensions = vec!["one\ntwo".into()];
    assert!(matches!(
        signer.sign_checkpoint(&sneaky),
        Err(NoteError::Checkpoint(_))
    ));
    let mut sneaky = cp.clone();
    sneaky.origin = String::new();
    assert!(matches!(
        signer.sign_checkpoint(&sneaky),
        Err(NoteError::Checkpoint(_))
    ));
    // Texts the note format cannot carry are refused at signing.
    assert!(signer.sign("no newline").is_err());
    assert!(signer.sign("tab\there\n").is_err());
    // Another key with the same name does not verify.
    let (impostor, _) = Signer::generate("records.example.gov/land").unwrap();
    let n = impostor.sign_checkpoint(&cp).unwrap();
    assert!(matches!(
        note::open_checkpoint(&n, &v),
        Err(NoteError::UnknownKey(_))
    ));
}

#[test]
fn c2sp_checkpoint_example_parses() {
    let n = vector("c2sp-tlog-checkpoint-example.note");
    let cp = note::parse_unverified_checkpoint(&n).unwrap();
    assert_eq!(cp.origin, "example.com/behind-the-sofa");
    assert_eq!(cp.size, 20852163);
    assert_eq!(
        cp.root.to_base64(),
        "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="
    );
    assert!(cp.extensions.is_empty());
    assert_eq!(
        cp.to_body(),
        n.split_once("\n\n").unwrap().0.to_string() + "\n"
    );
}

#[test]
fn checkpoint_bodies() {
    let root = "TszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=";
    // From golang.org/x/mod sumdb/tlog note_test.go.
    let go = format!("go.sum database tree\n123456789012\n{root}\n");
    let cp = Checkpoint::parse(&go).unwrap();
    assert_eq!(cp.size, 123456789012);
    assert_eq!(cp.to_body(), go);
    let ext = format!("o\n0\n{root}\next one\next two\n");
    let cp = Checkpoint::parse(&ext).unwrap();
    assert_eq!(cp.extensions, vec!["ext one", "ext two"]);
    assert_eq!(cp.to_body(), ext);
    assert_eq!(
        Checkpoint::parse(&format!("o\n9223372036854775807\n{root}\n"))
            .unwrap()
            .size,
        (1 << 63) - 1
    );
    for bad in [
        String::new(),
        format!("go.sum database tree\n123456789012\n{root}"),
        format!("\n1\n{root}\n"),
        format!("o\n01\n{root}\n"),
        format!("o\n+1\n{root}\n"),
        format!("o\n-1\n{root}\n"),
        format!("o\n 1\n{root}\n"),
        format!("o\n1x\n{root}\n"),
        format!("o\n9223372036854775808\n{root}\n"),
        format!("o\n18446744073709551616\n{root}\n"),
        "o\n1\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0\n".to_string(),
        "o\n1\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb=\n".to_string(),
        "o\n1\nAAAA\n".to_string(),
        format!("o\n1\n{root}\n\n"),
        format!("o\n1\n{root}\next\n\nmore\n"),
        format!("o\n1\n{root}\r\n"),
        "o\n1\n".to_string(),
    ] {
        assert!(Checkpoint::parse(&bad).is_err(), "{bad:?}");
    }
}
