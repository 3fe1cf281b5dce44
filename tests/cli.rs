//! `stele submit`, `stele verify` and `stele monitor` against a running
//! `stele serve` (embedded SQLite) and against small fake logs served by the
//! test itself (forged, rolled-back, inconsistent and split-view
//! checkpoints, tampered tiles).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};
use serde_json::{json, Value};
use stele_core::checkpoint::Checkpoint;
use stele_core::merkle::{prove_consistency, root_of};
use stele_core::note::Signer;
use stele_core::tile::{encode_bundle, TileId, TilePath, TreeBuilder};
use stele_core::{leaf_hash, Hash};

/// The binary under test; `STELE_BIN` overrides the one cargo built.
fn bin() -> String {
    std::env::var("STELE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_stele").to_string())
}

type R = Result<(), Failed>;

fn ensure(cond: bool, msg: impl FnOnce() -> String) -> R {
    if cond {
        Ok(())
    } else {
        Err(msg().into())
    }
}

// ---------- running the binary

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn show(&self) -> String {
        format!(
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn stele(args: &[&str]) -> Out {
    let o = Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running stele");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// `stele verify` must fail, and name `step` as the failed one.
fn expect_failed_step(out: &Out, step: &str) -> R {
    ensure(out.code != 0, || {
        format!(
            "verify succeeded, expected failure at {step}\n{}",
            out.show()
        )
    })?;
    let want = format!("FAILED at step \"{step}\"");
    ensure(out.stdout.contains(&want), || {
        format!("expected {want:?}\n{}", out.show())
    })?;
    ensure(out.stdout.contains(&format!("✗ {step}:")), || {
        format!("no ✗ line for {step}\n{}", out.show())
    })
}

// ---------- a real server

struct Server {
    child: Mutex<Child>,
    _dir: tempfile::TempDir,
    origin: String,
    /// The default log's base URL.
    url: String,
    vkey: String,
    token: String,
    http: reqwest::blocking::Client,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Server {
    fn stop(&self) {
        let mut c = self.child.lock().unwrap();
        let _ = c.kill();
        let _ = c.wait();
    }

    fn start() -> Result<Server, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let data = dir.path().join("data");
        let addr_file = dir.path().join("addr");
        let log = std::fs::File::create(dir.path().join("serve.log")).map_err(|e| e.to_string())?;
        let mut child = Command::new(bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--addr-file"])
            .arg(&addr_file)
            .arg("--data-dir")
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let addr = loop {
            if let Ok(s) = std::fs::read_to_string(&addr_file) {
                if s.ends_with('\n') {
                    break s.trim().to_string();
                }
            }
            if let Ok(Some(st)) = child.try_wait() {
                let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default();
                return Err(format!(
                    "stele serve exited ({st}) before listening:\n{log}"
                ));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err("stele serve did not write its address within 60 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let data_s = data.to_string_lossy().into_owned();
        let out = stele(&["agency", "add", "cli-test", "--data-dir", &data_s]);
        if out.code != 0 {
            let _ = child.kill();
            return Err(format!("stele agency add failed\n{}", out.show()));
        }
        let token = out
            .stdout
            .split_whitespace()
            .find(|w| w.starts_with("cli-test.") && w.len() > 30)
            .ok_or_else(|| format!("no token in `agency add` output\n{}", out.show()))?
            .to_string();
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(300))
            .build()
            .map_err(|e| e.to_string())?;
        let logs: Value = http
            .get(format!("http://{addr}/logs"))
            .send()
            .and_then(|r| r.json())
            .map_err(|e| format!("GET /logs: {e}"))?;
        let first = &logs["logs"][0];
        let name = first["name"].as_str().ok_or("no log in GET /logs")?;
        Ok(Server {
            child: Mutex::new(child),
            origin: first["origin"].as_str().unwrap_or_default().to_string(),
            url: format!("http://{addr}/logs/{name}"),
            vkey: first["vkey"].as_str().unwrap_or_default().to_string(),
            token,
            http,
            _dir: dir,
        })
    }

    /// Appends records through the bulk endpoint, 1,000 per request.
    fn bulk(&self, tag: &str, n: usize) -> R {
        let mut done = 0;
        while done < n {
            let k = (n - done).min(1000);
            let records: Vec<Value> = (done..done + k)
                .map(|i| json!({"type": "test.bulk", "subject": format!("{tag}-{i}")}))
                .collect();
            let resp = self
                .http
                .post(format!("{}/records/bulk", self.url))
                .bearer_auth(&self.token)
                .json(&json!({ "records": records }))
                .send()
                .map_err(|e| format!("bulk: {e}"))?;
            let status = resp.status();
            if !status.is_success() {
                return Err(
                    format!("bulk: HTTP {status}: {}", resp.text().unwrap_or_default()).into(),
                );
            }
            done += k;
        }
        Ok(())
    }

    /// Submits a record with `stele submit`; returns the receipt path.
    fn submit(&self, dir: &Path, stem: &str, subject: &str) -> Result<PathBuf, Failed> {
        let file = dir.join(format!("{stem}.json"));
        std::fs::write(
            &file,
            json!({"type": "test.record", "subject": subject}).to_string(),
        )?;
        let out = stele(&[
            "submit",
            "--log",
            &self.url,
            "--token",
            &self.token,
            file.to_str().unwrap(),
        ]);
        ensure(out.code == 0, || format!("submit failed\n{}", out.show()))?;
        let receipt = dir.join(format!("{stem}.receipt.json"));
        ensure(receipt.exists(), || {
            format!("{} was not written\n{}", receipt.display(), out.show())
        })?;
        ensure(dir.join(format!("{stem}.tlog-proof")).exists(), || {
            "no .tlog-proof written".into()
        })?;
        Ok(receipt)
    }
}

// ---------- a fake log served by the test

#[derive(Default)]
struct FakeState {
    checkpoint: String,
    /// Leaf hashes of the tree served; consistency proofs come from them.
    hashes: Vec<Hash>,
    files: HashMap<String, Vec<u8>>,
}

struct FakeLog {
    state: Arc<Mutex<FakeState>>,
    url: String,
    _rt: tokio::runtime::Runtime,
}

impl FakeLog {
    fn start() -> FakeLog {
        use axum::extract::{Path as P, Query, State};
        use axum::http::StatusCode;
        use axum::routing::get;
        let state = Arc::new(Mutex::new(FakeState::default()));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let app = axum::Router::new()
            .route("/logs/fake/checkpoint", get(|State(s): State<Arc<Mutex<FakeState>>>| async move { s.lock().unwrap().checkpoint.clone() }))
            .route(
                "/logs/fake/proofs/consistency",
                get(|State(s): State<Arc<Mutex<FakeState>>>, Query(q): Query<HashMap<String, String>>| async move {
                    let from: u64 = q.get("from").and_then(|v| v.parse().ok()).unwrap_or(0);
                    let to: u64 = q.get("to").and_then(|v| v.parse().ok()).unwrap_or(0);
                    let s = s.lock().unwrap();
                    let proof = (from <= to && to == s.hashes.len() as u64)
                        .then(|| prove_consistency(from, to, s.hashes.as_slice()).ok())
                        .flatten();
                    match proof {
                        Some(p) => {
                            let hex: Vec<String> = p.iter().map(|h| h.to_hex()).collect();
                            Ok(axum::Json(json!({"from": from, "to": to, "consistency_proof": hex, "checkpoint": null})))
                        }
                        None => Err(StatusCode::NOT_FOUND),
                    }
                }),
            )
            .route(
                "/logs/fake/tile/{*path}",
                get(|State(s): State<Arc<Mutex<FakeState>>>, P(path): P<String>| async move {
                    s.lock().unwrap().files.get(&format!("tile/{path}")).cloned().ok_or(StatusCode::NOT_FOUND)
                }),
            )
            .with_state(state.clone());
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        rt.spawn(async move { axum::serve(listener, app).await });
        FakeLog {
            state,
            url: format!("http://{addr}/logs/fake"),
            _rt: rt,
        }
    }

    /// Serves the checkpoint of the first `size` leaves of `tree`, signed by
    /// `signer`, consistency proofs to it from any smaller size, and the
    /// tree's tiles and bundles.
    fn serve(&self, signer: &Signer, tree: &Tree, size: u64) {
        let hashes = &tree.hashes[..size as usize];
        let cp = Checkpoint::new(signer.name(), size, root_of(hashes));
        let mut s = self.state.lock().unwrap();
        s.checkpoint = signer.sign_checkpoint(&cp).unwrap();
        s.hashes = hashes.to_vec();
        s.files = tree.files(size);
    }
}

/// A tree of leaves for a fake log.
struct Tree {
    leaves: Vec<Vec<u8>>,
    hashes: Vec<Hash>,
}

impl Tree {
    fn new(tag: &str, n: usize) -> Tree {
        let leaves: Vec<Vec<u8>> = (0..n).map(|i| format!("{tag}-{i}").into_bytes()).collect();
        let hashes = leaves.iter().map(|l| leaf_hash(l)).collect();
        Tree { leaves, hashes }
    }

    /// Entry bundles and hash tiles of the first `size` leaves, by path.
    fn files(&self, size: u64) -> HashMap<String, Vec<u8>> {
        let mut files = HashMap::new();
        let mut b = TreeBuilder::new();
        for (id, data) in b.append(&self.hashes[..size as usize]) {
            files.insert(TilePath::Hash(id).to_path(), data);
        }
        for (k, chunk) in self.leaves[..size as usize].chunks(256).enumerate() {
            let id = TileId::new(0, k as u64, chunk.len() as u16);
            files.insert(
                TilePath::Entries(id).to_path(),
                encode_bundle(chunk.iter().map(|l| l.as_slice())).unwrap(),
            );
        }
        files
    }
}

fn monitor(url: &str, vkey: &str, state: &Path, extra: &[&str]) -> Out {
    let mut args = vec![
        "monitor",
        url,
        "--vkey",
        vkey,
        "--state",
        state.to_str().unwrap(),
        "--once",
    ];
    args.extend_from_slice(extra);
    stele(&args)
}

fn expect_alarm(out: &Out, what: &str) -> R {
    ensure(out.code == 1, || {
        format!("expected exit 1 (alarm: {what})\n{}", out.show())
    })?;
    ensure(
        out.stdout.contains("ALARM") && out.stdout.contains(what),
        || format!("expected an ALARM about {what:?}\n{}", out.show()),
    )
}

fn expect_fine(out: &Out) -> R {
    ensure(out.code == 0 && out.stdout.contains('✓'), || {
        format!("expected a clean check\n{}", out.show())
    })
}

// ---------- tests against the real server

fn verify_accepts_real_receipts(s: &Server) -> R {
    let dir = tempfile::tempdir()?;
    s.submit(dir.path(), "first", "parcel-1")?;
    let receipt = s.submit(dir.path(), "deed", "parcel-2")?;
    let out = stele(&["verify", receipt.to_str().unwrap(), "--vkey", &s.vkey]);
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
    let out = stele(&[
        "verify",
        proof.to_str().unwrap(),
        "--vkey",
        &s.vkey,
        "--leaf",
        wrong.to_str().unwrap(),
    ]);
    expect_failed_step(&out, "inclusion proof")
}

fn verify_rejects_each_tampering(s: &Server) -> R {
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
        .ok_or("no signature line")?;
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
        let out = stele(&["verify", p.to_str().unwrap(), "--vkey", &s.vkey]);
        expect_failed_step(&out, step)
            .map_err(|e| format!("tampered {what}: {}", e.message().unwrap_or_default()))?;
    }

    // Wrong keys: another key under the log's name, and another log's key.
    let (other, _) = Signer::generate(&s.origin)?;
    let out = stele(&["verify", path.to_str().unwrap(), "--vkey", &other.vkey()]);
    expect_failed_step(&out, "checkpoint signature")?;
    let (elsewhere, _) = Signer::generate("elsewhere.example/log")?;
    let out = stele(&[
        "verify",
        path.to_str().unwrap(),
        "--vkey",
        &elsewhere.vkey(),
    ]);
    expect_failed_step(&out, "checkpoint signature")?;
    // And the untouched receipt still verifies.
    let out = stele(&["verify", path.to_str().unwrap(), "--vkey", &s.vkey]);
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

fn verify_online(s: &Server) -> R {
    let dir = tempfile::tempdir()?;
    let receipt = s.submit(dir.path(), "early", "online-1")?;
    s.bulk("online", 300)?;
    let out = stele(&[
        "verify",
        receipt.to_str().unwrap(),
        "--vkey",
        &s.vkey,
        "--online",
        &s.url,
    ]);
    ensure(
        out.code == 0 && out.stdout.contains("✓ consistency with the live log"),
        || out.show(),
    )?;
    ensure(out.stdout.contains("extends the receipt's tree"), || {
        format!("expected a consistency proof\n{}", out.show())
    })?;
    // A live log that is not the receipt's log (another key) fails the online step.
    let fake = FakeLog::start();
    let out = stele(&[
        "verify",
        receipt.to_str().unwrap(),
        "--vkey",
        &s.vkey,
        "--online",
        &fake.url,
    ]);
    ensure(
        out.code != 0 && out.stdout.contains("✗ consistency with the live log"),
        || out.show(),
    )
}

fn submit_shows_problems(s: &Server) -> R {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("bad.json");
    std::fs::write(&file, r#"{"type": "Not A Type!", "surprise": 1}"#)?;
    let out = stele(&[
        "submit",
        "--log",
        &s.url,
        "--token",
        &s.token,
        file.to_str().unwrap(),
    ]);
    ensure(out.code != 0 && out.stderr.contains("HTTP 4"), || {
        format!("expected a 4xx problem\n{}", out.show())
    })?;
    let good = dir.path().join("good.json");
    std::fs::write(&good, r#"{"type": "test.record"}"#)?;
    let out = stele(&[
        "submit",
        "--log",
        &s.url,
        "--token",
        "cli-test.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        good.to_str().unwrap(),
    ]);
    ensure(out.code != 0 && out.stderr.contains("401"), || {
        format!("expected 401\n{}", out.show())
    })?;
    ensure(!dir.path().join("good.receipt.json").exists(), || {
        "a refused record left a receipt".into()
    })
}

fn monitor_follows_real_log_across_restarts(s: &Server) -> R {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("monitor.json");
    s.bulk("monitor", 10)?;
    let out = monitor(&s.url, &s.vkey, &state, &[]);
    expect_fine(&out)?;
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&state)?)?;
    ensure(
        saved["checkpoint"]
            .as_str()
            .is_some_and(|c| c.starts_with(&format!("{}\n", s.origin))),
        || format!("state file lacks the verified checkpoint: {saved}"),
    )?;
    s.bulk("monitor-more", 20)?;
    let out = monitor(&s.url, &s.vkey, &state, &[]);
    expect_fine(&out)?;
    ensure(
        out.stdout.contains("resuming from the verified tree")
            && out.stdout.contains("consistent with size"),
        || {
            format!(
                "second run did not resume and prove consistency\n{}",
                out.show()
            )
        },
    )?;
    // A wrong key is refused against the existing state.
    let (other, _) = Signer::generate(&s.origin)?;
    let out = monitor(&s.url, &other.vkey(), &state, &[]);
    ensure(out.code != 0, || out.show())
}

fn audit_rebuilds_large_log() -> R {
    let s = Server::start()?;
    let started = Instant::now();
    s.bulk("audit", 100_000)?;
    let built = started.elapsed();
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("audit.json");
    let started = Instant::now();
    let out = monitor(&s.url, &s.vkey, &state, &["--audit"]);
    let audited = started.elapsed();
    expect_fine(&out)?;
    ensure(out.stdout.contains("audited: the 100000 entries"), || {
        format!("audit did not cover 100000\n{}", out.show())
    })?;
    eprintln!("audit test: appended 100,000 entries in {built:.1?}, audited them in {audited:.1?}");
    // Resumes: only the new entries (and the partial bundle) are fetched.
    s.bulk("audit-more", 1000)?;
    let out = monitor(&s.url, &s.vkey, &state, &["--audit"]);
    expect_fine(&out)?;
    let fetched: u64 = out
        .stdout
        .split(" fetched now")
        .next()
        .and_then(|t| t.rsplit('(').next())
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| format!("no fetched count\n{}", out.show()))?;
    ensure(fetched == 1000, || {
        format!(
            "resumed audit fetched {fetched} entries, expected 1000\n{}",
            out.show()
        )
    })
}

/// Speed of `--audit` alone (client side), on a fake log of a million
/// entries served from memory. Ignored by default: `-- --ignored audit_speed`.
fn audit_speed_one_million() -> R {
    let (fake, signer, _d, state) = fake_setup("speed")?;
    let tree = Tree::new(
        "entry-with-a-realistic-length-of-about-one-hundred-bytes-for-a-record-in-the-log",
        1_000_000,
    );
    fake.serve(&signer, &tree, 1_000_000);
    let started = Instant::now();
    let out = monitor(&fake.url, &signer.vkey(), &state, &["--audit"]);
    let took = started.elapsed();
    expect_fine(&out)?;
    ensure(out.stdout.contains("audited: the 1000000 entries"), || {
        out.show()
    })?;
    eprintln!("audited 1,000,000 entries in {took:.2?}");
    ensure(took < Duration::from_secs(60), || {
        format!("audit took {took:?}")
    })
}

// ---------- tests against fake logs

fn fake_setup(tag: &str) -> Result<(FakeLog, Signer, tempfile::TempDir, PathBuf), Failed> {
    let fake = FakeLog::start();
    let (signer, _) = Signer::generate(&format!("fake.example/{tag}"))?;
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state.json");
    Ok((fake, signer, dir, state))
}

fn monitor_detects_forged_checkpoint() -> R {
    let (fake, signer, _d, state) = fake_setup("forged")?;
    let tree = Tree::new("a", 20);
    fake.serve(&signer, &tree, 5);
    expect_fine(&monitor(&fake.url, &signer.vkey(), &state, &[]))?;
    let (forger, _) = Signer::generate(signer.name())?;
    fake.serve(&forger, &tree, 8);
    expect_alarm(
        &monitor(&fake.url, &signer.vkey(), &state, &[]),
        "bad checkpoint signature",
    )
}

fn monitor_detects_rollback_across_restart() -> R {
    let (fake, signer, _d, state) = fake_setup("rollback")?;
    let tree = Tree::new("a", 20);
    fake.serve(&signer, &tree, 6);
    expect_fine(&monitor(&fake.url, &signer.vkey(), &state, &[]))?;
    fake.serve(&signer, &tree, 12);
    let out = monitor(&fake.url, &signer.vkey(), &state, &[]);
    expect_fine(&out)?;
    ensure(out.stdout.contains("consistent with size 6"), || out.show())?;
    fake.serve(&signer, &tree, 9);
    expect_alarm(
        &monitor(&fake.url, &signer.vkey(), &state, &[]),
        "the tree shrank",
    )?;
    // The alarm did not overwrite the verified state: it fires again.
    expect_alarm(
        &monitor(&fake.url, &signer.vkey(), &state, &[]),
        "the tree shrank",
    )
}

fn monitor_detects_inconsistent_root() -> R {
    let (fake, signer, _d, state) = fake_setup("inconsistent")?;
    fake.serve(&signer, &Tree::new("a", 20), 7);
    expect_fine(&monitor(&fake.url, &signer.vkey(), &state, &[]))?;
    // A different history, properly signed, with a proof from that history.
    fake.serve(&signer, &Tree::new("b", 20), 13);
    expect_alarm(
        &monitor(&fake.url, &signer.vkey(), &state, &[]),
        "inconsistent tree",
    )
}

fn monitor_detects_split_view() -> R {
    let (fake, signer, _d, state) = fake_setup("split")?;
    fake.serve(&signer, &Tree::new("a", 10), 4);
    expect_fine(&monitor(&fake.url, &signer.vkey(), &state, &[]))?;
    fake.serve(&signer, &Tree::new("b", 10), 4);
    expect_alarm(
        &monitor(&fake.url, &signer.vkey(), &state, &[]),
        "split view",
    )
}

fn audit_detects_tampered_entries() -> R {
    let (fake, signer, _d, state) = fake_setup("audit")?;
    let tree = Tree::new("a", 700);
    fake.serve(&signer, &tree, 700);
    let out = monitor(&fake.url, &signer.vkey(), &state, &["--audit"]);
    expect_fine(&out)?;
    ensure(out.stdout.contains("audited: the 700 entries"), || {
        out.show()
    })?;
    // Same signed checkpoint, but one entry in a bundle differs.
    let mut bad = Tree::new("a", 700);
    bad.leaves[300] = b"forged".to_vec();
    bad.hashes[300] = leaf_hash(b"forged");
    let files = bad.files(700);
    fake.state.lock().unwrap().files.insert(
        TilePath::Entries(TileId::new(0, 1, 256)).to_path(),
        files[&TilePath::Entries(TileId::new(0, 1, 256)).to_path()].clone(),
    );
    let fresh = state.with_file_name("fresh.json");
    expect_alarm(
        &monitor(&fake.url, &signer.vkey(), &fresh, &["--audit"]),
        "differs from the one rebuilt",
    )?;
    // Served hash tiles consistent with the forged entries: the root gives it away.
    fake.state.lock().unwrap().files = files;
    let fresh2 = state.with_file_name("fresh2.json");
    expect_alarm(
        &monitor(&fake.url, &signer.vkey(), &fresh2, &["--audit"]),
        "audit: the entries rebuild",
    )
}

/// The server shared by the tests that need one, started by the first.
static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();

fn with_server(name: &'static str, f: fn(&Server) -> R) -> Trial {
    Trial::test(name, move || match SERVER.get_or_init(Server::start) {
        Ok(s) => f(s),
        Err(e) => Err(format!("could not start stele serve: {e}").into()),
    })
}

fn main() {
    let args = Arguments::from_args();
    let trials = vec![
        with_server("verify_accepts_real_receipts", verify_accepts_real_receipts),
        with_server(
            "verify_rejects_each_tampering",
            verify_rejects_each_tampering,
        ),
        with_server("verify_online", verify_online),
        with_server("submit_shows_problems", submit_shows_problems),
        with_server(
            "monitor_follows_real_log_across_restarts",
            monitor_follows_real_log_across_restarts,
        ),
        Trial::test("audit_rebuilds_large_log", audit_rebuilds_large_log),
        Trial::test(
            "monitor_detects_forged_checkpoint",
            monitor_detects_forged_checkpoint,
        ),
        Trial::test(
            "monitor_detects_rollback_across_restart",
            monitor_detects_rollback_across_restart,
        ),
        Trial::test(
            "monitor_detects_inconsistent_root",
            monitor_detects_inconsistent_root,
        ),
        Trial::test("monitor_detects_split_view", monitor_detects_split_view),
        Trial::test(
            "audit_detects_tampered_entries",
            audit_detects_tampered_entries,
        ),
        Trial::test("audit_speed_one_million", audit_speed_one_million).with_ignored_flag(true),
    ];
    let conclusion = libtest_mimic::run(&args, trials);
    // Statics are not dropped: stop the shared server by hand.
    if let Some(Ok(s)) = SERVER.get() {
        s.stop();
    }
    conclusion.exit();
}
