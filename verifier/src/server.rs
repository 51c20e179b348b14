//! The HTTPS service: actix-web over rustls with mandatory client certificates.
//!
//! A client without a certificate from the verifier's CA never reaches a handler (rustls refuses
//! the handshake); handlers then check the role in the certificate: admins manage hosts, VMs and
//! baselines; an agent acts only for its own host's VMs. Every error is JSON
//! `{"code": "...", "message": "..."}` with a stable code.

use std::sync::Arc;
use vmseal_client::ErrorCode;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use serde::Serialize;
use time::OffsetDateTime;
use vmseal_sealer::merkle::{Digest, HashAlg, MerkleTree};
use vmseal_sealer::verify::{AnchorRequirement, TrustConfig, verify_evidence};

use crate::appraise::{ChainPoint, Freshness, ModuleRule, VmRecord, appraise, range_pairs};
use crate::pki::{Ca, Role, role_of};
use crate::store::{NewBaselineRegion, Store, StoreError, Verdict};
pub use vmseal_client::{BaselineLeaves, NewVm, PromoteBaseline};

/// Largest request body accepted (evidence with a large delta, baselines of big VMs).
pub const MAX_BODY: usize = 64 << 20;

/// An API error: a stable code, an HTTP status, and a message that says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// No usable client certificate role.
    #[error("{0}")]
    Forbidden(String),
    /// Unknown VM or host.
    #[error("{0}")]
    NotFound(String),
    /// Malformed request.
    #[error("{message}")]
    BadRequest {
        /// Code.
        code: ErrorCode,
        /// Message.
        message: String,
    },
    /// The evidence or request was understood and refused.
    #[error("{message}")]
    Refused {
        /// Code.
        code: ErrorCode,
        /// Message.
        message: String,
    },
    /// The VM has no golden baseline yet.
    #[error("{0}")]
    NoBaseline(String),
    /// Another request changed the same state first.
    #[error("{0}")]
    Conflict(String),
    /// A host id is claimed by another hardware root than the one that enrolled it.
    #[error("{0}")]
    IdentityChanged(String),
    /// The request body is larger than the service accepts.
    #[error("{0}")]
    TooLarge(String),
    /// The client has too many requests in flight.
    #[error("{0}")]
    TooMany(String),
    /// The database cannot be reached now; the client should retry.
    #[error("{0}")]
    Unavailable(String),
    /// A server-side failure.
    #[error("internal error: {0}")]
    Internal(String),
    /// An error about a VM's evidence, answered with where the VM's chain stands (the agent
    /// builds its next snapshot on it).
    #[error("{0}")]
    WithChain(Box<ApiError>, vmseal_client::ChainHead),
}

impl ApiError {
    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Forbidden(_) => ErrorCode::Forbidden,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::NoBaseline(_) => ErrorCode::NoBaseline,
            Self::BadRequest { code, .. } | Self::Refused { code, .. } => *code,
            Self::Conflict(_) => ErrorCode::Conflict,
            Self::IdentityChanged(_) => ErrorCode::HostIdentityChanged,
            Self::TooLarge(_) => ErrorCode::TooLarge,
            Self::TooMany(_) => ErrorCode::TooManyRequests,
            Self::Unavailable(_) => ErrorCode::Unavailable,
            Self::Internal(_) => ErrorCode::Internal,
            Self::WithChain(e, _) => e.code(),
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: ErrorCode,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    chain: Option<&'a vmseal_client::ChainHead>,
}

impl ResponseError for ApiError {
    /// The code's status: one table ([`ErrorCode::status`]) for the server and its clients.
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.code().status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
    fn error_response(&self) -> HttpResponse {
        // Every refusal is logged with its code (the message says why and what to do).
        match self {
            Self::Internal(m) => tracing::error!(code = "internal", "{m}"),
            Self::Forbidden(_)
            | Self::NotFound(_)
            | Self::NoBaseline(_)
            | Self::TooMany(_)
            | Self::Unavailable(_) => {
                tracing::debug!(code = self.code().as_str(), "{self}")
            }
            _ => tracing::warn!(code = self.code().as_str(), "refused: {self}"),
        }
        let mut r = HttpResponse::build(self.status_code());
        let (inner, chain) = match self {
            Self::WithChain(e, c) => (e.as_ref(), Some(c)),
            e => (e, None),
        };
        if let Self::Unavailable(_) | Self::TooMany(_) = inner {
            r.insert_header(("retry-after", "2"));
        }
        r.json(ErrorBody {
            code: self.code(),
            message: self.to_string(),
            chain,
        })
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            // Registering is the fix only for a VM; enrolling for a host; else it just is not.
            StoreError::NotFound(w) if w.starts_with("VM ") => Self::NotFound(format!(
                "{w} is not registered: an admin registers it (`vmseal-verifier admin register-vm --vm-id VM --host-id HOST`)"
            )),
            StoreError::NotFound(w) if w.starts_with("host ") => Self::NotFound(format!(
                "{w} is not enrolled: its agent enrols with an admin's token (`vmseal-host enroll`)"
            )),
            StoreError::NotFound(w) => Self::NotFound(format!("{w} does not exist")),
            StoreError::Conflict(m) => Self::Conflict(m),
            StoreError::IdentityChanged(m) => Self::IdentityChanged(m),
            StoreError::ChainsExist(m) => Self::Refused {
                code: ErrorCode::ChainsExist,
                message: m,
            },
            StoreError::NonceUsed => Self::Refused {
                code: ErrorCode::BadNonce,
                message:
                    "the nonce was used by another submission meanwhile, or expired; request a \
                          new one"
                        .into(),
            },
            StoreError::Unavailable(why) => {
                tracing::warn!("database unavailable: {why}");
                Self::Unavailable(
                    "the verifier's database is unavailable; nothing was changed: retry shortly"
                        .into(),
                )
            }
            other => Self::Internal(other.to_string()),
        }
    }
}

pub(crate) fn bad(code: ErrorCode, message: impl Into<String>) -> ApiError {
    ApiError::BadRequest {
        code,
        message: message.into(),
    }
}

/// The client certificate of a connection, stashed by `on_connect`: DER, and its serial (hex) for
/// the revocation check of every request.
#[derive(Debug, Clone)]
pub struct PeerCert(pub Vec<u8>, pub String);

/// Revoked client-certificate serials, as this replica last read them (every
/// [`REVOCATION_REFRESH`], and at once after an enrollment or a disable on this replica).
#[derive(Debug, Default)]
pub struct Revocations(std::sync::RwLock<std::collections::HashSet<String>>);

/// How often each replica re-reads the revocation table: a certificate revoked on another replica
/// is refused here within this long.
pub const REVOCATION_REFRESH: std::time::Duration = std::time::Duration::from_secs(5);

