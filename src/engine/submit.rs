//! Writes: a submission is checked against the agency's record types, the
//! log's registry (type registered, agency a writer, subject and schema)
//! and the log's status, takes queue slots, and waits for its sequencer's
//! answer. A registry change ([`Engine::apply_type`]) takes the same path
//! as a record of the reserved type `stele.type`.

use std::sync::Arc;
use std::time::Instant;

use super::agency::{type_allowed, Agency};
use super::log::{Integrated, Log, Pending, Request};
use super::{Engine, LogError};
use crate::records::{dedup_key, private, Record};
use crate::registry::{
    CompiledType, Refusal, Registry, TypeDefinition, Violation, Visibility, REGISTRY_TYPE,
};
use crate::storage::Effect;

/// Checks `records` against the log's registry, all or nothing: the
/// version each is validated by (None: an unregistered type the log
/// accepts). In a bulk request (`bulk`) errors name the record
/// (`records[3]`), and every schema violation of every record is reported.
pub(crate) fn check_records(
    log: &Log,
    registry: &Registry,
    agency: &str,
    records: &[Record],
    bulk: bool,
) -> Result<Vec<Option<u32>>, LogError> {
    let mut versions = Vec::with_capacity(records.len());
    let mut violations: Vec<Violation> = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let at = |d: String| {
            if bulk {
                format!("records[{i}]: {d}")
            } else {
                d
            }
        };
        if r.r#type.starts_with("stele.") {
            let field = if bulk {
                format!("records[{i}].type")
            } else {
                "type".into()
            };
            return Err(LogError::invalid(
                field,
                at(format!(
                    "record types under `stele.` are reserved to the log ({REGISTRY_TYPE} entries are made with POST /logs/{{log}}/types)"
                )),
            ));
        }
        // Only a registered type's records are parsed back for its schema
        // (an unregistered one is refused, or accepted as it is).
        let attributes = match &r.attributes {
            Some(a) if registry.current(&r.r#type).is_some() => {
                Some(serde_json::from_str(a).map_err(LogError::internal)?)
            }
            _ => None,
        };
        match registry.check_record(agency, &r.r#type, r.subject.as_deref(), attributes.as_ref()) {
            Ok(v) => versions.push(Some(v)),
            Err(Refusal::Unknown(_)) if log.accept_unregistered => versions.push(None),
            Err(Refusal::Unknown(d)) => return Err(LogError::UnknownType(at(d))),
            Err(Refusal::NotWriter(d)) => return Err(LogError::Forbidden(at(d))),
            Err(Refusal::Violations(v)) => {
                violations.extend(v.into_iter().map(|mut v| {
                    if bulk {
                        v.pointer = format!("/records/{i}{}", v.pointer);
                        v.detail = format!("records[{i}]: {}", v.detail);
                    }
                    v
                }));
                versions.push(None);
            }
        }
    }
    if violations.is_empty() {
        Ok(versions)
    } else {
        Err(LogError::Violations(Arc::new(violations)))
    }
}

impl Engine {
    /// Submits one record and waits for its receipt.
    pub async fn submit(
        &self,
        log: &str,
        agency: &Agency,
        record: Record,
    ) -> Result<Integrated, LogError> {
        let mut out = self
            .submit_records(log, agency, vec![record], false)
            .await?;
        out.pop()
            .ok_or_else(|| LogError::bug("no receipt for a submission"))
    }

    /// Applies a record-type definition to the log's registry: a new
    /// version (or type) becomes an entry of the log, and is in force for
    /// every record sequenced after it. Only a registry admin may; the
    /// definition must compile and be the next version (`Conflict`
    /// otherwise). The very same definition applied again by the same
    /// agency answers with its existing entry (`created` false).
    pub async fn apply_type(
        &self,
        log_name: &str,
        agency: &Agency,
        def: TypeDefinition,
    ) -> Result<Integrated, LogError> {
        let log = self.log(log_name)?;
        if !agency.registry_admin {
            return Err(LogError::Forbidden(format!(
                "agency {} may not change the record-type registry (it is not a registry admin)",
                agency.name
            )));
        }
        if def.visibility == Visibility::Private {
            self.vault()?;
        }
        // Compiled here for the errors; the sequencer checks the version
        // again against the registry in force when it sequences it.
        CompiledType::compile(def.clone(), 0, &agency.name)?;
        log.registry().check_change(&def, &agency.name)?;
        let record = crate::registry::entry_record(&def);
        let item = self.pending(agency, record, None, Some(Arc::new(def)));
        let mut out = self.enqueue(log_name, agency, vec![item], false).await?;
        out.pop()
            .ok_or_else(|| LogError::bug("no receipt for a registry entry"))
    }

    pub(super) fn pending(
        &self,
        agency: &Agency,
        record: Record,
        type_version: Option<u32>,
        definition: Option<Arc<TypeDefinition>>,
    ) -> Pending {
        Pending {
            dedup_key: dedup_key(&agency.name, &record),
            agency: agency.name.clone(),
            record,
            type_version,
            definition,
            commitment: None,
            effect: Effect::None,
        }
    }

    /// A private record's pending entry: its content sealed (a fresh salt
    /// and data key), the commitment for its leaf.
    fn sealed(
        &self,
        log: &str,
        agency: &Agency,
        record: Record,
        type_version: Option<u32>,
    ) -> Result<Pending, LogError> {
        let vault = self.vault()?;
        let salt = private::new_salt();
        let content = private::content_bytes(&record);
        let commitment = private::commitment(&salt, &content);
        let mut plaintext = Vec::with_capacity(salt.len() + content.len());
        plaintext.extend_from_slice(&salt);
        plaintext.extend_from_slice(&content);
        let payload = vault.seal(log, &commitment, &plaintext);
        let mut p = self.pending(agency, record, type_version, None);
        p.commitment = Some(Arc::from(commitment));
        p.effect = Effect::Seal(Arc::new(payload));
        Ok(p)
    }

