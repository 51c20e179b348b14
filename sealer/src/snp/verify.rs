//! Verification of SEV-SNP reports against AMD's hierarchy: ARK → ASK → VCEK, or ARK → ASVK →
//! VLEK; the report signature (ECDSA P-384/SHA-384); the VCEK's TCB and hardware-ID extensions
//! against the report; and certificate validity.
//!
//! **Expired VCEK/VLEK rule.** Every certificate of the chain must be valid at the verification
//! time. VCEKs are issued for seven years; VLEKs (cloud providers) for months, and an expired VLEK
//! means the provider has rotated it: the guest must re-attest with the current one. A report
//! carries no timestamp, so a verifier cannot know it was signed while the VLEK was valid; an
//! auditor re-checking old evidence passes the time of the original appraisal explicitly
//! (`vmseal-certs verify --at`). See `docs/threat-model.md`.

use subtle::ConstantTimeEq;

use super::Product;
use super::report::{ReportError, SigningKey, SnpReport, TcbParts};
use crate::x509::ParsedCert;

/// AMD root material for one product (genuine, or the INSECURE test hierarchy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmdRoots {
    /// Product generation.
    pub product: Product,
    /// DER ARK (self-signed root).
    pub ark: Vec<u8>,
    /// DER ASK (signs VCEKs).
    pub ask: Vec<u8>,
    /// DER ASVK (signs VLEKs), when known.
    pub asvk: Option<Vec<u8>>,
    /// True for the software stand-in's test hierarchy.
    pub insecure: bool,
}

/// Which SNP roots a verifier trusts.
#[derive(Debug, Clone)]
pub struct SnpTrust {
    /// Trusted hierarchies: the genuine AMD roots by default.
    pub roots: Vec<AmdRoots>,
}

impl Default for SnpTrust {
    fn default() -> Self {
        Self {
            roots: Product::ALL
                .iter()
                .filter_map(|p| p.genuine_roots())
                .collect(),
        }
    }
}

impl SnpTrust {
    /// Also trust an INSECURE test hierarchy (the software stand-in's). Never in production.
    pub fn allow_insecure(mut self, roots: AmdRoots) -> Self {
        self.roots.push(AmdRoots {
            insecure: true,
            ..roots
        });
        self
    }

    /// Also trust the INSECURE test hierarchy in a PEM bundle of its ARK and ASK (the file
    /// `vmseal-host init --snp insecure-soft` writes as `insecure-snp-ark.pem`).
    pub fn allow_insecure_bundle(self, pem_bundle: &[u8]) -> Result<Self, SnpVerifyError> {
        let certs = crate::x509::parse_bundle(pem_bundle)
            .map_err(|e| SnpVerifyError::VekParse(e.to_string()))?;
        let ark = certs.iter().find(|c| c.subject_raw == c.issuer_raw);
        let ask = certs.iter().find(|c| c.subject_raw != c.issuer_raw);
        let (Some(ark), Some(ask)) = (ark, ask) else {
            return Err(SnpVerifyError::VekParse(
                "the INSECURE root bundle needs the test ARK and ASK".into(),
            ));
        };
        if !ark.subject.contains("INSECURE") {
            return Err(SnpVerifyError::VekParse(
                "that is not a vmseal INSECURE test root; genuine AMD roots are built in".into(),
            ));
        }
        let product = Product::ALL
            .into_iter()
            .find(|p| ask.subject.ends_with(&format!("SEV-{}", p.name())))
            .unwrap_or(Product::Milan);
        Ok(self.allow_insecure(AmdRoots {
            product,
            ark: ark.der.clone(),
            ask: ask.der.clone(),
            asvk: None,
            insecure: true,
        }))
    }
}

