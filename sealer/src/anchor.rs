//! The hardware anchors carried by the intermediate certificate.
//!
//! Each anchor binds the intermediate key's SubjectPublicKeyInfo and a nonce:
//!
//! - TPM: `TPM2_Quote.extraData = SHA-256(SPKI ‖ nonce)` ([`tpm_binding`]).
//! - SEV-SNP: `REPORT_DATA = SHA-512(SPKI ‖ nonce)` ([`snp_binding`]).
//!
//! The anchors travel as CBOR inside non-critical X.509 extensions (RA-TLS style), so the
//! certificate alone lets anyone check them.

use serde::{Deserialize, Serialize};

/// Upper bound on the encoded size of one anchor extension.
pub const MAX_ANCHOR_LEN: usize = 256 * 1024;

/// Errors decoding an anchor extension.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnchorError {
    /// Not the expected CBOR structure.
    #[error("anchor extension is malformed: {0}")]
    Malformed(String),
    /// Too large.
    #[error("anchor extension is {0} bytes, more than {MAX_ANCHOR_LEN}")]
    TooLarge(usize),
}

/// One PCR value as quoted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PcrValue {
    /// Bank: "sha1", "sha256", "sha384" or "sha512".
    pub bank: String,
    /// PCR index.
    pub index: u8,
    /// Value.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

/// The TPM anchor: a quote by the attestation key over host PCRs, binding the intermediate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TpmAnchor {
    /// Marshalled `TPMS_ATTEST` (the quote body, signed by the AK).
    #[serde(with = "serde_bytes")]
    pub attest: Vec<u8>,
    /// Marshalled `TPMT_SIGNATURE` over `attest`.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
    /// Marshalled `TPMT_PUBLIC` of the attestation key.
    #[serde(with = "serde_bytes")]
    pub ak_public: Vec<u8>,
    /// DER EK certificate, when the TPM has one.
    #[serde(with = "serde_bytes", default)]
    pub ek_cert: Vec<u8>,
    /// The quoted PCR values, in selection order.
    pub pcrs: Vec<PcrValue>,
    /// The nonce bound together with the intermediate SPKI.
    #[serde(with = "serde_bytes")]
    pub nonce: Vec<u8>,
}

/// Which SNP report provider made the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SnpProvider {
    /// Linux configfs-tsm (`/sys/kernel/config/tsm/report`).
    ConfigfsTsm,
    /// Linux `/dev/sev-guest` ioctl.
    SevGuest,
    /// INSECURE software stand-in under a test ARK/ASK/VCEK. Never trust it in production.
    InsecureSoft,
}

impl SnpProvider {
    /// Stable name.
    pub fn name(self) -> &'static str {
        match self {
            Self::ConfigfsTsm => "configfs-tsm",
            Self::SevGuest => "sev-guest",
            Self::InsecureSoft => "INSECURE-soft",
        }
    }
}

/// The SEV-SNP anchor: a report whose REPORT_DATA binds the intermediate, and its VCEK chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnpAnchor {
    /// Which provider made it (informational: verification relies on the chain only).
    pub provider: SnpProvider,
    /// The raw 1184-byte attestation report.
    #[serde(with = "serde_bytes")]
    pub report: Vec<u8>,
    /// DER VCEK or VLEK certificate.
    #[serde(with = "serde_bytes")]
    pub vek: Vec<u8>,
    /// DER ASK or ASVK, when supplied (the verifier's built-in one is used otherwise).
    #[serde(with = "serde_bytes", default)]
    pub ask: Vec<u8>,
    /// DER ARK, when supplied (must equal a trusted root).
    #[serde(with = "serde_bytes", default)]
    pub ark: Vec<u8>,
    /// The nonce bound together with the intermediate SPKI.
    #[serde(with = "serde_bytes")]
    pub nonce: Vec<u8>,
}

/// Anchors made at enrollment time for the verifier's challenge: a fresh TPM quote and a fresh
/// SNP report, each binding the intermediate's SPKI with the verifier's `nonce`, so anchors made
/// earlier (and copied since) cannot be replayed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FreshAnchors {
    /// The verifier's nonce.
    #[serde(with = "serde_bytes")]
    pub nonce: Vec<u8>,
    /// A quote by the intermediate's AK.
    #[serde(default)]
    pub tpm: Option<TpmAnchor>,
    /// A report of the same platform.
    #[serde(default)]
    pub snp: Option<SnpAnchor>,
}

/// Host identity carried by the intermediate certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostIdentity {
    /// Host identifier.
    pub host_id: String,
}

/// Snapshot identity carried by a leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotIdentity {
    /// VM identifier.
    pub vm_id: String,
    /// Snapshot sequence number.
    pub seq: u64,
}

/// Encode an anchor (or identity) as CBOR.
pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = Vec::new();
    // Serialising these plain structs into a Vec cannot fail.
    let _ = ciborium::into_writer(v, &mut out);
    out
}

/// Decode an anchor (or identity) from CBOR.
pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, AnchorError> {
    if bytes.len() > MAX_ANCHOR_LEN {
        return Err(AnchorError::TooLarge(bytes.len()));
    }
    ciborium::de::from_reader_with_recursion_limit(bytes, 8)
        .map_err(|e| AnchorError::Malformed(e.to_string()))
}

/// `extraData` of the TPM quote: SHA-256(SPKI ‖ nonce).
pub fn tpm_binding(spki_der: &[u8], nonce: &[u8]) -> [u8; 32] {
    crate::merkle::HashAlg::Sha256.hash(&[spki_der, nonce])
}

/// `REPORT_DATA` of the SNP report: SHA-512(SPKI ‖ nonce).
pub fn snp_binding(spki_der: &[u8], nonce: &[u8]) -> [u8; 64] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA512);
    ctx.update(spki_der);
    ctx.update(nonce);
    let mut out = [0u8; 64];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_round_trip() {
        let a = SnpAnchor {
            provider: SnpProvider::InsecureSoft,
            report: vec![1; 1184],
            vek: vec![2; 10],
            ask: vec![],
            ark: vec![],
            nonce: vec![3; 32],
        };
        assert_eq!(decode::<SnpAnchor>(&encode(&a)).unwrap(), a);
        assert!(decode::<SnpAnchor>(&encode(&a)[..20]).is_err());
        assert!(decode::<TpmAnchor>(&encode(&a)).is_err());
    }

    #[test]
    fn bindings_differ_with_nonce() {
        assert_ne!(tpm_binding(b"spki", b"n1"), tpm_binding(b"spki", b"n2"));
        assert_ne!(
            snp_binding(b"spki", b"n1")[..],
            snp_binding(b"spki", b"n2")[..]
        );
    }
}
