//! Signed attestation results: an EAR (draft-ietf-rats-ear-04, profile
//! `tag:ietf.org,2026:rats/ear#04`, as Veraison's `ear` crate 0.6 reads it) as a JWT signed with
//! ES256 by the verifier's EAR key, whose certificate (issued by the verifier CA) travels in the
//! `x5c` header. The older Veraison profile (`tag:github.com,2023:veraison/ear`, dotted names) is
//! signed instead when configured (`ear_profile = "veraison-2023"`).
//!
//! ```json
//! { "eat_profile": "tag:ietf.org,2026:rats/ear#04",
//!   "iat": 1764381600,
//!   "ear_verifier_id": { "developer": "vmseal", "build": "vmseal-verifier 0.1.0" },
//!   "eat_nonce": "<the evidence's nonce, base64url>",
//!   "submods": { "<vm id>": {
//!       "ear_status": "contraindicated",
//!       "ear_trustworthiness_vector": { "instance-identity": 2, "executables": 96,
//!                                        "runtime-opaque": 2, "hardware": 32 },
//!       "ear_appraisal_policy_ids": ["vmseal:baseline:1"],
//!       "vmseal.score": 0, "vmseal.seq": 2, "vmseal.evidence": "<sha-256, hex>",
//!       "vmseal.alert": true, "vmseal.changes": [ { "region": "guest-code", … } ],
//!       "vmseal.kernel": { "findings": [ { "kind": "hidden_process", … } ], … } } } }
//! ```
//!
//! A relying party checks it with `vmseal_client::verify_ear` and the verifier's `ca.pem` only.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use time::{Duration, OffsetDateTime};

use crate::appraise::Appraisal;
use crate::pki::{Ca, PkiError};

/// The EAR profile vmseal emits by default.
pub const EAR_PROFILE: &str = vmseal_client::EAR_PROFILE;

/// Signs attestation results (and alert deliveries and audit checkpoints) with the key in the
/// state's `ear.key`, whose certificate is renewed before it expires.
pub struct EarSigner {
    current: std::sync::RwLock<Signing>,
    profile: vmseal_client::EarProfile,
}

/// The key and certificate chain in use.
struct Signing {
    key: jsonwebtoken::EncodingKey,
    /// The same key, parsed once, for COSE signatures (AWS-LC).
    cose_key: aws_lc_rs::signature::EcdsaKeyPair,
    x5c: Vec<String>,
    /// The same chain, DER, for COSE's `x5chain`.
    x5chain: Vec<Vec<u8>>,
    not_after: i64,
}

/// The EAR certificate is renewed when it has less than this left (it lives 825 days).
pub const EAR_RENEW_BEFORE: Duration = Duration::days(60);

impl std::fmt::Debug for EarSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EarSigner").finish_non_exhaustive()
    }
}

fn pki(e: impl std::fmt::Display) -> PkiError {
    PkiError::Cert(e.to_string())
}

/// A new key and certificate for signing results, written to `dir`.
fn issue(dir: &Path, ca: &Ca, now: OffsetDateTime) -> Result<Signing, PkiError> {
    let (kp, cp) = (dir.join("ear.key"), dir.join("ear.pem"));
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(pki)?;
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "vmseal verifier");
    dn.push(DnType::OrganizationalUnitName, "attestation-results");
    dn.push(DnType::CommonName, "vmseal EAR signer");
    p.distinguished_name = dn;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::Other(
        vmseal_client::EAR_SIGNING_EKU.to_vec(),
    )];
    p.not_before = now - Duration::minutes(5);
    p.not_after = now + Duration::days(825);
    let cert = ca.sign(p, &key)?;
    // Key first: a certificate on disk always has its key.
    vmseal_sealer::state::write_atomic(&kp, key.serialize_pem().as_bytes()).map_err(pki)?;
    vmseal_sealer::state::write_atomic(&cp, cert.as_bytes()).map_err(pki)?;
    load(dir)
}

/// The key and chain in `dir`.
fn load(dir: &Path) -> Result<Signing, PkiError> {
    let (kp, cp) = (dir.join("ear.key"), dir.join("ear.pem"));
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| PkiError::Io {
            path: p.to_owned(),
            source,
        })
    };
    let key_pem = zeroize::Zeroizing::new(read(&kp)?);
    let key = jsonwebtoken::EncodingKey::from_ec_pem(&key_pem).map_err(pki)?;
    let pkcs8 =
        zeroize::Zeroizing::new(pem::parse(key_pem.as_slice()).map_err(pki)?.into_contents());
    let cose_key = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &pkcs8,
    )
    .map_err(|e| pki(format!("{}: {e}", kp.display())))?;
    // The signer's certificate and, when an issuing CA made it, that CA's: the x5c chain.
    let certs = pem::parse_many(read(&cp)?).map_err(pki)?;
    let not_after = certs
        .first()
        .and_then(|c| vmseal_sealer::x509::ParsedCert::from_der(c.contents()).ok())
        .map(|c| c.not_after)
        .ok_or_else(|| pki(format!("{}: no certificate", cp.display())))?;
    Ok(Signing {
        key,
        cose_key,
        x5c: certs
            .iter()
            .map(|c| STANDARD.encode(c.contents()))
            .collect(),
        x5chain: certs.iter().map(|c| c.contents().to_vec()).collect(),
        not_after,
    })
}

