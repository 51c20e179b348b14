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
    let (groups, grouped) = st.store.group_commits();
    let body = format!(
        "{}# HELP vmseal_appraisal_groups_total Transactions that committed appraisals (group commit)\n\
         # TYPE vmseal_appraisal_groups_total counter\n\
         vmseal_appraisal_groups_total {groups}\n\
         # HELP vmseal_appraisals_grouped_total Appraisals those transactions committed\n\
         # TYPE vmseal_appraisals_grouped_total counter\n\
         vmseal_appraisals_grouped_total {grouped}\n",
        st.metrics.render()
    );
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(body))
}

/// Liveness: the process answers (whatever its database does).
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process is up (liveness; the database is not asked): `ok`", body = vmseal_client::Health)))]
pub(crate) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(vmseal_client::Health {
        status: "ok".into(),
    })
}

/// Readiness: the service can do its work now (its database answers).
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "The database answers: `ready`", body = vmseal_client::Health),
        (status = 503, description = "unavailable: the database does not answer", body = vmseal_client::ApiErrorBody)))]
pub(crate) async fn readyz(st: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    st.store.ping().await?;
    Ok(HttpResponse::Ok().json(vmseal_client::Health {
        status: "ready".into(),
    }))
}

#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "This document")))]
pub(crate) async fn openapi_json(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    role(&req)?;
    Ok(HttpResponse::Ok().json(openapi()))
}
