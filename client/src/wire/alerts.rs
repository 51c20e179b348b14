//! Alerts: the wire types of `/v1/alerts`, `/v1/webhooks` and `/v1/silences`, and the check a
//! webhook receiver runs on what the verifier posts to it.
//!
//! A webhook delivery is `POST <url>` with `Content-Type: application/jwt` and a compact JWS as
//! the body: ES256, signed by the verifier's result-signing key, whose certificate (issued by the
//! verifier CA) travels in the `x5c` header, with `typ` = [`ALERT_JWT_TYP`]. The claims:
//!
//! ```json
//! { "iss": "vmseal-verifier", "iat": 1764381600, "jti": "42/ops",
//!   "aud": "ops", "vmseal.attempt": 1, "vmseal.alert": { "alert_id": 42, "vm_id": "vm1", … } }
//! ```
//!
//! `aud` is the webhook's name (a delivery for one receiver does not verify at another); `jti` is
//! `<alert id>/<webhook>`, the same on every retry: delivery is at least once, so a receiver
//! drops a `jti` it has seen.

use serde::{Deserialize, Serialize};

use crate::EarError;

/// The JOSE `typ` of an alert delivery (RFC 8725 §3.11: a signed alert is never mistaken for an
/// attestation result, which is `JWT`).
pub const ALERT_JWT_TYP: &str = "vmseal-alert+jwt";

/// An alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Alert {
    /// Id: the id of the audit-log entry that raised it (gap-free, in commit order).
    pub alert_id: i64,
    /// VM.
    pub vm_id: String,
    /// `below_threshold` (the score fell under the VM's threshold), `tier_drop` (the tier got
    /// worse), `silent` (no evidence within the VM's schedule) or `evidence_refused` (the
    /// verifier refused the VM's evidence; `code` says why).
    pub kind: String,
    /// The appraisal that raised it (none for `silent`).
    pub seq: Option<u64>,
    /// Its trust score.
    pub score: Option<u8>,
    /// Its tier.
    pub tier: Option<String>,
    /// The VM's threshold when it was raised.
    pub threshold: u8,
    /// What happened.
    pub message: String,
    /// Unix seconds.
    pub created_at: i64,
    /// `open`, `acknowledged` or `resolved`.
    pub state: String,
    /// Who acknowledged it.
    pub acked_by: Option<String>,
    /// When, Unix seconds.
    pub acked_at: Option<i64>,
    /// When it was resolved (the VM recovered, or evidence arrived again), Unix seconds.
    pub resolved_at: Option<i64>,
    /// Whether a silence covered it: recorded, not delivered.
    pub silenced: bool,
    /// For `evidence_refused`: the refusal code (`policy_mismatch`, `broken_chain`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// How many times it happened while the alert was unresolved (refusals of one code count on
    /// one alert).
    #[serde(default = "one")]
    pub count: u64,
}

fn one() -> u64 {
    1
}

/// A webhook alerts are posted to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Webhook {
    /// Name (the `aud` of what it receives).
    pub name: String,
    /// URL (http or https).
    pub url: String,
    /// Who added it.
    pub created_by: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// `POST /v1/webhooks` body (admin).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewWebhook {
    /// Name: 1–64 of `[A-Za-z0-9._-]`.
    pub name: String,
    /// `http://` or `https://` URL.
    pub url: String,
}

/// A silence: alerts of one VM (or of all) are recorded but not delivered until `ends_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Silence {
    /// Id.
    pub silence_id: String,
    /// The VM, or none for every VM.
    pub vm_id: Option<String>,
    /// Unix seconds.
    pub ends_at: i64,
    /// Why.
    pub reason: String,
    /// Who.
    pub created_by: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// `POST /v1/silences` body (admin).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewSilence {
    /// The VM; none silences every VM.
    pub vm_id: Option<String>,
    /// How long, seconds (1 s to 30 days).
    pub duration_s: i64,
    /// Why (shown with the silence and in the audit log).
    pub reason: String,
}

/// `POST /v1/vms/{vm}/schedule` body (admin).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SetSchedule {
    /// Evidence is expected at least this often, seconds; a `silent` alert is raised when none
    /// arrives for twice as long. None: no schedule.
    pub expect_every_s: Option<i64>,
}

