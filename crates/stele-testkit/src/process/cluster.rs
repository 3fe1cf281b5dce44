//! A throwaway PostgreSQL cluster for the tests that stop and start their
//! database: never the shared test server.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, ensure, Context, Result};

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
        let cluster = Self::empty()?;
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

    /// A streaming replica of `primary` (a hot standby): `pg_basebackup
    /// -R` from it into a directory of its own, started on its own port.
    /// Pause and resume its replay with `pg_wal_replay_pause()` /
    /// `pg_wal_replay_resume()`.
    pub async fn replica_of(primary: &PgCluster) -> Result<Self> {
        let cluster = Self::empty()?;
        let data = cluster.data_dir();
        let port = primary.port.to_string();
        cluster
            .run(
                "pg_basebackup",
                &[
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port,
                    "-U",
                    "postgres",
                    "-D",
                    path_str(&data)?,
                    "-R",
                    "-X",
                    "stream",
                    "--checkpoint=fast",
                    "--no-sync",
                ],
            )
            .await?;
        cluster.start().await?;
        Ok(cluster)
    }

    /// A directory (owned by `postgres` when run as root) and a port.
    fn empty() -> Result<Self> {
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
        Ok(PgCluster {
            dir,
            port: free_port()?,
            run_as_postgres,
        })
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
    for program in ["initdb", "pg_ctl", "pg_basebackup"] {
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
