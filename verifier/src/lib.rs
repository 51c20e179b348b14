//! The vmseal verifier: appraises publicly verified snapshot evidence against golden baselines and
//! scores trust. [`appraise`] is the decision logic, with no I/O; the service around it (mutual-TLS
//! API, enrollment, storage) builds on it.
#![forbid(unsafe_code)]

pub mod appraise;
pub mod bench;
pub mod pki;
pub mod server;
pub mod store;
