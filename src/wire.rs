//! The JSON bodies of the HTTP API, one type each, used by the server
//! (`api`, which also generates the OpenAPI document from them), the
//! command-line clients (`cli`) and the tests' checker. Hashes are typed
//! ([`Hash`], hex on the wire) so a client parses them once, here.
//!
//! The receipt is the core's [`Receipt`]: the verifier of a receipt and the
//! server that writes it share one shape (the server writes it straight to
//! JSON for speed, byte-identical to serde's output of this type).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use stele_core::Hash;
use utoipa::ToSchema;

pub use stele_core::receipt::Receipt;

/// One log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LogInfo {
    /// URL segment of the log.
    #[schema(example = "default")]
    pub name: String,
    /// Checkpoint origin.
    #[schema(example = "stele.localhost/default")]
    pub origin: String,
    /// Verifier key, `<origin>+<key id>+<base64 key>`.
    pub vkey: String,
    /// Size of the latest signed checkpoint.
    pub tree_size: u64,
}

/// `GET /logs`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Logs {
    pub logs: Vec<LogInfo>,
}

/// One entry.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Entry {
    pub index: u64,
    /// The exact leaf bytes.
    pub leaf: String,
    /// Hex SHA-256 leaf hash.
    #[serde(with = "hex_hash")]
    #[schema(value_type = String, pattern = "^[0-9a-f]{64}$")]
    pub leaf_hash: Hash,
}

/// An inclusion proof.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Inclusion {
    pub index: u64,
    pub tree_size: u64,
    #[serde(with = "hex_hash")]
    #[schema(value_type = String, pattern = "^[0-9a-f]{64}$")]
    pub leaf_hash: Hash,
    /// Hex hashes.
    #[serde(with = "hex_hashes")]
    #[schema(value_type = Vec<String>)]
    pub inclusion_proof: Vec<Hash>,
    /// The checkpoint the log signed at `tree_size`, or null if it signed
    /// none at exactly that size.
    pub checkpoint: Option<String>,
}

/// A consistency proof.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Consistency {
    pub from: u64,
    pub to: u64,
    /// Hex hashes.
    #[serde(with = "hex_hashes")]
    #[schema(value_type = Vec<String>)]
    pub consistency_proof: Vec<Hash>,
    /// The checkpoint the log signed at `to`, or null.
    pub checkpoint: Option<String>,
}

/// The body of `POST /logs/{log}/records`. Unknown fields are rejected;
/// `agency`, `v` and `ts` are set by the server. (Documentation of the
/// shape: the server parses bodies with its own strict parser, which
/// also refuses duplicate keys.)
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordRequest {
    /// Record type, dotted lowercase words (`land.transfer`).
    #[schema(
        example = "land.transfer",
        max_length = 128,
        pattern = r"^[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)+$"
    )]
    pub r#type: String,
    /// Public reference (parcel number, facility id), at most 256
    /// characters, without Unicode format controls (bidi overrides,
    /// zero-width characters). Omit it rather than send `null`.
    #[schema(schema_with = subject_schema, required = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// `sha256:<64 lowercase hex>` commitment to a document kept off the
    /// log. Omit it rather than send `null`.
    #[schema(
        example = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        pattern = r"^sha256:[0-9a-f]{64}$",
        nullable = false
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_hash: Option<String>,
    /// Public metadata, a JSON object of at most 8 KiB in RFC 8785 form.
    /// Values are stored exactly or refused with 422: a number beyond
    /// ±(2^53 − 1), or whose RFC 8785 form (an IEEE double) is a different
    /// number (`0.30000000000000001`), is refused; send such values as
    /// strings. Keys may not hold Unicode format controls. Omit it rather
    /// than send `null`.
    #[schema(value_type = Attributes, required = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Value>,
    /// Private types only: a binary document, standard base64, at most
    /// `limits.max_document_bytes` decoded (default 36 KiB). A record of a
    /// private type keeps its subject, content hash, attributes and
    /// document out of the public leaf, which carries a commitment to them
    /// instead (see `docs/private.md`).
    #[schema(format = Byte, required = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<String>,
}

/// The answer to `GET /logs/{log}/records/{index}/content`: a private
/// record's content, released after its access entry was integrated.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Content {
    pub index: u64,
    /// The record's content as committed: `{attributes?, content_hash?,
    /// document?, subject?}` (`document` in standard base64). Its RFC 8785
    /// form is the `content` of the commitment.
    #[schema(value_type = Object)]
    pub content: Value,
    /// The record's salt, standard base64 (32 bytes).
    pub salt: String,
    /// The commitment the record's leaf carries:
    /// `sha256:` hex of SHA-256("stele/commitment/v1" 0x00 salt content).
    pub commitment: String,
    /// The record's receipt, in the tree of the access entry's checkpoint.
    pub receipt: Receipt,
    /// The receipt of the `stele.access` entry this read appended.
    pub access: Receipt,
}

