//! Slow, idle and surplus connections; bodies that trickle in.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use stele_testkit::store::Backend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{check, deploy, honest_load, proc_stats, tree_size};

/// How long a client may take over its headers (and idle) in these tests.
const HEADER_TIMEOUT: Duration = Duration::from_millis(1500);
const SLOW: usize = 1000;
const IDLE: usize = 1000;
const MAX_CONNECTIONS: usize = 2200;

/// 1,000 connections trickling their headers a byte at a time and 1,000
/// sitting idle fill most of the connection cap while 32 honest clients
/// submit: the honest ones all get receipts, a connection beyond the cap is
/// closed at once, the server's descriptors stay under the cap and its
/// memory bounded, and the header deadline closes every slow and idle
/// connection.
pub async fn slow_and_idle(backend: Backend) -> Result<()> {
    let config = format!(
        "[http]\nheader_read_timeout_ms = {}\nmax_connections = {MAX_CONNECTIONS}\n",
        HEADER_TIMEOUT.as_millis()
    );
    let (_store, deployment) = deploy(backend, &config).await?;
    let server = deployment.start("server").await?;
    let base = server.base_url();
    let addr = server.addr();
    let before = proc_stats(&server)?;

    // The hostile connections.
    let mut hostile = Vec::with_capacity(SLOW + IDLE);
    for i in 0..SLOW + IDLE {
        let mut s = TcpStream::connect(addr)
            .await
            .with_context(|| format!("hostile connection {i}"))?;
        if i < SLOW {
            s.write_all(b"POST /logs/default/records HTTP/1.1\r\nHost: x\r\n")
                .await?;
        }
        hostile.push(s);
    }
    let opened = Instant::now();
    // Keep the slow ones trickling, one header byte every 200 ms each.
    let trickle = tokio::spawn(async move {
        let mut conns = hostile;
        let mut closed = vec![false; conns.len()];
        let started = Instant::now();
        while started.elapsed() < HEADER_TIMEOUT * 3 {
            for (i, c) in conns.iter_mut().enumerate().take(SLOW) {
                if !closed[i] && c.write_all(b"X").await.is_err() {
                    closed[i] = true;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        conns
    });

    // Wait until the server has taken them all (some may still sit in the
    // listen queue), counting its descriptors meanwhile.
    let mut during = proc_stats(&server)?;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = proc_stats(&server)?;
        if now.fds > during.fds {
            during = now;
        }
    }
    // Connections beyond the cap: closed before a byte is read.
    let mut extra: Vec<TcpStream> = Vec::new();
    for _ in 0..(MAX_CONNECTIONS - SLOW - IDLE + 50) {
        extra.push(TcpStream::connect(addr).await?);
    }
    let mut refused = 0;
    for s in &mut extra {
        let mut buf = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await
        {
            refused += 1;
        }
    }
    ensure!(
        refused >= 50,
        "only {refused} connections beyond the cap were closed"
    );
    let with_extra = proc_stats(&server)?;
    if with_extra.fds > during.fds {
        during = with_extra;
    }
    drop(extra);

    // Honest agencies meanwhile.
    let receipts = honest_load(&base, &deployment.token, "honest", 32, 10).await?;
    ensure!(receipts.len() == 320, "{} receipts", receipts.len());

    // Every slow and idle connection is closed by the deadline.
    let mut conns = trickle.await?;
    let deadline = opened + HEADER_TIMEOUT * 3 + Duration::from_secs(2);
    let mut still_open = 0;
    for c in &mut conns {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut buf = [0u8; 512];
        // A closed connection reads EOF (or an error); hyper may first send
        // a 408 answer to a client that was mid-request.
        let closed = loop {
            match tokio::time::timeout(left, c.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break true,
                Ok(Ok(_)) => continue,
                Err(_) => break false,
            }
        };
        if !closed {
            still_open += 1;
        }
    }
    ensure!(
        still_open == 0,
        "{still_open} slow or idle connections still open after the deadline"
    );
    drop(conns);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = proc_stats(&server)?;
    ensure!(
        during.fds <= MAX_CONNECTIONS + 64,
        "{} descriptors with the cap at {MAX_CONNECTIONS}",
        during.fds
    );
    ensure!(
        after.fds <= before.fds + 64,
        "descriptors did not come back: {} before, {} after",
        before.fds,
        after.fds
    );
    // 2,000 connections cost little memory each: far below this bound.
    ensure!(
        after.peak_rss_kib < 256 * 1024,
        "peak RSS {} KiB",
        after.peak_rss_kib
    );
    eprintln!(
        "descriptors {} → {} (during) → {}; RSS {} KiB, peak {} KiB; {refused} surplus connections closed at once",
        before.fds, during.fds, after.fds, after.rss_kib, after.peak_rss_kib
    );
    let http = reqwest::Client::new();
    ensure!(
        tree_size(&http, &base).await? == 320,
        "the log holds other records"
    );
    check(&deployment, &server, &receipts).await
}

/// A body sent a byte at a time is cut off at the body deadline with `408`
/// and appends nothing; an honest client at the same time is answered.
pub async fn trickled_bodies(backend: Backend) -> Result<()> {
    let (_store, deployment) = deploy(backend, "[limits]\nbody_timeout_ms = 1000\n").await?;
    let server = deployment.start("server").await?;
    let base = server.base_url();
    let body = br#"{"type":"hostile.test","subject":"never finished"}"#;
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(server.addr()).await?;
        s.write_all(
            format!(
                "POST /logs/default/records HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                deployment.token,
                body.len()
            )
            .as_bytes(),
        )
        .await?;
        s.write_all(&body[..5]).await?;
        slow.push(s);
    }
    let started = Instant::now();
    let receipts = honest_load(&base, &deployment.token, "honest", 4, 5).await?;
    for mut s in slow {
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer))
            .await
            .context("the trickled body was never cut off")??;
        let text = String::from_utf8_lossy(&answer);
        ensure!(
            text.starts_with("HTTP/1.1 408") && text.contains("urn:stele:problem:request-timeout"),
            "answer to a trickled body: {text}"
        );
    }
    ensure!(started.elapsed() < Duration::from_secs(6), "cut off late");
    let http = reqwest::Client::new();
    ensure!(tree_size(&http, &base).await? == receipts.len() as u64);
    check(&deployment, &server, &receipts).await
}
