//! The HTTPS API: actix-web over rustls with mandatory client certificates.
//!
//! A client without a certificate from the verifier's CA never reaches a handler (rustls refuses
//! the handshake); handlers then check the role in the certificate: admins manage hosts, VMs and
//! baselines; an agent acts only for its own host's VMs. Every error is JSON
//! `{"code": "...", "message": "..."}` with a stable code ([`error::ApiError`]).
//!
//! This module is the top of the library: it imports the logic (appraisal, enrollment, alerts,
//! storage) and nothing but the service that starts it ([`crate::service`]), the binary and the
//! tests imports it. The route table below is the whole API; each resource's handlers are in a
//! file of their own.

pub mod alerts;
pub mod audit;
pub mod auth;
pub mod baselines;
pub mod body;
pub mod captures;
pub mod corim;
pub mod enroll;
pub mod error;
pub mod evidence;
pub mod health;
pub mod hosts;
pub mod renew;
pub mod tls;
pub mod ui;
pub mod vms;

use actix_web::{HttpRequest, ResponseError, web};
use vmseal_client::ErrorCode;

use crate::api::body::{MAX_BODY, MAX_JSON, MAX_POLICY_JSON};
use crate::api::error::{ApiError, bad, json_error};
pub use vmseal_client::{BaselineLeaves, NewVm, PromoteBaseline};

/// Record `who`'s `action` in the audit log, with its details.
pub(crate) async fn audited(
    st: &crate::state::AppState,
    who: &str,
    action: &str,
    detail: serde_json::Value,
) -> Result<(), ApiError> {
    st.store
        .audit(who, action, &detail.to_string(), crate::now())
        .await?;
    Ok(())
}

/// The OpenAPI 3.1 description of this service, built from the handlers' annotations.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "vmseal verifier",
        description = "Runtime memory attestation of virtual machines: enrollment, nonces, \
evidence appraisal against golden baselines, trust scores and signed attestation results. \
Mutual TLS: every client presents a certificate from the verifier CA; its role (admin, agent of a \
host, viewer, enrollment token) is in the subject. Errors are `{code, message}`; 503 `unavailable` \
(with Retry-After) while the database cannot be reached."
    ),
    paths(
        health::healthz, health::readyz, health::metrics, health::openapi_json, audit::verify_audit, audit::create_checkpoint, audit::list_checkpoints, audit::audit_export,
        ui::root, ui::index, ui::script, ui::style, ui::icon,
        enroll::create_token, enroll::challenge, enroll::begin, enroll::activate,
        renew::challenge, renew::renew, renew::renew_person,
        vms::register_vm, vms::list_vms, vms::set_threshold, vms::assign_policy, vms::get_policy, vms::get_chain, vms::remove_vm, vms::allow_modules, vms::reset_chain, hosts::list_hosts, hosts::disable_host, baselines::promote_baseline, baselines::active_baseline,
        corim::signer, corim::list, corim::export, corim::import,
        evidence::issue_nonce, evidence::submit_evidence, evidence::list_appraisals,
        captures::create, captures::poll, captures::status,
        alerts::list, alerts::show, alerts::ack, alerts::stream,
        alerts::add_webhook, alerts::list_webhooks, alerts::remove_webhook,
        alerts::add_silence, alerts::list_silences, alerts::end_silence,
        alerts::set_schedule,
    ),
    tags(
        (name = "enrollment", description = "Hosts enrol with a one-use token and TPM credential activation"),
        (name = "vms", description = "VM registration, policies, thresholds and golden baselines (admin)"),
        (name = "evidence", description = "Nonces, evidence and appraisals (agents)"),
        (name = "captures", description = "Captures on demand, picked up by the agent's long-poll"),
        (name = "alerts", description = "Alerts, their webhooks (signed deliveries, at least once), silences and the event stream"),
        (name = "operations", description = "Health, metrics and this document"),
        (name = "ui", description = "The web page for admins and viewers"),
    )
)]
pub struct ApiDoc;

/// The OpenAPI document, JSON.
pub fn openapi() -> utoipa::openapi::OpenApi {
    <ApiDoc as utoipa::OpenApi>::openapi()
}

