//! The TPM root on a real swtpm: EK certificate, AK creation and credential activation, quotes
//! verified from public material, and the sealed intermediate seed under a PCR policy.

use vmseal_sealer::anchor::{TpmAnchor, tpm_binding};
use vmseal_sealer::keys::IntermediateKey;
use vmseal_sealer::tpm::credential::{
    CredentialError, ek_public_matches_certificate, make_credential,
};
use vmseal_sealer::tpm::verify::{TpmTrust, TpmVerifyError, object_name, verify_tpm_anchor};
use vmseal_sealer::tpm::{Tpm, TpmError};
use vmseal_testkit::Swtpm;

fn pem_der(path: &std::path::Path) -> Vec<u8> {
    let text = std::fs::read(path).unwrap();
    pem::parse(text).unwrap().contents().to_vec()
}

fn trust(sw: &Swtpm) -> TpmTrust {
    TpmTrust {
        ek_roots: vec![pem_der(&sw.ek_issuer_pem())],
        require_ek_chain: true,
        activated_aks: None,
    }
}

#[test]
fn credential_activation_binds_the_ak_to_the_ek() {
    let sw = Swtpm::start().unwrap();
    let mut tpm = Tpm::open(&sw.tcti()).unwrap();
    let ak = tpm.create_ak().unwrap();
    let name = tpm.ak_name(&ak).unwrap();
    assert_eq!(
        name,
        object_name(&ak.public),
        "software name equals the TPM's"
    );
    let ek_public = tpm.ek_public().unwrap();

    let made = make_credential(&ek_public, &name, b"verifier-chosen secret").unwrap();
    let got = tpm
        .activate_credential(&ak, &made.credential_blob, &made.encrypted_secret)
        .unwrap();
    assert_eq!(&got[..], b"verifier-chosen secret");

    // Bound to another name: the TPM refuses (integrity HMAC mismatch).
    let mut other = name.clone();
    other[5] ^= 1;
    let made = make_credential(&ek_public, &other, b"verifier-chosen secret").unwrap();
    assert!(
        tpm.activate_credential(&ak, &made.credential_blob, &made.encrypted_secret)
            .is_err()
    );

    // The EK public area a host sends must be the key its EK certificate certifies.
    let ek_cert = tpm.ek_certificate().unwrap();
    ek_public_matches_certificate(&ek_public, &ek_cert).unwrap();
    let sw2 = Swtpm::start().unwrap();
    let mut tpm2 = Tpm::open(&sw2.tcti()).unwrap();
    let ek2 = tpm2.ek_public().unwrap();
    assert!(matches!(
        ek_public_matches_certificate(&ek2, &ek_cert),
        Err(CredentialError::EkMismatch(_))
    ));
    assert!(matches!(
        ek_public_matches_certificate(&ek_public, &ek_cert[..ek_cert.len() - 1]),
        Err(CredentialError::EkMismatch(_))
    ));
    assert!(matches!(
        ek_public_matches_certificate(&ek_public[..10], &ek_cert),
        Err(CredentialError::EkPublic(_))
    ));

    // Another TPM's EK: the secret is not recoverable here.
    let made = make_credential(&ek2, &name, b"verifier-chosen secret").unwrap();
    assert!(
        tpm.activate_credential(&ak, &made.credential_blob, &made.encrypted_secret)
            .is_err()
    );
}

