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