/// Every route: method, path (OpenAPI form) and handler. `/openapi.json` is checked against this
/// table by a test, both ways.
pub(crate) fn route_table() -> Vec<(actix_web::http::Method, &'static str, actix_web::Route)> {
    use actix_web::http::Method as M;
    let r = |m: M| web::method(m);
    vec![
        (M::GET, "/healthz", r(M::GET).to(health::healthz)),
        (M::GET, "/readyz", r(M::GET).to(health::readyz)),
        (M::GET, "/metrics", r(M::GET).to(health::metrics)),
        (M::GET, "/openapi.json", r(M::GET).to(health::openapi_json)),
        (M::GET, "/", r(M::GET).to(ui::root)),
        (M::GET, "/ui", r(M::GET).to(ui::index)),
        (M::GET, "/ui/app.js", r(M::GET).to(ui::script)),
        (M::GET, "/ui/app.css", r(M::GET).to(ui::style)),
        (M::GET, "/ui/favicon.svg", r(M::GET).to(ui::icon)),
        (
            M::GET,
            "/v1/audit/verify",
            r(M::GET).to(audit::verify_audit),
        ),
        (
            M::POST,
            "/v1/enrollment-tokens",
            r(M::POST).to(enroll::create_token),
        ),
        (
            M::POST,
            "/v1/enrollment-challenges",
            r(M::POST).to(enroll::challenge),
        ),
        (M::POST, "/v1/enrollments", r(M::POST).to(enroll::begin)),
        (
            M::POST,
            "/v1/enrollments/{id}/activation",
            r(M::POST).to(enroll::activate),
        ),
        (M::POST, "/v1/vms", r(M::POST).to(vms::register_vm)),
        (M::GET, "/v1/vms", r(M::GET).to(vms::list_vms)),
        (
            M::POST,
            "/v1/vms/{vm}/threshold",
            r(M::POST).to(vms::set_threshold),
        ),
        (
            M::POST,
            "/v1/vms/{vm}/policy",
            r(M::POST).to(vms::assign_policy),
        ),
        (M::GET, "/v1/vms/{vm}/policy", r(M::GET).to(vms::get_policy)),
        (M::GET, "/v1/vms/{vm}/chain", r(M::GET).to(vms::get_chain)),
        (
            M::POST,
            "/v1/audit/checkpoints",
            r(M::POST).to(audit::create_checkpoint),
        ),
        (
            M::GET,
            "/v1/audit/checkpoints",
            r(M::GET).to(audit::list_checkpoints),
        ),
        (
            M::GET,
            "/v1/audit/export",
            r(M::GET).to(audit::audit_export),
        ),
        (M::DELETE, "/v1/vms/{vm}", r(M::DELETE).to(vms::remove_vm)),
        (
            M::POST,
            "/v1/vms/{vm}/modules",
            r(M::POST).to(vms::allow_modules),
        ),
        (
            M::POST,
            "/v1/vms/{vm}/reset-chain",
            r(M::POST).to(vms::reset_chain),
        ),
        (M::GET, "/v1/hosts", r(M::GET).to(hosts::list_hosts)),
        (
            M::POST,
            "/v1/certificates/renewals",
            r(M::POST).to(renew::renew_person),
        ),
        (
            M::POST,
            "/v1/hosts/{host}/renewal-challenges",
            r(M::POST).to(renew::challenge),
        ),
        (
            M::POST,
            "/v1/hosts/{host}/renewals",
            r(M::POST).to(renew::renew),
        ),
        (
            M::POST,
            "/v1/hosts/{host}/disable",
            r(M::POST).to(hosts::disable_host),
        ),
        (
            M::POST,
            "/v1/vms/{vm}/capture-requests",
            r(M::POST).to(captures::create),
        ),
        (
            M::GET,
            "/v1/hosts/{host}/capture-requests",
            r(M::GET).to(captures::poll),
        ),
        (
            M::GET,
            "/v1/capture-requests/{id}",
            r(M::GET).to(captures::status),
        ),
        (
            M::POST,
            "/v1/vms/{vm}/nonce",
            r(M::POST).to(evidence::issue_nonce),
        ),
        (
            M::POST,
            "/v1/vms/{vm}/evidence",
            r(M::POST).to(evidence::submit_evidence),
        ),
        (
            M::GET,
            "/v1/vms/{vm}/appraisals",
            r(M::GET).to(evidence::list_appraisals),
        ),
        (
            M::POST,
            "/v1/vms/{vm}/baselines",
            r(M::POST).to(baselines::promote_baseline),
        ),
        (M::GET, "/v1/vms/{vm}/baselines", r(M::GET).to(corim::list)),
        (
            M::GET,
            "/v1/vms/{vm}/baselines/{version}/corim",
            r(M::GET).to(corim::export),
        ),
        (
            M::POST,
            "/v1/vms/{vm}/baselines/corim",
            r(M::POST).to(corim::import),
        ),
        (M::GET, "/v1/corim/signer", r(M::GET).to(corim::signer)),
        (
            M::GET,
            "/v1/vms/{vm}/baseline",
            r(M::GET).to(baselines::active_baseline),
        ),
        (
            M::POST,
            "/v1/vms/{vm}/schedule",
            r(M::POST).to(alerts::set_schedule),
        ),
        (M::GET, "/v1/alerts", r(M::GET).to(alerts::list)),
        (M::GET, "/v1/alerts/stream", r(M::GET).to(alerts::stream)),
        (M::GET, "/v1/alerts/{id}", r(M::GET).to(alerts::show)),
        (M::POST, "/v1/alerts/{id}/ack", r(M::POST).to(alerts::ack)),
        (M::POST, "/v1/webhooks", r(M::POST).to(alerts::add_webhook)),
        (M::GET, "/v1/webhooks", r(M::GET).to(alerts::list_webhooks)),
        (
            M::DELETE,
            "/v1/webhooks/{name}",
            r(M::DELETE).to(alerts::remove_webhook),
        ),
        (M::POST, "/v1/silences", r(M::POST).to(alerts::add_silence)),
        (M::GET, "/v1/silences", r(M::GET).to(alerts::list_silences)),
        (
            M::DELETE,
            "/v1/silences/{id}",
            r(M::DELETE).to(alerts::end_silence),
        ),
    ]
}

