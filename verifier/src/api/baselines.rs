//! Golden baselines: promoting a snapshot's page hashes, and serving the active baseline.

use actix_web::{HttpResponse, web};
use vmseal_client::ErrorCode;
use vmseal_sealer::merkle::{Digest, HashAlg, MerkleTree};

use crate::api::auth::{AdminVm, ReadableVm};
use crate::api::error::{ApiError, bad};
use crate::api::evidence::stored_result;
use crate::now;
use crate::state::AppState;
use crate::store::NewBaselineRegion;

/// `POST /v1/vms/{vm}/baselines` (admin): promote the page hashes of an appraised snapshot to a
/// new golden baseline version. Each region's leaves must reproduce the root the snapshot's
/// signed evidence carried.
#[utoipa::path(post, path = "/v1/vms/{vm}/baselines", tag = "vms", params(("vm" = String, Path, description = "VM id")),
    request_body = vmseal_client::PromoteBaseline,
    responses((status = 201, description = "The new version", body = vmseal_client::BaselinePromoted), (status = 422, description = "baseline_mismatch", body = vmseal_client::ApiErrorBody)))]
pub(crate) async fn promote_baseline(
    AdminVm { who, vm }: AdminVm,
    body: web::Json<vmseal_client::PromoteBaseline>,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    let stored = st.store.appraisal_result(&vm, b.seq).await?;
    let result = stored_result(&stored)?;
    let alg = HashAlg::from_name(&result.hash_alg)
        .ok_or_else(|| ApiError::Internal("stored appraisal lacks hash_alg".into()))?;
    let policy_digest: Digest = hex::decode(&result.policy_digest)
        .ok()
        .and_then(|d| d.try_into().ok())
        .ok_or_else(|| ApiError::Refused {
            code: ErrorCode::BaselinePolicyUnknown,
            message: format!(
                "snapshot #{} was appraised before the verifier recorded policies; promote a newer snapshot",
                b.seq
            ),
        })?;
    let rec = st.store.vm_record(&vm).await?;
    if let Some(p) = rec.policy_digest
        && p != policy_digest
    {
        return Err(ApiError::Refused {
            code: ErrorCode::PolicyMismatch,
            message: format!(
                "snapshot #{} was captured under policy {}, not the VM's assigned policy {}",
                b.seq,
                hex::encode(policy_digest),
                hex::encode(p)
            ),
        });
    }
    let signed = &result.regions;
    // With a policy text, the verifier's regions, classes and severities are the policy's: the
    // snapshot must hold each region whole, and its labels are not taken.
    if let Some(p) = &rec.policy {
        for pr in &p.regions {
            let Some(s) = signed.iter().find(|s| s.name == pr.name) else {
                return Err(bad(
                    ErrorCode::BaselineIncomplete,
                    format!(
                        "snapshot #{} has no region {:?}, which the assigned policy names",
                        b.seq, pr.name
                    ),
                ));
            };
            if let vmseal_policy::Sampling::Pages(k) = pr.sampling
                && s.pages <= k
                && result.nonce
            {
                return Err(bad(
                    ErrorCode::BaselineSampled,
                    format!(
                        "region {:?} of snapshot #{} holds a sample; a baseline needs it whole: capture with `vmseal-host capture --all-pages` and promote that",
                        pr.name, b.seq
                    ),
                ));
            }
        }
    }
    let labels = |name: &str, s: &vmseal_client::AppraisedRegion| {
        if let Some(pr) = rec
            .policy
            .as_ref()
            .and_then(|p| p.regions.iter().find(|r| r.name == name))
        {
            return Ok((pr.class, pr.severity));
        }
        Ok::<_, ApiError>((s.class, s.severity))
    };
    let mut regions = Vec::new();
    for s in signed {
        let name = s.name.as_str();
        let given = b.regions.iter().find(|r| r.name == name).ok_or_else(|| {
            bad(
                ErrorCode::BaselineIncomplete,
                format!(
                    "region {name:?} of snapshot #{} has no leaves in the request",
                    b.seq
                ),
            )
        })?;
        let raw = hex::decode(&given.leaves).map_err(|_| {
            bad(
                ErrorCode::BadLeaves,
                format!("region {name:?}: leaves are not hex"),
            )
        })?;
        if raw.is_empty() || raw.len() % 32 != 0 {
            return Err(bad(
                ErrorCode::BadLeaves,
                format!("region {name:?}: leaves are not whole 32-byte digests"),
            ));
        }
        let leaves: Vec<Digest> = raw
            .chunks_exact(32)
            .filter_map(|c| c.try_into().ok())
            .collect();
        let tree = MerkleTree::from_leaves(alg, leaves.clone())
            .map_err(|e| bad(ErrorCode::BadLeaves, e.to_string()))?;
        if hex::encode(tree.root()) != s.root {
            return Err(ApiError::Refused {
                code: ErrorCode::BaselineMismatch,
                message: format!(
                    "region {name:?}: the leaves do not give the root signed in snapshot #{}",
                    b.seq
                ),
            });
        }
        let (class, severity) = labels(name, s)?;
        regions.push(NewBaselineRegion {
            name: name.to_owned(),
            class,
            severity,
            hash: alg,
            leaves,
            ranges: s.ranges.clone(),
        });
    }
    // The golden kernel state: the snapshot's kernel claim, as the host kept it, must be the one
    // whose digest the appraisal kept.
    let kernel = match (&result.kernel_digest, &b.kernel_objects) {
        (None, None) => None,
        (Some(want), Some(given)) => {
            let bytes = hex::decode(given)
                .map_err(|_| bad(ErrorCode::BadLeaves, "kernel_objects is not hex".to_owned()))?;
            if hex::encode(HashAlg::Sha256.hash(&[&bytes])) != *want {
                return Err(ApiError::Refused {
                    code: ErrorCode::BaselineMismatch,
                    message: format!(
                        "the kernel objects are not the ones signed in snapshot #{}",
                        b.seq
                    ),
                });
            }
            Some(
                vmseal_sealer::claims::KernelObjects::decode(&bytes)
                    .map_err(|e| bad(ErrorCode::BadLeaves, format!("kernel_objects: {e}")))?,
            )
        }
        (Some(_), None) => {
            return Err(bad(
                ErrorCode::BaselineIncomplete,
                format!(
                    "snapshot #{} carries kernel objects: give them (`kernel_objects`; the host's baseline file holds them)",
                    b.seq
                ),
            ));
        }
        (None, Some(_)) => {
            return Err(bad(
                ErrorCode::BaselineMismatch,
                format!("snapshot #{} carries no kernel objects", b.seq),
            ));
        }
    };
    let version = st
        .store
        .promote_baseline(
            &vm,
            crate::store::BaselineSource::Snapshot(b.seq),
            &policy_digest,
            &regions,
            kernel.as_ref(),
            &who,
            now(),
        )
        .await?;
    Ok(
        HttpResponse::Created().json(vmseal_client::BaselinePromoted {
            vm_id: vm,
            version,
            source_seq: b.seq,
        }),
    )
}

