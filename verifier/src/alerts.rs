//! Alerting: which alert an appraisal raises or resolves, the webhook outbox worker, the
//! silence sweeper, the server-sent-events stream, and the admin API over alerts, webhooks and
//! silences.
//!
//! Alerts live in the database (see [`crate::store`]): each is raised in the transaction of the
//! appraisal that caused it, with one outbox row per webhook. Every replica runs a delivery worker
//! that claims due rows under a lease and posts them signed ([`crate::ear::EarSigner::sign_alert`]);
//! a delivery is retried with backoff until the receiver answers 2xx. Each replica also sweeps for
//! VMs whose evidence stopped arriving, and each SSE client reads alerts by id from the database, so
//! a stream on any replica sees the alerts every replica raised.

use crate::appraise::{Appraisal, Tier, VmRecord};
use crate::now;
use crate::state::AppState;
use crate::store::{Alert, AlertPlan, ClaimedDelivery, NewAlert};
use std::time::Duration;

/// How long a webhook has to answer.
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a replica looks for silent VMs.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// How often an idle delivery worker looks for due deliveries raised on other replicas (those
/// raised on its own replica wake it at once).
pub const DELIVERY_POLL: Duration = Duration::from_secs(1);

/// Longest silence, seconds.
pub const MAX_SILENCE_S: i64 = 30 * 24 * 3600;

fn rank(tier: &str) -> u8 {
    match tier {
        "affirming" => 0,
        "warning" => 1,
        _ => 2,
    }
}

fn tier_name(t: Tier) -> &'static str {
    match t {
        Tier::Affirming => "affirming",
        Tier::Warning => "warning",
        Tier::Contraindicated => "contraindicated",
    }
}

/// What appraisal `a` of the VM `rec` does to alerts: a score under the threshold raises
/// `below_threshold` unless the VM already has one unresolved (one alert per episode, not one per
/// snapshot); otherwise a worse tier than the last appraisal's raises `tier_drop`; a score back at
/// or above the threshold resolves the open `below_threshold` alert, and a tier better than a
/// `tier_drop` alert's resolves it.
///
/// A VM without a golden baseline raises nothing: its score only says "not yet baselined", which
/// is expected between deployment and the admin's promotion of a baseline.
pub fn plan(rec: &VmRecord, a: &Appraisal) -> AlertPlan {
    if a.baseline_version.is_none() {
        return AlertPlan::default();
    }
    let tier = tier_name(a.tier);
    let below = a.score < rec.threshold;
    let dropped = rec
        .last_tier
        .as_deref()
        .is_some_and(|last| rank(tier) > rank(last));
    let kind = if below && rec.threshold_alert.is_none() {
        Some("below_threshold")
    } else if dropped {
        Some("tier_drop")
    } else {
        None
    };
    AlertPlan {
        raise: kind.map(|kind| NewAlert {
            code: None,
            vm_id: a.vm_id.clone(),
            kind,
            seq: Some(a.seq),
            score: Some(a.score),
            tier: Some(tier.to_owned()),
            threshold: rec.threshold,
            message: message(rec, a, kind),
        }),
        resolve_threshold: if below { None } else { rec.threshold_alert },
        recovered_from: ["warning", "contraindicated"]
            .into_iter()
            .filter(|t| rank(t) > rank(tier))
            .collect(),
    }
}

fn message(rec: &VmRecord, a: &Appraisal, kind: &str) -> String {
    let tier = tier_name(a.tier);
    let was = rec
        .last_tier
        .as_deref()
        .map(|t| format!(", was {t}"))
        .unwrap_or_default();
    let what = match kind {
        "below_threshold" => format!(
            "trust score {} is below its threshold {} ({tier}{was})",
            a.score, rec.threshold
        ),
        _ => format!("tier dropped to {tier}{was} (score {})", a.score),
    };
    let changes: Vec<String> = a.changes.iter().map(|c| c.describe()).collect();
    let mut m = format!("VM {} snapshot #{}: {what}", a.vm_id, a.seq);
    if !changes.is_empty() {
        m.push_str("; changed: ");
        m.push_str(&changes.join(", "));
    }
    let kernel: Vec<String> = a
        .kernel
        .iter()
        .flat_map(|k| &k.findings)
        .map(|f| {
            format!(
                "{} {} ({})",
                f.kind.replace('_', " "),
                f.subject,
                f.severity
            )
        })
        .collect();
    if !kernel.is_empty() {
        m.push_str("; kernel: ");
        m.push_str(&kernel.join(", "));
    }
    if !a.unbaselined.is_empty() {
        m.push_str("; not in the baseline: ");
        m.push_str(&a.unbaselined.join(", "));
    }
    m
}

