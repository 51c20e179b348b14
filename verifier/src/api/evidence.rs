//! Evidence: nonces, submission (authorize → verify → appraise → store, one transaction) and
//! the appraisals of a VM.

use actix_web::{HttpRequest, HttpResponse, web};
use time::OffsetDateTime;
use vmseal_client::ErrorCode;
use vmseal_sealer::verify::verify_evidence;

use crate::api::auth::{admin_or_agent_of, role, vm_reader};
use crate::api::body::{InFlight, MAX_BODY, cpu, read_body};
use crate::api::error::{ApiError, bad};
use crate::api::vms::chain_head;
use crate::appraise::{ChainPoint, Freshness, VmRecord, appraise, range_pairs};
use crate::now;
use crate::pki::Role;
use crate::state::AppState;
use crate::store::Verdict;

#[utoipa::path(post, path = "/v1/vms/{vm}/nonce", tag = "evidence", params(("vm" = String, Path, description = "VM id")),
    responses((status = 200, description = "Single use", body = vmseal_client::Nonce), (status = 403, description = "Not this VM's host agent", body = vmseal_client::ApiErrorBody)))]
pub(crate) async fn issue_nonce(
    req: HttpRequest,
    path: web::Path<String>,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let vm = path.into_inner();
    let rec = st.store.vm_record(&vm).await?;
    admin_or_agent_of(&req, &rec.host_id)?;
    let n = st
        .store
        .issue_nonce(&vm, st.settings.nonce_ttl, now())
        .await?;
    Ok(HttpResponse::Ok().json(vmseal_client::Nonce::new(&n, st.settings.nonce_ttl)))
}

/// Query of `GET /v1/vms/{vm}/appraisals`.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct AppraisalsQuery {
    /// How many, newest first (1..=500; 20 when absent).
    pub(crate) limit: Option<u32>,
}

/// Most appraisals one listing returns.
pub(crate) const MAX_LISTED_APPRAISALS: u32 = 500;

/// `GET /v1/vms/{vm}/appraisals?limit=N` (admin, viewer, or the VM's host agent): the VM's most recent
/// accepted appraisals, newest first, each exactly as it was returned when the evidence was
/// submitted. Refusals are not listed: they change nothing stored (see /metrics for their count).
#[utoipa::path(get, path = "/v1/vms/{vm}/appraisals", tag = "evidence",
    params(("vm" = String, Path, description = "VM id"), ("limit" = Option<u32>, Query, description = "1..=500, default 20")),
    responses((status = 200, description = "Newest first", body = vmseal_client::AppraisalList), (status = 400, description = "bad_query", body = vmseal_client::ApiErrorBody)))]
pub(crate) async fn list_appraisals(
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<AppraisalsQuery>,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let vm = path.into_inner();
    let limit = query.limit.unwrap_or(20);
    if !(1..=MAX_LISTED_APPRAISALS).contains(&limit) {
        return Err(bad(
            ErrorCode::BadQuery,
            format!("limit must be 1..={MAX_LISTED_APPRAISALS}, not {limit}"),
        ));
    }
    let rec = st.store.vm_record(&vm).await?;
    vm_reader(&req, &rec)?;
    let appraisals = st
        .store
        .recent_appraisals(&vm, limit)
        .await?
        .iter()
        .map(|r| stored_result(r))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(HttpResponse::Ok().json(vmseal_client::AppraisalList {
        vm_id: vm,
        appraisals,
    }))
}

/// `POST /v1/vms/{vm}/evidence` (the VM's agent): body = COSE_Sign1 evidence. Returns the
/// appraisal, or a refusal with its code; a refusal changes nothing stored.
#[utoipa::path(post, path = "/v1/vms/{vm}/evidence", tag = "evidence", params(("vm" = String, Path, description = "VM id")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "COSE_Sign1 snapshot evidence"),
    responses((status = 200, description = "The appraisal, with `regions`, `hash_alg` and the signed `ear`", body = vmseal_client::AppraisalResult),
        (status = 422, description = "Refused; the code names the check (seq_gap, bad_nonce, stale, policy_mismatch, …) and `chain` says where the VM's chain stands", body = vmseal_client::ApiErrorBody)))]
