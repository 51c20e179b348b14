//! Every genuine AMD SEV-SNP report in `../shared/vectors/sev-snp` verifies against the built-in
//! AMD roots, and a copy with any byte of its signed region flipped does not.

use vmseal_sealer::snp::Product;
use vmseal_sealer::snp::report::SigningKey;
use vmseal_sealer::snp::verify::{SnpTrust, SnpVerifyError, verify_report};
use vmseal_sealer::x509::{ParsedCert, parse_bundle};
use vmseal_testkit::vector;

struct Case {
    report: Vec<u8>,
    vek: ParsedCert,
    name: String,
    signing_key: String,
}

fn load_report(rel: &str) -> Vec<u8> {
    let raw = vector(&format!("sev-snp/reports/{rel}"));
    if rel.ends_with(".hex") {
        let text: String = String::from_utf8(raw).unwrap().split_whitespace().collect();
        hex::decode(text).unwrap()
    } else {
        raw
    }
}

fn cases() -> Vec<Case> {
    let expected: serde_json::Value =
        serde_json::from_slice(&vector("sev-snp/EXPECTED-reports.json")).unwrap();
    let cases: Vec<Case> = expected
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let rel = e["report"].as_str().unwrap();
            let cert = vector(&format!("sev-snp/reports/{}", e["cert"].as_str().unwrap()));
            Case {
                report: load_report(rel),
                // A bundle lists the VCEK first.
                vek: parse_bundle(&cert).unwrap().remove(0),
                name: rel.to_owned(),
                signing_key: e["signing_key"].as_str().unwrap().to_owned(),
            }
        })
        .collect();
    assert_eq!(cases.len(), 11, "all genuine reports are exercised");
    cases
}

/// A time inside every certificate's validity: now, unless the VEK has expired (the VLEKs).
fn valid_time(c: &Case) -> i64 {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if c.vek.valid_at(now) {
        now
    } else {
        c.vek.not_before + 86_400
    }
}

#[test]
fn every_genuine_report_verifies() {
    let trust = SnpTrust::default();
    for c in cases() {
        let v = verify_report(&c.report, &c.vek.der, None, &trust, valid_time(&c))
            .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        assert!(!v.insecure);
        let expect = if c.signing_key == "VLEK" {
            SigningKey::Vlek
        } else {
            SigningKey::Vcek
        };
        assert_eq!(v.signing_key, expect, "{}", c.name);
        if expect == SigningKey::Vcek {
            assert!(v.chip_id_checked, "{}: hwID compared", c.name);
        }
    }
}

#[test]
fn every_flipped_byte_of_the_signed_region_fails() {
    let trust = SnpTrust::default();
    let mut checked = 0;
    for c in cases() {
        let at = valid_time(&c);
        for pos in 0..0x2A0 {
            let mut bad = c.report.clone();
            bad[pos] ^= 0x01;
            assert!(
                verify_report(&bad, &c.vek.der, None, &trust, at).is_err(),
                "{}: flipped byte {pos:#x} still verified",
                c.name
            );
            checked += 1;
        }
        // And the signature itself.
        for pos in [0x2A0, 0x2A0 + 47, 0x2E8, 0x2E8 + 20] {
            let mut bad = c.report.clone();
            bad[pos] ^= 0x80;
            assert!(
                verify_report(&bad, &c.vek.der, None, &trust, at).is_err(),
                "{}: sig byte {pos:#x}",
                c.name
            );
        }
    }
    assert_eq!(checked, 11 * 0x2A0);
}

#[test]
fn expired_vlek_is_refused_at_the_current_time() {
    let trust = SnpTrust::default();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let vleks: Vec<Case> = cases()
        .into_iter()
        .filter(|c| c.signing_key == "VLEK")
        .collect();
    assert_eq!(vleks.len(), 2);
    for c in vleks {
        let err = verify_report(&c.report, &c.vek.der, None, &trust, now).unwrap_err();
        assert!(
            matches!(err, SnpVerifyError::Expired { which: "VLEK", .. }),
            "{}: {err}",
            c.name
        );
    }
}

#[test]
fn wrong_vcek_wrong_product_and_fake_vceks_fail() {
    let all = cases();
    let trust = SnpTrust::default();
    // Report 1 with report 2's VCEK (both Milan, both genuine).
    let err = verify_report(
        &all[0].report,
        &all[1].vek.der,
        None,
        &trust,
        valid_time(&all[0]),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            SnpVerifyError::Signature | SnpVerifyError::Tcb { .. } | SnpVerifyError::HwId
        ),
        "{err}"
    );
    // Trusting Genoa only: a Milan VCEK has no trusted issuer.
    let genoa_only = SnpTrust {
        roots: vec![Product::Genoa.genuine_roots().unwrap()],
    };
    let err = verify_report(
        &all[0].report,
        &all[0].vek.der,
        None,
        &genoa_only,
        valid_time(&all[0]),
    )
    .unwrap_err();
    assert!(matches!(err, SnpVerifyError::UnknownIssuer(_)), "{err}");
    // A supplied ARK other than the trusted one.
    let genoa_ark = Product::Genoa.genuine_roots().unwrap().ark;
    let err = verify_report(
        &all[0].report,
        &all[0].vek.der,
        Some(&genoa_ark),
        &trust,
        valid_time(&all[0]),
    )
    .unwrap_err();
    assert!(
        matches!(err, SnpVerifyError::UntrustedArk("Milan")),
        "{err}"
    );
    // trustee's fake VCEKs: parse, but no AMD ASK signed them.
    for f in [
        "trustee-test-vcek-invalid-legacy.der",
        "trustee-test-vcek-invalid-new.der",
    ] {
        let der = vector(&format!("sev-snp/negative/{f}"));
        let err =
            verify_report(&all[0].report, &der, None, &trust, valid_time(&all[0])).unwrap_err();
        assert!(
            matches!(
                err,
                SnpVerifyError::Chain { .. } | SnpVerifyError::UnknownIssuer(_)
            ),
            "{f}: {err}"
        );
    }
}

#[test]
fn turin_vcek_chains_to_the_turin_roots() {
    let der = vector("sev-snp/vcek-only/virtee-vcek_turin.der");
    let vek = ParsedCert::from_der(&der).unwrap();
    let roots = Product::Turin.genuine_roots().unwrap();
    let ask = ParsedCert::from_der(&roots.ask).unwrap();
    assert_eq!(vek.issuer_raw, ask.subject_raw);
    assert!(vmseal_sealer::x509::signed_by(&vek, &ask));
    assert_eq!(
        vek.extension(vmseal_sealer::snp::verify::OID_HWID)
            .map(|e| vmseal_sealer::snp::verify::hwid_bytes(&e.value).len()),
        Some(8)
    );
}
