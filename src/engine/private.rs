//! Private records after they are written: releasing their content to the
//! agencies their type grants read (every release preceded by a durable
//! `stele.access` entry), and erasing it (a `stele.erasure` entry whose
//! commit destroys the sealed content). `docs/private.md` specifies both
//! entries.

use rand_core::RngCore;
use serde_json::Value;
use sha2::{Digest, Sha256};
use stele_core::Hash;

use super::agency::Agency;
use super::log::{Integrated, Log};
use super::{Engine, LogError};
use crate::records::private::{self, ACCESS_TYPE, ERASURE_TYPE, SALT_LEN};
use crate::records::Record;
use crate::registry::Visibility;
use crate::storage::{Effect, StoredPayload};

/// A private record's content as released to a reader.
pub struct Content {
    /// The content: canonical JSON of `{attributes?, content_hash?,
    /// document?, subject?}`, as committed.
    pub content: Vec<u8>,
    pub salt: [u8; SALT_LEN],
    /// The record's receipt, in the tree of `access`'s checkpoint.
    pub record: Integrated,
    /// The receipt of the access entry this read appended.
    pub access: Integrated,
}

/// A private record's public facts, from its leaf.
struct PrivateLeaf {
    agency: String,
    r#type: String,
    commitment: String,
}

fn random_key() -> Hash {
    let mut k = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut k);
    Hash(k)
}

/// The record of an entry the log makes about record `index`.
fn log_entry(r#type: &str, key: &str, text: &str, index: u64) -> Record {
    let attrs = serde_json::json!({ key: text, "record": index });
    Record {
        r#type: crate::names::RecordType::parse(r#type).expect("a valid type"),
        subject: None,
        content_hash: None,
        attributes: Some(
            serde_json_canonicalizer::to_string(&attrs).expect("a JSON value canonicalizes"),
        ),
        document: None,
    }
}

fn erased(index: u64, by: u64) -> LogError {
    LogError::Erased {
        detail: format!("the content of record {index} was erased (erasure entry {by})"),
        tombstone: by,
    }
}

impl Engine {
    /// The leaf of record `index` if it is a private record.
    async fn private_leaf(&self, log: &Log, index: u64) -> Result<PrivateLeaf, LogError> {
        let entry = self.entry(&log.name, index).await?;
        let leaf: Value = serde_json::from_str(&entry.leaf).map_err(LogError::internal)?;
        let text = |k: &str| leaf.get(k).and_then(Value::as_str).map(str::to_string);
        match (text("agency"), text("type"), text("commitment")) {
            (Some(agency), Some(r#type), Some(commitment)) => Ok(PrivateLeaf {
                agency,
                r#type,
                commitment,
            }),
            _ => Err(LogError::NotFound(format!(
                "entry {index} is not a private record: its content is its leaf"
            ))),
        }
    }

