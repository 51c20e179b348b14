//! Load generators for the vmseal verifier: benchmarks, not tests, and not part of the shipped
//! verifier. Both start the real service in this process (`vmseal_verifier::service::start`, the
//! same function `serve` runs), with synthetic hosts and VMs, and measure it from the outside over
//! mutual TLS.
//!
//! - [`appraise`]: one enrolled host, pre-sealed evidence chains submitted by a few clients;
//!   appraisals per second and per CPU-second of the service, against the same clients' `/healthz`
//!   in the same run.
//! - [`fleet`]: many agents, each its own enrolled host, certificate and connection, on SQLite or
//!   PostgreSQL, back to back or at an offered rate; latency percentiles and the service's CPU per
//!   appraisal.
//!
//! The synthetic evidence ([`appraise::synthetic_claims`]) is what the
//! verifier's API tests and its criterion benchmark seal too.
#![forbid(unsafe_code)]

pub mod appraise;
pub mod fleet;
