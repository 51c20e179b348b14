//! Evidence end to end: a host state on a real swtpm seals a snapshot; anyone verifies it from
//! public material; each broken link is refused with an error that names it.

use time::{Duration, OffsetDateTime};
use vmseal_sealer::claims::{Claims, example};
use vmseal_sealer::evidence::{DecodedEvidence, Sealer};
use vmseal_sealer::keys::IntermediateKey;
use vmseal_sealer::snp::Product;
use vmseal_sealer::snp::standin::TestHierarchy;
use vmseal_sealer::state::{HostState, InitOptions, SnpChoice, StandInOptions, init};
use vmseal_sealer::verify::{AnchorRequirement, TrustConfig, VerifyError, verify_evidence};
use vmseal_sealer::x509::{IntermediateProfile, LeafError, issue_intermediate};
use vmseal_testkit::Swtpm;

fn opts(sw: &Swtpm, snp: SnpChoice) -> InitOptions {
    InitOptions {
        host_id: "host-a".into(),
        tcti: sw.tcti(),
        pcrs: (0..8).collect(),
        snp,
        insecure: StandInOptions {
            product: Product::Milan,
            ..Default::default()
        },
        nonce: None,
        validity: Duration::days(30),
    }
}

fn trust_for(sw: &Swtpm) -> TrustConfig {
    let mut t = TrustConfig::default();
    let pem = std::fs::read(sw.ek_issuer_pem()).unwrap();
    t.tpm.ek_roots = vec![pem::parse(pem).unwrap().into_contents()];
    t
}

/// A state with a TPM anchor (and optionally the stand-in SNP anchor) and one sealed snapshot.
fn sealed(snp: SnpChoice) -> (Swtpm, tempfile::TempDir, HostState, Vec<u8>) {
    let sw = Swtpm::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), &opts(&sw, snp)).unwrap();
    let state = HostState::load(dir.path(), None).unwrap();
    let ev = state
        .sealer
        .seal(&example::claims("vm-1", 0), OffsetDateTime::now_utc())
        .unwrap();
    (sw, dir, state, ev)
}

/// An intermediate key and its certificate without anchors, issued at `now`.
fn bare_intermediate(now: OffsetDateTime) -> (IntermediateKey, Vec<u8>) {
    let key = IntermediateKey::generate().unwrap();
    let der = issue_intermediate(
        &key,
        &IntermediateProfile {
            host_id: "bare",
            tpm: None,
            snp: None,
            validity: Duration::days(1),
        },
        now,
    )
    .unwrap();
    (key, der)
}

/// A sealer under an intermediate without anchors, for links that do not involve the TPM.
fn bare_sealer() -> Sealer {
    let (key, der) = bare_intermediate(OffsetDateTime::now_utc());
    Sealer::new(key, der).unwrap()
}

fn no_anchors() -> TrustConfig {
    TrustConfig {
        require: AnchorRequirement::from_name("none").unwrap(),
        ..TrustConfig::default()
    }
}

#[test]
fn sealed_evidence_verifies_with_public_material() {
    let (sw, _dir, _state, ev) = sealed(SnpChoice::None);
    let v = verify_evidence(&ev, &trust_for(&sw), OffsetDateTime::now_utc()).unwrap();
    assert_eq!(v.claims, example::claims("vm-1", 0));
    assert_eq!(v.host_id, "host-a");
    let q = v.tpm.as_ref().expect("TPM anchor checked");
    assert!(q.ek_chain_verified);
    assert_eq!(q.pcrs.len(), 8);
    assert!(!v.insecure());
    assert_eq!(v.digest, vmseal_sealer::evidence::evidence_digest(&ev));

    // Warm path: once pinned, the anchors are not re-checked.
    let mut pinned = trust_for(&sw);
    pinned.pinned_intermediates.push(v.intermediate_digest);
    let w = verify_evidence(&ev, &pinned, OffsetDateTime::now_utc()).unwrap();
    assert!(w.pinned && w.tpm.is_none());
}