/// `GET /v1/vms/{vm}/baseline` (admin, viewer, or the VM's host agent): the active golden
/// baseline's page hashes, so an agent computes its deltas against exactly what the verifier
/// appraises with.
#[utoipa::path(get, path = "/v1/vms/{vm}/baseline", tag = "vms", params(("vm" = String, Path, description = "VM id")),
    responses((status = 200, description = "The active golden baseline", body = vmseal_client::ActiveBaseline),
        (status = 404, description = "not_found: no such VM; no_baseline: none promoted or imported yet", body = vmseal_client::ApiErrorBody)))]
pub(crate) async fn active_baseline(
    ReadableVm { vm, .. }: ReadableVm,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let b = st.store.active_baseline(&vm).await?.ok_or_else(|| {
        ApiError::NoBaseline(format!(
            "VM {vm:?} has no golden baseline yet: an admin promotes one (`admin promote-baseline`)"
        ))
    })?;
    let alg = b.regions.first().map_or("sha256", |r| r.tree.alg().name());
    Ok(HttpResponse::Ok().json(vmseal_client::ActiveBaseline {
        vm_id: vm,
        version: b.version,
        policy_digest: b.policy_digest.map(hex::encode),
        hash_alg: alg.to_owned(),
        regions: b
            .regions
            .iter()
            .map(|r| vmseal_client::ActiveBaselineRegion {
                name: r.name.clone(),
                class: r.class,
                severity: r.severity,
                pages: r.tree.leaf_count(),
                leaves: hex::encode(r.tree.leaves().concat()),
            })
            .collect(),
    }))
}