impl Revocations {
    /// Re-read the table; on a database error the previous set stays (logged).
    pub async fn refresh(&self, store: &Store) {
        match store.revoked_serials().await {
            Ok(s) => {
                if let Ok(mut w) = self.0.write() {
                    *w = s;
                }
            }
            Err(e) => tracing::warn!("reading revoked certificates: {e}; keeping the last list"),
        }
    }

    /// Whether `serial` (hex) is revoked.
    pub fn contains(&self, serial: &str) -> bool {
        self.0.read().map(|s| s.contains(serial)).unwrap_or(true)
    }
}

/// Service settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Evidence without a nonce must be at most this old, seconds.
    pub max_age: i64,
    /// Nonce lifetime, seconds.
    pub nonce_ttl: i64,
    /// Trust used to verify an intermediate's anchors at enrollment.
    pub enrollment_trust: TrustConfig,
    /// Default alert threshold of new VMs.
    pub default_threshold: u8,
    /// What enrolling hosts' hardware must be (a token may carry its own).
    pub hardware: vmseal_client::HardwarePolicy,
    /// How often the audit chain's head is checkpointed (signed), when it moved.
    pub audit_checkpoint_every: std::time::Duration,
    /// The state directory, when serving from one: its EAR certificate is renewed in place before
    /// it expires, and its other certificates are watched.
    pub state_dir: Option<std::path::PathBuf>,
    /// Besides this verifier's own key, the keys whose signed CoRIMs may be imported as golden
    /// baselines (`corim_signers`).
    pub corim_signers: Vec<vmseal_client::corim::TrustedKey>,
}

/// Shared state of the handlers.
pub struct AppState {
    /// Storage.
    pub store: Store,
    /// The CA that issues agent certificates.
    pub ca: Ca,
    /// Settings.
    pub settings: Settings,
    /// Baseline trees by (VM, version): versions are immutable, so a cached tree never goes stale.
    pub baselines: BaselineCache,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Wakes long-polling agents when a capture request is made on this replica.
    pub capture_wake: tokio::sync::Notify,
    /// Wakes this replica's webhook delivery worker when it raised an alert.
    pub alert_wake: tokio::sync::Notify,
    /// Signs attestation results (EAR).
    pub ear: crate::ear::EarSigner,
    /// Signs golden baselines exported as CoRIM (`corim.key`).
    pub corim_key: vmseal_client::corim::Ed25519CorimKey,
    /// Revoked client certificates.
    pub revoked: Revocations,
    /// CPU-heavy verification (signature chain, Merkle diff) runs on the blocking pool, at most
    /// one task per core at a time: a host flooding evidence queues here, not on the async
    /// workers every other client needs.
    pub cpu: tokio::sync::Semaphore,
    /// Evidence submissions in flight per client certificate (serial).
    pub in_flight: std::sync::Mutex<std::collections::HashMap<String, usize>>,
    /// The trust evidence is verified under, but for the host's pinned intermediate (built once:
    /// the default SNP roots are parsed certificates).
    evidence_trust: TrustConfig,
}

impl AppState {
    /// The state of a service over `store`, issuing certificates from `ca`, signing results
    /// with `ear` and exported baselines with `corim_key`.
    pub fn new(
        store: Store,
        ca: Ca,
        ear: crate::ear::EarSigner,
        corim_key: vmseal_client::corim::Ed25519CorimKey,
        settings: Settings,
    ) -> Self {
        Self {
            store,
            ca,
            ear,
            corim_key,
            settings,
            baselines: BaselineCache::default(),
            metrics: Metrics::default(),
            capture_wake: tokio::sync::Notify::new(),
            alert_wake: tokio::sync::Notify::new(),
            revoked: Revocations::default(),
            cpu: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            ),
            in_flight: std::sync::Mutex::new(std::collections::HashMap::new()),
            evidence_trust: TrustConfig {
                require: AnchorRequirement {
                    tpm: false,
                    snp: false,
                },
                ..TrustConfig::default()
            },
        }
    }
}

/// Prometheus metrics of the service.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: prometheus::Registry,
    appraisals: prometheus::IntCounterVec,
    refusals: prometheus::IntCounterVec,
    seconds: prometheus::Histogram,
    alerts: prometheus::IntCounterVec,
    deliveries: prometheus::IntCounterVec,
    duplicates: prometheus::IntCounter,
}

impl Default for Metrics {
    fn default() -> Self {
        let registry = prometheus::Registry::new();
        let appraisals = prometheus::IntCounterVec::new(
            prometheus::Opts::new("vmseal_appraisals_total", "Accepted appraisals by tier"),
            &["tier"],
        )
        .unwrap_or_else(|_| std::process::abort());
        let refusals = prometheus::IntCounterVec::new(
            prometheus::Opts::new("vmseal_refusals_total", "Refused evidence by error code"),
            &["code"],
        )
        .unwrap_or_else(|_| std::process::abort());
        let seconds = prometheus::Histogram::with_opts(
            prometheus::HistogramOpts::new(
                "vmseal_appraisal_seconds",
                "Time to appraise one evidence",
            )
            .buckets(vec![
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5,
            ]),
        )
        .unwrap_or_else(|_| std::process::abort());
        let alerts = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "vmseal_alerts_raised_total",
                "Alerts this replica raised, by kind",
            ),
            &["kind"],
        )
        .unwrap_or_else(|_| std::process::abort());
        let deliveries = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "vmseal_webhook_deliveries_total",
                "Webhook delivery attempts by outcome (delivered, retry, given_up)",
            ),
            &["outcome"],
        )
        .unwrap_or_else(|_| std::process::abort());
        let duplicates = prometheus::IntCounter::new(
            "vmseal_duplicate_submissions_total",
            "Resubmissions of a VM's last accepted evidence, answered with its stored appraisal",
        )
        .unwrap_or_else(|_| std::process::abort());
        // Registering fresh, uniquely named collectors into a new registry cannot fail.
        let _ = registry.register(Box::new(duplicates.clone()));
        let _ = registry.register(Box::new(appraisals.clone()));
        let _ = registry.register(Box::new(refusals.clone()));
        let _ = registry.register(Box::new(seconds.clone()));
        let _ = registry.register(Box::new(alerts.clone()));
        let _ = registry.register(Box::new(deliveries.clone()));
        Self {
            registry,
            appraisals,
            refusals,
            seconds,
            alerts,
            deliveries,
            duplicates,
        }
    }
}

impl Metrics {
    /// Count an alert raised.
    pub fn alert_raised(&self, kind: &str) {
        self.alerts.with_label_values(&[kind]).inc();
    }

    /// Count a webhook delivery attempt's outcome.
    pub fn delivery(&self, outcome: &str) {
        self.deliveries.with_label_values(&[outcome]).inc();
    }

