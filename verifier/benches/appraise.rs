//! Decoding and appraisal on a worst-case input are linear in its size: claims with N regions,
//! every one changed (a delta entry per region), appraised against a baseline and a policy of the
//! same N regions. The time per region at N = 8,000 divided by the time per region at N = 1,000 is
//! the number to read: 1 when linear, 8 when quadratic (as it was when every delta entry searched
//! the region list and every region searched the delta list and the baseline).
//!
//! `cargo bench -p vmseal-verifier --bench appraise`

#![allow(missing_docs, clippy::expect_used, clippy::unwrap_used)] // criterion macros generate undocumented items

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use vmseal_sealer::claims::{Claims, RegionClass, RegionDelta, Severity};
use vmseal_sealer::merkle::{HashAlg, MerkleTree};
use vmseal_sealer::verify::VerifiedEvidence;
use vmseal_verifier::appraise::{Baseline, BaselineRegion, Freshness, VmRecord, appraise};

const ALG: HashAlg = HashAlg::Sha256;

/// Claims with `n` two-page regions, each with its second page changed, and the baseline, policy
/// and VM record they are appraised against.
fn worst_case(n: usize) -> (Vec<u8>, Baseline, VmRecord) {
    let mut regions = Vec::with_capacity(n);
    let mut delta = Vec::with_capacity(n);
    let mut base = Vec::with_capacity(n);
    let mut policy = String::from("name = \"wide\"\nversion = 1\n");
    for i in 0..n {
        let name = format!("r{i}");
        let leaves = vec![ALG.leaf(&i.to_le_bytes()), ALG.leaf(b"b")];
        let tree = MerkleTree::from_leaves(ALG, leaves.clone()).unwrap();
        base.push(BaselineRegion {
            name: name.clone(),
            class: RegionClass::Data,
            severity: Severity::Low,
            tree: tree.clone(),
            ranges: Some(vec![[i as u64 * 0x2000, 0x2000]]),
        });
        let mut t = tree;
        let change = (1u64, ALG.leaf(b"changed"));
        t.apply_delta(&[change]).unwrap();
        regions.push((name.clone(), RegionClass::Data, Severity::Low, t));
        delta.push(RegionDelta {
            region: name.clone(),
            changes: vec![change],
        });
        policy.push_str(&format!(
            "[[region]]\nname = \"{name}\"\nclass = \"data\"\nseverity = \"low\"\ngpa = {{ start = {}, len = 0x2000 }}\n",
            i * 0x2000
        ));
    }
    let policy = vmseal_policy::Policy::parse(&policy).unwrap();
    let mut c = vmseal_loadgen::appraise::synthetic_claims(
        "h1",
        "vm1",
        0,
        None,
        &regions,
        delta,
        policy.digest,
    );
    for (r, i) in c.regions.iter_mut().zip(0u64..) {
        r.ranges[0].start = i * 0x2000;
    }
    let baseline = Baseline {
        version: 1,
        policy_digest: Some(policy.digest),
        regions: base,
        kernel: None,
    };
    let vm = VmRecord {
        vm_id: "vm1".into(),
        host_id: "h1".into(),
        intermediate_digest: [1; 32],
        policy_digest: Some(policy.digest),
        policy: Some(Arc::new(policy)),
        threshold: 70,
        anchored: true,
        baseline_version: Some(1),
        ..VmRecord::default()
    };
    (c.encode(), baseline, vm)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode_and_appraise");
    g.sample_size(10);
    for n in [1_000usize, 8_000] {
        let (bytes, baseline, vm) = worst_case(n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                let claims = Claims::decode(black_box(&bytes)).unwrap();
                let v = VerifiedEvidence {
                    claims,
                    host_id: "h1".into(),
                    intermediate_digest: [1; 32],
                    intermediate_spki: vec![],
                    pinned: true,
                    tpm: None,
                    snp: None,
                    digest: [2; 32],
                    claims_profile: vmseal_sealer::claims::ClaimsProfile::V2,
                };
                let a = appraise(
                    &v,
                    &vm,
                    Some(&baseline),
                    Freshness {
                        now: v.claims.iat,
                        max_age: 300,
                        skew: 30,
                        nonce_accepted: false,
                    },
                )
                .unwrap();
                assert_eq!(a.changes.len(), n);
                black_box(a)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
