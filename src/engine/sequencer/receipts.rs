//! Answering the waiters of a batch: every inclusion proof of the batch in
//! one pass over the tiles, then one [`Integrated`] per record, off the
//! sequencer's serial path (a task of its own per batch).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use stele_core::Hash;

use super::batch::Slot;
use super::commit::Overlay;
use super::Ctx;
use crate::engine::log::{Integrated, Log, Request};
use crate::engine::tiles::{ProofJob, Snapshot, TileSource};
use crate::error::LogError;
use crate::storage::NewEntry;

/// What the receipt task needs from a committed (or all-duplicate) batch.
pub(super) struct Answers {
    pub requests: Vec<Request>,
    pub slots: Vec<Vec<Slot>>,
    pub entries: Vec<NewEntry>,
    /// Leaf and leaf hash of each stored duplicate, by index.
    pub existing: HashMap<u64, (Bytes, Hash)>,
    pub old_size: u64,
    pub snapshot: Arc<Snapshot>,
    pub overlay: Overlay,
}

/// Answers waiting submitters (from the sequencer or the receipt task).
pub(crate) struct Reply {
    pub log: Arc<Log>,
    pub ctx: Arc<Ctx>,
}

impl Reply {
    /// Builds every inclusion proof of the batch in one pass and answers
    /// each request.
    pub(super) async fn send(self, job: Answers) {
        let Answers {
            requests,
            slots,
            entries,
            existing,
            old_size,
            snapshot,
            overlay,
        } = job;
        let Some(checkpoint) = snapshot.checkpoint.clone() else {
            return self.fail_all(requests, LogError::bug("no checkpoint after a batch"));
        };
        let size = snapshot.size;
        let index_of = |s: &Slot| match *s {
            Slot::New { pos, .. } => old_size + pos as u64,
            Slot::Existing(i) => i,
        };
        let mut indexes: Vec<u64> = slots.iter().flatten().map(index_of).collect();
        indexes.sort_unstable();
        indexes.dedup();
        let jobs: Vec<ProofJob> = indexes
            .iter()
            .map(|&index| ProofJob::Inclusion { index, size })
            .collect();
        let source = TileSource::new(
            self.log.name.as_arc(),
            &*self.ctx.storage,
            &self.ctx.cache,
            &snapshot,
            Some(&overlay),
        );
        let proofs: HashMap<u64, Vec<Hash>> = match source.prove(&jobs).await {
            Ok(p) => indexes.iter().copied().zip(p).collect(),
            Err(e) => {
                tracing::error!(log = %self.log.name, "cannot build receipts: {e:?}");
                let e = LogError::Unavailable(
                    "receipt not available; retry (a retry is deduplicated)".into(),
                );
                return self.fail_all(requests, e);
            }
        };
        let checkpoint: Arc<str> = checkpoint.into();
        for (r, s) in requests.into_iter().zip(slots) {
            let items = s
                .iter()
                .map(|slot| {
                    let index = index_of(slot);
                    let (leaf, leaf_hash, created) = match *slot {
                        Slot::New { pos, created } => {
                            let e = &entries[pos];
                            (e.leaf.clone(), e.leaf_hash, created)
                        }
                        Slot::Existing(i) => {
                            let (leaf, hash) = &existing[&i];
                            (leaf.clone(), *hash, false)
                        }
                    };
                    Integrated {
                        origin: self.log.origin.clone(),
                        index,
                        leaf,
                        leaf_hash,
                        proof: proofs[&index].clone(),
                        checkpoint: checkpoint.clone(),
                        created,
                        witnessed: false,
                    }
                })
                .collect();
            self.answer(r, Ok(items));
        }
        self.update_queue_depth();
    }

    /// Answers one request and counts it.
    pub(crate) fn answer(&self, r: Request, result: Result<Vec<Integrated>, LogError>) {
        let m = &self.ctx.metrics;
        let log = &self.log.name;
        match &result {
            Ok(items) => {
                let created = items.iter().filter(|s| s.created).count() as u64;
                m.submitted(log, "created", created);
                m.submitted(log, "duplicate", items.len() as u64 - created);
            }
            Err(LogError::Pushback { .. }) => m.submitted(log, "pushback", r.items.len() as u64),
            Err(_) => m.submitted(log, "failed", r.items.len() as u64),
        }
        m.time_to_receipt
            .get_or_create(&self.log.label)
            .observe(r.enqueued.elapsed().as_secs_f64());
        let _ = r.reply.send(result);
        // `r` (and its queue slots) is released here.
    }

    pub(crate) fn fail_all(&self, requests: Vec<Request>, e: LogError) {
        for r in requests {
            self.answer(r, Err(e.clone()));
        }
        self.update_queue_depth();
    }

    pub(crate) fn update_queue_depth(&self) {
        self.ctx
            .metrics
            .queue_depth
            .get_or_create(&self.log.label)
            .set(self.log.queue_depth() as i64);
    }
}