    /// Text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus::TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out);
        let n = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        out.push_str(&format!(
            "# HELP vmseal_tls_connections_total TLS connections accepted (mutual TLS handshakes)\n\
             # TYPE vmseal_tls_connections_total counter\n\
             vmseal_tls_connections_total {}\n\
             # HELP vmseal_tls_key_exchange_total TLS connections by negotiated key exchange group\n\
             # TYPE vmseal_tls_key_exchange_total counter\n\
             vmseal_tls_key_exchange_total{{group=\"X25519MLKEM768\"}} {}\n\
             vmseal_tls_key_exchange_total{{group=\"classical\"}} {}\n",
            n(&TLS_CONNECTIONS),
            n(&TLS_PQ_CONNECTIONS),
            n(&TLS_CLASSICAL_CONNECTIONS),
        ));
        out
    }
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain")))]
async fn metrics(req: HttpRequest, st: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    role(&req)?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(st.metrics.render()))
}

/// Cache of immutable baseline versions, so an appraisal does not rebuild a tree from the database.
#[derive(Debug, Default)]
pub struct BaselineCache(
    #[allow(clippy::type_complexity)]
    std::sync::Mutex<
        std::collections::HashMap<(String, i64, u64), Arc<crate::appraise::Baseline>>,
    >,
);

impl BaselineCache {
    /// The baseline of `rec`'s VM at its active version (read with the record). Keyed by the VM's
    /// incarnation too: a VM id removed and registered again starts over at version 1.
    async fn get(
        &self,
        store: &Store,
        rec: &VmRecord,
    ) -> Result<Option<Arc<crate::appraise::Baseline>>, StoreError> {
        let Some(version) = rec.baseline_version else {
            return Ok(None);
        };
        let vm = rec.vm_id.as_str();
        let key = (vm.to_owned(), rec.incarnation, version);
        if let Some(b) = self.0.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(Some(b.clone()));
        }
        let Some(b) = store.active_baseline(vm).await? else {
            return Ok(None);
        };
        let b = Arc::new(b);
        // Another request may have promoted a newer version meanwhile; key by what was loaded.
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((vm.to_owned(), rec.incarnation, b.version), b.clone());
        Ok(Some(b))
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

/// The header vmseal's clients send on every request (`vmseal_client::REQUEST_HEADER`).
const REQUEST_HEADER: &str = "x-vmseal-request";

/// A state-changing request must show it was not made cross-site by a browser holding an admin's
/// client certificate: a JSON or octet-stream body (which a page of another origin cannot send
/// without a CORS preflight the service never grants), or vmseal's request header.
fn same_site(req: &HttpRequest) -> Result<(), ApiError> {
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

pub(crate) fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// Liveness: the process answers (whatever its database does).
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process is up: `{\"status\":\"ok\"}` (liveness; the database is not asked)")))]
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// Readiness: the service can do its work now (its database answers).
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "`{\"status\":\"ready\"}`: the database answers"),
        (status = 503, description = "unavailable: the database does not answer", body = vmseal_client::ApiErrorBody)))]
async fn readyz(st: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    st.store.ping().await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "status": "ready" })))
}

/// Parse policy text with the host's own parser: an admin learns of a mistake (with its line and
/// column) when assigning the policy, not at the first refused snapshot.
fn check_policy(text: &str) -> Result<vmseal_policy::Policy, ApiError> {
    vmseal_policy::Policy::parse(text)
        .map_err(|e| bad(ErrorCode::BadPolicy, format!("the policy: {e}")))
}

#[utoipa::path(post, path = "/v1/vms", tag = "vms", request_body = vmseal_client::NewVm,
    responses((status = 201, description = "Registered"), (status = 404, description = "Unknown host", body = vmseal_client::ApiErrorBody),
        (status = 409, description = "VM id taken", body = vmseal_client::ApiErrorBody)))]
async fn register_vm(
    who: Admin,
    body: web::Json<NewVm>,
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
    st.store
        .audit(
            &who,
            "register_vm",
            &serde_json::json!({ "vm": b.vm_id, "host": b.host_id, "threshold": threshold,
                "policy_digest": policy.as_ref().map(|p| hex::encode(p.digest)) })
            .to_string(),
            now(),
        )
        .await?;
    Ok(HttpResponse::Created().json(
        serde_json::json!({ "vm_id": b.vm_id, "host_id": b.host_id, "threshold": threshold }),
    ))
}

/// `GET /v1/vms` (admin or viewer): every VM with its latest score and tier.
#[utoipa::path(get, path = "/v1/vms", tag = "vms",
    responses((status = 200, description = "Every VM, by id", body = vmseal_client::VmList)))]
async fn list_vms(req: HttpRequest, st: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    reader(&req)?;
    Ok(HttpResponse::Ok().json(vmseal_client::VmList {
        vms: st.store.list_vms().await?,
    }))
}

/// `POST /v1/vms/{vm}/threshold` (admin).
#[utoipa::path(post, path = "/v1/vms/{vm}/threshold", tag = "vms", params(("vm" = String, Path, description = "VM id")),
    request_body = vmseal_client::SetThreshold,
    responses((status = 200, description = "Set"), (status = 404, description = "Unknown VM", body = vmseal_client::ApiErrorBody)))]
async fn set_threshold(
    who: Admin,
    path: web::Path<String>,
    body: web::Json<vmseal_client::SetThreshold>,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let who = who.0;
    let vm = path.into_inner();
    if body.threshold > 100 {
        return Err(bad(ErrorCode::BadThreshold, "threshold must be 0 to 100"));
    }
    st.store.set_threshold(&vm, body.threshold).await?;
    st.store
        .audit(
            &who,
            "set_threshold",
            &serde_json::json!({ "vm": vm, "threshold": body.threshold }).to_string(),
            now(),
        )
        .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "vm_id": vm, "threshold": body.threshold })))
}

/// `POST /v1/vms/{vm}/policy` (admin): the capture policy the VM's evidence must be made under.
#[utoipa::path(post, path = "/v1/vms/{vm}/policy", tag = "vms", params(("vm" = String, Path, description = "VM id")),
    request_body = vmseal_client::AssignPolicy,
    responses((status = 200, description = "Assigned"), (status = 404, description = "Unknown VM", body = vmseal_client::ApiErrorBody)))]
async fn assign_policy(
    who: Admin,
    path: web::Path<String>,
    body: web::Json<vmseal_client::AssignPolicy>,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let who = who.0;
    let vm = path.into_inner();
    let p = check_policy(&body.policy)?;
    st.store.assign_policy(&vm, &p.digest, &body.policy).await?;
    let d = hex::encode(p.digest);
    st.store
        .audit(
            &who,
            "assign_policy",
            &serde_json::json!({ "vm": vm, "policy_digest": d, "policy": p.name, "version": p.version })
                .to_string(),
            now(),
        )
        .await?;
    Ok(
        HttpResponse::Ok().json(serde_json::json!({ "vm_id": vm, "policy_digest": d,
        "regions": p.regions.iter().map(|r| &r.name).collect::<Vec<_>>() })),
    )
}

