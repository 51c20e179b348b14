//! The INSECURE software SNP stand-in: byte-exact reports for every product and report version,
//! accepted only when the trust configuration names its test root; and the configfs-tsm auxblob
//! parser on genuine configfs output.

use std::sync::OnceLock;

use sev::certs::snp::Verifiable;
use sev::parser::ByteParser;
use vmseal_sealer::snp::Product;
use vmseal_sealer::snp::provider::split_cert_table;
use vmseal_sealer::snp::report::SnpReport;
use vmseal_sealer::snp::standin::TestHierarchy;
use vmseal_sealer::snp::verify::{SnpTrust, SnpVerifyError, verify_report};
use vmseal_testkit::vector;

/// One hierarchy per product per test process (RSA-4096 generation is the slow part).
fn hierarchy(p: Product) -> &'static TestHierarchy {
    static H: OnceLock<Vec<TestHierarchy>> = OnceLock::new();
    let all = H.get_or_init(|| {
        Product::ALL
            .iter()
            .map(|&p| TestHierarchy::generate(p).unwrap())
            .collect()
    });
    &all[Product::ALL.iter().position(|&x| x == p).unwrap()]
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[test]
fn every_product_and_version_verifies_only_when_allowed() {
    for p in Product::ALL {
        let h = hierarchy(p);
        for version in [2, 3, 5] {
            let data: [u8; 64] = core::array::from_fn(|i| i as u8 ^ version as u8);
            let raw = h.report(version, &data).unwrap();
            let parsed = SnpReport::parse(&raw).unwrap();
            assert_eq!(parsed.version, version);
            assert_eq!(parsed.report_data, data);
            if version >= 3 {
                assert_eq!(parsed.product_from_cpuid(), Some(p));
            }

            let allowed = SnpTrust::default().allow_insecure(h.roots());
            let v = verify_report(&raw, &h.vcek, Some(&h.ark), &allowed, now())
                .unwrap_or_else(|e| panic!("{p:?} v{version}: {e}"));
            assert!(v.insecure, "stand-in is marked insecure");
            assert!(v.chip_id_checked);
            assert!(
                v.chain.iter().all(|s| s.contains("INSECURE")),
                "{:?}",
                v.chain
            );

            let err = verify_report(&raw, &h.vcek, Some(&h.ark), &SnpTrust::default(), now())
                .unwrap_err();
            assert!(
                matches!(err, SnpVerifyError::InsecureRootNotAllowed(_)),
                "{err}"
            );
            assert!(err.to_string().contains("INSECURE"));
        }
    }
}

#[test]
fn stand_in_reports_are_byte_exact_for_the_sev_crate() {
    // An independent parser and verifier (virtee/sev) accepts the stand-in's layout and signature.
    for p in Product::ALL {
        let h = hierarchy(p);
        for version in [3, 5] {
            let raw = h.report(version, &[7u8; 64]).unwrap();
            let report = sev::firmware::guest::AttestationReport::from_bytes(&raw)
                .unwrap_or_else(|e| panic!("{p:?} v{version}: sev cannot parse: {e}"));
            let vcek = sev::certs::snp::Certificate::from_der(&h.vcek).unwrap();
            (&vcek, &report)
                .verify()
                .unwrap_or_else(|e| panic!("{p:?} v{version}: {e}"));
            let ark = sev::certs::snp::Certificate::from_der(&h.ark).unwrap();
            let ask = sev::certs::snp::Certificate::from_der(&h.ask).unwrap();
            let chain = sev::certs::snp::Chain {
                ca: sev::certs::snp::ca::Chain { ark, ask },
                vek: vcek,
            };
            (&chain).verify().unwrap();
        }
    }
}

#[test]
fn stand_in_tampering_and_a_foreign_test_root_fail() {
    let h = hierarchy(Product::Genoa);
    let raw = h.report(3, &[1u8; 64]).unwrap();
    let allowed = SnpTrust::default().allow_insecure(h.roots());
    for pos in (0..0x2A0).step_by(7) {
        let mut bad = raw.clone();
        bad[pos] ^= 0x10;
        assert!(
            verify_report(&bad, &h.vcek, None, &allowed, now()).is_err(),
            "byte {pos:#x}"
        );
    }
    // Another stand-in's root is not this one: names collide, signatures do not.
    let other = TestHierarchy::generate(Product::Genoa).unwrap();
    let trust_other = SnpTrust::default().allow_insecure(other.roots());
    let err = verify_report(&raw, &h.vcek, None, &trust_other, now()).unwrap_err();
    assert!(matches!(err, SnpVerifyError::Chain { .. }), "{err}");
    // The hierarchy survives a round trip through its stored form.
    let back = TestHierarchy::from_bytes(&h.to_bytes()).unwrap();
    let raw2 = back.report(2, &[2u8; 64]).unwrap();
    verify_report(&raw2, &back.vcek, None, &allowed, now()).unwrap();
    assert!(TestHierarchy::from_bytes(&h.to_bytes()[..100]).is_err());
    assert!(h.report(4, &[0; 64]).is_err());
}

#[test]
fn genuine_configfs_tsm_output_parses_and_verifies() {
    // Real configfs-tsm output (veraison): outblob = report, auxblob = GHCB certificate table.
    let j: serde_json::Value = serde_json::from_slice(&vector(
        "sev-snp/reports/08-veraison-genoa-v3/sevsnp-tsm-report.json",
    ))
    .unwrap();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let get = |k: &str| {
        b64.decode(j[k].as_str().unwrap().trim_end_matches('='))
            .unwrap()
    };
    let report = get("outblob");
    let vmseal_sealer::snp::provider::TableCerts { vek, ask, ark } =
        split_cert_table(&get("auxblob")).unwrap();
    assert!(!vek.is_empty() && !ask.is_empty() && !ark.is_empty());
    let genoa = Product::Genoa.genuine_roots().unwrap();
    assert_eq!(ark, genoa.ark);
    assert_eq!(ask, genoa.ask);
    let v = verify_report(&report, &vek, Some(&ark), &SnpTrust::default(), now()).unwrap();
    assert_eq!(v.product, Product::Genoa);
    // A truncated table is an error, not a panic.
    assert!(split_cert_table(&get("auxblob")[..30]).is_err());
}
