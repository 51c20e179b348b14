//! X.509 certificates of the seal: issuing the intermediate and leaf certificates, and parsing any
//! certificate into an owned, typed view for verification and display.
//!
//! Issuance uses `rcgen` (ML-DSA per RFC 9881) with our own [`crate::keys::Signer`]s. Parsing uses
//! `x509-parser`; ML-DSA signatures are checked with AWS-LC, and leaf → intermediate paths with
//! `rustls-webpki` ([`verify_leaf`]).

use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyUsagePurpose, SerialNumber,
};
use rustls_pki_types::{CertificateDer, UnixTime};
use std::sync::Arc;

use time::{Duration, OffsetDateTime};
use x509_parser::asn1_rs::ToDer;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::anchor::{self, HostIdentity, SnapshotIdentity, SnpAnchor, TpmAnchor};
use crate::keys::{IntermediateKey, LeafPublic, MlDsa, RcgenSigner};
use crate::oid;

/// Errors issuing or parsing certificates.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// rcgen refused to build the certificate.
    #[error("certificate issuance failed: {0}")]
    Issue(String),
    /// The bytes are not a DER certificate.
    #[error("not a DER X.509 certificate: {0}")]
    Parse(String),
    /// A vmseal extension is malformed.
    #[error("extension {oid}: {source}")]
    Extension {
        /// Extension OID.
        oid: &'static str,
        /// What is wrong.
        #[source]
        source: anchor::AnchorError,
    },
    /// PEM decoding failed.
    #[error("PEM: {0}")]
    Pem(String),
}

/// What the intermediate certificate says about its host and anchors.
#[derive(Debug, Clone)]
pub struct IntermediateProfile<'a> {
    /// Host identifier.
    pub host_id: &'a str,
    /// TPM anchor, if the host has a TPM.
    pub tpm: Option<&'a TpmAnchor>,
    /// SNP anchor, if the sealer runs in an SNP guest.
    pub snp: Option<&'a SnpAnchor>,
    /// Validity period.
    pub validity: Duration,
}

fn random_serial() -> SerialNumber {
    let mut s = [0u8; 16];
    // A failed RNG leaves zeros; the serial is not security-relevant (keys are fresh).
    let _ = aws_lc_rs::rand::fill(&mut s);
    s[0] &= 0x7f;
    s[0] |= 0x01;
    SerialNumber::from_slice(&s)
}

fn intermediate_dn(host_id: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "vmseal");
    dn.push(DnType::CommonName, format!("vmseal intermediate {host_id}"));
    dn
}

/// Issue the self-signed intermediate certificate carrying the anchors.
pub fn issue_intermediate(
    key: &IntermediateKey,
    profile: &IntermediateProfile<'_>,
    now: OffsetDateTime,
) -> Result<Vec<u8>, CertError> {
    let cert = intermediate_params(profile, now)
        .self_signed(&RcgenSigner(key))
        .map_err(|e| CertError::Issue(e.to_string()))?;
    Ok(cert.der().to_vec())
}

fn intermediate_params(
    profile: &IntermediateProfile<'_>,
    now: OffsetDateTime,
) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = intermediate_dn(profile.host_id);
    p.serial_number = Some(random_serial());
    p.not_before = now - Duration::minutes(5);
    p.not_after = now + profile.validity;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.use_authority_key_identifier_extension = false;
    p.custom_extensions.push(CustomExtension::from_oid_content(
        &oid::EXT_HOST_IDENTITY,
        wrap_octets(&anchor::encode(&HostIdentity {
            host_id: profile.host_id.to_owned(),
        })),
    ));
    if let Some(t) = profile.tpm {
        p.custom_extensions.push(CustomExtension::from_oid_content(
            &oid::EXT_TPM_ANCHOR,
            wrap_octets(&anchor::encode(t)),
        ));
    }
    if let Some(s) = profile.snp {
        p.custom_extensions.push(CustomExtension::from_oid_content(
            &oid::EXT_SNP_ANCHOR,
            wrap_octets(&anchor::encode(s)),
        ));
    }
    p
}

