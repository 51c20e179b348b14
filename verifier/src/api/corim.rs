//! The CoRIM API (see [`crate::corim`] for the format and the rules): the signer's key, the
//! versions of a VM's baseline, export and import.

use vmseal_client::corim::{
    CORIM_MEDIA_TYPE, CorimError, MAX_CORIM_BYTES, ReferenceValues, RegionReference, TrustedKey,
};

use crate::api::enroll::refused;
use crate::store::BaselineSource;

use actix_web::{HttpRequest, HttpResponse, web};
use vmseal_client::ErrorCode;

use crate::api::auth::{AdminVm, ReadableVm, role, vm_reader};
use crate::api::error::{ApiError, bad};
use crate::now;
use crate::state::AppState;
use crate::store::NewBaselineRegion;

/// `GET /v1/corim/signer` (any role): this verifier's reference-value public key, PEM.
#[utoipa::path(get, path = "/v1/corim/signer", tag = "vms", operation_id = "corim_signer",
    responses((status = 200, description = "The Ed25519 public key (PEM `PUBLIC KEY`) that signs this verifier's CoRIM exports; the `kid` of its CoRIMs is its SPKI's SHA-256", content_type = "application/x-pem-file")))]
pub async fn signer(req: HttpRequest, st: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    role(&req)?;
    Ok(HttpResponse::Ok()
        .content_type("application/x-pem-file")
        .insert_header((
            "x-vmseal-kid",
            hex::encode(vmseal_client::corim::CorimSigner::kid(&st.corim_key)),
        ))
        .body(st.corim_key.public_pem()))
}

/// `GET /v1/vms/{vm}/baselines` (admin, viewer, or the VM's host agent): every version.
#[utoipa::path(get, path = "/v1/vms/{vm}/baselines", tag = "vms", operation_id = "list_baselines", params(("vm" = String, Path, description = "VM id")),
    responses((status = 200, description = "Oldest first", body = vmseal_client::BaselineList),
        (status = 404, description = "not_found", body = vmseal_client::ApiErrorBody)))]
pub async fn list(
    ReadableVm { vm, .. }: ReadableVm,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let versions = st.store.baseline_versions(&vm).await?;
    Ok(HttpResponse::Ok().json(vmseal_client::BaselineList {
        vm_id: vm,
        baselines: versions,
    }))
}

/// `GET /v1/vms/{vm}/baselines/{version}/corim` (admin, viewer, or the VM's host agent).
#[utoipa::path(get, path = "/v1/vms/{vm}/baselines/{version}/corim", tag = "vms", operation_id = "export_baseline_corim",
    params(("vm" = String, Path, description = "VM id"), ("version" = u64, Path, description = "Baseline version")),
    responses((status = 200, description = "The version as a signed CoRIM (COSE_Sign1, profile tag:vmseal.dev,2026:corim/v1)", content_type = "application/rim+cbor"),
        (status = 404, description = "not_found", body = vmseal_client::ApiErrorBody),
        (status = 409, description = "baseline_policy_unknown: promoted before the verifier kept policies", body = vmseal_client::ApiErrorBody)))]
pub async fn export(
    req: HttpRequest,
    path: web::Path<(String, u64)>,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (vm, version) = path.into_inner();
    let rec = st.store.vm_record(&vm).await?;
    vm_reader(&req, &rec)?;
    if let Some(signed) = st.store.baseline_corim(&vm, version).await? {
        return Ok(corim_response(signed));
    }
    let b = st.store.baseline(&vm, version).await?.ok_or_else(|| {
        ApiError::NotFound(format!("VM {vm:?} has no baseline version {version}"))
    })?;
    let Some(policy_digest) = b.policy_digest else {
        return Err(ApiError::Conflict(format!(
            "baseline version {version} of VM {vm:?} was promoted before the verifier kept the policy it was captured under; promote a newer snapshot and export that"
        )));
    };
    let id = format!("vmseal:{vm}:baseline:{version}");
    // The policy's text travels when the VM's assigned policy is the one the values were
    // captured under.
    let policy_text = match st.store.policy_text(&vm).await? {
        Some((d, text)) if d == policy_digest => Some(text),
        _ => None,
    };
    let rv = ReferenceValues {
        corim_id: id.clone(),
        tag_id: id,
        tag_version: version,
        policy_digest,
        policy_text,
        regions: b
            .regions
            .iter()
            .map(|r| RegionReference {
                name: r.name.clone(),
                class: r.class,
                severity: r.severity,
                hash: r.tree.alg(),
                leaves: r.tree.leaves().to_vec(),
                // Baselines from snapshots whose results named no ranges hold none.
                ranges: r.ranges.clone().filter(|v| !v.is_empty()),
            })
            .collect(),
        kernel: b.kernel.clone(),
    };
    let st2 = st.clone();
    let signed =
        crate::api::body::cpu(&st, move || vmseal_client::corim::seal(&rv, &st2.corim_key))
            .await?
            .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(corim_response(signed))
}

pub(crate) fn corim_response(signed: Vec<u8>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(CORIM_MEDIA_TYPE)
        .body(signed)
}

