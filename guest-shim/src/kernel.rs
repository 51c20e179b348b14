//! The running kernel as a capture source, from inside its guest: `/proc/kcore` (an ELF core
//! whose segments are keyed by kernel virtual address) and `/proc/kallsyms` as the symbol map.
//! Both need root; kallsyms shows real addresses only to root (`kptr_restrict`). Its kernel
//! objects (`[kernel_objects]`) are walked with the layout its own BTF gives
//! (`/sys/kernel/btf/vmlinux`), keyed by its build id (`/sys/kernel/notes`).

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

/// The kernel-objects walk of the running kernel: the structures' layout from its own BTF (`btf`,
/// `/sys/kernel/btf/vmlinux`), its build id from its notes (`notes`, `/sys/kernel/notes`), where
/// they are from `symbols`. Its slide is taken against the usual x86-64 link address
/// ([`X86_64_LINK_TEXT`](vmseal_capture::kernel::X86_64_LINK_TEXT)): no image is at hand.
pub fn walk(
    btf: &Path,
    notes: &Path,
    symbols: &SymbolMap,
) -> Result<vmseal_capture::kernel::KernelWalk, String> {
    use vmseal_capture::kernel::{KernelProfile, KernelWalk, MAX_BTF_BYTES, X86_64_LINK_TEXT};
    let blob = std::fs::read(btf).map_err(|e| {
        format!(
            "{}: {e} (the kernel needs CONFIG_DEBUG_INFO_BTF for its objects to be walked)",
            btf.display()
        )
    })?;
    if blob.len() > MAX_BTF_BYTES {
        return Err(format!(
            "{}: {} bytes, more than the {MAX_BTF_BYTES} read",
            btf.display(),
            blob.len()
        ));
    }
    let build_id = std::fs::read(notes)
        .ok()
        .and_then(|n| vmseal_capture::kernel::build_id_of_notes(&n))
        .unwrap_or_default();
    let profile =
        KernelProfile::from_btf(&blob, &build_id).map_err(|e| format!("{}: {e}", btf.display()))?;
    KernelWalk::new(profile, X86_64_LINK_TEXT, symbols).map_err(|e| e.to_string())
}
