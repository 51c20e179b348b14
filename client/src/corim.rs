//! Golden baselines as signed CoRIM (draft-ietf-rats-corim-11), through Microsoft's `corim` crate.
//!
//! A baseline travels as one signed CoRIM (`#6.18` COSE_Sign1, content type
//! `application/rim+cbor`) whose payload is a `#6.501` corim-map under the profile
//! [`CORIM_PROFILE`], holding one CoMID (`#6.506`) with one reference triple:
//!
//! - **environment**: class `{vendor: "vmseal", model: "guest-memory"}`;
//! - **measurement `vmseal:capture-policy`**: the SHA-256 of the capture policy the reference values
//!   were captured under (`digests`, alg 1), and the policy's text when known (extension [`KEY_POLICY_TEXT`]);
//! - **one measurement per region**, `mkey` the region's name: `digests` is the region's Merkle
//!   root (`sha-256` as alg 1, BLAKE3 as the text alg `"blake3"`), and the profile's extensions
//!   carry what differential appraisal needs: the page digests (the Merkle leaves, [`KEY_PAGES`]),
//!   the class and severity ([`KEY_CLASS`], [`KEY_SEVERITY`]) and the guest-physical ranges
//!   ([`KEY_RANGES`]);
//! - **measurement `vmseal:kernel-objects`**, when the baseline holds a golden kernel state: the
//!   SHA-256 of the snapshot's `kernel` claim (`digests`) and the claim itself, its deterministic
//!   CBOR ([`KEY_KERNEL_OBJECTS`]).
//!
//! The signature is the caller's ([`seal`] takes a [`CorimSigner`]); [`open`] verifies it against
//! keys the *reader* trusts ([`TrustedKey`]) before any of the payload is believed, then refuses
//! anything the profile does not define: another profile, more tags or triples, unknown extension
//! keys, a root the page digests do not reproduce, ranges that do not cover the pages.
//!
//! The encoding is deterministic (RFC 8949 §4.2.1, by the `corim` crate) and the verifier signs
//! with Ed25519 (deterministic signatures), so the same baseline always exports to the same bytes.

use std::collections::{BTreeMap, BTreeSet};

use aws_lc_rs::signature::{self, KeyPair as _};
use corim::builder::{ComidBuilder, CorimBuilder};
use corim::cbor::value::Value;
use corim::types::common::{MeasuredElement, TagIdChoice};
use corim::types::corim::{ConciseTagChoice, CorimId, ProfileChoice};
use corim::types::environment::{ClassMap, EnvironmentMap};
use corim::types::measurement::{
    Digest as CorimDigest, DigestAlg, MeasurementMap, MeasurementValuesMap,
};
use corim::types::signed::{CoseAlgorithm, CwtClaims, SignedCorimBuilder};
use corim::types::triples::ReferenceTriple;
use vmseal_sealer::claims::{RegionClass, Severity};
use vmseal_sealer::merkle::{Digest, HashAlg, MerkleTree};

/// The CoRIM profile of vmseal golden baselines.
pub const CORIM_PROFILE: &str = "tag:vmseal.dev,2026:corim/v1";
/// The media type of a signed CoRIM (draft-ietf-rats-corim-11 §4.2).
pub const CORIM_MEDIA_TYPE: &str = "application/rim+cbor";
/// The environment class vendor of vmseal reference values.
pub const ENV_VENDOR: &str = "vmseal";
/// The environment class model of vmseal reference values.
pub const ENV_MODEL: &str = "guest-memory";
/// The `mkey` of the capture-policy measurement (`:` never occurs in a region name).
pub const POLICY_MKEY: &str = "vmseal:capture-policy";
/// Profile extension: a region's page digests, the Merkle leaves concatenated (bstr).
pub const KEY_PAGES: i64 = -1;
/// Profile extension: a region's class (`code`, `rodata`, `data`, `structure`).
pub const KEY_CLASS: i64 = -2;
/// Profile extension: a region's severity (`low`, `medium`, `high`, `critical`).
pub const KEY_SEVERITY: i64 = -3;
/// Profile extension: a region's guest-physical ranges, `[* [start, len]]` in bytes.
pub const KEY_RANGES: i64 = -4;
/// Profile extension: the capture policy's text (on the policy measurement).
pub const KEY_POLICY_TEXT: i64 = -5;
/// The `mkey` of the golden kernel state's measurement.
pub const KERNEL_MKEY: &str = "vmseal:kernel-objects";
/// Profile extension: the golden kernel state, the snapshot's `kernel` claim as its
/// deterministic CBOR (bstr; on the kernel-objects measurement).
pub const KEY_KERNEL_OBJECTS: i64 = -6;
/// Largest signed CoRIM read (the `corim` crate's document limit).
pub const MAX_CORIM_BYTES: usize = 16 << 20;
/// The IANA named-information id of SHA-256.
const SHA256_ALG: i64 = 1;

/// A VM's golden baseline as reference values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferenceValues {
    /// The CoRIM's id (`vmseal:<vm>:baseline:<version>` when the verifier made it).
    pub corim_id: String,
    /// The CoMID's tag id.
    pub tag_id: String,
    /// The CoMID's tag version.
    pub tag_version: u64,
    /// The SHA-256 of the capture policy's text.
    pub policy_digest: Digest,
    /// The capture policy's text, when the producer had it.
    pub policy_text: Option<String>,
    /// The regions, by name (ascending).
    pub regions: Vec<RegionReference>,
    /// The golden kernel state (the `kernel` claim of the snapshot the values come from), when
    /// the baseline holds one.
    pub kernel: Option<vmseal_sealer::claims::KernelObjects>,
}

/// One region's reference values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionReference {
    /// Region name, as the policy names it.
    pub name: String,
    /// Class.
    pub class: RegionClass,
    /// Severity.
    pub severity: Severity,
    /// The page hash.
    pub hash: HashAlg,
    /// Page digests, in page order (the Merkle tree's leaves).
    pub leaves: Vec<Digest>,
    /// Guest-physical ranges `[start, len]` the pages came from, when known.
    pub ranges: Option<Vec<[u64; 2]>>,
}

