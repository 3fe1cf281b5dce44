//! TLS: the service with a certificate from a test CA, the command-line
//! clients through `--ca-file`, a wrong CA refused clearly, plain HTTP on
//! the TLS port refused, and the certificate reloaded on `SIGHUP`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use stele::cli::client::TlsArgs;
use stele_testkit::checker::{HttpView, LogChecker};
use stele_testkit::process::{command, run_async};
use stele_testkit::store::Backend;

use super::{deploy, record, LOG};

/// A CA, and a server certificate for 127.0.0.1 it signed, as PEM files
/// in `dir` named `<tag>-ca.pem`, `<tag>-cert.pem`, `<tag>-key.pem`.
fn make_certs(dir: &Path, tag: &str) -> Result<(PathBuf, PathBuf, PathBuf)> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, format!("Stele test CA {tag}"));
    let ca_cert = ca.self_signed(&ca_key)?;
    let key = KeyPair::generate()?;
    let params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
    let cert = params.signed_by(&key, &ca_cert, &ca_key)?;
    let paths = (
        dir.join(format!("{tag}-ca.pem")),
        dir.join(format!("{tag}-cert.pem")),
        dir.join(format!("{tag}-key.pem")),
    );
    std::fs::write(&paths.0, ca_cert.pem())?;
    std::fs::write(&paths.1, cert.pem())?;
    std::fs::write(&paths.2, key.serialize_pem())?;
    Ok(paths)
}

async fn stele(args: &[&str]) -> Result<stele_testkit::process::Output> {
    run_async(
        command(&stele_testkit::stele_bin!(), args),
        Duration::from_secs(60),
    )
    .await
}

pub async fn tls(backend: Backend) -> Result<()> {
    let certs = tempfile::tempdir()?;
    let (ca, cert, key) = make_certs(certs.path(), "one")?;
    let (other_ca, other_cert, other_key) = make_certs(certs.path(), "two")?;
    // The server reads the files it is configured with; they are replaced
    // in place for the reload below.
    let served_cert = certs.path().join("served-cert.pem");
    let served_key = certs.path().join("served-key.pem");
    std::fs::copy(&cert, &served_cert)?;
    std::fs::copy(&key, &served_key)?;
    let config = format!(
        "[http]\ntls_cert_file = {:?}\ntls_key_file = {:?}\n",
        served_cert.display().to_string(),
        served_key.display().to_string()
    );
    let (_store, mut deployment) = deploy(backend, &config).await?;
    deployment.options.tls_ca = Some(ca.clone());
    let server = deployment.start("server").await?;
    let base = server.base_url();
    ensure!(base.starts_with("https://"), "{base}");
    let log_url = format!("{base}/logs/{LOG}");

    // submit, verify --online and monitor, through the CA file.
    let work = tempfile::tempdir()?;
    let token_file = work.path().join("token");
    std::fs::write(&token_file, &deployment.token)?;
    let record_file = work.path().join("deed.json");
    std::fs::write(&record_file, serde_json::to_vec(&record("tls", 1))?)?;
    let path = |p: &Path| p.display().to_string();
    let out = stele(&[
        "submit",
        "--log",
        &log_url,
        "--token-file",
        &path(&token_file),
        "--ca-file",
        &path(&ca),
        &path(&record_file),
    ])
    .await?;
    ensure!(out.code == 0, "submit over TLS failed:\n{}", out.show());
    let receipt_file = work.path().join("deed.receipt.json");
    ensure!(receipt_file.exists(), "no receipt file:\n{}", out.show());
    let out = stele(&[
        "verify",
        &path(&receipt_file),
        "--vkey",
        &deployment.vkey,
        "--online",
        &log_url,
        "--ca-file",
        &path(&ca),
    ])
    .await?;
    ensure!(
        out.code == 0 && out.stdout.contains("VERIFIED"),
        "verify --online over TLS:\n{}",
        out.show()
    );
    let state = work.path().join("monitor.json");
    let out = stele(&[
        "monitor",
        &log_url,
        "--vkey",
        &deployment.vkey,
        "--state",
        &path(&state),
        "--once",
        "--ca-file",
        &path(&ca),
    ])
    .await?;
    ensure!(out.code == 0, "monitor over TLS:\n{}", out.show());

    // The wrong CA: refused, and the message says what to do.
    let out = stele(&[
        "submit",
        "--log",
        &log_url,
        "--token-file",
        &path(&token_file),
        "--ca-file",
        &path(&other_ca),
        &path(&record_file),
    ])
    .await?;
    ensure!(out.code != 0, "a wrong CA was accepted:\n{}", out.show());
    ensure!(
        out.stderr.contains("certificate") && out.stderr.contains("--ca-file"),
        "the failure does not say what is wrong:\n{}",
        out.show()
    );
    // Plain HTTP on the TLS port gets no answer.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let r = plain
        .get(format!("http://{}/logs", server.addr()))
        .send()
        .await;
    ensure!(
        r.as_ref().map_or(true, |r| !r.status().is_success()),
        "plain HTTP answered on the TLS port"
    );

    // SIGHUP: the new certificate (from the other CA) serves new
    // connections; the old CA no longer verifies them.
    std::fs::copy(&other_cert, &served_cert)?;
    std::fs::copy(&other_key, &served_key)?;
    let pid = server.pid().context("server gone")?.to_string();
    std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()?;
    let client_for = |ca: &Path| -> Result<reqwest::Client> {
        Ok(reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(ca)?)?)
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(5))
            .build()?)
    };
    let mut reloaded = false;
    for _ in 0..50 {
        if client_for(&other_ca)?
            .get(format!("{base}/logs"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ensure!(reloaded, "the certificate was not reloaded on SIGHUP");
    ensure!(
        client_for(&ca)?
            .get(format!("{base}/logs"))
            .send()
            .await
            .is_err(),
        "the old certificate is still served"
    );

    // The log is whole.
    let tls = TlsArgs {
        ca_file: Some(other_ca),
    };
    let view = HttpView::with_tls(&base, LOG, &tls)?;
    let mut checker = LogChecker::new(view, &deployment.vkey)?;
    let receipt: stele_core::receipt::Receipt =
        serde_json::from_slice(&std::fs::read(&receipt_file)?)?;
    checker.add_receipt(&receipt)?;
    checker.check_all().await?;
    Ok(())
}
