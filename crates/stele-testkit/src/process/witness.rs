//! A real `stele witness serve` child process (the one spawner of it, for
//! the witness suite and the federation suite): started from a
//! configuration file, listening on the address given (port 0: any), its
//! output kept in a file to show when a test fails, killed with `kill -9`
//! by [`WitnessProcess::kill9`] or when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

/// The witness's crash-window pause (see `stele::witness::TEST_PAUSE_ENV`):
/// never inherited, only set by a test that means it.
const PAUSE_ENV: &str = "STELE_WITNESS_TEST_PAUSE_AFTER_WRITE_MS";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A running `stele witness serve`.
pub struct WitnessProcess {
    child: Option<Child>,
    addr: String,
    log_path: PathBuf,
}

impl WitnessProcess {
    /// Starts `bin witness serve --config CONFIG --listen LISTEN` with its
    /// files (address file, output) in `dir`, and waits until `/healthz`
    /// answers.
    pub async fn start(
        bin: &Path,
        config: &Path,
        dir: &Path,
        listen: &str,
        env: &[(&str, &str)],
    ) -> Result<Self> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let addr_file = dir.join(format!("addr-{n}"));
        let log_path = dir.join(format!("witness-{n}.log"));
        let log = std::fs::File::create(&log_path)?;
        let mut cmd = Command::new(bin);
        cmd.args(["witness", "serve", "--config"])
            .arg(config)
            .args(["--listen", listen, "--addr-file"])
            .arg(&addr_file)
            .env_remove("STELE_WITNESS_DATABASE_URL")
            .env_remove(PAUSE_ENV)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().context("spawning stele witness serve")?;
        let mut p = WitnessProcess {
            child: Some(child),
            addr: String::new(),
            log_path,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(&addr_file) {
                if text.ends_with('\n') {
                    p.addr = text.trim().to_string();
                    break;
                }
            }
            if let Some(status) = p.child.as_mut().expect("running").try_wait()? {
                bail!("witness exited with {status}: {}", p.output());
            }
            ensure!(
                Instant::now() < deadline,
                "witness did not listen: {}",
                p.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let health = reqwest::Client::new()
            .get(format!("{}/healthz", p.url()))
            .send()
            .await?;
        ensure!(health.status() == 200, "healthz {}", health.status());
        Ok(p)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What it printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// `kill -9`, and waits for it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for WitnessProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}
