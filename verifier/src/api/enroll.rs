//! Host enrollment: a one-use bootstrap credential, the enrollment bundle, and TPM credential
//! activation (TPM 2.0 Part 1 §24) before the verifier pins the host's intermediate and certifies
//! the agent's key.
//!
//! ```text
//! admin  ── POST /v1/enrollment-tokens ──────────────▶ verifier   one-use client cert, OU=enroll
//! agent  ── POST /v1/enrollment-challenges ──────────▶ verifier   a single-use nonce
//! agent  ── fresh quote (same AK) and SNP report binding SPKI ‖ nonce
//! agent  ── POST /v1/enrollments {intermediate, ──────▶ verifier   anchors verified (quote, EK
//!            ek_public, csr, fresh} (token cert)                   chain, SNP report), the fresh
//!                                                                  ones answer the nonce from
//!                                                                  the same hardware; hardware
//!                                                                  policy; EK public = EK
//!                                                                  certificate's key
//!        ◀── challenge {credential_blob, encrypted_secret}         MakeCredential(EK, AK name, s)
//! agent  ── TPM2_ActivateCredential (only the TPM with that EK, and only for that AK, gets s)
//! agent  ── POST /v1/enrollments/{id}/activation {s} ─▶ verifier   token used up, intermediate
//!        ◀── {agent certificate for the CSR's key}                 pinned, in one transaction
//! ```
//!
//! Without credential activation a quote proves only that *some* AK signed it; activation proves
//! the AK is resident in the TPM whose EK the manufacturer certified. An intermediate without a
//! TPM anchor (an SNP-only guest, when the verifier's policy allows it) is enrolled in one step.

use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use subtle::ConstantTimeEq;
use time::{Duration, OffsetDateTime};
use vmseal_client::ErrorCode;
use vmseal_client::{
    Activation, CredentialChallenge, Enrolled, EnrollmentAnswer, EnrollmentRequest,
    EnrollmentToken, NewEnrollmentToken,
};
use vmseal_sealer::merkle::HashAlg;
use vmseal_sealer::tpm::credential::{ek_public_matches_certificate, make_credential};
use vmseal_sealer::verify::{AnchorRequirement, VerifiedIntermediate, verify_intermediate};

use crate::api::auth::{Admin, EnrollRole, role};
use crate::api::error::{ApiError, bad};
use crate::now;
use crate::pki::{AGENT_CERT_LIFETIME, Role};
use crate::state::AppState;
use crate::store::{HostEnrollment, PendingEnrollment, TokenState};

/// Seconds a credential challenge stays open.
pub const CHALLENGE_TTL: i64 = 300;
/// Longest lifetime of an enrollment token (a week).
pub const MAX_TOKEN_MINUTES: u32 = 7 * 24 * 60;

pub(crate) fn refused(code: ErrorCode, message: impl Into<String>) -> ApiError {
    ApiError::Refused {
        code,
        message: message.into(),
    }
}

fn b64(field: &'static str, s: &str) -> Result<Vec<u8>, ApiError> {
    B64.decode(s.trim())
        .map_err(|e| bad(ErrorCode::BadBase64, format!("{field} is not base64: {e}")))
}

/// A certificate request from a body's PEM, checked (its signature, a key a client certificate
/// may carry) before anything is kept or issued.
pub(crate) fn csr_from_pem(pem_text: &str) -> Result<Vec<u8>, ApiError> {
    let der = pem::parse(pem_text.as_bytes())
        .ok()
        .filter(|p| p.tag() == "CERTIFICATE REQUEST")
        .map(|p| p.into_contents())
        .ok_or_else(|| {
            bad(
                ErrorCode::BadCsr,
                "csr_pem is not a PEM CERTIFICATE REQUEST",
            )
        })?;
    crate::pki::check_request(&der).map_err(|e| bad(ErrorCode::BadCsr, e.to_string()))?;
    Ok(der)
}

