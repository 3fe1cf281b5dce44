//! Stele receipts: what a `POST` returns, verifiable offline with the log's
//! vkey alone. Verification goes leaf → leaf hash → inclusion proof →
//! checkpoint signature, and says exactly which step failed.

use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoint;
use crate::note::Verifier;
use crate::Hash;

/// A receipt as the service returns it (JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The log's origin.
    pub log: String,
    pub index: u64,
    /// The exact leaf bytes (canonical JSON of the record).
    pub leaf: String,
    /// Hex SHA-256 leaf hash.
    pub leaf_hash: String,
    /// Hex hashes.
    pub inclusion_proof: Vec<String>,
    /// Signed checkpoint note text.
    pub checkpoint: String,
    /// The same proof as C2SP `tlog-proof@v1` text.
    pub tlog_proof: String,
}

/// The verification steps, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Parse the receipt's fields (hashes, checkpoint, tlog-proof).
    Parse,
    /// The leaf hashes to `leaf_hash`.
    LeafHash,
    /// The checkpoint is signed by the trusted key, and names the log.
    CheckpointSignature,
    /// The inclusion proof leads from the leaf hash to the checkpoint root.
    InclusionProof,
    /// The `tlog_proof` says the same as the JSON fields.
    TlogProof,
}

/// A failed step and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{step:?} failed: {detail}")]
pub struct ReceiptError {
    pub step: Step,
    pub detail: String,
}

/// What a successful verification established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedReceipt {
    pub index: u64,
    pub leaf_hash: Hash,
    pub checkpoint: Checkpoint,
}

impl Receipt {
    /// Builds a receipt (service side).
    pub fn new(origin: &str, index: u64, leaf: String, inclusion_proof: &[Hash], checkpoint_note: String) -> Self {
        todo!()
    }

    /// Verifies the receipt offline against the log's verifier key.
    pub fn verify(&self, verifier: &Verifier) -> Result<VerifiedReceipt, ReceiptError> {
        todo!()
    }
}