    /// Releases the content of private record `index` to `agency`, which
    /// the type's version in force must name among its readers. First a
    /// `stele.access` entry (the reader, `purpose`, the record) is
    /// integrated — durable — and only then is the content opened, checked
    /// against the leaf's commitment and returned.
    pub async fn read_content(
        &self,
        log_name: &str,
        agency: &Agency,
        index: u64,
        purpose: &str,
    ) -> Result<Content, LogError> {
        let log = self.log(log_name)?;
        let m = &self.ctx.metrics;
        let vault = self.vault()?.clone();
        private::check_purpose(purpose)?;
        let leaf = self.private_leaf(log, index).await?;
        let granted = log.registry().current(&leaf.r#type).is_some_and(|t| {
            t.def.visibility == Visibility::Private
                && t.def
                    .readers
                    .iter()
                    .any(|r| r.as_str() == agency.name.as_str())
        });
        if !granted {
            m.content_read(log_name, "refused");
            return Err(LogError::Forbidden(format!(
                "agency {} may not read records of {} (not among its readers)",
                agency.name, leaf.r#type
            )));
        }
        if let Some(StoredPayload::Erased { by }) =
            self.ctx.storage.payload(log_name, index).await?
        {
            m.content_read(log_name, "erased");
            return Err(erased(index, by));
        }
        let record = log_entry(ACCESS_TYPE, "purpose", purpose, index);
        let mut item = self.pending(agency, record, None, None);
        // Every read is an entry of its own, listed among the record's events.
        item.dedup_key = random_key();
        item.effect = Effect::Access { record: index };
        let access = self
            .enqueue(log_name, agency, vec![item], false)
            .await?
            .pop()
            .ok_or_else(|| LogError::bug("no receipt for an access entry"))?;
        // Read after the access entry is durable (an erasure may have
        // committed meanwhile).
        let sealed = self
            .sealed_payload(log_name, index)
            .await
            .inspect_err(|e| {
                if matches!(e, LogError::Erased { .. }) {
                    m.content_read(log_name, "erased");
                }
            })?;
        let (salt, content) = open_checked(&vault, log_name, &leaf, &sealed).map_err(|why| {
            m.content_read(log_name, "corrupt");
            tracing::error!(
                log = log_name,
                index,
                "refusing to serve private content: {why}"
            );
            LogError::bug(format!("the payload of record {index} is corrupt: {why}"))
        })?;
        let size = checkpoint_size(&access.checkpoint)?;
        let record = self
            .receipt_in(log, index, size, access.checkpoint.clone())
            .await?;
        m.content_read(log_name, "released");
        Ok(Content {
            content,
            salt,
            record,
            access,
        })
    }

    /// The sealed payload of private record `index`; `410` once erased.
    async fn sealed_payload(
        &self,
        log_name: &str,
        index: u64,
    ) -> Result<crate::vault::SealedPayload, LogError> {
        match self.ctx.storage.payload(log_name, index).await? {
            Some(StoredPayload::Sealed(p)) => Ok(p),
            Some(StoredPayload::Erased { by }) => Err(erased(index, by)),
            None => Err(LogError::bug(format!(
                "private record {index} of log {log_name} has no payload row"
            ))),
        }
    }

    /// Erases the content of private record `index`: appends a
    /// `stele.erasure` entry (`reason`, the record) whose commit destroys
    /// the sealed content and the record's dedup key in the same
    /// transaction. Only the agency that wrote the record may, or an agency
    /// registered as an eraser (`stele agency add --eraser`). The entry,
    /// every checkpoint and every proof stay valid; content reads answer
    /// `410` naming the erasure entry from then on. Erasing again answers
    /// `410` too.
    pub async fn erase_content(
        &self,
        log_name: &str,
        agency: &Agency,
        index: u64,
        reason: &str,
    ) -> Result<Integrated, LogError> {
        let log = self.log(log_name)?;
        if !private::is_reason(reason) {
            return Err(LogError::invalid(
                "reason",
                format!("must be one of {}", private::REASONS.join(", ")),
            ));
        }
        let leaf = self.private_leaf(log, index).await?;
        if leaf.agency != agency.name.as_str() && !agency.eraser {
            return Err(LogError::Forbidden(format!(
                "only agency {} (which wrote record {index}) or an eraser may erase its content",
                leaf.agency
            )));
        }
        self.sealed_payload(log_name, index).await?;
        let record = log_entry(ERASURE_TYPE, "reason", reason, index);
        let mut item = self.pending(agency, record, None, None);
        // One erasure per record: a second one racing this one is a
        // duplicate of it, answered with the same entry.
        let mut h = Sha256::new();
        h.update(b"stele/erasure/v1\0");
        h.update(index.to_be_bytes());
        item.dedup_key = Hash(h.finalize().into());
        item.effect = Effect::Erase {
            record: index,
            new_dedup_key: random_key(),
        };
        self.enqueue(log_name, agency, vec![item], false)
            .await?
            .pop()
            .ok_or_else(|| LogError::bug("no receipt for an erasure entry"))
    }
}

/// What the writing agency hands a private record's data subject.
pub struct Disclosure {
    pub index: u64,
    pub salt: [u8; SALT_LEN],
    pub commitment: String,
    /// The capability to list the record's access entries (base64url, no
    /// padding); the server keeps only its SHA-256.
    pub capability: String,
}

/// An entry with its inclusion proof in the tree of [`Accesses::size`].
pub struct ProvenEntry {
    pub index: u64,
    pub leaf: String,
    pub proof: Vec<Hash>,
}

/// A private record and every access and erasure entry about it, proven
/// against one checkpoint.
pub struct Accesses {
    pub size: u64,
    pub checkpoint: Option<String>,
    pub record: ProvenEntry,
    pub events: Vec<ProvenEntry>,
}

fn capability_hash(capability: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"stele/disclosure/v1\0");
    h.update(capability);
    h.finalize().into()
}

