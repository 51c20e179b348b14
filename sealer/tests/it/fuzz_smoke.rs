//! A short, deterministic run of every fuzz target's entry point on stable: real inputs from the
//! shared vectors and from the sealer, then thousands of mutations (bit flips, truncations,
//! insertions, splices). The full coverage-guided runs are `cargo +nightly fuzz run <target>`
//! (docs/testing.md).

use time::{Duration, OffsetDateTime};
use vmseal_sealer::claims::example;
use vmseal_sealer::evidence::Sealer;
use vmseal_sealer::fuzzing;
use vmseal_sealer::keys::IntermediateKey;
use vmseal_sealer::x509::{IntermediateProfile, issue_intermediate};
use vmseal_testkit::vector;

/// xorshift64*: a fixed sequence, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut d = seed.to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(5) {
            0 if !d.is_empty() => {
                let i = rng.below(d.len());
                d[i] ^= 1 << rng.below(8);
            }
            1 => d.truncate(rng.below(d.len() + 1)),
            2 => {
                let i = rng.below(d.len() + 1);
                d.insert(i, rng.next() as u8);
            }
            3 if !d.is_empty() => {
                let i = rng.below(d.len());
                d[i] = [0x00, 0xff, 0x7f, 0x80, 0x18, 0x19, 0x1b, 0x9f, 0xbf][rng.below(9)];
            }
            _ if !other.is_empty() => {
                let i = rng.below(d.len() + 1);
                let j = rng.below(other.len());
                d.splice(
                    i..i,
                    other[j..(j + 1 + rng.below(64)).min(other.len())]
                        .iter()
                        .copied(),
                );
            }
            _ => {}
        }
    }
    d
}

fn run(target: fn(&[u8]), seeds: &[Vec<u8>], iterations: usize) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for s in seeds {
        target(s);
        for n in 0..s.len().min(64) {
            target(&s[..n]);
        }
    }
    for _ in 0..iterations {
        let a = &seeds[rng.below(seeds.len())];
        let b = &seeds[rng.below(seeds.len())];
        target(&mutate(&mut rng, a, b));
    }
}

fn evidence_seed() -> Vec<u8> {
    let key = IntermediateKey::generate().unwrap();
    let der = issue_intermediate(
        &key,
        &IntermediateProfile {
            host_id: "fuzz",
            tpm: None,
            snp: None,
            validity: Duration::days(1),
        },
        OffsetDateTime::now_utc(),
    )
    .unwrap();
    Sealer::new(key, der)
        .unwrap()
        .seal(&example::claims("vm", 1), OffsetDateTime::now_utc())
        .unwrap()
}

#[test]
fn evidence_and_claims_targets() {
    let ev = evidence_seed();
    run(fuzzing::evidence, std::slice::from_ref(&ev), 20000);
    let claims = example::claims("vm", 2).encode();
    run(fuzzing::claims, &[claims], 40000);
}

#[test]
fn certificate_and_anchor_targets() {
    let seeds = vec![
        vector("sev-snp/reports/01-virtee-milan-v2/vcek_milan.der"),
        vector("sev-snp/amd-kds-roots/milan/ask_ark_asvk.pem"),
        vector("tpm/ek-cert-examples-tcg/tcg-example-user-device.der"),
        vector("x509-mldsa/lamps-dilithium-certificates/ML-DSA-44.crt"),
    ];
    run(fuzzing::certificate, &seeds, 20000);
    let anchor = vmseal_sealer::anchor::encode(&vmseal_sealer::anchor::SnapshotIdentity {
        vm_id: "v".into(),
        seq: 3,
    });
    run(fuzzing::anchors, &[anchor], 20000);
}

#[test]
fn snp_target() {
    use base64::Engine;
    let j: serde_json::Value = serde_json::from_slice(&vector(
        "sev-snp/reports/08-veraison-genoa-v3/sevsnp-tsm-report.json",
    ))
    .unwrap();
    let aux = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(j["auxblob"].as_str().unwrap().trim_end_matches('='))
        .unwrap();
    let seeds = vec![
        vector("sev-snp/reports/03-trustee-milan-v2/test-report.bin"),
        aux,
    ];
    run(fuzzing::snp, &seeds, 40000);
}

#[test]
fn tpm_target() {
    let attest = vector("tpm/go-tpm-tools-gce-vtpm/derived-quote0.tpms_attest");
    let sig = vector("tpm/go-tpm-tools-gce-vtpm/derived-quote0.tpmt_signature");
    let public = vector("tpm/go-tpm-tools-gce-vtpm/derived-ak.tpmt_public");
    let mut seed = vec![attest.len().min(255) as u8, sig.len().min(255) as u8];
    seed.extend_from_slice(&attest[..attest.len().min(255)]);
    seed.extend_from_slice(&sig[..sig.len().min(255)]);
    seed.extend_from_slice(&public);
    run(fuzzing::tpm, &[seed], 40000);
}
