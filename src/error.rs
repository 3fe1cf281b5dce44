//! [`LogError`]: every engine error, sorted by what the caller must do. The
//! HTTP layer maps each kind to a status and a problem `type` in one place
//! (`api::problem`).

use std::sync::Arc;
use std::time::Duration;

use crate::storage::StorageError;

/// Errors sorted by what the caller must do. Cheap to clone: one failed
/// commit answers every request of its batch with the same error.
#[derive(Clone, Debug, thiserror::Error)]
pub enum LogError {
    /// 400: not UTF-8, not JSON, not a JSON object.
    #[error("{0}")]
    Malformed(String),
    /// 401: missing, unknown or revoked token.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: the agency may not submit this record type.
    #[error("{0}")]
    Forbidden(String),
    /// 404: unknown log, entry, or checkpoint.
    #[error("{0}")]
    NotFound(String),
    /// 413: body, leaf or attributes too large.
    #[error("{0}")]
    TooLarge(String),
    /// 422: a field is invalid (unknown field, wrong type, bad value,
    /// index or size out of range).
    #[error("{field}: {detail}")]
    Invalid { field: String, detail: String },
    /// 422: the record's type is not registered in the log.
    #[error("{0}")]
    UnknownType(String),
    /// 422: records break their type's rules (subject rule or schema);
    /// every violation found, with its JSON Pointer into the request body.
    #[error("{}", describe_violations(.0))]
    Violations(Arc<Vec<crate::registry::Violation>>),
    /// 410: a private record's content was erased; `tombstone` is the
    /// index of the erasure entry.
    #[error("{detail}")]
    Erased { detail: String, tombstone: u64 },
    /// 409: the request conflicts with the log's state (a registry version
    /// that exists already, or that skips one).
    #[error("{0}")]
    Conflict(String),
    /// 429 + Retry-After: the agency is over its quota or its share of the
    /// queue.
    #[error("{detail}")]
    RateLimited {
        detail: String,
        retry_after: Duration,
    },
    /// 503 + Retry-After: the queue is full, or the log is not writable yet.
    #[error("{detail}")]
    Pushback {
        detail: String,
        retry_after: Duration,
    },
    /// 421: a write sent to a read node; `writer` is the writer's URL,
    /// when configured.
    #[error("{detail}")]
    Misdirected {
        detail: String,
        writer: Option<String>,
    },
    /// 503 + Retry-After: the database is unreachable.
    #[error("{0}")]
    Unavailable(String),
    /// 500: a bug or corrupted state; the cause is logged, not shown.
    #[error("internal error")]
    Internal(#[source] Arc<anyhow::Error>),
}

impl LogError {
    pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        LogError::Invalid {
            field: field.into(),
            detail: detail.into(),
        }
    }

    /// A 500 with `cause` for the log.
    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        LogError::Internal(Arc::new(cause.into()))
    }

    /// A 500 whose cause is this message.
    pub fn bug(msg: impl std::fmt::Display) -> Self {
        LogError::internal(anyhow::anyhow!("{msg}"))
    }
}

fn describe_violations(v: &[crate::registry::Violation]) -> String {
    match v {
        [one] => format!("{}: {} ({})", one.pointer, one.detail, one.keyword),
        _ => format!(
            "{} violations of the record type's rules, the first at {}: {}",
            v.len(),
            v.first().map_or("", |f| f.pointer.as_str()),
            v.first().map_or("", |f| f.detail.as_str())
        ),
    }
}

/// What a client is told when the database cannot be reached (the cause
/// goes to the log).
pub const DATABASE_UNAVAILABLE: &str = "database unavailable; retry later";

/// A storage error as the caller must see it: an outage is `Unavailable`
/// (503), anything else `Internal`.
impl From<StorageError> for LogError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Unavailable(m) => {
                // The cause is for the log; clients (anonymous ones too)
                // never see the database's own words.
                tracing::warn!("answering 503: database unavailable: {m}");
                LogError::Unavailable(DATABASE_UNAVAILABLE.into())
            }
            other => LogError::internal(other),
        }
    }
}