/// The signing key in `dir`, made on first use and renewed when it is due.
fn load_or_issue(dir: &Path, ca: &Ca, now: OffsetDateTime) -> Result<Signing, PkiError> {
    if !dir.join("ear.key").exists() || !dir.join("ear.pem").exists() {
        return issue(dir, ca, now);
    }
    let s = load(dir)?;
    if s.not_after - now.unix_timestamp() <= EAR_RENEW_BEFORE.whole_seconds() {
        tracing::info!("renewing the EAR signing certificate (it expires within 60 days)");
        return issue(dir, ca, now);
    }
    Ok(s)
}

impl EarSigner {
    /// The signer of the verifier state in `dir`: `ear.key` and `ear.pem`, made (and the
    /// certificate issued by the CA) on first use.
    pub fn load_or_create(dir: &Path, ca: &Ca) -> Result<Self, PkiError> {
        let signing = load_or_issue(dir, ca, OffsetDateTime::now_utc())?;
        Ok(Self {
            current: std::sync::RwLock::new(signing),
            profile: vmseal_client::EarProfile::default(),
        })
    }

    /// Sign results in `profile` (the default is the current draft's).
    pub fn with_profile(mut self, profile: vmseal_client::EarProfile) -> Self {
        self.profile = profile;
        self
    }

    /// Renew the certificate (a new key, issued by `ca`, written to `dir`) when less than
    /// [`EAR_RENEW_BEFORE`] is left at `now`; returns its new expiry when it did. Results signed
    /// before stay verifiable: each carries its own certificate.
    pub fn renew_if_due(
        &self,
        dir: &Path,
        ca: &Ca,
        now: OffsetDateTime,
    ) -> Result<Option<i64>, PkiError> {
        if self.not_after() - now.unix_timestamp() > EAR_RENEW_BEFORE.whole_seconds() {
            return Ok(None);
        }
        let s = issue(dir, ca, now)?;
        let t = s.not_after;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = s;
        Ok(Some(t))
    }

    /// When the certificate in use expires (Unix seconds).
    pub fn not_after(&self) -> i64 {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .not_after
    }

    fn encode(
        &self,
        typ: &str,
        claims: &serde_json::Value,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let s = self.current.read().unwrap_or_else(|p| p.into_inner());
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.typ = Some(typ.into());
        header.x5c = Some(s.x5c.clone());
        jsonwebtoken::encode(&header, claims, &s.key)
    }

    /// The EAR of an appraisal, answering `nonce` when the evidence carried one.
    pub fn sign(
        &self,
        a: &Appraisal,
        nonce: Option<&[u8]>,
        iat: i64,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let legacy = self.profile == vmseal_client::EarProfile::Veraison2023;
        let name = |draft: &'static str, old: &'static str| if legacy { old } else { draft };
        let policy = match a.baseline_version {
            Some(v) => format!("vmseal:baseline:{v}"),
            None => "vmseal:no-baseline".to_owned(),
        };
        let mut submod = serde_json::json!({
            name("ear_status", "ear.status"): a.tier,
            name("ear_trustworthiness_vector", "ear.trustworthiness-vector"): {
                "instance-identity": a.trust_vector.instance_identity,
                "executables": a.trust_vector.executables,
                "runtime-opaque": a.trust_vector.runtime_opaque,
                "hardware": a.trust_vector.hardware,
            },
            "vmseal.score": a.score,
            "vmseal.seq": a.seq,
            "vmseal.evidence": a.evidence,
            "vmseal.alert": a.alert,
            "vmseal.changes": a.changes,
            "vmseal.hardware_checked": a.hardware_checked,
        });
        if legacy {
            submod["ear.appraisal-policy-id"] = policy.into();
        } else {
            submod["ear_appraisal_policy_ids"] = serde_json::json!([policy]);
        }
        if !a.unbaselined.is_empty() {
            submod["vmseal.unbaselined"] = serde_json::json!(a.unbaselined);
        }
        if let Some(k) = &a.kernel {
            submod["vmseal.kernel"] = serde_json::json!(k);
        }
        let mut claims = serde_json::json!({
            "eat_profile": self.profile.tag(),
            "iat": iat,
            name("ear_verifier_id", "ear.verifier-id"): {
                "developer": "vmseal",
                "build": concat!("vmseal-verifier ", env!("CARGO_PKG_VERSION")),
            },
            "submods": { a.vm_id.clone(): submod },
        });
        if let Some(n) = nonce {
            claims["eat_nonce"] = URL_SAFE_NO_PAD.encode(n).into();
        }
        self.encode("JWT", &claims)
    }

