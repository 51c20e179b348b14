//! vmseal's guest shim: a guest captures its own memory, from inside its trust boundary, with the
//! capture engine the host uses ([`vmseal_capture`]), in the same attestation round
//! ([`vmseal_capture::agent::round`]). This is the path for confidential VMs: under
//! AMD SEV-SNP the hypervisor sees only ciphertext, so the capture (and the sealing) must run in
//! the guest.
//!
//! Two memory sources, both [`MemorySource`](vmseal_capture::source::MemorySource)s:
//!
//! - [`process::ProcessSource`]: one process's address space through `/proc/PID/maps` and
//!   `/proc/PID/mem`, stopped with SIGSTOP while it is read; policies select its mappings
//!   (`mapping = "/usr/sbin/sshd"`, `perms = "r-x"`).
//! - [`kernel`]: the running kernel through `/proc/kcore` (an ELF core keyed by kernel virtual
//!   address), with `/proc/kallsyms` as the symbol map; policies select by symbol
//!   (`symbol = "_stext"`, `end_symbol = "_etext"`). The kernel cannot stop itself: kernel text and
//!   read-only data are stable, live data is read as it changes.
#![forbid(unsafe_code)]

pub mod attest;
pub mod kernel;
pub mod process;

/// Entry points for the fuzz targets in `fuzz/`: what the shim parses from the guest's kernel.
#[doc(hidden)]
pub mod fuzzing {
    /// `/proc/PID/maps` text and `/proc/kallsyms` text: errors, never panics.
    pub fn proc_text(data: &[u8]) {
        if let Ok(text) = std::str::from_utf8(data) {
            let _ = crate::process::parse_maps(text);
            let _ = vmseal_capture::policy::SymbolMap::parse(text);
        }
    }
}