/// Errors verifying a report; each names the broken link.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnpVerifyError {
    /// The report does not parse.
    #[error("SNP report: {0}")]
    Report(#[from] ReportError),
    /// The VCEK/VLEK certificate does not parse.
    #[error("VCEK/VLEK certificate: {0}")]
    VekParse(String),
    /// No trusted ASK/ASVK issued the VCEK/VLEK.
    #[error("VCEK/VLEK issuer {0:?} is not a trusted AMD ASK/ASVK")]
    UnknownIssuer(String),
    /// The chain leads to the INSECURE software stand-in, which this trust configuration refuses.
    #[error(
        "report is signed by the INSECURE software SNP stand-in (test root {0:?}); refused: no trust configuration names that test root (use --allow-insecure only in tests)"
    )]
    InsecureRootNotAllowed(String),
    /// A supplied ARK is not the trusted one.
    #[error("supplied ARK is not the trusted AMD ARK for {0}")]
    UntrustedArk(&'static str),
    /// A chain signature failed.
    #[error("AMD chain signature failed ({link}): {reason}")]
    Chain {
        /// Which link.
        link: &'static str,
        /// Why.
        reason: String,
    },
    /// A certificate is outside its validity period.
    #[error(
        "{which} certificate is not valid at the verification time (valid {not_before} to {not_after} Unix time)"
    )]
    Expired {
        /// Which certificate.
        which: &'static str,
        /// Not before.
        not_before: i64,
        /// Not after.
        not_after: i64,
    },
    /// The report's signing-key flag disagrees with the certificate type.
    #[error("report says it is signed by {report:?} but the certificate is a {cert}")]
    SigningKeyMismatch {
        /// From the report.
        report: SigningKey,
        /// From the chain.
        cert: &'static str,
    },
    /// The report signature failed.
    #[error("report signature does not verify with the VCEK/VLEK")]
    Signature,
    /// A TCB component of the certificate differs from the report's reported TCB.
    #[error("VCEK {component} SPL is {cert} but the report's reported_tcb has {report}")]
    Tcb {
        /// Component.
        component: &'static str,
        /// Certificate value.
        cert: u8,
        /// Report value.
        report: u8,
    },
    /// The VCEK hardware ID differs from the report's chip ID.
    #[error("VCEK hwID does not match the report's chip_id")]
    HwId,
    /// The report's CPUID names another product than the chain.
    #[error("report CPUID says {report} but the chain is {chain}")]
    ProductMismatch {
        /// From CPUID.
        report: &'static str,
        /// From the chain.
        chain: &'static str,
    },
    /// REPORT_DATA does not bind what it should.
    #[error("REPORT_DATA does not bind the intermediate key (SHA-512(SPKI ‖ nonce))")]
    Binding,
}

/// What a verified report proves.
#[derive(Debug, Clone)]
pub struct VerifiedReport {
    /// The report.
    pub report: SnpReport,
    /// Product generation.
    pub product: Product,
    /// VCEK or VLEK.
    pub signing_key: SigningKey,
    /// TCB the signing key was derived for.
    pub reported_tcb: TcbParts,
    /// True when the chain is the INSECURE software stand-in.
    pub insecure: bool,
    /// Whether the chip ID was compared with the VCEK's hwID (not possible when masked or VLEK).
    pub chip_id_checked: bool,
    /// Subjects of VEK, ASK/ASVK, ARK.
    pub chain: Vec<String>,
}

const AMD_TCB_OIDS: [(&str, &str); 5] = [
    ("1.3.6.1.4.1.3704.1.3.1", "bootloader"),
    ("1.3.6.1.4.1.3704.1.3.2", "tee"),
    ("1.3.6.1.4.1.3704.1.3.3", "snp"),
    ("1.3.6.1.4.1.3704.1.3.8", "microcode"),
    ("1.3.6.1.4.1.3704.1.3.9", "fmc"),
];
/// AMD hardware ID extension.
pub const OID_HWID: &str = "1.3.6.1.4.1.3704.1.4";
/// AMD product name extension.
pub const OID_PRODUCT_NAME: &str = "1.3.6.1.4.1.3704.1.2";
/// AMD CSP ID extension (VLEK).
pub const OID_CSP_ID: &str = "1.3.6.1.4.1.3704.1.5";

/// Decode a small DER INTEGER extension value.
pub fn der_small_int(v: &[u8]) -> Option<u64> {
    match v {
        [0x02, n, rest @ ..]
            if *n as usize == rest.len() && !rest.is_empty() && rest.len() <= 9 =>
        {
            Some(rest.iter().fold(0u64, |a, b| (a << 8) | *b as u64))
        }
        _ => None,
    }
}

/// The hwID extension's bytes (raw, or wrapped in an OCTET STRING as some tools do).
pub fn hwid_bytes(v: &[u8]) -> &[u8] {
    match v {
        [0x04, n, rest @ ..]
            if *n as usize == rest.len() && (rest.len() == 64 || rest.len() == 8) =>
        {
            rest
        }
        _ => v,
    }
}

