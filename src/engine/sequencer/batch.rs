//! One batch: gather requests, deduplicate, assign indexes, commit (see
//! `commit.rs`), and hand the committed batch to a receipt task.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use stele_core::{leaf_hash, Hash};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::commit::Commit;
use super::receipts::Answers;
use super::{Mode, Sequencer};
use crate::engine::log::Request;
use crate::engine::submit::check_records;
use crate::error::LogError;
use crate::error::DATABASE_UNAVAILABLE;
use crate::records::{leaf_bytes, private_leaf_bytes};
use crate::registry::{Change, CompiledType, Registry};
use crate::storage::{NewEntry, StoredEntry};

/// Where each submitted record ended up.
#[derive(Clone, Copy)]
pub(super) enum Slot {
    /// Position among this batch's new entries; `created` is false for a
    /// repeat of an earlier item of the same batch.
    New { pos: usize, created: bool },
    /// Already stored at this index.
    Existing(u64),
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Sequencer {
    /// Collects a batch behind `first`. Under load (requests were already
    /// queued when the batch started, or one was held back from the last
    /// batch) the batch is whatever queued up while the previous one
    /// committed, taken without waiting: waiting would leave the database
    /// idle. Only a sequencer that was idle waits up to `max_wait` for
    /// company, to save commits when submissions trickle in (default 0:
    /// a pause costs every record its length in latency, and at 16
    /// clients 5 ms cut the rate 2.7× — BENCHMARKS.md).
    pub(super) async fn gather(&mut self, first: Request, backlog: bool) -> Vec<Request> {
        let max = self.ctx.config.max_batch.max(1);
        let deadline = Instant::now() + self.ctx.config.max_wait;
        let mut n = first.items.len();
        // A registry change is a batch of its own.
        if first.is_registry() {
            return vec![first];
        }
        let mut requests = vec![first];
        while n < max {
            let next = match self.rx.try_recv() {
                Ok(r) => r,
                Err(mpsc::error::TryRecvError::Empty) if backlog => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                        Ok(Some(r)) => r,
                        _ => break,
                    }
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            };
            if n + next.items.len() > max || next.is_registry() {
                self.held = Some(next);
                break;
            }
            n += next.items.len();
            requests.push(next);
        }
        requests
    }

    /// Sequences, commits and answers one batch; returns the next mode.
    pub(super) async fn process(&mut self, requests: Vec<Request>) -> Mode {
        let name = self.log.name.clone();
        let old_size = self.builder.size();
        let reply = self.reply();
        let requests = self.recheck(requests, &reply);
        if requests.is_empty() {
            return Mode::Writer;
        }

        // Deduplicate within the batch here; against storage optimistically:
        // the commit fails with `Duplicate` (writing nothing) if a key is
        // already stored, and only then are the keys looked up and the batch
        // sequenced again. New records, the common case, cost no look-up.
        let mut stored: HashMap<Hash, u64> = HashMap::new();
        // The stored duplicates' leaves, from the same look-up.
        let mut existing: HashMap<u64, (Bytes, Hash)> = HashMap::new();
        let mut looked_up = false;
        let ts_ms = now_ms().max(self.last_ts);
        let (entries, slots, overlay) = loop {
            let (entries, slots) = sequence(&requests, &stored, old_size, ts_ms);
            if entries.is_empty() {
                break (entries, slots, HashMap::new());
            }
            let registry = match self.registry_after(&requests, &slots, &entries) {
                Ok(r) => r,
                Err(e) => {
                    reply.fail_all(requests, e);
                    return Mode::Writer;
                }
            };
            match self.commit(old_size, &entries, ts_ms, registry).await {
                Ok(overlay) => break (entries, slots, overlay),
                Err(Commit::Duplicate(why)) if !looked_up => {
                    tracing::debug!(log = %name, "batch repeats stored records ({why}); looking them up");
                    looked_up = true;
                    let mut seen: HashSet<Hash> = HashSet::new();
                    let unique: Vec<Hash> = requests
                        .iter()
                        .flat_map(|r| r.items.iter().map(|p| p.dedup_key))
                        .filter(|k| seen.insert(*k))
                        .collect();
                    match self.ctx.storage.find_dedup(&name, &unique).await {
                        Ok(found) => match stored_duplicates(found) {
                            Ok((keys, leaves)) => (stored, existing) = (keys, leaves),
                            Err(e) => {
                                reply.fail_all(requests, e);
                                return Mode::Writer;
                            }
                        },
                        Err(e) => {
                            tracing::warn!(log = %name, "dedup lookup failed: {e}");
                            let e = LogError::Unavailable(DATABASE_UNAVAILABLE.into());
                            reply.fail_all(requests, e);
                            return Mode::Writer;
                        }
                    }
                }
                Err(Commit::Duplicate(why)) => {
                    // Found no stored key, yet a uniqueness rule failed: not a
                    // dedup race (this is the only writer) but storage that
                    // disagrees with the tree (entries beyond its size?).
                    // Every batch would fail the same way: stop writing.
                    tracing::error!(log = %name, "commit of {old_size}.. failed after the dedup look-up: {why}");
                    reply.fail_all(requests, LogError::bug("uniqueness violation in a batch"));
                    return self.refused(format!(
                        "log {name} refuses writes: a commit at size {old_size} broke a uniqueness rule that no stored dedup key explains (does storage hold entries beyond the tree size?)"
                    ));
                }
                Err(Commit::Failed(e, next)) => {
                    reply.fail_all(requests, e);
                    return next;
                }
            }
        };

        // Receipts, all against the latest checkpoint (this batch's if it had
        // new entries), are built and sent by a task of their own so that the
        // sequencer can start on the next batch at once.
        let job = Answers {
            requests,
            slots,
            entries,
            existing,
            old_size,
            snapshot: self.log.snapshot(),
            overlay,
        };
        tokio::spawn(reply.send(job));
        Mode::Writer
    }
}

