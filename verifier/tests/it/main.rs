//! The verifier over real mutual TLS on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step is a failed test

mod api;
mod corim;
mod fuzz_smoke;
mod replicas;
mod ui;
