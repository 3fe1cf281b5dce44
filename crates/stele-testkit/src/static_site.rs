//! A plain static file server over a directory (`tower-http`'s `ServeDir`)
//! on a loopback port: what a web server or a CDN in front of a bucket or a
//! mirror does, for the tests that audit a log from its files alone; and
//! [`files_under`], what such a directory holds.

use std::path::Path;

use anyhow::Result;

/// Serving a directory until dropped.
pub struct StaticSite {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl StaticSite {
    /// Serves `dir` at `http://127.0.0.1:PORT/` (must run on a runtime that
    /// outlives the site).
    pub async fn serve(dir: &Path) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let app = axum::Router::new().fallback_service(tower_http::services::ServeDir::new(dir));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(StaticSite { url, task })
    }

    /// The site's root URL, without a trailing slash.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for StaticSite {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Every file under `dir` (relative path → bytes), skipping dot-files and
/// dot-directories.
pub fn files_under(dir: &Path) -> Result<std::collections::BTreeMap<String, Vec<u8>>> {
    fn walk(
        root: &Path,
        d: &Path,
        out: &mut std::collections::BTreeMap<String, Vec<u8>>,
    ) -> Result<()> {
        for e in std::fs::read_dir(d)? {
            let e = e?;
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out)?;
            } else {
                let rel = p.strip_prefix(root)?.to_string_lossy().replace('\\', "/");
                out.insert(rel, std::fs::read(&p)?);
            }
        }
        Ok(())
    }
    let mut out = std::collections::BTreeMap::new();
    walk(dir, dir, &mut out)?;
    Ok(out)
}
