//! What `submit`, `verify --online` and `monitor` share: a small client for
//! one log's public HTTP surface, problem-document messages, verifier keys,
//! and running async code from the synchronous command entry points.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use stele_core::note::Verifier;
use stele_core::tile::{TileId, TilePath};
use stele_core::Hash;

use crate::wire;

/// Runs a future to completion on a fresh current-thread runtime (on its
/// own thread when called from inside a runtime, where blocking is not
/// allowed).
pub fn block_on<F>(fut: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    let run = move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("building a tokio runtime")
            .block_on(fut)
    };
    if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::scope(|s| s.spawn(run).join().expect("runtime thread panicked"))
    } else {
        run()
    }
}

/// The verifier key from `--vkey` or `--vkey-file` (exactly one).
pub fn load_verifier(vkey: Option<&str>, vkey_file: Option<&Path>) -> anyhow::Result<Verifier> {
    let text = match (vkey, vkey_file) {
        (Some(k), None) => k.to_string(),
        (None, Some(f)) => {
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?
        }
        (Some(_), Some(_)) => bail!("give either --vkey or --vkey-file, not both"),
        (None, None) => {
            bail!("a verifier key is needed: --vkey <origin>+<key id>+<base64> or --vkey-file FILE")
        }
    };
    let text = text.trim();
    Verifier::from_vkey(text).map_err(|e| anyhow!("verifier key {text:?}: {e}"))
}

/// The log key and the witness policy of a verifier (`--vkey`/`--vkey-file`,
/// `--policy FILE`): without a key, the key is the policy's one `log`
/// line; with both, the policy must name the key.
pub fn load_log_key(
    vkey: Option<&str>,
    vkey_file: Option<&Path>,
    policy_file: Option<&Path>,
) -> anyhow::Result<(Verifier, Option<stele_core::policy::Policy>)> {
    let policy = match policy_file {
        Some(path) => {
            let text =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            Some(stele_core::policy::Policy::parse(&text).map_err(|e| {
                anyhow!(
                    "witness policy {} line {}: {}",
                    path.display(),
                    e.line,
                    e.message
                )
            })?)
        }
        None => None,
    };
    let verifier = match (vkey, vkey_file, &policy) {
        (None, None, Some(p)) => match p.logs() {
            [one] => one.verifier.clone(),
            [] => bail!("the witness policy has no `log` line: give the log's key with --vkey"),
            _ => bail!("the witness policy names several logs: choose one with --vkey"),
        },
        _ => load_verifier(vkey, vkey_file)?,
    };
    if let Some(p) = &policy {
        anyhow::ensure!(
            p.logs()
                .iter()
                .any(|l| l.verifier.vkey() == verifier.vkey()),
            "the witness policy does not name the log key {}",
            describe_key(&verifier)
        );
    }
    Ok((verifier, policy))
}

/// How a verifier names the log it trusts: its key, and the witness
/// policy its checkpoints must meet (shared by `verify`, `monitor` and
/// `mirror`).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct LogKeyArgs {
    /// The log's verifier key, `<origin>+<key id>+<base64>`.
    #[arg(long)]
    pub vkey: Option<String>,
    /// A file holding the verifier key.
    #[arg(long, value_name = "FILE")]
    pub vkey_file: Option<PathBuf>,
    /// A witness policy (C2SP tlog-policy) to require: every checkpoint
    /// checked must carry valid cosignatures of its quorum, or it fails.
    /// Without --vkey, the log key is the policy's `log` line.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
}

impl LogKeyArgs {
    /// The key and the policy ([`load_log_key`]).
    pub fn load(&self) -> anyhow::Result<(Verifier, Option<stele_core::policy::Policy>)> {
        load_log_key(
            self.vkey.as_deref(),
            self.vkey_file.as_deref(),
            self.policy.as_deref(),
        )
    }
}

/// Checks a checkpoint note under a witness policy: `Ok` names the
/// witnesses whose cosignatures verified (with when they cosigned).
pub fn check_quorum(policy: &stele_core::policy::Policy, note: &str) -> Result<String, String> {
    let w = policy.verify(note).map_err(|e| e.to_string())?;
    let names: Vec<String> = w
        .cosignatures
        .iter()
        .map(|(name, c)| {
            let when = chrono::DateTime::from_timestamp(c.timestamp as i64, 0)
                .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
                .unwrap_or_else(|| c.timestamp.to_string());
            format!("{name} at {when}")
        })
        .collect();
    Ok(format!("cosigned by {}", names.join(", ")))
}

