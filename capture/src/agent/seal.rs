//! Sealing a snapshot as the next evidence of a VM's chain: claims from the snapshot and the
//! chain's position in the state, signed by the state's sealer, written atomically, the chain
//! advanced. Shared by `vmseal-host` and `vmseal-shim` (which captures from inside the guest).

use std::path::{Path, PathBuf};

use time::OffsetDateTime;
use vmseal_sealer::claims::{Claims, ModuleInfo};
use vmseal_sealer::merkle::HashAlg;
use vmseal_sealer::state::{HostState, StateError, write_atomic};

use crate::{Baseline, CaptureError, Snapshot};

/// Why sealing failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealSnapshotError {
    /// The state (chain position, evidence file).
    #[error(transparent)]
    State(#[from] StateError),
    /// Building the claims.
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// Signing.
    #[error(transparent)]
    Seal(#[from] vmseal_sealer::evidence::SealError),
    /// The stored chain position is corrupt.
    #[error("the stored chain of VM {vm}: {reason}")]
    Chain {
        /// VM.
        vm: String,
        /// Why.
        reason: String,
    },
}

/// Evidence just sealed.
#[derive(Debug, Clone)]
pub struct Sealed {
    /// Its claims.
    pub claims: Claims,
    /// Where it was written.
    pub out: PathBuf,
    /// The COSE_Sign1 bytes.
    pub evidence: Vec<u8>,
    /// SHA-256 of the evidence (the next evidence's `prev`).
    pub digest: [u8; 32],
}

/// SHA-256 of the running binary: the module's build digest in the claims.
pub fn self_digest() -> [u8; 32] {
    std::env::current_exe()
        .and_then(std::fs::read)
        .map(|b| HashAlg::Sha256.hash(&[&b]))
        .unwrap_or_default()
}

/// Seal `snap` as the next evidence of `vm_id`, made by `module` (e.g. "vmseal-host"), and write
/// it to `out`.
pub fn seal_snapshot(
    state: &HostState,
    module: &str,
    vm_id: &str,
    snap: &Snapshot,
    baseline: Option<&Baseline>,
    out: &Path,
) -> Result<Sealed, SealSnapshotError> {
    let chain = state.vm_chain(vm_id)?;
    let prev = chain
        .prev
        .as_deref()
        .map(|h| {
            hex::decode(h)
                .ok()
                .and_then(|d| <[u8; 32]>::try_from(d).ok())
                .ok_or_else(|| SealSnapshotError::Chain {
                    vm: vm_id.to_owned(),
                    reason: "the previous evidence digest is not 32 bytes of hex".into(),
                })
        })
        .transpose()?;
    let now = OffsetDateTime::now_utc();
    let claims = snap.claims(
        vm_id,
        &state.config.host_id,
        chain.next_seq,
        prev,
        now.unix_timestamp(),
        ModuleInfo {
            name: module.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            build_digest: self_digest(),
        },
        baseline,
    )?;
    let evidence = state.sealer.seal(&claims, now)?;
    write_atomic(out, &evidence)?;
    let digest = vmseal_sealer::evidence::evidence_digest(&evidence);
    state.advance(vm_id, claims.seq, &digest)?;
    Ok(Sealed {
        claims,
        out: out.to_owned(),
        evidence,
        digest,
    })
}
