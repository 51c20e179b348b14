//! The ML-DSA keys of the seal: one type per level of the hierarchy.
//!
//! - [`IntermediateKey`]: ML-DSA-87, generated once per host (or per shim) from a 32-byte seed.
//!   The seed is what the TPM seals at rest ([`crate::tpm`]); the key is re-derived at start.
//! - [`LeafKey`]: ML-DSA-65, fresh for every snapshot. [`LeafKey::sign_once`] consumes the key:
//!   after one signature it is dropped, and AWS-LC's `OPENSSL_free` cleanses the key material.
//!
//! Both implement [`Signer`] so certificate and evidence code does not care which level signs.
//! All ML-DSA operations are FIPS 204 (final) from AWS-LC, through `aws-lc-rs`, with the empty
//! context string that X.509 (RFC 9881) and COSE (RFC 9964) use.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{
    KeyPair, ML_DSA_44, ML_DSA_65, ML_DSA_65_SIGNING, ML_DSA_87, ML_DSA_87_SIGNING, PqdsaKeyPair,
    PqdsaSigningAlgorithm, UnparsedPublicKey,
};
use zeroize::Zeroizing;

/// Errors from key generation, import and signing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The system random number generator failed.
    #[error("the system random number generator failed")]
    Rng,
    /// A seed or key could not be turned into a key pair.
    #[error("key material rejected: {0}")]
    Rejected(String),
    /// Signing failed inside AWS-LC.
    #[error("ML-DSA signing failed")]
    Sign,
}

/// An ML-DSA parameter set (FIPS 204).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MlDsa {
    /// ML-DSA-44, NIST category 2.
    MlDsa44,
    /// ML-DSA-65, NIST category 3: vmseal leaf keys.
    MlDsa65,
    /// ML-DSA-87, NIST category 5: vmseal intermediate keys.
    MlDsa87,
}

impl MlDsa {
    /// The parameter set named by an algorithm OID (dotted form), if any.
    pub fn from_oid(oid: &str) -> Option<Self> {
        match oid {
            crate::oid::ML_DSA_44 => Some(Self::MlDsa44),
            crate::oid::ML_DSA_65 => Some(Self::MlDsa65),
            crate::oid::ML_DSA_87 => Some(Self::MlDsa87),
            _ => None,
        }
    }

    /// The algorithm OID, dotted.
    pub fn oid(self) -> &'static str {
        match self {
            Self::MlDsa44 => crate::oid::ML_DSA_44,
            Self::MlDsa65 => crate::oid::ML_DSA_65,
            Self::MlDsa87 => crate::oid::ML_DSA_87,
        }
    }

    /// Display name.
    pub fn name(self) -> &'static str {
        match self {
            Self::MlDsa44 => "ML-DSA-44",
            Self::MlDsa65 => "ML-DSA-65",
            Self::MlDsa87 => "ML-DSA-87",
        }
    }

    /// Length of an encoded public key in bytes.
    pub fn public_key_len(self) -> usize {
        match self {
            Self::MlDsa44 => 1312,
            Self::MlDsa65 => 1952,
            Self::MlDsa87 => 2592,
        }
    }

    /// Length of a signature in bytes.
    pub fn signature_len(self) -> usize {
        match self {
            Self::MlDsa44 => 2420,
            Self::MlDsa65 => 3309,
            Self::MlDsa87 => 4627,
        }
    }

    fn verification(self) -> &'static aws_lc_rs::signature::PqdsaVerificationAlgorithm {
        match self {
            Self::MlDsa44 => &ML_DSA_44,
            Self::MlDsa65 => &ML_DSA_65,
            Self::MlDsa87 => &ML_DSA_87,
        }
    }

    /// Verify a pure ML-DSA signature (empty context) over `msg` with a raw public key.
    pub fn verify(self, public_key: &[u8], msg: &[u8], signature: &[u8]) -> bool {
        if public_key.len() != self.public_key_len() {
            return false;
        }
        UnparsedPublicKey::new(self.verification(), public_key)
            .verify(msg, signature)
            .is_ok()
    }

    /// Derive the raw public key from a 32-byte seed (FIPS 204 `ML-DSA.KeyGen_internal`).
    pub fn public_key_from_seed(self, seed: &[u8; 32]) -> Result<Vec<u8>, KeyError> {
        let alg: &'static PqdsaSigningAlgorithm = match self {
            Self::MlDsa44 => &aws_lc_rs::signature::ML_DSA_44_SIGNING,
            Self::MlDsa65 => &ML_DSA_65_SIGNING,
            Self::MlDsa87 => &ML_DSA_87_SIGNING,
        };
        let kp =
            PqdsaKeyPair::from_seed(alg, seed).map_err(|e| KeyError::Rejected(e.to_string()))?;
        Ok(kp.public_key().as_ref().to_vec())
    }
}

