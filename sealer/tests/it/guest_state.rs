//! The state of an SEV-SNP guest without a TPM (`vmseal-shim init`): the intermediate anchored by
//! the guest's SNP report only, its seed sealed with the guest's derived key — here the INSECURE
//! stand-in's, the only one this machine has.

use time::{Duration, OffsetDateTime};
use vmseal_sealer::claims::example;
use vmseal_sealer::snp::Product;
use vmseal_sealer::state::{
    EnrollmentMaterial, GuestInitOptions, HostState, SeedSeal, SnpChoice, StandInOptions,
    StateError, init_guest,
};
use vmseal_sealer::verify::{AnchorRequirement, TrustConfig, verify_evidence};

fn opts() -> GuestInitOptions {
    GuestInitOptions {
        host_id: "guest-1".into(),
        snp: SnpChoice::InsecureSoft,
        insecure: StandInOptions {
            product: Product::Genoa,
            ..Default::default()
        },
        nonce: None,
        validity: Duration::days(30),
    }
}

#[test]
fn a_guest_state_seals_with_its_derived_key_and_verifies_under_snp_only() {
    let dir = tempfile::tempdir().unwrap();
    init_guest(dir.path(), &opts()).unwrap();
    assert!(matches!(
        init_guest(dir.path(), &opts()),
        Err(StateError::Exists(_))
    ));
    let state = HostState::load(dir.path(), None).unwrap();
    assert_eq!(state.config.seal, SeedSeal::SnpDerived);
    let ev = state
        .sealer
        .seal(&example::claims("vm-1", 0), OffsetDateTime::now_utc())
        .unwrap();
    // Verifiable with public material: the stand-in's root named, SNP required, no TPM.
    let root = std::fs::read(dir.path().join("insecure-snp-ark.pem")).unwrap();
    let trust = TrustConfig {
        require: AnchorRequirement::from_name("snp").unwrap(),
        ..TrustConfig::default()
    };
    let mut t = trust.clone();
    t.snp = t.snp.clone().allow_insecure_bundle(&root).unwrap();
    let v = verify_evidence(&ev, &t, OffsetDateTime::now_utc()).unwrap();
    assert_eq!(v.claims.vm_id, "vm-1");
    // Without the stand-in's root named, or when a TPM is required, it is refused.
    assert!(verify_evidence(&ev, &trust, OffsetDateTime::now_utc()).is_err());
    let mut both = t.clone();
    both.require = AnchorRequirement::from_name("both").unwrap();
    assert!(verify_evidence(&ev, &both, OffsetDateTime::now_utc()).is_err());
    // Enrollment material has no TPM and so no EK; a challenge cannot be answered.
    let mut m = EnrollmentMaterial::open(dir.path(), None).unwrap();
    assert!(m.ek_public.is_empty());
    assert!(m.activate(b"x", b"y").is_err());
}

#[test]
fn a_guest_seed_opens_only_with_its_own_derived_key_and_intact_bytes() {
    let dir = tempfile::tempdir().unwrap();
    init_guest(dir.path(), &opts()).unwrap();
    // Another guest's "derived key": its stand-in hierarchy in place of ours.
    let other = tempfile::tempdir().unwrap();
    init_guest(other.path(), &opts()).unwrap();
    let keep = std::fs::read(dir.path().join("insecure-snp.cbor")).unwrap();
    std::fs::copy(
        other.path().join("insecure-snp.cbor"),
        dir.path().join("insecure-snp.cbor"),
    )
    .unwrap();
    let e = HostState::load(dir.path(), None).unwrap_err().to_string();
    assert!(
        e.contains("does not open with this guest's derived key"),
        "{e}"
    );
    std::fs::write(dir.path().join("insecure-snp.cbor"), keep).unwrap();
    HostState::load(dir.path(), None).unwrap();
    // One flipped bit of the sealed seed.
    let p = dir.path().join("intermediate-key.sealed");
    let mut b = std::fs::read(&p).unwrap();
    let n = b.len();
    b[n - 1] ^= 1;
    std::fs::write(&p, &b).unwrap();
    assert!(HostState::load(dir.path(), None).is_err());
    // A guest state needs an SNP anchor.
    let none = tempfile::tempdir().unwrap();
    let mut o = opts();
    o.snp = SnpChoice::None;
    assert!(init_guest(none.path(), &o).is_err());
}

#[test]
fn on_this_machine_a_real_snp_guest_state_is_a_clear_error() {
    if std::path::Path::new("/dev/sev-guest").exists()
        || std::path::Path::new("/sys/kernel/config/tsm/report").exists()
    {
        return; // SNP hardware: the real path, exercised by the in-guest test of issue 6.
    }
    for snp in [SnpChoice::SevGuest, SnpChoice::Configfs] {
        let dir = tempfile::tempdir().unwrap();
        let mut o = opts();
        o.snp = snp;
        let e = init_guest(dir.path(), &o).unwrap_err().to_string();
        assert!(
            e.contains("SEV-SNP") || e.contains("sev-guest") || e.contains("configfs"),
            "{e}"
        );
        assert!(
            !dir.path().join("state.json").exists(),
            "nothing half-written"
        );
    }
}