/// `name (key id 1a2b3c4d)`.
pub fn describe_key(v: &Verifier) -> String {
    format!("{} (key id {:08x})", v.name(), v.key_id())
}

/// A one-line message for an HTTP error answer: the problem document's
/// `title`, `detail` (and `field`) when there is one, the raw body otherwise.
pub fn problem_message(
    status: reqwest::StatusCode,
    retry_after: Option<&str>,
    body: &[u8],
) -> String {
    let mut msg = format!("HTTP {status}");
    match serde_json::from_slice::<wire::Problem>(body) {
        Ok(p) => {
            let present = |s: &str| (!s.is_empty()).then(|| s.to_string());
            if let Some(t) = present(&p.title) {
                msg.push_str(&format!(": {t}"));
            }
            if let Some(f) = p.field {
                msg.push_str(&format!(" [field {f}]"));
            }
            if let Some(d) = present(&p.detail) {
                msg.push_str(&format!(" — {d}"));
            }
            if let Some(t) = present(&p.r#type) {
                msg.push_str(&format!(" ({t})"));
            }
        }
        _ => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if !text.is_empty() {
                let cut: String = text.chars().take(300).collect();
                msg.push_str(&format!(": {cut}"));
            }
        }
    }
    if let Some(r) = retry_after {
        msg.push_str(&format!("; retry after {r} s"));
    }
    msg
}

/// A request error with its causes (so a TLS failure says which
/// certificate check failed, and hints at `--ca-file`).
fn describe_send_error(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    let mut tls = false;
    while let Some(s) = source {
        let text = s.to_string();
        tls |= text.contains("certificate") || text.contains("UnknownIssuer");
        msg.push_str(&format!(": {text}"));
        source = s.source();
    }
    if tls {
        msg.push_str(" (the server's certificate is not trusted: give its CA with --ca-file)");
    }
    msg
}

/// Why a fetch failed: the log answered 404, or anything else.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0}: not found")]
    NotFound(String),
    #[error("{0}")]
    Other(String),
}

/// An agency's bearer token from `--token` / `STELE_TOKEN` or
/// `--token-file`.
pub fn read_token(token: Option<&str>, file: Option<&Path>) -> anyhow::Result<String> {
    match (token, file) {
        (Some(t), _) => Ok(t.trim().to_string()),
        (None, Some(f)) => Ok(std::fs::read_to_string(f)
            .with_context(|| format!("reading the token file {}", f.display()))?
            .trim()
            .to_string()),
        (None, None) => bail!("an agency token is needed: --token-file FILE, or STELE_TOKEN"),
    }
}

/// A client for one log, addressed by its base URL (`https://host/logs/NAME`).
#[derive(Clone)]
pub struct LogClient {
    http: reqwest::Client,
    base: String,
}

/// An agency acting on a log: its URL, the agency's token and TLS (shared
/// by `submit`, `fetch`, `erase`, `disclose`).
#[derive(Debug, clap::Args)]
pub struct AgencyArgs {
    /// The log's URL, e.g. `http://127.0.0.1:8080/logs/default`.
    #[arg(long, value_name = "URL")]
    pub log: String,
    /// The agency's bearer token (`<agency>.<secret>`), also from
    /// `STELE_TOKEN`. Prefer `--token-file` or the environment: a token on
    /// the command line is visible to other users in `ps`.
    #[arg(
        long,
        env = "STELE_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    pub token: Option<String>,
    /// A file holding the agency's bearer token.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    #[command(flatten)]
    pub tls: TlsArgs,
}

impl AgencyArgs {
    /// The token and a client for the log.
    pub fn connect(&self) -> anyhow::Result<(String, LogClient)> {
        let token = read_token(self.token.as_deref(), self.token_file.as_deref())?;
        Ok((token, LogClient::with_tls(&self.log, &self.tls)?))
    }
}

/// How the commands reach a log over TLS (`--ca-file`), shared by
/// `submit`, `verify --online` and `monitor`.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct TlsArgs {
    /// Also trust the certificates of this PEM file (a private CA, or the
    /// server's own self-signed certificate) for `https://` URLs.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

impl LogClient {
    /// A client trusting the system's usual roots.
    pub fn new(base: &str) -> anyhow::Result<Self> {
        Self::with_tls(base, &TlsArgs::default())
    }