impl RegionReference {
    /// The region's Merkle root.
    pub fn root(&self) -> Result<Digest, CorimError> {
        MerkleTree::from_leaves(self.hash, self.leaves.clone())
            .map(|t| t.root())
            .map_err(|e| CorimError::Invalid(format!("region {:?}: {e}", self.name)))
    }
}

/// Why a CoRIM was not made or not accepted.
#[derive(Debug, thiserror::Error)]
pub enum CorimError {
    /// Not a well-formed signed CoRIM (the `corim` crate's strict validation).
    #[error("not a valid signed CoRIM: {0}")]
    Malformed(String),
    /// Signed by no key this reader trusts, or the signature does not verify.
    #[error("{0}")]
    Untrusted(String),
    /// A well-formed, trusted CoRIM that is not a vmseal baseline under this profile.
    #[error("not a vmseal baseline CoRIM: {0}")]
    Invalid(String),
    /// The CoRIM could not be built.
    #[error("cannot build the CoRIM: {0}")]
    Build(String),
}

/// The COSE algorithms [`open`] accepts, with the key type each needs (an algorithm is never
/// taken for another key type: the header's `alg` must fit the trusted key).
fn verification_alg(alg: CoseAlgorithm) -> Option<&'static dyn signature::VerificationAlgorithm> {
    Some(match alg {
        CoseAlgorithm::Ed25519 | CoseAlgorithm::EdDsa => &signature::ED25519,
        CoseAlgorithm::Esp256 | CoseAlgorithm::Es256 => &signature::ECDSA_P256_SHA256_FIXED,
        CoseAlgorithm::Esp384 | CoseAlgorithm::Es384 => &signature::ECDSA_P384_SHA384_FIXED,
        _ => return None,
    })
}

/// A public key a reader trusts to sign reference values (an SPKI, Ed25519, P-256 or P-384).
#[derive(Debug, Clone)]
pub struct TrustedKey {
    /// Where the key came from (a file name, "this verifier"), for messages.
    pub label: String,
    spki: Vec<u8>,
}

impl TrustedKey {
    /// A key from its DER SubjectPublicKeyInfo.
    pub fn from_spki(label: impl Into<String>, spki: Vec<u8>) -> Result<Self, CorimError> {
        let label = label.into();
        let fits = [
            &signature::ED25519 as &dyn signature::VerificationAlgorithm,
            &signature::ECDSA_P256_SHA256_FIXED,
            &signature::ECDSA_P384_SHA384_FIXED,
        ]
        .into_iter()
        .any(|a| signature::ParsedPublicKey::new(a, &spki).is_ok());
        if !fits {
            return Err(CorimError::Untrusted(format!(
                "{label}: not an Ed25519, P-256 or P-384 public key"
            )));
        }
        Ok(Self { label, spki })
    }

    /// A key from PEM: a `PUBLIC KEY` (SPKI) or a `CERTIFICATE` (its key is pinned; the
    /// certificate's dates and issuer are not looked at).
    pub fn from_pem(label: impl Into<String>, pem_text: &[u8]) -> Result<Self, CorimError> {
        let label = label.into();
        let p = pem::parse(pem_text)
            .map_err(|e| CorimError::Untrusted(format!("{label}: not PEM: {e}")))?;
        let spki = match p.tag() {
            "PUBLIC KEY" => p.into_contents(),
            "CERTIFICATE" => {
                vmseal_sealer::x509::ParsedCert::from_der(p.contents())
                    .map_err(|e| CorimError::Untrusted(format!("{label}: {e}")))?
                    .spki_der
            }
            other => {
                return Err(CorimError::Untrusted(format!(
                    "{label}: a PEM {other:?}; give the signer's PUBLIC KEY or CERTIFICATE"
                )));
            }
        };
        Self::from_spki(label, spki)
    }

    /// The key id vmseal puts in `kid`: the SHA-256 of the DER SubjectPublicKeyInfo.
    pub fn kid(&self) -> Digest {
        HashAlg::Sha256.hash(&[&self.spki])
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn spki(&self) -> &[u8] {
        &self.spki
    }
}

/// Signs a CoRIM's `Sig_structure1`.
pub trait CorimSigner {
    /// The COSE algorithm.
    fn alg(&self) -> CoseAlgorithm;
    /// The `kid` header: the SHA-256 of the signer's DER SubjectPublicKeyInfo.
    fn kid(&self) -> Digest;
    /// The signer's name (the CWT `iss` claim).
    fn issuer(&self) -> &str;
    /// The signature over `tbs`.
    fn sign(&self, tbs: &[u8]) -> Result<Vec<u8>, CorimError>;
}

/// An Ed25519 reference-value signing key: deterministic signatures, so one baseline always
/// exports to the same bytes. It signs as COSE `EdDSA` (-8), which RFC 9864 deprecates in favour
/// of the fully specified `Ed25519` (-19), because the libraries relying parties use today
/// (pycose 1.1, Veraison's go-cose) read only -8; [`open`] reads both.
pub struct Ed25519CorimKey {
    key: signature::Ed25519KeyPair,
    issuer: String,
    kid: Digest,
    spki: Vec<u8>,
}

impl std::fmt::Debug for Ed25519CorimKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ed25519CorimKey")
            .field("issuer", &self.issuer)
            .field("kid", &hex::encode(self.kid))
            .finish_non_exhaustive()
    }
}

impl Ed25519CorimKey {
    /// A new key, as PKCS#8 PEM (`PRIVATE KEY`).
    pub fn generate_pem() -> Result<String, CorimError> {
        let doc = signature::Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
            .map_err(|e| CorimError::Build(format!("cannot make an Ed25519 key: {e}")))?;
        Ok(pem::encode(&pem::Pem::new("PRIVATE KEY", doc.as_ref())))
    }