/// The answer to `POST /logs/{log}/records/{index}/disclosure`: what the
/// writing agency hands a private record's data subject (on paper, in a
/// QR code, in its portal).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Disclosure {
    /// The log's origin.
    pub log: String,
    pub index: u64,
    /// The record's salt, standard base64: with it the subject checks the
    /// content they are shown against the commitment in the record's leaf.
    pub salt: String,
    /// The commitment in the record's leaf.
    pub commitment: String,
    /// The capability to list the entries about the record (header
    /// `Stele-Disclosure` of `GET .../accesses`), base64url.
    pub capability: String,
}

/// One entry with its inclusion proof in the tree of the answer's
/// `tree_size`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProvenEntry {
    pub index: u64,
    /// The exact leaf bytes.
    pub leaf: String,
    #[serde(with = "hex_hashes")]
    #[schema(value_type = Vec<String>)]
    pub inclusion_proof: Vec<Hash>,
}

/// The answer to `GET /logs/{log}/records/{index}/accesses`: a private
/// record and every entry the log made about it — each read
/// (`stele.access`: who, why, when) and its erasure (`stele.erasure`) —
/// each proven against one checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Accesses {
    pub tree_size: u64,
    /// The checkpoint every proof leads to.
    pub checkpoint: Option<String>,
    /// The record's own entry.
    pub record: ProvenEntry,
    /// The access and erasure entries about it, oldest first.
    pub entries: Vec<ProvenEntry>,
}

fn subject_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(
            "Public reference (parcel number, facility id), at most 256 characters, without \
             Unicode format controls (bidi overrides, zero-width characters). Omit it rather \
             than send `null`.",
        ))
        .examples(["parcel-4711"])
        .max_length(Some(256))
        .pattern(Some(no_format_controls_pattern()))
        .build()
}

/// Schema only: the `attributes` object of a record (see [`RecordRequest`]).
pub struct Attributes;

/// Schema only: one value inside `attributes`: JSON, with numbers within
/// ±(2^53 − 1) (and stored exactly: see [`RecordRequest::attributes`]) and
/// object keys without Unicode format controls.
pub struct AttributeValue;

/// Largest magnitude of a number in `attributes` (I-JSON, RFC 7493).
const MAX_SAFE_NUMBER: i64 = (1 << 53) - 1;

/// `^[^<every Unicode format control>]*$`: the rule for subjects and
/// attribute keys, from the same Unicode tables the server checks with.
/// BMP characters are written `\uXXXX`; the few outside it literally.
pub fn no_format_controls_pattern() -> String {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    let mut class = String::new();
    let mut run: Option<(char, char)> = None;
    let push = |a: char, b: char, class: &mut String| {
        let one = |c: char, out: &mut String| {
            if (c as u32) <= 0xFFFF {
                out.push_str(&format!("\\u{:04X}", c as u32));
            } else {
                out.push(c);
            }
        };
        one(a, class);
        if b != a {
            class.push('-');
            one(b, class);
        }
    };
    for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
        if c.general_category() == GeneralCategory::Format {
            run = match run {
                Some((a, b)) if b as u32 + 1 == c as u32 => Some((a, c)),
                Some((a, b)) => {
                    push(a, b, &mut class);
                    Some((c, c))
                }
                None => Some((c, c)),
            };
        }
    }
    if let Some((a, b)) = run {
        push(a, b, &mut class);
    }
    format!("^[^{class}]*$")
}

impl utoipa::PartialSchema for Attributes {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "Public metadata, a JSON object of at most 8 KiB in RFC 8785 form.",
            ))
            .property_names(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(no_format_controls_pattern())),
            ))
            .additional_properties(Some(utoipa::openapi::Ref::from_schema_name(
                "AttributeValue",
            )))
            .into()
    }
}

impl ToSchema for Attributes {}

impl utoipa::PartialSchema for AttributeValue {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Type};
        let value = || utoipa::openapi::Ref::from_schema_name("AttributeValue");
        OneOfBuilder::new()
            .description(Some(
                "A JSON value; numbers at most 2^53 - 1 in magnitude and exactly an IEEE \
                 double in their RFC 8785 form (otherwise send a string)",
            ))
            .item(ObjectBuilder::new().schema_type(Type::String))
            .item(ObjectBuilder::new().schema_type(Type::Boolean))
            .item(ObjectBuilder::new().schema_type(Type::Null))
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Number)
                    .minimum(Some(-MAX_SAFE_NUMBER))
                    .maximum(Some(MAX_SAFE_NUMBER)),
            )
            .item(ArrayBuilder::new().items(value()))
            .item(utoipa::openapi::Ref::from_schema_name("Attributes"))
            .into()
    }
}

impl ToSchema for AttributeValue {}

/// The body of `POST /logs/{log}/records/bulk`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRequest {
    /// 1 to 1,000 records; one invalid record rejects the whole request.
    #[schema(min_items = 1, max_items = 1000)]
    pub records: Vec<RecordRequest>,
}

/// The answer to a bulk submission, one receipt per record, in order.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Receipts {
    pub receipts: Vec<Receipt>,
}

