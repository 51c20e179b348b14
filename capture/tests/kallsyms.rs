//! The kernel's symbol table decoded from its own compressed kallsyms tables (the test kernel's
//! bzImage, Debian's 6.1 cloud kernel); malformed tables refused, never a panic. That the decoded
//! table, moved by the slide a booted guest's interrupt table gives, is that guest's
//! /proc/kallsyms line for line is `vmseal-host`'s
//! `qemu::the_capture_walks_the_kernel_objects_inside_its_pause`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step is a failed test

use vmseal_capture::kallsyms::{decode, decode_with_span, running, slide_from_divide_error};

fn test_vmlinux() -> Vec<u8> {
    let dir = vmseal_testkit::QemuGuest::kernel_dir().unwrap();
    let image = std::fs::read(dir.join("vmlinuz"))
        .expect("the test kernel: run scripts/fetch-test-kernel.sh");
    vmseal_capture::kaslr::decompress_bzimage(&image).unwrap()
}

/// The slice of the image that holds every kallsyms table (offsets … token index), with a margin
/// on each side.
fn tables(vmlinux: &[u8]) -> &[u8] {
    let (_, span) = decode_with_span(vmlinux).unwrap();
    &vmlinux[span.start - 64..span.end + 64]
}

#[test]
fn the_test_kernels_symbols_are_decoded_from_its_image() {
    let vmlinux = test_vmlinux();
    let syms = decode(&vmlinux).unwrap();
    // As many as the booted guest's /proc/kallsyms lists (its modules' aside); in address order;
    // the guest's own addresses (`nokaslr`: link-time).
    assert_eq!(syms.len(), 87_347);
    let at = |n: &str| syms.iter().find(|s| s.name == n).map(|s| (s.kind, s.addr));
    assert_eq!(at("_stext"), Some(('T', 0xffff_ffff_8100_0000)));
    assert_eq!(at("sys_call_table"), Some(('D', 0xffff_ffff_8200_0360)));
    assert_eq!(at("init_task"), Some(('D', 0xffff_ffff_82a1_aa40)));
    assert_eq!(at("idt_table"), Some(('b', 0xffff_ffff_832b_4000)));
    assert_eq!(at("fixed_percpu_data"), Some(('A', 0)));
    let kernel: Vec<u64> = syms
        .iter()
        .filter(|s| s.addr >= 0xffff_8000_0000_0000)
        .map(|s| s.addr)
        .collect();
    assert!(kernel.windows(2).all(|w| w[0] <= w[1]));
    // Moved by a slide: kernel addresses move, per-CPU offsets do not.
    let de = at("asm_exc_divide_error").unwrap().1;
    let slide = slide_from_divide_error(&syms, de + 0x1e00_0000).unwrap();
    assert_eq!(slide, 0x1e00_0000);
    let map = running(&syms, slide);
    assert_eq!(map.get("_stext"), Some(0xffff_ffff_9f00_0000));
    assert_eq!(map.get("fixed_percpu_data"), Some(0));
    // A divide-error gate that is not its handler moved by a 2 MiB step is named.
    let e = slide_from_divide_error(&syms, de + 0x1e00_0010).unwrap_err();
    assert!(e.to_string().contains("the gate is hooked"), "{e}");
    // The tables alone, cut out of the image, decode the same.
    assert_eq!(decode(tables(&vmlinux)).unwrap(), syms);
}

#[test]
fn malformed_tables_are_refused_without_a_panic() {
    assert!(decode(&[]).is_err());
    assert!(decode(&[0u8; 4096]).is_err());
    let vmlinux = test_vmlinux();
    let t = tables(&vmlinux).to_vec();
    // Cut short anywhere (the margin of 64 bytes aside): refused.
    for cut in [t.len() - 65, t.len() - 600, t.len() / 2, 4096] {
        assert!(decode(&t[..cut]).is_err(), "cut at {cut}");
    }
    // Mutated: each a table or an error (the names re-check the markers, the index the tokens).
    vmseal_testkit::mutations(
        &t,
        200,
        b"\x00\x01\x80\xff",
        vmseal_capture::fuzzing::kallsyms,
    );
}