    /// A client that also trusts `tls.ca_file`.
    pub fn with_tls(base: &str, tls: &TlsArgs) -> anyhow::Result<Self> {
        let base = base.trim_end_matches('/').to_string();
        let parsed = reqwest::Url::parse(&base).with_context(|| format!("log URL {base:?}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            bail!("log URL {base:?}: only http and https are supported");
        }
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("stele/", env!("CARGO_PKG_VERSION")));
        if let Some(file) = &tls.ca_file {
            let pem = std::fs::read(file)
                .with_context(|| format!("reading the CA file {}", file.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("{} is not a PEM certificate file", file.display()))?;
            if certs.is_empty() {
                bail!("{} holds no certificate", file.display());
            }
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let http = builder.build()?;
        Ok(LogClient { http, base })
    }

    /// POSTs a JSON `body` under the log with a bearer token; any answer
    /// (status, `Retry-After`, body) is returned, errors only when no answer
    /// came.
    pub async fn post_json(
        &self,
        rel: &str,
        token: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<(reqwest::StatusCode, Option<String>, bytes::Bytes)> {
        let req = self
            .http
            .post(self.url(rel))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        self.authed("POST", rel, token, req).await
    }

    /// Sends `req` (to `rel` under the log) with a bearer token; answers as
    /// [`LogClient::post_json`] does.
    pub async fn authed(
        &self,
        method: &str,
        rel: &str,
        token: &str,
        req: reqwest::RequestBuilder,
    ) -> anyhow::Result<(reqwest::StatusCode, Option<String>, bytes::Bytes)> {
        let url = self.url(rel);
        let resp = req
            .timeout(Duration::from_secs(120))
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| anyhow!("{method} {url}: {}", describe_send_error(&e)))?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = resp
            .bytes()
            .await
            .with_context(|| format!("{method} {url}"))?;
        Ok((status, retry_after, bytes))
    }

    /// The HTTP client (to build a request for [`LogClient::authed`]).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn url(&self, rel: &str) -> String {
        format!("{}/{}", self.base, rel.trim_start_matches('/'))
    }

    /// GETs `rel` under the log; non-2xx answers are errors.
    pub async fn get(&self, rel: &str) -> Result<bytes::Bytes, FetchError> {
        let url = self.url(rel);
        let resp =
            self.http.get(&url).send().await.map_err(|e| {
                FetchError::Other(format!("GET {url}: {}", describe_send_error(&e)))
            })?;
        let status = resp.status();
        let retry = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp
            .bytes()
            .await
            .map_err(|e| FetchError::Other(format!("GET {url}: {e}")))?;
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(FetchError::NotFound(format!("GET {url}")));
        }
        if !status.is_success() {
            return Err(FetchError::Other(format!(
                "GET {url}: {}",
                problem_message(status, retry.as_deref(), &body)
            )));
        }
        Ok(body)
    }

