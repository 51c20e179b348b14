//! Captures on demand: an admin asks for a fresh capture of a VM; its host's agent, which has no
//! inbound port, picks the request up by long-poll, captures with the request's nonce and submits
//! the evidence as usual. The request is done when evidence answering its nonce is appraised.
//!
//! Requests live in the database, so any verifier replica may take the admin's request and any
//! other may hand it to the agent; each request goes to one poll only (a conditional `UPDATE`).
//! A replica's long-poll wakes at once for requests made on that replica and re-reads the database
//! every second for the others.

use std::time::Duration;
use vmseal_client::ErrorCode;

use actix_web::{HttpRequest, HttpResponse, web};
use vmseal_client::{CaptureRequest, CaptureRequests};

use crate::api::auth::{admin, admin_or_agent_of};
use crate::api::error::{ApiError, bad};
use crate::now;
use crate::state::AppState;
use crate::store::NewCaptureRequest;

/// How long an agent has to answer a capture request (its nonce lives as long).
pub const CAPTURE_REQUEST_TTL: i64 = 300;
/// Longest long-poll, seconds.
pub const MAX_WAIT: u32 = 60;

/// `POST /v1/vms/{vm}/capture-requests` (admin): ask the VM's host for a capture now.
#[utoipa::path(post, path = "/v1/vms/{vm}/capture-requests", tag = "captures", params(("vm" = String, Path, description = "VM id")),
    responses((status = 201, description = "Asked of the VM's host", body = vmseal_client::CaptureRequestMade)))]
pub(crate) async fn create(
    req: HttpRequest,
    path: web::Path<String>,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let who = admin(&req)?;
    let vm = path.into_inner();
    let rec = st.store.vm_record(&vm).await?;
    let t = now();
    let nonce = st.store.issue_nonce(&vm, CAPTURE_REQUEST_TTL, t).await?;
    let request_id = crate::api::enroll::new_id()?;
    let expires_at = t + CAPTURE_REQUEST_TTL;
    st.store
        .create_capture_request(
            &NewCaptureRequest {
                request_id: &request_id,
                vm_id: &vm,
                host_id: &rec.host_id,
                nonce: &nonce,
                requested_by: &who,
                expires_at,
            },
            t,
        )
        .await?;
    st.store
        .audit(
            &who,
            "request_capture",
            &serde_json::json!({ "vm": vm, "request": request_id }).to_string(),
            t,
        )
        .await?;
    st.capture_wake.notify_waiters();
    Ok(
        HttpResponse::Created().json(vmseal_client::CaptureRequestMade {
            request_id,
            vm_id: vm,
            host_id: rec.host_id,
            nonce: hex::encode(nonce),
            expires_at,
        }),
    )
}

/// Query of the long-poll.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct WaitQuery {
    /// Seconds to wait for a request when none is open (0..=60; 0 when absent).
    wait: Option<u32>,
}

/// `GET /v1/hosts/{host}/capture-requests?wait=N` (the host's agent, or an admin): the host's
/// open requests. The agent takes them (each is handed out once) and waits up to N seconds for
/// one to appear; an admin only reads them, leaving them to the agent.
#[utoipa::path(get, path = "/v1/hosts/{host}/capture-requests", tag = "captures",
    params(("host" = String, Path, description = "Host id"), ("wait" = Option<u32>, Query, description = "Seconds to wait for a request, 0..=60")),
    responses((status = 200, description = "Requests handed to this caller", body = CaptureRequests)))]
pub(crate) async fn poll(
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<WaitQuery>,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let host = path.into_inner();
    admin_or_agent_of(&req, &host)?;
    let to_request = |p: crate::store::PickedCapture| CaptureRequest {
        request_id: p.request_id,
        vm_id: p.vm_id,
        nonce: hex::encode(p.nonce),
    };
    if !matches!(crate::api::auth::role(&req)?, crate::pki::Role::Agent(_)) {
        let requests = st
            .store
            .open_capture_requests(&host, now())
            .await?
            .into_iter()
            .map(to_request)
            .collect();
        return Ok(HttpResponse::Ok().json(CaptureRequests { requests }));
    }
    let wait = query.wait.unwrap_or(0);
    if wait > MAX_WAIT {
        return Err(bad(
            ErrorCode::BadQuery,
            format!("wait must be 0..={MAX_WAIT} seconds, not {wait}"),
        ));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(u64::from(wait));
    loop {
        // Register for wake-ups before reading, so a request made in between is not missed.
        let woken = st.capture_wake.notified();
        let picked = st.store.take_capture_requests(&host, now()).await?;
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if !picked.is_empty() || left.is_zero() {
            let requests = picked.into_iter().map(to_request).collect();
            return Ok(HttpResponse::Ok().json(CaptureRequests { requests }));
        }
        let _ = tokio::time::timeout(left.min(Duration::from_secs(1)), woken).await;
    }
}

/// `GET /v1/capture-requests/{id}` (admin, or the agent of the VM's host): pending, picked, done
/// (with the appraisal that answered it) or expired.
#[utoipa::path(get, path = "/v1/capture-requests/{id}", tag = "captures", params(("id" = String, Path, description = "Request id")),
    responses((status = 200, description = "Where it stands; the appraisal once done", body = vmseal_client::CaptureStatus)))]
pub(crate) async fn status(
    req: HttpRequest,
    path: web::Path<String>,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let s = st.store.capture_request(&id, now()).await?;
    admin_or_agent_of(&req, &s.host_id)?;
    let appraisal = match s.seq {
        Some(seq) => Some(crate::api::evidence::stored_result(
            &st.store.appraisal_result(&s.vm_id, seq).await?,
        )?),
        None => None,
    };
    Ok(HttpResponse::Ok().json(vmseal_client::CaptureStatus {
        request_id: id,
        vm_id: s.vm_id,
        host_id: s.host_id,
        state: s.state,
        seq: s.seq,
        appraisal,
    }))
}