/// Issue a client certificate for `role` to the request `csr_der`: its PEM (with the issuing
/// chain) and the certificate parsed (serial, expiry).
pub(crate) fn certify(
    st: &AppState,
    csr_der: &[u8],
    role: &Role,
    lifetime: Duration,
) -> Result<(String, vmseal_sealer::x509::ParsedCert), ApiError> {
    let cert_pem = st
        .ca
        .certify_request(csr_der, role, lifetime)
        .map_err(|e| bad(ErrorCode::BadCsr, e.to_string()))?;
    let parsed = pem::parse(cert_pem.as_bytes())
        .ok()
        .and_then(|p| vmseal_sealer::x509::ParsedCert::from_der(p.contents()).ok())
        .ok_or_else(|| ApiError::Internal("the issued certificate does not parse".into()))?;
    Ok((cert_pem, parsed))
}

/// A random 128-bit id, hex.
pub(crate) fn new_id() -> Result<String, ApiError> {
    let mut b = [0u8; 16];
    vmseal_sealer::keys::random_bytes(&mut b).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(hex::encode(b))
}

/// `POST /v1/enrollment-tokens` (admin): a one-use bootstrap client certificate.
#[utoipa::path(post, path = "/v1/enrollment-tokens", tag = "enrollment", request_body = NewEnrollmentToken,
    responses((status = 201, description = "A one-use bootstrap credential", body = EnrollmentToken)))]
pub(crate) async fn create_token(
    who: Admin,
    body: web::Json<NewEnrollmentToken>,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let who = who.0;
    let b = body.into_inner();
    let minutes = b.valid_minutes.unwrap_or(60);
    if !(1..=MAX_TOKEN_MINUTES).contains(&minutes) {
        return Err(bad(
            ErrorCode::BadLifetime,
            format!("valid_minutes must be 1..={MAX_TOKEN_MINUTES}, not {minutes}"),
        ));
    }
    if let Some(h) = &b.host_id {
        vmseal_sealer::state::check_vm_id(h)
            .map_err(|e| bad(ErrorCode::BadHostId, e.to_string()))?;
    }
    if b.replace && b.host_id.is_none() {
        return Err(bad(
            ErrorCode::BadReplace,
            "a replacing token must name the host it replaces (host_id)",
        ));
    }
    if b.restart_chains && b.host_id.is_none() {
        return Err(bad(
            ErrorCode::BadRestartChains,
            "a token that lets a rebuilt host continue its VMs' chains must name the host (host_id)",
        ));
    }
    if let Some(r) = &b.require
        && AnchorRequirement::from_name(r).is_none()
    {
        return Err(bad(
            ErrorCode::BadRequire,
            format!("require must be tpm, snp, both or none, not {r:?}"),
        ));
    }
    let hardware = b
        .hardware
        .as_ref()
        .map(|h| {
            h.check()
                .map_err(|e| bad(ErrorCode::BadHardware, format!("the hardware policy: {e}")))?;
            serde_json::to_string(h).map_err(|e| ApiError::Internal(e.to_string()))
        })
        .transpose()?;
    let token_id = new_id()?;
    let lifetime = Duration::minutes(i64::from(minutes));
    let t = now();
    let expires_at = t + lifetime.whole_seconds();
    let cred = st
        .ca
        .issue_client(&Role::Enroll(token_id.clone()), lifetime)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    st.store
        .create_enrollment_token(&crate::store::NewToken {
            token_id: &token_id,
            created_by: &who,
            host_id: b.host_id.as_deref(),
            require: b.require.as_deref(),
            replace: b.replace,
            restart_chains: b.restart_chains,
            hardware: hardware.as_deref(),
            now: t,
            expires_at,
        })
        .await?;
    st.store
        .audit(
            &who,
            "create_enrollment_token",
            &serde_json::json!({ "token": token_id, "host": b.host_id, "require": b.require, "replace": b.replace, "restart_chains": b.restart_chains, "expires_at": expires_at })
                .to_string(),
            t,
        )
        .await?;
    Ok(HttpResponse::Created().json(EnrollmentToken {
        token_id,
        expires_at,
        cert_pem: cred.cert_pem,
        key_pem: cred.key_pem,
    }))
}

/// What an enrollment token allows.
struct Token {
    id: String,
    /// The only host it enrols, when the admin named one.
    host: Option<String>,
    /// The anchors its host must carry, when not the service's default.
    require: Option<String>,
    /// Whether it hands `host` to another hardware root.
    replace: bool,
    /// Its own hardware policy, replacing the service's.
    hardware: Option<vmseal_client::HardwarePolicy>,
    /// Whether a rebuilt host (a new intermediate) may continue its VMs' chains.
    restart_chains: bool,
}