#[test]
fn quote_binds_the_intermediate_and_verifies_publicly() {
    let sw = Swtpm::start().unwrap();
    let mut tpm = Tpm::open(&sw.tcti()).unwrap();
    let ak = tpm.create_ak().unwrap();
    let key = IntermediateKey::generate().unwrap();
    let nonce = b"0123456789abcdef0123456789abcdef".to_vec();
    // 10 PCRs: more than one TPM2_PCR_Read returns.
    let pcrs: Vec<u8> = (0..10).collect();
    let q = tpm
        .quote(&ak, &tpm_binding(key.spki_der(), &nonce), &pcrs)
        .unwrap();
    assert_eq!(q.pcrs.len(), 10);
    let anchor = TpmAnchor {
        attest: q.attest,
        signature: q.signature,
        ak_public: ak.public.clone(),
        ek_cert: tpm.ek_certificate().unwrap(),
        pcrs: q.pcrs,
        nonce: nonce.clone(),
    };
    let v = verify_tpm_anchor(&anchor, key.spki_der(), &trust(&sw)).unwrap();
    assert!(v.ek_chain_verified);
    assert_eq!(v.pcrs.len(), 10);

    // Another key's SPKI is not bound.
    let other = IntermediateKey::generate().unwrap();
    assert!(matches!(
        verify_tpm_anchor(&anchor, other.spki_der(), &trust(&sw)),
        Err(TpmVerifyError::Binding)
    ));
    // A PCR value changed after the fact.
    let mut bad = anchor.clone();
    bad.pcrs[3].value[0] ^= 1;
    assert!(matches!(
        verify_tpm_anchor(&bad, key.spki_der(), &trust(&sw)),
        Err(TpmVerifyError::PcrDigest)
    ));
    // A PCR dropped from the list.
    let mut bad = anchor.clone();
    bad.pcrs.pop();
    assert!(matches!(
        verify_tpm_anchor(&bad, key.spki_der(), &trust(&sw)),
        Err(TpmVerifyError::PcrDigest)
    ));
    // A flipped byte anywhere in the attest or signature is refused.
    for i in 0..anchor.attest.len() {
        let mut bad = anchor.clone();
        bad.attest[i] ^= 0x01;
        assert!(
            verify_tpm_anchor(&bad, key.spki_der(), &trust(&sw)).is_err(),
            "attest byte {i}"
        );
    }
    for i in 0..anchor.signature.len() {
        let mut bad = anchor.clone();
        bad.signature[i] ^= 0x01;
        assert!(
            verify_tpm_anchor(&bad, key.spki_der(), &trust(&sw)).is_err(),
            "signature byte {i}"
        );
    }
    // The EK does not chain to an unrelated CA.
    let sw2 = Swtpm::start().unwrap();
    assert!(matches!(
        verify_tpm_anchor(&anchor, key.spki_der(), &trust(&sw2)),
        Err(TpmVerifyError::EkChain(_))
    ));
    // An AK that this verifier never activated.
    let t = TpmTrust {
        activated_aks: Some(vec![vec![0, 11, 1, 2]]),
        ..trust(&sw)
    };
    assert!(matches!(
        verify_tpm_anchor(&anchor, key.spki_der(), &t),
        Err(TpmVerifyError::AkNotActivated(_))
    ));
}

#[test]
fn sealed_seed_survives_restart_and_refuses_after_pcr_extend() {
    let mut sw = Swtpm::start().unwrap();
    let key = IntermediateKey::generate().unwrap();
    let pcrs = [0u8, 1, 2, 3, 4, 5, 6, 7];
    let blob = Tpm::open(&sw.tcti())
        .unwrap()
        .seal(key.seed().as_ref(), &pcrs)
        .unwrap();

    sw.restart().unwrap();
    let seed = Tpm::open(&sw.tcti()).unwrap().unseal(&blob).unwrap();
    assert_eq!(&seed[..], key.seed().as_ref());

    sw.extend_pcr(7).unwrap();
    let err = Tpm::open(&sw.tcti()).unwrap().unseal(&blob).unwrap_err();
    assert!(matches!(err, TpmError::PolicyMismatch { .. }), "{err}");
    assert!(err.to_string().contains("PCRs"));
}

#[test]
fn unreachable_tpm_is_a_clear_error() {
    let err = Tpm::open("swtpm:host=127.0.0.1,port=1").unwrap_err();
    assert!(err.to_string().contains("cannot open TPM"), "{err}");
}