    /// GETs `rel` under the log and parses its JSON as `T`.
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, rel: &str) -> anyhow::Result<T> {
        let body = self.get(rel).await?;
        serde_json::from_slice(&body)
            .with_context(|| format!("GET {}: not the expected JSON", self.url(rel)))
    }

    /// The latest checkpoint note (`<base>/checkpoint`), unverified.
    pub async fn checkpoint(&self) -> anyhow::Result<String> {
        let body = self.get("checkpoint").await?;
        String::from_utf8(body.to_vec())
            .map_err(|_| anyhow!("GET {}: checkpoint is not UTF-8", self.url("checkpoint")))
    }

    /// A consistency proof from `from` to `to` (unverified).
    pub async fn consistency(&self, from: u64, to: u64) -> anyhow::Result<Vec<Hash>> {
        Ok(self.consistency_answer(from, to).await?.consistency_proof)
    }

    /// A consistency proof from `from` to `to` (unverified): from the
    /// log's proof API, or, where there is none (a plain tlog-tiles log: a
    /// bucket, a mirror, another implementation), computed from its hash
    /// tiles.
    pub async fn consistency_any(&self, from: u64, to: u64) -> anyhow::Result<Vec<Hash>> {
        match self.consistency(from, to).await {
            Ok(p) => Ok(p),
            Err(api) => self.consistency_from_tiles(from, to).await.map_err(|tiles| {
                anyhow!("no consistency proof: from the proof API: {api:#}; from the tiles: {tiles:#}")
            }),
        }
    }

    /// A consistency proof from `from` to `to` computed with the core from
    /// the tiles of the tree of `to` leaves (unverified: the tiles are the
    /// server's word, like any proof).
    pub async fn consistency_from_tiles(&self, from: u64, to: u64) -> anyhow::Result<Vec<Hash>> {
        use stele_core::merkle::prove_consistency;
        use stele_core::tile::{TileHashReader, TileMap, TileWants};
        let wanted = TileWants::default();
        if let Ok(p) = prove_consistency(from, to, &TileHashReader::new(to, &wanted)) {
            return Ok(p);
        }
        let mut fetched = TileMap::default();
        for t in wanted.into_wanted() {
            fetched.insert(t, self.tile(TilePath::Hash(t)).await?);
        }
        Ok(prove_consistency(
            from,
            to,
            &TileHashReader::new(to, &fetched),
        )?)
    }

    /// The log's whole answer for a consistency proof from `from` to `to`
    /// (unverified).
    pub async fn consistency_answer(
        &self,
        from: u64,
        to: u64,
    ) -> anyhow::Result<wire::Consistency> {
        self.get_json(&format!("proofs/consistency?from={from}&to={to}"))
            .await
    }

    /// The log's answer for an inclusion proof of entry `index` in the tree
    /// of `tree_size` (unverified).
    pub async fn inclusion(&self, index: u64, tree_size: u64) -> anyhow::Result<wire::Inclusion> {
        self.get_json(&format!(
            "proofs/inclusion?index={index}&tree_size={tree_size}"
        ))
        .await
    }

    /// Entry `index` (unverified).
    pub async fn entry(&self, index: u64) -> anyhow::Result<wire::Entry> {
        self.get_json(&format!("entries/{index}")).await
    }

    /// A hash tile or entry bundle at exactly the width asked. When a
    /// partial tile is gone (the log grew and the server serves only the
    /// wider version), the full tile is fetched and cut down: tiles only grow
    /// at the end.
    pub async fn tile(&self, path: TilePath) -> Result<Vec<u8>, FetchError> {
        match self.get(&path.to_path()).await {
            Ok(b) => Ok(b.to_vec()),
            Err(FetchError::NotFound(what)) => {
                let (id, entries) = match path {
                    TilePath::Hash(id) => (id, false),
                    TilePath::Entries(id) => (id, true),
                };
                if id.is_full() {
                    return Err(FetchError::NotFound(what));
                }
                let full = TileId::new(id.level, id.index, 256);
                let full_path = if entries {
                    TilePath::Entries(full)
                } else {
                    TilePath::Hash(full)
                };
                let data = self.get(&full_path.to_path()).await?.to_vec();
                Ok(truncate_tile(&data, id.width, entries).map_err(FetchError::Other)?)
            }
            Err(e) => Err(e),
        }
    }
}

/// Cuts a wider tile (or bundle) down to its first `width` hashes (leaves).
fn truncate_tile(data: &[u8], width: u16, entries: bool) -> Result<Vec<u8>, String> {
    let width = usize::from(width);
    if !entries {
        let want = width * 32;
        if data.len() < want {
            return Err(format!("hash tile has {} bytes, need {want}", data.len()));
        }
        return Ok(data[..want].to_vec());
    }
    let mut pos = 0;
    for _ in 0..width {
        if pos + 2 > data.len() {
            return Err("entry bundle is shorter than expected".into());
        }
        let len = usize::from(u16::from_be_bytes([data[pos], data[pos + 1]]));
        pos += 2 + len;
        if pos > data.len() {
            return Err("entry bundle is truncated".into());
        }
    }
    Ok(data[..pos].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_bundles_and_tiles() {
        let bundle = [0u8, 1, b'a', 0, 2, b'b', b'c', 0, 0];
        assert_eq!(truncate_tile(&bundle, 2, true).unwrap(), &bundle[..7]);
        assert!(truncate_tile(&bundle[..5], 2, true).is_err());
        let tile = [7u8; 96];
        assert_eq!(truncate_tile(&tile, 2, false).unwrap().len(), 64);
        assert!(truncate_tile(&tile, 4, false).is_err());
    }

    #[test]
    fn problem_messages_show_title_and_detail() {
        let body = br#"{"type":"urn:stele:problem:invalid-field","title":"Invalid field","detail":"type: must be dotted lowercase","field":"type","status":422}"#;
        let m = problem_message(reqwest::StatusCode::UNPROCESSABLE_ENTITY, None, body);
        assert!(m.contains("Invalid field"), "{m}");
        assert!(m.contains("must be dotted lowercase"), "{m}");
        assert!(m.contains("[field type]"), "{m}");
        let m = problem_message(reqwest::StatusCode::SERVICE_UNAVAILABLE, Some("2"), b"busy");
        assert!(m.contains("busy") && m.contains("retry after 2"), "{m}");
    }
}
