//! Snapshot evidence: a COSE_Sign1 (RFC 9052) over the deterministic CBOR claims, signed by a
//! one-time ML-DSA-65 leaf key (COSE algorithm -49, RFC 9964), with the certificate chain
//! `[leaf, intermediate]` in the protected `x5chain` header (label 33, RFC 9360).
//!
//! [`Sealer::seal`] makes evidence; [`DecodedEvidence::decode`] parses it without trusting it (see
//! [`crate::verify`] for the checks).

use std::sync::Arc;

use ciborium::value::Value;
use coset::{CoseSign1, CoseSign1Builder, HeaderBuilder, Label, TaggedCborSerializable, iana};
use time::OffsetDateTime;

use crate::claims::Claims;
use crate::keys::{IntermediateKey, KeyError, LeafKey};
use crate::merkle::{Digest, HashAlg};
use crate::x509::{CertError, LeafIssuer};

/// COSE header label of `x5chain` (RFC 9360).
pub const X5CHAIN: i64 = 33;
/// COSE algorithm identifier of ML-DSA-65 (RFC 9964).
pub const ALG_ML_DSA_65: i64 = -49;
/// Content type of the payload: an EAT unprotected claims set in CBOR (RFC 9782).
pub const CONTENT_TYPE: &str = "application/eat-ucs+cbor";
/// Upper bound on an evidence file.
pub const MAX_EVIDENCE_LEN: usize = 64 * 1024 * 1024;

/// Errors making evidence.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// Key generation or signing failed.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Certificate issuance failed.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// The claims are inconsistent.
    #[error("claims are inconsistent: {0}")]
    Claims(#[from] crate::claims::ClaimsError),
    /// COSE encoding failed.
    #[error("COSE encoding failed: {0}")]
    Cose(String),
}

/// Errors decoding evidence (structure only; signatures are checked in [`crate::verify`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Too large.
    #[error("evidence is {0} bytes, more than the {MAX_EVIDENCE_LEN}-byte limit")]
    TooLarge(usize),
    /// Not a tagged COSE_Sign1.
    #[error("not a tagged COSE_Sign1: {0}")]
    Cose(String),
    /// Wrong or missing algorithm.
    #[error("protected header algorithm must be ML-DSA-65 (-49), found {0}")]
    Algorithm(String),
    /// Missing or malformed x5chain.
    #[error("protected x5chain must hold exactly [leaf, intermediate] certificates: {0}")]
    X5Chain(&'static str),
    /// Payload absent (detached payloads are not used).
    #[error("payload is missing")]
    NoPayload,
    /// Something other than alg, content type and x5chain in the headers.
    #[error("unexpected COSE header: {0}")]
    Header(String),
}

/// The parts of an evidence object, parsed but not yet verified.
#[derive(Debug, Clone)]
pub struct DecodedEvidence {
    /// DER leaf certificate.
    pub leaf_der: Vec<u8>,
    /// DER intermediate certificate.
    pub intermediate_der: Vec<u8>,
    /// The CBOR claims (not yet decoded).
    pub payload: Vec<u8>,
    /// The ML-DSA-65 signature.
    pub signature: Vec<u8>,
    /// The COSE Sig_structure the signature covers.
    pub signed_bytes: Vec<u8>,
    /// SHA-256 of the whole evidence: what the next snapshot's `prev` names.
    pub digest: Digest,
}

