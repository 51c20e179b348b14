//! Agent certificate renewal: an agent renews its certificate by proving again what enrolled it —
//! fresh anchors over a verifier nonce, a TPM quote by the same AK (and, with an SNP anchor, a
//! report of the same chip), checked against the host's pinned intermediate and its hardware
//! policy — not by the certificate alone, which may have been stolen. The old certificate is
//! revoked with the renewal.

use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine as _;
use time::OffsetDateTime;
use vmseal_client::ErrorCode;
use vmseal_client::{AgentRenewal, PersonRenewal, Renewed};
use vmseal_sealer::verify::{AnchorRequirement, verify_intermediate};

use crate::api::auth::role;
use crate::api::enroll::{certify, csr_from_pem, refused};
use crate::api::error::{ApiError, bad};
use crate::now;
use crate::pki::{AGENT_CERT_LIFETIME, Role};
use crate::state::AppState;

/// Seconds a renewal challenge stays open.
pub const RENEWAL_NONCE_TTL: i64 = 300;

/// The caller must be the agent of `host`.
fn agent_of(req: &HttpRequest, host: &str) -> Result<(), ApiError> {
    match role(req)? {
        Role::Agent(h) if h == host => Ok(()),
        _ => Err(ApiError::Forbidden(format!(
            "only host {host:?}'s agent renews its certificate (with the certificate it has)"
        ))),
    }
}

/// The nonces of renewal challenges are kept with the enrollment challenges', under this key.
fn nonce_owner(host: &str) -> String {
    format!("agent:{host}")
}

/// `POST /v1/hosts/{host}/renewal-challenges` (the host's agent): a single-use nonce the agent's
/// fresh anchors must answer.
#[utoipa::path(post, path = "/v1/hosts/{host}/renewal-challenges", tag = "enrollment", operation_id = "renewal_challenge", params(("host" = String, Path, description = "Host id")),
    responses((status = 201, description = "Single use", body = vmseal_client::Nonce)))]
pub(crate) async fn challenge(
    req: HttpRequest,
    path: web::Path<String>,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let host = path.into_inner();
    agent_of(&req, &host)?;
    let n = st
        .store
        .issue_enrollment_nonce(&nonce_owner(&host), RENEWAL_NONCE_TTL, now())
        .await?;
    Ok(HttpResponse::Created().json(vmseal_client::Nonce::new(&n, RENEWAL_NONCE_TTL)))
}

/// `POST /v1/hosts/{host}/renewals` (the host's agent): fresh anchors over the challenge's nonce
/// and a request for the new key → a new agent certificate; the old one is revoked.
#[utoipa::path(post, path = "/v1/hosts/{host}/renewals", tag = "enrollment", operation_id = "renew_agent", params(("host" = String, Path, description = "Host id")),
    request_body = AgentRenewal,
    responses((status = 201, description = "The new certificate", body = Renewed),
        (status = 422, description = "renewal_refused, bad_challenge, hardware_policy", body = vmseal_client::ApiErrorBody)))]
pub(crate) async fn renew(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Json<AgentRenewal>,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let host = path.into_inner();
    agent_of(&req, &host)?;
    // The host's own agent certificate asked and could not prove the hardware (a stolen
    // certificate would): audited and alerted on the host's VMs.
    let r = renew_proven(&host, body.into_inner(), &st).await;
    if let Err(ApiError::Refused { code, message }) = &r {
        crate::api::enroll::host_refusal(&st, &host, "renewal_refused", code.as_str(), message)
            .await;
    }
    r
}