/// The caller's usable enrollment token.
async fn token(req: &HttpRequest, st: &AppState) -> Result<Token, ApiError> {
    let Role::Enroll(token_id) = role(req)? else {
        return Err(ApiError::Forbidden(
            "enrollment needs an enrollment token's certificate: ask an admin for one \
             (`vmseal-verifier admin enrollment-token`)"
                .into(),
        ));
    };
    match st.store.enrollment_token(&token_id, now()).await? {
        TokenState::Usable {
            host_id,
            require,
            replace,
            hardware,
            restart_chains,
        } => Ok(Token {
            id: token_id,
            host: host_id,
            require,
            replace,
            restart_chains,
            hardware: hardware
                .map(|h| serde_json::from_str(&h))
                .transpose()
                .map_err(|e| {
                    ApiError::Internal(format!("the token's stored hardware policy: {e}"))
                })?,
        }),
        TokenState::Used => Err(refused(
            ErrorCode::TokenUsed,
            "this enrollment token was already used; ask the admin for a new one",
        )),
        TokenState::Expired => Err(refused(
            ErrorCode::TokenExpired,
            "this enrollment token has expired; ask the admin for a new one",
        )),
        TokenState::Unknown => Err(ApiError::Forbidden(
            "this enrollment token is unknown to the verifier".into(),
        )),
    }
}

/// Seconds an enrollment challenge stays open.
pub const ENROLLMENT_NONCE_TTL: i64 = 300;

/// `POST /v1/enrollment-challenges` (enrollment token): a nonce for the host's fresh anchors.
#[utoipa::path(post, path = "/v1/enrollment-challenges", tag = "enrollment",
    responses((status = 201, description = "Single use, for this token", body = vmseal_client::Nonce)))]
pub(crate) async fn challenge(
    _role: EnrollRole,
    req: HttpRequest,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let tok = token(&req, &st).await?;
    let n = st
        .store
        .issue_enrollment_nonce(&tok.id, ENROLLMENT_NONCE_TTL, now())
        .await?;
    Ok(HttpResponse::Created().json(vmseal_client::Nonce::new(&n, ENROLLMENT_NONCE_TTL)))
}

/// `POST /v1/enrollments` (enrollment token): verify the bundle; answer with a credential
/// challenge, or enrol at once when the intermediate has no TPM anchor.
#[utoipa::path(post, path = "/v1/enrollments", tag = "enrollment", request_body = EnrollmentRequest,
    responses((status = 200, description = "A credential challenge", body = EnrollmentAnswer),
        (status = 201, description = "Enrolled at once (no TPM anchor)", body = EnrollmentAnswer),
        (status = 422, description = "enrollment_refused, ek_mismatch, token_used, …", body = vmseal_client::ApiErrorBody)))]
