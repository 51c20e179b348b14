//! Who is asking: the client certificate's role (admin, viewer, agent of a host, enrollment),
//! checked by extractors and helpers before a handler touches anything; browsers must also send
//! vmseal's request header (no cross-site requests).

use actix_web::{HttpRequest, web};

use crate::api::error::ApiError;
use crate::appraise::VmRecord;
use crate::pki::{Role, role_of};
use crate::state::AppState;

/// The client certificate of a connection, stashed by `on_connect`: DER, and its serial (hex) for
/// the revocation check of every request.
#[derive(Debug, Clone)]
pub struct PeerCert(pub Vec<u8>, pub String);

/// The header vmseal's clients send on every request (`vmseal_client::REQUEST_HEADER`).
pub(crate) const REQUEST_HEADER: &str = "x-vmseal-request";

/// A state-changing request must show it was not made cross-site by a browser holding an admin's
/// client certificate: a JSON or octet-stream body (which a page of another origin cannot send
/// without a CORS preflight the service never grants), or vmseal's request header.
pub(crate) fn same_site(req: &HttpRequest) -> Result<(), ApiError> {
    use actix_web::http::Method;
    if matches!(*req.method(), Method::GET | Method::HEAD) {
        return Ok(());
    }
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    };
    let ct = header("content-type");
    let media = ct.split(';').next().unwrap_or("").trim();
    if !header(REQUEST_HEADER).is_empty()
        || matches!(media, "application/json" | "application/octet-stream")
    {
        return Ok(());
    }
    Err(ApiError::Forbidden(format!(
        "a {} request needs a JSON body or the {REQUEST_HEADER} header (cross-site requests are refused)",
        req.method()
    )))
}

pub(crate) fn role(req: &HttpRequest) -> Result<Role, ApiError> {
    same_site(req)?;
    let cert = req
        .conn_data::<PeerCert>()
        .cloned()
        .ok_or_else(|| ApiError::Forbidden("no client certificate on this connection".into()))?;
    if let Some(st) = req.app_data::<web::Data<AppState>>()
        && st.revoked.contains(&cert.1)
    {
        return Err(ApiError::Forbidden(
            "this client certificate was revoked (its host re-enrolled or was disabled): enrol \
             again with a token from an admin"
                .into(),
        ));
    }
    role_of(&cert.0).ok_or_else(|| {
        ApiError::Forbidden(
            "the client certificate carries no vmseal role (OU=admin, viewer, agent or enroll)"
                .into(),
        )
    })
}

/// An admin's request (the name in the certificate). As a handler's first parameter it is
/// checked before any other extractor reads the body: a client without the role never gets a
/// request body parsed.
#[derive(Debug)]
pub struct Admin(pub String);

impl actix_web::FromRequest for Admin {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;
    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        std::future::ready(admin(req).map(Admin))
    }
}

/// An admin's request about the VM named in the path (`/v1/vms/{vm}/…`): the admin's name and
/// the VM id, the role checked before any other extractor reads the body.
#[derive(Debug)]
pub struct AdminVm {
    /// The admin's name (from the certificate).
    pub who: String,
    /// The VM id, as the path's `{vm}`.
    pub vm: String,
}

impl actix_web::FromRequest for AdminVm {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;
    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        std::future::ready(admin(req).and_then(|who| {
            let vm = req
                .match_info()
                .get("vm")
                .ok_or_else(|| ApiError::Internal("this route names no {vm}".into()))?;
            Ok(AdminVm {
                who,
                vm: vm.to_owned(),
            })
        }))
    }
}

/// A read of what is held of the VM named in the path (`/v1/vms/{vm}/…`) by a client allowed
/// to read it (`vm_reader`: an admin, a viewer, or the agent of the VM's host): the VM id and
/// its record.
#[derive(Debug)]
pub struct ReadableVm {
    /// The VM id, as the path's `{vm}`.
    pub vm: String,
    /// Its record.
    pub rec: VmRecord,
}

impl actix_web::FromRequest for ReadableVm {
    type Error = ApiError;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self, ApiError>>>>;
    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let st = req
                .app_data::<web::Data<AppState>>()
                .cloned()
                .ok_or_else(|| ApiError::Internal("no application state".into()))?;
            let vm = req
                .match_info()
                .get("vm")
                .ok_or_else(|| ApiError::Internal("this route names no {vm}".into()))?
                .to_owned();
            let rec = st.store.vm_record(&vm).await?;
            vm_reader(&req, &rec)?;
            Ok(ReadableVm { vm, rec })
        })
    }
}

/// A request made with an enrollment token's certificate (checked before the body is read;
/// whether the token is still usable is the handler's database check).
#[derive(Debug)]
pub struct EnrollRole;

impl actix_web::FromRequest for EnrollRole {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;
    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        std::future::ready(match role(req) {
            Ok(Role::Enroll(_)) => Ok(EnrollRole),
            Ok(_) => Err(ApiError::Forbidden(
                "enrollment needs an enrollment token's certificate: ask an admin for one \
                 (`vmseal-verifier admin enrollment-token`)"
                    .into(),
            )),
            Err(e) => Err(e),
        })
    }
}

pub(crate) fn admin(req: &HttpRequest) -> Result<String, ApiError> {
    match role(req)? {
        Role::Admin(name) => Ok(name),
        Role::Agent(h) => Err(ApiError::Forbidden(format!(
            "agent {h:?} may not do this; it needs an admin certificate"
        ))),
        Role::Enroll(_) => Err(ApiError::Forbidden(
            "an enrollment token may only enrol a host; this needs an admin certificate".into(),
        )),
        Role::Viewer(v) => Err(ApiError::Forbidden(format!(
            "viewer {v:?} may only read; this needs an admin certificate"
        ))),
    }
}

/// The caller must be an admin or a viewer (read-only); returns the name.
pub(crate) fn reader(req: &HttpRequest) -> Result<String, ApiError> {
    match role(req)? {
        Role::Admin(name) | Role::Viewer(name) => Ok(name),
        Role::Agent(h) => Err(ApiError::Forbidden(format!(
            "agent {h:?} may not read this; it needs an admin or viewer certificate"
        ))),
        Role::Enroll(_) => Err(ApiError::Forbidden(
            "an enrollment token may only enrol a host".into(),
        )),
    }
}

/// The caller may read what is held of `rec`'s VM: an admin, a viewer, or the agent of its host.
pub(crate) fn vm_reader(req: &HttpRequest, rec: &VmRecord) -> Result<(), ApiError> {
    if !matches!(role(req)?, Role::Viewer(_)) {
        admin_or_agent_of(req, &rec.host_id)?;
    }
    Ok(())
}

/// The caller must be an admin, or the agent of `host_id`.
pub(crate) fn admin_or_agent_of(req: &HttpRequest, host_id: &str) -> Result<String, ApiError> {
    match role(req)? {
        Role::Admin(name) => Ok(name),
        Role::Agent(h) if h == host_id => Ok(format!("agent:{h}")),
        Role::Agent(h) => Err(ApiError::Forbidden(format!(
            "agent {h:?} acts only for its own host's VMs, not host {host_id:?}"
        ))),
        Role::Enroll(_) => Err(ApiError::Forbidden(
            "an enrollment token may only enrol a host; use the agent certificate it yielded"
                .into(),
        )),
        Role::Viewer(v) => Err(ApiError::Forbidden(format!(
            "viewer {v:?} may only read; this needs an admin certificate"
        ))),
    }
}