/// Log a raised alert (once: by the replica that raised it) and wake this replica's delivery
/// worker.
pub fn announce(st: &AppState, a: &Alert) {
    st.metrics.alert_raised(&a.kind);
    if a.silenced {
        tracing::info!(alert = a.alert_id, vm = %a.vm_id, kind = %a.kind, "silenced alert: {}", a.message);
    } else {
        tracing::warn!(alert = a.alert_id, vm = %a.vm_id, kind = %a.kind, "ALERT: {}", a.message);
    }
    st.alert_wake.notify_one();
}

/// Start this replica's background alert work on the current runtime: the webhook delivery
/// worker and the silence sweeper. They run until the runtime stops.
pub fn spawn_workers(st: std::sync::Arc<AppState>) {
    tokio::task::spawn_local(deliver_forever(st.clone()));
    tokio::task::spawn_local(revocations_forever(st.clone()));
    tokio::task::spawn_local(reappraise_forever(st.clone()));
    tokio::task::spawn_local(checkpoint_forever(st.clone()));
    tokio::task::spawn_local(certificates_forever(st.clone()));
    tokio::task::spawn_local(sweep_forever(st));
}

/// Raise an `evidence_refused` alert with `code` on every VM of `host` (alerts are per VM), or
/// count on the unresolved one; how many VMs the host has.
pub(crate) async fn alert_host(
    st: &AppState,
    host: &str,
    code: &str,
    message: &str,
) -> Result<usize, crate::store::StoreError> {
    let vms = st.store.list_vms().await?;
    let mut n = 0;
    for vm in vms.iter().filter(|v| v.host_id == host) {
        n += 1;
        let r = crate::store::Refusal {
            vm_id: &vm.vm_id,
            code,
            message,
            seq: None,
            threshold: vm.threshold,
        };
        if let Some(a) = st.store.record_refusal(&r, now()).await? {
            announce(st, &a);
        }
    }
    Ok(n)
}

/// Re-appraise the enrolled hosts' hardware at start and every minute.
async fn reappraise_forever(st: std::sync::Arc<AppState>) {
    loop {
        if let Err(e) = crate::hardware::reappraise(&st).await {
            tracing::warn!("re-appraising hosts' hardware: {e}; retrying");
        }
        tokio::time::sleep(crate::hardware::REAPPRAISE_EVERY).await;
    }
}

/// Sign a checkpoint of the audit chain's head at start and every `audit_checkpoint_every`, when
/// it moved (every replica does; the same entry is checkpointed once).
async fn checkpoint_forever(st: std::sync::Arc<AppState>) {
    loop {
        if let Err(e) = crate::state::checkpoint_now(&st).await {
            tracing::warn!("signing an audit checkpoint: {e}; retrying at the next interval");
        }
        tokio::time::sleep(st.settings.audit_checkpoint_every).await;
    }
}

/// Watch the service's own certificates every 6 hours: the EAR signer's is renewed in place 60
/// days before it expires; the server's (renewed by `serve` at start), the issuing CA's and the
/// root's are warned about 60 days ahead.
async fn certificates_forever(st: std::sync::Arc<AppState>) {
    let Some(dir) = st.settings.state_dir.clone() else {
        return;
    };
    loop {
        let now = time::OffsetDateTime::now_utc();
        match st.ear.renew_if_due(&dir, &st.ca, now) {
            Ok(Some(t)) => tracing::info!(not_after = t, "EAR signing certificate renewed"),
            Ok(None) => {}
            Err(e) => tracing::error!("renewing the EAR signing certificate: {e}; retrying in 6 h"),
        }
        for (file, what) in [
            ("server.pem", "server"),
            ("issuing.pem", "issuing CA"),
            ("ca.pem", "root CA"),
        ] {
            let left = std::fs::read(dir.join(file))
                .ok()
                .and_then(|b| vmseal_sealer::x509::parse_bundle(&b).ok())
                .and_then(|c| c.into_iter().next())
                .map(|c| (c.not_after - now.unix_timestamp()) / 86_400);
            if let Some(days) = left
                && days < 60
            {
                tracing::warn!(
                    "the verifier's {what} certificate ({file}) expires in {days} day(s): clients \
                     will refuse it then ({}); see docs/operations.md, Certificate lifetimes",
                    if file == "server.pem" {
                        "restart `serve`: it renews the server certificate at start"
                    } else {
                        "a new verifier state is the operator's step"
                    }
                );
            }
        }
        tokio::time::sleep(std::time::Duration::from_secs(6 * 3600)).await;
    }
}

