//! TPM2_MakeCredential in software, from public material only (TPM 2.0 Part 1 §24,
//! Part 3 §12.6): what a verifier runs to challenge an attestation key during enrollment.
//!
//! The verifier picks a secret, wraps it for the EK (RSA-OAEP, label `IDENTITY`) bound to the AK's
//! name, and sends the blobs to the host; only the TPM holding that EK — and only for an AK with
//! that exact name loaded in it — returns the secret from TPM2_ActivateCredential
//! ([`crate::tpm::Tpm::activate_credential`]).

use aes::cipher::{AsyncStreamCipher, KeyIvInit};
use hmac::{Hmac, Mac};
use rsa::{BigUint, Oaep, RsaPublicKey};
use sha2::Sha256;
use tss_esapi::structures::Public;
use tss_esapi::traits::UnMarshall;

/// Errors making a credential.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// The EK public area is not an RSA-2048 storage key with AES-128-CFB and SHA-256.
    #[error("EK public area unsupported: {0}")]
    EkPublic(String),
    /// The credential is longer than a SHA-256 digest.
    #[error("credential must be 1 to 32 bytes, got {0}")]
    CredentialLength(usize),
    /// RSA-OAEP failed.
    #[error("RSA-OAEP encryption failed: {0}")]
    Rsa(String),
    /// The RNG failed.
    #[error("the system random number generator failed")]
    Rng,
    /// The EK public area is not the key the EK certificate certifies.
    #[error("the EK public area does not hold the key of the EK certificate: {0}")]
    EkMismatch(String),
}

/// What TPM2_ActivateCredential takes: the contents of `TPM2B_ID_OBJECT` and
/// `TPM2B_ENCRYPTED_SECRET`.
#[derive(Debug, Clone)]
pub struct MadeCredential {
    /// `credentialBlob` (integrity HMAC + encrypted credential).
    pub credential_blob: Vec<u8>,
    /// `secret` (the seed, RSA-OAEP encrypted to the EK).
    pub encrypted_secret: Vec<u8>,
}

/// KDFa (TPM 2.0 Part 1 §11.4.10.2), SP 800-108 counter mode with HMAC-SHA256.
pub fn kdfa_sha256(
    key: &[u8],
    label: &str,
    context_u: &[u8],
    context_v: &[u8],
    bits: u32,
) -> Vec<u8> {
    let bytes = bits.div_ceil(8) as usize;
    let mut out = Vec::with_capacity(bytes + 32);
    let mut counter: u32 = 1;
    while out.len() < bytes {
        // HMAC accepts keys of any length.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
            break;
        };
        mac.update(&counter.to_be_bytes());
        mac.update(label.as_bytes());
        mac.update(&[0]);
        mac.update(context_u);
        mac.update(context_v);
        mac.update(&bits.to_be_bytes());
        out.extend_from_slice(&mac.finalize().into_bytes());
        counter += 1;
    }
    out.truncate(bytes);
    out
}

fn ek_rsa_key(ek_public: &[u8]) -> Result<RsaPublicKey, CredentialError> {
    let public =
        Public::unmarshall(ek_public).map_err(|e| CredentialError::EkPublic(e.to_string()))?;
    let Public::Rsa {
        unique, parameters, ..
    } = public
    else {
        return Err(CredentialError::EkPublic("not an RSA key".into()));
    };
    let exponent = match parameters.exponent().value() {
        0 => 65537,
        e => e,
    };
    RsaPublicKey::new(
        BigUint::from_bytes_be(unique.value()),
        BigUint::from(exponent),
    )
    .map_err(|e| CredentialError::EkPublic(e.to_string()))
}

/// Check that `ek_public` (marshalled `TPMT_PUBLIC`) holds the RSA key that the EK certificate
/// (DER) certifies, so a credential wrapped for it can only be opened by the certified TPM.
pub fn ek_public_matches_certificate(
    ek_public: &[u8],
    ek_cert_der: &[u8],
) -> Result<(), CredentialError> {
    use rsa::pkcs8::DecodePublicKey;
    let from_tpm = ek_rsa_key(ek_public)?;
    let cert = crate::x509::ParsedCert::from_der(ek_cert_der)
        .map_err(|e| CredentialError::EkMismatch(format!("EK certificate: {e}")))?;
    let from_cert = RsaPublicKey::from_public_key_der(&cert.spki_der)
        .map_err(|e| CredentialError::EkMismatch(format!("EK certificate key: {e}")))?;
    if from_tpm != from_cert {
        return Err(CredentialError::EkMismatch(
            "different RSA modulus or exponent".into(),
        ));
    }
    Ok(())
}

