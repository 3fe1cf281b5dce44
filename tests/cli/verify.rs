//! `stele submit` and `stele verify` against the real server: receipts and
//! `.tlog-proof` files that verify step by step, every tampering caught at
//! the step it breaks, online consistency, and problems shown on refusal.

use std::path::Path;

use anyhow::Context;
use serde_json::{json, Value};
use stele_core::note::Signer;
use stele_testkit::harness::TestResult;
use stele_testkit::process::Output;

use super::fake::FakeLog;
use super::{ensure, expect_failed_step, stele, Server, ServerTest};

/// `stele verify FILE --vkey VKEY EXTRA...`
fn verify(file: &Path, vkey: &str, extra: &[&str]) -> Output {
    let mut args = vec!["verify", file.to_str().unwrap(), "--vkey", vkey];
    args.extend_from_slice(extra);
    stele(&args)
}

/// `stele submit --log URL --token TOKEN FILE` to the shared server.
fn submit(s: &Server, token: &str, file: &Path) -> Output {
    stele(&[
        "submit",
        "--log",
        &s.url,
        "--token",
        token,
        file.to_str().unwrap(),
    ])
}

pub const TESTS: &[(&str, ServerTest)] = &[
    ("verify_accepts_real_receipts", verify_accepts_real_receipts),
    (
        "verify_rejects_each_tampering",
        verify_rejects_each_tampering,
    ),
    ("verify_online", verify_online),
    ("submit_shows_problems", submit_shows_problems),
];

fn verify_accepts_real_receipts(s: &Server) -> TestResult {
    let dir = tempfile::tempdir()?;
    s.submit(dir.path(), "first", "parcel-1")?;
    let receipt = s.submit(dir.path(), "deed", "parcel-2")?;
    let out = verify(&receipt, &s.vkey, &[]);
    ensure(out.code == 0 && out.stdout.contains("VERIFIED"), || {
        format!("receipt did not verify\n{}", out.show())
    })?;
    for step in [
        "parse",
        "leaf hash",
        "checkpoint signature",
        "inclusion proof",
        "tlog-proof",
    ] {
        ensure(out.stdout.contains(&format!("✓ {step}:")), || {
            format!("step {step} not shown as passed\n{}", out.show())
        })?;
    }
    // The same from a vkey file, and the tlog-proof with the leaf saved beside it.
    let vkey_file = dir.path().join("log.vkey");
    std::fs::write(&vkey_file, format!("{}\n", s.vkey))?;
    let proof = dir.path().join("deed.tlog-proof");
    let out = stele(&[
        "verify",
        proof.to_str().unwrap(),
        "--vkey-file",
        vkey_file.to_str().unwrap(),
    ]);
    ensure(out.code == 0 && out.stdout.contains("VERIFIED"), || {
        format!("tlog-proof did not verify\n{}", out.show())
    })?;
    // With an explicit --leaf that is not the entry's leaf, inclusion fails.
    let wrong = dir.path().join("wrong.leaf");
    std::fs::write(&wrong, b"{\"not\":\"this\"}")?;
    let out = verify(&proof, &s.vkey, &["--leaf", wrong.to_str().unwrap()]);
    expect_failed_step(&out, "inclusion proof")
}

