//! C2SP `tlog-policy`: the spec's example, every malformed line, quorum
//! evaluation and opening a checkpoint under a policy.

use std::collections::HashSet;

use stele_core::checkpoint::Checkpoint;
use stele_core::cosignature::{add_signature_lines, Cosigner};
use stele_core::note::Signer;
use stele_core::policy::{Member, Policy, PolicyError};
use stele_core::{leaf_hash, merkle, Hash};

struct Keys {
    log: Signer,
    witnesses: Vec<(String, Cosigner)>,
}

fn keys(names: &[&str]) -> Keys {
    Keys {
        log: Signer::generate("example.com/log").unwrap().0,
        witnesses: names
            .iter()
            .map(|n| {
                (
                    n.to_string(),
                    Cosigner::generate(&format!("witness.example/{n}"))
                        .unwrap()
                        .0,
                )
            })
            .collect(),
    }
}

impl Keys {
    fn vkey(&self, name: &str) -> String {
        self.witnesses
            .iter()
            .find(|(n, _)| n == name)
            .unwrap()
            .1
            .vkey()
    }
    fn cosigner(&self, name: &str) -> &Cosigner {
        &self.witnesses.iter().find(|(n, _)| n == name).unwrap().1
    }
}

/// The spec's example policy ("Example policy"), with real keys.
fn spec_example(k: &Keys) -> String {
    format!(
        "log {}\n\nwitness X1 {}\nwitness X2 {}\nwitness X3 {}\ngroup X-witnesses 2 X1 X2 X3\n\n\
         witness Y1 {}\nwitness Y2 {}\nwitness Y3 {}\ngroup Y-witnesses any Y1 Y2 Y3\n\n\
         group X-and-Y all X-witnesses Y-witnesses\nquorum X-and-Y\n",
        k.log.vkey(),
        k.vkey("X1"),
        k.vkey("X2"),
        k.vkey("X3"),
        k.vkey("Y1"),
        k.vkey("Y2"),
        k.vkey("Y3"),
    )
}

fn indexes(policy: &Policy, names: &[&str]) -> HashSet<usize> {
    names
        .iter()
        .map(|n| {
            policy
                .witnesses()
                .iter()
                .position(|w| w.name.as_bytes() == n.as_bytes())
                .unwrap()
        })
        .collect()
}

#[test]
fn spec_example_quorum() {
    let k = keys(&["X1", "X2", "X3", "Y1", "Y2", "Y3"]);
    let policy = Policy::parse(spec_example(&k).as_bytes()).unwrap();
    assert_eq!(policy.logs().len(), 1);
    assert_eq!(policy.witnesses().len(), 6);
    assert_eq!(policy.groups().len(), 3);
    assert_eq!(policy.groups()[0].threshold, 2);
    assert_eq!(policy.groups()[1].threshold, 1);
    assert_eq!(policy.groups()[2].threshold, 2);
    assert_eq!(policy.quorum(), Some(Member::Group(2)));
    // "at least two of the X-witnesses, and at least one of the Y-witnesses"
    for (cosigned, met) in [
        (&["X1", "X2", "Y1"][..], true),
        (&["X1", "X3", "Y3"], true),
        (&["X1", "X2", "X3", "Y1", "Y2", "Y3"], true),
        (&["X1", "Y1", "Y2", "Y3"], false),
        (&["X1", "X2", "X3"], false),
        (&["Y1", "Y2", "Y3"], false),
        (&[], false),
    ] {
        assert_eq!(
            policy.quorum_met(&indexes(&policy, cosigned)),
            met,
            "{cosigned:?}"
        );
        assert_eq!(
            policy.quorum_met_by_names(cosigned.iter().map(|n| n.as_bytes())),
            met,
            "{cosigned:?}"
        );
    }
}