    /// The key in PKCS#8 PEM, signing as `issuer`.
    pub fn from_pem(pem_text: &[u8], issuer: impl Into<String>) -> Result<Self, CorimError> {
        let p = pem::parse(pem_text).map_err(|e| CorimError::Build(format!("not PEM: {e}")))?;
        let key = signature::Ed25519KeyPair::from_pkcs8(p.contents())
            .map_err(|e| CorimError::Build(format!("not an Ed25519 PKCS#8 key: {e}")))?;
        let spki = aws_lc_rs::encoding::AsDer::<aws_lc_rs::encoding::PublicKeyX509Der<'_>>::as_der(
            key.public_key(),
        )
        .map_err(|e| CorimError::Build(format!("public key: {e}")))?
        .as_ref()
        .to_vec();
        Ok(Self {
            key,
            issuer: issuer.into(),
            kid: HashAlg::Sha256.hash(&[&spki]),
            spki,
        })
    }

    /// The public key as a reader trusts it.
    pub fn trusted(&self, label: impl Into<String>) -> TrustedKey {
        TrustedKey {
            label: label.into(),
            spki: self.spki.clone(),
        }
    }

    /// The public key, PEM (`PUBLIC KEY`), for readers' trust lists.
    pub fn public_pem(&self) -> String {
        pem::encode(&pem::Pem::new("PUBLIC KEY", self.spki.clone()))
    }
}

impl CorimSigner for Ed25519CorimKey {
    fn alg(&self) -> CoseAlgorithm {
        CoseAlgorithm::EdDsa
    }
    fn kid(&self) -> Digest {
        self.kid
    }
    fn issuer(&self) -> &str {
        &self.issuer
    }
    fn sign(&self, tbs: &[u8]) -> Result<Vec<u8>, CorimError> {
        Ok(self.key.sign(tbs).as_ref().to_vec())
    }
}

fn digest_of(alg: HashAlg, value: Digest) -> Result<CorimDigest, CorimError> {
    match alg {
        HashAlg::Sha256 => Ok(CorimDigest::new(SHA256_ALG, value.to_vec())),
        HashAlg::Blake3 => Ok(CorimDigest::new_text("blake3", value.to_vec())),
        other => Err(CorimError::Build(format!(
            "no CoRIM digest algorithm for {}",
            other.name()
        ))),
    }
}

fn alg_of(d: &CorimDigest) -> Option<HashAlg> {
    match d.alg() {
        DigestAlg::Int(SHA256_ALG) => Some(HashAlg::Sha256),
        DigestAlg::Text(t) if t == "blake3" => Some(HashAlg::Blake3),
        _ => None,
    }
}

/// The unsigned payload (`#6.501` corim-map) of `rv`: deterministic CBOR.
pub fn payload(rv: &ReferenceValues) -> Result<Vec<u8>, CorimError> {
    let build = |e: &dyn std::fmt::Display| CorimError::Build(e.to_string());
    let mut measurements = Vec::with_capacity(rv.regions.len() + 1);
    let mut policy = MeasurementValuesMap::new();
    policy.digests = Some(vec![digest_of(HashAlg::Sha256, rv.policy_digest)?]);
    if let Some(t) = &rv.policy_text {
        policy
            .extra_entries
            .insert(KEY_POLICY_TEXT, Value::Text(t.clone()));
    }
    measurements.push(MeasurementMap {
        mkey: Some(MeasuredElement::Text(POLICY_MKEY.into())),
        mval: policy,
        authorized_by: None,
    });
    if let Some(k) = &rv.kernel {
        let bytes = k.encode();
        let mut v = MeasurementValuesMap::new();
        v.digests = Some(vec![digest_of(
            HashAlg::Sha256,
            HashAlg::Sha256.hash(&[&bytes]),
        )?]);
        v.extra_entries
            .insert(KEY_KERNEL_OBJECTS, Value::Bytes(bytes));
        measurements.push(MeasurementMap {
            mkey: Some(MeasuredElement::Text(KERNEL_MKEY.into())),
            mval: v,
            authorized_by: None,
        });
    }
    let mut regions: Vec<&RegionReference> = rv.regions.iter().collect();
    regions.sort_by(|a, b| a.name.cmp(&b.name));
    for r in regions {
        let mut v = MeasurementValuesMap::new();
        v.digests = Some(vec![digest_of(r.hash, r.root()?)?]);
        v.extra_entries
            .insert(KEY_PAGES, Value::Bytes(r.leaves.concat()));
        v.extra_entries
            .insert(KEY_CLASS, Value::Text(r.class.name().into()));
        v.extra_entries
            .insert(KEY_SEVERITY, Value::Text(r.severity.name().into()));
        if let Some(ranges) = &r.ranges {
            v.extra_entries.insert(
                KEY_RANGES,
                Value::Array(
                    ranges
                        .iter()
                        .map(|[s, l]| {
                            Value::Array(vec![
                                Value::Integer((*s).into()),
                                Value::Integer((*l).into()),
                            ])
                        })
                        .collect(),
                ),
            );
        }
        measurements.push(MeasurementMap {
            mkey: Some(MeasuredElement::Text(r.name.clone())),
            mval: v,
            authorized_by: None,
        });
    }
    let env = EnvironmentMap {
        class: Some(ClassMap {
            class_id: None,
            vendor: Some(ENV_VENDOR.into()),
            model: Some(ENV_MODEL.into()),
            layer: None,
            index: None,
        }),
        instance: None,
        group: None,
    };
    let comid = ComidBuilder::new(TagIdChoice::Text(rv.tag_id.clone()))
        .set_tag_version(rv.tag_version)
        .add_reference_triple(ReferenceTriple::new(env, measurements))
        .build()
        .map_err(|e| build(&e))?;
    CorimBuilder::new(CorimId::Text(rv.corim_id.clone()))
        .set_profile(ProfileChoice::Uri(CORIM_PROFILE.into()))
        .add_comid_tag(comid)
        .map_err(|e| build(&e))?
        .build_bytes()
        .map_err(|e| build(&e))
}