#[test]
fn state_survives_a_tpm_restart_and_refuses_a_changed_host() {
    let (mut sw, dir, _state, _) = sealed(SnpChoice::None);
    sw.restart().unwrap();
    let s = HostState::load(dir.path(), Some(&sw.tcti())).unwrap();
    let ev = s
        .sealer
        .seal(&example::claims("vm-1", 1), OffsetDateTime::now_utc())
        .unwrap();
    verify_evidence(&ev, &trust_for(&sw), OffsetDateTime::now_utc()).unwrap();
    sw.extend_pcr(4).unwrap();
    let err = HostState::load(dir.path(), Some(&sw.tcti())).unwrap_err();
    assert!(err.to_string().contains("refused to unseal"), "{err}");
    // init never overwrites.
    let err = init(dir.path(), &opts(&sw, SnpChoice::None)).unwrap_err();
    assert!(err.to_string().contains("already holds"), "{err}");
}

#[test]
fn missing_anchor_and_untrusted_ek_are_refused() {
    let ev = bare_sealer()
        .seal(&example::claims("vm-1", 0), OffsetDateTime::now_utc())
        .unwrap();
    let err = verify_evidence(&ev, &TrustConfig::default(), OffsetDateTime::now_utc()).unwrap_err();
    assert!(matches!(err, VerifyError::MissingAnchor("TPM")), "{err}");
    verify_evidence(&ev, &no_anchors(), OffsetDateTime::now_utc()).unwrap();

    let (_sw, _dir, _state, ev) = sealed(SnpChoice::None);
    let other = Swtpm::start().unwrap();
    let err = verify_evidence(&ev, &trust_for(&other), OffsetDateTime::now_utc()).unwrap_err();
    assert!(matches!(err, VerifyError::Tpm(_)), "{err}");
    let mut snp_required = trust_for(&_sw);
    snp_required.require = AnchorRequirement::from_name("both").unwrap();
    let err = verify_evidence(&ev, &snp_required, OffsetDateTime::now_utc()).unwrap_err();
    assert!(
        matches!(err, VerifyError::MissingAnchor("SEV-SNP")),
        "{err}"
    );
}

#[test]
fn insecure_stand_in_root_is_refused_unless_named() {
    let (sw, dir, _state, ev) = sealed(SnpChoice::InsecureSoft);
    let mut t = trust_for(&sw);
    t.require = AnchorRequirement::from_name("both").unwrap();
    let err = verify_evidence(&ev, &t, OffsetDateTime::now_utc()).unwrap_err();
    assert!(err.to_string().contains("INSECURE"), "{err}");

    let h =
        TestHierarchy::from_bytes(&std::fs::read(dir.path().join("insecure-snp.cbor")).unwrap())
            .unwrap();
    t.snp = t.snp.clone().allow_insecure(h.roots());
    let v = verify_evidence(&ev, &t, OffsetDateTime::now_utc()).unwrap();
    assert!(v.insecure());
}

