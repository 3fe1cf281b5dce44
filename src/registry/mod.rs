//! The record-type registry of a log: which record types exist, what a
//! valid record of each looks like, and which agencies may write it — kept
//! *in the log itself*, so that anyone holding the log can re-check every
//! record against the rules in force at its index (`stele monitor --audit`).
//!
//! Every change is an entry of the reserved type [`REGISTRY_TYPE`]: an
//! ordinary leaf (`v`, `agency` = who applied it, `type` = `stele.type`,
//! `subject` = the type's name, `attributes` = the canonical
//! [`TypeDefinition`], `ts`). A new version supersedes the one before from
//! its index on; nothing is rewritten. A record validated by the registry
//! carries `type_version` in its leaf. `docs/registry.md` is the
//! specification an outside auditor implements.
//!
//! Rules (the server enforces them when writing, the auditor when
//! replaying; both through this module):
//!
//! - a definition's version is 1 for a new name and the current version
//!   plus one after that; its schema compiles as JSON Schema draft 2020-12
//!   with no external references; `format` is an annotation (the 2020-12
//!   default), so every validator agrees;
//! - a record's type must be registered; its `type_version` is the version
//!   in force at its index; its agency is one of that version's writers;
//!   its subject follows the version's subject rule; its attributes (`{}`
//!   when absent) satisfy the version's schema.

use std::collections::BTreeMap;
use std::sync::Arc;

use regex::Regex;
use serde_json::Value;

use crate::error::LogError;
use crate::names::RecordType;

mod definition;

pub use crate::wire::Violation;
pub use definition::{SubjectRule, TypeDefinition, Visibility, Writer};

/// The reserved record type of registry entries.
pub const REGISTRY_TYPE: &str = "stele.type";

pub use crate::records::private::{ACCESS_TYPE, ERASURE_TYPE};

/// Largest canonical definition a registry entry may carry.
pub const MAX_DEFINITION_BYTES: usize = 32 * 1024;

/// Longest subject pattern.
const MAX_PATTERN_LEN: usize = 1024;

/// Schema errors reported per record at most (the first ones found).
const MAX_VIOLATIONS_PER_RECORD: usize = 8;

/// Why a record is refused by the registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The type is not registered in this log.
    Unknown(String),
    /// The agency is not a writer of the type's current version.
    NotWriter(String),
    /// The record breaks the type's subject rule or schema.
    Violations(Vec<Violation>),
}

impl Refusal {
    /// One sentence, for an auditor's report.
    pub fn describe(&self) -> String {
        match self {
            Refusal::Unknown(d) | Refusal::NotWriter(d) => d.clone(),
            Refusal::Violations(v) => v
                .iter()
                .map(|v| format!("{} ({}): {}", v.pointer, v.keyword, v.detail))
                .collect::<Vec<_>>()
                .join("; "),
        }
    }
}

/// One version of a type, compiled: its validator and subject pattern are
/// built once, when the version is applied or replayed.
pub struct CompiledType {
    pub def: TypeDefinition,
    /// The canonical definition (the registry entry's `attributes`).
    pub canonical: String,
    /// Index of the registry entry that defined this version.
    pub index: u64,
    /// The agency that applied it.
    pub agency: String,
    validator: jsonschema::Validator,
    subject: Option<Regex>,
}

impl std::fmt::Debug for CompiledType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledType")
            .field("name", &self.def.name)
            .field("version", &self.def.version)
            .field("index", &self.index)
            .finish()
    }
}

