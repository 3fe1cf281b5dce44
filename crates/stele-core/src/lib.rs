//! # stele-core — the verification core of Stele
//!
//! Everything a verifier of a Stele log needs, and everything the service
//! needs to build what verifiers check:
//!
//! - [`hash`]: RFC 6962 leaf and interior node hashing, the [`Hash`] type.
//! - [`merkle`]: tree roots, inclusion and consistency proof **generation**
//!   from a narrow [`merkle::HashReader`] trait, and proof **verification**.
//! - [`tile`]: C2SP `tlog-tiles` math, tile paths, entry bundles, and the
//!   right-edge [`tile::TreeBuilder`] that appends leaves and says which
//!   tiles changed.
//! - [`checkpoint`]: C2SP `tlog-checkpoint` bodies.
//! - [`note`]: C2SP `signed-note` with Ed25519 (sign, verify, key ids,
//!   `vkey`/`skey` forms, key generation).
//! - [`cosignature`]: C2SP `tlog-cosignature` (`cosignature/v1`):
//!   timestamped Ed25519 witness cosignatures, witness keys, verifying the
//!   cosignatures on a checkpoint.
//! - [`policy`]: C2SP `tlog-policy`: logs, witnesses, k-of-n groups, the
//!   quorum, and opening a checkpoint under a policy.
//! - [`witness`]: C2SP `tlog-witness`: the `add-checkpoint` request, the
//!   witness's decision (every status of the spec), and reading its answer.
//! - [`tlog_proof`]: C2SP `tlog-proof@v1` offline proofs.
//! - [`receipt`]: Stele receipts and their step-by-step verification.
//!
//! ## Deliberately not here
//!
//! No I/O of any kind (no files, no network, no clock), no async runtime, no
//! HTTP types, no database driver, no logging. (The optional `openapi`
//! feature only lets [`receipt::Receipt`] describe itself for the server's
//! OpenAPI document.) Callers read tiles, hashes and
//! notes however they like and hand bytes in. Nothing here knows about
//! agencies, record types or the JSON record format: the tree is generic over
//! opaque leaf bytes. Notes are signed with Ed25519 (`0x01`) and cosigned
//! with Ed25519 `cosignature/v1` (`0x04`) only: ML-DSA-44 cosignatures
//! (`0x06`, `subtree/v1`) and the witness's optional `sign-subtree` call are
//! not implemented, and signatures of other types are ignored like any
//! unknown key. The witness protocol is here as pure functions (parse,
//! decide, encode) over a state the caller stores: no HTTP server or
//! client, no storage, and no clock (the cosignature time is passed in).
//! There is no tile client or fetching, no caching, and no key storage: an
//! `skey` is a string the caller keeps safe.
//!
//! ## Where the code comes from
//!
//! Signed notes use the `signed_note` crate (a port of Go's
//! `golang.org/x/mod/sumdb/note`) for the note grammar, key ids and Ed25519
//! signatures. Everything else is written here: RFC 9162 proof algorithms
//! over a [`merkle::HashReader`] of `(level, index)` nodes, C2SP tile paths
//! (`tile/<L>/<N>`, `tile/entries/<N>`), entry bundles, the tree builder,
//! checkpoints, `tlog-proof@v1` and receipts. Cosignatures, policies and the
//! witness protocol are written here too, over `signed_note`'s note grammar
//! and `ed25519-dalek`. Tests cross-check proofs against `tlog_tiles`, an
//! independent port of Go's `sumdb/tlog`.
//!
//! ## Edge cases, decided
//!
//! - Tree size 0 has root `SHA-256("")`; it has no leaves, so no inclusion
//!   proof exists in it.
//! - A consistency proof from size 0 to any size is the empty proof (every
//!   tree extends the empty tree); a non-empty proof from size 0 is rejected.
//! - `index >= size` is an error, never a panic.
//! - Sizes and indexes at or above 2^63 ([`merkle::MAX_TREE_SIZE`]) are
//!   rejected: checkpoints, tile paths and proofs in the ecosystem (Go's
//!   `int64`) cannot represent them.

pub mod checkpoint;
pub mod cosignature;
pub mod error;
pub mod hash;
pub mod merkle;
pub mod note;
pub mod policy;
pub mod receipt;
pub mod step;
pub mod tile;
pub mod tlog_proof;
pub mod witness;

pub use error::Error;
pub use hash::{leaf_hash, node_hash, Hash, EMPTY_ROOT, HASH_SIZE};
