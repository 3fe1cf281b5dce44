//! Test support shared by the integration suites: fresh PostgreSQL
//! databases, spawned `stele serve` processes, and the invariant checker.

pub mod checker;
pub mod pg;
pub mod process;
pub mod server;
