//! RFC 9457 problem documents: the one place where errors become HTTP
//! responses.
//!
//! Every error the API answers with — from the engine ([`LogError`]), from
//! request parsing, from unknown routes and wrong methods — goes through
//! [`Problem`], so clients always get `application/problem+json` with a
//! stable `type` (`urn:stele:problem:<slug>`), never a framework default.

use std::time::Duration;

use crate::engine::LogError;
use crate::wire;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The problems every public read may answer besides its own (for the
/// OpenAPI document).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum ReadProblems {
    /// Malformed query string (`urn:stele:problem:malformed`)
    #[response(status = 400, content_type = "application/problem+json")]
    Malformed(wire::Problem),
    /// Too many requests from this address (`urn:stele:problem:rate-limited`); see Retry-After
    #[response(status = 429, content_type = "application/problem+json")]
    RateLimited(wire::Problem),
    /// Too many reads in flight (`urn:stele:problem:unavailable`); see Retry-After
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(wire::Problem),
}

/// The problems both record submissions may answer besides their own.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum WriteProblems {
    /// Missing, unknown or revoked token (`urn:stele:problem:unauthorized`)
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(wire::Problem),
    /// Unknown log (`urn:stele:problem:not-found`)
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(wire::Problem),
    /// The body did not arrive in time (`urn:stele:problem:request-timeout`)
    #[response(status = 408, content_type = "application/problem+json")]
    Timeout(wire::Problem),
    /// Content type is not application/json (`urn:stele:problem:unsupported-media-type`)
    #[response(status = 415, content_type = "application/problem+json")]
    MediaType(wire::Problem),
    /// Sent to a read node (`urn:stele:problem:read-node`); `writer` names the writer
    #[response(status = 421, content_type = "application/problem+json")]
    ReadNode(wire::Problem),
    /// The agency is over its quota or its share of the queue (`urn:stele:problem:rate-limited`); see Retry-After
    #[response(status = 429, content_type = "application/problem+json")]
    RateLimited(wire::Problem),
    /// Pushback: queue full, too many writes or bodies in flight, log not writable, database unavailable (`urn:stele:problem:unavailable`); see Retry-After
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(wire::Problem),
}

/// An error response under construction.
#[derive(Clone, Debug)]
pub struct Problem {
    status: StatusCode,
    slug: &'static str,
    detail: String,
    field: Option<String>,
    violations: Option<std::sync::Arc<Vec<crate::registry::Violation>>>,
    retry_after: Option<Duration>,
    www_authenticate: bool,
    extension: Option<Extension>,
}

/// The one problem-specific member a problem may carry besides `field`
/// and the violations.
#[derive(Clone, Debug)]
enum Extension {
    /// `erased`: the erasure entry's index.
    Tombstone(u64),
    /// `read-node`: the writer's URL.
    Writer(String),
}

impl Problem {
    fn new(status: StatusCode, slug: &'static str, detail: impl Into<String>) -> Self {
        Problem {
            status,
            slug,
            detail: detail.into(),
            field: None,
            violations: None,
            retry_after: None,
            www_authenticate: false,
            extension: None,
        }
    }

    /// 400: the body is not UTF-8, not JSON or not a JSON object.
    pub fn malformed(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed", detail)
    }

