//! Golden baselines as signed CoRIM (draft-ietf-rats-corim-11; the mapping is
//! [`vmseal_client::corim`]): export any baseline version, import reference values a trusted
//! provider signed (a kernel build's, or another verifier's export).
//!
//! - `GET /v1/corim/signer`: this verifier's reference-value key (Ed25519, `corim.key` in the
//!   state directory), PEM, for other readers' trust lists.
//! - `GET /v1/vms/{vm}/baselines`: the versions, and where each came from.
//! - `GET /v1/vms/{vm}/baselines/{version}/corim`: one version as a signed CoRIM. A version
//!   imported from a CoRIM is that document, byte for byte, under its signer's signature; a version
//!   promoted from a snapshot is signed by this verifier's key (Ed25519 is deterministic: the same
//!   version always gives the same bytes).
//! - `POST /v1/vms/{vm}/baselines/corim`: import. The signature must verify with this verifier's
//!   own key or a key in `corim_signers` (the service's configuration; no API call adds one), and
//!   the values must fit what the verifier decided for the VM: the assigned policy's digest, every
//!   region the policy names and no other, the policy's hash. The policy's labels (class,
//!   severity) win over the CoRIM's.

use std::path::Path;
use vmseal_client::corim::{Ed25519CorimKey, TrustedKey};

use crate::pki::PkiError;

/// The file of the verifier's reference-value signing key in its state directory.
pub const KEY_FILE: &str = "corim.key";

/// The CWT issuer of the CoRIMs this verifier signs.
pub const ISSUER: &str = "vmseal verifier";

/// The reference-value signing key of the state in `dir` (`corim.key`), made on first use.
/// Replicas share it with the rest of the state directory.
pub fn load_or_create_key(dir: &Path) -> Result<Ed25519CorimKey, PkiError> {
    let p = dir.join(KEY_FILE);
    if !p.exists() {
        let pem = Ed25519CorimKey::generate_pem().map_err(|e| PkiError::Cert(e.to_string()))?;
        vmseal_sealer::state::write_atomic(&p, pem.as_bytes())
            .map_err(|e| PkiError::Cert(format!("{}: {e}", p.display())))?;
    }
    let pem = zeroize::Zeroizing::new(std::fs::read(&p).map_err(|source| PkiError::Io {
        path: p.clone(),
        source,
    })?);
    Ed25519CorimKey::from_pem(&pem, ISSUER)
        .map_err(|e| PkiError::Cert(format!("{}: {e}", p.display())))
}

/// The keys whose CoRIMs are imported: this verifier's own, then the configured signers'.
pub fn read_signers(paths: &[std::path::PathBuf]) -> Result<Vec<TrustedKey>, String> {
    paths
        .iter()
        .map(|p| {
            let pem =
                std::fs::read(p).map_err(|e| format!("corim_signers: {}: {e}", p.display()))?;
            TrustedKey::from_pem(p.display().to_string(), &pem)
                .map_err(|e| format!("corim_signers: {e}"))
        })
        .collect()
}