    /// The payload store's keys, or why this server has none.
    pub(crate) fn vault(&self) -> Result<&Arc<crate::vault::Vault>, LogError> {
        // Every use of the payload key writes an entry (an access, an
        // erasure, a disclosure, the private record itself): the writer's.
        if let Some(r) = &self.ctx.config.read_node {
            return Err(super::log::misdirected(r.writer_url.as_deref()));
        }
        self.ctx.config.vault.as_ref().ok_or_else(|| {
            LogError::Unavailable(
                "this server has no payload key (payload_key_file), so it takes and serves no private records"
                    .into(),
            )
        })
    }

    /// Submits records (one request: validated all-or-nothing, one receipt
    /// each, in order). How many one request may carry is the HTTP layer's
    /// limit; here the queue's capacity bounds it (beyond it: 503). No
    /// records: no receipts, nothing queued.
    pub async fn submit_bulk(
        &self,
        log_name: &str,
        agency: &Agency,
        records: Vec<Record>,
    ) -> Result<Vec<Integrated>, LogError> {
        self.submit_records(log_name, agency, records, true).await
    }

    /// Checks records against the log's registry and queues them as one
    /// request; `bulk`: errors name the record (`records[3]`).
    async fn submit_records(
        &self,
        log_name: &str,
        agency: &Agency,
        records: Vec<Record>,
        bulk: bool,
    ) -> Result<Vec<Integrated>, LogError> {
        let log = self.log(log_name)?;
        // One snapshot of the registry for the checks and the sealing.
        let registry = log.registry();
        let versions =
            check_records(log, &registry, &agency.name, &records, bulk).inspect_err(|_| {
                self.ctx
                    .metrics
                    .submitted(log_name, "rejected", records.len() as u64)
            })?;
        let mut items = Vec::with_capacity(records.len());
        for (i, (r, v)) in records.into_iter().zip(versions).enumerate() {
            let private = registry
                .current(&r.r#type)
                .is_some_and(|t| t.def.visibility == Visibility::Private);
            let field = |f: &str| {
                if bulk {
                    format!("records[{i}].{f}")
                } else {
                    f.to_string()
                }
            };
            match &r.document {
                Some(_) if !private => {
                    return Err(LogError::invalid(
                        field("document"),
                        format!(
                            "only records of private types carry a document; {} is public",
                            r.r#type
                        ),
                    ))
                }
                Some(d) if d.len() > self.ctx.config.max_document_bytes => {
                    return Err(LogError::TooLarge(format!(
                        "the document is {} bytes, at most {} allowed",
                        d.len(),
                        self.ctx.config.max_document_bytes
                    )))
                }
                _ => {}
            }
            items.push(if private {
                self.sealed(log_name, agency, r, v)?
            } else {
                self.pending(agency, r, v, None)
            });
        }
        drop(registry);
        self.enqueue(log_name, agency, items, bulk).await
    }

    /// Queues checked items as one request and waits for the answer.
    pub(super) async fn enqueue(
        &self,
        log_name: &str,
        agency: &Agency,
        items: Vec<Pending>,
        bulk: bool,
    ) -> Result<Vec<Integrated>, LogError> {
        let log = self.log(log_name)?;
        let m = &self.ctx.metrics;
        let n = items.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        // The log's own entries (`stele.*`: registry changes, accesses,
        // erasures) are not the agency's records: its `--types` do not apply.
        if let Some(bad) = items
            .iter()
            .filter(|p| !p.record.r#type.starts_with("stele."))
            .find(|p| !type_allowed(&agency.types, &p.record.r#type))
        {
            m.submitted(log_name, "rejected", n as u64);
            return Err(LogError::Forbidden(format!(
                "agency {} may not submit records of type {}",
                agency.name, bad.record.r#type
            )));
        }
        let retry_after = self.ctx.config.retry_after;
        if let Some(e) = log.status().error(retry_after) {
            m.submitted(log_name, "pushback", n as u64);
            return Err(e);
        }
        let bytes = items.iter().map(|p| p.record.size()).sum();
        if let Err(e) = self.quotas.check(&agency.name, n, bytes) {
            m.submitted(log_name, "rate-limited", n as u64);
            return Err(e);
        }
        let permit = u32::try_from(n)
            .ok()
            .and_then(|k| log.slots.clone().try_acquire_many_owned(k).ok());
        let Some(permit) = permit else {
            m.submitted(log_name, "pushback", n as u64);
            return Err(LogError::Pushback {
                detail: format!("log {log_name} has too many pending submissions; retry later"),
                retry_after,
            });
        };
        let Some(share) = log.shares.take(&agency.name, n) else {
            m.submitted(log_name, "rate-limited", n as u64);
            return Err(LogError::RateLimited {
                detail: format!(
                    "agency {} holds its share of log {log_name}'s queue; retry when its submissions are answered",
                    agency.name
                ),
                retry_after,
            });
        };
        m.queue_depth
            .get_or_create(&log.label)
            .set(log.queue_depth() as i64);
        let (reply, answer) = tokio::sync::oneshot::channel();
        let request = Request {
            items,
            bulk,
            reply,
            enqueued: Instant::now(),
            _permit: permit,
            _share: share,
        };
        let stopped = || LogError::Pushback {
            detail: "the service is shutting down".into(),
            retry_after,
        };
        if log.queue.send(request).is_err() {
            m.submitted(log_name, "pushback", n as u64);
            return Err(stopped());
        }
        answer.await.map_err(|_| stopped())?
    }
}