/// `rv` as a signed CoRIM (`#6.18`, attached payload) signed by `signer`.
pub fn seal(rv: &ReferenceValues, signer: &dyn CorimSigner) -> Result<Vec<u8>, CorimError> {
    sign_payload(payload(rv)?, &rv.corim_id, signer)
}

/// A signed CoRIM over `payload` (a `#6.501` corim-map), the CWT `sub` naming `corim_id`.
fn sign_payload(
    payload: Vec<u8>,
    corim_id: &str,
    signer: &dyn CorimSigner,
) -> Result<Vec<u8>, CorimError> {
    let mut b = SignedCorimBuilder::new(signer.alg(), payload)
        .set_cwt_claims(CwtClaims::new(signer.issuer()).with_sub(corim_id.to_owned()))
        .kid(signer.kid().to_vec());
    let tbs = b
        .to_be_signed(&[])
        .map_err(|e| CorimError::Build(e.to_string()))?;
    let sig = signer.sign(&tbs)?;
    b.build_with_signature(sig)
        .map_err(|e| CorimError::Build(e.to_string()))
}

/// A signed CoRIM [`open`] accepted.
#[derive(Debug, Clone)]
pub struct Opened {
    /// The reference values.
    pub values: ReferenceValues,
    /// The trusted key that signed them ([`TrustedKey::label`]).
    pub signer: String,
    /// That key's id (SHA-256 of its SPKI).
    pub signer_kid: Digest,
    /// The CWT `iss` claim, when present (the signer's own word for its name).
    pub issuer: Option<String>,
    /// The unsigned payload, exactly as signed.
    pub payload: Vec<u8>,
}

/// Verify a signed CoRIM against `trusted` keys at `now` (Unix seconds), then read it as vmseal
/// reference values. Nothing of the payload is looked at before the signature verifies.
pub fn open(bytes: &[u8], trusted: &[TrustedKey], now: i64) -> Result<Opened, CorimError> {
    if bytes.len() > MAX_CORIM_BYTES {
        return Err(CorimError::Malformed(format!(
            "{} bytes; at most {MAX_CORIM_BYTES} are read",
            bytes.len()
        )));
    }
    let (envelope, validated) =
        corim::types::signed::decode_and_validate_signed_corim_at(bytes, None, now)
            .map_err(|e| CorimError::Malformed(e.to_string()))?;
    let header = envelope.protected();
    let alg = header.alg;
    let Some(valg) = verification_alg(alg) else {
        return Err(CorimError::Untrusted(format!(
            "signed with COSE algorithm {} ({}); vmseal reads Ed25519, EdDSA, ESP256/ES256 and ESP384/ES384",
            alg.to_i64(),
            alg.name()
        )));
    };
    let kid = header.kid.clone();
    let tbs = envelope
        .to_be_signed(&[])
        .map_err(|e| CorimError::Malformed(e.to_string()))?;
    let candidates: Vec<&TrustedKey> = trusted
        .iter()
        .filter(|k| kid.as_deref().is_none_or(|id| id == k.kid()))
        .collect();
    let signer = candidates.iter().find(|k| {
        signature::ParsedPublicKey::new(valg, &k.spki)
            .and_then(|p| p.verify_sig(&tbs, &envelope.signature).map_err(Into::into))
            .is_ok()
    });
    let Some(signer) = signer else {
        let who = kid
            .as_deref()
            .map(|k| format!("key id {}", hex::encode(k)))
            .unwrap_or_else(|| "no key id".into());
        return Err(CorimError::Untrusted(if candidates.is_empty() {
            format!(
                "signed by an untrusted key ({who}; this reader trusts {}); add the signer's public key to the trusted CoRIM signers if you trust it",
                names(trusted)
            )
        } else {
            format!(
                "the signature ({who}, {}) does not verify with {}: altered or forged",
                alg.name(),
                names(candidates.iter().copied())
            )
        }));
    };
    let issuer = header.cwt_claims.as_ref().map(|c| c.iss.clone());
    let payload = envelope.payload.clone().unwrap_or_default();
    let values = read_values(validated)?;
    Ok(Opened {
        values,
        signer: signer.label.clone(),
        signer_kid: signer.kid(),
        issuer,
        payload,
    })
}

/// Entry points for the fuzz target `corim` (`fuzz/`).
#[doc(hidden)]
pub mod fuzzing {
    use super::*;

    /// A fixed trusted key (no document the fuzzer makes verifies with it).
    fn key() -> TrustedKey {
        TrustedKey {
            label: "fuzz".into(),
            spki: [
                &[
                    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
                ][..],
                &[7; 32],
            ]
            .concat(),
        }
    }

    /// `data` as a signed CoRIM ([`open`]), and as an unsigned payload through what [`open`]
    /// does after the signature verifies. For fuzzing only: this authenticates nothing.
    pub fn corim(data: &[u8]) {
        let _ = open(data, &[key()], 1_800_000_000);
        if let Ok(v) = corim::validate::decode_and_validate_full_at(data, 1_800_000_000) {
            let _ = read_values(v);
        }
        let _ = TrustedKey::from_pem("fuzz", data);
    }
}

/// What a signed CoRIM says of itself, before (or without) any key: for display by inspection
/// tools, never for a decision.
#[derive(Debug, Clone)]
pub struct Unauthenticated {
    /// The reference values, as the document states them (read with the same checks as
    /// [`open`], but no signature was verified).
    pub values: Result<ReferenceValues, String>,
    /// The COSE algorithm's name.
    pub alg: String,
    /// The `kid` header.
    pub kid: Option<Vec<u8>>,
    /// The CWT `iss` claim.
    pub issuer: Option<String>,
}

/// Whether `bytes` look like a signed CoRIM: a COSE_Sign1 whose protected header names the
/// content type `application/rim+cbor`.
pub fn is_signed_corim(bytes: &[u8]) -> bool {
    bytes.first() == Some(&0xD2)
        && corim::types::signed::decode_signed_corim(bytes)
            .is_ok_and(|s| s.protected().content_type.as_deref() == Some(CORIM_MEDIA_TYPE))
}

