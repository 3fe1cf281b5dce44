//! Validated names, parsed once at the edge (configuration, token, request
//! body) and trusted everywhere after: a [`LogName`], an [`AgencyName`] and
//! a [`RecordType`] can only be built through their `parse`, so no code
//! past the edge re-checks them, and the rules live here alone.
//!
//! - log and agency names: `[a-z0-9-]+`, at most 64 characters (a URL path
//!   segment; the `agency` of every leaf);
//! - record types: dotted lowercase words,
//!   `^[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)+$`, at most 128 characters.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest log or agency name.
pub const MAX_NAME_LEN: usize = 64;
/// Longest record type.
pub const MAX_TYPE_LEN: usize = 128;

/// Why a name was refused; the message says what the rule is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what} {value:?} {rule}")]
pub struct NameError {
    pub what: &'static str,
    pub value: String,
    pub rule: &'static str,
}

fn is_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-'))
}

fn is_record_type(t: &str) -> bool {
    if t.len() > MAX_TYPE_LEN {
        return false;
    }
    let mut words = 0;
    for word in t.split('.') {
        let mut bytes = word.bytes();
        if !matches!(bytes.next(), Some(b'a'..=b'z')) {
            return false;
        }
        if !bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-')) {
            return false;
        }
        words += 1;
    }
    words >= 2
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $what:literal, $check:expr, $rule:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// The rule, as error messages state it.
            pub const RULE: &'static str = $rule;

            pub fn parse(s: &str) -> Result<Self, NameError> {
                if $check(s) {
                    Ok($name(Arc::from(s)))
                } else {
                    Err(NameError {
                        what: $what,
                        value: s.chars().take(80).collect(),
                        rule: $rule,
                    })
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The shared string (cheap to clone into tasks and labels).
            pub fn as_arc(&self) -> &Arc<str> {
                &self.0
            }
        }

        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        /// Hashes and compares as its text, so a map keyed by names can be
        /// looked up with a plain `&str`.
        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                &*self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                &*self.0 == *other
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::parse(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

name_type!(
    /// A log's short name: its URL segment under `/logs/`.
    LogName,
    "log name",
    is_slug,
    "must match [a-z0-9-]+ (at most 64 characters)"
);

name_type!(
    /// An agency's id: the part of its token before the dot, and the
    /// `agency` of every leaf it writes.
    AgencyName,
    "agency name",
    is_slug,
    "must match [a-z0-9-]+ (at most 64 characters)"
);

name_type!(
    /// A record type, e.g. `land.transfer`.
    RecordType,
    "record type",
    is_record_type,
    "must be dotted lowercase words (e.g. land.transfer), at most 128 characters"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_and_agency_names() {
        for ok in ["default", "land-registry-2", &"a".repeat(64)] {
            assert!(LogName::parse(ok).is_ok(), "{ok}");
            assert!(AgencyName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Land", "a.b", "a b", "é", &"a".repeat(65)] {
            assert!(LogName::parse(bad).is_err(), "{bad}");
            let e = AgencyName::parse(bad).unwrap_err();
            assert!(e.to_string().contains("[a-z0-9-]+"), "{e}");
        }
    }

    #[test]
    fn record_types() {
        for ok in ["a.b", "land.transfer", "health.covid_test.v2", "x-1.y-2"] {
            assert!(RecordType::parse(ok).is_ok(), "{ok}");
        }
        assert!(RecordType::parse(&format!("a.{}", "b".repeat(126))).is_ok());
        for bad in [
            "",
            "land",
            "Land.transfer",
            "land..x",
            "land.1x",
            ".a.b",
            "a.b.",
            "a.b c",
            &format!("a.{}", "b".repeat(127)),
        ] {
            assert!(RecordType::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn serde_parses_and_refuses() {
        let n: LogName = serde_json::from_str("\"land\"").unwrap();
        assert_eq!(n.as_str(), "land");
        assert_eq!(serde_json::to_string(&n).unwrap(), "\"land\"");
        let e = serde_json::from_str::<LogName>("\"Bad Name\"").unwrap_err();
        assert!(e.to_string().contains("Bad Name"), "{e}");
    }
}