/// Something that produces signatures for certificates and evidence.
pub trait Signer {
    /// The parameter set of the key.
    fn algorithm(&self) -> MlDsa;
    /// The raw public key.
    fn public_key(&self) -> &[u8];
    /// Sign `msg` (pure ML-DSA, empty context, hedged).
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, KeyError>;
}

/// Fill `out` from the system random number generator (AWS-LC).
pub fn random_bytes(out: &mut [u8]) -> Result<(), KeyError> {
    SystemRandom::new().fill(out).map_err(|_| KeyError::Rng)
}

fn random_seed() -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let mut seed = Zeroizing::new([0u8; 32]);
    SystemRandom::new()
        .fill(seed.as_mut())
        .map_err(|_| KeyError::Rng)?;
    Ok(seed)
}

fn sign_with(kp: &PqdsaKeyPair, msg: &[u8]) -> Result<Vec<u8>, KeyError> {
    let mut sig = vec![0u8; kp.algorithm().signature_len()];
    let n = kp.sign(msg, &mut sig).map_err(|_| KeyError::Sign)?;
    sig.truncate(n);
    Ok(sig)
}

/// DER SubjectPublicKeyInfo of a key pair.
fn spki_der(kp: &PqdsaKeyPair) -> Result<Vec<u8>, KeyError> {
    kp.public_key()
        .as_der()
        .map(|d| d.as_ref().to_vec())
        .map_err(|_| KeyError::Rejected("public key encoding".into()))
}

/// The intermediate key (ML-DSA-87): one per sealing host, bound to the hardware anchors.
pub struct IntermediateKey {
    kp: PqdsaKeyPair,
    seed: Zeroizing<[u8; 32]>,
    spki: Vec<u8>,
}

impl std::fmt::Debug for IntermediateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntermediateKey")
            .field("algorithm", &"ML-DSA-87")
            .finish_non_exhaustive()
    }
}

impl IntermediateKey {
    /// Generate a fresh key from 32 bytes of system randomness.
    pub fn generate() -> Result<Self, KeyError> {
        let seed = random_seed()?;
        Self::from_seed(&seed)
    }

    /// Re-derive the key from its seed (as unsealed from the TPM).
    pub fn from_seed(seed: &[u8; 32]) -> Result<Self, KeyError> {
        let kp = PqdsaKeyPair::from_seed(&ML_DSA_87_SIGNING, seed)
            .map_err(|e| KeyError::Rejected(e.to_string()))?;
        let spki = spki_der(&kp)?;
        Ok(Self {
            kp,
            seed: Zeroizing::new(*seed),
            spki,
        })
    }

    /// The seed: the only secret to keep at rest. Seal it; never write it in the clear.
    pub fn seed(&self) -> &Zeroizing<[u8; 32]> {
        &self.seed
    }

    /// DER SubjectPublicKeyInfo: what the TPM quote and the SNP report bind.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki
    }
}

impl Signer for IntermediateKey {
    fn algorithm(&self) -> MlDsa {
        MlDsa::MlDsa87
    }
    fn public_key(&self) -> &[u8] {
        self.kp.public_key().as_ref()
    }
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, KeyError> {
        sign_with(&self.kp, msg)
    }
}

/// A leaf key (ML-DSA-65): fresh per snapshot, signs exactly one evidence payload.
///
/// The certificate for a leaf is issued before it signs (it only needs the public key), and
/// [`LeafKey::sign_once`] consumes the key so a second signature cannot be made with it.
pub struct LeafKey {
    kp: PqdsaKeyPair,
}