/// `GET /v1/vms/{vm}/policy` (admin, viewer, or the VM's host agent): the assigned capture
/// policy's text, so the agent captures by exactly what the verifier appraises by (`policy` and
/// `policy_digest` are null while none is assigned).
#[utoipa::path(get, path = "/v1/vms/{vm}/policy", tag = "vms", params(("vm" = String, Path, description = "VM id")),
    responses((status = 200, description = "The assigned policy (null when none is)", body = vmseal_client::VmPolicy),
        (status = 404, description = "not_found: no such VM", body = vmseal_client::ApiErrorBody)))]
async fn get_policy(
    req: HttpRequest,
    path: web::Path<String>,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let vm = path.into_inner();
    let rec = st.store.vm_record(&vm).await?;
    vm_reader(&req, &rec)?;
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
async fn get_chain(
    req: HttpRequest,
    path: web::Path<String>,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let vm = path.into_inner();
    let rec = st.store.vm_record(&vm).await?;
    vm_reader(&req, &rec)?;
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

/// `GET /v1/hosts` (admin or viewer): the enrolled hosts with their hardware roots.
#[utoipa::path(get, path = "/v1/hosts", tag = "enrollment",
    responses((status = 200, description = "Every enrolled host, by id", body = vmseal_client::HostList)))]
async fn list_hosts(req: HttpRequest, st: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    reader(&req)?;
    Ok(HttpResponse::Ok().json(vmseal_client::HostList {
        hosts: st.store.hosts().await?,
    }))
}

/// `POST /v1/hosts/{host}/disable` (admin): revoke the host's agent certificate (every replica
/// refuses it within [`REVOCATION_REFRESH`]); the host is enrolled again only with an admin's
/// token.
#[utoipa::path(post, path = "/v1/hosts/{host}/disable", tag = "enrollment", params(("host" = String, Path, description = "Host id")),
    responses((status = 200, description = "`{host_id, revoked_serial}`"), (status = 404, description = "Unknown host", body = vmseal_client::ApiErrorBody)))]
async fn disable_host(
    req: HttpRequest,
    path: web::Path<String>,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let who = admin(&req)?;
    let host = path.into_inner();
    let serial = st.store.disable_host(&host, now()).await?;
    st.revoked.refresh(&st.store).await;
    st.store
        .audit(
            &who,
            "disable_host",
            &serde_json::json!({ "host": host, "revoked_serial": serial }).to_string(),
            now(),
        )
        .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "host_id": host, "revoked_serial": serial })))
}

/// `POST /v1/vms/{vm}/reset-chain` (admin): restart the VM's evidence chain at `at` (0 by
/// default), audited with where it stood. For a host rebuilt from scratch, or a chain an operator
/// decided to abandon; alerts, appraisals and baselines stay.
#[utoipa::path(post, path = "/v1/vms/{vm}/reset-chain", tag = "vms", params(("vm" = String, Path, description = "VM id")),
    request_body = vmseal_client::ResetChain,
    responses((status = 200, description = "`{vm_id, previous_seq, next_seq}`"), (status = 404, description = "Unknown VM", body = vmseal_client::ApiErrorBody)))]
async fn reset_chain(
    who: Admin,
    path: web::Path<String>,
    body: web::Json<vmseal_client::ResetChain>,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let who = who.0;
    let vm = path.into_inner();
    if body.at > i64::MAX as u64 {
        return Err(bad(
            ErrorCode::BadSeq,
            "at is beyond the largest sequence number",
        ));
    }
    let previous = st.store.reset_chain(&vm, body.at).await?;
    st.store
        .audit(
            &who,
            "reset_chain",
            &serde_json::json!({ "vm": vm, "previous_seq": previous, "next_seq": body.at })
                .to_string(),
            now(),
        )
        .await?;
    Ok(HttpResponse::Ok()
        .json(serde_json::json!({ "vm_id": vm, "previous_seq": previous, "next_seq": body.at })))
}

/// `DELETE /v1/vms/{vm}` (admin): remove a VM and everything held of it (appraisals, baselines,
/// alerts, nonces, capture requests, silences), audited with what was removed; the VM id can then
/// be registered again. For a VM that is gone for good, or one to start over from scratch.
#[utoipa::path(delete, path = "/v1/vms/{vm}", tag = "vms", params(("vm" = String, Path, description = "VM id")),
    responses((status = 200, description = "`{vm_id, host_id, last_seq, appraisals, baselines, alerts}`: what was removed"),
        (status = 404, description = "Unknown VM", body = vmseal_client::ApiErrorBody)))]
async fn remove_vm(
    who: Admin,
    path: web::Path<String>,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let vm = path.into_inner();
    let removed = st.store.remove_vm(&vm).await?;
    let mut detail =
        serde_json::to_value(&removed).map_err(|e| ApiError::Internal(e.to_string()))?;
    detail["vm_id"] = serde_json::Value::String(vm.clone());
    st.store
        .audit(&who.0, "remove_vm", &detail.to_string(), now())
        .await?;
    tracing::info!(vm, host = removed.host_id, "VM removed by {}", who.0);
    Ok(HttpResponse::Ok().json(detail))
}

/// Sign a checkpoint of the audit chain's head now, unless the newest one already names it.
/// Returns (entry id, token).
pub(crate) async fn checkpoint_now(st: &AppState) -> Result<(i64, String), ApiError> {
    let (id, hash) = st.store.audit_head().await?;
    if let Some((last, token)) = st.store.checkpoints(1).await?.into_iter().next()
        && last == id
    {
        return Ok((id, token));
    }
    let token = st
        .ear
        .sign_checkpoint(id, &hash, now())
        .map_err(|e| ApiError::Internal(format!("signing an audit checkpoint: {e}")))?;
    st.store.record_checkpoint(id, &hash, now(), &token).await?;
    tracing::info!(audit_id = id, "audit checkpoint signed");
    Ok((id, token))
}

/// `POST /v1/audit/checkpoints` (admin): sign a checkpoint of the audit chain's head now (or
/// return the newest, when the chain has not moved since). Keep it outside the verifier:
/// `vmseal-certs verify-audit` checks an export against it.
#[utoipa::path(post, path = "/v1/audit/checkpoints", tag = "operations",
    responses((status = 200, description = "`{audit_id, audit_hash, iat, token}`")))]
async fn create_checkpoint(_who: Admin, st: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (_, token) = checkpoint_now(&st).await?;
    checkpoint_json(&st, &token).map(|j| HttpResponse::Ok().json(j))
}

