//! Real `stele` processes: one spawner of `stele serve` ([`ServerProcess`])
//! that starts a server on a loopback port, waits until it is ready, stops
//! it with SIGTERM (and its exit status) or `kill -9`, and keeps its
//! standard output and error in files to show when a test fails; one way to
//! run the other commands ([`command`], [`run`], [`run_async`]); a
//! [`Deployment`] (key, configuration, storage, agency) to start servers
//! from; and throwaway PostgreSQL clusters ([`PgCluster`]).
//!
//! Every child gets a clean environment for what decides its storage and
//! configuration (`DATABASE_URL`, `STELE_DATABASE_URL`, `STELE_CONFIG`,
//! `STELE_DATA_DIR` are removed: only the options count) and logs at
//! `info` unless told otherwise. Servers are killed when their handle is
//! dropped, so a failing test never leaves one behind.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};

mod cluster;
mod deployment;
mod witness;

pub use cluster::{free_port, pg_cluster_available, PgCluster};
pub use deployment::{Deployment, DeploymentSpec};
pub use witness::WitnessProcess;

/// The `stele` binary of the test crate that expands it: `STELE_BIN` when
/// set (to test another build), else the one cargo built for the tests.
#[macro_export]
macro_rules! stele_bin {
    () => {
        $crate::process::bin_or(env!("CARGO_BIN_EXE_stele"))
    };
}

/// `STELE_BIN`, or `built`.
pub fn bin_or(built: &str) -> PathBuf {
    std::env::var_os("STELE_BIN")
        .filter(|b| !b.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(built))
}

/// Environment variables a child never inherits: its storage and
/// configuration come from its arguments alone.
const CLEARED_ENV: [&str; 4] = [
    "DATABASE_URL",
    "STELE_DATABASE_URL",
    "STELE_CONFIG",
    "STELE_DATA_DIR",
];

/// `bin args...`, stdin closed, with the cleaned environment and
/// `STELE_LOG=info`.
pub fn command(bin: &Path, args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new(bin);
    command
        .args(args)
        .stdin(Stdio::null())
        .env("STELE_LOG", "info");
    for var in CLEARED_ENV {
        command.env_remove(var);
    }
    command
}

/// What a finished command printed.
#[derive(Clone, Debug)]
pub struct Output {
    /// The exit code (-1 if killed by a signal).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    fn of(o: std::process::Output) -> Self {
        Output {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Exit code and both streams, for failure messages.
    pub fn show(&self) -> String {
        format!(
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }

    /// Its standard output if it exited 0; otherwise an error showing it all.
    pub fn ok(self) -> Result<String> {
        ensure!(self.code == 0, "the command failed: {}", self.show());
        Ok(self.stdout)
    }
}

/// Runs `command` to completion on this thread.
pub fn run(mut command: std::process::Command) -> Result<Output> {
    let program = command.get_program().to_string_lossy().into_owned();
    Ok(Output::of(
        command
            .output()
            .with_context(|| format!("running {program}"))?,
    ))
}

/// Runs `command` to completion without blocking the runtime, for at most
/// `timeout` (then it is killed).
pub async fn run_async(command: std::process::Command, timeout: Duration) -> Result<Output> {
    let mut command = tokio::process::Command::from(command);
    command.kill_on_drop(true);
    let output = tokio::time::timeout(timeout, command.output())
        .await
        .map_err(|_| anyhow!("{command:?} did not finish within {timeout:?}"))??;
    Ok(Output::of(output))
}

/// Finds the vkey (`<origin>+<8 hex>+<base64>`) in the output of `stele keygen`.
pub fn parse_vkey(output: &str, origin: &str) -> Option<String> {
    output.split_whitespace().find_map(|word| {
        let rest = word.strip_prefix(origin)?.strip_prefix('+')?;
        let (id, key) = rest.split_once('+')?;
        (id.len() == 8 && id.chars().all(|c| c.is_ascii_hexdigit()) && !key.is_empty())
            .then(|| word.to_string())
    })
}

/// How to start `stele serve`.
#[derive(Clone, Debug, Default)]
pub struct ServeOptions {
    /// `--data-dir` (SQLite mode).
    pub data_dir: Option<PathBuf>,
    /// `--database-url` (PostgreSQL mode).
    pub database_url: Option<String>,
    /// `--config`.
    pub config: Option<PathBuf>,
    /// Its working directory (relative paths resolve from here).
    pub current_dir: Option<PathBuf>,
    /// More arguments after these.
    pub args: Vec<String>,
    /// More environment variables.
    pub env: Vec<(String, String)>,
    /// The server speaks TLS with a certificate from this CA (PEM): its
    /// URLs are `https://`, and readiness is asked with this CA trusted.
    pub tls_ca: Option<PathBuf>,
}

impl ServeOptions {
    /// `--config`, `--data-dir` and `--database-url` as given: what
    /// another command (`stele agency add`) needs to reach the same storage.
    pub fn storage_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(c) = &self.config {
            args.extend(["--config".to_string(), c.display().to_string()]);
        }
        if let Some(d) = &self.data_dir {
            args.extend(["--data-dir".to_string(), d.display().to_string()]);
        }
        if let Some(u) = &self.database_url {
            args.extend(["--database-url".to_string(), u.clone()]);
        }
        args
    }

    fn command(&self, bin: &Path, addr_file: &Path) -> std::process::Command {
        let mut command = command(bin, &["serve", "--listen", "127.0.0.1:0", "--addr-file"]);
        command
            .arg(addr_file)
            .args(self.storage_args())
            .args(&self.args);
        if let Some(dir) = &self.current_dir {
            command.current_dir(dir);
        }
        for (k, v) in &self.env {
            command.env(k, v);
        }
        command
    }
}

/// A running `stele serve` child process.
pub struct ServerProcess {
    name: String,
    child: Option<Child>,
    addr: SocketAddr,
    tls_ca: Option<PathBuf>,
    // Holds the address file and the output files; removed on drop.
    dir: tempfile::TempDir,
}

impl ServerProcess {
    /// Starts `bin serve --listen 127.0.0.1:0` and waits until it has written
    /// its address and `/readyz` answers 200, for at most `timeout`. On
    /// failure the child is killed and its output is part of the error.
    pub async fn start(
        bin: &Path,
        name: &str,
        options: &ServeOptions,
        timeout: Duration,
    ) -> Result<Self> {
        let server = Self::spawn(bin, name, options, timeout).await?;
        match server.wait_ready(timeout).await {
            Ok(()) => Ok(server),
            Err(e) => Err(e.context(format!(
                "{name} did not become ready; its output:\n{}",
                server.output()
            ))),
        }
    }