fn sev_cert(
    der: &[u8],
    which: &'static str,
) -> Result<sev::certs::snp::Certificate, SnpVerifyError> {
    sev::certs::snp::Certificate::from_der(der).map_err(|e| SnpVerifyError::Chain {
        link: which,
        reason: e.to_string(),
    })
}

fn check_time(c: &ParsedCert, which: &'static str, at: i64) -> Result<(), SnpVerifyError> {
    if c.valid_at(at) {
        Ok(())
    } else {
        Err(SnpVerifyError::Expired {
            which,
            not_before: c.not_before,
            not_after: c.not_after,
        })
    }
}

/// Identify the hierarchy (among all known, trusted or not) whose ASK/ASVK named the VEK's issuer.
fn find_roots<'a>(
    trust: &'a SnpTrust,
    vek: &ParsedCert,
) -> Result<(&'a AmdRoots, bool), SnpVerifyError> {
    for r in &trust.roots {
        for (der, is_vlek) in [(Some(&r.ask), false), (r.asvk.as_ref(), true)] {
            if let Some(ca) = der.and_then(|d| ParsedCert::from_der(d).ok())
                && ca.subject_raw == vek.issuer_raw
            {
                return Ok((r, is_vlek));
            }
        }
    }
    if vek.issuer.contains("INSECURE") {
        return Err(SnpVerifyError::InsecureRootNotAllowed(vek.issuer.clone()));
    }
    Err(SnpVerifyError::UnknownIssuer(vek.issuer.clone()))
}

/// Verify a raw report with its VCEK/VLEK (DER) under `trust` at Unix time `at`.
///
/// `supplied_ark`, when given (from an auxblob or an anchor), must equal the trusted ARK.
pub fn verify_report(
    report_bytes: &[u8],
    vek_der: &[u8],
    supplied_ark: Option<&[u8]>,
    trust: &SnpTrust,
    at: i64,
) -> Result<VerifiedReport, SnpVerifyError> {
    let report = SnpReport::parse(report_bytes)?;
    let vek = ParsedCert::from_der(vek_der).map_err(|e| SnpVerifyError::VekParse(e.to_string()))?;
    let (roots, is_vlek) = find_roots(trust, &vek)?;
    if let Some(ark) = supplied_ark
        && ark != roots.ark.as_slice()
    {
        return Err(SnpVerifyError::UntrustedArk(roots.product.name()));
    }
    let ca_der = if is_vlek {
        roots.asvk.as_deref().unwrap_or_default()
    } else {
        &roots.ask
    };

    // Chain: ARK self-signed, ARK → ASK/ASVK, ASK/ASVK → VEK (RSASSA-PSS SHA-384, sev crate).
    use sev::certs::snp::Verifiable;
    let ark_c = sev_cert(&roots.ark, "ARK")?;
    let ca_c = sev_cert(ca_der, if is_vlek { "ASVK" } else { "ASK" })?;
    let vek_c = sev_cert(vek_der, if is_vlek { "VLEK" } else { "VCEK" })?;
    let chain = sev::certs::snp::ca::Chain {
        ark: ark_c,
        ask: ca_c,
    };
    (&chain).verify().map_err(|e| SnpVerifyError::Chain {
        link: "ARK → ASK/ASVK",
        reason: e.to_string(),
    })?;
    (&chain.ask, &vek_c)
        .verify()
        .map_err(|e| SnpVerifyError::Chain {
            link: "ASK/ASVK → VCEK/VLEK",
            reason: e.to_string(),
        })?;

    let ark_p =
        ParsedCert::from_der(&roots.ark).map_err(|e| SnpVerifyError::VekParse(e.to_string()))?;
    let ca_p = ParsedCert::from_der(ca_der).map_err(|e| SnpVerifyError::VekParse(e.to_string()))?;
    check_time(&ark_p, "ARK", at)?;
    check_time(&ca_p, if is_vlek { "ASVK" } else { "ASK" }, at)?;
    check_time(&vek, if is_vlek { "VLEK" } else { "VCEK" }, at)?;

    let signing_key = report.signing_key();
    let expected = if is_vlek {
        SigningKey::Vlek
    } else {
        SigningKey::Vcek
    };
    if signing_key != expected {
        return Err(SnpVerifyError::SigningKeyMismatch {
            report: signing_key,
            cert: if is_vlek { "VLEK" } else { "VCEK" },
        });
    }
    if let Some(p) = report.product_from_cpuid()
        && p != roots.product
    {
        return Err(SnpVerifyError::ProductMismatch {
            report: p.name(),
            chain: roots.product.name(),
        });
    }

    // Signature: ECDSA P-384 over SHA-384 of bytes 0x000..0x2A0.
    let mut sig = Vec::with_capacity(96);
    sig.extend_from_slice(&report.sig_r);
    sig.extend_from_slice(&report.sig_s);
    aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P384_SHA384_FIXED,
        &vek.public_key,
    )
    .verify(report.signed_bytes(), &sig)
    .map_err(|_| SnpVerifyError::Signature)?;

    // TCB extensions against reported_tcb, in this product's byte layout.
    let parts = report.reported_tcb.parts(roots.product);
    for (oid, component) in AMD_TCB_OIDS {
        let Some(ext) = vek.extension(oid) else {
            continue;
        };
        let cert = der_small_int(&ext.value)
            .and_then(|v| u8::try_from(v).ok())
            .ok_or(SnpVerifyError::Tcb {
                component,
                cert: 0xff,
                report: 0,
            })?;
        let rep = match component {
            "bootloader" => parts.bootloader,
            "tee" => parts.tee,
            "snp" => parts.snp,
            "microcode" => parts.microcode,
            _ => parts.fmc,
        };
        if cert != rep {
            return Err(SnpVerifyError::Tcb {
                component,
                cert,
                report: rep,
            });
        }
    }

    // Hardware ID against chip_id (Turin: 8 bytes, the rest of chip_id zero).
    let mut chip_id_checked = false;
    if !is_vlek && !report.chip_id_masked() {
        let ext = vek.extension(OID_HWID).ok_or(SnpVerifyError::HwId)?;
        let hwid = hwid_bytes(&ext.value);
        let n = hwid.len();
        if n == 0 || n > 64 {
            return Err(SnpVerifyError::HwId);
        }
        let head_ok = bool::from(hwid.ct_eq(&report.chip_id[..n]));
        let tail_ok = report.chip_id[n..].iter().all(|&b| b == 0);
        if !(head_ok && tail_ok) {
            return Err(SnpVerifyError::HwId);
        }
        chip_id_checked = true;
    }

    Ok(VerifiedReport {
        product: roots.product,
        signing_key,
        reported_tcb: parts,
        insecure: roots.insecure,
        chip_id_checked,
        chain: vec![
            vek.subject.clone(),
            ca_p.subject.clone(),
            ark_p.subject.clone(),
        ],
        report,
    })
}