/// The extension value is an OCTET STRING (DER) wrapping the CBOR, so generic tools show it as
/// opaque bytes.
fn wrap_octets(content: &[u8]) -> Vec<u8> {
    let mut out = vec![0x04];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes = n.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

fn unwrap_octets(v: &[u8]) -> Option<&[u8]> {
    let (tag, rest) = v.split_first()?;
    if *tag != 0x04 {
        return None;
    }
    let (&l0, rest) = rest.split_first()?;
    let (len, rest) = if l0 < 0x80 {
        (l0 as usize, rest)
    } else {
        let k = (l0 & 0x7f) as usize;
        if k == 0 || k > 4 || rest.len() < k {
            return None;
        }
        let len = rest[..k].iter().fold(0usize, |a, b| (a << 8) | *b as usize);
        (len, &rest[k..])
    };
    (rest.len() == len).then_some(rest)
}

/// Issues leaf certificates under one intermediate. Cheap to keep; one per sealing process.
pub struct LeafIssuer {
    issuer: Issuer<'static, RcgenSigner<Arc<IntermediateKey>>>,
    /// Lifetime of each leaf certificate.
    pub leaf_validity: Duration,
}

impl std::fmt::Debug for LeafIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeafIssuer").finish_non_exhaustive()
    }
}

impl LeafIssuer {
    /// Prepare to issue leaves under `intermediate_der`, signed by `key`.
    pub fn new(key: Arc<IntermediateKey>, intermediate_der: &[u8]) -> Result<Self, CertError> {
        let issuer =
            Issuer::from_ca_cert_der(&CertificateDer::from(intermediate_der), RcgenSigner(key))
                .map_err(|e| CertError::Parse(e.to_string()))?;
        Ok(Self {
            issuer,
            leaf_validity: Duration::hours(1),
        })
    }

    /// Issue the certificate of one leaf key for snapshot `seq` of `vm_id`.
    pub fn issue(
        &self,
        leaf_public_key: &[u8],
        vm_id: &str,
        seq: u64,
        now: OffsetDateTime,
    ) -> Result<Vec<u8>, CertError> {
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "vmseal");
        dn.push(
            DnType::CommonName,
            format!("vmseal snapshot {vm_id} #{seq}"),
        );
        p.distinguished_name = dn;
        p.serial_number = Some(random_serial());
        p.not_before = now - Duration::minutes(1);
        p.not_after = now + self.leaf_validity;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::Other(
            oid::EKU_EVIDENCE_SIGNING.to_vec(),
        )];
        p.use_authority_key_identifier_extension = true;
        p.custom_extensions.push(CustomExtension::from_oid_content(
            &oid::EXT_SNAPSHOT_IDENTITY,
            wrap_octets(&anchor::encode(&SnapshotIdentity {
                vm_id: vm_id.to_owned(),
                seq,
            })),
        ));
        let cert = p
            .signed_by(&LeafPublic(leaf_public_key), &self.issuer)
            .map_err(|e| CertError::Issue(e.to_string()))?;
        Ok(cert.der().to_vec())
    }
}

/// One extension, owned.
#[derive(Debug, Clone)]
pub struct Extension {
    /// Dotted OID.
    pub oid: String,
    /// Critical flag.
    pub critical: bool,
    /// Raw extension value (the content of extnValue).
    pub value: Vec<u8>,
}

/// An owned, typed view of a certificate.
#[derive(Debug, Clone)]
pub struct ParsedCert {
    /// The DER bytes.
    pub der: Vec<u8>,
    /// Subject, RFC 4514 string.
    pub subject: String,
    /// Issuer, RFC 4514 string.
    pub issuer: String,
    /// Raw subject name DER (for issuer matching).
    pub subject_raw: Vec<u8>,
    /// Raw issuer name DER.
    pub issuer_raw: Vec<u8>,
    /// Serial number, hex.
    pub serial_hex: String,
    /// Not before, Unix seconds.
    pub not_before: i64,
    /// Not after, Unix seconds.
    pub not_after: i64,
    /// Public key algorithm OID.
    pub key_alg_oid: String,
    /// Named curve OID for EC keys.
    pub key_curve_oid: Option<String>,
    /// Raw public key bits.
    pub public_key: Vec<u8>,
    /// DER SubjectPublicKeyInfo.
    pub spki_der: Vec<u8>,
    /// Signature algorithm OID.
    pub sig_alg_oid: String,
    /// DER parameters of the signature algorithm (empty when absent).
    pub sig_alg_params: Vec<u8>,
    /// Signature value.
    pub signature: Vec<u8>,
    /// DER TBSCertificate (what the signature covers).
    pub tbs: Vec<u8>,
    /// Basic constraints CA flag.
    pub is_ca: bool,
    /// Extensions.
    pub extensions: Vec<Extension>,
}

