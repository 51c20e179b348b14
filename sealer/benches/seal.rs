//! Benchmarks of the seal: sealing one snapshot (leaf keygen + leaf certificate + COSE sign) and
//! verifying one with a warm (pinned) intermediate, each beside a baseline measured in the same
//! process (one bare ML-DSA-65 signature or verification), and page hashing beside memcpy.
//!
//! `cargo bench -p vmseal-sealer --bench seal`

#![allow(missing_docs, clippy::expect_used, clippy::unwrap_used)] // criterion macros generate undocumented items

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use time::{Duration, OffsetDateTime};
use vmseal_sealer::claims::example;
use vmseal_sealer::evidence::Sealer;
use vmseal_sealer::keys::{IntermediateKey, LeafKey, MlDsa};
use vmseal_sealer::merkle::{HashAlg, MerkleTree};
use vmseal_sealer::verify::{AnchorRequirement, TrustConfig, verify_evidence};
use vmseal_sealer::x509::{IntermediateProfile, issue_intermediate};

fn sealer() -> Sealer {
    let key = IntermediateKey::generate().expect("keygen");
    let der = issue_intermediate(
        &key,
        &IntermediateProfile {
            host_id: "bench",
            tpm: None,
            snp: None,
            validity: Duration::days(1),
        },
        OffsetDateTime::now_utc(),
    )
    .expect("intermediate");
    Sealer::new(key, der).expect("sealer")
}

fn seal(c: &mut Criterion) {
    vmseal_sealer::keys::warm_up();
    let s = sealer();
    let claims = example::claims("vm-bench", 1);
    let now = OffsetDateTime::now_utc();
    let mut g = c.benchmark_group("seal");
    g.bench_function("snapshot (leaf keygen + cert + COSE sign)", |b| {
        b.iter(|| black_box(s.seal(black_box(&claims), now).expect("seal")))
    });
    let payload = claims.encode();
    g.bench_function("baseline: one ML-DSA-65 keygen + sign", |b| {
        b.iter(|| {
            black_box(
                LeafKey::generate()
                    .expect("leaf")
                    .sign_once(black_box(&payload))
                    .expect("sign"),
            )
        })
    });
    g.finish();

    let ev = s.seal(&claims, now).expect("seal");
    let mut trust = TrustConfig {
        require: AnchorRequirement::from_name("none").expect("none"),
        ..TrustConfig::default()
    };
    let v = verify_evidence(&ev, &trust, now).expect("verify");
    trust.pinned_intermediates.push(v.intermediate_digest);
    let mut g = c.benchmark_group("verify");
    g.bench_function("snapshot, warm (pinned intermediate)", |b| {
        b.iter(|| black_box(verify_evidence(black_box(&ev), &trust, now).expect("verify")))
    });
    let leaf = LeafKey::generate().expect("leaf");
    let pk = leaf.public_key().to_vec();
    let sig = leaf.sign_once(&payload).expect("sign");
    g.bench_function("baseline: one ML-DSA-65 verify", |b| {
        b.iter(|| assert!(MlDsa::MlDsa65.verify(&pk, black_box(&payload), &sig)))
    });
    g.finish();
}

fn hashing(c: &mut Criterion) {
    let data: Vec<u8> = (0..(4 << 20))
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut dst = vec![0u8; data.len()];
    let mut g = c.benchmark_group("pages 4 MiB");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("baseline: memcpy", |b| {
        b.iter(|| {
            dst.copy_from_slice(black_box(&data));
            black_box(&dst);
        })
    });
    for alg in [HashAlg::Sha256, HashAlg::Blake3] {
        g.bench_function(format!("{} page hashes + Merkle root", alg.name()), |b| {
            b.iter(|| {
                black_box(
                    MerkleTree::from_pages(alg, black_box(&data))
                        .expect("tree")
                        .root(),
                )
            })
        });
    }
    g.finish();
}

/// An auditor's `vmseal-certs verify --chain` over a VM's history: 200 evidence of one host whose
/// intermediate carries an SEV-SNP anchor (the software stand-in: same report format, same ECDSA
/// P-384 chain as the AMD hardware's), verified with the intermediate checked once per run (the
/// cache) beside each evidence verified alone (the tool before), single-threaded.
fn chain(c: &mut Criterion) {
    use vmseal_sealer::anchor::{SnpAnchor, snp_binding};
    use vmseal_sealer::chain::{ChainLink, check_chains};
    use vmseal_sealer::snp::Product;
    use vmseal_sealer::snp::provider::{InsecureSoft, ReportProvider};
    use vmseal_sealer::snp::standin::TestHierarchy;
    use vmseal_sealer::snp::verify::AmdRoots;
    use vmseal_sealer::verify::{IntermediateCache, verify_evidence_cached};

    vmseal_sealer::keys::warm_up();
    let now = OffsetDateTime::now_utc();
    let key = IntermediateKey::generate().expect("keygen");
    let h = TestHierarchy::generate(Product::Milan).expect("stand-in");
    let nonce = vec![7u8; 32];
    let ev = InsecureSoft {
        hierarchy: h,
        version: 3,
        knobs: Default::default(),
    }
    .report(&snp_binding(key.spki_der(), &nonce))
    .expect("report");
    let anchor = SnpAnchor {
        provider: ev.provider,
        report: ev.report,
        vek: ev.vek,
        ask: ev.ask.clone(),
        ark: ev.ark.clone(),
        nonce,
    };
    let der = issue_intermediate(
        &key,
        &IntermediateProfile {
            host_id: "bench",
            tpm: None,
            snp: Some(&anchor),
            validity: Duration::days(1),
        },
        now,
    )
    .expect("intermediate");
    let s = Sealer::new(key, der).expect("sealer");
    let mut trust = TrustConfig {
        require: AnchorRequirement::from_name("snp").expect("snp"),
        ..TrustConfig::default()
    };
    trust.snp = trust.snp.clone().allow_insecure(AmdRoots {
        product: Product::Milan,
        ark: ev.ark,
        ask: ev.ask,
        asvk: None,
        insecure: true,
    });
    const N: u64 = 200;
    let mut prev = None;
    let history: Vec<Vec<u8>> = (0..N)
        .map(|seq| {
            let mut cl = example::claims("vm-bench", seq);
            cl.prev = prev;
            let e = s.seal(&cl, now).expect("seal");
            prev = Some(vmseal_sealer::evidence::evidence_digest(&e));
            e
        })
        .collect();
    let mut g = c.benchmark_group("chain of 200 evidence");
    g.throughput(Throughput::Elements(N));
    g.sample_size(10);
    g.bench_function("verify --chain (intermediate verified once)", |b| {
        b.iter(|| {
            let cache = IntermediateCache::default();
            let links: Vec<ChainLink> = history
                .iter()
                .map(|e| {
                    let v =
                        verify_evidence_cached(black_box(e), &trust, now, &cache).expect("verify");
                    ChainLink {
                        source: String::new(),
                        vm_id: v.claims.vm_id,
                        host_id: v.host_id,
                        seq: v.claims.seq,
                        prev: v.claims.prev,
                        digest: v.digest,
                        iat: v.claims.iat,
                        intermediate: v.intermediate_digest,
                    }
                })
                .collect();
            assert!(check_chains(links)[0].intact());
        })
    });
    g.bench_function("baseline: each evidence verified alone", |b| {
        b.iter(|| {
            for e in &history {
                black_box(verify_evidence(black_box(e), &trust, now).expect("verify"));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, seal, hashing, chain);
criterion_main!(benches);
