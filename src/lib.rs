//! Stele: a verifiable record log service.
//!
//! The binary (`stele`) is a thin shell over this library: [`cli`] parses the
//! command line, [`config`] the configuration, [`engine`] runs the logs over a
//! [`storage`] backend, and [`api`] serves them over HTTP.

pub mod api;
pub mod cli;
pub mod config;
pub mod engine;
pub mod error;
pub mod files;
pub mod metrics;
pub mod names;
pub mod records;
pub mod registry;
pub mod storage;
pub mod vault;
pub mod wire;
pub mod witness;