impl std::fmt::Debug for LeafKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeafKey")
            .field("algorithm", &"ML-DSA-65")
            .finish_non_exhaustive()
    }
}

impl LeafKey {
    /// Generate a fresh leaf key. The seed is not kept.
    pub fn generate() -> Result<Self, KeyError> {
        let seed = random_seed()?;
        let kp = PqdsaKeyPair::from_seed(&ML_DSA_65_SIGNING, seed.as_ref())
            .map_err(|e| KeyError::Rejected(e.to_string()))?;
        Ok(Self { kp })
    }

    /// The raw public key.
    pub fn public_key(&self) -> &[u8] {
        self.kp.public_key().as_ref()
    }

    /// Sign one message and erase the key.
    pub fn sign_once(self, msg: &[u8]) -> Result<Vec<u8>, KeyError> {
        let sig = sign_with(&self.kp, msg);
        drop(self);
        sig
    }
}

/// Warm up AWS-LC (its first RNG call and first ML-DSA operation are slow); call once at start.
pub fn warm_up() {
    let _ = LeafKey::generate().and_then(|k| k.sign_once(b"warm-up"));
}

/// rcgen glue: certificates are signed through the same [`Signer`] trait.
pub(crate) struct RcgenSigner<K>(pub(crate) K);

fn rcgen_alg(alg: MlDsa) -> &'static rcgen::SignatureAlgorithm {
    match alg {
        MlDsa::MlDsa44 => &rcgen::PKCS_ML_DSA_44,
        MlDsa::MlDsa65 => &rcgen::PKCS_ML_DSA_65,
        MlDsa::MlDsa87 => &rcgen::PKCS_ML_DSA_87,
    }
}

impl<K: std::ops::Deref<Target: Signer>> rcgen::PublicKeyData for RcgenSigner<K> {
    fn der_bytes(&self) -> &[u8] {
        self.0.public_key()
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        rcgen_alg(self.0.algorithm())
    }
}

impl<K: std::ops::Deref<Target: Signer>> rcgen::SigningKey for RcgenSigner<K> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.0.sign(msg).map_err(|_| rcgen::Error::RemoteKeyError)
    }
}

/// The public half of a leaf, for certificate issuance.
pub(crate) struct LeafPublic<'a>(pub(crate) &'a [u8]);

impl rcgen::PublicKeyData for LeafPublic<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.0
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ML_DSA_65
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intermediate_round_trips_through_its_seed() {
        let k = IntermediateKey::generate().unwrap();
        let k2 = IntermediateKey::from_seed(k.seed()).unwrap();
        assert_eq!(k.public_key(), k2.public_key());
        assert_eq!(k.public_key().len(), MlDsa::MlDsa87.public_key_len());
        let sig = k2.sign(b"hello").unwrap();
        assert_eq!(sig.len(), MlDsa::MlDsa87.signature_len());
        assert!(MlDsa::MlDsa87.verify(k.public_key(), b"hello", &sig));
        assert!(!MlDsa::MlDsa87.verify(k.public_key(), b"hellp", &sig));
        assert!(!MlDsa::MlDsa65.verify(k.public_key(), b"hello", &sig));
    }

    #[test]
    fn leaf_signs_once() {
        let k = LeafKey::generate().unwrap();
        let pk = k.public_key().to_vec();
        let sig = k.sign_once(b"claims").unwrap();
        assert!(MlDsa::MlDsa65.verify(&pk, b"claims", &sig));
        let mut bad = sig.clone();
        bad[100] ^= 1;
        assert!(!MlDsa::MlDsa65.verify(&pk, b"claims", &bad));
    }

    #[test]
    fn spki_is_der_with_ml_dsa_87_oid() {
        let k = IntermediateKey::generate().unwrap();
        let spki = k.spki_der();
        assert_eq!(spki[0], 0x30);
        let oid = crate::oid::der_content(&[2, 16, 840, 1, 101, 3, 4, 3, 19]);
        assert!(spki.windows(oid.len()).any(|w| w == oid.as_slice()));
    }
}
