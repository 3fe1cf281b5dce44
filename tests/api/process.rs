//! `stele serve` as a process: the embedded first start (a generated key,
//! a demo agency whose token is shown once) and a graceful stop on SIGTERM;
//! production mode, which refuses to start without a key and never
//! registers a demo agency.

use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use stele_core::note::{Signer, Verifier};
use stele_core::receipt::Receipt;
use stele_testkit::agency::parse_token;
use stele_testkit::checker::LogChecker;
use stele_testkit::harness::TestResult;
use stele_testkit::process::{command, run, ServeOptions, ServerProcess};
use stele_testkit::store::{Backend, TestStore};

use super::ensure_eq;

const START: Duration = Duration::from_secs(60);
const STOP: Duration = Duration::from_secs(30);

async fn post_record(
    base_url: &str,
    token: &str,
    body: &Value,
) -> anyhow::Result<(StatusCode, Value)> {
    let r = reqwest::Client::new()
        .post(format!("{base_url}/logs/default/records"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await?;
    let status = r.status();
    Ok((status, r.json().await?))
}

/// SIGTERM, and the server must exit 0.
async fn stop(mut server: ServerProcess) -> TestResult {
    let status = server.terminate(STOP).await?;
    if !status.success() {
        anyhow::bail!("stele serve exited with {status} after SIGTERM");
    }
    Ok(())
}

/// The checker's full check of the log `default` of `server`, with `receipts`.
async fn check(server: &ServerProcess, vkey: &str, receipts: &[Receipt]) -> TestResult {
    let mut checker = LogChecker::over_http(&server.base_url(), "default", vkey)?;
    for r in receipts {
        checker.add_receipt(r)?;
    }
    checker.check_all().await?;
    Ok(())
}

pub async fn serve_embedded_first_start_and_graceful_stop() -> TestResult {
    let bin = stele_testkit::stele_bin!();
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let options = ServeOptions {
        data_dir: Some(data.clone()),
        current_dir: Some(dir.path().to_path_buf()),
        ..ServeOptions::default()
    };
    let server = ServerProcess::start(&bin, "first start", &options, START).await?;
    let err = server.stderr();
    let token = parse_token(&err, "demo")
        .ok_or_else(|| anyhow::anyhow!("no demo token on first start:\n{err}"))?;
    if !err.contains("listening on http://") || !err.contains("generated a signing key") {
        anyhow::bail!("start-up log lacks the address or the key:\n{err}");
    }
    let skey = std::fs::read_to_string(data.join("keys/default.skey"))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("keys/default.skey"))?
            .permissions()
            .mode();
        ensure_eq!(mode & 0o777, 0o600);
    }
    let vkey = Signer::from_skey(skey.trim())
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .vkey();
    let verifier = Verifier::from_vkey(&vkey).map_err(|e| anyhow::anyhow!("{e}"))?;
    // The first start registered the example types and granted them to demo.
    let types: serde_json::Value =
        reqwest::get(format!("{}/logs/default/types", server.base_url()))
            .await?
            .json()
            .await?;
    let names: Vec<&str> = types["types"]
        .as_array()
        .map(|t| t.iter().filter_map(|t| t["name"].as_str()).collect())
        .unwrap_or_default();
    ensure_eq!(
        names,
        vec![
            "disease.covid-test",
            "health.case",
            "health.vaccination",
            "land.transfer",
            "parking.status"
        ],
        "{types}"
    );
    let unknown = json!({"type": "land.survey", "subject": "XH-9"});
    let (status, problem) = post_record(&server.base_url(), &token, &unknown).await?;
    ensure_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    ensure_eq!(
        problem["type"],
        "urn:stele:problem:unknown-type",
        "{problem}"
    );
    let body = json!({"type": "land.transfer", "subject": "XH-9", "attributes": {"deed": "2026/9", "area_m2": 50}});
    let (status, receipt) = post_record(&server.base_url(), &token, &body).await?;
    ensure_eq!(status, StatusCode::CREATED, "{receipt}");
    let receipt: Receipt = serde_json::from_value(receipt)?;
    receipt
        .verify(&verifier)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    check(&server, &vkey, std::slice::from_ref(&receipt)).await?;
    stop(server).await?;

    // Second start: same key, same log, no new demo token.
    let server = ServerProcess::start(&bin, "second start", &options, START).await?;
    if server.stderr().contains("demo.") {
        anyhow::bail!("a second start printed a token again:\n{}", server.stderr());
    }
    let (status, again) = post_record(&server.base_url(), &token, &body).await?;
    ensure_eq!(status, StatusCode::OK, "{again}");
    // Indexes 0–4 are the example types' registry entries.
    ensure_eq!(again["index"], 5);
    check(&server, &vkey, &[receipt, serde_json::from_value(again)?]).await?;
    stop(server).await
}

