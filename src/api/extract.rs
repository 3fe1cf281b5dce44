//! Request extractors whose every failure is a [`Problem`], never one of
//! axum's plain-text rejections.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::problem::Problem;
use super::AppState;
use crate::engine::Agency;

/// Largest value accepted for an index or a tree size (the ecosystem's
/// `int64`).
pub const MAX_U63: u64 = (1 << 63) - 1;

/// Path parameters, with rejections mapped to problems.
pub struct PathParams<T>(pub T);

impl<T, S> FromRequestParts<S> for PathParams<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(PathParams(v)),
            Err(e) => Err(Problem::malformed(format!("bad path: {}", e.body_text()))),
        }
    }
}

/// The authenticated agency from `Authorization: Bearer <token>`.
pub struct Bearer(pub Agency);

impl FromRequestParts<AppState> for Bearer {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(Problem::unauthorized("missing Authorization: Bearer token"));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, rest) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Problem::unauthorized("the Authorization header must be `Bearer <token>`")
            })?;
        let agency = state.engine.authenticate(token).await?;
        Ok(Bearer(agency))
    }
}

/// A JSON request body: `Content-Type: application/json` (parameters such as
/// `charset=utf-8` allowed) or `415`; at most the route's body limit (set
/// with `DefaultBodyLimit`) or `413`; all of it within `body_timeout_ms` or
/// `408` (a client trickling its body holds nothing longer). The bytes are
/// handed on unparsed, with their share of the body budget (hold it until
/// the request is done).
pub struct JsonBytes(pub Bytes, pub BodyBudget);

/// Bytes of request bodies that all requests together may hold at once
/// (`limits.max_body_bytes_in_flight`), in KiB. A body takes its share
/// *before* it is read (its `Content-Length`, or the largest body allowed
/// when it has none), so memory is bounded by the budget — not by body
/// size × concurrency — and a request beyond it gets `503` at once.
#[derive(Clone)]
pub struct BodyBudgets(Arc<Semaphore>);

impl BodyBudgets {
    pub fn new(bytes: usize) -> Self {
        BodyBudgets(Arc::new(Semaphore::new(bytes.div_ceil(1024).max(1))))
    }
}

