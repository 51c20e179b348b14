//! Public verification of snapshot evidence: one call, public material only.
//!
//! [`verify_evidence`] checks, in order, and stops at the first broken link:
//!
//! 1. the COSE_Sign1 structure (alg ML-DSA-65, protected `x5chain` = [leaf, intermediate]);
//! 2. the intermediate certificate: ML-DSA-87, self-signed, valid now;
//! 3. its anchors, unless the intermediate is pinned (already enrolled): the TPM quote and/or the
//!    SNP report, each binding the intermediate's SPKI, as [`TrustConfig::require`] demands;
//! 4. the leaf certificate: issued by the intermediate, valid now, evidence-signing EKU;
//! 5. the COSE signature by the leaf key;
//! 6. the claims: deterministic CBOR, internally consistent, and for the VM and sequence number the
//!    leaf certificate names.

use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use crate::anchor::{HostIdentity, SnapshotIdentity, SnpAnchor, TpmAnchor};
use crate::claims::{Claims, ClaimsError};
use crate::evidence::{DecodeError, DecodedEvidence};
use crate::keys::MlDsa;
use crate::merkle::Digest;
use crate::oid;
use crate::snp::verify::{SnpTrust, SnpVerifyError, VerifiedReport, verify_snp_anchor};
use crate::tpm::verify::{TpmTrust, TpmVerifyError, VerifiedQuote, verify_tpm_anchor};
use crate::x509::{CertError, LeafError, ParsedCert, verify_leaf};

/// Which hardware anchors a policy requires of the intermediate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnchorRequirement {
    /// Require a valid TPM quote.
    pub tpm: bool,
    /// Require a valid SNP report.
    pub snp: bool,
}

impl AnchorRequirement {
    /// Parse "tpm", "snp", "both" or "none".
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "tpm" => Self {
                tpm: true,
                snp: false,
            },
            "snp" => Self {
                tpm: false,
                snp: true,
            },
            "both" => Self {
                tpm: true,
                snp: true,
            },
            "none" => Self {
                tpm: false,
                snp: false,
            },
            _ => return None,
        })
    }
}

/// Everything a verifier trusts.
#[derive(Debug, Clone)]
pub struct TrustConfig {
    /// Anchors that must be present and valid.
    pub require: AnchorRequirement,
    /// TPM trust (EK CAs, activated AKs).
    pub tpm: TpmTrust,
    /// SNP trust (AMD roots; the INSECURE stand-in only when explicitly added).
    pub snp: SnpTrust,
    /// SHA-256 digests of intermediate certificates already enrolled: their anchors were checked
    /// at enrollment and are not re-checked (the warm path; ML-DSA only from then on).
    pub pinned_intermediates: Vec<Digest>,
}

impl Default for TrustConfig {
    fn default() -> Self {
        Self {
            require: AnchorRequirement {
                tpm: true,
                snp: false,
            },
            tpm: TpmTrust {
                require_ek_chain: true,
                ..TpmTrust::default()
            },
            snp: SnpTrust::default(),
            pinned_intermediates: Vec::new(),
        }
    }
}

