//! VMs: registration, listing, thresholds, assigned policies, chains, module rules, chain
//! resets and removal.

use actix_web::{HttpRequest, HttpResponse, web};
use vmseal_client::ErrorCode;

use crate::api::audited;
use crate::api::auth::{Admin, AdminVm, ReadableVm, reader};
use crate::api::error::{ApiError, bad};
use crate::appraise::{ModuleRule, VmRecord};
use crate::now;
use crate::state::AppState;

/// Parse policy text with the host's own parser: an admin learns of a mistake (with its line and
/// column) when assigning the policy, not at the first refused snapshot.
pub(crate) fn check_policy(text: &str) -> Result<vmseal_policy::Policy, ApiError> {
    vmseal_policy::Policy::parse(text)
        .map_err(|e| bad(ErrorCode::BadPolicy, format!("the policy: {e}")))
}

#[utoipa::path(post, path = "/v1/vms", tag = "vms", request_body = vmseal_client::NewVm,
    responses((status = 201, description = "Registered", body = vmseal_client::VmRegistered), (status = 404, description = "Unknown host", body = vmseal_client::ApiErrorBody),
        (status = 409, description = "VM id taken", body = vmseal_client::ApiErrorBody)))]
pub(crate) async fn register_vm(
    who: Admin,
    body: web::Json<vmseal_client::NewVm>,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let who = who.0;
    let b = body.into_inner();
    vmseal_sealer::state::check_vm_id(&b.vm_id)
        .map_err(|e| bad(ErrorCode::BadVmId, e.to_string()))?;
    let threshold = b.threshold.unwrap_or(st.settings.default_threshold);
    if threshold > 100 {
        return Err(bad(ErrorCode::BadThreshold, "threshold must be 0 to 100"));
    }
    let policy = b.policy.as_deref().map(check_policy).transpose()?;
    st.store
        .register_vm(&b.vm_id, &b.host_id, threshold, now())
        .await?;
    if let (Some(p), Some(text)) = (&policy, &b.policy) {
        st.store.assign_policy(&b.vm_id, &p.digest, text).await?;
    }
    audited(
        &st,
        &who,
        "register_vm",
        serde_json::json!({ "vm": b.vm_id, "host": b.host_id, "threshold": threshold,
                "policy_digest": policy.as_ref().map(|p| hex::encode(p.digest)) }),
    )
    .await?;
    Ok(HttpResponse::Created().json(vmseal_client::VmRegistered {
        vm_id: b.vm_id,
        host_id: b.host_id,
        threshold,
    }))
}

/// `GET /v1/vms` (admin or viewer): every VM with its latest score and tier.
#[utoipa::path(get, path = "/v1/vms", tag = "vms",
    responses((status = 200, description = "Every VM, by id", body = vmseal_client::VmList)))]
pub(crate) async fn list_vms(
    req: HttpRequest,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    reader(&req)?;
    Ok(HttpResponse::Ok().json(vmseal_client::VmList {
        vms: st.store.list_vms().await?,
    }))
}

/// `POST /v1/vms/{vm}/threshold` (admin).
#[utoipa::path(post, path = "/v1/vms/{vm}/threshold", tag = "vms", params(("vm" = String, Path, description = "VM id")),
    request_body = vmseal_client::SetThreshold,
    responses((status = 200, description = "Set", body = vmseal_client::ThresholdSet), (status = 404, description = "Unknown VM", body = vmseal_client::ApiErrorBody)))]
pub(crate) async fn set_threshold(
    AdminVm { who, vm }: AdminVm,
    body: web::Json<vmseal_client::SetThreshold>,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if body.threshold > 100 {
        return Err(bad(ErrorCode::BadThreshold, "threshold must be 0 to 100"));
    }
    st.store.set_threshold(&vm, body.threshold).await?;
    audited(
        &st,
        &who,
        "set_threshold",
        serde_json::json!({ "vm": vm, "threshold": body.threshold }),
    )
    .await?;
    Ok(HttpResponse::Ok().json(vmseal_client::ThresholdSet {
        vm_id: vm,
        threshold: body.threshold,
    }))
}