/// Verify an SNP anchor: the report and chain, and that REPORT_DATA binds `spki` and the nonce.
pub fn verify_snp_anchor(
    anchor: &crate::anchor::SnpAnchor,
    spki: &[u8],
    trust: &SnpTrust,
    at: i64,
) -> Result<VerifiedReport, SnpVerifyError> {
    let ark = (!anchor.ark.is_empty()).then_some(anchor.ark.as_slice());
    let v = verify_report(&anchor.report, &anchor.vek, ark, trust, at)?;
    let expected = crate::anchor::snp_binding(spki, &anchor.nonce);
    if !bool::from(v.report.report_data.ct_eq(&expected)) {
        return Err(SnpVerifyError::Binding);
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn genuine_roots_are_built_in_and_match_sev() {
        use sev::certs::snp::builtin;
        let sev_roots = [
            (Product::Milan, builtin::milan::ark(), builtin::milan::ask()),
            (Product::Genoa, builtin::genoa::ark(), builtin::genoa::ask()),
            (Product::Turin, builtin::turin::ark(), builtin::turin::ask()),
        ];
        for (p, ark, ask) in sev_roots {
            let r = p.genuine_roots().unwrap();
            assert_eq!(r.ark, ark.unwrap().to_der().unwrap(), "{p:?} ARK");
            assert_eq!(r.ask, ask.unwrap().to_der().unwrap(), "{p:?} ASK");
            let asvk = ParsedCert::from_der(r.asvk.as_ref().unwrap()).unwrap();
            assert!(asvk.subject.contains("SEV-VLEK"), "{}", asvk.subject);
        }
    }

    #[test]
    fn der_small_int_decodes() {
        assert_eq!(der_small_int(&[2, 1, 3]), Some(3));
        assert_eq!(der_small_int(&[2, 2, 0, 0xd9]), Some(0xd9));
        assert_eq!(der_small_int(&[2, 0]), None);
        assert_eq!(der_small_int(&[4, 1, 3]), None);
    }
}