#[test]
fn tampered_payload_wrong_leaf_foreign_leaf_and_expiry_are_refused() {
    let s = bare_sealer();
    let now = OffsetDateTime::now_utc();
    let ev = s.seal(&example::claims("vm-1", 5), now).unwrap();
    let t = no_anchors();

    // Any single flipped byte in the evidence is refused.
    for i in (0..ev.len()).step_by(97) {
        let mut bad = ev.clone();
        bad[i] ^= 0x04;
        assert!(
            verify_evidence(&bad, &t, now).is_err(),
            "byte {i} of {}",
            ev.len()
        );
    }
    // Every truncation is refused.
    for n in (0..ev.len()).step_by(211) {
        assert!(verify_evidence(&ev[..n], &t, now).is_err());
    }

    // Payload replaced (re-encoded claims for another memory root): the signature fails.
    let d = DecodedEvidence::decode(&ev).unwrap();
    let mut c = Claims::decode(&d.payload).unwrap();
    c.regions[0].root[0] ^= 1;
    let (m, code) = Claims::compute_roots(c.hash_alg, &c.regions).unwrap();
    c.memory_root = m;
    c.code_hash = code;
    let forged = rewrap(&ev, Some(c.encode()), None);
    assert!(matches!(
        verify_evidence(&forged, &t, now),
        Err(VerifyError::Signature)
    ));

    // The leaf of another snapshot (same intermediate): its key did not sign this payload.
    let ev2 = s.seal(&example::claims("vm-1", 6), now).unwrap();
    let d2 = DecodedEvidence::decode(&ev2).unwrap();
    let swapped = rewrap(&ev, None, Some(d2.leaf_der.clone()));
    assert!(matches!(
        verify_evidence(&swapped, &t, now),
        Err(VerifyError::Signature)
    ));

    // A leaf from another intermediate.
    let ev3 = bare_sealer()
        .seal(&example::claims("vm-1", 5), now)
        .unwrap();
    let d3 = DecodedEvidence::decode(&ev3).unwrap();
    let foreign = rewrap(&ev, None, Some(d3.leaf_der));
    assert!(matches!(
        verify_evidence(&foreign, &t, now),
        Err(VerifyError::Leaf(LeafError::NotIssued(_)))
    ));

    // Expired leaf (verified two hours later; leaves live one hour).
    let err = verify_evidence(&ev, &t, now + Duration::hours(2)).unwrap_err();
    assert!(
        matches!(err, VerifyError::Leaf(LeafError::Time(_))),
        "{err}"
    );
}

#[test]
fn leaf_for_another_vm_or_sequence_is_refused() {
    // A buggy or malicious sealer signs vm-2's claims with a leaf certified for vm-1 #5.
    use coset::{CoseSign1Builder, HeaderBuilder, TaggedCborSerializable, iana};
    use std::sync::Arc;
    use vmseal_sealer::keys::LeafKey;
    use vmseal_sealer::x509::LeafIssuer;
    let now = OffsetDateTime::now_utc();
    let (key, inter) = bare_intermediate(now);
    let issuer = LeafIssuer::new(Arc::new(key), &inter).unwrap();
    for (vm, seq) in [("vm-2", 5), ("vm-1", 6)] {
        let leaf = LeafKey::generate().unwrap();
        let leaf_der = issuer.issue(leaf.public_key(), "vm-1", 5, now).unwrap();
        let protected = HeaderBuilder::new()
            .algorithm(iana::Algorithm::ML_DSA_65)
            .value(
                33,
                ciborium::value::Value::Array(vec![
                    ciborium::value::Value::Bytes(leaf_der),
                    ciborium::value::Value::Bytes(inter.clone()),
                ]),
            )
            .build();
        let ev = CoseSign1Builder::new()
            .protected(protected)
            .payload(example::claims(vm, seq).encode())
            .try_create_signature(b"", |tbs| leaf.sign_once(tbs))
            .unwrap()
            .build()
            .to_tagged_vec()
            .unwrap();
        let err = verify_evidence(&ev, &no_anchors(), now).unwrap_err();
        assert!(
            matches!(err, VerifyError::IdentityMismatch { .. }),
            "{vm} #{seq}: {err}"
        );
    }
}

/// Re-encode a COSE_Sign1 with a replaced payload or leaf certificate (signature kept).
fn rewrap(ev: &[u8], payload: Option<Vec<u8>>, leaf: Option<Vec<u8>>) -> Vec<u8> {
    use coset::{Label, TaggedCborSerializable};
    let mut s = coset::CoseSign1::from_tagged_slice(ev).unwrap();
    if let Some(p) = payload {
        s.payload = Some(p);
    }
    if let Some(l) = leaf {
        for (label, v) in s.protected.header.rest.iter_mut() {
            if *label == Label::Int(33)
                && let ciborium::value::Value::Array(a) = v
            {
                a[0] = ciborium::value::Value::Bytes(l.clone());
            }
        }
        s.protected.original_data = None;
    }
    s.to_tagged_vec().unwrap()
}
