//! Public verification of the TPM anchor: the quote's structure, its signature by the AK, its
//! binding of the intermediate key, the quoted PCR values, and the EK certificate chain.

use subtle::ConstantTimeEq;
use tss_esapi::structures::{Attest, AttestInfo, Public, Signature};
use tss_esapi::traits::{Marshall, UnMarshall};

use crate::anchor::{PcrValue, TpmAnchor, tpm_binding};
use crate::x509::ParsedCert;

/// Errors verifying a TPM anchor; each names the broken link.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TpmVerifyError {
    /// `TPMS_ATTEST` does not parse (or is not canonical).
    #[error("TPMS_ATTEST is malformed")]
    Attest,
    /// Not a quote.
    #[error("TPMS_ATTEST is not a quote")]
    NotQuote,
    /// `TPMT_PUBLIC` of the AK does not parse.
    #[error("AK public area is malformed")]
    AkPublic,
    /// The AK is not a restricted, fixed, TPM-generated P-256 signing key.
    #[error("AK is not a restricted TPM-resident ECC P-256 signing key: {0}")]
    AkAttributes(&'static str),
    /// `TPMT_SIGNATURE` does not parse or is not ECDSA-SHA256.
    #[error("quote signature is malformed or not ECDSA-SHA256")]
    SignatureFormat,
    /// The AK did not sign the quote.
    #[error("quote signature does not verify with the AK")]
    Signature,
    /// `extraData` does not bind this intermediate key and nonce.
    #[error("quote extraData does not bind the intermediate key (SHA-256(SPKI ‖ nonce))")]
    Binding,
    /// The PCR values listed do not produce the quoted PCR digest.
    #[error("PCR values do not match the quoted PCR digest")]
    PcrDigest,
    /// The EK certificate is missing.
    #[error("no EK certificate in the anchor, and the trust configuration requires one")]
    NoEkCertificate,
    /// The EK certificate does not chain to a trusted TPM manufacturer CA.
    #[error("EK certificate does not chain to a trusted TPM manufacturer CA: {0}")]
    EkChain(String),
    /// The AK has not been activated with this verifier.
    #[error("AK {0} was not bound to the EK by credential activation with this verifier")]
    AkNotActivated(String),
}

/// What a verified TPM anchor proves.
#[derive(Debug, Clone)]
pub struct VerifiedQuote {
    /// TPM name of the AK (nameAlg ‖ H(TPMT_PUBLIC)).
    pub ak_name: Vec<u8>,
    /// Quoted PCRs.
    pub pcrs: Vec<PcrValue>,
    /// TPM firmware version from the quote.
    pub firmware_version: u64,
    /// TPM clock (ms) at the quote.
    pub clock_ms: u64,
    /// Subject of the EK certificate, when present.
    pub ek_subject: Option<String>,
    /// Whether the EK certificate chained to a trusted root.
    pub ek_chain_verified: bool,
    /// The EK certificate, DER (empty when the anchor has none): credential activation checks the
    /// EK public area against it.
    pub ek_cert: Vec<u8>,
}

/// Trust inputs for TPM anchors.
#[derive(Debug, Clone, Default)]
pub struct TpmTrust {
    /// Trusted EK CA certificates (roots or intermediates), DER.
    pub ek_roots: Vec<Vec<u8>>,
    /// Require the EK certificate to chain to `ek_roots`.
    pub require_ek_chain: bool,
    /// When set, the AK name must be one that this verifier activated.
    pub activated_aks: Option<Vec<Vec<u8>>>,
}

/// TPM object name of a marshalled `TPMT_PUBLIC` with a SHA-256 name algorithm.
pub fn object_name(public: &[u8]) -> Vec<u8> {
    let mut name = vec![0x00, 0x0b];
    name.extend_from_slice(&crate::merkle::HashAlg::Sha256.hash(&[public]));
    name
}

fn ak_point(public: &Public) -> Result<Vec<u8>, TpmVerifyError> {
    let Public::Ecc {
        object_attributes: a,
        parameters,
        unique,
        ..
    } = public
    else {
        return Err(TpmVerifyError::AkAttributes("not an ECC key"));
    };
    if parameters.ecc_curve() != tss_esapi::interface_types::ecc::EccCurve::NistP256 {
        return Err(TpmVerifyError::AkAttributes("curve is not P-256"));
    }
    for (ok, what) in [
        (a.fixed_tpm(), "fixedTPM clear"),
        (a.fixed_parent(), "fixedParent clear"),
        (a.sensitive_data_origin(), "sensitiveDataOrigin clear"),
        (a.restricted(), "not restricted"),
        (a.sign_encrypt(), "not a signing key"),
        (!a.decrypt(), "is a decryption key"),
    ] {
        if !ok {
            return Err(TpmVerifyError::AkAttributes(what));
        }
    }
    let (x, y) = (unique.x().value(), unique.y().value());
    if x.len() > 32 || y.len() > 32 {
        return Err(TpmVerifyError::AkAttributes("point coordinates too long"));
    }
    let mut p = vec![0x04];
    p.extend(std::iter::repeat_n(0, 32 - x.len()));
    p.extend_from_slice(x);
    p.extend(std::iter::repeat_n(0, 32 - y.len()));
    p.extend_from_slice(y);
    Ok(p)
}