#[test]
fn syntax_whitespace_comments_urls_and_quorum_none() {
    let k = keys(&["A"]);
    let text = format!(
        "# a comment\n  \t# an indented comment\n\t log\t{} https://log.example/  \n\n \t \nwitness  A {} https://a.example/witness\nquorum none",
        k.log.vkey(),
        k.vkey("A")
    );
    let policy = Policy::parse(text.as_bytes()).unwrap();
    assert_eq!(
        policy.logs()[0].url.as_deref(),
        Some("https://log.example/")
    );
    assert_eq!(
        policy.witnesses()[0].url.as_deref(),
        Some("https://a.example/witness")
    );
    assert_eq!(policy.quorum(), None);
    assert!(policy.quorum_met(&HashSet::new()));
    // A single witness as the quorum; names are opaque bytes (a non-ASCII
    // name is not folded to its look-alike).
    let text = format!("witness \u{212a} {}\nquorum \u{212a}\n", k.vkey("A"));
    let policy = Policy::parse(text.as_bytes()).unwrap();
    assert!(policy.quorum_met_by_names(["\u{212a}".as_bytes()]));
    assert!(!policy.quorum_met_by_names([b"K".as_slice()]));
    // No logs is allowed (the application knows them).
    assert!(policy.logs().is_empty());
}

#[test]
fn every_malformed_line_is_refused_with_its_line_number() {
    let k = keys(&["A", "B", "C"]);
    let (log, a, b, c) = (k.log.vkey(), k.vkey("A"), k.vkey("B"), k.vkey("C"));
    let wab = format!("witness A {a}\nwitness B {b}\n");
    let cases: Vec<(String, usize, &str)> = vec![
        (wab.clone(), 0, "no quorum line"),
        (format!("{wab}quorum A\nquorum B\n"), 4, "second quorum"),
        (format!("{wab}quorum Z\n"), 3, "not defined"),
        (format!("quorum A\n{wab}"), 1, "not defined"),
        (format!("{wab}quorum A B\n"), 3, "expected `quorum"),
        (format!("{wab}quorum\n"), 3, "expected `quorum"),
        (
            format!("witness A {a}\nwitness A {b}\nquorum A\n"),
            2,
            "already defined",
        ),
        (format!("witness none {a}\nquorum none\n"), 1, "reserved"),
        (
            format!("witness A {a}\nwitness B {a}\nquorum A\n"),
            2,
            "duplicate key",
        ),
        (
            format!("log {log}\nlog {log}\nquorum none\n"),
            2,
            "duplicate key",
        ),
        (
            format!("witness A {a}\nlog {log} u extra\nquorum none\n"),
            2,
            "expected `log",
        ),
        (
            "witness A\nquorum none\n".to_string(),
            1,
            "expected `witness",
        ),
        (
            format!("witness A {a} url extra\nquorum none\n"),
            1,
            "expected `witness",
        ),
        (format!("witness A {log}\nquorum none\n"), 1, "witness vkey"),
        (format!("log {a}\nquorum none\n"), 1, "log vkey"),
        (
            "witness A not-a-vkey\nquorum none\n".to_string(),
            1,
            "witness vkey",
        ),
        (
            format!("{wab}group G 2 A\nquorum G\n"),
            3,
            "threshold 2 is not between 1 and the 1",
        ),
        (format!("{wab}group G 0 A B\nquorum G\n"), 3, "threshold 0"),
        (
            format!("{wab}group G -1 A B\nquorum G\n"),
            3,
            "not all, any or a decimal",
        ),
        (
            format!("{wab}group G +1 A B\nquorum G\n"),
            3,
            "not all, any or a decimal",
        ),
        (
            format!("{wab}group G some A B\nquorum G\n"),
            3,
            "not all, any or a decimal",
        ),
        (
            format!("{wab}group G any\nquorum G\n"),
            3,
            "at least one member",
        ),
        (
            format!("{wab}group G any A A\nquorum G\n"),
            3,
            "already a group member",
        ),
        (
            format!("{wab}group G any A\ngroup H any A B\nquorum H\n"),
            4,
            "already a group member",
        ),
        (
            format!("{wab}group G any A Z\nquorum G\n"),
            3,
            "not defined on an earlier line",
        ),
        (
            format!("{wab}group G any A H\ngroup H any B\nquorum G\n"),
            3,
            "not defined on an earlier line",
        ),
        (
            format!("{wab}group G any A none\nquorum G\n"),
            3,
            "`none` cannot be a group member",
        ),
        (
            format!("{wab}group A any B\nquorum A\n"),
            3,
            "already defined",
        ),
        (
            format!("{wab}group none any A\nquorum none\n"),
            3,
            "reserved",
        ),
        (format!("{wab}quorum A\r\n"), 3, "carriage return"),
        (format!("{wab}quorum A\x07\n"), 3, "byte 0x07"),
        (format!("{wab}quorum A\x7f\n"), 3, "byte 0x7f"),
        (
            format!("{wab}witnesses C {c}\nquorum A\n"),
            3,
            "unknown keyword",
        ),
        (format!("{wab}QUORUM A\n"), 3, "unknown keyword"),
    ];
    for (text, line, message) in cases {
        let err = Policy::parse(text.as_bytes()).expect_err(&text);
        assert_eq!(err.line, line, "{text:?}: {err}");
        assert!(err.message.contains(message), "{text:?}: {err}");
    }
    // Non-UTF-8 in a URL is refused; in a comment or a name it is fine.
    let mut bytes = format!("witness A {a} http://x/").into_bytes();
    bytes.extend_from_slice(b"\xff\nquorum A\n");
    assert!(Policy::parse(&bytes)
        .unwrap_err()
        .message
        .contains("URL is not UTF-8"));
    let mut bytes = b"# \xff\xfe\nwitness N\xff ".to_vec();
    bytes.extend_from_slice(format!("{a}\n").as_bytes());
    bytes.extend_from_slice(b"quorum N\xff\n");
    assert!(Policy::parse(&bytes).is_ok());
}