/// The renewal once the caller is known to hold the host's agent certificate.
async fn renew_proven(
    host: &str,
    b: AgentRenewal,
    st: &AppState,
) -> Result<HttpResponse, ApiError> {
    let host = host.to_owned();
    let csr_der = csr_from_pem(&b.csr_pem)?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b.fresh.trim())
        .map_err(|e| bad(ErrorCode::BadFresh, format!("fresh is not base64: {e}")))?;
    let fresh: vmseal_sealer::anchor::FreshAnchors = vmseal_sealer::anchor::decode(&raw)
        .map_err(|e| bad(ErrorCode::BadFresh, format!("fresh anchors: {e}")))?;
    let (der, policy, serial) =
        st.store.host_for_renewal(&host).await?.ok_or_else(|| {
            ApiError::NotFound(format!("enrolled host {host:?} (or it is disabled)"))
        })?;
    // The pinned intermediate's anchors again, as at enrollment (whatever they are: the
    // requirement was decided then).
    let mut trust = st.settings.enrollment_trust.clone();
    trust.require = AnchorRequirement {
        tpm: false,
        snp: false,
    };
    let v = verify_intermediate(&der, &trust, OffsetDateTime::now_utc()).map_err(|e| {
        refused(
            ErrorCode::RenewalRefused,
            format!("the host's enrolled intermediate: {e}"),
        )
    })?;
    if v.tpm.is_none() && v.snp.is_none() {
        return Err(refused(
            ErrorCode::RenewalRefused,
            "the host enrolled without a hardware anchor, so nothing but its certificate could \
             vouch for a renewal: enrol it again with a token from an admin",
        ));
    }
    if !st
        .store
        .take_enrollment_nonce(&fresh.nonce, &nonce_owner(&host), now())
        .await?
    {
        return Err(refused(
            ErrorCode::BadChallenge,
            "the fresh anchors answer a nonce this verifier did not issue to this host's agent, \
             that expired, or that was used: ask for a new renewal challenge",
        ));
    }
    let (tpm, snp) = vmseal_sealer::verify::verify_fresh_anchors(
        &v,
        &fresh,
        &fresh.nonce,
        &trust,
        OffsetDateTime::now_utc(),
    )
    .map_err(|e| refused(ErrorCode::RenewalRefused, e.to_string()))?;
    let hardware: Option<vmseal_client::HardwarePolicy> = policy
        .map(|p| serde_json::from_str(&p))
        .transpose()
        .map_err(|e| ApiError::Internal(format!("the host's stored hardware policy: {e}")))?;
    crate::hardware::appraise(
        tpm.as_ref(),
        snp.as_ref(),
        hardware.as_ref().unwrap_or(&st.settings.hardware),
    )
    .map_err(|r| refused(ErrorCode::HardwarePolicy, r.to_string()))?;
    let (cert_pem, issued) = certify(
        st,
        &csr_der,
        &Role::Agent(host.clone()),
        AGENT_CERT_LIFETIME,
    )?;
    let t = now();
    let revoked = st
        .store
        .renew_agent(
            &host,
            serial.as_deref(),
            &issued.serial_hex,
            issued.not_after,
            t,
        )
        .await?;
    st.revoked.refresh(&st.store).await;
    st.store
        .audit(
            &format!("agent:{host}"),
            "renew_agent_cert",
            &serde_json::json!({
                "host": host,
                "revoked_serial": revoked,
                "agent_serial": issued.serial_hex,
                "not_after": issued.not_after,
                "anchors": { "tpm": tpm.is_some(), "snp": snp.is_some() },
            })
            .to_string(),
            t,
        )
        .await?;
    tracing::info!(
        host,
        not_after = issued.not_after,
        "agent certificate renewed"
    );
    Ok(HttpResponse::Created().json(Renewed {
        agent_cert_pem: cert_pem,
        not_after: issued.not_after,
    }))
}

/// A person's certificate lives this long after a renewal.
pub const PERSON_CERT_LIFETIME: time::Duration = time::Duration::days(397);

/// `POST /v1/certificates/renewals` (an admin or a viewer, with the certificate to renew): a new
/// certificate with the same role and name for the request's key; the old one is revoked at once.
#[utoipa::path(post, path = "/v1/certificates/renewals", tag = "operations",
    request_body = PersonRenewal,
    responses((status = 201, description = "The new certificate", body = Renewed)))]
pub(crate) async fn renew_person(
    req: HttpRequest,
    body: web::Json<PersonRenewal>,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let r = role(&req)?;
    let who = match &r {
        Role::Admin(n) | Role::Viewer(n) => n.clone(),
        _ => {
            return Err(ApiError::Forbidden(
                "admins and viewers renew their certificates here; agents renew theirs by proving \
                 their TPM (`vmseal-host renew`)"
                    .into(),
            ));
        }
    };
    let old = req
        .conn_data::<crate::api::auth::PeerCert>()
        .map(|c| c.1.clone())
        .ok_or_else(|| ApiError::Forbidden("no client certificate on this connection".into()))?;
    let csr_der = csr_from_pem(&body.csr_pem)?;
    let (cert_pem, issued) = certify(&st, &csr_der, &r, PERSON_CERT_LIFETIME)?;
    st.store
        .revoke_person_cert(&who, &old, &issued.serial_hex, now())
        .await?;
    st.revoked.refresh(&st.store).await;
    Ok(HttpResponse::Created().json(Renewed {
        agent_cert_pem: cert_pem,
        not_after: issued.not_after,
    }))
}