/// `POST /v1/vms/{vm}/baselines/corim` (admin): import a signed CoRIM as a new baseline version.
#[utoipa::path(post, path = "/v1/vms/{vm}/baselines/corim", tag = "vms", operation_id = "import_baseline_corim", params(("vm" = String, Path, description = "VM id")),
    request_body(content = Vec<u8>, content_type = "application/rim+cbor", description = "A signed CoRIM (profile tag:vmseal.dev,2026:corim/v1)"),
    responses((status = 201, description = "The new version", body = vmseal_client::BaselineImported),
        (status = 400, description = "bad_corim: not a well-formed signed CoRIM", body = vmseal_client::ApiErrorBody),
        (status = 413, description = "too_large", body = vmseal_client::ApiErrorBody),
        (status = 422, description = "corim_untrusted (no trusted key signed it, or the signature does not verify), corim_invalid (not a vmseal baseline), policy_mismatch, baseline_incomplete, corim_unknown_region, corim_hash_mismatch", body = vmseal_client::ApiErrorBody)))]
pub async fn import(
    AdminVm { who, vm }: AdminVm,
    body: web::Payload,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let rec = st.store.vm_record(&vm).await?;
    let signed = crate::api::body::read_body(body, MAX_CORIM_BYTES, "a CoRIM").await?;
    let trusted: Vec<TrustedKey> = std::iter::once(st.corim_key.trusted("this verifier"))
        .chain(st.settings.corim_signers.iter().cloned())
        .collect();
    let bytes = signed.clone();
    let t = now();
    let opened = crate::api::body::cpu(&st, move || {
        vmseal_client::corim::open(&bytes, &trusted, t)
    })
    .await?
    .map_err(|e| match e {
        CorimError::Malformed(_) => bad(ErrorCode::BadCorim, e.to_string()),
        CorimError::Untrusted(m) => ApiError::Refused {
            code: ErrorCode::CorimUntrusted,
            message: format!(
                "{m} (the verifier's trusted CoRIM signers are its own key and `corim_signers` in its configuration)"
            ),
        },
        CorimError::Invalid(_) | CorimError::Build(_) => ApiError::Refused {
            code: ErrorCode::CorimInvalid,
            message: e.to_string(),
        },
    })?;
    let rv = &opened.values;
    // What the verifier decided for this VM comes first: its assigned policy.
    if let Some(p) = rec.policy_digest
        && p != rv.policy_digest
    {
        return Err(refused(
            ErrorCode::PolicyMismatch,
            format!(
                "the CoRIM's reference values were captured under policy {}, not the VM's assigned policy {}",
                hex::encode(rv.policy_digest),
                hex::encode(p)
            ),
        ));
    }
    let mut regions = Vec::with_capacity(rv.regions.len());
    if let Some(p) = &rec.policy
        && let Some(missing) = p
            .regions
            .iter()
            .find(|pr| !rv.regions.iter().any(|r| r.name == pr.name))
    {
        return Err(bad(
            ErrorCode::BaselineIncomplete,
            format!(
                "the CoRIM has no region {:?}, which the assigned policy names",
                missing.name
            ),
        ));
    }
    for r in &rv.regions {
        let (class, severity) = match &rec.policy {
            Some(p) => {
                let Some(pr) = p.regions.iter().find(|pr| pr.name == r.name) else {
                    return Err(refused(
                        ErrorCode::CorimUnknownRegion,
                        format!(
                            "the CoRIM's region {:?} is not in the VM's assigned policy",
                            r.name
                        ),
                    ));
                };
                if r.hash != p.hash {
                    return Err(refused(
                        ErrorCode::CorimHashMismatch,
                        format!(
                            "region {:?} is hashed with {}; the assigned policy hashes with {}",
                            r.name,
                            r.hash.name(),
                            p.hash.name()
                        ),
                    ));
                }
                (pr.class, pr.severity)
            }
            None => (r.class, r.severity),
        };
        regions.push(NewBaselineRegion {
            name: r.name.clone(),
            class,
            severity,
            hash: r.hash,
            leaves: r.leaves.clone(),
            ranges: r.ranges.clone().unwrap_or_default(),
        });
    }
    let signer = format!("{} ({})", opened.signer, hex::encode(opened.signer_kid));
    let version = st
        .store
        .promote_baseline(
            &vm,
            BaselineSource::Corim {
                signed: &signed,
                signer: &signer,
                corim_id: &rv.corim_id,
                issuer: opened.issuer.as_deref(),
            },
            &rv.policy_digest,
            &regions,
            rv.kernel.as_ref(),
            &who,
            now(),
        )
        .await?;
    tracing::info!(
        "VM {vm}: baseline version {version} imported from CoRIM {:?} signed by {}",
        rv.corim_id,
        opened.signer
    );
    Ok(
        HttpResponse::Created().json(vmseal_client::BaselineImported {
            vm_id: vm,
            version,
            corim_id: rv.corim_id.clone(),
            signer: opened.signer,
            signer_kid: hex::encode(opened.signer_kid),
            issuer: opened.issuer,
            regions: rv.regions.len() as u64,
        }),
    )
}
