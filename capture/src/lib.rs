//! vmseal's capture engine, shared by the host agent (`vmseal-host`, beside the hypervisor) and
//! the guest shim (`vmseal-shim`, inside a confidential guest).
//!
//! - [`source`]: where memory comes from — [`GuestMemory`] every source has, and the capabilities
//!   [`Pausable`] and [`DirtyLog`] some have. [`dump`] reads ELF cores and raw images, [`anon`]
//!   is anonymous memory with a dirty bitmap (the engine's own tests run on it, without
//!   /dev/kvm); the KVM micro-VM and QEMU live in `vmseal-host`, processes and the running kernel
//!   in `vmseal-shim`.
//! - [`plan`]: the pages a [`Policy`](policy::Policy) selects, one function per selector kind.
//! - [`hash`]: parallel page hashing under a bandwidth [`Budget`](hash::Budget), KASLR undone
//!   first where the policy says ([`kaslr`]).
//! - [`snapshot`]: Merkle trees per region, stop-copy or pre-copy consistent, incremental from
//!   the dirty log; [`baseline`] is what deltas are taken against.
//! - [`agent`]: the agent's side of the protocol — enrollment, sealing, delivery that survives
//!   refusals and outages, and the one attestation [`round`](agent::round) both programs run.
//!
//! No `unsafe` here: the kernel interfaces that need it stay in `vmseal-host`'s `sys` module.
#![forbid(unsafe_code)]

pub mod agent;
pub mod anon;
pub mod baseline;
pub mod dump;
pub mod hash;
pub mod kallsyms;
pub mod kaslr;
pub mod kernel;
pub mod plan;
pub mod snapshot;
pub mod source;
pub mod testing;
pub use vmseal_policy as policy;

pub use baseline::{Baseline, BaselineRegion};
pub use plan::{Plan, PlannedRegion};
pub use snapshot::{CaptureStats, Consistency, Snapshot};
pub use source::{DirtyLog, DirtyPages, GuestMemory, MemorySource, PAGE, Pausable, SourceError};

/// Errors planning or capturing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaptureError {
    /// The policy cannot be applied to this guest.
    #[error("region {region:?}: {reason}")]
    Plan {
        /// Region.
        region: String,
        /// Why, and how to fix it.
        reason: String,
    },
    /// The memory source failed.
    #[error(transparent)]
    Source(#[from] source::SourceError),
    /// Incremental capture needs a dirty log.
    #[error("{0} has no dirty page log; use a full capture")]
    NoDirtyLog(String),
    /// Merkle error.
    #[error(transparent)]
    Merkle(#[from] vmseal_sealer::merkle::MerkleError),
    /// A baseline file is unusable.
    #[error("baseline: {0}")]
    Baseline(String),
}

/// Entry points for the fuzz targets in `fuzz/` (the policy parser, symbol maps, baselines, ELF
/// core headers).
#[doc(hidden)]
pub mod fuzzing {
    /// Policy text, System.map text and baseline files: errors, never panics.
    pub fn policy(data: &[u8]) {
        if let Ok(text) = std::str::from_utf8(data) {
            let _ = crate::policy::Policy::parse(text);
            let _ = crate::policy::SymbolMap::parse(text);
        }
        let _ = crate::Baseline::from_bytes(data);
    }

    /// Kernel images: bzImage header, LZ4 payload, relocation table, ELF sections.
    pub fn kernel_image(data: &[u8]) {
        let _ = crate::kaslr::KernelRelocs::from_bzimage(data);
        let _ = crate::kaslr::KernelRelocs::from_decompressed(data);
        let _ = crate::kaslr::Sections::from_elf(data);
    }

    /// Kernel profiles: BTF type information (through `btfparse`) and the vmlinux around it.
    pub fn kernel_btf(data: &[u8]) {
        let _ = crate::kernel::KernelProfile::from_btf(data, "");
        let _ = crate::kernel::KernelProfile::from_vmlinux(data);
    }

    /// The kallsyms decoder over arbitrary bytes (a vmlinux's read-only data): errors, never
    /// panics.
    pub fn kallsyms(data: &[u8]) {
        let _ = crate::kallsyms::decode(data);
    }

    /// Kernel-object walks over arbitrary guest memory: they end, never panic, and what they
    /// report is always a canonical claim.
    pub fn kernel_walk(data: &[u8]) {
        let k = crate::testing::walk_over(data).map(|k| k.check());
        assert!(
            matches!(k, Ok(Ok(()))),
            "a walk over memory reported a claim that is not canonical: {k:?}"
        );
    }

    /// ELF core headers (the dump reader, by physical and by virtual address as /proc/kcore is
    /// read): errors, never panics.
    pub fn elf_dump(data: &[u8]) {
        let _ = crate::dump::parse_elf_segments(data, data.len() as u64);
        let _ = crate::dump::parse_elf_segments_by(
            data,
            data.len() as u64,
            crate::dump::AddressKey::Virtual,
        );
    }
}
