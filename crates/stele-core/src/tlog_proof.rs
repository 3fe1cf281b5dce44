//! C2SP `tlog-proof@v1`: an offline-verifiable proof of inclusion.
//!
//! ```text
//! c2sp.org/tlog-proof@v1
//! [extra <base64>]
//! index <N>
//! <base64 hash>...
//!
//! <checkpoint note, verbatim>
//! ```

use crate::checkpoint::Checkpoint;
use crate::note::Verifier;
use crate::{Error, Hash};

/// A parsed `tlog-proof@v1`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlogProof {
    pub extra: Option<Vec<u8>>,
    pub index: u64,
    pub proof: Vec<Hash>,
    /// The signed checkpoint note, verbatim.
    pub checkpoint: String,
}

impl TlogProof {
    pub fn parse(text: &str) -> Result<Self, Error> {
        todo!()
    }
    pub fn encode(&self) -> String {
        todo!()
    }
    /// Verifies that `leaf` is at `index` in the checkpoint, and that the
    /// checkpoint is signed by `verifier`.
    pub fn verify(&self, leaf: &[u8], verifier: &Verifier) -> Result<Checkpoint, crate::receipt::ReceiptError> {
        todo!()
    }
}
