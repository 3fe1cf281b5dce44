//! Serving connections: our own accept loop over hyper, because the
//! defaults of `axum::serve` leave a public service open to cheap abuse —
//! no cap on connections, no deadline for a client's request headers, and
//! plain text only. Here:
//!
//! - at most `max_connections` connections at once; one beyond is closed
//!   at once (before any byte is read), so file descriptors stay bounded;
//! - a client must send a request's headers within `header_read_timeout`,
//!   and a kept-alive connection that sends nothing is closed after the
//!   same time (hyper starts the timer whenever it waits for a request);
//! - TLS (rustls), the certificate and key re-read on `SIGHUP` without a
//!   restart, a handshake bounded by the same timeout;
//! - graceful shutdown: stop accepting, let requests in flight finish.
//!
//! Per-request limits (whole-request timeout, in-flight caps with load
//! shedding, quotas) are tower layers on the router (`api::router`).

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

use crate::metrics::Metrics;

/// How connections are accepted and bounded.
#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Longest wait for a request's headers (and, on a kept-alive
    /// connection, for the next request), and for a TLS handshake.
    pub header_read_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

/// Everything [`serve`] needs besides the socket and the router.
#[derive(Clone, Default)]
pub struct ServeOptions {
    pub limits: ConnectionLimits,
    /// TLS on the listener (`None`: plain HTTP, for loopback or behind a
    /// TLS-terminating proxy only).
    pub tls: Option<Tls>,
    /// Where to count open and refused connections.
    pub metrics: Option<Arc<Metrics>>,
}

/// A certificate chain and private key, PEM files.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The server certificate, replaced whole on reload.
#[derive(Debug)]
struct ReloadableCert {
    files: TlsFiles,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadableCert {
    fn load(files: &TlsFiles) -> anyhow::Result<Arc<CertifiedKey>> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
            .with_context(|| format!("reading certificates from {}", files.cert.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("parsing certificates in {}", files.cert.display()))?;
        anyhow::ensure!(
            !certs.is_empty(),
            "{} holds no certificate",
            files.cert.display()
        );
        let key = PrivateKeyDer::from_pem_file(&files.key)
            .with_context(|| format!("reading the private key from {}", files.key.display()))?;
        let provider = rustls::crypto::ring::default_provider();
        let key = CertifiedKey::from_der(certs, key, &provider)
            .with_context(|| format!("the key in {} does not fit", files.key.display()))?;
        Ok(Arc::new(key))
    }

    /// Re-reads both files; on any error the old certificate stays.
    fn reload(&self) {
        match Self::load(&self.files) {
            Ok(k) => {
                *self.current.write().expect("certificate lock") = k;
                tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
            }
            Err(e) => tracing::error!("TLS certificate not reloaded, keeping the old one: {e:#}"),
        }
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().expect("certificate lock").clone())
    }
}

/// A TLS acceptor whose certificate follows its files (see [`Tls::reload`]).
#[derive(Clone)]
pub struct Tls {
    acceptor: tokio_rustls::TlsAcceptor,
    cert: Arc<ReloadableCert>,
}

impl Tls {
    /// Loads the files now: a bad certificate or key stops start-up.
    pub fn new(files: TlsFiles) -> anyhow::Result<Self> {
        let cert = Arc::new(ReloadableCert {
            current: RwLock::new(ReloadableCert::load(&files)?),
            files,
        });
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_cert_resolver(cert.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            cert,
        })
    }

    /// Re-reads the certificate and key (new connections use them).
    pub fn reload(&self) {
        self.cert.reload();
    }

    /// Reloads on every `SIGHUP` until the process exits.
    pub fn reload_on_sighup(&self) {
        #[cfg(unix)]
        {
            let tls = self.clone();
            tokio::spawn(async move {
                use tokio::signal::unix::{signal, SignalKind};
                let Ok(mut hup) = signal(SignalKind::hangup()) else {
                    tracing::error!(
                        "cannot listen for SIGHUP; the TLS certificate will not reload"
                    );
                    return;
                };
                while hup.recv().await.is_some() {
                    tls.reload();
                }
            });
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then stops
/// accepting and waits for the requests in flight. The caller shuts the
/// engine down afterwards.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let ServeOptions {
        limits,
        tls,
        metrics,
    } = options;
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            if let Some(m) = &metrics {
                m.connections_refused.inc();
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = hyper::service::service_fn({
            let router = router.clone();
            move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                router.clone().oneshot(req.map(axum::body::Body::new))
            }
        });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        let header_timeout = limits.header_read_timeout;
        let open = metrics.as_ref().map(|m| m.connections_open.clone());
        tokio::spawn(async move {
            if let Some(g) = &open {
                g.inc();
            }
            let served = match tls {
                None => {
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    watcher.watch(conn).await
                }
                Some(tls) => {
                    match tokio::time::timeout(header_timeout, tls.acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let conn = builder.serve_connection(TokioIo::new(stream), service);
                            watcher.watch(conn).await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, "TLS handshake failed: {e}");
                            Ok(())
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            Ok(())
                        }
                    }
                }
            };
            if let Err(e) = served {
                tracing::debug!(%peer, "connection ended: {e}");
            }
            if let Some(g) = &open {
                g.dec();
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Binds `addr` for [`serve`] (with the error naming the address).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))
}

/// A PEM file exists and is readable (for configuration checks).
pub fn readable(path: &Path) -> anyhow::Result<()> {
    std::fs::metadata(path)
        .map(|_| ())
        .with_context(|| format!("TLS file {} is not readable", path.display()))
}
