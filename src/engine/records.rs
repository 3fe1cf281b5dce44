//! The records layer: what a submission may contain, and the canonical leaf.
//!
//! A leaf is the RFC 8785 canonical JSON of
//! `{v, agency, type, subject?, content_hash?, attributes?, ts}`.

use crate::engine::LogError;

/// A validated submission (the body of `POST /logs/{log}/records`).
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub r#type: String,
    pub subject: Option<String>,
    pub content_hash: Option<String>,
    /// Canonical JSON of the attributes object.
    pub attributes: Option<String>,
}

/// Parses and validates a request body. Not UTF-8, not JSON or not an
/// object → `Malformed`; unknown fields, wrong types, bad values →
/// `Invalid`; attributes over 8 KiB canonical → `TooLarge`.
pub fn parse_record(body: &[u8]) -> Result<Record, LogError> {
    todo!()
}