    /// The same result as [`EarSigner::sign`] in the draft's other serialisation: a COSE_Sign1
    /// (ES256, the certificate chain in `x5chain`) over CBOR claims under their registered keys
    /// (`eat_profile` 265, `iat` 6, `ear_verifier_id` 1004, `submods` 266, `eat_nonce` 10; in each
    /// submod `ear_status` 1000, `ear_trustworthiness_vector` 1001, `ear_appraisal_policy_ids`
    /// 1003), vmseal's own claims under their text names.
    pub fn sign_cose(
        &self,
        a: &Appraisal,
        nonce: Option<&[u8]>,
        iat: i64,
    ) -> Result<Vec<u8>, String> {
        use ciborium::value::Value as C;
        let int = |i: i64| C::Integer(i.into());
        let tier = |t: crate::appraise::Tier| int(i64::from(t.ar4si()));
        let json_to_cbor = |v: &serde_json::Value| -> Result<C, String> {
            let mut b = Vec::new();
            ciborium::into_writer(v, &mut b).map_err(|e| e.to_string())?;
            ciborium::from_reader(b.as_slice()).map_err(|e| e.to_string())
        };
        let policy = match a.baseline_version {
            Some(v) => format!("vmseal:baseline:{v}"),
            None => "vmseal:no-baseline".to_owned(),
        };
        let mut submod = vec![
            (int(1000), tier(a.tier)),
            (
                int(1001),
                C::Map(vec![
                    (int(0), int(a.trust_vector.instance_identity.into())),
                    (int(2), int(a.trust_vector.executables.into())),
                    (int(4), int(a.trust_vector.hardware.into())),
                    (int(5), int(a.trust_vector.runtime_opaque.into())),
                ]),
            ),
            (int(1003), C::Array(vec![C::Text(policy)])),
            (C::Text("vmseal.score".into()), int(a.score.into())),
            (C::Text("vmseal.seq".into()), C::Integer(a.seq.into())),
            (
                C::Text("vmseal.evidence".into()),
                C::Text(a.evidence.clone()),
            ),
            (C::Text("vmseal.alert".into()), C::Bool(a.alert)),
            (
                C::Text("vmseal.changes".into()),
                json_to_cbor(&serde_json::to_value(&a.changes).map_err(|e| e.to_string())?)?,
            ),
        ];
        if !a.unbaselined.is_empty() {
            submod.push((
                C::Text("vmseal.unbaselined".into()),
                C::Array(a.unbaselined.iter().cloned().map(C::Text).collect()),
            ));
        }
        if let Some(k) = &a.kernel {
            submod.push((
                C::Text("vmseal.kernel".into()),
                json_to_cbor(&serde_json::to_value(k).map_err(|e| e.to_string())?)?,
            ));
        }
        let mut claims = vec![
            (int(265), C::Text(EAR_PROFILE.into())),
            (int(6), int(iat)),
            (
                int(1004),
                C::Map(vec![
                    (int(0), C::Text("vmseal".into())),
                    (
                        int(1),
                        C::Text(concat!("vmseal-verifier ", env!("CARGO_PKG_VERSION")).into()),
                    ),
                ]),
            ),
            (
                int(266),
                C::Map(vec![(C::Text(a.vm_id.clone()), C::Map(submod))]),
            ),
        ];
        if let Some(n) = nonce {
            claims.push((int(10), C::Bytes(n.to_vec())));
        }
        let mut payload = Vec::new();
        ciborium::into_writer(&C::Map(claims), &mut payload).map_err(|e| e.to_string())?;
        let s = self.current.read().unwrap_or_else(|p| p.into_inner());
        let chain: Vec<C> = s.x5chain.iter().cloned().map(C::Bytes).collect();
        let protected = coset::HeaderBuilder::new()
            .algorithm(coset::iana::Algorithm::ES256)
            .value(33, C::Array(chain))
            .build();
        let key = &s.cose_key;
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let mut failed = None;
        let sign1 = coset::CoseSign1Builder::new()
            .protected(protected)
            .payload(payload)
            .create_signature(&[], |tbs| match key.sign(&rng, tbs) {
                Ok(sig) => sig.as_ref().to_vec(),
                Err(e) => {
                    failed = Some(e.to_string());
                    Vec::new()
                }
            })
            .build();
        if let Some(e) = failed {
            return Err(format!("signing the COSE EAR: {e}"));
        }
        coset::TaggedCborSerializable::to_tagged_vec(sign1).map_err(|e| e.to_string())
    }