/// Keep this replica's list of revoked certificates fresh (revocations made on other replicas).
async fn revocations_forever(st: std::sync::Arc<AppState>) {
    loop {
        st.revoked.refresh(&st.store).await;
        tokio::time::sleep(crate::state::REVOCATION_REFRESH).await;
    }
}

async fn sweep_forever(st: std::sync::Arc<AppState>) {
    loop {
        match st.store.sweep_silent(now()).await {
            Ok(raised) => raised.iter().for_each(|a| announce(&st, a)),
            Err(e) => tracing::warn!("looking for silent VMs: {e}; retrying"),
        }
        // Audit entries a replica wrote off the commit path and could not link (it died just
        // after committing): linked here by whichever replica sweeps next.
        if let Err(e) = st.store.link_audit().await {
            tracing::warn!("linking pending audit entries: {e}; retrying");
        }
        tokio::time::sleep(SWEEP_EVERY).await;
    }
}

/// A name for this replica's leases: host, process and a random part.
fn replica_id() -> String {
    let mut r = [0u8; 4];
    let _ = vmseal_sealer::keys::random_bytes(&mut r);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}:{}:{}", host.trim(), std::process::id(), hex::encode(r))
}

/// TLS for https webhooks: the platform's roots, X25519MLKEM768 preferred with classical groups
/// for receivers without it (TLS 1.2 allowed: a receiver is any operator's HTTPS endpoint).
fn webhook_tls() -> Result<rustls::ClientConfig, String> {
    use rustls_platform_verifier::BuilderVerifierExt as _;
    rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        vmseal_client::crypto_provider(vmseal_client::KeyExchange::PostQuantumPreferred),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_platform_verifier()
    .map_err(|e| e.to_string())
    .map(|b| b.with_no_client_auth())
}

