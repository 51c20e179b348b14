//! Enrolled hosts: listing and disabling.

use actix_web::{HttpRequest, HttpResponse, web};

use crate::api::audited;
use crate::api::auth::{admin, reader};
use crate::api::error::ApiError;
use crate::now;
use crate::state::AppState;

/// `GET /v1/hosts` (admin or viewer): the enrolled hosts with their hardware roots.
#[utoipa::path(get, path = "/v1/hosts", tag = "enrollment",
    responses((status = 200, description = "Every enrolled host, by id", body = vmseal_client::HostList)))]
pub(crate) async fn list_hosts(
    req: HttpRequest,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    reader(&req)?;
    Ok(HttpResponse::Ok().json(vmseal_client::HostList {
        hosts: st.store.hosts().await?,
    }))
}

/// `POST /v1/hosts/{host}/disable` (admin): revoke the host's agent certificate (every replica
/// refuses it within [`REVOCATION_REFRESH`]); the host is enrolled again only with an admin's
/// token.
#[utoipa::path(post, path = "/v1/hosts/{host}/disable", tag = "enrollment", params(("host" = String, Path, description = "Host id")),
    responses((status = 200, description = "Disabled", body = vmseal_client::HostDisabled), (status = 404, description = "Unknown host", body = vmseal_client::ApiErrorBody)))]
pub(crate) async fn disable_host(
    req: HttpRequest,
    path: web::Path<String>,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let who = admin(&req)?;
    let host = path.into_inner();
    let serial = st.store.disable_host(&host, now()).await?;
    st.revoked.refresh(&st.store).await;
    audited(
        &st,
        &who,
        "disable_host",
        serde_json::json!({ "host": host, "revoked_serial": serial }),
    )
    .await?;
    Ok(HttpResponse::Ok().json(vmseal_client::HostDisabled {
        host_id: host,
        revoked_serial: serial,
    }))
}