pub(crate) async fn begin(
    _role: EnrollRole,
    req: HttpRequest,
    body: web::Json<EnrollmentRequest>,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let tok = token(&req, &st).await?;
    let (token_id, only_host, require) = (tok.id.clone(), tok.host.clone(), tok.require.clone());
    let b = body.into_inner();
    let der = b64("intermediate", &b.intermediate)?;
    // Check the request before any state is kept: a bad one fails here, not after activation.
    let csr_der = csr_from_pem(&b.csr_pem)?;
    // The token's own anchor requirement (a guest shim's: snp), else the service's default.
    let mut trust = st.settings.enrollment_trust.clone();
    if let Some(r) = require.as_deref().and_then(AnchorRequirement::from_name) {
        trust.require = r;
        trust.tpm.require_ek_chain = r.tpm;
    }
    let v = verify_intermediate(&der, &trust, OffsetDateTime::now_utc())
        .map_err(|e| refused(ErrorCode::EnrollmentRefused, e.to_string()))?;
    if let Some(h) = &only_host
        && *h != v.host_id
    {
        return Err(ApiError::Forbidden(format!(
            "this enrollment token is for host {h:?}, and the intermediate is host {:?}",
            v.host_id
        )));
    }
    // Anchors made earlier can be replayed: the host answers the verifier's challenge with fresh
    // ones from the same hardware, and those say what the hardware is now.
    let (fresh_tpm, fresh_snp) = if v.tpm.is_some() || v.snp.is_some() {
        let raw = b64(
            "fresh",
            b.fresh.as_deref().ok_or_else(|| {
                refused(
                    ErrorCode::ChallengeMissing,
                    "the intermediate has hardware anchors: ask for a challenge \
                     (POST /v1/enrollment-challenges) and send anchors made for its nonce \
                     (`fresh`); vmseal-host and vmseal-shim enroll do",
                )
            })?,
        )?;
        let fresh: vmseal_sealer::anchor::FreshAnchors = vmseal_sealer::anchor::decode(&raw)
            .map_err(|e| bad(ErrorCode::BadFresh, format!("fresh anchors: {e}")))?;
        if !st
            .store
            .take_enrollment_nonce(&fresh.nonce, &token_id, now())
            .await?
        {
            return Err(refused(
                ErrorCode::BadChallenge,
                "the fresh anchors answer a nonce this verifier did not issue to this token, \
                 that expired, or that was used: ask for a new challenge",
            ));
        }
        vmseal_sealer::verify::verify_fresh_anchors(
            &v,
            &fresh,
            &fresh.nonce,
            &trust,
            OffsetDateTime::now_utc(),
        )
        .map_err(|e| refused(ErrorCode::EnrollmentRefused, e.to_string()))?
    } else {
        (None, None)
    };
    // Genuine is not enough: the hardware policy (the token's, else the service's) decides what
    // the anchors must say.
    let checked = crate::hardware::appraise(
        fresh_tpm.as_ref(),
        fresh_snp.as_ref(),
        tok.hardware.as_ref().unwrap_or(&st.settings.hardware),
    )
    .map_err(|r| refused(ErrorCode::HardwarePolicy, r.to_string()))?;
    let checked = serde_json::to_string(&checked).map_err(|e| ApiError::Internal(e.to_string()))?;
    let insecure = v.snp.as_ref().is_some_and(|s| s.insecure);
    let ek_public = match (&v.tpm, b.ek_public.as_deref()) {
        (Some(_), Some(e)) => Some(b64("ek_public", e)?),
        _ => None,
    };
    let root = hardware_root(&v, ek_public.as_deref());
    // A host id stays with its hardware: refuse early (and raise an alert) rather than after
    // a credential challenge; the enrollment's own transaction checks again.
    if let Some(old) = st.store.host_hardware_root(&v.host_id).await?
        && !tok.replace
        && !crate::store::hardware_root_continues(&old, &root)
    {
        let message = format!(
            "host {:?} was enrolled with hardware root {old}; this enrollment presents {root}. \
             Enrol it from the same TPM / SNP platform, or an admin replaces it with a token \
             that names the host and says --replace",
            v.host_id
        );
        host_refusal(
            &st,
            &v.host_id,
            "enrollment_refused",
            "host_identity_changed",
            &message,
        )
        .await;
        return Err(ApiError::IdentityChanged(message));
    }
    let Some(quote) = &v.tpm else {
        let enrolled = finish(
            &st,
            &tok,
            None,
            &v.host_id,
            &der,
            &[],
            insecure,
            &csr_der,
            &root,
            &checked,
        )
        .await?;
        return Ok(HttpResponse::Created().json(EnrollmentAnswer::Enrolled(enrolled)));
    };
    let ek_public = ek_public.map(Ok).unwrap_or_else(|| {
        b64(
            "ek_public",
            b.ek_public.as_deref().ok_or_else(|| {
                bad(
                    ErrorCode::EkPublicMissing,
                    "the intermediate has a TPM anchor: send the EK public area (ek_public) for \
                 credential activation",
                )
            })?,
        )
    })?;
    if !quote.ek_cert.is_empty() {
        ek_public_matches_certificate(&ek_public, &quote.ek_cert)
            .map_err(|e| refused(ErrorCode::EkMismatch, e.to_string()))?;
    }
    let mut secret = zeroize::Zeroizing::new([0u8; 32]);
    vmseal_sealer::keys::random_bytes(secret.as_mut())
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let made = make_credential(&ek_public, &quote.ak_name, secret.as_ref())
        .map_err(|e| refused(ErrorCode::EkUnsupported, e.to_string()))?;
    let pending = PendingEnrollment {
        enrollment_id: new_id()?,
        token_id,
        host_id: v.host_id.clone(),
        intermediate_der: der,
        ak_name: quote.ak_name.clone(),
        insecure_anchor: insecure,
        csr_der,
        secret_sha256: HashAlg::Sha256.hash(&[secret.as_ref()]),
        expires_at: now() + CHALLENGE_TTL,
        hardware_root: root,
        hardware_checked: checked,
    };
    st.store.begin_enrollment(&pending, now()).await?;
    Ok(
        HttpResponse::Ok().json(EnrollmentAnswer::Challenge(CredentialChallenge {
            enrollment_id: pending.enrollment_id,
            credential_blob: B64.encode(&made.credential_blob),
            encrypted_secret: B64.encode(&made.encrypted_secret),
            expires_in: CHALLENGE_TTL,
        })),
    )
}