impl CompiledType {
    /// Checks a definition's every rule and compiles it.
    pub fn compile(def: TypeDefinition, index: u64, agency: &str) -> Result<Self, LogError> {
        def.check_shape()?;
        if let Some(s) = def.schema.get("$schema").and_then(Value::as_str) {
            if s != "https://json-schema.org/draft/2020-12/schema" {
                return Err(LogError::invalid(
                    "schema",
                    format!("schemas are JSON Schema draft 2020-12; `$schema` is {s:?}"),
                ));
            }
        }
        if !def.schema.is_object() && !def.schema.is_boolean() {
            return Err(LogError::invalid(
                "schema",
                "must be a JSON Schema (an object or a boolean)",
            ));
        }
        let validator = jsonschema::draft202012::options()
            .build(&def.schema)
            .map_err(|e| {
                LogError::invalid(
                    "schema",
                    format!(
                        "not a valid JSON Schema (draft 2020-12) at {}: {e}",
                        e.instance_path
                    ),
                )
            })?;
        let subject = match &def.subject.pattern {
            None => None,
            Some(p) if p.len() > MAX_PATTERN_LEN => {
                return Err(LogError::invalid(
                    "subject.pattern",
                    format!("at most {MAX_PATTERN_LEN} bytes"),
                ))
            }
            Some(p) => Some(Regex::new(&format!("^(?:{p})$")).map_err(|e| {
                LogError::invalid("subject.pattern", format!("not a valid pattern: {e}"))
            })?),
        };
        let canonical = def.canonical();
        Ok(CompiledType {
            def,
            canonical,
            index,
            agency: agency.to_string(),
            validator,
            subject,
        })
    }

    /// The subject rule's and the schema's violations, pointers under `at`
    /// (`""` for a single record, `/records/3` in a bulk request).
    fn violations(&self, subject: Option<&str>, attributes: &Value) -> Vec<Violation> {
        let mut out = Vec::new();
        match (subject, &self.subject) {
            (None, _) if self.def.subject.required => out.push(Violation {
                pointer: "/subject".into(),
                keyword: "required".into(),
                detail: format!("a {} record must have a subject", self.def.name),
            }),
            (Some(s), Some(re)) if !re.is_match(s) => out.push(Violation {
                pointer: "/subject".into(),
                keyword: "pattern".into(),
                detail: format!(
                    "the subject must match {:?} (the whole subject)",
                    self.def.subject.pattern.as_deref().unwrap_or_default()
                ),
            }),
            _ => {}
        }
        // The common case, a valid record, without building error reports.
        if self.validator.is_valid(attributes) {
            return out;
        }
        for e in self
            .validator
            .iter_errors(attributes)
            .take(MAX_VIOLATIONS_PER_RECORD)
        {
            let keyword = e
                .schema_path
                .as_str()
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string();
            out.push(Violation {
                pointer: format!("/attributes{}", e.instance_path),
                keyword,
                detail: e.to_string(),
            });
        }
        out
    }
}

/// The record a registry entry is: type `stele.type`, the type's name as
/// its subject, the canonical definition as its attributes (the leaf adds
/// the applying agency and the time).
pub fn entry_record(def: &TypeDefinition) -> crate::records::Record {
    crate::records::Record {
        r#type: RecordType::parse(REGISTRY_TYPE).expect("a valid type"),
        subject: Some(def.name.to_string()),
        content_hash: None,
        attributes: Some(def.canonical()),
        document: None,
    }
}

/// What applying a definition would do.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    /// A new version (or a new type).
    New,
    /// The very same definition by the same agency is already this
    /// version: applying it again is a no-op (its entry is the answer).
    Same(u64),
}

/// A log's registry: every version of every type, in the order applied.
/// Cloning is cheap (the compiled versions are shared).
#[derive(Clone, Debug, Default)]
pub struct Registry {
    types: BTreeMap<RecordType, Vec<Arc<CompiledType>>>,
}

impl Registry {
    /// The version in force of `name`.
    pub fn current(&self, name: &str) -> Option<&Arc<CompiledType>> {
        self.types.get(name).and_then(|v| v.last())
    }

    /// Every version of `name`, oldest first (empty if unknown).
    pub fn versions(&self, name: &str) -> &[Arc<CompiledType>] {
        self.types.get(name).map_or(&[], Vec::as_slice)
    }

