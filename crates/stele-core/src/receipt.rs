//! Stele receipts: what a `POST` returns, verifiable offline with the log's
//! vkey alone. Verification goes parse → leaf hash → checkpoint signature →
//! inclusion proof → tlog-proof agreement, and says exactly which step
//! failed.

use serde::{Deserialize, Serialize};

use crate::checkpoint::{short, Checkpoint};
use crate::note::Verifier;
use crate::tlog_proof::TlogProof;
use crate::Hash;

pub use crate::step::{ReceiptError, Step};

/// A receipt: verifiable offline with the log's vkey alone. This is the
/// JSON the service returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Receipt {
    /// The log's origin.
    pub log: String,
    pub index: u64,
    /// The exact leaf bytes (canonical JSON of the record).
    pub leaf: String,
    /// Hex SHA-256 leaf hash (RFC 6962).
    pub leaf_hash: String,
    /// Hex hashes from the leaf up to the checkpoint's root.
    pub inclusion_proof: Vec<String>,
    /// The signed checkpoint note covering the record.
    pub checkpoint: String,
    /// The same proof as C2SP `tlog-proof@v1` text.
    pub tlog_proof: String,
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
    pub fn new(
        origin: &str,
        index: u64,
        leaf: String,
        inclusion_proof: &[Hash],
        checkpoint_note: String,
    ) -> Self {
        let tlog_proof = TlogProof {
            extra: None,
            index,
            proof: inclusion_proof.to_vec(),
            checkpoint: checkpoint_note.clone(),
        };
        Receipt {
            log: origin.to_string(),
            index,
            leaf_hash: crate::leaf_hash(leaf.as_bytes()).to_hex(),
            leaf,
            inclusion_proof: inclusion_proof.iter().map(Hash::to_hex).collect(),
            checkpoint: checkpoint_note,
            tlog_proof: tlog_proof.encode(),
        }
    }

    /// Verifies the receipt offline against the log's verifier key.
    ///
    /// Steps, in order: parse the fields; the leaf hashes to `leaf_hash`;
    /// the checkpoint is signed by `verifier`, and its origin, the `log`
    /// field and the key name agree; the inclusion proof leads to the
    /// checkpoint's root; `tlog_proof` carries the same index, proof and
    /// checkpoint. The first failure is returned.
    pub fn verify(&self, verifier: &Verifier) -> Result<VerifiedReceipt, ReceiptError> {
        // Parse.
        let leaf_hash = Hash::from_hex(&self.leaf_hash)
            .map_err(|e| ReceiptError::new(Step::Parse, format!("leaf_hash: {e}")))?;
        let proof = self
            .inclusion_proof
            .iter()
            .enumerate()
            .map(|(i, h)| {
                Hash::from_hex(h).map_err(|e| {
                    ReceiptError::new(Step::Parse, format!("inclusion_proof[{i}]: {e}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        crate::note::parse_unverified_checkpoint(&self.checkpoint)
            .map_err(|e| ReceiptError::new(Step::Parse, format!("checkpoint: {e}")))?;
        let tlog = TlogProof::parse(&self.tlog_proof)
            .map_err(|e| ReceiptError::new(Step::Parse, format!("tlog_proof: {e}")))?;

        // Leaf hash.
        let computed = crate::leaf_hash(self.leaf.as_bytes());
        if computed != leaf_hash {
            return Err(ReceiptError::new(
                Step::LeafHash,
                format!("leaf hashes to {computed}, receipt says {leaf_hash}"),
            ));
        }

        // Checkpoint signature, and the names agree.
        let checkpoint = crate::note::open_checkpoint(&self.checkpoint, verifier)
            .map_err(|e| ReceiptError::new(Step::CheckpointSignature, e.to_string()))?;
        if self.log != checkpoint.origin {
            return Err(ReceiptError::new(
                Step::CheckpointSignature,
                format!(
                    "receipt log {:?} is not the checkpoint origin {:?}",
                    short(&self.log),
                    checkpoint.origin
                ),
            ));
        }

        // Inclusion proof.
        crate::merkle::verify_inclusion(
            &leaf_hash,
            self.index,
            checkpoint.size,
            &proof,
            &checkpoint.root,
        )
        .map_err(|e| {
            ReceiptError::new(
                Step::InclusionProof,
                format!(
                    "leaf {} in tree of size {}: {e}",
                    self.index, checkpoint.size
                ),
            )
        })?;

        // The tlog-proof says the same.
        if tlog.index != self.index {
            return Err(ReceiptError::new(
                Step::TlogProof,
                format!(
                    "tlog_proof index {} is not the receipt index {}",
                    tlog.index, self.index
                ),
            ));
        }
        if tlog.proof != proof {
            return Err(ReceiptError::new(
                Step::TlogProof,
                "tlog_proof hashes differ from inclusion_proof",
            ));
        }
        if tlog.checkpoint != self.checkpoint {
            return Err(ReceiptError::new(
                Step::TlogProof,
                "tlog_proof checkpoint differs from the receipt checkpoint",
            ));
        }

        Ok(VerifiedReceipt {
            index: self.index,
            leaf_hash,
            checkpoint,
        })
    }
}