impl ParsedCert {
    /// Parse one DER certificate; trailing bytes are an error.
    pub fn from_der(der: &[u8]) -> Result<Self, CertError> {
        let (rest, c) =
            X509Certificate::from_der(der).map_err(|e| CertError::Parse(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CertError::Parse(format!("{} trailing bytes", rest.len())));
        }
        let spki = &c.tbs_certificate.subject_pki;
        let key_curve_oid = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .map(|o| o.to_id_string());
        // RFC 5280 §4.2: a certificate must not include more than one instance of an extension;
        // with two, which one a reader honours is ambiguous.
        let mut seen = std::collections::HashSet::new();
        for e in c.extensions() {
            if !seen.insert(e.oid.to_id_string()) {
                return Err(CertError::Parse(format!(
                    "extension {} appears twice",
                    e.oid.to_id_string()
                )));
            }
        }
        let is_ca = c
            .basic_constraints()
            .ok()
            .flatten()
            .is_some_and(|bc| bc.value.ca);
        Ok(Self {
            der: der.to_vec(),
            subject: c.subject().to_string(),
            issuer: c.issuer().to_string(),
            subject_raw: c.subject().as_raw().to_vec(),
            issuer_raw: c.issuer().as_raw().to_vec(),
            serial_hex: hex::encode(c.raw_serial()),
            not_before: c.validity().not_before.timestamp(),
            not_after: c.validity().not_after.timestamp(),
            key_alg_oid: spki.algorithm.algorithm.to_id_string(),
            key_curve_oid,
            public_key: spki.subject_public_key.data.to_vec(),
            spki_der: spki.raw.to_vec(),
            sig_alg_oid: c.signature_algorithm.algorithm.to_id_string(),
            sig_alg_params: c
                .signature_algorithm
                .parameters
                .as_ref()
                .map(|p| p.to_der_vec().unwrap_or_default())
                .unwrap_or_default(),
            signature: c.signature_value.data.to_vec(),
            tbs: c.tbs_certificate.as_ref().to_vec(),
            is_ca,
            extensions: c
                .extensions()
                .iter()
                .map(|e| Extension {
                    oid: e.oid.to_id_string(),
                    critical: e.critical,
                    value: e.value.to_vec(),
                })
                .collect(),
        })
    }

    /// The first critical extension not in `known` (dotted OIDs), if any: RFC 5280 §4.2 says a
    /// relying party must refuse a certificate with a critical extension it does not process.
    pub fn unknown_critical(&self, known: &[&str]) -> Option<&str> {
        self.extensions
            .iter()
            .find(|e| e.critical && !known.contains(&e.oid.as_str()))
            .map(|e| e.oid.as_str())
    }

    /// Whether the extended key usage extension lists `oid` (dotted).
    pub fn has_eku(&self, oid: &str) -> bool {
        let Ok((_, c)) = X509Certificate::from_der(&self.der) else {
            return false;
        };
        c.extended_key_usage()
            .ok()
            .flatten()
            .is_some_and(|e| e.value.other.iter().any(|o| o.to_id_string() == oid))
    }

    /// The extension with `oid`, if present.
    pub fn extension(&self, oid: &str) -> Option<&Extension> {
        self.extensions.iter().find(|e| e.oid == oid)
    }

    /// Decode a vmseal CBOR extension.
    pub fn vmseal_extension<T: for<'de> serde::Deserialize<'de>>(
        &self,
        oid: &'static str,
    ) -> Result<Option<T>, CertError> {
        let Some(e) = self.extension(oid) else {
            return Ok(None);
        };
        let inner = unwrap_octets(&e.value).ok_or(CertError::Extension {
            oid,
            source: anchor::AnchorError::Malformed("not an OCTET STRING".into()),
        })?;
        anchor::decode(inner)
            .map(Some)
            .map_err(|source| CertError::Extension { oid, source })
    }

    /// True when `self` is valid at `now` (Unix seconds).
    pub fn valid_at(&self, now: i64) -> bool {
        self.not_before <= now && now <= self.not_after
    }