impl Engine {
    /// Issues a disclosure of private record `index` for its data subject:
    /// the record's salt (to check the content they are shown against the
    /// leaf) and a fresh capability to list the entries about the record.
    /// Only the writing agency may; a new disclosure replaces the last one
    /// (whose capability stops working).
    pub async fn issue_disclosure(
        &self,
        log_name: &str,
        agency: &Agency,
        index: u64,
    ) -> Result<Disclosure, LogError> {
        let log = self.log(log_name)?;
        let vault = self.vault()?.clone();
        let leaf = self.private_leaf(log, index).await?;
        if leaf.agency != agency.name.as_str() {
            return Err(LogError::Forbidden(format!(
                "only agency {} (which wrote record {index}) may disclose it",
                leaf.agency
            )));
        }
        let sealed = self.sealed_payload(log_name, index).await?;
        let (salt, _) = open_checked(&vault, log_name, &leaf, &sealed).map_err(|why| {
            LogError::bug(format!("the payload of record {index} is corrupt: {why}"))
        })?;
        let mut cap = [0u8; 32];
        rand_core::OsRng.fill_bytes(&mut cap);
        if !self
            .ctx
            .storage
            .set_disclosure(log_name, index, &capability_hash(&cap))
            .await?
        {
            return Err(LogError::bug(format!(
                "record {index} lost its payload row"
            )));
        }
        use base64::Engine as _;
        Ok(Disclosure {
            index,
            salt,
            commitment: leaf.commitment,
            capability: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(cap),
        })
    }

    /// The entries about private record `index` (its `stele.access` and
    /// `stele.erasure` entries), each with its inclusion proof in the
    /// latest tree, for the holder of the record's disclosure capability.
    /// Anyone else: `403`, and nothing about the record.
    pub async fn accesses(
        &self,
        log_name: &str,
        index: u64,
        capability: &str,
    ) -> Result<Accesses, LogError> {
        use base64::Engine as _;
        use subtle::ConstantTimeEq;
        let log = self.log(log_name)?;
        let refused = || {
            LogError::Forbidden(format!(
                "not a disclosure of record {index}: its data subject holds the capability"
            ))
        };
        let cap = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(capability.trim())
            .map_err(|_| refused())?;
        let stored = self
            .ctx
            .storage
            .disclosure(log_name, index)
            .await?
            .ok_or_else(refused)?;
        if !bool::from(capability_hash(&cap).ct_eq(&stored)) {
            return Err(refused());
        }
        let snapshot = log.snapshot();
        let size = snapshot.size;
        let mut events = Vec::new();
        let listed = self.ctx.storage.payload_events(log_name, index).await?;
        for i in std::iter::once(index).chain(listed.into_iter().filter(|&i| i < size)) {
            let entry = self.entry(log_name, i).await?;
            let p = self
                .inclusion_proof(log_name, super::Locator::Index(i), Some(size))
                .await?;
            events.push(ProvenEntry {
                index: i,
                leaf: entry.leaf,
                proof: p.proof,
            });
        }
        let record = events.remove(0);
        let checkpoint = self.checkpoint_at(log, &snapshot, size).await?;
        Ok(Accesses {
            size,
            checkpoint,
            record,
            events,
        })
    }
}

impl Engine {
    /// A log's origin (the first line of its checkpoints).
    pub fn origin(&self, log: &str) -> Result<String, LogError> {
        Ok(self.log(log)?.origin.to_string())
    }
}

/// Opens a private record's payload and checks it against the commitment
/// in its leaf: `(salt, content)`, or why it is not the record's.
fn open_checked(
    vault: &crate::vault::Vault,
    log_name: &str,
    leaf: &PrivateLeaf,
    sealed: &crate::vault::SealedPayload,
) -> Result<([u8; SALT_LEN], Vec<u8>), String> {
    let mut plain = vault
        .open(log_name, &leaf.commitment, sealed)
        .map_err(|e| e.to_string())?;
    let salt: [u8; SALT_LEN] = plain
        .get(..SALT_LEN)
        .and_then(|s| s.try_into().ok())
        .ok_or("shorter than its salt")?;
    let content = plain.split_off(SALT_LEN);
    if private::commitment(&salt, &content) != leaf.commitment {
        return Err("it does not match the commitment in its leaf".into());
    }
    Ok((salt, content))
}

/// The tree size of a signed checkpoint note.
fn checkpoint_size(note: &str) -> Result<u64, LogError> {
    let body = note
        .split_once("\n\n")
        .map(|(b, _)| format!("{b}\n"))
        .ok_or_else(|| LogError::bug("a checkpoint note without signatures"))?;
    stele_core::checkpoint::Checkpoint::parse(&body)
        .map(|c| c.size)
        .map_err(LogError::internal)
}