/// Read a signed CoRIM without authenticating it (see [`Unauthenticated`]); [`open`] is what
/// decides.
pub fn read_unauthenticated(bytes: &[u8], now: i64) -> Result<Unauthenticated, CorimError> {
    let (envelope, validated) =
        corim::types::signed::decode_and_validate_signed_corim_at(bytes, None, now)
            .map_err(|e| CorimError::Malformed(e.to_string()))?;
    let h = envelope.protected();
    Ok(Unauthenticated {
        alg: format!("{} ({})", h.alg.name(), h.alg.to_i64()),
        kid: h.kid.clone(),
        issuer: h.cwt_claims.as_ref().map(|c| c.iss.clone()),
        values: read_values(validated).map_err(|e| e.to_string()),
    })
}

fn names<'a>(keys: impl IntoIterator<Item = &'a TrustedKey>) -> String {
    let named: Vec<String> = keys
        .into_iter()
        .map(|k| format!("{} ({})", k.label, hex::encode(&k.kid()[..8])))
        .collect();
    if named.is_empty() {
        return "no key".into();
    }
    named.join(", ")
}

fn invalid(m: impl Into<String>) -> CorimError {
    CorimError::Invalid(m.into())
}

/// The vmseal reference values of a validated, authenticated CoRIM.
fn read_values(v: corim::validate::ValidatedCorim) -> Result<ReferenceValues, CorimError> {
    match &v.corim.profile {
        Some(ProfileChoice::Uri(u)) if u == CORIM_PROFILE => {}
        Some(p) => {
            return Err(invalid(format!("profile {p:?}, not {CORIM_PROFILE}")));
        }
        None => return Err(invalid(format!("no profile; vmseal reads {CORIM_PROFILE}"))),
    }
    let corim_id = match &v.corim.id {
        CorimId::Text(t) => t.clone(),
        CorimId::Uuid(u) => hex::encode(u),
        _ => return Err(invalid("the CoRIM id is neither text nor a UUID")),
    };
    if v.corim.tags.len() != 1
        || !matches!(v.corim.tags[0], ConciseTagChoice::Comid(_))
        || v.comids.len() != 1
        || !v.cotls.is_empty()
        || !v.coswids.is_empty()
        || v.coswid_opaque_count != 0
    {
        return Err(invalid(
            "a vmseal baseline CoRIM holds exactly one CoMID tag",
        ));
    }
    if v.corim.dependent_rims.is_some() {
        return Err(invalid(
            "dependent RIMs are not followed; the baseline must be whole",
        ));
    }
    let comid = v
        .comids
        .into_iter()
        .next()
        .ok_or_else(|| invalid("no CoMID"))?;
    let tag_id = match &comid.tag_identity.tag_id {
        TagIdChoice::Text(t) => t.clone(),
        TagIdChoice::Uuid(u) => hex::encode(u),
        _ => return Err(invalid("tag id is neither text nor a UUID")),
    };
    let tag_version = comid.tag_identity.tag_version.unwrap_or(0);
    let t = comid.triples;
    let only_reference = t.endorsed_triples.is_none()
        && t.identity_triples.is_none()
        && t.attest_key_triples.is_none()
        && t.dependency_triples.is_none()
        && t.membership_triples.is_none()
        && t.coswid_triples.is_none()
        && t.conditional_endorsement_series.is_none()
        && t.conditional_endorsement.is_none();
    let triples = t.reference_triples.unwrap_or_default();
    if !only_reference || triples.len() != 1 {
        return Err(invalid(
            "the CoMID must hold exactly one reference triple and no other triples",
        ));
    }
    let ReferenceTriple(env, measurements) = triples
        .into_iter()
        .next()
        .ok_or_else(|| invalid("no triple"))?;
    let class_ok = env.class.as_ref().is_some_and(|c| {
        c.vendor.as_deref() == Some(ENV_VENDOR)
            && c.model.as_deref() == Some(ENV_MODEL)
            && c.class_id.is_none()
            && c.layer.is_none()
            && c.index.is_none()
    });
    if !class_ok || env.instance.is_some() || env.group.is_some() {
        return Err(invalid(format!(
            "the environment must be exactly class {{vendor: {ENV_VENDOR:?}, model: {ENV_MODEL:?}}}"
        )));
    }
    let mut policy: Option<(Digest, Option<String>)> = None;
    let mut kernel: Option<vmseal_sealer::claims::KernelObjects> = None;
    let mut regions = Vec::new();
    let mut seen = BTreeSet::new();
    for m in measurements {
        let Some(MeasuredElement::Text(name)) = m.mkey else {
            return Err(invalid(
                "every measurement is keyed by text (a region name or the policy)",
            ));
        };
        if m.authorized_by.is_some() {
            return Err(invalid(format!(
                "measurement {name:?}: authorized-by is not part of the profile"
            )));
        }
        let (digest, alg, mut extra) = measured(&name, m.mval)?;
        if name == POLICY_MKEY {
            if policy.is_some() {
                return Err(invalid("two capture-policy measurements"));
            }
            if alg != HashAlg::Sha256 {
                return Err(invalid("the capture policy's digest must be sha-256"));
            }
            let text = match extra.remove(&KEY_POLICY_TEXT) {
                None => None,
                Some(Value::Text(t)) => {
                    if HashAlg::Sha256.hash(&[t.as_bytes()]) != digest {
                        return Err(invalid(
                            "the capture policy's text does not match its digest",
                        ));
                    }
                    Some(t)
                }
                Some(_) => return Err(invalid("the capture policy's text is not text")),
            };
            no_more(&name, &extra)?;
            policy = Some((digest, text));
            continue;
        }
        if name == KERNEL_MKEY {
            if kernel.is_some() {
                return Err(invalid("two kernel-objects measurements"));
            }
            let bytes = match extra.remove(&KEY_KERNEL_OBJECTS) {
                Some(Value::Bytes(b)) => b,
                _ => {
                    return Err(invalid(format!(
                        "the kernel-objects measurement carries no kernel claim (key {KEY_KERNEL_OBJECTS})"
                    )));
                }
            };
            if alg != HashAlg::Sha256 || HashAlg::Sha256.hash(&[&bytes]) != digest {
                return Err(invalid(
                    "the kernel claim does not match its sha-256 digest",
                ));
            }
            no_more(&name, &extra)?;
            kernel = Some(
                vmseal_sealer::claims::KernelObjects::decode(&bytes)
                    .map_err(|e| invalid(format!("the golden kernel state: {e}")))?,
            );
            continue;
        }
        if !vmseal_policy::valid_region_name(&name) {
            return Err(invalid(format!(
                "measurement {name:?} is not a region name (1-64 characters of [A-Za-z0-9._-])"
            )));
        }
        if !seen.insert(name.clone()) {
            return Err(invalid(format!("region {name:?} appears twice")));
        }
        let text = |extra: &mut BTreeMap<i64, Value>, key: i64, what: &str| match extra.remove(&key)
        {
            Some(Value::Text(t)) => Ok(t),
            _ => Err(invalid(format!("region {name:?}: no {what} (key {key})"))),
        };
        let class = text(&mut extra, KEY_CLASS, "class")?;
        let class = RegionClass::from_name(&class)
            .ok_or_else(|| invalid(format!("region {name:?}: unknown class {class:?}")))?;
        let severity = text(&mut extra, KEY_SEVERITY, "severity")?;
        let severity = Severity::from_name(&severity)
            .ok_or_else(|| invalid(format!("region {name:?}: unknown severity {severity:?}")))?;
        let leaves = match extra.remove(&KEY_PAGES) {
            Some(Value::Bytes(b)) if !b.is_empty() && b.len() % 32 == 0 => {
                b.as_chunks::<32>().0.to_vec()
            }
            Some(_) => {
                return Err(invalid(format!(
                    "region {name:?}: page digests are not whole 32-byte digests"
                )));
            }
            None => {
                return Err(invalid(format!(
                    "region {name:?} has a root but no page digests (key {KEY_PAGES}); differential appraisal needs them"
                )));
            }
        };
        let ranges = match extra.remove(&KEY_RANGES) {
            None => None,
            Some(v) => Some(read_ranges(&name, v, leaves.len() as u64)?),
        };
        no_more(&name, &extra)?;
        let r = RegionReference {
            name,
            class,
            severity,
            hash: alg,
            leaves,
            ranges,
        };
        if r.root()? != digest {
            return Err(invalid(format!(
                "region {:?}: the page digests do not reproduce the root",
                r.name
            )));
        }
        regions.push(r);
    }
    let (policy_digest, policy_text) =
        policy.ok_or_else(|| invalid(format!("no {POLICY_MKEY} measurement")))?;
    if regions.is_empty() {
        return Err(invalid("no region"));
    }
    regions.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(ReferenceValues {
        corim_id,
        tag_id,
        tag_version,
        policy_digest,
        policy_text,
        regions,
        kernel,
    })
}