/// `POST /v1/enrollments/{id}/activation` (the same enrollment token): the secret the TPM
/// recovered. Right: the host is enrolled. Wrong: the challenge ends and nothing is pinned.
#[utoipa::path(post, path = "/v1/enrollments/{id}/activation", tag = "enrollment", params(("id" = String, Path, description = "enrollment_id of the challenge")),
    request_body = Activation,
    responses((status = 201, description = "Enrolled", body = Enrolled), (status = 422, description = "activation_failed", body = vmseal_client::ApiErrorBody)))]
pub(crate) async fn activate(
    _role: EnrollRole,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Json<Activation>,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let tok = token(&req, &st).await?;
    let token_id = tok.id.clone();
    let id = path.into_inner();
    let p = st
        .store
        .pending_enrollment(&id, &token_id, now())
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no open credential challenge {id:?} for this token (answered, expired after \
                 {CHALLENGE_TTL} s, or never made): start the enrollment again"
            ))
        })?;
    let secret = b64("secret", &body.secret)?;
    let got = HashAlg::Sha256.hash(&[&secret]);
    if !bool::from(got.ct_eq(&p.secret_sha256)) {
        st.store.drop_pending_enrollment(&id).await?;
        return Err(refused(
            ErrorCode::ActivationFailed,
            "the secret is not the one wrapped for this EK and AK: the AK is not resident in \
             the TPM of the certified EK. Nothing was enrolled; start again with the right TPM",
        ));
    }
    let enrolled = finish(
        &st,
        &tok,
        Some(&id),
        &p.host_id,
        &p.intermediate_der,
        &p.ak_name,
        p.insecure_anchor,
        &p.csr_der,
        &p.hardware_root,
        &p.hardware_checked,
    )
    .await?;
    Ok(HttpResponse::Created().json(enrolled))
}

/// The hardware root of a verified intermediate: `tpm:` SHA-256 of the EK public area (the EK the
/// credential challenge proves the AK lives beside), and `snp:` the chip id a VCEK certifies, or
/// SHA-256 of the VLEK's key (a masked chip id or a cloud provider's key).
pub(crate) fn hardware_root(v: &VerifiedIntermediate, ek_public: Option<&[u8]>) -> String {
    let mut parts = Vec::new();
    if v.tpm.is_some()
        && let Some(ek) = ek_public
    {
        parts.push(format!("tpm:{}", hex::encode(HashAlg::Sha256.hash(&[ek]))));
    }
    if let Some(s) = &v.snp {
        let id = if s.chip_id_checked && s.report.chip_id.iter().any(|b| *b != 0) {
            hex::encode(HashAlg::Sha256.hash(&[&s.report.chip_id]))
        } else {
            let vek = v
                .cert
                .vmseal_extension::<vmseal_sealer::anchor::SnpAnchor>(
                    vmseal_sealer::oid::EXT_SNP_ANCHOR_STR,
                )
                .ok()
                .flatten()
                .and_then(|a| vmseal_sealer::x509::ParsedCert::from_der(&a.vek).ok())
                .map(|c| c.spki_der)
                .unwrap_or_default();
            hex::encode(HashAlg::Sha256.hash(&[&vek]))
        };
        parts.push(format!("snp:{id}"));
    }
    parts.join(";")
}

