//! One log as the engine holds it: its keys, the read snapshot, the writer
//! status, and the queue into its sequencer; and what travels through that
//! queue (a [`Request`] of [`Pending`] records, answered with one
//! [`Integrated`] per record).

use std::sync::{Arc, RwLock};
use std::time::Instant;

use bytes::Bytes;
use stele_core::note::{Signer, Verifier};
use stele_core::receipt::Receipt;
use stele_core::Hash;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use super::quota::QueueShares;
use super::tiles::Snapshot;
use crate::error::LogError;
use crate::metrics::LogLabel;
use crate::names::{AgencyName, LogName};
use crate::records::Record;
use crate::registry::{Registry, TypeDefinition};
use crate::storage::Effect;

/// Whether the log takes submissions, and if not, why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    /// This process is the writer and its state matches storage.
    Writable,
    /// Another process holds the writer lease; reads only.
    NotWriter(String),
    /// The database is unreachable; the sequencer reloads state when it is back.
    Unavailable(String),
    /// The stored state failed verification, or another writer moved the log
    /// under this one: reads only, until an operator looks.
    Refused(String),
    /// A read node (on a streaming replica): never writes; submissions are
    /// sent to `writer`. `behind`: why what it serves is not current yet
    /// (the replica is behind the tree this node served before).
    Reader {
        writer: Option<String>,
        behind: Option<String>,
    },
    /// `shutdown()` was called.
    Stopped,
}

impl Status {
    /// The error a submission gets in this status (None: writable).
    pub(crate) fn error(&self, retry_after: std::time::Duration) -> Option<LogError> {
        match self {
            Status::Writable => None,
            Status::NotWriter(m) | Status::Refused(m) => Some(LogError::Pushback {
                detail: m.clone(),
                retry_after,
            }),
            Status::Unavailable(m) => Some(LogError::Unavailable(m.clone())),
            Status::Reader { writer, .. } => Some(misdirected(writer.as_deref())),
            Status::Stopped => Some(LogError::Pushback {
                detail: "the service is shutting down".into(),
                retry_after,
            }),
        }
    }
}

/// What a write sent to a read node gets (`writer`: the writer's URL).
pub(crate) fn misdirected(writer: Option<&str>) -> LogError {
    LogError::Misdirected {
        detail: match writer {
            Some(w) => format!("this is a read node: send writes to the writer at {w}"),
            None => "this is a read node: send writes to the log's writer".into(),
        },
        writer: writer.map(str::to_string),
    }
}

/// One record waiting in the queue.
pub(crate) struct Pending {
    pub agency: AgencyName,
    pub record: Record,
    pub dedup_key: Hash,
    /// The registry version that validated the record (its leaf's
    /// `type_version`); None for an unregistered type a log accepts.
    pub type_version: Option<u32>,
    /// For a registry entry: the definition it applies.
    pub definition: Option<Arc<TypeDefinition>>,
    /// For a private record: its commitment (the leaf carries it instead
    /// of the record), with its sealed content in `effect`.
    pub commitment: Option<Arc<str>>,
    /// What committing the entry also does (stores sealed content, erases).
    pub effect: Effect,
}

impl Request {
    /// A registry change: sequenced in a batch of its own, so every other
    /// batch is checked against one registry.
    pub fn is_registry(&self) -> bool {
        self.items.iter().any(|p| p.definition.is_some())
    }
}

/// A record integrated into the log and everything its receipt is made of.
/// The sequencer's receipt task builds it (the leaf hash was computed once,
/// when the leaf was sequenced) and the HTTP layer writes it to JSON as it
/// is; [`Integrated::receipt`] gives the same receipt as the core's
/// [`Receipt`] (its JSON shape), for tests and clients.
#[derive(Clone, Debug)]
pub struct Integrated {
    /// The log's origin.
    pub origin: Arc<str>,
    pub index: u64,
    /// The exact leaf bytes (UTF-8: the canonical JSON of the record).
    pub leaf: Bytes,
    pub leaf_hash: Hash,
    /// Inclusion proof of the leaf in `checkpoint`'s tree.
    pub proof: Vec<Hash>,
    /// The signed checkpoint note (one per batch, shared by its receipts).
    pub checkpoint: Arc<str>,
    /// false when the same agency had already submitted the same body
    /// (stored earlier, or repeated within the batch).
    pub created: bool,
    /// `checkpoint` is one the log's witness quorum cosigned (a witnessed
    /// receipt); false for the log-signed checkpoint of a batch.
    pub witnessed: bool,
}

