//! A real S3-compatible server for the publishing tests: `s3s-fs` (from
//! crates.io; `.ci/run` installs a pinned version) on a loopback port,
//! storing objects as plain files under a temporary directory — so the
//! bucket's directory is also what a static web server would serve.
//!
//! Where the binary is: `STELE_S3S_FS`, else `s3s-fs` on `PATH`. Without it
//! the trials that need it are reported as not run, or fail under
//! `STELE_REQUIRE_S3=1` (CI).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::process::free_port;

/// Credentials of every test server (loopback only).
pub const ACCESS_KEY: &str = "stele-test-access";
pub const SECRET_KEY: &str = "stele-test-secret-key";

/// Whether the trials needing an S3 server must fail rather than be
/// skipped when it is missing.
pub fn require_s3() -> bool {
    std::env::var("STELE_REQUIRE_S3").is_ok_and(|v| v == "1")
}

/// The `s3s-fs` binary, or why there is none.
pub fn s3s_fs_bin() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("STELE_S3S_FS").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("STELE_S3S_FS={} is not a file", p.display()))
        };
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("s3s-fs"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            "no S3-compatible server: s3s-fs is not on PATH and STELE_S3S_FS is not set \
             (cargo install --locked s3s-fs --version 0.14.1 --features binary)"
                .to_string()
        })
}

/// A running `s3s-fs` with one bucket. Killed on drop; its files go with
/// the temporary directory.
pub struct S3Server {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    bucket: String,
}

impl S3Server {
    /// Starts a server with an empty bucket `bucket`.
    pub async fn start(bucket: &str) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("stele-s3-").tempdir()?;
        std::fs::create_dir_all(dir.path().join("data").join(bucket))?;
        let mut s = S3Server {
            child: None,
            dir,
            port: free_port()?,
            bucket: bucket.to_string(),
        };
        s.restart().await?;
        Ok(s)
    }

    /// Starts the server again (after [`S3Server::stop`]) on the same port
    /// and files.
    pub async fn restart(&mut self) -> Result<()> {
        anyhow::ensure!(self.child.is_none(), "the S3 server is running");
        let bin = s3s_fs_bin().map_err(anyhow::Error::msg)?;
        let log = std::fs::File::create(self.dir.path().join("s3s-fs.log"))?;
        let child = Command::new(&bin)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--access-key",
                ACCESS_KEY,
                "--secret-key",
                SECRET_KEY,
            ])
            .arg(self.root())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("s3s-fs exited with {status}: {}", self.log());
            }
            if Instant::now() > deadline {
                bail!("s3s-fs did not listen within 30 s: {}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the server (its files stay).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// What the server logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("s3s-fs.log")).unwrap_or_default()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The directory holding the buckets.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The bucket's directory: object `k` is the file `k` under it.
    pub fn bucket_dir(&self) -> PathBuf {
        self.root().join(&self.bucket)
    }

    /// The environment a client of this server needs (credentials).
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), SECRET_KEY.into()),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}
