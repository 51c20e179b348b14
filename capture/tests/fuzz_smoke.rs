//! Short deterministic runs of the capture crate's fuzz targets on stable: a policy, a symbol map
//! and a baseline, each mutated many times; ELF core headers. Full runs: `cargo +nightly fuzz run policy`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step is a failed test

use vmseal_capture::fuzzing::policy;

#[test]
fn policy_target_never_panics() {
    let seeds: Vec<Vec<u8>> = vec![
        include_bytes!("../../host/policies/micro-vm.toml").to_vec(),
        b"ffffffff81000000 T _text\nffffffff81000040 t syscall_table\n0000000000010000 T code_end\n"
            .to_vec(),
        vmseal_capture::Baseline {
            policy_digest: vec![1; 32],
            hash: "sha256".into(),
            regions: vec![vmseal_capture::BaselineRegion {
                name: "r".into(),
                leaves: vec![7; 64],
            }],
            kernel: Some(vmseal_sealer::claims::kernel::example::kernel().encode()),
        }
        .to_bytes(),
    ];
    for seed in &seeds {
        vmseal_testkit::mutations(seed, 20_000, b"[]{}=\"#\n0x,.ab", policy);
    }
}

/// A minimal ELF64 core: header, one PT_NOTE and one PT_LOAD of two pages at gpa 0x1000.
fn tiny_core() -> Vec<u8> {
    let mut b = vec![0u8; 64 + 2 * 56];
    b[..4].copy_from_slice(b"\x7fELF");
    b[4] = 2; // 64-bit
    b[5] = 1; // little-endian
    b[6] = 1; // version
    b[16..18].copy_from_slice(&4u16.to_le_bytes()); // ET_CORE
    b[18..20].copy_from_slice(&62u16.to_le_bytes()); // x86-64
    b[20..24].copy_from_slice(&1u32.to_le_bytes());
    b[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    b[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    b[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    b[56..58].copy_from_slice(&2u16.to_le_bytes()); // e_phnum
    let ph = |b: &mut Vec<u8>, at: usize, kind: u32, off: u64, paddr: u64, size: u64| {
        b[at..at + 4].copy_from_slice(&kind.to_le_bytes());
        b[at + 8..at + 16].copy_from_slice(&off.to_le_bytes());
        b[at + 24..at + 32].copy_from_slice(&paddr.to_le_bytes());
        b[at + 32..at + 40].copy_from_slice(&size.to_le_bytes());
        b[at + 40..at + 48].copy_from_slice(&size.to_le_bytes());
    };
    ph(&mut b, 64, 4, 0, 0, 0);
    ph(&mut b, 120, 1, 4096, 0x1000, 8192);
    b.resize(4096 + 8192, 0xab);
    b
}

#[test]
fn elf_dump_target_never_panics_and_reads_a_core() {
    let core = tiny_core();
    let segs = vmseal_capture::dump::parse_elf_segments(&core, core.len() as u64).unwrap();
    assert_eq!(
        segs,
        vec![vmseal_capture::dump::Segment {
            gpa: 0x1000,
            len: 8192,
            offset: 4096
        }]
    );
    let every_byte: Vec<u8> = (0..=255).collect();
    vmseal_testkit::mutations(
        &core[..184],
        50_000,
        &every_byte,
        vmseal_capture::fuzzing::elf_dump,
    );
}