pub(crate) async fn submit_evidence(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let t0 = std::time::Instant::now();
    let vm = path.into_inner();
    let r = submission(&req, &vm, payload, &st).await;
    st.metrics.submission_took(t0.elapsed());
    match &r {
        Ok(Submitted::Appraised { tier, .. }) => st.metrics.appraised(tier.as_str()),
        Ok(Submitted::Duplicate(_)) => st.metrics.duplicate(),
        Err(e) => st.metrics.refused(e.code().as_str()),
    }
    r.map(|s| {
        let (Submitted::Appraised { json, .. } | Submitted::Duplicate(json)) = s;
        HttpResponse::Ok()
            .content_type("application/json")
            .body(json)
    })
}

/// What became of accepted evidence.
pub(crate) enum Submitted {
    /// Appraised now: the tier, and the result (JSON).
    Appraised {
        /// Tier.
        tier: String,
        /// The result.
        json: String,
    },
    /// The VM's last accepted evidence again (an agent retrying after a lost answer): its stored
    /// result, marked `"duplicate": true`; nothing is stored or raised.
    Duplicate(String),
}

/// One submission, in the order that keeps work behind permission: a slot of the client's
/// in-flight budget, who it is, how much it may send (by the VM's baseline), then the body; a
/// refusal of a known VM's evidence is an event, answered with where the VM's chain stands.
pub(crate) async fn submission(
    req: &HttpRequest,
    vm: &str,
    payload: web::Payload,
    st: &web::Data<AppState>,
) -> Result<Submitted, ApiError> {
    let _slot = InFlight::take(st, req)?;
    let rec = authorize_submission(req, vm, st).await?;
    let limit = evidence_limit(st, &rec).await?;
    let body = read_body(
        payload,
        limit,
        &format!(
            "evidence (this VM's baseline allows {} KiB and {EVIDENCE_BYTES_PER_PAGE} bytes per baseline page)",
            EVIDENCE_BASE >> 10
        ),
    )
    .await?;
    // Retrying is idempotent: the last accepted evidence, byte for byte, gets its stored result.
    if let Some(last) = rec.last
        && last.digest == vmseal_sealer::evidence::evidence_digest(&body)
    {
        let mut v = stored_result(&st.store.appraisal_result(vm, last.seq).await?)?;
        v.duplicate = true;
        let json = serde_json::to_string(&v).map_err(|e| ApiError::Internal(e.to_string()))?;
        return Ok(Submitted::Duplicate(json));
    }
    let r = appraise_submission(vm, &rec, body.clone(), st).await;
    if let Err(ApiError::Refused { code, message }) = &r {
        refusal_event(st, &rec, code.as_str(), message, &body).await;
    }
    match r {
        Ok((tier, json)) => Ok(Submitted::Appraised { tier, json }),
        Err(e @ (ApiError::Refused { .. } | ApiError::Conflict(_))) => {
            // As it stands now: a conflict means another submission moved it meanwhile.
            let head = match st.store.vm_record(vm).await {
                Ok(now) => chain_head(&now),
                Err(_) => chain_head(&rec),
            };
            Err(ApiError::WithChain(Box::new(e), head))
        }
        Err(e) => Err(e),
    }
}

/// The VM's record, when the client is the agent of the VM's host (the only one who submits).
pub(crate) async fn authorize_submission(
    req: &HttpRequest,
    vm: &str,
    st: &AppState,
) -> Result<VmRecord, ApiError> {
    let rec = st.store.vm_record(vm).await?;
    match role(req)? {
        Role::Agent(h) if h == rec.host_id => {}
        Role::Agent(h) => {
            return Err(ApiError::Forbidden(format!(
                "agent {h:?} may not submit evidence for VM {vm:?} of host {:?}",
                rec.host_id
            )));
        }
        Role::Admin(_) | Role::Enroll(_) | Role::Viewer(_) => {
            return Err(ApiError::Forbidden(
                "evidence comes from the VM's host agent (its agent certificate)".into(),
            ));
        }
    }
    Ok(rec)
}

