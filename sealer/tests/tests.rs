//! Integration tests of the sealer, one binary with modules.

mod evidence;
mod snp_standin;
mod snp_vectors;
mod tpm;
