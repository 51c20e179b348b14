//! A short deterministic run of the policy fuzz target on stable: the built-in policy, a symbol map
//! and a baseline, each mutated many times. Full runs: `cargo +nightly fuzz run policy`.

use vmseal_host::fuzzing::policy;

#[test]
fn policy_target_never_panics() {
    let seeds: Vec<Vec<u8>> = vec![
        vmseal_host::guest::POLICY.as_bytes().to_vec(),
        vmseal_host::guest::symbols(&vmseal_host::guest::assemble().unwrap())
            .render()
            .into_bytes(),
        vmseal_host::capture::Baseline {
            policy_digest: vec![1; 32],
            hash: "sha256".into(),
            regions: vec![vmseal_host::capture::BaselineRegion {
                name: "r".into(),
                leaves: vec![7; 64],
            }],
        }
        .to_bytes(),
    ];
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for seed in &seeds {
        policy(seed);
        for _ in 0..20_000 {
            let mut d = seed.clone();
            for _ in 0..=(next() % 4) {
                let i = (next() as usize) % (d.len() + 1);
                match next() % 4 {
                    0 if i < d.len() => d[i] ^= 1 << (next() % 8),
                    1 => d.truncate(i),
                    2 => d.insert(i, b"[]{}=\"#\n0x,.ab"[(next() % 14) as usize]),
                    _ if i < d.len() => d[i] = next() as u8,
                    _ => {}
                }
            }
            policy(&d);
        }
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
    let segs = vmseal_host::dump::parse_elf_segments(&core, core.len() as u64).unwrap();
    assert_eq!(
        segs,
        vec![vmseal_host::dump::Segment {
            gpa: 0x1000,
            len: 8192,
            offset: 4096
        }]
    );
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..50_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut d = core[..184].to_vec();
        let i = (x as usize) % d.len();
        d[i] ^= (x >> 32) as u8 | 1;
        if x.is_multiple_of(5) {
            d.truncate((x >> 8) as usize % d.len());
        }
        vmseal_host::fuzzing::elf_dump(&d);
    }
}
