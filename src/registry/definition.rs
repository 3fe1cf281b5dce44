//! A record type's definition: what an agency applies, what a `stele.type`
//! entry carries (in canonical form), and what an auditor re-reads.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::MAX_DEFINITION_BYTES;
use crate::error::LogError;
use crate::names::{AgencyName, RecordType};

/// Who may read a type's records: public types are read by everyone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// The leaf carries the record.
    #[default]
    Public,
    /// The leaf carries a commitment; the content is sealed in the payload
    /// store and released to the type's readers.
    Private,
}

impl Visibility {
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Private => "private",
        }
    }
}

/// Rules for a record's `subject`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectRule {
    /// A record of this type must carry a subject.
    #[serde(default)]
    pub required: bool,
    /// A regular expression (Rust `regex` syntax, which has no look-around
    /// or back-references, so every match is linear-time) that the whole
    /// subject must match: it is applied as `^(?:PATTERN)$`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
}

/// One version of a record type, as applied. Its canonical form (RFC 8785
/// JSON of every field, defaults written out) is what the registry entry's
/// `attributes` hold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypeDefinition {
    /// Dotted lowercase, e.g. `land.transfer`; `stele.*` is reserved.
    pub name: RecordType,
    /// 1 for a new type; each new version is the previous one plus one.
    pub version: u32,
    #[serde(default)]
    pub description: String,
    /// JSON Schema (draft 2020-12) that a record's `attributes` must
    /// satisfy; a record without attributes is checked as `{}`.
    pub schema: Value,
    #[serde(default)]
    pub subject: SubjectRule,
    #[serde(default)]
    pub visibility: Visibility,
    /// Agencies that may write records of this version in this log; `*`
    /// for every registered agency.
    #[serde(default)]
    pub writers: Vec<Writer>,
    /// Agencies that may read the content of private records (the payload
    /// store): at least one for a private type, none for a public one.
    /// Each read is itself an entry of the log (`stele.access`).
    #[serde(default)]
    pub readers: Vec<AgencyName>,
}

/// An entry of `writers`: an agency, or `*` (any agency).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Writer {
    Any,
    Agency(AgencyName),
}

impl Writer {
    pub fn allows(&self, agency: &str) -> bool {
        match self {
            Writer::Any => true,
            Writer::Agency(a) => a.as_str() == agency,
        }
    }
}

impl Serialize for Writer {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Writer::Any => s.serialize_str("*"),
            Writer::Agency(a) => s.serialize_str(a),
        }
    }
}

impl<'de> Deserialize<'de> for Writer {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "*" {
            return Ok(Writer::Any);
        }
        AgencyName::parse(&s)
            .map(Writer::Agency)
            .map_err(serde::de::Error::custom)
    }
}

fn not_a_definition(e: impl std::fmt::Display) -> LogError {
    LogError::invalid("definition", format!("not a valid type definition: {e}"))
}

impl TypeDefinition {
    /// Parses a definition file: JSON if it starts with `{`, else TOML.
    /// Errors say where (`schema`, a line of the TOML).
    pub fn parse(text: &str) -> Result<TypeDefinition, LogError> {
        if text.trim_start().starts_with('{') {
            Self::from_json(text)
        } else {
            toml::from_str(text).map_err(not_a_definition)
        }
    }

    /// Parses the JSON form.
    pub fn from_json(text: &str) -> Result<TypeDefinition, LogError> {
        serde_json::from_str(text).map_err(not_a_definition)
    }

    /// The definition in a parsed JSON value (a request body read with the
    /// records layer's strict parser, a registry entry's attributes).
    pub fn from_value(v: Value) -> Result<TypeDefinition, LogError> {
        serde_json::from_value(v).map_err(not_a_definition)
    }

    /// RFC 8785 canonical JSON of the whole definition, defaults written
    /// out: the bytes a registry entry carries.
    pub fn canonical(&self) -> String {
        let v = serde_json::to_value(self).expect("a definition always serializes");
        serde_json_canonicalizer::to_string(&v).expect("a JSON value always canonicalizes")
    }

    /// The rules every definition must follow besides compiling (see
    /// `registry::compile`): not reserved, version from 1, not too large.
    pub(super) fn check_shape(&self) -> Result<(), LogError> {
        if self.name.starts_with("stele.") {
            return Err(LogError::invalid(
                "name",
                format!(
                    "type names under `stele.` are reserved; {} cannot be defined",
                    self.name
                ),
            ));
        }
        if self.version == 0 {
            return Err(LogError::invalid("version", "versions start at 1"));
        }
        match self.visibility {
            Visibility::Private if self.readers.is_empty() => {
                return Err(LogError::invalid(
                    "readers",
                    "a private type needs the agencies that may read its content",
                ))
            }
            Visibility::Public if !self.readers.is_empty() => {
                return Err(LogError::invalid(
                    "readers",
                    "only private types have readers: everyone reads a public type's records",
                ))
            }
            _ => {}
        }
        let size = self.canonical().len();
        if size > MAX_DEFINITION_BYTES {
            return Err(LogError::TooLarge(format!(
                "the definition is {size} bytes in canonical form, at most {MAX_DEFINITION_BYTES} allowed"
            )));
        }
        Ok(())
    }
}