fn verify_rejects_each_tampering(s: &Server) -> TestResult {
    let dir = tempfile::tempdir()?;
    s.submit(dir.path(), "a", "t-1")?;
    s.submit(dir.path(), "b", "t-2")?;
    let path = s.submit(dir.path(), "c", "t-3")?;
    let good: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    ensure(
        good["inclusion_proof"]
            .as_array()
            .is_some_and(|p| !p.is_empty()),
        || "expected a non-empty proof".into(),
    )?;

    let flip_hex = |s: &str| {
        let mut c: Vec<char> = s.chars().collect();
        c[10] = if c[10] == '0' { '1' } else { '0' };
        c.into_iter().collect::<String>()
    };
    let cp = good["checkpoint"].as_str().unwrap().to_string();
    let mut lines: Vec<String> = cp.split('\n').map(str::to_string).collect();
    let size: u64 = lines[1].parse()?;
    // Signature line: `— name base64`; change one signature byte (not the key id).
    let sig_idx = lines
        .iter()
        .position(|l| l.starts_with('—'))
        .context("no signature line")?;
    let sig_line = lines[sig_idx].clone();
    let (head, b64) = sig_line.rsplit_once(' ').unwrap();
    let mut sig = base64_decode(b64);
    sig[20] ^= 1;
    lines[sig_idx] = format!("{head} {}", base64_encode(&sig));
    let bad_sig = lines.join("\n");
    let bad_size = cp.replacen(&format!("\n{size}\n"), &format!("\n{}\n", size + 1), 1);

    type Tamper = (&'static str, Box<dyn Fn(&mut Value)>, &'static str);
    let cases: Vec<Tamper> = vec![
        (
            "leaf",
            Box::new(|r| {
                r["leaf"] = Value::String(r["leaf"].as_str().unwrap().replace("t-3", "t-4"))
            }),
            "leaf hash",
        ),
        (
            "index",
            Box::new(|r| r["index"] = json!(r["index"].as_u64().unwrap() - 1)),
            "inclusion proof",
        ),
        (
            "proof hash",
            Box::new(move |r| {
                r["inclusion_proof"][0] =
                    Value::String(flip_hex(r["inclusion_proof"][0].as_str().unwrap()))
            }),
            "inclusion proof",
        ),
        (
            "checkpoint size line",
            Box::new(move |r| r["checkpoint"] = Value::String(bad_size.clone())),
            "checkpoint signature",
        ),
        (
            "signature",
            Box::new(move |r| r["checkpoint"] = Value::String(bad_sig.clone())),
            "checkpoint signature",
        ),
        (
            "tlog-proof index",
            Box::new(|r| {
                let t = r["tlog_proof"].as_str().unwrap();
                let i = r["index"].as_u64().unwrap();
                r["tlog_proof"] = Value::String(t.replacen(
                    &format!("index {i}\n"),
                    &format!("index {}\n", i + 1),
                    1,
                ));
            }),
            "tlog-proof",
        ),
    ];
    for (what, tamper, step) in cases {
        let mut r = good.clone();
        tamper(&mut r);
        ensure(r != good, || format!("tampering {what} changed nothing"))?;
        let p = dir
            .path()
            .join(format!("tampered-{}.json", what.replace(' ', "-")));
        std::fs::write(&p, serde_json::to_string_pretty(&r)?)?;
        let out = verify(&p, &s.vkey, &[]);
        expect_failed_step(&out, step).with_context(|| format!("tampered {what}"))?;
    }

    // Wrong keys: another key under the log's name, and another log's key.
    let (other, _) = Signer::generate(&s.origin)?;
    let out = verify(&path, &other.vkey(), &[]);
    expect_failed_step(&out, "checkpoint signature")?;
    let (elsewhere, _) = Signer::generate("elsewhere.example/log")?;
    let out = verify(&path, &elsewhere.vkey(), &[]);
    expect_failed_step(&out, "checkpoint signature")?;
    // And the untouched receipt still verifies.
    let out = verify(&path, &s.vkey, &[]);
    ensure(out.code == 0, || out.show())
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn verify_online(s: &Server) -> TestResult {
    let dir = tempfile::tempdir()?;
    let receipt = s.submit(dir.path(), "early", "online-1")?;
    s.bulk("online", 300)?;
    let out = verify(&receipt, &s.vkey, &["--online", &s.url]);
    ensure(
        out.code == 0 && out.stdout.contains("✓ consistency with the live log"),
        || out.show(),
    )?;
    ensure(out.stdout.contains("extends the receipt's tree"), || {
        format!("expected a consistency proof\n{}", out.show())
    })?;
    // A live log that is not the receipt's log (another key) fails the online step.
    let fake = FakeLog::start();
    let out = verify(&receipt, &s.vkey, &["--online", &fake.url]);
    ensure(
        out.code != 0 && out.stdout.contains("✗ consistency with the live log"),
        || out.show(),
    )
}

fn submit_shows_problems(s: &Server) -> TestResult {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("bad.json");
    std::fs::write(&file, r#"{"type": "Not A Type!", "surprise": 1}"#)?;
    let out = submit(s, &s.token, &file);
    ensure(out.code != 0 && out.stderr.contains("HTTP 4"), || {
        format!("expected a 4xx problem\n{}", out.show())
    })?;
    let good = dir.path().join("good.json");
    std::fs::write(&good, r#"{"type": "test.record"}"#)?;
    let out = submit(
        s,
        "cli-test.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        &good,
    );
    ensure(out.code != 0 && out.stderr.contains("401"), || {
        format!("expected 401\n{}", out.show())
    })?;
    ensure(!dir.path().join("good.receipt.json").exists(), || {
        "a refused record left a receipt".into()
    })
}