/// Wrap `credential` for the TPM whose EK public area is `ek_public` (marshalled `TPMT_PUBLIC`),
/// bound to the object named `ak_name`.
pub fn make_credential(
    ek_public: &[u8],
    ak_name: &[u8],
    credential: &[u8],
) -> Result<MadeCredential, CredentialError> {
    if credential.is_empty() || credential.len() > 32 {
        return Err(CredentialError::CredentialLength(credential.len()));
    }
    let public =
        Public::unmarshall(ek_public).map_err(|e| CredentialError::EkPublic(e.to_string()))?;
    let Public::Rsa {
        parameters,
        name_hashing_algorithm,
        ..
    } = public
    else {
        return Err(CredentialError::EkPublic("not an RSA key".into()));
    };
    if name_hashing_algorithm != tss_esapi::interface_types::algorithm::HashingAlgorithm::Sha256 {
        return Err(CredentialError::EkPublic(
            "name algorithm is not SHA-256".into(),
        ));
    }
    if parameters.symmetric_definition_object()
        != tss_esapi::structures::SymmetricDefinitionObject::AES_128_CFB
    {
        return Err(CredentialError::EkPublic(
            "symmetric algorithm is not AES-128-CFB".into(),
        ));
    }
    let key = ek_rsa_key(ek_public)?;

    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(seed.as_mut()).map_err(|_| CredentialError::Rng)?;
    let mut rng = AwsLcRng;
    let encrypted_secret = key
        .encrypt(
            &mut rng,
            Oaep::new_with_label::<Sha256, _>("IDENTITY\0"),
            seed.as_ref(),
        )
        .map_err(|e| CredentialError::Rsa(e.to_string()))?;

    let sym_key = zeroize::Zeroizing::new(kdfa_sha256(seed.as_ref(), "STORAGE", ak_name, &[], 128));
    let mut enc_identity = Vec::with_capacity(2 + credential.len());
    enc_identity.extend_from_slice(&(credential.len() as u16).to_be_bytes());
    enc_identity.extend_from_slice(credential);
    let iv = [0u8; 16];
    cfb_mode::Encryptor::<aes::Aes128>::new_from_slices(&sym_key, &iv)
        .map_err(|e| CredentialError::Rsa(e.to_string()))?
        .encrypt(&mut enc_identity);

    let hmac_key = zeroize::Zeroizing::new(kdfa_sha256(seed.as_ref(), "INTEGRITY", &[], &[], 256));
    let mut mac = Hmac::<Sha256>::new_from_slice(&hmac_key)
        .map_err(|e| CredentialError::Rsa(e.to_string()))?;
    mac.update(&enc_identity);
    mac.update(ak_name);
    let outer = mac.finalize().into_bytes();

    let mut credential_blob = Vec::with_capacity(2 + outer.len() + enc_identity.len());
    credential_blob.extend_from_slice(&(outer.len() as u16).to_be_bytes());
    credential_blob.extend_from_slice(&outer);
    credential_blob.extend_from_slice(&enc_identity);
    Ok(MadeCredential {
        credential_blob,
        encrypted_secret,
    })
}

/// `rand_core` adapter over AWS-LC's system RNG, for the `rsa` crate's OAEP padding.
struct AwsLcRng;

impl rsa::rand_core::RngCore for AwsLcRng {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        // OAEP padding must never be predictable: if the RNG that just produced the seed fails
        // now, stop the process rather than continue with weak bytes.
        if aws_lc_rs::rand::fill(dest).is_err() {
            std::process::abort();
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rsa::rand_core::Error> {
        aws_lc_rs::rand::fill(dest)
            .map_err(|_| rsa::rand_core::Error::from(core::num::NonZeroU32::MIN))
    }
}

impl rsa::rand_core::CryptoRng for AwsLcRng {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kdfa_lengths() {
        assert_eq!(kdfa_sha256(b"k", "STORAGE", b"u", b"", 128).len(), 16);
        assert_eq!(kdfa_sha256(b"k", "INTEGRITY", b"", b"", 256).len(), 32);
        assert_eq!(kdfa_sha256(b"k", "X", b"", b"", 520).len(), 65);
        assert_ne!(
            kdfa_sha256(b"k", "A", b"", b"", 256),
            kdfa_sha256(b"k", "B", b"", b"", 256)
        );
    }

    #[test]
    fn garbage_ek_is_refused() {
        assert!(matches!(
            make_credential(&[0, 1, 2], b"name", b"secret"),
            Err(CredentialError::EkPublic(_))
        ));
        assert!(matches!(
            make_credential(&[], b"name", &[0; 33]),
            Err(CredentialError::CredentialLength(33))
        ));
    }
}