fn checkpoint_json(st: &AppState, token: &str) -> Result<serde_json::Value, ApiError> {
    let c = vmseal_client::audit::verify_checkpoint(
        token,
        st.ca.cert_pem.as_bytes(),
        OffsetDateTime::now_utc(),
    )
    .map_err(|e| ApiError::Internal(format!("a stored audit checkpoint does not verify: {e}")))?;
    Ok(
        serde_json::json!({ "audit_id": c.audit_id, "audit_hash": c.audit_hash, "iat": c.iat, "token": token }),
    )
}

/// `GET /v1/audit/checkpoints?limit=N` (admin, viewer): the newest signed checkpoints.
#[utoipa::path(get, path = "/v1/audit/checkpoints", tag = "operations",
    params(("limit" = Option<u32>, Query, description = "1..=500, default 20")),
    responses((status = 200, description = "`{checkpoints: [{audit_id, audit_hash, iat, token}]}`, newest first")))]
async fn list_checkpoints(
    req: HttpRequest,
    query: web::Query<AppraisalsQuery>,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    reader(&req)?;
    let limit = query.limit.unwrap_or(20);
    if !(1..=MAX_LISTED_APPRAISALS).contains(&limit) {
        return Err(bad(
            ErrorCode::BadQuery,
            format!("limit must be 1..={MAX_LISTED_APPRAISALS}, not {limit}"),
        ));
    }
    let list = st
        .store
        .checkpoints(limit)
        .await?
        .iter()
        .map(|(_, t)| checkpoint_json(&st, t))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "checkpoints": list })))
}

/// `GET /v1/audit/export` (admin, viewer): the whole audit log, oldest first, for an offline
/// check against checkpoints (`vmseal-certs verify-audit`).
#[utoipa::path(get, path = "/v1/audit/export", tag = "operations",
    responses((status = 200, description = "`{entries: [AuditEntry]}`")))]
async fn audit_export(req: HttpRequest, st: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    reader(&req)?;
    let entries = st.store.audit_export().await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "entries": entries })))
}

/// `POST /v1/vms/{vm}/modules` (admin): the capture modules (name, version, optionally the
/// SHA-256 of the binary) allowed to capture the VM; evidence from any other is refused
/// `module_not_allowed`. An empty list allows any module.
#[utoipa::path(post, path = "/v1/vms/{vm}/modules", tag = "vms", params(("vm" = String, Path, description = "VM id")),
    request_body = vmseal_client::AllowModules,
    responses((status = 200, description = "`{vm_id, allowed}`"), (status = 400, description = "bad_module", body = vmseal_client::ApiErrorBody),
        (status = 404, description = "Unknown VM", body = vmseal_client::ApiErrorBody)))]
async fn allow_modules(
    who: Admin,
    path: web::Path<String>,
    body: web::Json<vmseal_client::AllowModules>,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let who = who.0;
    let vm = path.into_inner();
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
    st.store
        .audit(
            &who,
            "allow_modules",
            &serde_json::json!({ "vm": vm, "allowed": allowed }).to_string(),
            now(),
        )
        .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "vm_id": vm, "allowed": allowed })))
}

#[utoipa::path(post, path = "/v1/vms/{vm}/nonce", tag = "evidence", params(("vm" = String, Path, description = "VM id")),
    responses((status = 200, description = "Single use", body = vmseal_client::Nonce), (status = 403, description = "Not this VM's host agent", body = vmseal_client::ApiErrorBody)))]
async fn issue_nonce(
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
struct AppraisalsQuery {
    /// How many, newest first (1..=500; 20 when absent).
    limit: Option<u32>,
}

/// Most appraisals one listing returns.
const MAX_LISTED_APPRAISALS: u32 = 500;

/// `GET /v1/vms/{vm}/appraisals?limit=N` (admin, viewer, or the VM's host agent): the VM's most recent
/// accepted appraisals, newest first, each exactly as it was returned when the evidence was
/// submitted. Refusals are not listed: they change nothing stored (see /metrics for their count).
#[utoipa::path(get, path = "/v1/vms/{vm}/appraisals", tag = "evidence",
    params(("vm" = String, Path, description = "VM id"), ("limit" = Option<u32>, Query, description = "1..=500, default 20")),
    responses((status = 200, description = "Newest first", body = vmseal_client::AppraisalList), (status = 400, description = "bad_query", body = vmseal_client::ApiErrorBody)))]