fn pad32(v: &[u8]) -> Option<Vec<u8>> {
    let v = &v[v.iter().take_while(|b| **b == 0).count()..];
    (v.len() <= 32).then(|| {
        let mut o = vec![0u8; 32 - v.len()];
        o.extend_from_slice(v);
        o
    })
}

/// Parse and verify a quote's signature; returns the parsed `Attest`.
pub fn verify_quote_signature(
    attest_bytes: &[u8],
    signature: &[u8],
    ak_public: &[u8],
) -> Result<Attest, TpmVerifyError> {
    let ak = Public::unmarshall(ak_public).map_err(|_| TpmVerifyError::AkPublic)?;
    if ak.marshall().ok().as_deref() != Some(ak_public) {
        return Err(TpmVerifyError::AkPublic);
    }
    let point = ak_point(&ak)?;
    let attest = Attest::unmarshall(attest_bytes).map_err(|_| TpmVerifyError::Attest)?;
    if attest.marshall().ok().as_deref() != Some(attest_bytes) {
        return Err(TpmVerifyError::Attest);
    }
    let sig = Signature::unmarshall(signature).map_err(|_| TpmVerifyError::SignatureFormat)?;
    let Signature::EcDsa(ecc) = sig else {
        return Err(TpmVerifyError::SignatureFormat);
    };
    if ecc.hashing_algorithm() != tss_esapi::interface_types::algorithm::HashingAlgorithm::Sha256 {
        return Err(TpmVerifyError::SignatureFormat);
    }
    let (Some(mut r), Some(s)) = (
        pad32(ecc.signature_r().value()),
        pad32(ecc.signature_s().value()),
    ) else {
        return Err(TpmVerifyError::SignatureFormat);
    };
    r.extend_from_slice(&s);
    aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
        &point,
    )
    .verify(attest_bytes, &r)
    .map_err(|_| TpmVerifyError::Signature)?;
    Ok(attest)
}

/// Verify a TPM anchor for the intermediate key with DER SPKI `spki`.
pub fn verify_tpm_anchor(
    anchor: &TpmAnchor,
    spki: &[u8],
    trust: &TpmTrust,
) -> Result<VerifiedQuote, TpmVerifyError> {
    let attest = verify_quote_signature(&anchor.attest, &anchor.signature, &anchor.ak_public)?;
    let expected = tpm_binding(spki, &anchor.nonce);
    if !bool::from(attest.extra_data().value().ct_eq(&expected[..])) {
        return Err(TpmVerifyError::Binding);
    }
    let AttestInfo::Quote { info } = attest.attested() else {
        return Err(TpmVerifyError::NotQuote);
    };
    // Concatenate the listed values in the quote's own selection order.
    let mut concat = Vec::new();
    let mut used = 0usize;
    for sel in info.pcr_selection().get_selections() {
        let bank = match sel.hashing_algorithm() {
            tss_esapi::interface_types::algorithm::HashingAlgorithm::Sha256 => "sha256",
            tss_esapi::interface_types::algorithm::HashingAlgorithm::Sha1 => "sha1",
            tss_esapi::interface_types::algorithm::HashingAlgorithm::Sha384 => "sha384",
            tss_esapi::interface_types::algorithm::HashingAlgorithm::Sha512 => "sha512",
            _ => return Err(TpmVerifyError::PcrDigest),
        };
        let mut slots: Vec<u8> = sel
            .selected()
            .iter()
            .map(|s| u32::from(*s).trailing_zeros() as u8)
            .collect();
        slots.sort_unstable();
        for i in slots {
            let v = anchor
                .pcrs
                .iter()
                .find(|p| p.bank == bank && p.index == i)
                .ok_or(TpmVerifyError::PcrDigest)?;
            concat.extend_from_slice(&v.value);
            used += 1;
        }
    }
    if used != anchor.pcrs.len() {
        return Err(TpmVerifyError::PcrDigest);
    }
    // The AK's name algorithm is SHA-256, so the PCR digest is SHA-256 too.
    let digest = crate::merkle::HashAlg::Sha256.hash(&[&concat]);
    if !bool::from(info.pcr_digest().value().ct_eq(&digest[..])) {
        return Err(TpmVerifyError::PcrDigest);
    }
    let ak_name = object_name(&anchor.ak_public);
    if let Some(list) = &trust.activated_aks
        && !list.iter().any(|n| n == &ak_name)
    {
        return Err(TpmVerifyError::AkNotActivated(hex::encode(&ak_name)));
    }
    let (ek_subject, ek_chain_verified) = if anchor.ek_cert.is_empty() {
        if trust.require_ek_chain {
            return Err(TpmVerifyError::NoEkCertificate);
        }
        (None, false)
    } else {
        let ek = ParsedCert::from_der(&anchor.ek_cert)
            .map_err(|e| TpmVerifyError::EkChain(e.to_string()))?;
        let chained = crate::x509::chains_to(&ek, &trust.ek_roots);
        if trust.require_ek_chain {
            chained.clone().map_err(TpmVerifyError::EkChain)?;
        }
        (Some(ek.subject.clone()), chained.is_ok())
    };
    Ok(VerifiedQuote {
        ak_name,
        pcrs: anchor.pcrs.clone(),
        firmware_version: attest.firmware_version(),
        clock_ms: attest.clock_info().clock(),
        ek_subject,
        ek_chain_verified,
        ek_cert: anchor.ek_cert.clone(),
    })
}
