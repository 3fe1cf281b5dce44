//! Real `stele` processes for the fault-injection suites: start a server on
//! a loopback port, wait until it is ready, stop it gracefully or `kill -9`
//! it, and keep its output in a file to show when a test fails. Children are
//! always killed when their handle is dropped, so a failing test never leaves
//! a server behind.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};

/// How to start `stele serve`.
#[derive(Clone, Debug, Default)]
pub struct ServeOptions {
    /// `--data-dir` (SQLite mode).
    pub data_dir: Option<PathBuf>,
    /// `--database-url` (PostgreSQL mode).
    pub database_url: Option<String>,
    /// `--config`.
    pub config: Option<PathBuf>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
}

/// A running `stele serve` child process.
pub struct ServerProcess {
    name: String,
    child: Option<Child>,
    addr: SocketAddr,
    log_path: PathBuf,
    // Holds the address file and the output log; removed on drop.
    _dir: tempfile::TempDir,
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
        let log_path = dir.path().join("output.log");
        let log = File::create(&log_path)?;
        let mut command = Command::new(bin);
        command
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--addr-file")
            .arg(&addr_file);
        if let Some(d) = &options.data_dir {
            command.arg("--data-dir").arg(d);
        }
        if let Some(u) = &options.database_url {
            command.arg("--database-url").arg(u);
        }
        if let Some(c) = &options.config {
            command.arg("--config").arg(c);
        }
        // Storage comes from the options alone, never from the caller's environment.
        command
            .env_remove("DATABASE_URL")
            .env_remove("STELE_DATABASE_URL");
        for (k, v) in &options.env {
            command.env(k, v);
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        let child = command
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let mut server = ServerProcess {
            name: name.to_string(),
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log_path,
            _dir: dir,
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

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Polls `/readyz` until it answers 200.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let url = format!("{}/readyz", self.base_url());
        let deadline = Instant::now() + timeout;
        loop {
            let last = match client.get(&url).send().await {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => format!("{}: {}", r.status(), r.text().await.unwrap_or_default()),
                Err(e) => e.to_string(),
            };
            ensure!(
                Instant::now() < deadline,
                "{}: /readyz not ready within {timeout:?} ({last})",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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

    /// SIGTERM, then waits up to `timeout` for a clean exit (the server
    /// finishes the batch in flight); `kill -9` if it takes longer.
    pub async fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let pid = self
            .pid()
            .ok_or_else(|| anyhow!("{} was already stopped", self.name))?;
        let status = Command::new("kill")
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

    /// Everything the process wrote to stdout and stderr so far (the last
    /// 64 KiB).
    pub fn output(&self) -> String {
        let text = std::fs::read(&self.log_path).unwrap_or_default();
        let start = text.len().saturating_sub(64 << 10);
        String::from_utf8_lossy(&text[start..]).into_owned()
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

/// Runs `bin args...` to completion (at most `timeout`) and returns its
/// stdout; an error carries the exit status and stderr.
pub async fn run_stele(
    bin: &Path,
    args: &[&str],
    env: &[(String, String)],
    timeout: Duration,
) -> Result<String> {
    let mut command = tokio::process::Command::new(bin);
    command
        .args(args)
        .kill_on_drop(true)
        .stdin(Stdio::null())
        .env_remove("DATABASE_URL")
        .env_remove("STELE_DATABASE_URL");
    for (k, v) in env {
        command.env(k, v);
    }
    let output = tokio::time::timeout(timeout, command.output())
        .await
        .map_err(|_| anyhow!("stele {args:?} did not finish within {timeout:?}"))??;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    ensure!(
        output.status.success(),
        "stele {args:?} failed with {}:\n{stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(stdout)
}

/// Finds the bearer token for `agency` in the output of `stele agency add`:
/// the first word of the form `<agency>.<base64url secret>`.
pub fn parse_token(output: &str, agency: &str) -> Option<String> {
    output
        .split(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == '`')
        .find_map(|word| {
            let secret = word.strip_prefix(agency)?.strip_prefix('.')?;
            let valid = secret.len() >= 32
                && secret
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            valid.then(|| word.to_string())
        })
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

/// Where the PostgreSQL 15 server programs live on Debian-like systems;
/// `STELE_PG_BIN` overrides it.
fn pg_bin(program: &str) -> PathBuf {
    let dir = std::env::var_os("STELE_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/usr/lib/postgresql/15/bin".into());
    dir.join(program)
}

/// A throwaway PostgreSQL cluster: its own data directory (a temporary
/// directory) and its own loopback port, with `fsync` on, started and
/// stopped by the test that owns it. It never touches any other cluster.
/// Dropping it stops it (`-m immediate`) and removes its files.
///
/// When the test runs as root, the server programs run as the `postgres`
/// OS user (PostgreSQL refuses to run as root) through `runuser`.
pub struct PgCluster {
    dir: tempfile::TempDir,
    port: u16,
    run_as_postgres: bool,
}

impl PgCluster {
    /// `initdb` with trust authentication for user `postgres`, then start.
    pub async fn create() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("stele-pgcluster-")
            .tempdir()?;
        let run_as_postgres = is_root();
        if run_as_postgres {
            let status = Command::new("chown")
                .arg("postgres")
                .arg(dir.path())
                .status()?;
            ensure!(
                status.success(),
                "chown postgres {} failed",
                dir.path().display()
            );
        }
        let port = free_port()?;
        let cluster = PgCluster {
            dir,
            port,
            run_as_postgres,
        };
        let data = cluster.data_dir();
        cluster
            .run(
                "initdb",
                &[
                    "-D",
                    path_str(&data)?,
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ],
            )
            .await?;
        cluster.start().await?;
        Ok(cluster)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:PORT/DATABASE`
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// The server's log file contents.
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Starts the server (after [`PgCluster::create`] or [`PgCluster::stop_immediate`])
    /// and waits until it accepts connections.
    pub async fn start(&self) -> Result<()> {
        let data = self.data_dir();
        let log = self.dir.path().join("server.log");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on",
            self.port,
            path_str(self.dir.path())?
        );
        self.run(
            "pg_ctl",
            &[
                "-D",
                path_str(&data)?,
                "-l",
                path_str(&log)?,
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
        .await
        .map(|_| ())
        .map_err(|e| e.context(format!("server log:\n{}", self.server_log())))
    }

    /// Stops the server the hard way (`pg_ctl stop -m immediate`): every
    /// session is cut and the next start runs crash recovery.
    pub async fn stop_immediate(&self) -> Result<()> {
        let data = self.data_dir();
        self.run(
            "pg_ctl",
            &["-D", path_str(&data)?, "-m", "immediate", "-w", "stop"],
        )
        .await
        .map(|_| ())
    }

    async fn run(&self, program: &str, args: &[&str]) -> Result<String> {
        let bin = pg_bin(program);
        let mut command = if self.run_as_postgres {
            let mut c = tokio::process::Command::new("runuser");
            c.arg("-u").arg("postgres").arg("--").arg(&bin);
            c
        } else {
            tokio::process::Command::new(&bin)
        };
        command
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let output = tokio::time::timeout(Duration::from_secs(120), command.output())
            .await
            .map_err(|_| anyhow!("{program} {args:?} timed out"))?
            .with_context(|| format!("running {}", bin.display()))?;
        ensure!(
            output.status.success(),
            "{program} {args:?} failed with {}:\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.data_dir();
        let bin = pg_bin("pg_ctl");
        let mut command = if self.run_as_postgres {
            let mut c = Command::new("runuser");
            c.arg("-u").arg("postgres").arg("--").arg(&bin);
            c
        } else {
            Command::new(&bin)
        };
        let _ = command
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Whether the PostgreSQL server programs this module runs are installed.
pub fn pg_cluster_available() -> Result<(), String> {
    for program in ["initdb", "pg_ctl"] {
        let bin = pg_bin(program);
        if !bin.exists() {
            return Err(format!("{} not found (set STELE_PG_BIN)", bin.display()));
        }
    }
    Ok(())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A loopback TCP port nobody listens on right now.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str()
        .ok_or_else(|| anyhow!("path {} is not UTF-8", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_tokens_in_varied_output() {
        let secret = "A".repeat(43);
        let token = format!("land-registry.{secret}");
        for out in [
            format!("{token}\n"),
            format!("agency land-registry created\ntoken: {token}\n(shown once)\n"),
            format!("{{\"agency\":\"land-registry\",\"token\":\"{token}\"}}"),
        ] {
            assert_eq!(
                parse_token(&out, "land-registry").as_deref(),
                Some(token.as_str()),
                "{out}"
            );
        }
        assert_eq!(parse_token("land-registry.short\n", "land-registry"), None);
        assert_eq!(
            parse_token(&format!("other.{secret}"), "land-registry"),
            None
        );
    }

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