async fn list_appraisals(
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
async fn submit_evidence(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let timer = st.metrics.seconds.start_timer();
    let vm = path.into_inner();
    let r = submission(&req, &vm, payload, &st).await;
    timer.observe_duration();
    match &r {
        Ok(Submitted::Appraised { tier, .. }) => st
            .metrics
            .appraisals
            .with_label_values(&[tier.as_str()])
            .inc(),
        Ok(Submitted::Duplicate(_)) => st.metrics.duplicates.inc(),
        Err(e) => st
            .metrics
            .refusals
            .with_label_values(&[e.code().as_str()])
            .inc(),
    }
    r.map(|s| {
        let (Submitted::Appraised { json, .. } | Submitted::Duplicate(json)) = s;
        HttpResponse::Ok()
            .content_type("application/json")
            .body(json)
    })
}

/// What became of accepted evidence.
enum Submitted {
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
async fn submission(
    req: &HttpRequest,
    vm: &str,
    payload: web::Payload,
    st: &AppState,
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
async fn authorize_submission(
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
async fn refusal_event(st: &AppState, rec: &VmRecord, code: &str, message: &str, body: &[u8]) {
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

async fn appraise_submission(
    vm: &str,
    rec: &VmRecord,
    body: web::Bytes,
    st: &AppState,
) -> Result<(String, String), ApiError> {
    let vm = vm.to_owned();
    let mut trust = st.evidence_trust.clone();
    trust.pinned_intermediates = vec![rec.intermediate_digest];
    let t = OffsetDateTime::now_utc();
    let v = cpu(st, move || verify_evidence(&body, &trust, t))
        .await?
        .map_err(|e| ApiError::Refused {
            code: ErrorCode::EvidenceInvalid,
            message: e.to_string(),
        })?;
    if v.claims_profile == vmseal_sealer::claims::ClaimsProfile::V1 {
        tracing::warn!(
            vm = vm.as_str(),
            "evidence in the previous claims profile ({}) is read for this release only: upgrade \
             the host's vmseal-host (or vmseal-shim) to write {}",
            vmseal_sealer::claims::PROFILE_V1,
            vmseal_sealer::claims::PROFILE
        );
    }
    if !v.pinned {
        return Err(ApiError::Refused {
            code: ErrorCode::NotEnrolled,
            message:
                "evidence is not signed under the host's enrolled intermediate; re-enrol the host"
                    .into(),
        });
    }
    // The nonce is only looked at here; it is consumed once the appraisal has accepted the
    // evidence, so refused evidence changes nothing stored.
    let nonce_accepted = match &v.claims.nonce {
        Some(n) => st.store.nonce_valid(&vm, n, t.unix_timestamp()).await?,
        None => false,
    };
    let baseline = st.baselines.get(&st.store, rec).await?;
    let fresh = Freshness {
        now: t.unix_timestamp(),
        max_age: st.settings.max_age,
        skew: 30,
        nonce_accepted,
    };
    let (v, a) = {
        let rec = rec.clone();
        cpu(st, move || {
            let a = appraise(&v, &rec, baseline.as_deref(), fresh);
            (v, a)
        })
        .await?
    };
    let a = a.map_err(|e| ApiError::Refused {
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
            class: r.class.name().to_owned(),
            severity: r.severity.name().to_owned(),
            pages: r.pages,
            root: hex::encode(r.root),
            ranges: range_pairs(&r.ranges),
        })
        .collect();
    let ear = st
        .ear
        .sign(&a, v.claims.nonce.as_deref(), t.unix_timestamp())
        .map_err(|e| ApiError::Internal(format!("signing the EAR: {e}")))?;
    // The same result in the draft's CBOR serialisation (COSE_Sign1), base64.
    let ear_cbor = st
        .ear
        .sign_cose(&a, v.claims.nonce.as_deref(), t.unix_timestamp())
        .map_err(|e| ApiError::Internal(format!("signing the CBOR EAR: {e}")))?;
    let result = a.result(
        ear,
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, ear_cbor),
        regions,
        v.claims.hash_alg.name(),
        &v.claims.policy.digest,
        v.claims.nonce.is_some(),
    );
    let json = serde_json::to_string(&result).map_err(|e| ApiError::Internal(e.to_string()))?;
    let tier = a.tier.name().to_owned();
    // One transaction: the chain advances, the nonce is used up (and the capture request it
    // answered is done), the appraisal and its audit entry are stored, and an alert it raises
    // enters the outbox — or nothing is.
    let plan = crate::alerts::plan(rec, &a);
    let raised = st
        .store
        .record_appraisal(
            &vm,
            rec.last.map(|l| l.seq),
            ChainPoint {
                seq: a.seq,
                digest: v.digest,
            },
            &Verdict {
                score: a.score,
                tier: &tier,
                json: &json,
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
    Ok((tier, json))
}

/// `POST /v1/vms/{vm}/baselines` (admin): promote the page hashes of an appraised snapshot to a
/// new golden baseline version. Each region's leaves must reproduce the root the snapshot's
/// signed evidence carried.
#[utoipa::path(post, path = "/v1/vms/{vm}/baselines", tag = "vms", params(("vm" = String, Path, description = "VM id")),
    request_body = vmseal_client::PromoteBaseline,
    responses((status = 201, description = "`{vm_id, version, source_seq}`"), (status = 422, description = "baseline_mismatch", body = vmseal_client::ApiErrorBody)))]
async fn promote_baseline(
    who: Admin,
    path: web::Path<String>,
    body: web::Json<PromoteBaseline>,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let who = who.0;
    let vm = path.into_inner();
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
        Ok::<_, ApiError>((
            vmseal_sealer::claims::RegionClass::from_name(&s.class)
                .ok_or_else(|| ApiError::Internal("class".into()))?,
            vmseal_sealer::claims::Severity::from_name(&s.severity)
                .ok_or_else(|| ApiError::Internal("severity".into()))?,
        ))
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
    let version = st
        .store
        .promote_baseline(
            &vm,
            crate::store::BaselineSource::Snapshot(b.seq),
            &policy_digest,
            &regions,
            &who,
            now(),
        )
        .await?;
    Ok(HttpResponse::Created()
        .json(serde_json::json!({ "vm_id": vm, "version": version, "source_seq": b.seq })))
}

/// An appraisal as stored (exactly as it was answered).
pub(crate) fn stored_result(json: &str) -> Result<vmseal_client::AppraisalResult, ApiError> {
    serde_json::from_str(json)
        .map_err(|e| ApiError::Internal(format!("a stored appraisal does not read back: {e}")))
}

/// `GET /v1/vms/{vm}/baseline` (admin, viewer, or the VM's host agent): the active golden
/// baseline's page hashes, so an agent computes its deltas against exactly what the verifier
/// appraises with.
#[utoipa::path(get, path = "/v1/vms/{vm}/baseline", tag = "vms", params(("vm" = String, Path, description = "VM id")),
    responses((status = 200, description = "The active golden baseline", body = vmseal_client::ActiveBaseline),
        (status = 404, description = "not_found: no such VM; no_baseline: none promoted or imported yet", body = vmseal_client::ApiErrorBody)))]
async fn active_baseline(
    req: HttpRequest,
    path: web::Path<String>,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let vm = path.into_inner();
    let rec = st.store.vm_record(&vm).await?;
    vm_reader(&req, &rec)?;
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
                class: r.class.name().to_owned(),
                severity: r.severity.name().to_owned(),
                pages: r.tree.leaf_count(),
                leaves: hex::encode(r.tree.leaves().concat()),
            })
            .collect(),
    }))
}

/// `GET /v1/audit/verify` (admin or viewer): re-hash the whole audit chain.
#[utoipa::path(get, path = "/v1/audit/verify", tag = "operations",
    responses((status = 200, description = "`{ok: true, entries}` or `{ok: false, error}` where the chain breaks")))]
