//! Integration tests of the sealer, one binary with modules.

mod evidence;
mod pqc_vectors;
mod snp_standin;
mod snp_vectors;
mod tpm;