impl Sequencer {
    /// Checks every request against the registry in force now: a record
    /// validated by another version than the current one (the registry
    /// changed while it queued) is checked again, and a request whose
    /// records no longer pass is answered with the error and dropped; a
    /// registry change is checked to still be the next version.
    fn recheck(&self, requests: Vec<Request>, reply: &super::Reply) -> Vec<Request> {
        let registry = &self.registry;
        let mut out = Vec::with_capacity(requests.len());
        for mut r in requests {
            let result = if let Some(def) = r.items.iter().find_map(|p| p.definition.clone()) {
                let agency = r.items[0].agency.clone();
                registry.check_change(&def, &agency).map(|_| ())
            } else {
                let stale = r.items.iter().any(|p| {
                    registry.current(&p.record.r#type).map(|t| t.def.version) != p.type_version
                });
                if stale {
                    let records: Vec<_> = r.items.iter().map(|p| p.record.clone()).collect();
                    check_records(&self.log, registry, &r.items[0].agency, &records, r.bulk).map(
                        |versions| {
                            for (p, v) in r.items.iter_mut().zip(versions) {
                                p.type_version = v;
                            }
                        },
                    )
                } else {
                    Ok(())
                }
            };
            match result {
                Ok(()) => out.push(r),
                Err(e) => reply.answer(r, Err(e)),
            }
        }
        out
    }

    /// The registry after this batch, if it changes it: each new entry
    /// that applies a definition is compiled at its index.
    fn registry_after(
        &self,
        requests: &[Request],
        slots: &[Vec<Slot>],
        entries: &[NewEntry],
    ) -> Result<Option<Arc<Registry>>, LogError> {
        let mut next: Option<Registry> = None;
        for (r, s) in requests.iter().zip(slots) {
            for (p, slot) in r.items.iter().zip(s) {
                let (Some(def), Slot::New { pos, created: true }) = (&p.definition, slot) else {
                    continue;
                };
                let registry = next.get_or_insert_with(|| (*self.registry).clone());
                if registry.check_change(def, &p.agency)? == Change::New {
                    let t = CompiledType::compile((**def).clone(), entries[*pos].index, &p.agency)?;
                    registry.insert(Arc::new(t));
                }
            }
        }
        Ok(next.map(Arc::new))
    }
}

/// The stored duplicates found by one look-up: dedup key → index, and
/// index → (leaf, leaf hash) for their receipts. A stored leaf that is not
/// UTF-8 is corrupt storage, never answered.
#[allow(clippy::type_complexity)]
fn stored_duplicates(
    found: Vec<(Hash, StoredEntry)>,
) -> Result<(HashMap<Hash, u64>, HashMap<u64, (Bytes, Hash)>), LogError> {
    let mut keys = HashMap::with_capacity(found.len());
    let mut leaves = HashMap::with_capacity(found.len());
    for (key, e) in found {
        std::str::from_utf8(&e.leaf).map_err(LogError::internal)?;
        keys.insert(key, e.index);
        leaves.insert(e.index, (Bytes::from(e.leaf), e.leaf_hash));
    }
    Ok((keys, leaves))
}

/// Assigns indexes: stored duplicates point at their entry, repeats within
/// the batch share one new entry, the rest become new entries `old_size..`
/// with leaves stamped `ts_ms`.
fn sequence(
    requests: &[Request],
    stored: &HashMap<Hash, u64>,
    old_size: u64,
    ts_ms: i64,
) -> (Vec<NewEntry>, Vec<Vec<Slot>>) {
    let mut entries: Vec<NewEntry> = Vec::new();
    let mut new_pos: HashMap<Hash, usize> = HashMap::new();
    let mut slots: Vec<Vec<Slot>> = Vec::with_capacity(requests.len());
    for r in requests {
        let mut s = Vec::with_capacity(r.items.len());
        for p in &r.items {
            if let Some(&index) = stored.get(&p.dedup_key) {
                s.push(Slot::Existing(index));
            } else if let Some(&pos) = new_pos.get(&p.dedup_key) {
                s.push(Slot::New {
                    pos,
                    created: false,
                });
            } else {
                let pos = entries.len();
                // A private record's leaf never holds its record (a missing
                // version, which registered types never have, shows as 0).
                let leaf = Bytes::from(match &p.commitment {
                    Some(c) => private_leaf_bytes(
                        &p.agency,
                        &p.record.r#type,
                        p.type_version.unwrap_or(0),
                        c,
                        ts_ms,
                    ),
                    None => leaf_bytes(&p.agency, &p.record, p.type_version, ts_ms),
                });
                entries.push(NewEntry {
                    index: old_size + pos as u64,
                    leaf_hash: leaf_hash(&leaf),
                    leaf,
                    dedup_key: p.dedup_key,
                    ts_ms,
                    effect: p.effect.clone(),
                });
                new_pos.insert(p.dedup_key, pos);
                s.push(Slot::New { pos, created: true });
            }
        }
        slots.push(s);
    }
    (entries, slots)
}