    /// The ML-DSA parameter set of the subject key, if it is ML-DSA.
    pub fn ml_dsa(&self) -> Option<MlDsa> {
        MlDsa::from_oid(&self.key_alg_oid)
    }

    /// Check that `issuer`'s ML-DSA key signed this certificate (pure ML-DSA, RFC 9881).
    pub fn ml_dsa_signed_by(&self, issuer: &ParsedCert) -> bool {
        match (issuer.ml_dsa(), MlDsa::from_oid(&self.sig_alg_oid)) {
            (Some(k), Some(s)) if k == s => {
                k.verify(&issuer.public_key, &self.tbs, &self.signature)
            }
            _ => false,
        }
    }
}

/// True when `issuer`'s public key verifies `child`'s signature, for the algorithms vmseal meets:
/// ML-DSA (RFC 9881), RSASSA-PSS (SHA-256/384: AMD), RSA PKCS#1 v1.5 and ECDSA (TPM vendors).
pub fn signed_by(child: &ParsedCert, issuer: &ParsedCert) -> bool {
    use aws_lc_rs::signature as sig;
    if MlDsa::from_oid(&child.sig_alg_oid).is_some() {
        return child.ml_dsa_signed_by(issuer);
    }
    let curve = issuer.key_curve_oid.as_deref();
    let alg: &'static dyn sig::VerificationAlgorithm = match (child.sig_alg_oid.as_str(), curve) {
        ("1.2.840.113549.1.1.11", _) => &sig::RSA_PKCS1_2048_8192_SHA256,
        ("1.2.840.113549.1.1.12", _) => &sig::RSA_PKCS1_2048_8192_SHA384,
        ("1.2.840.113549.1.1.13", _) => &sig::RSA_PKCS1_2048_8192_SHA512,
        ("1.2.840.113549.1.1.10", _) => match pss_hash(&child.sig_alg_params) {
            Some(256) => &sig::RSA_PSS_2048_8192_SHA256,
            Some(384) => &sig::RSA_PSS_2048_8192_SHA384,
            Some(512) => &sig::RSA_PSS_2048_8192_SHA512,
            _ => return false,
        },
        ("1.2.840.10045.4.3.2", Some("1.2.840.10045.3.1.7")) => &sig::ECDSA_P256_SHA256_ASN1,
        ("1.2.840.10045.4.3.3", Some("1.2.840.10045.3.1.7")) => &sig::ECDSA_P256_SHA384_ASN1,
        ("1.2.840.10045.4.3.2", Some("1.3.132.0.34")) => &sig::ECDSA_P384_SHA256_ASN1,
        ("1.2.840.10045.4.3.3", Some("1.3.132.0.34")) => &sig::ECDSA_P384_SHA384_ASN1,
        _ => return false,
    };
    sig::UnparsedPublicKey::new(alg, &issuer.public_key)
        .verify(&child.tbs, &child.signature)
        .is_ok()
}

/// The hash of RSASSA-PSS parameters (bits), found by the hash OID they name.
fn pss_hash(params: &[u8]) -> Option<u32> {
    // id-sha256/384/512 = 2.16.840.1.101.3.4.2.{1,2,3}: 60 86 48 01 65 03 04 02 0x
    let prefix = [0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02];
    let pos = params.windows(prefix.len()).position(|w| w == prefix)?;
    match params.get(pos + prefix.len())? {
        1 => Some(256),
        2 => Some(384),
        3 => Some(512),
        _ => None,
    }
}

/// Follow `cert`'s issuers through `trusted` (DER roots or intermediates, all trusted) until one
/// of them verifies the signature. Returns the subjects walked.
pub fn chains_to(cert: &ParsedCert, trusted: &[Vec<u8>]) -> Result<Vec<String>, String> {
    let pool: Vec<ParsedCert> = trusted
        .iter()
        .filter_map(|d| ParsedCert::from_der(d).ok())
        .collect();
    if pool.is_empty() {
        return Err("no trusted certificates configured".into());
    }
    // Every configured certificate is a trust anchor, so one verified link suffices.
    pool.iter()
        .find(|c| c.subject_raw == cert.issuer_raw && signed_by(cert, c))
        .map(|issuer| vec![cert.subject.clone(), issuer.subject.clone()])
        .ok_or_else(|| {
            format!(
                "no trusted issuer \"{}\" verifies \"{}\"",
                cert.issuer, cert.subject
            )
        })
}

