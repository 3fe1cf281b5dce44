//! Test support shared by Stele's suites, as a dev-only crate: nothing here
//! is compiled into the `stele` binary.
//!
//! - [`checker`]: the invariant checker every suite runs after every step
//!   that writes, over HTTP, an engine or a storage backend;
//! - [`harness`]: suites as libtest-mimic trials, once per backend, with the
//!   rule for an unreachable PostgreSQL;
//! - [`store`]: a fresh database per test (SQLite or PostgreSQL);
//! - [`pg`]: fresh PostgreSQL databases and the `STELE_REQUIRE_POSTGRES` policy;
//! - [`server`]: an in-process server on `127.0.0.1:0`;
//! - [`process`]: `stele` processes, deployments and throwaway PostgreSQL clusters;
//! - [`faults`]: a storage wrapper that injects faults;
//! - [`s3`]: a real S3-compatible server (`s3s-fs`); [`static_site`]: a
//!   plain static file server over a directory;
//! - [`synthetic`]: real Merkle batches with signed checkpoints, for tests
//!   that write storage directly.

pub mod agency;
pub mod checker;
pub mod faults;
pub mod harness;
pub mod pg;
pub mod process;
pub mod s3;
pub mod server;
pub mod static_site;
pub mod store;
pub mod synthetic;