/// Refused evidence of a known VM from its own host's agent is an event: audited, and an
/// `evidence_refused` alert (one per VM and code while unresolved, counting the rest). A failure
/// to record it is logged; the refusal itself stands either way.
pub(crate) async fn refusal_event(
    st: &AppState,
    rec: &VmRecord,
    code: &str,
    message: &str,
    body: &[u8],
) {
    // The sequence number the evidence claims, when its claims can be read at all.
    let seq = vmseal_sealer::evidence::DecodedEvidence::decode(body)
        .ok()
        .and_then(|d| vmseal_sealer::claims::Claims::decode(&d.payload).ok())
        .map(|c| c.seq);
    let r = crate::store::Refusal {
        vm_id: &rec.vm_id,
        code,
        message,
        seq,
        threshold: rec.threshold,
    };
    match st.store.record_refusal(&r, now()).await {
        Ok(Some(alert)) => crate::alerts::announce(st, &alert),
        Ok(None) => {}
        Err(e) => tracing::error!(
            "refused evidence of VM {} ({code}) could not be recorded: {e}",
            rec.vm_id
        ),
    }
}

/// What the CPU work of one submission decided: the appraisal, the evidence it was made of, and
/// the result as answered (JSON, with its signed EARs).
struct Judged {
    appraisal: crate::appraise::Appraisal,
    evidence: vmseal_sealer::verify::VerifiedEvidence,
    tier: String,
    json: String,
}

/// Appraise verified evidence and sign the result: the part of a submission after the database
/// reads, run on the verification pool.
fn judge(
    st: &AppState,
    v: vmseal_sealer::verify::VerifiedEvidence,
    rec: &VmRecord,
    baseline: Option<&crate::appraise::Baseline>,
    fresh: Freshness,
) -> Result<Judged, ApiError> {
    let a = appraise(&v, rec, baseline, fresh).map_err(|e| ApiError::Refused {
        code: e.code(),
        message: e.to_string(),
    })?;
    // Keep the region roots with the appraisal: a baseline is promoted from them.
    let regions = v
        .claims
        .regions
        .iter()
        .map(|r| vmseal_client::AppraisedRegion {
            name: r.name.clone(),
            class: r.class,
            severity: r.severity,
            pages: r.pages,
            root: hex::encode(r.root),
            ranges: range_pairs(&r.ranges),
        })
        .collect();
    let ear = st
        .ear
        .sign(&a, v.claims.nonce.as_deref(), fresh.now)
        .map_err(|e| ApiError::Internal(format!("signing the EAR: {e}")))?;
    // The same result in the draft's CBOR serialisation (COSE_Sign1), base64.
    let ear_cbor = st
        .ear
        .sign_cose(&a, v.claims.nonce.as_deref(), fresh.now)
        .map_err(|e| ApiError::Internal(format!("signing the CBOR EAR: {e}")))?;
    let result = a.result(
        ear,
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, ear_cbor),
        regions,
        &v.claims,
    );
    let json = serde_json::to_string(&result).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Judged {
        tier: a.tier.name().to_owned(),
        appraisal: a,
        evidence: v,
        json,
    })
}