/// `stele ARGS` in `dir`, to completion.
fn stele(dir: &Path, args: &[&str]) -> anyhow::Result<stele_testkit::process::Output> {
    let mut c = command(&stele_testkit::stele_bin!(), args);
    c.current_dir(dir);
    run(c)
}

pub async fn serve_production_requires_a_key() -> TestResult {
    let store = TestStore::new(Backend::Postgres).await?;
    let url = store.database_url().unwrap_or_default().to_string();
    let dir = store.dir();
    let key = dir.join("keys/default.skey");
    let key_arg = key.to_str().unwrap_or_default().to_string();
    std::fs::write(
        dir.join("stele.toml"),
        format!("[[logs]]\nname = \"default\"\norigin = \"records.example.gov/default\"\nkey_file = {key_arg:?}\naccept_unregistered_types = true\n"),
    )?;
    let common = ["--config", "stele.toml", "--database-url", url.as_str()];

    // No key: refuse to start, and say how to make one.
    let out = stele(dir, &[&["serve"][..], &common].concat())?;
    if out.code == 0 || !out.stderr.contains("stele keygen") {
        anyhow::bail!("production start without a key: {}", out.show());
    }
    if key.exists() {
        anyhow::bail!("production mode created a key file");
    }

    let keygen = [
        "keygen",
        "--origin",
        "records.example.gov/default",
        "--out",
        &key_arg,
    ];
    let vkey = stele(dir, &keygen)?.ok()?.trim().to_string();
    let verifier = Verifier::from_vkey(&vkey).map_err(|e| anyhow::anyhow!("{vkey:?}: {e}"))?;

    let options = ServeOptions {
        config: Some("stele.toml".into()),
        database_url: Some(url.clone()),
        current_dir: Some(dir.to_path_buf()),
        ..ServeOptions::default()
    };
    let server =
        ServerProcess::start(&stele_testkit::stele_bin!(), "production", &options, START).await?;
    if server.stderr().contains("demo.") {
        anyhow::bail!(
            "production mode registered a demo agency:\n{}",
            server.stderr()
        );
    }
    let add = ["agency", "add", "land-office", "--types", "land.*"];
    let printed = stele(dir, &[&add[..], &common[2..]].concat())?.ok()?;
    let token = parse_token(&printed, "land-office")
        .ok_or_else(|| anyhow::anyhow!("no token in `stele agency add` output: {printed}"))?;
    ensure_eq!(printed.trim(), token, "agency add prints the token alone");

    let (status, receipt) = post_record(
        &server.base_url(),
        &token,
        &json!({"type": "land.transfer"}),
    )
    .await?;
    ensure_eq!(status, StatusCode::CREATED, "{receipt}");
    let receipt: Receipt = serde_json::from_value(receipt)?;
    receipt
        .verify(&verifier)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let (status, problem) =
        post_record(&server.base_url(), &token, &json!({"type": "health.x"})).await?;
    ensure_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    check(&server, &vkey, &[receipt]).await?;

    let list = stele(dir, &[&["agency", "list"][..], &common[2..]].concat())?.stdout;
    if !list.contains("land-office\tactive\tland.*") || list.contains(&token) {
        anyhow::bail!("agency list: {list:?}");
    }
    stop(server).await?;
    store.finish().await
}