    /// Starts the process and waits only until it listens (not until ready).
    pub async fn spawn(
        bin: &Path,
        name: &str,
        options: &ServeOptions,
        timeout: Duration,
    ) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("stele-proc-").tempdir()?;
        let addr_file = dir.path().join("addr");
        let child = options
            .command(bin, &addr_file)
            .stdout(File::create(dir.path().join("stdout"))?)
            .stderr(File::create(dir.path().join("stderr"))?)
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let mut server = ServerProcess {
            name: name.to_string(),
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls_ca: options.tls_ca.clone(),
            dir,
        };
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(text) = std::fs::read_to_string(&addr_file) {
                if text.ends_with('\n') {
                    server.addr = text
                        .trim()
                        .parse()
                        .with_context(|| format!("{name}: address file holds {text:?}"))?;
                    return Ok(server);
                }
            }
            if let Some(status) = server.try_wait()? {
                bail!(
                    "{name} exited with {status} before listening; its output:\n{}",
                    server.output()
                );
            }
            if Instant::now() >= deadline {
                server.kill9();
                bail!(
                    "{name} did not listen within {timeout:?}; its output:\n{}",
                    server.output()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (`https://` when it speaks TLS).
    pub fn base_url(&self) -> String {
        let scheme = if self.tls_ca.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Polls `/readyz` until it answers 200.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        wait_for_with(
            &format!("{}/readyz", self.base_url()),
            self.tls_ca.as_deref(),
            timeout,
        )
        .await
        .with_context(|| format!("{}: not ready", self.name))
    }

    /// Whether the process has exited, without waiting.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(c) => Ok(c.try_wait()?),
            None => Err(anyhow!("{} was already stopped", self.name)),
        }
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.try_wait(), Ok(None))
    }

    /// `kill -9` and reap. Idempotent.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits up to `timeout` for it to exit (the server
    /// finishes the batch in flight) and returns its exit status; `kill -9`
    /// if it takes longer.
    pub async fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let pid = self
            .pid()
            .ok_or_else(|| anyhow!("{} was already stopped", self.name))?;
        let status = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()?;
        ensure!(status.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() >= deadline {
                self.kill9();
                bail!("{} did not exit within {timeout:?} of SIGTERM", self.name);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn read(&self, file: &str) -> String {
        let text = std::fs::read(self.dir.path().join(file)).unwrap_or_default();
        let start = text.len().saturating_sub(64 << 10);
        String::from_utf8_lossy(&text[start..]).into_owned()
    }

    /// What the process wrote to its standard output so far (the last 64 KiB).
    pub fn stdout(&self) -> String {
        self.read("stdout")
    }

    /// What the process wrote to its standard error so far (the last 64 KiB).
    pub fn stderr(&self) -> String {
        self.read("stderr")
    }

    /// Both, standard output first.
    pub fn output(&self) -> String {
        format!("{}{}", self.stdout(), self.stderr())
    }

    /// Prints the process output to stderr, framed by its name.
    pub fn print_output(&self) {
        eprintln!(
            "----- output of {} -----\n{}----- end of {} -----",
            self.name,
            self.output(),
            self.name
        );
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Polls `url` until it answers 200, for at most `timeout`.
pub async fn wait_for(url: &str, timeout: Duration) -> Result<()> {
    wait_for_with(url, None, timeout).await
}

/// [`wait_for`], trusting the CA in the PEM file `ca` too.
pub async fn wait_for_with(url: &str, ca: Option<&Path>, timeout: Duration) -> Result<()> {
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(2));
    if let Some(ca) = ca {
        builder =
            builder.add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(ca)?)?);
    }
    let client = builder.build()?;
    let deadline = Instant::now() + timeout;
    loop {
        let last = match client.get(url).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => format!("{}: {}", r.status(), r.text().await.unwrap_or_default()),
            Err(e) => e.to_string(),
        };
        ensure!(
            Instant::now() < deadline,
            "{url} did not answer 200 within {timeout:?} ({last})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Passes `result` through; on failure prints the output of the servers.
pub fn with_logs<T>(servers: &[&ServerProcess], result: Result<T>) -> Result<T> {
    if result.is_err() {
        for s in servers {
            s.print_output();
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_vkeys() {
        let vkey = "example.org/log+1a2b3c4d+AeN0aW5n";
        assert_eq!(
            parse_vkey(&format!("vkey: {vkey}\n"), "example.org/log").as_deref(),
            Some(vkey)
        );
        assert_eq!(
            parse_vkey("example.org/log+zz+abc", "example.org/log"),
            None
        );
    }
}