/// The JSON body limit of `path`: baselines (an admin's page hashes) may be large, policies
/// moderate, everything else small. Evidence (raw bytes) has its own limit by the VM's baseline.
pub(crate) fn json_limit(path: &str) -> usize {
    match path {
        "/v1/vms/{vm}/baselines" => MAX_BODY,
        "/v1/vms" | "/v1/vms/{vm}/policy" => MAX_POLICY_JSON,
        _ => MAX_JSON,
    }
}

/// Register the routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::PayloadConfig::new(MAX_BODY)).app_data(
        web::QueryConfig::default().error_handler(|e, _| {
            bad(
                ErrorCode::BadQuery,
                format!("query string not understood: {e}"),
            )
            .into()
        }),
    );
    for (method, path, route) in route_table() {
        cfg.service(
            web::resource(path)
                .guard(actix_web::guard::Method(method))
                .app_data(
                    web::JsonConfig::default()
                        .limit(json_limit(path))
                        .error_handler(|e, _| json_error(e)),
                )
                .route(route),
        );
    }
    cfg.default_service(web::to(|req: HttpRequest| async move {
        ApiError::NotFound(format!(
            "no endpoint {} {}; the API is described at /openapi.json",
            req.method(),
            req.path()
        ))
        .error_response()
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_describes_exactly_the_routes() {
        let doc = openapi();
        let mut documented: Vec<(String, String)> = Vec::new();
        for (path, item) in &doc.paths.paths {
            for (m, op) in [
                ("GET", &item.get),
                ("POST", &item.post),
                ("PUT", &item.put),
                ("DELETE", &item.delete),
                ("PATCH", &item.patch),
            ] {
                if op.is_some() {
                    documented.push((m.to_owned(), path.clone()));
                }
            }
        }
        let mut served: Vec<(String, String)> = route_table()
            .into_iter()
            .map(|(m, p, _)| (m.as_str().to_owned(), p.to_owned()))
            .collect();
        documented.sort();
        served.sort();
        assert_eq!(documented, served);
        let json = serde_json::to_value(&doc).unwrap();
        assert!(json["components"]["schemas"]["EnrollmentRequest"].is_object());
        assert!(json["components"]["schemas"]["AppraisalResult"].is_object());
    }

    /// One test over every code: docs/api.md's table lists each [`ErrorCode`] with its status
    /// and nothing else, and the service answers each one somewhere.
    #[test]
    fn every_error_code_is_documented_with_its_status_and_answered() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let doc = std::fs::read_to_string(root.join("../docs/api.md")).unwrap();
        let section = &doc[doc
            .find("## Error codes")
            .expect("api.md has an Error codes section")..];
        let section = &section[..section.find("\n## ").unwrap_or(section.len())];
        let mut documented = std::collections::BTreeMap::new();
        for line in section.lines().filter(|l| l.starts_with("| `")) {
            let cols: Vec<&str> = line.split('|').collect();
            let status: u16 = cols[2].trim().parse().expect("a status column");
            for name in cols[1].split('`').skip(1).step_by(2) {
                documented.insert(name.to_owned(), status);
            }
        }
        let want: std::collections::BTreeMap<String, u16> = ErrorCode::ALL
            .iter()
            .map(|c| (c.as_str().to_owned(), c.status()))
            .collect();
        assert_eq!(
            documented, want,
            "docs/api.md \"Error codes\" against ErrorCode"
        );
        let mut source = String::new();
        let files = ["src", "src/api", "src/store"]
            .iter()
            .flat_map(|d| std::fs::read_dir(root.join(d)).unwrap())
            .map(|e| e.unwrap().path());
        for p in files {
            if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                // The service's code, not its tests.
                source.push_str(text.split("#[cfg(test)]").next().unwrap());
            }
        }
        for c in ErrorCode::ALL {
            assert!(
                source.contains(&format!("ErrorCode::{c:?}")),
                "{c:?} is never answered: remove it from ErrorCode and the docs"
            );
        }
    }

    #[test]
    fn every_error_has_a_stable_code_and_status() {
        let cases = [
            (ApiError::Forbidden("x".into()), "forbidden", 403),
            (ApiError::NotFound("x".into()), "not_found", 404),
            (bad(ErrorCode::BadJson, "x"), "bad_json", 400),
            (
                ApiError::Refused {
                    code: ErrorCode::SeqGap,
                    message: "x".into(),
                },
                "seq_gap",
                422,
            ),
            (ApiError::Conflict("x".into()), "conflict", 409),
            (ApiError::TooLarge("x".into()), "too_large", 413),
            (ApiError::Internal("x".into()), "internal", 500),
        ];
        for (e, code, status) in cases {
            assert_eq!(e.code().as_str(), code);
            assert_eq!(e.status_code().as_u16(), status);
        }
    }
}