async fn deliver_forever(st: std::sync::Arc<AppState>) {
    let owner = replica_id();
    let http = match webhook_tls().and_then(|tls| {
        reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(WEBHOOK_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("vmseal-verifier/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| e.to_string())
    }) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(
                "cannot build the webhook HTTP client: {e}; alerts will not be delivered"
            );
            return;
        }
    };
    loop {
        match st.store.claim_deliveries(&owner, now(), 32).await {
            Ok(batch) if !batch.is_empty() => {
                futures_util::future::join_all(
                    batch.iter().map(|d| deliver(&st, &http, &owner, d)),
                )
                .await;
            }
            Ok(_) => {
                let _ = tokio::time::timeout(DELIVERY_POLL, st.alert_wake.notified()).await;
            }
            Err(e) => {
                tracing::warn!("claiming alert deliveries: {e}; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

/// A failed delivery's cause, without the webhook's URL (it may carry credentials, and the error
/// is shown to operators): the error and its sources.
fn delivery_error(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut s = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(c) = src {
        s.push_str(&format!(": {c}"));
        src = c.source();
    }
    s
}

async fn deliver(st: &AppState, http: &reqwest::Client, owner: &str, d: &ClaimedDelivery) {
    // The newest audit checkpoint travels with every alert: copies live at the receivers.
    let checkpoint = match st.store.checkpoints(1).await {
        Ok(c) => c.into_iter().next().map(|(_, t)| t),
        Err(e) => {
            tracing::warn!("reading the newest audit checkpoint: {e}; delivering without it");
            None
        }
    };
    let outcome = match st.ear.sign_alert(
        &d.alert,
        &d.webhook,
        d.attempt,
        now(),
        checkpoint.as_deref(),
    ) {
        Err(e) => Err(format!("signing: {e}")),
        Ok(jwt) => http
            .post(&d.url)
            .header("content-type", "application/jwt")
            .header("vmseal-alert-id", d.alert.alert_id.to_string())
            .header(
                "vmseal-delivery",
                format!("{}/{}", d.alert.alert_id, d.webhook),
            )
            .body(jwt)
            .send()
            .await
            .map_err(delivery_error)
            .and_then(|r| -> Result<(), String> {
                if r.status().is_success() {
                    Ok(())
                } else {
                    Err(format!("the receiver answered {}", r.status()))
                }
            }),
    };
    let t = now();
    match outcome {
        Ok(()) => {
            st.metrics.delivery("delivered");
            tracing::info!(alert = d.alert.alert_id, webhook = %d.webhook, attempt = d.attempt, "alert delivered");
            if let Err(e) = st.store.delivery_done(d, owner, t).await {
                tracing::warn!(alert = d.alert.alert_id, webhook = %d.webhook, "delivered, but recording it failed ({e}): it will be delivered again");
            }
        }
        Err(why) => match st.store.delivery_failed(d, owner, &why, t).await {
            Ok(true) => {
                st.metrics.delivery("given_up");
                tracing::error!(alert = d.alert.alert_id, webhook = %d.webhook, "alert delivery given up after {} attempts: {why}", d.attempt);
            }
            Ok(false) => {
                st.metrics.delivery("retry");
                tracing::warn!(alert = d.alert.alert_id, webhook = %d.webhook, attempt = d.attempt, "alert delivery failed: {why}; retrying in {} s", crate::store::backoff_s(d.attempt));
            }
            Err(e) => tracing::warn!(alert = d.alert.alert_id, "recording a failed delivery: {e}"),
        },
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::appraise::{RegionChange, TrustVector};
    use vmseal_sealer::claims::{RegionClass, Severity};

    fn rec(last_tier: Option<&str>, open: Option<i64>) -> VmRecord {
        VmRecord {
            vm_id: "vm1".into(),
            host_id: "h".into(),
            threshold: 70,
            anchored: true,
            baseline_version: Some(1),
            last_tier: last_tier.map(str::to_owned),
            threshold_alert: open,
            ..VmRecord::default()
        }
    }

    /// An appraisal of `vm1` #7 with one changed code page (for tests).
    pub(crate) fn appraisal(score: u8, tier: Tier) -> Appraisal {
        Appraisal {
            verdict: vmseal_client::Appraisal {
                vm_id: "vm1".into(),
                seq: 7,
                evidence: String::new(),
                score,
                tier,
                trust_vector: TrustVector {
                    instance_identity: 2,
                    executables: 2,
                    runtime_opaque: 2,
                    hardware: 2,
                },
                changes: vec![RegionChange {
                    region: "guest-code".into(),
                    class: RegionClass::Code,
                    severity: Severity::Critical,
                    findings: vec![crate::appraise::Finding::Changed],
                    claimed: None,
                    changed_pages: 1,
                    changed_ranges: vec![[3, 4]],
                    ranges_truncated: false,
                    pages: 256,
                    penalty: 100,
                }],
                unbaselined: vec![],
                baseline_version: Some(1),
                baseline_note: None,
                boot_changed: false,
                alert: score < 70,
                hardware_checked: vec![],
                hardware_problem: None,
                kernel: None,
            },
            layout_update: None,
        }
    }

    #[test]
    fn falling_below_the_threshold_raises_once_per_episode() {
        let p = plan(
            &rec(Some("affirming"), None),
            &appraisal(0, Tier::Contraindicated),
        );
        let a = p.raise.unwrap();
        assert_eq!(a.kind, "below_threshold");
        assert_eq!(
            a.message,
            "VM vm1 snapshot #7: trust score 0 is below its threshold 70 (contraindicated, was affirming); changed: guest-code (code critical, 1 page(s) changed)"
        );
        assert_eq!(p.resolve_threshold, None);
        // Still below, same tier, alert open: nothing new.
        let p = plan(
            &rec(Some("contraindicated"), Some(9)),
            &appraisal(0, Tier::Contraindicated),
        );
        assert_eq!(p, AlertPlan::default());
        // Still below but the tier got worse: a tier drop.
        let p = plan(
            &rec(Some("warning"), Some(9)),
            &appraisal(10, Tier::Contraindicated),
        );
        assert_eq!(p.raise.unwrap().kind, "tier_drop");
        // Back above: the open alert is resolved, nothing raised.
        let p = plan(
            &rec(Some("contraindicated"), Some(9)),
            &appraisal(100, Tier::Affirming),
        );
        assert_eq!(p.raise, None);
        assert_eq!(p.resolve_threshold, Some(9));
    }

    #[test]
    fn a_tier_drop_above_the_threshold_raises_tier_drop() {
        let p = plan(&rec(Some("affirming"), None), &appraisal(80, Tier::Warning));
        assert_eq!(p.raise.unwrap().kind, "tier_drop");
        // The first appraisal has no tier to drop from.
        let p = plan(&rec(None, None), &appraisal(80, Tier::Warning));
        assert_eq!(p.raise, None);
        // A tier drop resolves when the tier is better than the one it dropped to.
        let p = plan(
            &rec(Some("warning"), None),
            &appraisal(100, Tier::Affirming),
        );
        assert_eq!(p.recovered_from, ["warning", "contraindicated"]);
        let p = plan(
            &rec(Some("contraindicated"), None),
            &appraisal(50, Tier::Warning),
        );
        assert_eq!(p.recovered_from, ["contraindicated"]);
        // Before a baseline is promoted, a low score is expected: no alert.
        let mut unbaselined = appraisal(50, Tier::Warning);
        unbaselined.verdict.baseline_version = None;
        assert_eq!(
            plan(&rec(Some("affirming"), None), &unbaselined),
            AlertPlan::default()
        );
    }
}