impl Integrated {
    /// The leaf as text (leaves are UTF-8; a leaf that is not would have
    /// been refused when it was read from storage).
    pub fn leaf_text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.leaf)
    }

    pub fn receipt(&self) -> Receipt {
        Receipt::new(
            &self.origin,
            self.index,
            self.leaf_text().into_owned(),
            &self.proof,
            self.checkpoint.to_string(),
        )
    }
}

/// One request (a single submission or a bulk one) waiting for receipts.
pub(crate) struct Request {
    pub items: Vec<Pending>,
    /// A bulk request: errors name the record (`records[3]`).
    pub bulk: bool,
    pub reply: oneshot::Sender<Result<Vec<Integrated>, LogError>>,
    pub enqueued: Instant,
    /// Holds `items.len()` queue slots until the request is answered...
    pub _permit: OwnedSemaphorePermit,
    /// ... and as many of its agency's share of them.
    pub _share: OwnedSemaphorePermit,
}

pub(crate) struct Log {
    pub name: LogName,
    pub origin: Arc<str>,
    /// None on a read node.
    pub signer: Option<Arc<Signer>>,
    pub verifier: Verifier,
    pub vkey: String,
    /// The high-water mark file, if the log has one (`sequencer::mark`).
    pub mark_file: Option<std::path::PathBuf>,
    pub label: LogLabel,
    pub snapshot: RwLock<Arc<Snapshot>>,
    pub status: RwLock<Status>,
    pub queue: mpsc::UnboundedSender<Request>,
    pub slots: Arc<Semaphore>,
    /// `queue_capacity`, to report the queue depth.
    pub capacity: usize,
    /// How much of the queue each agency holds.
    pub shares: QueueShares,
    /// Why the last commit failed, until one succeeds (readiness says it;
    /// submissions still try).
    pub commit_failure: RwLock<Option<String>>,
    /// The record-type registry as of the tree size beside it (the
    /// sequencer's, published after each registry change; a follower's,
    /// replayed from storage as the tree grows).
    pub registry: RwLock<(Arc<Registry>, u64)>,
    /// Whether records of types the registry does not know are accepted
    /// (unvalidated, without `type_version`): only for logs that predate
    /// the registry, by configuration.
    pub accept_unregistered: bool,
    /// The log's witnesses, if it has a policy.
    pub witnesses: Option<Arc<super::witnessing::Federation>>,
    /// The tree size of the latest snapshot, for tasks that follow the
    /// log (the publisher).
    pub grown: tokio::sync::watch::Sender<u64>,
    /// Where the log's tiles are published, if they are.
    pub publisher: Option<Arc<super::publishing::Publisher>>,
}

impl Log {
    /// Why the witnesses say this log's tree must not be extended, if they do.
    pub fn witness_alarm(&self) -> Option<String> {
        self.witnesses.as_ref().and_then(|f| f.alarm())
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.read().expect("snapshot lock").clone()
    }

    pub fn set_snapshot(&self, s: Snapshot) {
        let size = s.size;
        *self.snapshot.write().expect("snapshot lock") = Arc::new(s);
        self.grown.send_replace(size);
    }

    /// The checkpoint this log shows the world, with its tree size: with a
    /// witness policy the latest one a quorum cosigned, else the latest one
    /// it signed. None: there is none yet.
    pub fn public_checkpoint(&self) -> Option<(u64, Arc<str>)> {
        match &self.witnesses {
            Some(f) => f.published().map(|p| (p.size, p.note.clone())),
            None => {
                let s = self.snapshot();
                s.checkpoint.as_deref().map(|c| (s.size, Arc::from(c)))
            }
        }
    }

    pub fn registry(&self) -> Arc<Registry> {
        self.registry.read().expect("registry lock").0.clone()
    }

    /// The registry and the tree size it covers.
    pub fn registry_at(&self) -> (Arc<Registry>, u64) {
        self.registry.read().expect("registry lock").clone()
    }

    pub fn set_registry(&self, r: Arc<Registry>, size: u64) {
        *self.registry.write().expect("registry lock") = (r, size);
    }

    pub fn status(&self) -> Status {
        self.status.read().expect("status lock").clone()
    }

    pub fn set_status(&self, s: Status) {
        let mut cur = self.status.write().expect("status lock");
        if *cur != Status::Stopped {
            *cur = s;
        }
    }

    pub fn set_commit_failure(&self, why: Option<String>) {
        *self.commit_failure.write().expect("commit failure lock") = why;
    }

    pub fn commit_failure(&self) -> Option<String> {
        self.commit_failure
            .read()
            .expect("commit failure lock")
            .clone()
    }

    /// Records taken from the queue's capacity right now (pending, being
    /// sequenced, or waiting for their receipts).
    pub fn queue_depth(&self) -> usize {
        self.capacity.saturating_sub(self.slots.available_permits())
    }
}