/// The one digest of a measurement, its algorithm, and its extensions; anything else refused.
fn measured(
    name: &str,
    v: MeasurementValuesMap,
) -> Result<(Digest, HashAlg, BTreeMap<i64, Value>), CorimError> {
    let MeasurementValuesMap {
        digests,
        extra_entries,
        ..
    } = v.clone();
    let mut bare = v;
    bare.digests = None;
    bare.extra_entries.clear();
    if bare != MeasurementValuesMap::new() {
        return Err(invalid(format!(
            "measurement {name:?} carries values the profile does not define (only digests and its extensions)"
        )));
    }
    let [d] = digests.unwrap_or_default().try_into().map_err(|_| {
        invalid(format!(
            "measurement {name:?} must carry exactly one digest"
        ))
    })?;
    let alg = alg_of(&d).ok_or_else(|| {
        invalid(format!(
            "measurement {name:?}: digest algorithm {:?} is neither sha-256 nor blake3",
            d.alg()
        ))
    })?;
    let digest: Digest = d
        .value()
        .try_into()
        .map_err(|_| invalid(format!("measurement {name:?}: the digest is not 32 bytes")))?;
    Ok((digest, alg, extra_entries))
}

fn no_more(name: &str, extra: &BTreeMap<i64, Value>) -> Result<(), CorimError> {
    match extra.keys().next() {
        None => Ok(()),
        Some(k) => Err(invalid(format!(
            "measurement {name:?}: extension key {k} is not part of {CORIM_PROFILE}"
        ))),
    }
}

