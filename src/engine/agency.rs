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
use rand_core::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::LogError;
use crate::names::AgencyName;
use crate::storage::Agencies;

const BAD_TOKEN: &str = "unknown, revoked or malformed token";

/// An authenticated agency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agency {
    pub name: AgencyName,
    /// Record-type patterns it may submit (see [`type_allowed`]).
    pub types: Vec<String>,
}

/// A fresh token for `agency` and the hash to store for it.
pub fn new_token(agency: &AgencyName) -> (String, [u8; 32]) {
    let mut secret = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut secret);
    let token = format!("{agency}.{}", URL_SAFE_NO_PAD.encode(secret));
    (token, Sha256::digest(secret).into())
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

/// `*`, `prefix.*`, or an exact dotted lowercase type.
pub fn valid_type_pattern(p: &str) -> bool {
    let body = p.strip_suffix(".*").unwrap_or(p);
    p == "*"
        || (!body.is_empty()
            && body.split('.').all(|seg| {
                !seg.is_empty()
                    && seg
                        .bytes()
                        .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'))
            }))
}

/// Verifies tokens against storage, remembering good answers for a while.
pub(crate) struct Authenticator {
    storage: Arc<dyn Agencies>,
    ttl: Duration,
    /// SHA-256 of the whole token → (agency, when it was checked).
    cache: quick_cache::sync::Cache<[u8; 32], (Agency, Instant)>,
}

impl Authenticator {
    pub(crate) fn new(storage: Arc<dyn Agencies>, ttl: Duration) -> Self {
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
        let Ok(name) = AgencyName::parse(name) else {
            return Err(LogError::Unauthorized(BAD_TOKEN.into()));
        };
        let secret = match URL_SAFE_NO_PAD.decode(secret) {
            Ok(s) if s.len() == 32 => s,
            _ => return Err(LogError::Unauthorized(BAD_TOKEN.into())),
        };
        let presented: [u8; 32] = Sha256::digest(&secret).into();
        let record = self.storage.agency(&name).await?;
        // Compare against something even when the agency is unknown, so the
        // two failures cost the same.
        let stored = record.as_ref().map_or([0xa5; 32], |r| r.token_hash);
        let matches: bool = presented.ct_eq(&stored).into();
        match record {
            Some(r) if matches && !r.revoked => {
                let agency = Agency {
                    name,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_the_documented_shape() {
        let (token, hash) = new_token(&AgencyName::parse("land-registry").unwrap());
        let (name, secret) = token.split_once('.').unwrap();
        assert_eq!(name, "land-registry");
        let bytes = URL_SAFE_NO_PAD.decode(secret).unwrap();
        assert_eq!(bytes.len(), 32);
        assert_eq!(<[u8; 32]>::from(Sha256::digest(&bytes)), hash);
        let x = AgencyName::parse("x").unwrap();
        assert_ne!(new_token(&x).0, new_token(&x).0);
    }

    #[test]
    fn type_pattern_syntax() {
        for ok in ["*", "land.*", "land.transfer", "health.vaccination"] {
            assert!(valid_type_pattern(ok), "{ok}");
        }
        for bad in ["", ".*", "Land", "land..x", "land.", "a b", "*.land"] {
            assert!(!valid_type_pattern(bad), "{bad}");
        }
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
}
