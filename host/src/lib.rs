//! vmseal's host module: reads a running VM's guest memory, chooses regions by a policy, hashes
//! them into per-page Merkle trees and hands the result to the seal.
//!
//! Memory comes from a [`source::MemorySource`]: the KVM micro-VM ([`kvm`]) running real guest code
//! ([`guest`]), QEMU guests, or dump files. All `unsafe` lives in one private module (`sys`).
#![deny(unsafe_code)]

pub mod bench;
pub mod capture;
pub mod courier;
pub mod daemon;
pub mod dump;
pub mod enroll;
pub mod guest;
pub mod kaslr;
pub mod kvm;
pub use vmseal_policy as policy;
pub mod qemu;
pub mod seal;
pub mod source;
pub mod standin_args;
pub mod status;
mod sys;

/// The TPM library (tpm2-tss) prints its own warnings and errors on stderr unless `TSS2_LOG` says
/// otherwise; vmseal reports TPM failures itself, with their cause and fix. Unless the caller set
/// `TSS2_LOG` (to see the library's own lines), re-execute this process once with it set to
/// `all+NONE` — call this first thing in `main`, before any thread or TPM context exists. (Setting
/// the variable in-process would need `unsafe` `std::env::set_var`, and the library reads it at
/// its first log line.)
pub fn quiet_tpm_library() {
    use std::os::unix::process::CommandExt as _;
    if std::env::var_os("TSS2_LOG").is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| exe.clone().into_os_string());
    let err = std::process::Command::new(&exe)
        .arg0(arg0)
        .args(args)
        .env("TSS2_LOG", "all+NONE")
        .exec();
    // `exec` returns only when it failed: carry on, with the library's own lines.
    eprintln!(
        "warning: cannot silence the TPM library's own log lines ({err}); set TSS2_LOG=all+NONE"
    );
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
        let _ = crate::capture::Baseline::from_bytes(data);
    }

    /// Kernel images: bzImage header, LZ4 payload, relocation table, ELF sections.
    pub fn kernel_image(data: &[u8]) {
        let _ = crate::kaslr::KernelRelocs::from_bzimage(data);
        let _ = crate::kaslr::KernelRelocs::from_decompressed(data);
        let _ = crate::kaslr::Sections::from_elf(data);
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