    /// 401 with `WWW-Authenticate: Bearer`.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        let mut p = Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail);
        p.www_authenticate = true;
        p
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", detail)
    }

    pub fn method_not_allowed(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", detail)
    }

    pub fn too_large(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too-large", detail)
    }

    pub fn unsupported_media_type(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            detail,
        )
    }

    /// 422 naming the offending field.
    pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        let mut p = Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-field", detail);
        p.field = Some(field.into());
        p
    }

    /// 422: the record type is not registered in the log.
    pub fn unknown_type(detail: impl Into<String>) -> Self {
        let mut p = Self::new(StatusCode::UNPROCESSABLE_ENTITY, "unknown-type", detail);
        p.field = Some("type".into());
        p
    }

    /// 422: records break their type's rules; `pointer` and `keyword` of
    /// the first violation, `errors` lists them all.
    pub fn violations(v: std::sync::Arc<Vec<crate::registry::Violation>>) -> Self {
        let detail = LogError::Violations(v.clone()).to_string();
        let mut p = Self::new(StatusCode::UNPROCESSABLE_ENTITY, "schema-violation", detail);
        p.violations = Some(v);
        p
    }

    /// 409: conflicts with the log's state.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", detail)
    }

    /// 410: the content was erased by the erasure entry `tombstone`.
    pub fn erased(detail: impl Into<String>, tombstone: u64) -> Self {
        let mut p = Self::new(StatusCode::GONE, "erased", detail);
        p.extension = Some(Extension::Tombstone(tombstone));
        p
    }

    /// 408: the client did not finish its request in time.
    pub fn request_timeout(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::REQUEST_TIMEOUT, "request-timeout", detail)
    }

    /// 429 + `Retry-After`: over a quota or a rate limit.
    pub fn rate_limited(detail: impl Into<String>, retry_after: Duration) -> Self {
        let mut p = Self::new(StatusCode::TOO_MANY_REQUESTS, "rate-limited", detail);
        p.retry_after = Some(retry_after);
        p
    }

    /// 421: a write sent to a read node, naming the writer.
    pub fn read_node(detail: impl Into<String>, writer: Option<String>) -> Self {
        let mut p = Self::new(StatusCode::MISDIRECTED_REQUEST, "read-node", detail);
        p.extension = writer.map(Extension::Writer);
        p
    }

    /// 503 + `Retry-After`.
    pub fn unavailable(detail: impl Into<String>, retry_after: Duration) -> Self {
        let mut p = Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail);
        p.retry_after = Some(retry_after);
        p
    }

    /// 500. The cause chain is logged here; the body says nothing internal.
    pub fn internal(cause: &(dyn std::error::Error + 'static)) -> Self {
        tracing::error!(error = %ErrorChain(cause), "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the cause is in the server log",
        )
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Prefixes the field name (used to point into a bulk request's
    /// `records[i]`).
    pub fn within(mut self, prefix: &str) -> Self {
        self.field = Some(match self.field.take() {
            Some(f) => format!("{prefix}.{f}"),
            None => prefix.to_string(),
        });
        self.detail = format!("{prefix}: {}", self.detail);
        self
    }

    /// The problem `type` URI.
    pub fn type_uri(&self) -> String {
        format!("urn:stele:problem:{}", self.slug)
    }

    pub fn body(&self) -> wire::Problem {
        wire::Problem {
            r#type: self.type_uri(),
            title: self
                .status
                .canonical_reason()
                .unwrap_or("Error")
                .to_string(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            field: self.field.clone(),
            pointer: self
                .violations
                .as_ref()
                .and_then(|v| v.first())
                .map(|v| v.pointer.clone()),
            keyword: self
                .violations
                .as_ref()
                .and_then(|v| v.first())
                .map(|v| v.keyword.clone()),
            errors: self.violations.as_ref().map(|v| v.as_ref().clone()),
            tombstone: match &self.extension {
                Some(Extension::Tombstone(t)) => Some(*t),
                _ => None,
            },
            writer: match &self.extension {
                Some(Extension::Writer(w)) => Some(w.clone()),
                _ => None,
            },
        }
    }
}

/// Retry-After sent when the engine reports a database outage without its
/// own hint.
const UNAVAILABLE_RETRY_AFTER: Duration = Duration::from_secs(1);

impl From<LogError> for Problem {
    fn from(e: LogError) -> Self {
        match e {
            LogError::Malformed(d) => Problem::malformed(d),
            LogError::Unauthorized(d) => Problem::unauthorized(d),
            LogError::Forbidden(d) => Problem::forbidden(d),
            LogError::NotFound(d) => Problem::not_found(d),
            LogError::TooLarge(d) => Problem::too_large(d),
            LogError::Invalid { field, detail } => Problem::invalid(field, detail),
            LogError::UnknownType(d) => Problem::unknown_type(d),
            LogError::Violations(v) => Problem::violations(v),
            LogError::Conflict(d) => Problem::conflict(d),
            LogError::Erased { detail, tombstone } => Problem::erased(detail, tombstone),
            LogError::Misdirected { detail, writer } => Problem::read_node(detail, writer),
            LogError::Pushback {
                detail,
                retry_after,
            } => Problem::unavailable(detail, retry_after),
            LogError::RateLimited {
                detail,
                retry_after,
            } => Problem::rate_limited(detail, retry_after),
            LogError::Unavailable(d) => {
                tracing::warn!(detail = %d, "answering 503: storage unavailable");
                Problem::unavailable(d, UNAVAILABLE_RETRY_AFTER)
            }
            LogError::Internal(cause) => Problem::internal((*cause).as_ref()),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.body()).expect("a problem document always serializes");
        let mut resp = (self.status, body).into_response();
        let headers = resp.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(after) = self.retry_after {
            // Whole seconds, at least 1 (RFC 9110 delay-seconds).
            let secs = after.as_secs_f64().ceil().max(1.0) as u64;
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.www_authenticate {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"stele\""),
            );
        }
        resp
    }
}

/// Displays an error with all its sources: `outer: inner: root`.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushback_carries_retry_after_rounded_up() {
        let p: Problem = LogError::Pushback {
            detail: "queue full".into(),
            retry_after: Duration::from_millis(1500),
        }
        .into();
        let resp = p.into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "2");
        assert_eq!(resp.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
    }

    #[test]
    fn internal_hides_the_cause() {
        let p: Problem = LogError::bug("secret table t_x is corrupt").into();
        let body = p.body();
        assert_eq!(body.status, 500);
        assert!(!body.detail.contains("secret"));
    }

    #[test]
    fn within_prefixes_the_field() {
        let p = Problem::invalid("type", "bad").within("records[3]");
        assert_eq!(p.body().field.as_deref(), Some("records[3].type"));
        let p = Problem::malformed("not an object").within("records[0]");
        assert_eq!(p.body().field.as_deref(), Some("records[0]"));
    }
}