/// An RFC 9457 problem document (`application/problem+json`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// Stable problem type, `urn:stele:problem:<slug>`.
    #[schema(example = "urn:stele:problem:invalid-field")]
    #[serde(default)]
    pub r#type: String,
    /// Short human-readable summary of the problem type.
    #[serde(default)]
    pub title: String,
    /// The HTTP status code.
    #[serde(default)]
    pub status: u16,
    /// What went wrong with this request.
    #[serde(default)]
    pub detail: String,
    /// For `invalid-field`: the offending field, query parameter or path
    /// segment (e.g. `type`, `records[3].content_hash`, `tree_size`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// For `schema-violation`: JSON Pointer into the request body of the
    /// first violation (`/attributes/area_m2`, `/records/3/subject`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
    /// For `schema-violation`: the JSON Schema keyword (or subject rule,
    /// `required` / `pattern`) of the first violation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyword: Option<String>,
    /// For `schema-violation`: every violation found (in a bulk request,
    /// of every failing record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<Violation>>,
    /// For `erased`: the index of the erasure entry (`stele.erasure`) that
    /// destroyed the record's content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tombstone: Option<u64>,
    /// For `read-node`: the writer's URL, where writes go (when the read
    /// node was told it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer: Option<String>,
}

/// One way a record breaks its type's rules.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Violation {
    /// JSON Pointer into the request body (`/attributes/area_m2` for one
    /// record, `/records/3/subject` in a bulk request).
    #[schema(example = "/attributes/area_m2")]
    pub pointer: String,
    /// The schema keyword or subject rule that failed.
    #[schema(example = "exclusiveMinimum")]
    pub keyword: String,
    pub detail: String,
}

/// One version of a record type, as the registry holds it.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct TypeVersion {
    #[schema(example = "land.transfer")]
    pub name: String,
    pub version: u32,
    /// Index of the `stele.type` entry that defined this version; it is in
    /// force for the records after it, until the next version's entry.
    pub index: u64,
    /// The agency that applied it.
    pub agency: String,
    /// The definition, exactly as the entry carries it (its canonical JSON
    /// is the entry's `attributes`): name, version, description, schema
    /// (JSON Schema draft 2020-12), subject, visibility, writers, readers.
    #[schema(value_type = Object)]
    pub definition: Value,
}

/// `GET /logs/{log}/types`: the version in force of every type.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Types {
    /// The tree size the registry is read at.
    pub tree_size: u64,
    pub types: Vec<TypeVersion>,
}

/// One version of a type with the proof that its entry is in the log.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ProvenTypeVersion {
    #[serde(flatten)]
    pub version: TypeVersion,
    /// The exact leaf of the defining entry.
    pub leaf: String,
    /// Its inclusion proof in the tree of `tree_size`, whose checkpoint is
    /// the answer's `checkpoint`.
    #[serde(with = "hex_hashes")]
    #[schema(value_type = Vec<String>)]
    pub inclusion_proof: Vec<Hash>,
}

/// `GET /logs/{log}/types/{name}`: every version, oldest first.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct TypeHistory {
    pub name: String,
    pub tree_size: u64,
    /// The checkpoint every proof leads to.
    pub checkpoint: Option<String>,
    pub versions: Vec<ProvenTypeVersion>,
}

/// `GET /healthz` and `GET /readyz` when all is well.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Status {
    #[schema(example = "ok")]
    pub status: String,
}

/// A [`Hash`] as 64 lowercase hex digits (any case accepted on input).
pub mod hex_hash {
    use serde::{Deserialize, Deserializer, Serializer};
    use stele_core::Hash;

    pub fn serialize<S: Serializer>(h: &Hash, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&h.to_hex())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Hash, D::Error> {
        let s = String::deserialize(d)?;
        Hash::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

/// A list of [`Hash`]es as hex strings.
pub mod hex_hashes {
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serializer};
    use stele_core::Hash;

    pub fn serialize<S: Serializer>(hs: &[Hash], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(hs.len()))?;
        for h in hs {
            seq.serialize_element(&h.to_hex())?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Hash>, D::Error> {
        let v = Vec::<String>::deserialize(d)?;
        v.into_iter()
            .enumerate()
            .map(|(i, s)| {
                Hash::from_hex(&s).map_err(|e| serde::de::Error::custom(format!("hash {i}: {e}")))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_hex_on_the_wire() {
        let p = Consistency {
            from: 1,
            to: 2,
            consistency_proof: vec![Hash([0xab; 32])],
            checkpoint: None,
        };
        let text = serde_json::to_string(&p).unwrap();
        assert_eq!(
            text,
            format!(
                "{{\"from\":1,\"to\":2,\"consistency_proof\":[\"{}\"],\"checkpoint\":null}}",
                "ab".repeat(32)
            )
        );
        let back: Consistency = serde_json::from_str(&text).unwrap();
        assert_eq!(back.consistency_proof, p.consistency_proof);
        let bad = text.replace("abab", "zz");
        assert!(serde_json::from_str::<Consistency>(&bad).is_err());
    }
}
