//! Test support shared by Stele's suites, as a dev-only crate: nothing here
//! is compiled into the `stele` binary.
//!
//! - [`pg`]: a fresh, migrated PostgreSQL database per test, and the rule
//!   for when PostgreSQL is unreachable (ignored with a reason, or failed
//!   under `STELE_REQUIRE_POSTGRES=1`);
//! - [`server`]: an in-process server on `127.0.0.1:0`;
//! - [`process`]: `stele` processes and throwaway PostgreSQL clusters;
//! - [`checker`]: the invariant checker every suite runs after every step.

pub mod checker;
pub mod faults;
pub mod pg;
pub mod process;
pub mod server;
