//! Agencies: bearer tokens, their verification, and record-type patterns.
//!
//! A token is `<agency>.<secret>` where the secret is 32 random bytes in
//! base64url without padding. Only SHA-256 of the 32 secret bytes is stored.
//! Verification compares hashes in constant time and gives the same answer
//! for an unknown agency, a wrong secret and a revoked agency.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::engine::records::MAX_AGENCY_LEN;
use crate::engine::{Agency, LogError};
use crate::storage::{Storage, StorageError};

const BAD_TOKEN: &str = "unknown, revoked or malformed token";

/// A fresh token for `agency` and the hash to store for it.
pub fn new_token(agency: &str) -> (String, [u8; 32]) {
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let token = format!("{agency}.{}", URL_SAFE_NO_PAD.encode(secret));
    (token, Sha256::digest(secret).into())
}

/// Agency names: `[a-z0-9-]+`, at most 64 characters.
pub fn valid_agency_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_AGENCY_LEN
        && name
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-'))
}

/// Whether `patterns` allow record type `t`. Patterns: `*` (everything),
/// `prefix.*` (every type under `prefix.`), or an exact type. No patterns at
/// all also allows everything (the storage contract's "empty = all").
pub fn type_allowed(patterns: &[String], t: &str) -> bool {
    patterns.is_empty()
        || patterns.iter().any(|p| {
            if p == "*" {
                true
            } else if let Some(prefix) = p.strip_suffix(".*") {
                t.len() > prefix.len() + 1
                    && t.starts_with(prefix)
                    && t.as_bytes()[prefix.len()] == b'.'
            } else {
                p == t
            }
        })
}

/// Verifies tokens against storage, remembering good answers for a while.
pub(crate) struct Authenticator {
    storage: Arc<dyn Storage>,
    ttl: Duration,
    /// SHA-256 of the whole token → (agency, when it was checked).
    cache: quick_cache::sync::Cache<[u8; 32], (Agency, Instant)>,
}

impl Authenticator {
    pub(crate) fn new(storage: Arc<dyn Storage>, ttl: Duration) -> Self {
        Authenticator {
            storage,
            ttl,
            cache: quick_cache::sync::Cache::new(10_000),
        }
    }

    pub(crate) async fn authenticate(&self, token: &str) -> Result<Agency, LogError> {
        let token_key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if !self.ttl.is_zero() {
            if let Some((agency, at)) = self.cache.get(&token_key) {
                if at.elapsed() < self.ttl {
                    return Ok(agency);
                }
                self.cache.remove(&token_key);
            }
        }
        let (name, secret) = token
            .split_once('.')
            .ok_or_else(|| LogError::Unauthorized(BAD_TOKEN.into()))?;
        if !valid_agency_name(name) {
            return Err(LogError::Unauthorized(BAD_TOKEN.into()));
        }
        let secret = match URL_SAFE_NO_PAD.decode(secret) {
            Ok(s) if s.len() == 32 => s,
            _ => return Err(LogError::Unauthorized(BAD_TOKEN.into())),
        };
        let presented: [u8; 32] = Sha256::digest(&secret).into();
        let record = self.storage.agency(name).await.map_err(storage_error)?;
        // Compare against something even when the agency is unknown, so the
        // two failures cost the same.
        let stored = record.as_ref().map_or([0xa5; 32], |r| r.token_hash);
        let matches: bool = presented.ct_eq(&stored).into();
        match record {
            Some(r) if matches && !r.revoked => {
                let agency = Agency {
                    name: r.name,
                    types: r.types,
                };
                if !self.ttl.is_zero() {
                    self.cache
                        .insert(token_key, (agency.clone(), Instant::now()));
                }
                Ok(agency)
            }
            _ => Err(LogError::Unauthorized(BAD_TOKEN.into())),
        }
    }
}

fn storage_error(e: StorageError) -> LogError {
    match e {
        StorageError::Unavailable(m) => LogError::Unavailable(format!("database unavailable: {m}")),
        other => LogError::Internal(other.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_the_documented_shape() {
        let (token, hash) = new_token("land-registry");
        let (name, secret) = token.split_once('.').unwrap();
        assert_eq!(name, "land-registry");
        let bytes = URL_SAFE_NO_PAD.decode(secret).unwrap();
        assert_eq!(bytes.len(), 32);
        assert_eq!(<[u8; 32]>::from(Sha256::digest(&bytes)), hash);
        assert_ne!(new_token("x").0, new_token("x").0);
    }

    #[test]
    fn type_patterns() {
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(type_allowed(&p(&[]), "land.transfer"));
        assert!(type_allowed(&p(&["*"]), "land.transfer"));
        assert!(type_allowed(&p(&["land.*"]), "land.transfer"));
        assert!(type_allowed(&p(&["land.*"]), "land.transfer.partial"));
        assert!(!type_allowed(&p(&["land.*"]), "landx.transfer"));
        assert!(!type_allowed(&p(&["land.*"]), "land"));
        assert!(type_allowed(
            &p(&["health.vaccination", "land.transfer"]),
            "land.transfer"
        ));
        assert!(!type_allowed(&p(&["land.transfer"]), "land.transfers"));
        assert!(!type_allowed(&p(&["health.*"]), "land.transfer"));
    }

    #[test]
    fn agency_names() {
        assert!(valid_agency_name("land-registry-2"));
        assert!(!valid_agency_name(""));
        assert!(!valid_agency_name("Land"));
        assert!(!valid_agency_name("a.b"));
        assert!(!valid_agency_name(&"a".repeat(65)));
        assert!(valid_agency_name(&"a".repeat(64)));
    }
}
