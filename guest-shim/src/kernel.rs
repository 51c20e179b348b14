//! The running kernel as a capture source, from inside its guest: `/proc/kcore` (an ELF core
//! whose segments are keyed by kernel virtual address) and `/proc/kallsyms` as the symbol map.
//! Both need root; kallsyms shows real addresses only to root (`kptr_restrict`).

use std::path::Path;

use vmseal_capture::dump::{AddressKey, ElfDump};
use vmseal_capture::policy::SymbolMap;
use vmseal_capture::source::SourceError;

/// Open the kernel's memory (`/proc/kcore`, or a copy of its format at `path`). The live
/// `/proc/kcore` is this boot of this kernel (the `boot` claim); a copy cannot say which.
pub fn open(path: &Path) -> Result<ElfDump, SourceError> {
    let boot = if path == Path::new("/proc/kcore") {
        vmseal_capture::source::kernel_boot_id()
    } else {
        None
    };
    ElfDump::open_by(path, AddressKey::Virtual)
        .map(|d| d.with_boot(boot))
        .map_err(|e| {
            SourceError::Io(std::io::Error::other(format!(
                "{e} (the kernel needs CONFIG_PROC_KCORE, and reading it needs root)"
            )))
        })
}

/// The kernel's symbols from `/proc/kallsyms` (or a file of its format), refusing the all-zero
/// addresses an unprivileged reader is shown.
pub fn symbols(path: &Path) -> Result<SymbolMap, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let map = SymbolMap::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    match map.get("_stext") {
        Some(0) => Err(format!(
            "{} shows zero addresses: run as root (kernel.kptr_restrict hides them from others)",
            path.display()
        )),
        _ => Ok(map),
    }
}
