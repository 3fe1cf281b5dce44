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
    /// Record type, dotted lowercase (`land.transfer`).
    #[schema(example = "land.transfer")]
    pub r#type: String,
    /// Public reference (parcel number, facility id), at most 256 characters.
    #[schema(example = "parcel-4711")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// `sha256:<64 hex>` commitment to a document kept off the log.
    #[schema(example = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_hash: Option<String>,
    /// Public metadata, a JSON object of at most 8 KiB canonical.
    #[schema(value_type = Option<Object>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Value>,
}

/// The body of `POST /logs/{log}/records/bulk`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct BulkRequest {
    /// Up to 1,000 records; one invalid record rejects the whole request.
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