/// Verify, appraise, sign and store one evidence. The CPU work is one job on the verification
/// pool — verification, appraisal, the EAR signatures — unless the evidence answers a nonce:
/// then the nonce is looked up between verification and appraisal (a valid one admits evidence
/// older than `max_age`), and the appraisal is a second job.
pub(crate) async fn appraise_submission(
    vm: &str,
    rec: &VmRecord,
    body: web::Bytes,
    st: &web::Data<AppState>,
) -> Result<(String, String), ApiError> {
    let mut trust = st.evidence_trust.clone();
    trust.pinned_intermediates = vec![rec.intermediate_digest];
    let t = OffsetDateTime::now_utc();
    let baseline = st.baselines.get(&st.store, rec).await?;
    let fresh = Freshness {
        now: t.unix_timestamp(),
        max_age: st.settings.max_age,
        skew: 30,
        nonce_accepted: false,
    };
    enum Step {
        Judged(Box<Judged>),
        NonceToCheck(Box<vmseal_sealer::verify::VerifiedEvidence>),
    }
    let step = {
        let (st2, rec, baseline) = (st.clone(), rec.clone(), baseline.clone());
        cpu(st, move || -> Result<Step, ApiError> {
            let v = verify_evidence(&body, &trust, t).map_err(|e| ApiError::Refused {
                code: ErrorCode::EvidenceInvalid,
                message: e.to_string(),
            })?;
            if !v.pinned {
                return Err(ApiError::Refused {
                    code: ErrorCode::NotEnrolled,
                    message: "evidence is not signed under the host's enrolled intermediate; \
                              re-enrol the host"
                        .into(),
                });
            }
            if v.claims.nonce.is_some() {
                return Ok(Step::NonceToCheck(Box::new(v)));
            }
            judge(&st2, v, &rec, baseline.as_deref(), fresh).map(|j| Step::Judged(Box::new(j)))
        })
        .await??
    };
    let j = match step {
        Step::Judged(j) => *j,
        Step::NonceToCheck(v) => {
            // The nonce is only looked at here; it is consumed with the appraisal's write, so
            // refused evidence changes nothing stored.
            let nonce = v.claims.nonce.clone().unwrap_or_default();
            let nonce_accepted = st.store.nonce_valid(vm, &nonce, fresh.now).await?;
            let fresh = Freshness {
                nonce_accepted,
                ..fresh
            };
            let (st2, rec) = (st.clone(), rec.clone());
            cpu(st, move || {
                judge(&st2, *v, &rec, baseline.as_deref(), fresh)
            })
            .await??
        }
    };
    if j.evidence.claims_profile == vmseal_sealer::claims::ClaimsProfile::V1 {
        tracing::warn!(
            vm,
            "evidence in the previous claims profile ({}) is read for this release only: upgrade \
             the host's vmseal-host (or vmseal-shim) to write {}",
            vmseal_sealer::claims::PROFILE_V1,
            vmseal_sealer::claims::PROFILE
        );
    }
    let (a, v) = (&j.appraisal, &j.evidence);
    // One transaction: the chain advances, the nonce is used up (and the capture request it
    // answered is done), the appraisal and its audit entry are stored, and an alert it raises
    // enters the outbox — or nothing is.
    let plan = crate::alerts::plan(rec, a);
    let raised = st
        .store
        .record_appraisal(
            vm,
            rec.last.map(|l| l.seq),
            ChainPoint {
                seq: a.seq,
                digest: v.digest,
            },
            &Verdict {
                score: a.score,
                tier: &j.tier,
                json: &j.json,
                nonce: v.claims.nonce.as_deref(),
                layout: a.layout_update.as_ref(),
            },
            &plan,
            t.unix_timestamp(),
        )
        .await?;
    if let Some(alert) = raised {
        crate::alerts::announce(st, &alert);
    }
    Ok((j.tier, j.json))
}

/// An appraisal as stored (exactly as it was answered).
pub(crate) fn stored_result(json: &str) -> Result<vmseal_client::AppraisalResult, ApiError> {
    serde_json::from_str(json)
        .map_err(|e| ApiError::Internal(format!("a stored appraisal does not read back: {e}")))
}

/// Evidence may always be this large: certificates (ML-DSA), claims with regions and ranges.
pub const EVIDENCE_BASE: usize = 4 << 20;

/// And this much more per page of the VM's golden baseline: a delta entry (index, hash) for every
/// page, with room for CBOR framing.
pub const EVIDENCE_BYTES_PER_PAGE: usize = 64;

/// The largest evidence `rec`'s VM may submit: [`EVIDENCE_BASE`] plus
/// [`EVIDENCE_BYTES_PER_PAGE`] per page of its active baseline, at most [`MAX_BODY`].
pub(crate) async fn evidence_limit(st: &AppState, rec: &VmRecord) -> Result<usize, ApiError> {
    let pages: u64 = st
        .baselines
        .get(&st.store, rec)
        .await?
        .map_or(0, |b| b.regions.iter().map(|r| r.tree.leaf_count()).sum());
    Ok(EVIDENCE_BASE
        .saturating_add((pages as usize).saturating_mul(EVIDENCE_BYTES_PER_PAGE))
        .min(MAX_BODY))
}