async fn verify_audit(req: HttpRequest, st: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    reader(&req)?;
    Ok(
        HttpResponse::Ok().json(match st.store.verify_audit().await {
            Ok(n) => serde_json::json!({ "ok": true, "entries": n }),
            Err(StoreError::Corrupt(why)) => serde_json::json!({ "ok": false, "error": why }),
            Err(e) => return Err(e.into()),
        }),
    )
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
        healthz, readyz, metrics, openapi_json, verify_audit, create_checkpoint, list_checkpoints, audit_export,
        crate::ui::root, crate::ui::index, crate::ui::script, crate::ui::style, crate::ui::icon,
        crate::enroll::create_token, crate::enroll::challenge, crate::enroll::begin, crate::enroll::activate,
        crate::renew::challenge, crate::renew::renew, crate::renew::renew_person,
        register_vm, list_vms, set_threshold, assign_policy, get_policy, get_chain, remove_vm, allow_modules, reset_chain, list_hosts, disable_host, promote_baseline, active_baseline,
        crate::corim::signer, crate::corim::list, crate::corim::export, crate::corim::import,
        issue_nonce, submit_evidence, list_appraisals,
        crate::captures::create, crate::captures::poll, crate::captures::status,
        crate::alerts::list, crate::alerts::show, crate::alerts::ack, crate::alerts::stream,
        crate::alerts::add_webhook, crate::alerts::list_webhooks, crate::alerts::remove_webhook,
        crate::alerts::add_silence, crate::alerts::list_silences, crate::alerts::end_silence,
        crate::alerts::set_schedule,
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

#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "This document")))]
async fn openapi_json(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    role(&req)?;
    Ok(HttpResponse::Ok().json(openapi()))
}

fn json_error(e: actix_web::error::JsonPayloadError) -> actix_web::Error {
    use actix_web::error::JsonPayloadError as J;
    match e {
        J::Overflow { limit } | J::OverflowKnownLength { limit, .. } => {
            ApiError::TooLarge(format!(
                "request body larger than {} KiB, the most this endpoint takes",
                limit >> 10
            ))
            .into()
        }
        e => ApiError::BadRequest {
            code: ErrorCode::BadJson,
            message: format!("request body is not the expected JSON: {e}"),
        }
        .into(),
    }
}

/// Run CPU-heavy `f` on the blocking pool, at most one task per core at a time.
pub(crate) async fn cpu<T: Send + 'static>(
    st: &AppState,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    let _permit = st
        .cpu
        .acquire()
        .await
        .map_err(|_| ApiError::Internal("the verification pool is closed".into()))?;
    web::block(f)
        .await
        .map_err(|e| ApiError::Internal(format!("a verification task failed: {e}")))
}

/// Most evidence submissions one client certificate may have in flight at once (a host agent
/// captures two VMs at a time by default).
pub const MAX_IN_FLIGHT_PER_CLIENT: usize = 8;

/// A submission slot of one client certificate, given back when dropped.
struct InFlight<'a> {
    st: &'a AppState,
    serial: String,
}

impl<'a> InFlight<'a> {
    fn take(st: &'a AppState, req: &HttpRequest) -> Result<Self, ApiError> {
        let serial = req
            .conn_data::<PeerCert>()
            .map(|c| c.1.clone())
            .unwrap_or_default();
        let mut m = st.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(serial.clone()).or_insert(0);
        if *n >= MAX_IN_FLIGHT_PER_CLIENT {
            return Err(ApiError::TooMany(format!(
                "this client already has {MAX_IN_FLIGHT_PER_CLIENT} submissions in flight; \
                 retry when one is answered"
            )));
        }
        *n += 1;
        Ok(Self { st, serial })
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut m = self.st.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.serial) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.serial);
            }
        }
    }
}

/// Evidence may always be this large: certificates (ML-DSA), claims with regions and ranges.
pub const EVIDENCE_BASE: usize = 4 << 20;
/// And this much more per page of the VM's golden baseline: a delta entry (index, hash) for every
/// page, with room for CBOR framing.
pub const EVIDENCE_BYTES_PER_PAGE: usize = 64;

/// The largest evidence `rec`'s VM may submit: [`EVIDENCE_BASE`] plus
/// [`EVIDENCE_BYTES_PER_PAGE`] per page of its active baseline, at most [`MAX_BODY`].
async fn evidence_limit(st: &AppState, rec: &VmRecord) -> Result<usize, ApiError> {
    let pages: u64 = st
        .baselines
        .get(&st.store, rec)
        .await?
        .map_or(0, |b| b.regions.iter().map(|r| r.tree.leaf_count()).sum());
    Ok(EVIDENCE_BASE
        .saturating_add((pages as usize).saturating_mul(EVIDENCE_BYTES_PER_PAGE))
        .min(MAX_BODY))
}