/// A refused step of a host's identity — an enrollment that would take over its id from other
/// hardware, a certificate renewal that does not prove its hardware — is audited and alerted on
/// every VM of that host (alerts are per VM) under `code`.
pub(crate) async fn host_refusal(
    st: &AppState,
    host_id: &str,
    action: &str,
    code: &str,
    message: &str,
) {
    let recorded = match crate::alerts::alert_host(st, host_id, code, message).await {
        // A host without VMs has nobody to alert: the attempt is audited.
        Ok(0) => {
            let detail = serde_json::json!({ "host": host_id, "code": code, "message": message });
            st.store
                .audit("verifier", action, &detail.to_string(), now())
                .await
                .map(drop)
        }
        Ok(_) => Ok(()),
        Err(e) => Err(e),
    };
    if let Err(e) = recorded {
        tracing::error!("recording a refused step of host {host_id:?} ({code}): {e}");
    }
    tracing::warn!(host = host_id, code, "refused: {message}");
}

#[allow(clippy::too_many_arguments)]
async fn finish(
    st: &AppState,
    tok: &Token,
    enrollment_id: Option<&str>,
    host_id: &str,
    intermediate_der: &[u8],
    ak_name: &[u8],
    insecure: bool,
    csr_der: &[u8],
    hardware_root: &str,
    hardware_checked: &str,
) -> Result<Enrolled, ApiError> {
    let token_id = tok.id.as_str();
    let token_policy = tok
        .hardware
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    // Certify first: if that failed after the token was used, the host would be stuck.
    let (agent_cert_pem, issued) = certify(
        st,
        csr_der,
        &Role::Agent(host_id.to_owned()),
        AGENT_CERT_LIFETIME,
    )?;
    let (agent_serial, agent_not_after) = (issued.serial_hex, issued.not_after);
    let t = now();
    let (sha, continued) = st
        .store
        .complete_enrollment(
            token_id,
            enrollment_id,
            &HostEnrollment {
                host_id,
                intermediate_der,
                ak_name,
                insecure_anchor: insecure,
                hardware_root,
                agent_serial: &agent_serial,
                replace: tok.replace,
                restart_chains: tok.restart_chains,
                hardware_checked,
                hardware_policy: token_policy.as_deref(),
            },
            t,
        )
        .await?;
    st.revoked.refresh(&st.store).await;
    st.store
        .set_agent_not_after(host_id, agent_not_after)
        .await?;
    let activated = enrollment_id.is_some();
    st.store
        .audit(
            &format!("token:{token_id}"),
            "enroll_host",
            &serde_json::json!({
                "host": host_id,
                "intermediate": hex::encode(sha),
                "insecure": insecure,
                "ak_activated": activated,
                "hardware_root": hardware_root,
                "hardware_checked": serde_json::from_str::<serde_json::Value>(hardware_checked).ok(),
                "replace": tok.replace,
                "agent_serial": agent_serial,
            })
            .to_string(),
            t,
        )
        .await?;
    // Each chain the rebuilt host continues under its new key is its own audited step.
    for (vm, next_seq) in &continued {
        st.store
            .audit(
                &format!("token:{token_id}"),
                "restart_chain",
                &serde_json::json!({
                    "vm": vm,
                    "host": host_id,
                    "next_seq": next_seq,
                    "intermediate": hex::encode(sha),
                    "reason": "the host re-enrolled with a new intermediate key",
                })
                .to_string(),
                t,
            )
            .await?;
        tracing::info!(
            vm,
            host = host_id,
            next_seq,
            "chain continues under the host's new key"
        );
    }
    tracing::info!(host = host_id, activated, insecure, "host enrolled");
    Ok(Enrolled {
        host_id: host_id.to_owned(),
        intermediate_sha256: hex::encode(sha),
        insecure,
        activated,
        agent_cert_pem,
        hardware_checked: serde_json::from_str(hardware_checked).unwrap_or_default(),
    })
}