/// `POST /v1/vms/{vm}/policy` (admin): the capture policy the VM's evidence must be made under.
#[utoipa::path(post, path = "/v1/vms/{vm}/policy", tag = "vms", params(("vm" = String, Path, description = "VM id")),
    request_body = vmseal_client::AssignPolicy,
    responses((status = 200, description = "Assigned", body = vmseal_client::PolicyAssigned), (status = 404, description = "Unknown VM", body = vmseal_client::ApiErrorBody)))]
pub(crate) async fn assign_policy(
    AdminVm { who, vm }: AdminVm,
    body: web::Json<vmseal_client::AssignPolicy>,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let p = check_policy(&body.policy)?;
    st.store.assign_policy(&vm, &p.digest, &body.policy).await?;
    let d = hex::encode(p.digest);
    audited(
        &st,
        &who,
        "assign_policy",
        serde_json::json!({ "vm": vm, "policy_digest": d, "policy": p.name, "version": p.version }),
    )
    .await?;
    Ok(HttpResponse::Ok().json(vmseal_client::PolicyAssigned {
        vm_id: vm,
        policy_digest: d,
        regions: p.regions.iter().map(|r| r.name.clone()).collect(),
    }))
}

/// `GET /v1/vms/{vm}/policy` (admin, viewer, or the VM's host agent): the assigned capture
/// policy's text, so the agent captures by exactly what the verifier appraises by (`policy` and
/// `policy_digest` are null while none is assigned).
#[utoipa::path(get, path = "/v1/vms/{vm}/policy", tag = "vms", params(("vm" = String, Path, description = "VM id")),
    responses((status = 200, description = "The assigned policy (null when none is)", body = vmseal_client::VmPolicy),
        (status = 404, description = "not_found: no such VM", body = vmseal_client::ApiErrorBody)))]
pub(crate) async fn get_policy(
    ReadableVm { vm, .. }: ReadableVm,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (policy_digest, policy) = match st.store.policy_text(&vm).await? {
        Some((d, t)) => (Some(hex::encode(d)), Some(t)),
        None => (None, None),
    };
    Ok(HttpResponse::Ok().json(vmseal_client::VmPolicy {
        vm_id: vm,
        policy_digest,
        policy,
    }))
}

/// `GET /v1/vms/{vm}/chain` (admin, viewer, or the VM's host agent): where the VM's evidence
/// chain stands — the sequence number the next evidence must carry and the digest it must name.
/// Agents build every snapshot on it; refusals of evidence carry it too.
#[utoipa::path(get, path = "/v1/vms/{vm}/chain", tag = "evidence", params(("vm" = String, Path, description = "VM id")),
    responses((status = 200, description = "The chain head", body = vmseal_client::ChainHead),
        (status = 404, description = "not_found: no such VM", body = vmseal_client::ApiErrorBody)))]
pub(crate) async fn get_chain(
    ReadableVm { rec, .. }: ReadableVm,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(chain_head(&rec)))
}

/// Where `rec`'s chain stands.
pub(crate) fn chain_head(rec: &VmRecord) -> vmseal_client::ChainHead {
    match rec.last {
        Some(l) => vmseal_client::ChainHead {
            vm_id: rec.vm_id.clone(),
            next_seq: l.seq + 1,
            prev: Some(hex::encode(l.digest)),
        },
        None => vmseal_client::ChainHead {
            vm_id: rec.vm_id.clone(),
            next_seq: rec.chain_start,
            prev: None,
        },
    }
}

/// `POST /v1/vms/{vm}/reset-chain` (admin): restart the VM's evidence chain at `at` (0 by
/// default), audited with where it stood. For a host rebuilt from scratch, or a chain an operator
/// decided to abandon; alerts, appraisals and baselines stay.
#[utoipa::path(post, path = "/v1/vms/{vm}/reset-chain", tag = "vms", params(("vm" = String, Path, description = "VM id")),
    request_body = vmseal_client::ResetChain,
    responses((status = 200, description = "`{vm_id, previous_seq, next_seq}`"), (status = 404, description = "Unknown VM", body = vmseal_client::ApiErrorBody)))]