/// Parse every certificate in a PEM bundle or a single DER file.
pub fn parse_bundle(bytes: &[u8]) -> Result<Vec<ParsedCert>, CertError> {
    if bytes.starts_with(b"-----BEGIN") || bytes.windows(10).any(|w| w == b"-----BEGIN") {
        let blocks = pem::parse_many(bytes).map_err(|e| CertError::Pem(e.to_string()))?;
        let certs: Vec<ParsedCert> = blocks
            .iter()
            .filter(|p| p.tag() == "CERTIFICATE")
            .map(|p| ParsedCert::from_der(p.contents()))
            .collect::<Result<_, _>>()?;
        if certs.is_empty() {
            return Err(CertError::Pem("no CERTIFICATE block".into()));
        }
        Ok(certs)
    } else {
        Ok(vec![ParsedCert::from_der(bytes)?])
    }
}

/// DER content of the vmseal evidence-signing EKU OID, as webpki wants it.
pub(crate) static EKU_EVIDENCE_SIGNING_DER: [u8; 12] = [
    0x69, 0xcf, 0xc3, 0xbf, 0xd9, 0xef, 0x87, 0x9e, 0xc0, 0x28, 0x02, 0x01,
];

/// Why a leaf did not verify under an intermediate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeafError {
    /// The intermediate could not serve as a trust anchor.
    #[error("intermediate certificate unusable as an anchor: {0:?}")]
    Anchor(webpki::Error),
    /// The leaf is not a well-formed end-entity certificate.
    #[error("leaf certificate malformed: {0:?}")]
    Malformed(webpki::Error),
    /// The leaf is expired or not yet valid.
    #[error("leaf certificate expired or not yet valid: {0:?}")]
    Time(webpki::Error),
    /// The leaf was not issued by this intermediate.
    #[error("leaf certificate was not issued by this intermediate: {0:?}")]
    NotIssued(webpki::Error),
    /// The leaf is not an evidence-signing certificate.
    #[error("leaf certificate lacks the vmseal evidence-signing key usage: {0:?}")]
    Usage(webpki::Error),
}

