//! HTTP API (stub).

pub mod web;
