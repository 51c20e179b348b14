//! The service's shared state: storage, the CA, signing keys, settings, caches, metrics, wake-ups
//! and limits — what the HTTP handlers ([`crate::api`]) and the background workers
//! ([`crate::alerts`]) share. Nothing here knows HTTP.

use std::sync::Arc;

use vmseal_sealer::verify::{AnchorRequirement, TrustConfig};

use crate::appraise::VmRecord;
use crate::now;
use crate::pki::Ca;
use crate::store::{Store, StoreError};

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
    pub(crate) evidence_trust: TrustConfig,
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
    /// Record how long an evidence submission took, whatever became of it.
    pub fn submission_took(&self, d: std::time::Duration) {
        self.seconds.observe(d.as_secs_f64());
    }

    /// Count an appraisal, by tier.
    pub fn appraised(&self, tier: &str) {
        self.appraisals.with_label_values(&[tier]).inc();
    }

    /// Count evidence the verifier had appraised already (a retry).
    pub fn duplicate(&self) {
        self.duplicates.inc();
    }

    /// Count a refused submission, by error code.
    pub fn refused(&self, code: &str) {
        self.refusals.with_label_values(&[code]).inc();
    }

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
    pub(crate) async fn get(
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

/// Sign a checkpoint of the audit chain's head now, unless the newest one already names it.
/// Returns (entry id, token).
/// Why an audit checkpoint could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The database.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Signing it.
    #[error("signing an audit checkpoint: {0}")]
    Sign(#[source] jsonwebtoken::errors::Error),
}

/// Sign a checkpoint of the audit chain's head now, or return the newest when the chain has not
/// moved since.
pub async fn checkpoint_now(st: &AppState) -> Result<(i64, String), CheckpointError> {
    let (id, hash) = st.store.audit_head().await?;
    if let Some((last, token)) = st.store.checkpoints(1).await?.into_iter().next()
        && last == id
    {
        return Ok((id, token));
    }
    let token = st
        .ear
        .sign_checkpoint(id, &hash, now())
        .map_err(CheckpointError::Sign)?;
    st.store.record_checkpoint(id, &hash, now(), &token).await?;
    tracing::info!(audit_id = id, "audit checkpoint signed");
    Ok((id, token))
}

/// TLS connections accepted by this process (exported as `vmseal_tls_connections_total`).
pub static TLS_CONNECTIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Of those, the ones that negotiated the hybrid post-quantum X25519MLKEM768.
pub static TLS_PQ_CONNECTIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Of those, the ones that negotiated a classical group (a peer without X25519MLKEM768).
pub static TLS_CLASSICAL_CONNECTIONS: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(0);
