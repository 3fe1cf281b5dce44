//! One log as the engine holds it: its keys, the read snapshot, the writer
//! status, and the queue into its sequencer.

use std::sync::{Arc, RwLock};
use std::time::Instant;

use stele_core::note::{Signer, Verifier};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::engine::records::Record;
use crate::engine::tiles::Snapshot;
use crate::engine::LogError;
use crate::metrics::LogLabel;

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
    /// `shutdown()` was called.
    Stopped,
}

/// One record waiting in the queue.
pub(crate) struct Pending {
    pub agency: String,
    pub record: Record,
    pub dedup_key: stele_core::Hash,
}

/// Where one submitted record ended up, with its inclusion proof at the
/// size of the answer's checkpoint.
pub(crate) struct Integrated {
    pub index: u64,
    pub leaf: String,
    pub proof: Vec<stele_core::Hash>,
    /// false for a duplicate (stored earlier, or repeated within the batch).
    pub created: bool,
}

/// The sequencer's answer to a request: everything a receipt needs. The
/// receipts themselves (hex, `tlog-proof` text) are assembled by the
/// submitting task, off the sequencer's serial path.
pub(crate) struct Integration {
    pub checkpoint: Arc<str>,
    pub items: Vec<Integrated>,
}

/// One request (a single submission or a bulk one) waiting for receipts.
pub(crate) struct Request {
    pub items: Vec<Pending>,
    pub reply: oneshot::Sender<Result<Integration, LogError>>,
    pub enqueued: Instant,
    /// Holds `items.len()` queue slots until the request is answered.
    pub _permit: OwnedSemaphorePermit,
}

pub(crate) struct Log {
    pub name: Arc<str>,
    pub origin: String,
    pub signer: Arc<Signer>,
    pub verifier: Verifier,
    pub vkey: String,
    pub label: LogLabel,
    pub snapshot: RwLock<Arc<Snapshot>>,
    pub status: RwLock<Status>,
    pub queue: mpsc::UnboundedSender<Request>,
    pub slots: Arc<Semaphore>,
}

impl Log {
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.read().expect("snapshot lock").clone()
    }

    pub fn set_snapshot(&self, s: Snapshot) {
        *self.snapshot.write().expect("snapshot lock") = Arc::new(s);
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
}
