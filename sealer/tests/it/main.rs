//! Integration tests of the sealer, one binary with modules.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step is a failed test

mod evidence;
mod fuzz_smoke;
mod guest_state;
mod interop;
mod pqc_vectors;
mod snp_standin;
mod snp_vectors;
mod tpm;