fn cosigned_note(k: &Keys, size: u64, cosigners: &[&str]) -> String {
    let leaves: Vec<Hash> = (0..size).map(|i| leaf_hash(&i.to_be_bytes())).collect();
    let cp = Checkpoint::new(k.log.name(), size, merkle::root_of(&leaves));
    let note = k.log.sign_checkpoint(&cp).unwrap();
    let text = cp.to_body();
    let lines: Vec<String> = cosigners
        .iter()
        .enumerate()
        .map(|(i, n)| {
            k.cosigner(n)
                .cosign(&text, 1_700_000_000 + i as u64)
                .unwrap()
        })
        .collect();
    add_signature_lines(&note, lines.iter().map(String::as_str)).unwrap()
}

#[test]
fn verify_requires_the_log_and_the_quorum() {
    let k = keys(&["A", "B", "C", "D"]);
    let text = format!(
        "log {}\nwitness A {}\nwitness B {}\nwitness C {}\ngroup agencies 2 A B C\nquorum agencies\n",
        k.log.vkey(),
        k.vkey("A"),
        k.vkey("B"),
        k.vkey("C")
    );
    let policy = Policy::parse(text.as_bytes()).unwrap();
    // 2 of 3, plus a witness the policy does not know.
    let ok = policy
        .verify(&cosigned_note(&k, 5, &["A", "D", "C"]))
        .unwrap();
    assert_eq!(ok.checkpoint.size, 5);
    assert_eq!(ok.log_vkey, k.log.vkey());
    let who: Vec<(String, u64)> = ok
        .cosignatures
        .iter()
        .map(|(n, c)| (n.to_string(), c.timestamp))
        .collect();
    assert_eq!(
        who,
        vec![("A".into(), 1_700_000_000), ("C".into(), 1_700_000_002)]
    );
    // 1 of 3 (and an unknown one) is not enough.
    let err = policy
        .verify(&cosigned_note(&k, 5, &["B", "D"]))
        .unwrap_err();
    assert!(
        matches!(&err, PolicyError::Quorum(m) if m.contains("agencies") && m.contains('B')),
        "{err}"
    );
    // A bad cosignature by a policy witness rejects the note.
    let good = cosigned_note(&k, 5, &["A", "B"]);
    let bad_a = cosigned_note(&k, 6, &["A"]);
    let a_line_for_6 = bad_a.lines().last().unwrap();
    let forged = good.replacen(good.lines().nth(5).unwrap(), a_line_for_6, 1);
    assert_ne!(forged, good);
    assert!(matches!(
        policy.verify(&forged),
        Err(PolicyError::Cosignature(_))
    ));
    // Another log's checkpoint, even cosigned by the quorum.
    let other = keys(&[]);
    let other_k = Keys {
        log: other.log,
        witnesses: k
            .witnesses
            .iter()
            .map(|(n, c)| (n.clone(), Cosigner::from_skey(&c.skey()).unwrap()))
            .collect(),
    };
    assert!(matches!(
        policy.verify(&cosigned_note(&other_k, 5, &["A", "B", "C"])),
        Err(PolicyError::Log(_))
    ));
    // quorum none: the log's signature alone.
    let none = Policy::parse(format!("log {}\nquorum none\n", k.log.vkey()).as_bytes()).unwrap();
    assert!(none.verify(&cosigned_note(&k, 2, &[])).is_ok());
}
