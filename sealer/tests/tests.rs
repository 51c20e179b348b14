//! Integration tests of the sealer, one binary with modules.

mod tpm;
