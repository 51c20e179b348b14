//! Entry points for the fuzz targets in `fuzz/` (one per parser of outside bytes), kept here so
//! each target is a line and the same functions run on stable in the test suite
//! (`tests/it/fuzz_smoke.rs`). None may panic, whatever the input.

use crate::anchor::{self, SnpAnchor, TpmAnchor};
use crate::claims::Claims;
use crate::evidence::DecodedEvidence;
use crate::snp::provider::split_cert_table;
use crate::snp::report::SnpReport;
use crate::tpm::verify::verify_quote_signature;
use crate::verify::{AnchorRequirement, TrustConfig, verify_evidence};
use crate::x509::{ParsedCert, parse_bundle};

/// Evidence: COSE structure, then the full verification with no anchors required.
pub fn evidence(data: &[u8]) {
    if let Ok(d) = DecodedEvidence::decode(data) {
        let _ = Claims::decode(&d.payload);
        let _ = ParsedCert::from_der(&d.leaf_der);
    }
    let trust = TrustConfig {
        require: AnchorRequirement {
            tpm: false,
            snp: false,
        },
        ..TrustConfig::default()
    };
    let _ = verify_evidence(data, &trust, time::OffsetDateTime::UNIX_EPOCH);
}

/// Claims: deterministic CBOR.
pub fn claims(data: &[u8]) {
    if let Ok(c) = Claims::decode(data) {
        // What decodes must re-encode to the same bytes.
        assert_eq!(c.encode(), data, "claims round trip");
    }
}

/// Certificates: DER, PEM bundles, and vmseal's extensions.
pub fn certificate(data: &[u8]) {
    if let Ok(c) = ParsedCert::from_der(data) {
        let _ = c.vmseal_extension::<TpmAnchor>(crate::oid::EXT_TPM_ANCHOR_STR);
        let _ = c.vmseal_extension::<SnpAnchor>(crate::oid::EXT_SNP_ANCHOR_STR);
        let _ = crate::x509::signed_by(&c, &c);
    }
    let _ = parse_bundle(data);
}

/// SNP reports and AMD certificate tables.
pub fn snp(data: &[u8]) {
    let _ = SnpReport::parse(data);
    let _ = split_cert_table(data);
}

/// TPM structures: split the input into TPMS_ATTEST, TPMT_SIGNATURE and TPMT_PUBLIC.
pub fn tpm(data: &[u8]) {
    let (Some(&a), Some(&b)) = (data.first(), data.get(1)) else {
        return;
    };
    let rest = &data[2..];
    let a = (a as usize).min(rest.len());
    let b = (b as usize).min(rest.len() - a);
    let (attest, rest) = rest.split_at(a);
    let (sig, public) = rest.split_at(b);
    let _ = verify_quote_signature(attest, sig, public);
}

/// Anchor extensions (CBOR).
pub fn anchors(data: &[u8]) {
    let _ = anchor::decode::<TpmAnchor>(data);
    let _ = anchor::decode::<SnpAnchor>(data);
    let _ = anchor::decode::<anchor::SnapshotIdentity>(data);
}