    /// Every type, by name, with its versions.
    pub fn types(&self) -> impl Iterator<Item = (&RecordType, &[Arc<CompiledType>])> {
        self.types.iter().map(|(k, v)| (k, v.as_slice()))
    }

    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }

    /// Whether `def`, applied by `agency`, may be the next registry entry.
    /// The version must be the current one plus one (1 for a new type);
    /// the very same definition by the same agency again is [`Change::Same`];
    /// anything else is `Conflict` (a rewrite of a version, or a gap).
    pub fn check_change(&self, def: &TypeDefinition, agency: &str) -> Result<Change, LogError> {
        let versions = self.versions(&def.name);
        if let Some(existing) = versions.get(def.version.wrapping_sub(1) as usize) {
            if existing.canonical == def.canonical() && existing.agency == agency {
                return Ok(Change::Same(existing.index));
            }
        }
        let next = versions.len() as u64 + 1;
        if let Some(last) = versions
            .last()
            .filter(|l| l.def.visibility != def.visibility)
        {
            return Err(LogError::Conflict(format!(
                "{} is {} (version {}); a type's visibility never changes, define a new type instead",
                def.name,
                last.def.visibility.as_str(),
                last.def.version
            )));
        }
        if u64::from(def.version) != next {
            let what = if u64::from(def.version) < next {
                format!(
                    "{} version {} already exists (defined at index {}); versions are never rewritten, apply version {next}",
                    def.name,
                    def.version,
                    versions[def.version as usize - 1].index
                )
            } else {
                format!(
                    "{} version {} would skip versions: the next version is {next}",
                    def.name, def.version
                )
            };
            return Err(LogError::Conflict(what));
        }
        Ok(Change::New)
    }

    /// Adds a version that [`Registry::check_change`] accepted as new.
    pub fn insert(&mut self, t: Arc<CompiledType>) {
        self.types.entry(t.def.name.clone()).or_default().push(t);
    }

    /// Checks a record of type `r#type` by `agency` against the version in
    /// force; its version on success.
    pub fn check_record(
        &self,
        agency: &str,
        r#type: &str,
        subject: Option<&str>,
        attributes: Option<&Value>,
    ) -> Result<u32, Refusal> {
        let Some(t) = self.current(r#type) else {
            return Err(Refusal::Unknown(format!(
                "record type {type} is not registered in this log; register it first (stele type apply)",
                type = r#type
            )));
        };
        if !t.def.writers.iter().any(|w| w.allows(agency)) {
            return Err(Refusal::NotWriter(format!(
                "agency {agency} is not a writer of {} version {} in this log",
                t.def.name, t.def.version
            )));
        }
        let empty = Value::Object(Default::default());
        let v = t.violations(subject, attributes.unwrap_or(&empty));
        if v.is_empty() {
            Ok(t.def.version)
        } else {
            Err(Refusal::Violations(v))
        }
    }

    /// Replays one leaf of the log at `index`, as the server does at start
    /// and an auditor does for every leaf: a registry entry is checked and
    /// applied; a record is checked against the version in force (it must
    /// name it in `type_version`). `Ok(true)` for a registry entry. An
    /// `Err` is the first rule the leaf breaks, in words. With
    /// `allow_unregistered`, a record of a type not registered at its index
    /// that names no version passes (a log configured to accept them).
    pub fn replay(
        &mut self,
        index: u64,
        leaf: &[u8],
        allow_unregistered: bool,
    ) -> Result<bool, String> {
        let leaf: Value =
            serde_json::from_slice(leaf).map_err(|e| format!("leaf is not JSON: {e}"))?;
        let field = |k: &str| leaf.get(k).and_then(Value::as_str);
        let (Some(agency), Some(r#type)) = (field("agency"), field("type")) else {
            return Err("leaf has no agency or type".into());
        };
        if r#type == REGISTRY_TYPE {
            let attrs = leaf
                .get("attributes")
                .ok_or("registry entry has no definition (attributes)")?;
            let def = TypeDefinition::from_value(attrs.clone()).map_err(|e| e.to_string())?;
            if field("subject") != Some(def.name.as_str()) {
                return Err(format!(
                    "registry entry's subject is not the type it defines ({})",
                    def.name
                ));
            }
            return match self.check_change(&def, agency).map_err(|e| e.to_string())? {
                // A second entry with the same definition can only come
                // from storage that bypassed deduplication.
                Change::Same(at) => Err(format!(
                    "registry entry repeats {} version {} (defined at index {at})",
                    def.name, def.version
                )),
                Change::New => {
                    let t = CompiledType::compile(def, index, agency).map_err(|e| e.to_string())?;
                    self.insert(Arc::new(t));
                    Ok(true)
                }
            };
        }
        if r#type == ACCESS_TYPE || r#type == ERASURE_TYPE {
            return log_entry_shape(index, r#type, &leaf).map(|()| false);
        }
        let private = self
            .current(r#type)
            .is_some_and(|t| t.def.visibility == Visibility::Private);
        let version = if let Some(c) = leaf.get("commitment") {
            let t = self.current(r#type).filter(|_| private).ok_or_else(|| {
                format!("record of {type} carries a commitment, but {type} is not a private type at its index", type = r#type)
            })?;
            if !c
                .as_str()
                .is_some_and(crate::records::private::is_commitment)
            {
                return Err("commitment is not sha256:<64 lowercase hex digits>".into());
            }
            if let Some(k) = ["subject", "attributes", "content_hash", "document"]
                .iter()
                .find(|k| leaf.get(**k).is_some())
            {
                return Err(format!("private record carries `{k}` in its public leaf"));
            }
            if !t.def.writers.iter().any(|w| w.allows(agency)) {
                return Err(format!(
                    "agency {agency} is not a writer of {} version {} in this log",
                    t.def.name, t.def.version
                ));
            }
            t.def.version
        } else if private {
            return Err(format!(
                "record of the private type {type} has no commitment (its content would be public)",
                type = r#type
            ));
        } else {
            match self.check_record(agency, r#type, field("subject"), leaf.get("attributes")) {
                Ok(v) => v,
                Err(Refusal::Unknown(_))
                    if allow_unregistered && leaf.get("type_version").is_none() =>
                {
                    return Ok(false)
                }
                Err(r) => return Err(r.describe()),
            }
        };
        match leaf.get("type_version").and_then(Value::as_u64) {
            Some(v) if v == u64::from(version) => Ok(false),
            Some(v) => Err(format!(
                "record names {type} version {v}, but version {version} was in force at its index",
                type = r#type
            )),
            None => Err(format!(
                "record of {type} names no type_version (version {version} was in force)",
                type = r#type
            )),
        }
    }
}

