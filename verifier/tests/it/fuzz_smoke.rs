//! A short deterministic run of the request-body fuzz target on stable.

#[test]
fn request_bodies_never_panic() {
    let seeds: [&[u8]; 7] = [
        br#"{"vm_id":"vm-a","host_id":"h1","threshold":70,"policy":"name = 1"}"#,
        br#"{"seq":3,"regions":[{"name":"code","leaves":"ab"}]}"#,
        br#"{"code":"replay","message":"x"}"#,
        br#"{"vm_id":"vm-a","duration_s":3600,"reason":"patch"}"#,
        br#"{"name":"ops","url":"https://hooks.example/x"}"#,
        br#"{"fresh":"oWVub25jZUA=","csr_pem":"-----BEGIN CERTIFICATE REQUEST-----\nAA==\n-----END CERTIFICATE REQUEST-----\n"}"#,
        br#"{"entries":[{"id":1,"at":5,"actor":"admin","action":"x","detail":"{}","prev_hash":"0000000000000000000000000000000000000000000000000000000000000000","hash":"ab"}]}"#,
    ];
    for seed in seeds {
        vmseal_testkit::mutations(seed, 20_000, b"{}[]\":,0\\\x00\xff", |d| {
            vmseal_verifier::fuzzing::request_bodies(d)
        });
    }
}

/// A short deterministic run of the `corim` fuzz target on stable: mutations of a real signed
/// CoRIM and of its unsigned payload.
#[test]
fn corims_never_panic() {
    use vmseal_client::corim::{Ed25519CorimKey, ReferenceValues, RegionReference};
    use vmseal_sealer::claims::{RegionClass, Severity};
    use vmseal_sealer::merkle::HashAlg;
    let key =
        Ed25519CorimKey::from_pem(Ed25519CorimKey::generate_pem().unwrap().as_bytes(), "smoke")
            .unwrap();
    let rv = ReferenceValues {
        corim_id: "smoke".into(),
        tag_id: "smoke".into(),
        tag_version: 1,
        policy_digest: HashAlg::Sha256.hash(&[b"p"]),
        policy_text: Some("p".into()),
        regions: vec![RegionReference {
            name: "code".into(),
            class: RegionClass::Code,
            severity: Severity::Critical,
            hash: HashAlg::Sha256,
            leaves: vec![[1; 32], [2; 32]],
            ranges: Some(vec![[0, 8192]]),
        }],
        kernel: Some(vmseal_sealer::claims::kernel::example::kernel()),
    };
    let signed = vmseal_client::corim::seal(&rv, &key).unwrap();
    let unsigned = vmseal_client::corim::payload(&rv).unwrap();
    let bytes: Vec<u8> = (0..=255).collect();
    for seed in [&signed, &unsigned] {
        vmseal_testkit::mutations(seed, 5_000, &bytes, |d| {
            vmseal_client::corim::fuzzing::corim(d)
        });
    }
}
