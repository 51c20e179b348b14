//! The vmseal hierarchical seal, and its public verification.
//!
//! vmseal attests the *runtime* memory of virtual machines. Every snapshot of a VM's memory is
//! summarised as a set of Merkle roots ([`merkle`]) inside a deterministic CBOR claims map
//! ([`claims`]), signed as a COSE_Sign1 ([`evidence`]) by a one-time ML-DSA-65 *leaf* key
//! ([`keys::LeafKey`]). The leaf is certified by a long-lived ML-DSA-87 *intermediate* key
//! ([`keys::IntermediateKey`]) whose X.509 certificate ([`x509`]) carries the hardware anchors that
//! vouch for it:
//!
//! ```text
//! TPM EK cert ─▶ AK ── TPM2_Quote(extraData = SHA-256(intermediate SPKI ‖ nonce)) ─┐
//! AMD ARK ─▶ ASK ─▶ VCEK ── SNP report(REPORT_DATA = SHA-512(SPKI ‖ nonce)) ───────┤
//!                                                                                    ▼
//!                                            intermediate (ML-DSA-87), X.509, anchors in extensions
//!                                                     │ one per snapshot
//!                                                     ▼
//!                                            leaf (ML-DSA-65), used once, then erased
//!                                                     │
//!                                                     ▼
//!                                            evidence: COSE_Sign1 over CBOR claims
//! ```
//!
//! Verification ([`verify`]) needs public material only: the evidence bytes and a
//! [`verify::TrustConfig`] naming the trusted roots and the anchors a policy requires.
//!
//! ```no_run
//! use vmseal_sealer::verify::{TrustConfig, verify_evidence};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let bytes = std::fs::read("snapshot.cose")?;
//! let trust = TrustConfig::default(); // genuine AMD roots, TPM anchor required
//! let verified = verify_evidence(&bytes, &trust, time::OffsetDateTime::now_utc())?;
//! println!("{} seq {} memory root {}", verified.claims.vm_id, verified.claims.seq,
//!          hex::encode(&verified.claims.memory_root));
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod anchor;
pub mod chain;
pub mod claims;
pub mod evidence;
pub mod keys;
pub mod merkle;
pub mod oid;
pub mod snp;
pub mod state;
pub mod tpm;
pub mod verify;
pub mod x509;

#[doc(hidden)]
pub mod fuzzing;