/// The broken link, when verification fails.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The COSE structure.
    #[error("evidence structure: {0}")]
    Decode(#[from] DecodeError),
    /// The intermediate certificate does not parse.
    #[error("intermediate certificate: {0}")]
    IntermediateParse(CertError),
    /// The intermediate is not an ML-DSA-87 self-signed certificate.
    #[error("intermediate certificate: {0}")]
    Intermediate(&'static str),
    /// The enrollment's fresh anchors do not answer the verifier's challenge for this host.
    #[error("fresh anchors: {0}")]
    Fresh(String),
    /// The intermediate carries a critical extension vmseal does not process.
    #[error("intermediate certificate: critical extension {0} is not one vmseal processes")]
    UnknownCritical(String),
    /// The intermediate is outside its validity period.
    #[error("intermediate certificate is not valid at the verification time")]
    IntermediateExpired,
    /// A required anchor is absent.
    #[error(
        "the trust configuration requires a {0} anchor, and the intermediate certificate carries none"
    )]
    MissingAnchor(&'static str),
    /// An anchor extension is malformed.
    #[error("anchor extension: {0}")]
    AnchorExtension(CertError),
    /// The TPM anchor failed.
    #[error("TPM anchor: {0}")]
    Tpm(#[from] TpmVerifyError),
    /// The SNP anchor failed.
    #[error("SNP anchor: {0}")]
    Snp(#[from] SnpVerifyError),
    /// The leaf certificate failed.
    #[error("leaf certificate: {0}")]
    Leaf(#[from] LeafError),
    /// The COSE signature failed.
    #[error("evidence signature does not verify with the leaf key")]
    Signature,
    /// The claims failed.
    #[error("claims: {0}")]
    Claims(#[from] ClaimsError),
    /// The leaf certificate names another VM or sequence number than the claims.
    #[error(
        "leaf certificate is for {cert_vm:?} #{cert_seq}, but the claims are for {claims_vm:?} #{claims_seq}"
    )]
    IdentityMismatch {
        /// VM in the leaf.
        cert_vm: String,
        /// Sequence in the leaf.
        cert_seq: u64,
        /// VM in the claims.
        claims_vm: String,
        /// Sequence in the claims.
        claims_seq: u64,
    },
}

/// What verified.
#[derive(Debug, Clone)]
pub struct VerifiedEvidence {
    /// The claims.
    pub claims: Claims,
    /// The host the intermediate belongs to.
    pub host_id: String,
    /// SHA-256 of the intermediate certificate (what a verifier pins).
    pub intermediate_digest: Digest,
    /// The intermediate's SPKI (DER).
    pub intermediate_spki: Vec<u8>,
    /// True when the intermediate was pinned and its anchors were not re-checked.
    pub pinned: bool,
    /// The verified TPM quote, when checked.
    pub tpm: Option<VerifiedQuote>,
    /// The verified SNP report, when checked.
    pub snp: Option<VerifiedReport>,
    /// SHA-256 of the evidence (the next snapshot's `prev`).
    pub digest: Digest,
    /// The claims' profile: the previous one is read for one release, and its reader warns.
    pub claims_profile: crate::claims::ClaimsProfile,
}

impl VerifiedEvidence {
    /// True when any accepted anchor is the INSECURE software stand-in.
    pub fn insecure(&self) -> bool {
        self.snp.as_ref().is_some_and(|s| s.insecure)
    }
}

/// Checked facts about an intermediate certificate (steps 2 and 3).
#[derive(Debug, Clone)]
pub struct VerifiedIntermediate {
    /// Parsed certificate.
    pub cert: ParsedCert,
    /// Host identifier.
    pub host_id: String,
    /// SHA-256 of the DER.
    pub digest: Digest,
    /// Whether it was pinned.
    pub pinned: bool,
    /// TPM result.
    pub tpm: Option<VerifiedQuote>,
    /// SNP result.
    pub snp: Option<VerifiedReport>,
}

/// Verify an intermediate certificate and its anchors (what enrollment does once).
pub fn verify_intermediate(
    der: &[u8],
    trust: &TrustConfig,
    now: OffsetDateTime,
) -> Result<VerifiedIntermediate, VerifyError> {
    let cert = ParsedCert::from_der(der).map_err(VerifyError::IntermediateParse)?;
    // What vmseal processes: basic constraints, key usage, extended key usage, subject and
    // authority key identifiers, subject alternative name. Its own extensions are non-critical.
    if let Some(oid) = cert.unknown_critical(&[
        "2.5.29.19",
        "2.5.29.15",
        "2.5.29.37",
        "2.5.29.14",
        "2.5.29.35",
        "2.5.29.17",
    ]) {
        return Err(VerifyError::UnknownCritical(oid.to_owned()));
    }
    if cert.ml_dsa() != Some(MlDsa::MlDsa87) {
        return Err(VerifyError::Intermediate("key is not ML-DSA-87"));
    }
    if !cert.is_ca {
        return Err(VerifyError::Intermediate("not a CA certificate"));
    }
    let digest = crate::merkle::HashAlg::Sha256.hash(&[der]);
    let pinned = trust
        .pinned_intermediates
        .iter()
        .any(|p| bool::from(p.ct_eq(&digest)));
    // A pinned certificate is byte-for-byte the one whose self-signature and anchors were checked
    // at enrollment; only its validity period is re-checked.
    if !pinned && (cert.subject_raw != cert.issuer_raw || !cert.ml_dsa_signed_by(&cert)) {
        return Err(VerifyError::Intermediate("self-signature does not verify"));
    }
    if !cert.valid_at(now.unix_timestamp()) {
        return Err(VerifyError::IntermediateExpired);
    }
    let host: HostIdentity = cert
        .vmseal_extension(oid::EXT_HOST_IDENTITY_STR)
        .map_err(VerifyError::AnchorExtension)?
        .ok_or(VerifyError::Intermediate("no host identity extension"))?;
    let (mut tpm, mut snp) = (None, None);
    if !pinned {
        let tpm_anchor: Option<TpmAnchor> = cert
            .vmseal_extension(oid::EXT_TPM_ANCHOR_STR)
            .map_err(VerifyError::AnchorExtension)?;
        let snp_anchor: Option<SnpAnchor> = cert
            .vmseal_extension(oid::EXT_SNP_ANCHOR_STR)
            .map_err(VerifyError::AnchorExtension)?;
        match tpm_anchor {
            Some(a) => tpm = Some(verify_tpm_anchor(&a, &cert.spki_der, &trust.tpm)?),
            None if trust.require.tpm => return Err(VerifyError::MissingAnchor("TPM")),
            None => {}
        }
        match snp_anchor {
            Some(a) => {
                snp = Some(verify_snp_anchor(
                    &a,
                    &cert.spki_der,
                    &trust.snp,
                    now.unix_timestamp(),
                )?)
            }
            None if trust.require.snp => return Err(VerifyError::MissingAnchor("SEV-SNP")),
            None => {}
        }
    }
    Ok(VerifiedIntermediate {
        host_id: host.host_id,
        digest,
        pinned,
        tpm,
        snp,
        cert,
    })
}

/// Verify the anchors a host made for an enrollment challenge: for every anchor the intermediate
/// carries, a fresh one that binds the intermediate's SPKI with the verifier's `nonce`, verifies
/// under `trust`, and comes from the same hardware (the same AK; the same chip and endorsement
/// key). Returns them verified: they, not the intermediate's older ones, say what the hardware is
/// now.
pub fn verify_fresh_anchors(
    v: &VerifiedIntermediate,
    fresh: &crate::anchor::FreshAnchors,
    nonce: &[u8],
    trust: &TrustConfig,
    now: OffsetDateTime,
) -> Result<(Option<VerifiedQuote>, Option<VerifiedReport>), VerifyError> {
    let fail = |m: &str| VerifyError::Fresh(m.to_owned());
    let same_nonce = |n: &[u8]| bool::from(n.ct_eq(nonce)) && !nonce.is_empty();
    if !same_nonce(&fresh.nonce) {
        return Err(fail("they answer another challenge than the verifier's"));
    }
    let tpm = match (&v.tpm, &fresh.tpm) {
        (None, _) => None,
        (Some(_), None) => {
            return Err(fail(
                "the intermediate has a TPM anchor, but no fresh quote came",
            ));
        }
        (Some(old), Some(a)) => {
            if !same_nonce(&a.nonce) {
                return Err(fail("the quote answers another challenge"));
            }
            let q = verify_tpm_anchor(a, &v.cert.spki_der, &trust.tpm)?;
            if q.ak_name != old.ak_name {
                return Err(fail(
                    "the fresh quote is by another AK than the intermediate's",
                ));
            }
            Some(q)
        }
    };
    let snp = match (&v.snp, &fresh.snp) {
        (None, _) => None,
        (Some(_), None) => {
            return Err(fail(
                "the intermediate has an SNP anchor, but no fresh report came",
            ));
        }
        (Some(old), Some(a)) => {
            if !same_nonce(&a.nonce) {
                return Err(fail("the report answers another challenge"));
            }
            let r = verify_snp_anchor(a, &v.cert.spki_der, &trust.snp, now.unix_timestamp())?;
            if r.report.chip_id != old.report.chip_id || r.product != old.product {
                return Err(fail(
                    "the fresh report comes from another chip than the intermediate's",
                ));
            }
            Some(r)
        }
    };
    Ok((tpm, snp))
}

/// Verify snapshot evidence against `trust` at `now`.
pub fn verify_evidence(
    bytes: &[u8],
    trust: &TrustConfig,
    now: OffsetDateTime,
) -> Result<VerifiedEvidence, VerifyError> {
    verify_evidence_cached(bytes, trust, now, &IntermediateCache::default())
}

/// Intermediate certificates already verified (their self-signature and anchors, the costly
/// part: a TPM quote, an SNP report and its AMD chain), by SHA-256 of their DER. A host's
/// evidence all carries the same intermediate, so an auditor checking a year of it verifies the
/// anchors once. Valid for one trust configuration and one verification time: make a new cache
/// for another.
#[derive(Debug, Default)]
pub struct IntermediateCache(
    std::sync::RwLock<std::collections::HashMap<Digest, VerifiedIntermediate>>,
);

impl IntermediateCache {
    fn get_or_verify(
        &self,
        der: &[u8],
        trust: &TrustConfig,
        now: OffsetDateTime,
    ) -> Result<VerifiedIntermediate, VerifyError> {
        let digest = crate::merkle::HashAlg::Sha256.hash(&[der]);
        if let Some(v) = self
            .0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&digest)
        {
            return Ok(v.clone());
        }
        let v = verify_intermediate(der, trust, now)?;
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(digest, v.clone());
        Ok(v)
    }
}

/// [`verify_evidence`] with intermediates verified once per `cache`: the leaf, its certificate
/// and the evidence signature are checked every time.
pub fn verify_evidence_cached(
    bytes: &[u8],
    trust: &TrustConfig,
    now: OffsetDateTime,
    cache: &IntermediateCache,
) -> Result<VerifiedEvidence, VerifyError> {
    let ev = DecodedEvidence::decode(bytes)?;
    let inter = cache.get_or_verify(&ev.intermediate_der, trust, now)?;
    verify_leaf(&ev.leaf_der, &ev.intermediate_der, now)?;
    let leaf = ParsedCert::from_der(&ev.leaf_der).map_err(VerifyError::IntermediateParse)?;
    if !MlDsa::MlDsa65.verify(&leaf.public_key, &ev.signed_bytes, &ev.signature) {
        return Err(VerifyError::Signature);
    }
    let (claims, claims_profile) = Claims::decode_versioned(&ev.payload)?;
    let id: SnapshotIdentity = leaf
        .vmseal_extension(oid::EXT_SNAPSHOT_IDENTITY_STR)
        .map_err(VerifyError::AnchorExtension)?
        .ok_or(VerifyError::Leaf(LeafError::Malformed(
            webpki::Error::ExtensionValueInvalid,
        )))?;
    if id.vm_id != claims.vm_id || id.seq != claims.seq {
        return Err(VerifyError::IdentityMismatch {
            cert_vm: id.vm_id,
            cert_seq: id.seq,
            claims_vm: claims.vm_id,
            claims_seq: claims.seq,
        });
    }
    Ok(VerifiedEvidence {
        claims_profile,
        claims,
        host_id: inter.host_id,
        intermediate_digest: inter.digest,
        intermediate_spki: inter.cert.spki_der,
        pinned: inter.pinned,
        tpm: inter.tpm,
        snp: inter.snp,
        digest: ev.digest,
    })
}
