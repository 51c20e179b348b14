//! Sealing a secret at rest inside an SEV-SNP guest without a TPM: a key derived by the AMD Secure
//! Processor for this guest (`MSG_KEY_REQ` through `/dev/sev-guest`), from the chip's VCEK root and
//! the guest's launch measurement and policy — so only the same guest image, launched with the same
//! policy, on the same chip, can derive it again — encrypts the secret with AES-256-GCM.
//!
//! The INSECURE software stand-in "derives" its key from the stand-in hierarchy's private VCEK key,
//! which sits in the state directory: it protects nothing, it only exercises the same code path
//! where no SNP hardware exists, and it is labelled as such wherever it appears.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use zeroize::Zeroizing;

use super::standin::TestHierarchy;

/// Why a derived key or a sealed blob failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DerivedKeyError {
    /// `/dev/sev-guest` is missing or refused the request.
    #[error(
        "SEV-SNP derived key from /dev/sev-guest: {0} (this needs an SEV-SNP guest with the sev-guest driver)"
    )]
    Firmware(String),
    /// The blob is not ours, or was sealed by another guest, image or policy.
    #[error(
        "the sealed seed does not open with this guest's derived key: another guest image, launch policy or chip sealed it, or it was altered"
    )]
    Open,
    /// The blob is malformed.
    #[error("sealed seed: {0}")]
    Malformed(String),
    /// The RNG or the cipher failed.
    #[error("cipher: {0}")]
    Crypto(String),
}

/// The key this guest's Secure Processor derives from its VCEK, mixing in the launch measurement
/// and the guest policy (not the TCB version: the seal survives firmware updates; the evidence's
/// SNP report states the TCB, and the verifier appraises it).
pub fn sev_guest_key() -> Result<Zeroizing<[u8; 32]>, DerivedKeyError> {
    use sev::firmware::guest::{DerivedKey, Firmware, GuestFieldSelect};
    let mut fw = Firmware::open().map_err(|e| DerivedKeyError::Firmware(e.to_string()))?;
    let mut fields = GuestFieldSelect::default();
    fields.set_measurement(true);
    fields.set_guest_policy(true);
    let request = DerivedKey::new(false, fields, 0, 0, 0, Some(0));
    let key = fw
        .get_derived_key(None, request)
        .map_err(|e| DerivedKeyError::Firmware(e.to_string()))?;
    Ok(Zeroizing::new(key))
}

/// The INSECURE stand-in's "derived" key: HKDF-SHA256 of its private VCEK key.
pub fn insecure_key(h: &TestHierarchy) -> Result<Zeroizing<[u8; 32]>, DerivedKeyError> {
    use aws_lc_rs::hkdf::{HKDF_SHA256, Salt};
    let prk =
        Salt::new(HKDF_SHA256, b"vmseal INSECURE stand-in derived key").extract(h.vcek_key_pkcs8());
    let okm = prk
        .expand(&[b"seed"], HKDF_SHA256)
        .map_err(|_| DerivedKeyError::Crypto("HKDF".into()))?;
    let mut key = Zeroizing::new([0u8; 32]);
    okm.fill(key.as_mut())
        .map_err(|_| DerivedKeyError::Crypto("HKDF".into()))?;
    Ok(key)
}

const MAGIC: &[u8; 8] = b"vmsealS1";

fn cipher(key: &[u8; 32]) -> Result<LessSafeKey, DerivedKeyError> {
    UnboundKey::new(&AES_256_GCM, key)
        .map(LessSafeKey::new)
        .map_err(|_| DerivedKeyError::Crypto("AES-256-GCM key".into()))
}

/// Seal `secret` under `key`, bound to `context` (e.g. the host id): `MAGIC ‖ nonce ‖ ciphertext ‖ tag`.
pub fn seal(key: &[u8; 32], context: &[u8], secret: &[u8]) -> Result<Vec<u8>, DerivedKeyError> {
    let mut nonce = [0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| DerivedKeyError::Crypto("RNG".into()))?;
    let mut body = secret.to_vec();
    cipher(key)?
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(context),
            &mut body,
        )
        .map_err(|_| DerivedKeyError::Crypto("AES-256-GCM seal".into()))?;
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&body);
    Ok(out)
}

/// Open a blob made by [`seal`] with the same key and context.
pub fn open(
    key: &[u8; 32],
    context: &[u8],
    blob: &[u8],
) -> Result<Zeroizing<Vec<u8>>, DerivedKeyError> {
    let rest = blob
        .strip_prefix(MAGIC.as_slice())
        .ok_or_else(|| DerivedKeyError::Malformed("not a vmseal sealed seed".into()))?;
    if rest.len() < NONCE_LEN + 16 {
        return Err(DerivedKeyError::Malformed("truncated".into()));
    }
    let (nonce, body) = rest.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce)
        .map_err(|_| DerivedKeyError::Malformed("nonce".into()))?;
    let mut body = Zeroizing::new(body.to_vec());
    let n = cipher(key)?
        .open_in_place(nonce, Aad::from(context), body.as_mut_slice())
        .map_err(|_| DerivedKeyError::Open)?
        .len();
    body.truncate(n);
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_only_with_its_key_context_and_bytes() {
        let (k, other) = ([7u8; 32], [8u8; 32]);
        let blob = seal(&k, b"host-1", b"the seed").unwrap();
        assert_eq!(open(&k, b"host-1", &blob).unwrap().as_slice(), b"the seed");
        assert!(matches!(
            open(&other, b"host-1", &blob),
            Err(DerivedKeyError::Open)
        ));
        assert!(matches!(
            open(&k, b"host-2", &blob),
            Err(DerivedKeyError::Open)
        ));
        for i in 0..blob.len() {
            let mut b = blob.clone();
            b[i] ^= 1;
            assert!(open(&k, b"host-1", &b).is_err(), "byte {i}");
        }
        for n in 0..blob.len() {
            assert!(open(&k, b"host-1", &blob[..n]).is_err(), "length {n}");
        }
        // Fresh nonces: sealing twice gives different blobs.
        assert_ne!(blob, seal(&k, b"host-1", b"the seed").unwrap());
    }

    #[test]
    fn without_sev_guest_the_firmware_key_is_a_clear_error() {
        if std::path::Path::new("/dev/sev-guest").exists() {
            // On SNP hardware the request goes to the Secure Processor: nothing to check here.
            let _ = sev_guest_key();
            return;
        }
        let e = sev_guest_key().unwrap_err().to_string();
        assert!(e.contains("needs an SEV-SNP guest"), "{e}");
    }
}