/// `POST /v1/vms/{vm}/schedule` answer: the VM's schedule now.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScheduleSet {
    /// VM id.
    pub vm_id: String,
    /// Evidence is expected at least this often, seconds (null: no schedule).
    pub expect_every_s: Option<i64>,
}

/// One webhook delivery of an alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeliveryState {
    /// Webhook name.
    pub webhook: String,
    /// Attempts made.
    pub attempts: i64,
    /// Delivered at, Unix seconds.
    pub delivered_at: Option<i64>,
    /// Given up at, Unix seconds.
    pub failed_at: Option<i64>,
    /// The last failure.
    pub last_error: Option<String>,
    /// Next attempt, Unix seconds.
    pub next_attempt_at: i64,
}

/// A verified webhook delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertDelivery {
    /// The alert.
    pub alert: Alert,
    /// `<alert id>/<webhook>`: the same on every retry of this delivery.
    pub jti: String,
    /// Which attempt this is (1 = first).
    pub attempt: u32,
    /// When it was signed, Unix seconds.
    pub iat: i64,
    /// The newest signed audit checkpoint at delivery time (a JWS for
    /// [`crate::audit::verify_checkpoint`]): keep it, so a copy lives outside the verifier.
    pub checkpoint: Option<String>,
}

/// Verify a webhook delivery body (a compact JWS) from public material only: its `x5c`
/// certificate must be issued by one of `ca_pem`'s certificates, valid at `now` and marked for
/// signing results; the ES256 signature must verify; `typ` must be [`ALERT_JWT_TYP`]; `aud` must
/// be `webhook` (the receiver's own webhook name) and `iat` within `max_age_s` of `now`.
pub fn verify_alert(
    token: &str,
    ca_pem: &[u8],
    webhook: &str,
    max_age_s: i64,
    now: time::OffsetDateTime,
) -> Result<AlertDelivery, EarError> {
    let claims = crate::verify_signed(token, ca_pem, ALERT_JWT_TYP, now)?;
    if claims["aud"] != webhook {
        return Err(EarError::Invalid(format!(
            "addressed to webhook {}, not {webhook:?}",
            claims["aud"]
        )));
    }
    let iat = claims["iat"]
        .as_i64()
        .ok_or_else(|| EarError::Invalid("no iat".into()))?;
    if (now.unix_timestamp() - iat).abs() > max_age_s {
        return Err(EarError::Invalid(format!(
            "signed at {iat}, more than {max_age_s} s from now: a replay, or a clock is off"
        )));
    }
    let alert: Alert = serde_json::from_value(claims["vmseal.alert"].clone())
        .map_err(|e| EarError::Invalid(format!("vmseal.alert: {e}")))?;
    let jti = claims["jti"]
        .as_str()
        .ok_or_else(|| EarError::Invalid("no jti".into()))?
        .to_owned();
    if jti != format!("{}/{webhook}", alert.alert_id) {
        return Err(EarError::Invalid(format!(
            "jti {jti:?} does not name alert {}",
            alert.alert_id
        )));
    }
    Ok(AlertDelivery {
        alert,
        jti,
        attempt: claims["vmseal.attempt"].as_u64().unwrap_or(0) as u32,
        iat,
        checkpoint: claims["vmseal.audit_checkpoint"]
            .as_str()
            .map(str::to_owned),
    })
}

/// `GET /v1/alerts` answer: the alerts asked for, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AlertList {
    /// The alerts.
    pub alerts: Vec<Alert>,
}

/// `GET /v1/alerts/{id}` answer: an alert and its webhook deliveries.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AlertShown {
    /// The alert.
    pub alert: Alert,
    /// One per webhook it went to (a viewer sees `(admins see the error)` for an error).
    pub deliveries: Vec<DeliveryState>,
}

/// `GET /v1/webhooks` answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookList {
    /// The webhooks.
    pub webhooks: Vec<Webhook>,
}

/// `GET /v1/silences` answer: the silences in force.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SilenceList {
    /// The silences.
    pub silences: Vec<Silence>,
}

/// `DELETE /v1/silences/{id}` answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SilenceEnded {
    /// The silence.
    pub silence_id: String,
    /// Alerts it held back that are now sent.
    pub held_back: u64,
}