    /// A signed checkpoint of the audit chain: entry `audit_id` has hash `hash` (see
    /// `vmseal_client::audit::verify_checkpoint`).
    pub fn sign_checkpoint(
        &self,
        audit_id: i64,
        hash: &[u8; 32],
        iat: i64,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let claims = serde_json::json!({
            "iss": "vmseal-verifier",
            "iat": iat,
            "vmseal.audit_id": audit_id,
            "vmseal.audit_hash": hex::encode(hash),
        });
        self.encode(vmseal_client::audit::CHECKPOINT_JWT_TYP, &claims)
    }

    /// A webhook delivery of `alert` to `webhook` (see `vmseal_client::verify_alert`), carrying
    /// the newest signed audit checkpoint, so copies of it live at every receiver.
    pub fn sign_alert(
        &self,
        alert: &vmseal_client::Alert,
        webhook: &str,
        attempt: i64,
        iat: i64,
        checkpoint: Option<&str>,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let claims = serde_json::json!({
            "iss": "vmseal-verifier",
            "iat": iat,
            "jti": format!("{}/{webhook}", alert.alert_id),
            "aud": webhook,
            "vmseal.attempt": attempt,
            "vmseal.alert": alert,
            "vmseal.audit_checkpoint": checkpoint,
        });
        self.encode(vmseal_client::ALERT_JWT_TYP, &claims)
    }
}

#[cfg(test)]
mod renewal_tests {
    use super::*;

    #[test]
    fn the_older_profile_is_signed_on_request_and_read_in_the_current_names() {
        let d = tempfile::tempdir().unwrap();
        let ca = Ca::init(d.path(), &[]).unwrap();
        let a = crate::alerts::tests::appraisal(0, crate::appraise::Tier::Contraindicated);
        let now = OffsetDateTime::now_utc();
        let ca_pem = std::fs::read(d.path().join("ca.pem")).unwrap();
        for profile in [
            vmseal_client::EarProfile::Draft04,
            vmseal_client::EarProfile::Veraison2023,
        ] {
            let s = EarSigner::load_or_create(d.path(), &ca)
                .unwrap()
                .with_profile(profile);
            let token = s.sign(&a, Some(b"n0nce"), now.unix_timestamp()).unwrap();
            let raw: serde_json::Value = serde_json::from_slice(
                &URL_SAFE_NO_PAD
                    .decode(token.split('.').nth(1).unwrap())
                    .unwrap(),
            )
            .unwrap();
            assert_eq!(raw["eat_profile"], profile.tag());
            let legacy = profile == vmseal_client::EarProfile::Veraison2023;
            assert_eq!(
                raw["submods"]["vm1"]["ear.status"].is_string(),
                legacy,
                "{raw}"
            );
            assert_eq!(
                raw["submods"]["vm1"]["ear_status"].is_string(),
                !legacy,
                "{raw}"
            );
            // The client reads either, in the current names.
            let c = vmseal_client::verify_ear(&token, &ca_pem, now).unwrap();
            let sub = &c["submods"]["vm1"];
            assert_eq!(sub["ear_status"], "contraindicated", "{c}");
            assert_eq!(
                sub["ear_appraisal_policy_ids"],
                serde_json::json!(["vmseal:baseline:1"])
            );
            assert_eq!(c["ear_verifier_id"]["developer"], "vmseal");
        }
    }

    #[test]
    fn the_ear_certificate_is_renewed_before_it_expires() {
        let d = tempfile::tempdir().unwrap();
        let ca = Ca::init(d.path(), &[]).unwrap();
        let now = OffsetDateTime::now_utc();
        let s = EarSigner::load_or_create(d.path(), &ca).unwrap();
        let first = s.not_after();
        assert!(first - now.unix_timestamp() > 800 * 86_400);
        // Not yet due: nothing changes.
        assert_eq!(s.renew_if_due(d.path(), &ca, now).unwrap(), None);
        // 770 days on, 55 are left: renewed, in use at once and on disk for the next start.
        let later = now + Duration::days(770);
        let renewed = s.renew_if_due(d.path(), &ca, later).unwrap().unwrap();
        assert!(renewed > first);
        assert_eq!(s.not_after(), renewed);
        assert_eq!(
            EarSigner::load_or_create(d.path(), &ca)
                .unwrap()
                .not_after(),
            renewed
        );
    }
}