/// Read a raw request body (`what`, for the message) of at most `limit` bytes (a JSON
/// `too_large` error beyond).
pub(crate) async fn read_body(
    mut payload: web::Payload,
    limit: usize,
    what: &str,
) -> Result<web::Bytes, ApiError> {
    use futures_util::StreamExt as _;
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|e| bad(ErrorCode::BadBody, format!("reading the request body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::TooLarge(format!(
                "{what} larger than {} KiB, the most this endpoint takes here",
                limit >> 10
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Every route: method, path (OpenAPI form) and handler. `/openapi.json` is checked against this
/// table by a test, both ways.
fn route_table() -> Vec<(actix_web::http::Method, &'static str, actix_web::Route)> {
    use actix_web::http::Method as M;
    let r = |m: M| web::method(m);
    vec![
        (M::GET, "/healthz", r(M::GET).to(healthz)),
        (M::GET, "/readyz", r(M::GET).to(readyz)),
        (M::GET, "/metrics", r(M::GET).to(metrics)),
        (M::GET, "/openapi.json", r(M::GET).to(openapi_json)),
        (M::GET, "/", r(M::GET).to(crate::ui::root)),
        (M::GET, "/ui", r(M::GET).to(crate::ui::index)),
        (M::GET, "/ui/app.js", r(M::GET).to(crate::ui::script)),
        (M::GET, "/ui/app.css", r(M::GET).to(crate::ui::style)),
        (M::GET, "/ui/favicon.svg", r(M::GET).to(crate::ui::icon)),
        (M::GET, "/v1/audit/verify", r(M::GET).to(verify_audit)),
        (
            M::POST,
            "/v1/enrollment-tokens",
            r(M::POST).to(crate::enroll::create_token),
        ),
        (
            M::POST,
            "/v1/enrollment-challenges",
            r(M::POST).to(crate::enroll::challenge),
        ),
        (
            M::POST,
            "/v1/enrollments",
            r(M::POST).to(crate::enroll::begin),
        ),
        (
            M::POST,
            "/v1/enrollments/{id}/activation",
            r(M::POST).to(crate::enroll::activate),
        ),
        (M::POST, "/v1/vms", r(M::POST).to(register_vm)),
        (M::GET, "/v1/vms", r(M::GET).to(list_vms)),
        (
            M::POST,
            "/v1/vms/{vm}/threshold",
            r(M::POST).to(set_threshold),
        ),
        (M::POST, "/v1/vms/{vm}/policy", r(M::POST).to(assign_policy)),
        (M::GET, "/v1/vms/{vm}/policy", r(M::GET).to(get_policy)),
        (M::GET, "/v1/vms/{vm}/chain", r(M::GET).to(get_chain)),
        (
            M::POST,
            "/v1/audit/checkpoints",
            r(M::POST).to(create_checkpoint),
        ),
        (
            M::GET,
            "/v1/audit/checkpoints",
            r(M::GET).to(list_checkpoints),
        ),
        (M::GET, "/v1/audit/export", r(M::GET).to(audit_export)),
        (M::DELETE, "/v1/vms/{vm}", r(M::DELETE).to(remove_vm)),
        (
            M::POST,
            "/v1/vms/{vm}/modules",
            r(M::POST).to(allow_modules),
        ),
        (
            M::POST,
            "/v1/vms/{vm}/reset-chain",
            r(M::POST).to(reset_chain),
        ),
        (M::GET, "/v1/hosts", r(M::GET).to(list_hosts)),
        (
            M::POST,
            "/v1/certificates/renewals",
            r(M::POST).to(crate::renew::renew_person),
        ),
        (
            M::POST,
            "/v1/hosts/{host}/renewal-challenges",
            r(M::POST).to(crate::renew::challenge),
        ),
        (
            M::POST,
            "/v1/hosts/{host}/renewals",
            r(M::POST).to(crate::renew::renew),
        ),
        (
            M::POST,
            "/v1/hosts/{host}/disable",
            r(M::POST).to(disable_host),
        ),
        (
            M::POST,
            "/v1/vms/{vm}/capture-requests",
            r(M::POST).to(crate::captures::create),
        ),
        (
            M::GET,
            "/v1/hosts/{host}/capture-requests",
            r(M::GET).to(crate::captures::poll),
        ),
        (
            M::GET,
            "/v1/capture-requests/{id}",
            r(M::GET).to(crate::captures::status),
        ),
        (M::POST, "/v1/vms/{vm}/nonce", r(M::POST).to(issue_nonce)),
        (
            M::POST,
            "/v1/vms/{vm}/evidence",
            r(M::POST).to(submit_evidence),
        ),
        (
            M::GET,
            "/v1/vms/{vm}/appraisals",
            r(M::GET).to(list_appraisals),
        ),
        (
            M::POST,
            "/v1/vms/{vm}/baselines",
            r(M::POST).to(promote_baseline),
        ),
        (
            M::GET,
            "/v1/vms/{vm}/baselines",
            r(M::GET).to(crate::corim::list),
        ),
        (
            M::GET,
            "/v1/vms/{vm}/baselines/{version}/corim",
            r(M::GET).to(crate::corim::export),
        ),
        (
            M::POST,
            "/v1/vms/{vm}/baselines/corim",
            r(M::POST).to(crate::corim::import),
        ),
        (
            M::GET,
            "/v1/corim/signer",
            r(M::GET).to(crate::corim::signer),
        ),
        (
            M::GET,
            "/v1/vms/{vm}/baseline",
            r(M::GET).to(active_baseline),
        ),
        (
            M::POST,
            "/v1/vms/{vm}/schedule",
            r(M::POST).to(crate::alerts::set_schedule),
        ),
        (M::GET, "/v1/alerts", r(M::GET).to(crate::alerts::list)),
        (
            M::GET,
            "/v1/alerts/stream",
            r(M::GET).to(crate::alerts::stream),
        ),
        (M::GET, "/v1/alerts/{id}", r(M::GET).to(crate::alerts::show)),
        (
            M::POST,
            "/v1/alerts/{id}/ack",
            r(M::POST).to(crate::alerts::ack),
        ),
        (
            M::POST,
            "/v1/webhooks",
            r(M::POST).to(crate::alerts::add_webhook),
        ),
        (
            M::GET,
            "/v1/webhooks",
            r(M::GET).to(crate::alerts::list_webhooks),
        ),
        (
            M::DELETE,
            "/v1/webhooks/{name}",
            r(M::DELETE).to(crate::alerts::remove_webhook),
        ),
        (
            M::POST,
            "/v1/silences",
            r(M::POST).to(crate::alerts::add_silence),
        ),
        (
            M::GET,
            "/v1/silences",
            r(M::GET).to(crate::alerts::list_silences),
        ),
        (
            M::DELETE,
            "/v1/silences/{id}",
            r(M::DELETE).to(crate::alerts::end_silence),
        ),
    ]
}

/// Largest JSON body of most requests: admin and viewer bodies are small.
pub const MAX_JSON: usize = 64 << 10;
/// Largest JSON body that carries a policy text (a policy is at most 1 MiB; JSON escapes it).
pub const MAX_POLICY_JSON: usize = 3 << 20;

/// The JSON body limit of `path`: baselines (an admin's page hashes) may be large, policies
/// moderate, everything else small. Evidence (raw bytes) has its own limit by the VM's baseline.
fn json_limit(path: &str) -> usize {
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

/// The rustls configuration: TLS 1.3, X25519MLKEM768 preferred (classical groups after it), client
/// certificates from the verifier CA required.
pub fn tls_config(
    ca_pem: &[u8],
    server_cert_pem: &[u8],
    server_key_pem: &[u8],
) -> Result<rustls::ServerConfig, String> {
    tls_config_with(
        ca_pem,
        server_cert_pem,
        server_key_pem,
        vmseal_client::KeyExchange::default(),
    )
}

/// [`tls_config`] with the key exchanges of `kx` (`pq-only` refuses classical-only clients).
pub fn tls_config_with(
    ca_pem: &[u8],
    server_cert_pem: &[u8],
    server_key_pem: &[u8],
    kx: vmseal_client::KeyExchange,
) -> Result<rustls::ServerConfig, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(vmseal_client::crypto_provider(kx));
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem) {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| e.to_string())?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(server_cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let key = PrivateKeyDer::from_pem_slice(server_key_pem).map_err(|e| e.to_string())?;
    rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| e.to_string())
}

/// TLS connections accepted by this process (exported as `vmseal_tls_connections_total`).
pub static TLS_CONNECTIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// Of those, the ones that negotiated the hybrid post-quantum X25519MLKEM768.
pub static TLS_PQ_CONNECTIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// Of those, the ones that negotiated a classical group (a peer without X25519MLKEM768).
pub static TLS_CLASSICAL_CONNECTIONS: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(0);

/// Stash the peer certificate of each TLS connection for the handlers.
pub fn on_connect(conn: &dyn std::any::Any, ext: &mut actix_web::dev::Extensions) {
    TLS_CONNECTIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if let Some(tls) = conn
        .downcast_ref::<actix_tls::accept::rustls_0_23::TlsStream<actix_web::rt::net::TcpStream>>()
    {
        let (_, session) = tls.get_ref();
        match session.negotiated_key_exchange_group().map(|g| g.name()) {
            Some(rustls::NamedGroup::X25519MLKEM768) => &TLS_PQ_CONNECTIONS,
            _ => &TLS_CLASSICAL_CONNECTIONS,
        }
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(leaf) = session.peer_certificates().and_then(|c| c.first()) {
            use x509_parser::prelude::{FromDer, X509Certificate};
            let serial = X509Certificate::from_der(leaf)
                .map(|(_, c)| hex::encode(c.raw_serial()))
                .unwrap_or_default();
            ext.insert(PeerCert(leaf.to_vec(), serial));
        }
    }
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
        for e in std::fs::read_dir(root.join("src")).unwrap() {
            let p = e.unwrap().path();
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
