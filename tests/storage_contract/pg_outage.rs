//! PostgreSQL only: a database outage, made by cutting a TCP proxy between
//! the storage and the server (the shared server itself is never stopped).

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use sqlx::postgres::PgConnectOptions;
use sqlx::ConnectOptions;
use stele::storage::postgres::{PgOptions, PostgresStorage, FAST_FAIL};
use stele::storage::{LogReader, LogWriter, Storage, StorageError, WriterLock};
use stele_testkit::harness::{TestFn, TestResult};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use super::{acquire_within, Ctx, LOG, ORIGIN};

pub const TESTS: &[(&str, TestFn<Ctx>)] =
    stele_testkit::tests![Ctx: outage_answers_unavailable_then_recovers];

/// A TCP proxy to the database that can be taken down (listener closed,
/// every proxied connection cut) and brought back on the same port.
struct Proxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> anyhow::Result<Self> {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let p = Proxy {
            addr,
            upstream,
            task: Mutex::new(None),
        };
        p.up()?;
        Ok(p)
    }

    fn up(&self) -> anyhow::Result<()> {
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(self.addr)?;
        let listener = socket.listen(64)?;
        let upstream = self.upstream;
        // Dropping this task (on `down`) drops the JoinSet, which aborts
        // every proxied connection.
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                conns.spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        *self.task.lock().unwrap() = Some(task);
        Ok(())
    }

    async fn down(&self) {
        let task = self.task.lock().unwrap().take();
        if let Some(t) = task {
            t.abort();
            let _ = t.await;
        }
    }
}

fn expect_unavailable<T: std::fmt::Debug>(
    what: &str,
    r: stele::storage::Result<T>,
    started: Instant,
    limit: Duration,
) -> anyhow::Result<()> {
    match r {
        Err(StorageError::Unavailable(_)) if started.elapsed() < limit => Ok(()),
        Err(StorageError::Unavailable(_)) => {
            bail!("{what}: Unavailable only after {:?}", started.elapsed())
        }
        r => bail!("{what} during the outage: {r:?}"),
    }
}

async fn outage_answers_unavailable_then_recovers(mut ctx: Ctx) -> TestResult {
    let url = ctx.store.database_url().context("postgres fixture")?;
    let direct = PgConnectOptions::from_str(url)?;
    ensure!(
        !direct.get_host().starts_with('/'),
        "needs a TCP test server, not a socket"
    );
    let upstream = tokio::net::lookup_host((direct.get_host(), direct.get_port()))
        .await?
        .next()
        .context("resolve the test server")?;
    let proxy = Proxy::start(upstream).await?;
    let via_proxy = direct
        .clone()
        .host("127.0.0.1")
        .port(proxy.addr.port())
        .to_url_lossy();
    let opts = PgOptions {
        acquire_timeout: Duration::from_secs(3),
        lease_check_interval: Duration::from_millis(200),
        ..Default::default()
    };
    let s = Arc::new(PostgresStorage::connect(via_proxy.as_str(), opts).await?);
    s.ensure_log(LOG, ORIGIN).await?;
    let lease = s.try_acquire_writer(LOG).await?.context("lease")?;
    ctx.commit(&*s, 10).await?;
    ctx.check(&(s.clone() as Arc<dyn Storage>)).await?;

    proxy.down().await;
    let t = Instant::now();
    // The first caller waits up to `acquire_timeout`; once the outage is
    // known, callers give up after `FAST_FAIL`.
    expect_unavailable("ping", s.ping().await, t, Duration::from_secs(5))?;
    let fast = FAST_FAIL + Duration::from_millis(500);
    let t = Instant::now();
    let p = ctx.log.prepare(5, "a");
    expect_unavailable("commit_batch", s.commit_batch(&p.batch()).await, t, fast)?;
    let t = Instant::now();
    expect_unavailable("log_state", s.log_state(LOG).await, t, fast)?;
    let t = Instant::now();
    expect_unavailable(
        "try_acquire_writer",
        s.try_acquire_writer(LOG).await.map(|l| l.is_some()),
        t,
        Duration::from_secs(5),
    )?;
    let t = Instant::now();
    while lease.is_held() {
        ensure!(
            t.elapsed() < Duration::from_secs(5),
            "lease still held during the outage"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    proxy.up()?;
    let t = Instant::now();
    while let Err(e) = s.ping().await {
        ensure!(
            matches!(e, StorageError::Unavailable(_)),
            "while recovering: {e:?}"
        );
        ensure!(
            t.elapsed() < Duration::from_secs(10),
            "pool did not recover: {e:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The outcome of the failed commit is reloaded, not assumed.
    let size = s.log_state(LOG).await?.context("log")?.tree_size;
    ensure!(
        size == 10,
        "a commit that never reached the server is visible: {size}"
    );
    drop(lease);
    let lease = acquire_within(&*s, Duration::from_secs(5)).await?;
    ensure!(lease.is_held(), "lease after recovery");
    ctx.commit(&*s, 5).await?;
    ensure!(ctx.log.size() == 15);
    ctx.check(&(s.clone() as Arc<dyn Storage>)).await?;
    s.close().await;
    proxy.down().await;
    ctx.finish().await
}
