//! Agencies: bearer tokens, their verification, and record-type patterns.
//!
//! A token is `<agency>.<secret>` where the secret is 32 random bytes in
//! base64url without padding. Only SHA-256 of the 32 secret bytes is stored.
//! Verification compares hashes in constant time and gives the same answer
//! for an unknown agency, a wrong secret and a revoked agency.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand_core::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::LogError;
use crate::names::AgencyName;
use crate::storage::{Agencies, AgencyRecord};

const BAD_TOKEN: &str = "unknown, revoked or malformed token";

/// An authenticated agency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agency {
    pub name: AgencyName,
    /// Record-type patterns it may submit at most (see [`type_allowed`]);
    /// what it may write in a log is what that log's registry grants it.
    pub types: Vec<String>,
    /// May change the record-type registry of every log.
    pub registry_admin: bool,
    /// May erase the content of any private record of every log.
    pub eraser: bool,
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
/// all sets no limit (the storage contract's "empty = all"): the patterns
/// only ever narrow what a log's registry grants (its types' `writers`).
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

/// How soon an unknown agency name may make the authenticator look at
/// storage again (a new agency is found within this time; a flood of
/// made-up names costs storage one look per this time, not one per request).
const MISS_REFRESH: Duration = Duration::from_secs(1);

/// Every registered agency, as read at `at`.
struct Known {
    at: Instant,
    by_name: HashMap<String, AgencyRecord>,
}

/// Verifies tokens against the registered agencies, which it holds in
/// memory and re-reads from storage at most every `ttl` (and, for a name it
/// does not know, at most every second). So token checks cost storage one
/// list per `ttl` whatever the traffic: a flood of bogus tokens, of any
/// names, never reaches the database, and a revocation bites within `ttl`.
pub(crate) struct Authenticator {
    storage: Arc<dyn Agencies>,
    ttl: Duration,
    known: tokio::sync::RwLock<Option<Arc<Known>>>,
    /// One refresh at a time (the others wait for its result).
    refreshing: tokio::sync::Mutex<()>,
}

impl Authenticator {
    pub(crate) fn new(storage: Arc<dyn Agencies>, ttl: Duration) -> Self {
        Authenticator {
            storage,
            ttl,
            known: tokio::sync::RwLock::new(None),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    /// The agencies, re-read if older than `max_age`.
    async fn known(&self, max_age: Duration) -> Result<Arc<Known>, LogError> {
        let fresh = |k: &Option<Arc<Known>>| {
            k.as_ref()
                .filter(|k| !self.ttl.is_zero() && k.at.elapsed() < max_age)
                .cloned()
        };
        if let Some(k) = fresh(&*self.known.read().await) {
            return Ok(k);
        }
        let _one = self.refreshing.lock().await;
        if let Some(k) = fresh(&*self.known.read().await) {
            return Ok(k);
        }
        let list = self.storage.list_agencies().await?;
        let k = Arc::new(Known {
            at: Instant::now(),
            by_name: list.into_iter().map(|r| (r.name.clone(), r)).collect(),
        });
        *self.known.write().await = Some(k.clone());
        Ok(k)
    }

    pub(crate) async fn authenticate(&self, token: &str) -> Result<Agency, LogError> {
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
        let mut known = self.known(self.ttl).await?;
        if !known.by_name.contains_key(name.as_str()) && known.at.elapsed() >= MISS_REFRESH {
            known = self.known(MISS_REFRESH).await?;
        }
        let record = known.by_name.get(name.as_str());
        // Compare against something even when the agency is unknown, so the
        // two failures cost the same.
        let stored = record.map_or([0xa5; 32], |r| r.token_hash);
        let matches: bool = presented.ct_eq(&stored).into();
        match record {
            Some(r) if matches && !r.revoked => Ok(Agency {
                name,
                types: r.types.clone(),
                registry_admin: r.registry_admin,
                eraser: r.eraser,
            }),
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
