//! The steps of verifying a receipt or a `tlog-proof`, and the error that
//! names the one that failed. Shared by [`crate::receipt`] and
//! [`crate::tlog_proof`], which both verify in these steps.

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

impl ReceiptError {
    pub(crate) fn new(step: Step, detail: impl Into<String>) -> Self {
        ReceiptError {
            step,
            detail: detail.into(),
        }
    }
}