pub(crate) async fn reset_chain(
    AdminVm { who, vm }: AdminVm,
    body: web::Json<vmseal_client::ResetChain>,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if body.at > i64::MAX as u64 {
        return Err(bad(
            ErrorCode::BadSeq,
            "at is beyond the largest sequence number",
        ));
    }
    let previous = st.store.reset_chain(&vm, body.at).await?;
    audited(
        &st,
        &who,
        "reset_chain",
        serde_json::json!({ "vm": vm, "previous_seq": previous, "next_seq": body.at }),
    )
    .await?;
    Ok(HttpResponse::Ok().json(vmseal_client::ChainReset {
        vm_id: vm,
        previous_seq: previous,
        next_seq: body.at,
    }))
}

/// `DELETE /v1/vms/{vm}` (admin): remove a VM and everything held of it (appraisals, baselines,
/// alerts, nonces, capture requests, silences), audited with what was removed; the VM id can then
/// be registered again. For a VM that is gone for good, or one to start over from scratch.
#[utoipa::path(delete, path = "/v1/vms/{vm}", tag = "vms", params(("vm" = String, Path, description = "VM id")),
    responses((status = 200, description = "What was removed", body = vmseal_client::VmRemoved),
        (status = 404, description = "Unknown VM", body = vmseal_client::ApiErrorBody)))]
pub(crate) async fn remove_vm(
    AdminVm { who, vm }: AdminVm,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let removed = st.store.remove_vm(&vm).await?;
    let removed = vmseal_client::VmRemoved {
        vm_id: vm,
        host_id: removed.host_id,
        last_seq: removed.last_seq,
        appraisals: removed.appraisals,
        baselines: removed.baselines,
        alerts: removed.alerts,
    };
    let detail = serde_json::to_value(&removed).map_err(|e| ApiError::Internal(e.to_string()))?;
    audited(&st, &who, "remove_vm", detail).await?;
    tracing::info!(
        vm = removed.vm_id,
        host = removed.host_id,
        "VM removed by {who}"
    );
    Ok(HttpResponse::Ok().json(removed))
}

/// `POST /v1/vms/{vm}/modules` (admin): the capture modules (name, version, optionally the
/// SHA-256 of the binary) allowed to capture the VM; evidence from any other is refused
/// `module_not_allowed`. An empty list allows any module.
#[utoipa::path(post, path = "/v1/vms/{vm}/modules", tag = "vms", params(("vm" = String, Path, description = "VM id")),
    request_body = vmseal_client::AllowModules,
    responses((status = 200, description = "The rules in force", body = vmseal_client::ModulesAllowed), (status = 400, description = "bad_module", body = vmseal_client::ApiErrorBody),
        (status = 404, description = "Unknown VM", body = vmseal_client::ApiErrorBody)))]
pub(crate) async fn allow_modules(
    AdminVm { who, vm }: AdminVm,
    body: web::Json<vmseal_client::AllowModules>,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if body.allowed.len() > 64 {
        return Err(bad(ErrorCode::BadModule, "at most 64 module rules"));
    }
    let rules = body
        .allowed
        .iter()
        .map(|r| ModuleRule::parse(r).map_err(|e| bad(ErrorCode::BadModule, e)))
        .collect::<Result<Vec<_>, _>>()?;
    st.store.set_allowed_modules(&vm, &rules).await?;
    let allowed: Vec<String> = rules.iter().map(ToString::to_string).collect();
    audited(
        &st,
        &who,
        "allow_modules",
        serde_json::json!({ "vm": vm, "allowed": allowed }),
    )
    .await?;
    Ok(HttpResponse::Ok().json(vmseal_client::ModulesAllowed { vm_id: vm, allowed }))
}
