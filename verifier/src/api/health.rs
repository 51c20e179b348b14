//! Operations endpoints: `/healthz`, `/readyz`, `/metrics` and `/openapi.json`.

use actix_web::{HttpRequest, HttpResponse, web};

use crate::api::auth::role;
use crate::api::error::ApiError;
use crate::api::openapi;
use crate::state::AppState;

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain")))]
pub(crate) async fn metrics(
    req: HttpRequest,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    role(&req)?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(st.metrics.render()))
}

/// Liveness: the process answers (whatever its database does).
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process is up: `{\"status\":\"ok\"}` (liveness; the database is not asked)")))]
pub(crate) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// Readiness: the service can do its work now (its database answers).
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "`{\"status\":\"ready\"}`: the database answers"),
        (status = 503, description = "unavailable: the database does not answer", body = vmseal_client::ApiErrorBody)))]
pub(crate) async fn readyz(st: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    st.store.ping().await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "status": "ready" })))
}

#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "This document")))]
pub(crate) async fn openapi_json(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    role(&req)?;
    Ok(HttpResponse::Ok().json(openapi()))
}