/// A body's share of the budget; released when dropped.
pub struct BodyBudget(#[allow(dead_code)] OwnedSemaphorePermit);

impl FromRequest<AppState> for JsonBytes {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Problem> {
        let ct = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let is_json = ct
            .and_then(|v| v.parse::<mime::Mime>().ok())
            .is_some_and(|m| {
                m.type_() == mime::APPLICATION && m.subtype() == mime::JSON && m.suffix().is_none()
            });
        if !is_json {
            return Err(Problem::unsupported_media_type(match ct {
                Some(ct) => format!("Content-Type must be application/json, not {ct:?}"),
                None => "Content-Type must be application/json".to_string(),
            }));
        }
        let limits = &state.limits;
        let claimed = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(limits.max_bulk_body_bytes)
            .min(limits.max_bulk_body_bytes);
        let kib = u32::try_from(claimed.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
        let deadline = Duration::from_millis(limits.body_timeout_ms);
        let Ok(budget) = state.body_budgets.0.clone().try_acquire_many_owned(kib) else {
            // Read the body and throw it away (a chunk at a time, within the
            // body deadline), so the client gets this answer instead of a
            // broken pipe while it is still sending.
            drain(req, limits.max_bulk_body_bytes, deadline).await;
            return Err(Problem::unavailable(
                "too many request bodies in flight; retry later",
                state.engine.retry_after(),
            ));
        };
        let Ok(read) = tokio::time::timeout(deadline, Bytes::from_request(req, state)).await else {
            return Err(Problem::request_timeout(format!(
                "the request body did not arrive within {deadline:?}"
            )));
        };
        match read {
            Ok(b) => Ok(JsonBytes(b, BodyBudget(budget))),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(Problem::too_large("request body is larger than the limit"))
            }
            Err(e) => Err(Problem::malformed(format!(
                "could not read the body: {}",
                e.body_text()
            ))),
        }
    }
}

/// Reads and drops at most `max` bytes of `req`'s body within `deadline`.
async fn drain(req: Request, max: usize, deadline: Duration) {
    use futures::StreamExt;
    let mut body = req.into_body().into_data_stream();
    let mut seen = 0usize;
    let _ = tokio::time::timeout(deadline, async {
        while let Some(Ok(chunk)) = body.next().await {
            seen += chunk.len();
            if seen > max {
                break;
            }
        }
    })
    .await;
}

/// The query string as decoded pairs, checked against the parameters a
/// route knows: unknown or repeated parameters are `422`.
pub struct QueryPairs(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Problem> {
        let raw = parts.uri.query().unwrap_or("");
        serde_urlencoded::from_str::<Vec<(String, String)>>(raw)
            .map(QueryPairs)
            .map_err(|e| Problem::malformed(format!("bad query string: {e}")))
    }
}

impl QueryPairs {
    /// Checks that only `allowed` parameters appear, each at most once.
    pub fn only(&self, allowed: &[&str]) -> Result<(), Problem> {
        for (i, (k, _)) in self.0.iter().enumerate() {
            if !allowed.contains(&k.as_str()) {
                return Err(Problem::invalid(
                    k.clone(),
                    format!("unknown query parameter (known: {})", allowed.join(", ")),
                ));
            }
            if self.0[..i].iter().any(|(k2, _)| k2 == k) {
                return Err(Problem::invalid(
                    k.clone(),
                    "query parameter given more than once",
                ));
            }
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// An optional index or size parameter.
    pub fn u63(&self, name: &str) -> Result<Option<u64>, Problem> {
        self.get(name).map(|v| parse_u63(name, v)).transpose()
    }

    /// An optional hex leaf hash parameter.
    pub fn hash(&self, name: &str) -> Result<Option<stele_core::Hash>, Problem> {
        self.get(name).map(|v| parse_hash(name, v)).transpose()
    }
}

/// A decimal index or size below 2^63: digits only (no sign, no spaces).
pub fn parse_u63(field: &str, s: &str) -> Result<u64, Problem> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Problem::invalid(
            field,
            format!("{field} must be a non-negative decimal integer, got {s:?}"),
        ));
    }
    match s.parse::<u64>() {
        Ok(n) if n <= MAX_U63 => Ok(n),
        _ => Err(Problem::invalid(
            field,
            format!("{field} must be below 2^63"),
        )),
    }
}

/// A 64-digit hex SHA-256 hash.
pub fn parse_hash(field: &str, s: &str) -> Result<stele_core::Hash, Problem> {
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Problem::invalid(
            field,
            format!("{field} must be 64 hex digits"),
        ));
    }
    stele_core::Hash::from_hex(s).map_err(|e| Problem::invalid(field, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(parse_u63("i", "0").unwrap(), 0);
        assert_eq!(parse_u63("i", "9223372036854775807").unwrap(), MAX_U63);
        for bad in [
            "",
            "-1",
            "+1",
            " 1",
            "1e3",
            "0x10",
            "9223372036854775808",
            "18446744073709551616",
            "1.0",
        ] {
            let p = parse_u63("i", bad).unwrap_err();
            assert_eq!(p.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad:?}");
            assert_eq!(p.body().field.as_deref(), Some("i"));
        }
    }

    #[test]
    fn hashes() {
        assert!(parse_hash("h", &"ab".repeat(32)).is_ok());
        for bad in [
            "",
            "zz",
            &"ab".repeat(31),
            &"g0".repeat(32),
            &"ab".repeat(33),
        ] {
            assert_eq!(
                parse_hash("h", bad).unwrap_err().status(),
                StatusCode::UNPROCESSABLE_ENTITY
            );
        }
    }

    #[test]
    fn query_rules() {
        let q = QueryPairs(vec![
            ("index".into(), "1".into()),
            ("index".into(), "2".into()),
        ]);
        assert_eq!(
            q.only(&["index"]).unwrap_err().body().field.as_deref(),
            Some("index")
        );
        let q = QueryPairs(vec![("foo".into(), "1".into())]);
        assert_eq!(
            q.only(&["index"]).unwrap_err().body().field.as_deref(),
            Some("foo")
        );
    }
}