/// The shape of an entry the log makes itself about a private record: an
/// access (`{purpose, record}`) or an erasure (`{reason, record}`), naming
/// an earlier index.
fn log_entry_shape(index: u64, r#type: &str, leaf: &Value) -> Result<(), String> {
    use crate::records::private::{is_reason, MAX_PURPOSE_CHARS};
    let attrs = leaf
        .get("attributes")
        .and_then(Value::as_object)
        .ok_or_else(|| format!("{type} entry has no attributes", type = r#type))?;
    let (text_key, ok): (&str, fn(&str) -> bool) = if r#type == ACCESS_TYPE {
        ("purpose", |p| {
            !p.is_empty() && p.chars().count() <= MAX_PURPOSE_CHARS
        })
    } else {
        ("reason", is_reason)
    };
    let record = attrs.get("record").and_then(Value::as_u64);
    let text = attrs.get(text_key).and_then(Value::as_str);
    match (record, text) {
        (Some(r), Some(t))
            if r < index && ok(t) && attrs.len() == 2 && leaf.get("subject").is_none() =>
        {
            Ok(())
        }
        _ => Err(format!(
            "{type} entry must have attributes exactly {{{text_key}, record}} naming an earlier index",
            type = r#type
        )),
    }
}

#[cfg(test)]
mod tests;