fn read_ranges(name: &str, v: Value, pages: u64) -> Result<Vec<[u64; 2]>, CorimError> {
    let bad = || {
        invalid(format!(
            "region {name:?}: ranges are not [* [start, len]] of page-aligned bytes covering its pages"
        ))
    };
    let Value::Array(items) = v else {
        return Err(bad());
    };
    let mut out = Vec::with_capacity(items.len());
    let mut total = 0u64;
    for it in items {
        let Value::Array(pair) = it else {
            return Err(bad());
        };
        let [Value::Integer(s), Value::Integer(l)] = pair.as_slice() else {
            return Err(bad());
        };
        let (s, l) = (
            u64::try_from(*s).map_err(|_| bad())?,
            u64::try_from(*l).map_err(|_| bad())?,
        );
        let page = vmseal_policy::PAGE;
        if l == 0 || s % page != 0 || l % page != 0 || s.checked_add(l).is_none() {
            return Err(bad());
        }
        total = total.checked_add(l / page).ok_or_else(bad)?;
        out.push([s, l]);
    }
    if total != pages {
        return Err(bad());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn key() -> Ed25519CorimKey {
        Ed25519CorimKey::from_pem(
            Ed25519CorimKey::generate_pem().unwrap().as_bytes(),
            "test verifier",
        )
        .unwrap()
    }

    fn values() -> ReferenceValues {
        let policy = "version = 1\n";
        let region = |name: &str, n: u8, hash| RegionReference {
            name: name.into(),
            class: RegionClass::Code,
            severity: Severity::Critical,
            hash,
            leaves: (0..n).map(|i| [i; 32]).collect(),
            ranges: Some(vec![[0x10_0000, u64::from(n) * 4096]]),
        };
        ReferenceValues {
            corim_id: "vmseal:vm1:baseline:1".into(),
            tag_id: "vmseal:vm1:baseline:1".into(),
            tag_version: 1,
            policy_digest: HashAlg::Sha256.hash(&[policy.as_bytes()]),
            policy_text: Some(policy.into()),
            // By name, as read back.
            regions: vec![
                RegionReference {
                    ranges: None,
                    class: RegionClass::Data,
                    severity: Severity::Low,
                    ..region("heap", 2, HashAlg::Blake3)
                },
                region("kernel-text", 3, HashAlg::Sha256),
            ],
            kernel: Some(vmseal_sealer::claims::kernel::example::kernel()),
        }
    }

    /// A P-256 key of another reference-value provider (COSE ESP256).
    struct P256(signature::EcdsaKeyPair, Vec<u8>);
    impl P256 {
        fn new() -> Self {
            let rng = aws_lc_rs::rand::SystemRandom::new();
            let doc = signature::EcdsaKeyPair::generate_pkcs8(
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                &rng,
            )
            .unwrap();
            let k = signature::EcdsaKeyPair::from_pkcs8(
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                doc.as_ref(),
            )
            .unwrap();
            let spki =
                aws_lc_rs::encoding::AsDer::<aws_lc_rs::encoding::PublicKeyX509Der<'_>>::as_der(
                    k.public_key(),
                )
                .unwrap()
                .as_ref()
                .to_vec();
            Self(k, spki)
        }
    }
    impl CorimSigner for P256 {
        fn alg(&self) -> CoseAlgorithm {
            CoseAlgorithm::Esp256
        }
        fn kid(&self) -> Digest {
            HashAlg::Sha256.hash(&[&self.1])
        }
        fn issuer(&self) -> &str {
            "kernel build"
        }
        fn sign(&self, tbs: &[u8]) -> Result<Vec<u8>, CorimError> {
            Ok(self
                .0
                .sign(&aws_lc_rs::rand::SystemRandom::new(), tbs)
                .unwrap()
                .as_ref()
                .to_vec())
        }
    }

    #[test]
    fn a_baseline_round_trips_byte_for_byte() {
        let k = key();
        let rv = values();
        let signed = seal(&rv, &k).unwrap();
        assert_eq!(
            signed,
            seal(&rv, &k).unwrap(),
            "the same baseline, the same bytes"
        );
        let o = open(&signed, &[k.trusted("own")], NOW).unwrap();
        assert_eq!(o.values, rv);
        assert_eq!(
            (o.signer.as_str(), o.issuer.as_deref()),
            ("own", Some("test verifier"))
        );
        assert_eq!(payload(&o.values).unwrap(), o.payload);
        assert_eq!(seal(&o.values, &k).unwrap(), signed);
        // The corim crate reads its own output back to the same bytes.
        let (env, _) =
            corim::types::signed::decode_and_validate_signed_corim_at(&signed, None, NOW).unwrap();
        assert_eq!(
            corim::types::signed::encode_signed_corim(&env).unwrap(),
            signed
        );
    }

    #[test]
    fn another_providers_p256_signature_is_read_when_its_key_is_trusted() {
        let rvp = P256::new();
        let signed = seal(&values(), &rvp).unwrap();
        let trusted = TrustedKey::from_spki("kernel-build.pem", rvp.1.clone()).unwrap();
        let o = open(&signed, &[key().trusted("own"), trusted], NOW).unwrap();
        assert_eq!(
            (o.signer.as_str(), o.values),
            ("kernel-build.pem", values())
        );
    }

    #[test]
    fn an_untrusted_or_altered_corim_is_refused() {
        let (k, other) = (key(), key());
        let signed = seal(&values(), &k).unwrap();
        let e = open(&signed, &[other.trusted("other")], NOW).unwrap_err();
        assert!(
            matches!(e, CorimError::Untrusted(ref m) if m.contains("untrusted key")),
            "{e}"
        );
        assert!(matches!(
            open(&signed, &[], NOW),
            Err(CorimError::Untrusted(_))
        ));
        // A P-256 key with the Ed25519 key's id: the algorithm must fit the key.
        let rvp = P256::new();
        let e = open(&seal(&values(), &rvp).unwrap(), &[k.trusted("own")], NOW).unwrap_err();
        assert!(matches!(e, CorimError::Untrusted(_)), "{e}");
        // Every single-byte change of a page digest breaks the signature.
        let leaf = [1u8; 32];
        let at = signed.windows(32).position(|w| w == leaf).unwrap();
        let mut bad = signed.clone();
        bad[at] ^= 1;
        let e = open(&bad, &[k.trusted("own")], NOW).unwrap_err();
        assert!(
            matches!(e, CorimError::Untrusted(ref m) if m.contains("does not verify")),
            "{e}"
        );
        // The signature itself.
        let mut bad = signed.clone();
        let n = bad.len();
        bad[n - 1] ^= 0x80;
        assert!(matches!(
            open(&bad, &[k.trusted("own")], NOW),
            Err(CorimError::Untrusted(_))
        ));
    }

    /// A payload the trusted key signs, but that is not a vmseal baseline: refused on content.
    fn signed_with(
        k: &Ed25519CorimKey,
        edit: impl FnOnce(&mut ReferenceValues, &mut Vec<MeasurementMap>),
    ) -> Vec<u8> {
        let mut rv = values();
        let mut ms = Vec::new();
        edit(&mut rv, &mut ms);
        // Rebuild through the corim crate with the extra measurements appended.
        let p = payload(&rv).unwrap();
        let p = if ms.is_empty() {
            p
        } else {
            let v = corim::validate::decode_and_validate_at(&p, NOW).unwrap();
            let mut comid = v.1.into_iter().next().unwrap();
            let t = comid.triples.reference_triples.as_mut().unwrap();
            t[0].1.extend(ms);
            CorimBuilder::new(CorimId::Text(rv.corim_id.clone()))
                .set_profile(ProfileChoice::Uri(CORIM_PROFILE.into()))
                .add_comid_tag(comid)
                .unwrap()
                .build_bytes()
                .unwrap()
        };
        sign_payload(p, &rv.corim_id, k).unwrap()
    }

    #[test]
    fn a_trusted_signature_over_something_else_is_refused() {
        let k = key();
        let trusted = [k.trusted("own")];
        let refused = |doc: Vec<u8>, want: &str| {
            let e = open(&doc, &trusted, NOW).unwrap_err();
            assert!(matches!(e, CorimError::Invalid(_)), "{want}: {e}");
            assert!(e.to_string().contains(want), "{want}: {e}");
        };
        let ext = |key: i64, v: Value| {
            let mut m = MeasurementValuesMap::new();
            m.digests = Some(vec![CorimDigest::new(1, vec![0; 32])]);
            m.extra_entries.insert(key, v);
            m
        };
        refused(
            signed_with(&k, |_, ms| {
                ms.push(MeasurementMap {
                    mkey: Some(MeasuredElement::Text("kernel-text".into())),
                    mval: ext(KEY_CLASS, Value::Text("code".into())),
                    authorized_by: None,
                })
            }),
            "appears twice",
        );
        refused(
            signed_with(&k, |_, ms| {
                ms.push(MeasurementMap {
                    mkey: Some(MeasuredElement::Text("extra".into())),
                    mval: {
                        let mut m = ext(-99, Value::Null);
                        m.extra_entries
                            .insert(KEY_CLASS, Value::Text("code".into()));
                        m.extra_entries
                            .insert(KEY_SEVERITY, Value::Text("low".into()));
                        m.extra_entries.insert(KEY_PAGES, Value::Bytes(vec![0; 32]));
                        m
                    },
                    authorized_by: None,
                })
            }),
            "-99",
        );
        refused(
            signed_with(&k, |_, ms| {
                ms.push(MeasurementMap {
                    mkey: Some(MeasuredElement::Text("bad name!".into())),
                    mval: ext(KEY_CLASS, Value::Text("code".into())),
                    authorized_by: None,
                })
            }),
            "not a region name",
        );
        refused(
            signed_with(&k, |rv, _| rv.policy_text = Some("version = 2\n".into())),
            "does not match its digest",
        );
        refused(
            signed_with(&k, |rv, _| rv.regions[1].ranges = Some(vec![[0, 4096]])),
            "ranges",
        );
        // A root the pages do not reproduce: the payload's root swapped for another.
        let rv = values();
        let mut p = payload(&rv).unwrap();
        let root = rv.regions[1].root().unwrap();
        let at = p.windows(32).position(|w| w == root).unwrap();
        p[at] ^= 1;
        refused(
            sign_payload(p, &rv.corim_id, &k).unwrap(),
            "do not reproduce the root",
        );
        // Another profile.
        let p = CorimBuilder::new(CorimId::Text("x".into()))
            .set_profile(ProfileChoice::Uri("tag:example.com,2026:other".into()))
            .add_comid_tag(
                corim::validate::decode_and_validate_at(&payload(&rv).unwrap(), NOW)
                    .unwrap()
                    .1
                    .remove(0),
            )
            .unwrap()
            .build_bytes()
            .unwrap();
        refused(sign_payload(p, "x", &k).unwrap(), "profile");
        // The golden kernel state: its bytes must be its digest's, and a canonical claim.
        let kernel_measurement = |bytes: Vec<u8>, digest: Digest| MeasurementMap {
            mkey: Some(MeasuredElement::Text(KERNEL_MKEY.into())),
            mval: {
                let mut m = MeasurementValuesMap::new();
                m.digests = Some(vec![CorimDigest::new(1, digest.to_vec())]);
                m.extra_entries
                    .insert(KEY_KERNEL_OBJECTS, Value::Bytes(bytes));
                m
            },
            authorized_by: None,
        };
        let good = vmseal_sealer::claims::kernel::example::kernel().encode();
        refused(
            signed_with(&k, |rv, ms| {
                rv.kernel = None;
                let mut altered = good.clone();
                let last = altered.len() - 1;
                altered[last] ^= 1;
                ms.push(kernel_measurement(altered, HashAlg::Sha256.hash(&[&good])));
            }),
            "does not match its sha-256 digest",
        );
        refused(
            signed_with(&k, |rv, ms| {
                rv.kernel = None;
                let junk = b"\xa1\x61x\x01".to_vec();
                ms.push(kernel_measurement(
                    junk.clone(),
                    HashAlg::Sha256.hash(&[&junk]),
                ));
            }),
            "the golden kernel state",
        );
        refused(
            signed_with(&k, |_, ms| {
                ms.push(kernel_measurement(
                    good.clone(),
                    HashAlg::Sha256.hash(&[&good]),
                ));
            }),
            "two kernel-objects measurements",
        );
    }

    #[test]
    fn malformed_bytes_are_refused_without_panic() {
        let k = key();
        let signed = seal(&values(), &k).unwrap();
        let trusted = [k.trusted("own")];
        for n in 0..signed.len().min(400) {
            assert!(open(&signed[..n], &trusted, NOW).is_err());
        }
        for junk in [
            &b""[..],
            b"\xd2",
            b"\xd2\x84",
            b"\xd9\x01\xf5\xa0",
            &[0xff; 64],
        ] {
            assert!(matches!(
                open(junk, &trusted, NOW),
                Err(CorimError::Malformed(_))
            ));
        }
        assert!(
            TrustedKey::from_pem(
                "x",
                b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
            )
            .is_err()
        );
        assert!(TrustedKey::from_pem("x", k.public_pem().as_bytes()).is_ok());
    }
}