impl DecodedEvidence {
    /// Parse a tagged COSE_Sign1 as vmseal evidence.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_EVIDENCE_LEN {
            return Err(DecodeError::TooLarge(bytes.len()));
        }
        let sign1 =
            CoseSign1::from_tagged_slice(bytes).map_err(|e| DecodeError::Cose(format!("{e:?}")))?;
        let hdr = &sign1.protected.header;
        match &hdr.alg {
            Some(coset::Algorithm::Assigned(a)) if *a as i64 == ALG_ML_DSA_65 => {}
            other => return Err(DecodeError::Algorithm(format!("{other:?}"))),
        }
        if !sign1.unprotected.is_empty() {
            return Err(DecodeError::Header(
                "unprotected headers are not allowed".into(),
            ));
        }
        if !hdr.crit.is_empty()
            || !hdr.key_id.is_empty()
            || !hdr.iv.is_empty()
            || !hdr.partial_iv.is_empty()
            || !hdr.counter_signatures.is_empty()
        {
            return Err(DecodeError::Header(
                "only alg, content type and x5chain are allowed".into(),
            ));
        }
        let mut chain = None;
        for (label, value) in &hdr.rest {
            match label {
                Label::Int(X5CHAIN) => chain = Some(value),
                other => return Err(DecodeError::Header(format!("label {other:?}"))),
            }
        }
        let certs = match chain {
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::Bytes(b) => Ok(b.clone()),
                    _ => Err(DecodeError::X5Chain("entries must be byte strings")),
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(_) => return Err(DecodeError::X5Chain("not an array")),
            None => return Err(DecodeError::X5Chain("missing")),
        };
        let [leaf_der, intermediate_der]: [Vec<u8>; 2] = certs
            .try_into()
            .map_err(|_| DecodeError::X5Chain("wrong number of certificates"))?;
        let payload = sign1.payload.clone().ok_or(DecodeError::NoPayload)?;
        let signed_bytes = sign1.tbs_data(b"");
        Ok(Self {
            leaf_der,
            intermediate_der,
            payload,
            signature: sign1.signature,
            signed_bytes,
            digest: HashAlg::Sha256.hash(&[bytes]),
        })
    }
}

/// SHA-256 of an evidence object, as named by the next snapshot's `prev`.
pub fn evidence_digest(bytes: &[u8]) -> Digest {
    HashAlg::Sha256.hash(&[bytes])
}

/// Seals snapshots: issues a leaf per snapshot under the intermediate and signs the claims.
pub struct Sealer {
    intermediate_der: Vec<u8>,
    issuer: LeafIssuer,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer").finish_non_exhaustive()
    }
}

impl Sealer {
    /// A sealer for the intermediate key and its certificate.
    pub fn new(key: IntermediateKey, intermediate_der: Vec<u8>) -> Result<Self, SealError> {
        let issuer = LeafIssuer::new(Arc::new(key), &intermediate_der)?;
        Ok(Self {
            intermediate_der,
            issuer,
        })
    }

    /// The intermediate certificate.
    pub fn intermediate_der(&self) -> &[u8] {
        &self.intermediate_der
    }

    /// Set the lifetime of leaf certificates.
    pub fn set_leaf_validity(&mut self, d: time::Duration) {
        self.issuer.leaf_validity = d;
    }

    /// Seal one snapshot: fresh leaf key, leaf certificate, COSE_Sign1; the leaf key is erased.
    pub fn seal(&self, claims: &Claims, now: OffsetDateTime) -> Result<Vec<u8>, SealError> {
        claims.check()?;
        let leaf = LeafKey::generate()?;
        let leaf_der = self
            .issuer
            .issue(leaf.public_key(), &claims.vm_id, claims.seq, now)?;
        let protected = HeaderBuilder::new()
            .algorithm(iana::Algorithm::ML_DSA_65)
            .content_type(CONTENT_TYPE.to_owned())
            .value(
                X5CHAIN,
                Value::Array(vec![
                    Value::Bytes(leaf_der),
                    Value::Bytes(self.intermediate_der.clone()),
                ]),
            )
            .build();
        let sign1 = CoseSign1Builder::new()
            .protected(protected)
            .payload(claims.encode())
            .try_create_signature(b"", |tbs| leaf.sign_once(tbs))?
            .build();
        sign1
            .to_tagged_vec()
            .map_err(|e| SealError::Cose(format!("{e:?}")))
    }
}
