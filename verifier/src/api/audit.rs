//! The audit log: signed checkpoints, the export, and the server-side check of the chain.

use actix_web::{HttpRequest, HttpResponse, web};
use time::OffsetDateTime;
use vmseal_client::ErrorCode;

use crate::api::auth::{Admin, reader};
use crate::api::error::{ApiError, bad};
use crate::api::evidence::{AppraisalsQuery, MAX_LISTED_APPRAISALS};
use crate::state::AppState;
use crate::state::checkpoint_now;
use crate::store::StoreError;

/// `POST /v1/audit/checkpoints` (admin): sign a checkpoint of the audit chain's head now (or
/// return the newest, when the chain has not moved since). Keep it outside the verifier:
/// `vmseal-certs verify-audit` checks an export against it.
#[utoipa::path(post, path = "/v1/audit/checkpoints", tag = "operations",
    responses((status = 200, description = "The checkpoint signed now", body = vmseal_client::SignedCheckpoint)))]
pub(crate) async fn create_checkpoint(
    _who: Admin,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (_, token) = checkpoint_now(&st).await?;
    checkpoint_json(&st, &token).map(|j| HttpResponse::Ok().json(j))
}

pub(crate) fn checkpoint_json(
    st: &AppState,
    token: &str,
) -> Result<vmseal_client::SignedCheckpoint, ApiError> {
    let c = vmseal_client::audit::verify_checkpoint(
        token,
        st.ca.cert_pem.as_bytes(),
        OffsetDateTime::now_utc(),
    )
    .map_err(|e| ApiError::Internal(format!("a stored audit checkpoint does not verify: {e}")))?;
    Ok(vmseal_client::SignedCheckpoint {
        audit_id: c.audit_id,
        audit_hash: c.audit_hash,
        iat: c.iat,
        token: token.to_owned(),
    })
}

/// `GET /v1/audit/checkpoints?limit=N` (admin, viewer): the newest signed checkpoints.
#[utoipa::path(get, path = "/v1/audit/checkpoints", tag = "operations",
    params(("limit" = Option<u32>, Query, description = "1..=500, default 20")),
    responses((status = 200, description = "Newest first", body = vmseal_client::CheckpointList)))]
pub(crate) async fn list_checkpoints(
    req: HttpRequest,
    query: web::Query<AppraisalsQuery>,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    reader(&req)?;
    let limit = query.limit.unwrap_or(20);
    if !(1..=MAX_LISTED_APPRAISALS).contains(&limit) {
        return Err(bad(
            ErrorCode::BadQuery,
            format!("limit must be 1..={MAX_LISTED_APPRAISALS}, not {limit}"),
        ));
    }
    let checkpoints = st
        .store
        .checkpoints(limit)
        .await?
        .iter()
        .map(|(_, t)| checkpoint_json(&st, t))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(HttpResponse::Ok().json(vmseal_client::CheckpointList { checkpoints }))
}

/// `GET /v1/audit/export` (admin, viewer): the whole audit log, oldest first, for an offline
/// check against checkpoints (`vmseal-certs verify-audit`).
#[utoipa::path(get, path = "/v1/audit/export", tag = "operations",
    responses((status = 200, description = "Oldest first", body = vmseal_client::AuditExport)))]
pub(crate) async fn audit_export(
    req: HttpRequest,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    reader(&req)?;
    let entries = st.store.audit_export().await?;
    Ok(HttpResponse::Ok().json(vmseal_client::AuditExport { entries }))
}

/// `GET /v1/audit/verify` (admin or viewer): re-hash the whole audit chain.
#[utoipa::path(get, path = "/v1/audit/verify", tag = "operations",
    responses((status = 200, description = "Intact (`ok`, `entries`), or where the chain breaks (`error`)", body = vmseal_client::AuditVerified)))]
pub(crate) async fn verify_audit(
    req: HttpRequest,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    reader(&req)?;
    Ok(
        HttpResponse::Ok().json(match st.store.verify_audit().await {
            Ok(n) => vmseal_client::AuditVerified {
                ok: true,
                entries: Some(n),
                error: None,
            },
            Err(StoreError::Corrupt(why)) => vmseal_client::AuditVerified {
                ok: false,
                entries: None,
                error: Some(why),
            },
            Err(e) => return Err(e.into()),
        }),
    )
}
