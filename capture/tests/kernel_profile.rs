//! Kernel profiles from BTF: what a bad or hostile kernel image or BTF blob gets (a clear error
//! naming what is missing, never a panic). The profile of the real test kernel, checked against
//! the running guest, is `vmseal-host`'s `qemu::the_kernel_profile_is_read_from_the_guests_own_btf`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step is a failed test

use vmseal_capture::kernel::{KernelProfile, MAX_BTF_BYTES, ProfileError};

/// The test kernel's BTF (`scripts/fetch-test-kernel.sh`).
fn test_kernel_btf() -> Vec<u8> {
    use object::{Object, ObjectSection};
    let dir = vmseal_testkit::QemuGuest::kernel_dir().unwrap();
    let image = std::fs::read(dir.join("vmlinuz")).expect("run scripts/fetch-test-kernel.sh");
    let vmlinux = vmseal_capture::kaslr::decompress_bzimage(&image).unwrap();
    let f = object::read::elf::ElfFile64::<object::Endianness>::parse(&vmlinux[..]).unwrap();
    f.section_by_name(".BTF").unwrap().data().unwrap().to_vec()
}

#[test]
fn a_kernel_without_btf_or_with_bad_btf_is_refused_by_name() {
    assert!(matches!(
        KernelProfile::from_bzimage(b"not a kernel"),
        Err(ProfileError::Image(_))
    ));
    assert!(matches!(
        KernelProfile::from_btf(&[0u8; 64], ""),
        Err(ProfileError::Btf(_))
    ));
    assert!(matches!(
        KernelProfile::from_btf(&vec![0u8; MAX_BTF_BYTES + 1], ""),
        Err(ProfileError::TooLarge(_))
    ));
    // Real BTF cut short: refused, not read past its end.
    let btf = test_kernel_btf();
    for len in [24, btf.len() / 2, btf.len() - 1] {
        assert!(
            KernelProfile::from_btf(&btf[..len], "").is_err(),
            "{len} bytes"
        );
    }
    // A kernel whose BTF lacks a field the walkers need: named.
    let renamed = rename_string(&btf, b"\0real_parent\0", b"\0xeal_parent\0");
    let e = KernelProfile::from_btf(&renamed, "")
        .unwrap_err()
        .to_string();
    assert!(e.contains("task_struct.real_parent"), "{e}");
}

#[test]
fn both_forms_of_a_version_dependent_field_are_ambiguous() {
    // A kernel claiming both module layouts (core_layout and mem): which one is meant is unclear.
    let btf = test_kernel_btf();
    let both = rename_string(&btf, b"\0init_layout\0", b"\0mem\0\0\0\0\0\0\0\0\0");
    assert_ne!(
        both, btf,
        "the test kernel's struct module has an init_layout to rename"
    );
    let e = KernelProfile::from_btf(&both, "").unwrap_err().to_string();
    assert!(e.contains("module.mem") && e.contains("unclear"), "{e}");
}

/// `btf` with the first occurrence of `from` in its string section replaced by `to` (same
/// length).
fn rename_string(btf: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut out = btf.to_vec();
    if let Some(i) = btf.windows(from.len()).position(|w| w == from) {
        out[i..i + to.len()].copy_from_slice(to);
    }
    out
}

#[test]
fn mutated_btf_never_panics() {
    let btf = test_kernel_btf();
    // The header and the start of the type section, mutated; each result is a profile or an error.
    let seed = btf[..4096.min(btf.len())].to_vec();
    vmseal_testkit::mutations(
        &seed,
        3_000,
        b"\x00\x01\x04\x10\x7f\xff",
        vmseal_capture::fuzzing::kernel_btf,
    );
}