/// Verify `leaf_der` as an evidence-signing end-entity certificate issued by `intermediate_der`
/// at `now` (rustls-webpki path validation with ML-DSA).
pub fn verify_leaf(
    leaf_der: &[u8],
    intermediate_der: &[u8],
    now: OffsetDateTime,
) -> Result<(), LeafError> {
    let inter = CertificateDer::from(intermediate_der);
    let anchor = webpki::anchor_from_trusted_cert(&inter).map_err(LeafError::Anchor)?;
    let leaf = CertificateDer::from(leaf_der);
    let ee = webpki::EndEntityCert::try_from(&leaf).map_err(LeafError::Malformed)?;
    let secs = u64::try_from(now.unix_timestamp()).unwrap_or(0);
    let algs: &[&dyn rustls_pki_types::SignatureVerificationAlgorithm] =
        &[webpki::aws_lc_rs::ML_DSA_65, webpki::aws_lc_rs::ML_DSA_87];
    ee.verify_for_usage(
        algs,
        &[anchor],
        &[],
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs)),
        webpki::KeyUsage::required(&EKU_EVIDENCE_SIGNING_DER),
        None,
        None,
    )
    .map(|_| ())
    .map_err(|e| match e {
        webpki::Error::CertExpired { .. } | webpki::Error::CertNotValidYet { .. } => {
            LeafError::Time(e)
        }
        webpki::Error::RequiredEkuNotFoundContext(_) => LeafError::Usage(e),
        webpki::Error::BadDer | webpki::Error::BadDerTime => LeafError::Malformed(e),
        other => LeafError::NotIssued(other),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::LeafKey;

    fn intermediate() -> (IntermediateKey, Vec<u8>) {
        let k = IntermediateKey::generate().unwrap();
        let der = issue_intermediate(
            &k,
            &IntermediateProfile {
                host_id: "h1",
                tpm: None,
                snp: None,
                validity: Duration::days(30),
            },
            OffsetDateTime::now_utc(),
        )
        .unwrap();
        (k, der)
    }

    #[test]
    fn eku_der_matches_the_oid() {
        assert_eq!(
            EKU_EVIDENCE_SIGNING_DER.to_vec(),
            oid::der_content(&oid::EKU_EVIDENCE_SIGNING)
        );
    }

    #[test]
    fn intermediate_is_self_signed_ml_dsa_87() {
        let (_, der) = intermediate();
        let c = ParsedCert::from_der(&der).unwrap();
        assert_eq!(c.key_alg_oid, oid::ML_DSA_87);
        assert_eq!(c.sig_alg_oid, oid::ML_DSA_87);
        assert!(c.is_ca);
        assert!(c.ml_dsa_signed_by(&c));
        let h: HostIdentity = c
            .vmseal_extension(oid::EXT_HOST_IDENTITY_STR)
            .unwrap()
            .unwrap();
        assert_eq!(h.host_id, "h1");
    }

    #[test]
    fn leaf_verifies_under_its_intermediate_only() {
        let now = OffsetDateTime::now_utc();
        let (k, der) = intermediate();
        let k = Arc::new(k);
        let issuer = LeafIssuer::new(k.clone(), &der).unwrap();
        let leaf = LeafKey::generate().unwrap();
        let leaf_der = issuer.issue(leaf.public_key(), "vm-1", 7, now).unwrap();
        verify_leaf(&leaf_der, &der, now).unwrap();
        let c = ParsedCert::from_der(&leaf_der).unwrap();
        assert_eq!(c.key_alg_oid, oid::ML_DSA_65);
        assert_eq!(c.sig_alg_oid, oid::ML_DSA_87);
        let id: SnapshotIdentity = c
            .vmseal_extension(oid::EXT_SNAPSHOT_IDENTITY_STR)
            .unwrap()
            .unwrap();
        assert_eq!(
            id,
            SnapshotIdentity {
                vm_id: "vm-1".into(),
                seq: 7
            }
        );

        let (_, other) = intermediate();
        assert!(matches!(
            verify_leaf(&leaf_der, &other, now),
            Err(LeafError::NotIssued(_))
        ));
        assert!(matches!(
            verify_leaf(&leaf_der, &der, now + Duration::hours(2)),
            Err(LeafError::Time(_))
        ));
    }

    #[test]
    fn octet_wrapping_round_trips() {
        for n in [0usize, 1, 127, 128, 255, 256, 70_000] {
            let v = vec![0xabu8; n];
            assert_eq!(unwrap_octets(&wrap_octets(&v)).unwrap(), &v[..]);
        }
        assert!(unwrap_octets(&[0x04, 0x05, 1]).is_none());
        assert!(unwrap_octets(&[0x04, 0x85, 0, 0, 0, 0, 1]).is_none());
    }

    #[test]
    fn duplicate_and_unknown_critical_extensions_are_refused() {
        let k = IntermediateKey::generate().unwrap();
        let profile = IntermediateProfile {
            host_id: "h1",
            tpm: None,
            snp: None,
            validity: Duration::days(30),
        };
        let now = OffsetDateTime::now_utc();
        // The host-identity extension twice: which one would a reader honour?
        let mut p = intermediate_params(&profile, now);
        p.custom_extensions.push(CustomExtension::from_oid_content(
            &oid::EXT_HOST_IDENTITY,
            wrap_octets(&anchor::encode(&HostIdentity {
                host_id: "h2".into(),
            })),
        ));
        let der = p.self_signed(&RcgenSigner(&k)).unwrap().der().to_vec();
        let e = ParsedCert::from_der(&der).unwrap_err().to_string();
        assert!(e.contains("appears twice"), "{e}");
        // A critical extension vmseal does not process.
        let mut p = intermediate_params(&profile, now);
        let mut x =
            CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 99999, 1], vec![0x05, 0x00]);
        x.set_criticality(true);
        p.custom_extensions.push(x);
        let der = p.self_signed(&RcgenSigner(&k)).unwrap().der().to_vec();
        let trust = crate::verify::TrustConfig {
            require: crate::verify::AnchorRequirement::from_name("none").unwrap(),
            ..Default::default()
        };
        let e = crate::verify::verify_intermediate(&der, &trust, now).unwrap_err();
        assert!(
            matches!(&e, crate::verify::VerifyError::UnknownCritical(o) if o == "1.3.6.1.4.1.99999.1"),
            "{e}"
        );
        // The same without the extra extension verifies.
        let der = issue_intermediate(&k, &profile, now).unwrap();
        crate::verify::verify_intermediate(&der, &trust, now).unwrap();
    }
}
