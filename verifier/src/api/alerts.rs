//! The alerts API: listing, showing and acknowledging alerts, the server-sent-events stream, and
//! the admin's webhooks, silences and schedules. What raises and delivers alerts is
//! [`crate::alerts`].

use std::collections::VecDeque;
use std::time::Duration;

use vmseal_client::{NewSilence, NewWebhook, SetSchedule};

use crate::alerts::MAX_SILENCE_S;
use crate::store::{Alert, Silence, Webhook};

use actix_web::{HttpRequest, HttpResponse, web};
use vmseal_client::ErrorCode;

use crate::api::auth::{Admin, AdminVm, admin, reader};
use crate::api::error::{ApiError, bad};
use crate::now;
use crate::state::AppState;

/// Query of `GET /v1/alerts`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct AlertsQuery {
    /// `open`, `acknowledged`, `resolved`, or `active` (open or acknowledged); all when absent.
    state: Option<String>,
    /// Only this VM's.
    vm: Option<String>,
    /// At most this many, 1..=500 (default 100).
    limit: Option<u32>,
}

/// `GET /v1/alerts` (admin or viewer): alerts, newest first.
#[utoipa::path(get, path = "/v1/alerts", tag = "alerts", params(AlertsQuery),
    responses((status = 200, description = "Newest first", body = vmseal_client::AlertList), (status = 400, description = "bad_query", body = vmseal_client::ApiErrorBody)))]
pub(crate) async fn list(
    req: HttpRequest,
    q: web::Query<AlertsQuery>,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    reader(&req)?;
    if let Some(s) = &q.state
        && !["open", "acknowledged", "resolved", "active"].contains(&s.as_str())
    {
        return Err(bad(
            ErrorCode::BadQuery,
            format!("state must be open, acknowledged, resolved or active, not {s:?}"),
        ));
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(bad(
            ErrorCode::BadQuery,
            format!("limit must be 1..=500, not {limit}"),
        ));
    }
    let alerts = st
        .store
        .alerts(q.state.as_deref(), q.vm.as_deref(), None, limit)
        .await?;
    Ok(HttpResponse::Ok().json(vmseal_client::AlertList { alerts }))
}

pub(crate) fn alert_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse().map_err(|_| {
        bad(
            ErrorCode::BadAlertId,
            format!("{raw:?} is not an alert id (a number)"),
        )
    })
}

/// `GET /v1/alerts/{id}` (admin or viewer): an alert and its webhook deliveries.
#[utoipa::path(get, path = "/v1/alerts/{id}", tag = "alerts", params(("id" = i64, Path, description = "Alert id")),
    responses((status = 200, description = "The alert and its deliveries", body = vmseal_client::AlertShown), (status = 404, description = "not_found", body = vmseal_client::ApiErrorBody)))]
pub(crate) async fn show(
    req: HttpRequest,
    path: web::Path<String>,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    reader(&req)?;
    let id = alert_id(&path)?;
    let alert = st.store.alert(id).await?;
    let mut deliveries = st.store.deliveries(id).await?;
    // A viewer sees whether alerts got out, not why a webhook failed: errors are for admins,
    // who also see the webhooks' URLs.
    if matches!(crate::api::auth::role(&req)?, crate::pki::Role::Viewer(_)) {
        for d in &mut deliveries {
            d.last_error = d
                .last_error
                .as_ref()
                .map(|_| "(admins see the error)".into());
        }
    }
    Ok(HttpResponse::Ok().json(vmseal_client::AlertShown { alert, deliveries }))
}

/// `POST /v1/alerts/{id}/ack` (admin): acknowledge an alert.
#[utoipa::path(post, path = "/v1/alerts/{id}/ack", tag = "alerts", params(("id" = i64, Path, description = "Alert id")),
    responses((status = 200, description = "The alert", body = Alert), (status = 409, description = "already resolved", body = vmseal_client::ApiErrorBody)))]
pub(crate) async fn ack(
    req: HttpRequest,
    path: web::Path<String>,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let who = admin(&req)?;
    let id = alert_id(&path)?;
    Ok(HttpResponse::Ok().json(st.store.ack_alert(id, &who, now()).await?))
}

/// Query of `GET /v1/alerts/stream`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct StreamQuery {
    /// Start after this alert id (as the `Last-Event-ID` header does); by default only alerts
    /// raised from now on are sent.
    after: Option<i64>,
}

/// `GET /v1/alerts/stream` (admin or viewer): server-sent events, one `alert` event per alert
/// (silenced ones excepted), with the alert id as the event id; a client that reconnects with
/// `Last-Event-ID` misses nothing.
#[utoipa::path(get, path = "/v1/alerts/stream", tag = "alerts", params(StreamQuery),
    responses((status = 200, description = "`text/event-stream` of `alert` events whose data is an Alert")))]
pub(crate) async fn stream(
    req: HttpRequest,
    q: web::Query<StreamQuery>,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    reader(&req)?;
    let header = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.trim().parse::<i64>().map_err(|_| {
                bad(
                    ErrorCode::BadQuery,
                    format!("Last-Event-ID {v:?} is not an alert id"),
                )
            })
        })
        .transpose()?;
    let after = match header.or(q.after) {
        Some(a) => a,
        None => st
            .store
            .alerts(None, None, None, 1)
            .await?
            .first()
            .map_or(0, |a| a.alert_id),
    };
    struct S {
        st: web::Data<AppState>,
        after: i64,
        queue: VecDeque<Alert>,
        quiet: u32,
        first: bool,
    }
    let init = S {
        st: st.clone(),
        after,
        queue: VecDeque::new(),
        quiet: 0,
        first: true,
    };
    let events = futures_util::stream::unfold(init, |mut s| async move {
        if s.first {
            // Tell the client how soon to reconnect, and open the stream at once.
            s.first = false;
            return Some((
                Ok::<_, actix_web::Error>(web::Bytes::from_static(b"retry: 2000\n\n")),
                s,
            ));
        }
        loop {
            if let Some(a) = s.queue.pop_front() {
                s.after = a.alert_id;
                let data = serde_json::to_string(&a).unwrap_or_default();
                let ev = format!("id: {}\nevent: alert\ndata: {data}\n\n", a.alert_id);
                return Some((Ok(web::Bytes::from(ev)), s));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            match s.st.store.alerts(None, None, Some(s.after), 100).await {
                Ok(found) => {
                    for a in found {
                        if a.silenced {
                            s.after = a.alert_id;
                        } else {
                            s.queue.push_back(a);
                        }
                    }
                }
                Err(e) => tracing::debug!("alert stream: {e}"),
            }
            s.quiet += 1;
            if s.queue.is_empty() && s.quiet >= 15 {
                s.quiet = 0;
                return Some((Ok(web::Bytes::from_static(b": keep-alive\n\n")), s));
            }
        }
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .streaming(events))
}

pub(crate) fn valid_name(n: &str) -> bool {
    (1..=64).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// `POST /v1/webhooks` (admin): deliver alerts to a URL from now on.
#[utoipa::path(post, path = "/v1/webhooks", tag = "alerts", request_body = NewWebhook,
    responses((status = 201, description = "The webhook", body = Webhook), (status = 409, description = "name taken", body = vmseal_client::ApiErrorBody)))]
pub(crate) async fn add_webhook(
    who: Admin,
    body: web::Json<NewWebhook>,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let who = who.0;
    let b = body.into_inner();
    if !valid_name(&b.name) {
        return Err(bad(
            ErrorCode::BadWebhook,
            format!("webhook name {:?}: 1 to 64 of A-Z a-z 0-9 . _ -", b.name),
        ));
    }
    let url = reqwest::Url::parse(&b.url).map_err(|e| {
        bad(
            ErrorCode::BadWebhook,
            format!("webhook URL {:?}: {e}", b.url),
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(bad(
            ErrorCode::BadWebhook,
            format!(
                "webhook URL {:?} must be http:// or https:// with a host",
                b.url
            ),
        ));
    }
    let w = Webhook {
        name: b.name,
        url: url.to_string(),
        created_by: who,
        created_at: now(),
    };
    st.store.add_webhook(&w).await?;
    Ok(HttpResponse::Created().json(w))
}

/// `GET /v1/webhooks` (admin).
#[utoipa::path(get, path = "/v1/webhooks", tag = "alerts",
    responses((status = 200, description = "The webhooks", body = vmseal_client::WebhookList)))]
pub(crate) async fn list_webhooks(
    req: HttpRequest,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    admin(&req)?;
    Ok(HttpResponse::Ok().json(vmseal_client::WebhookList {
        webhooks: st.store.webhooks().await?,
    }))
}

/// `DELETE /v1/webhooks/{name}` (admin): stop delivering to it; its undelivered alerts are given up.
#[utoipa::path(delete, path = "/v1/webhooks/{name}", tag = "alerts", params(("name" = String, Path, description = "Webhook name")),
    responses((status = 204, description = "Removed"), (status = 404, description = "not_found", body = vmseal_client::ApiErrorBody)))]
pub(crate) async fn remove_webhook(
    req: HttpRequest,
    path: web::Path<String>,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let who = admin(&req)?;
    st.store.remove_webhook(&path, &who, now()).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `POST /v1/silences` (admin): record but do not deliver alerts of a VM (or of all) for a while.
#[utoipa::path(post, path = "/v1/silences", tag = "alerts", request_body = NewSilence,
    responses((status = 201, description = "The silence", body = Silence)))]
pub(crate) async fn add_silence(
    who: Admin,
    body: web::Json<NewSilence>,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let who = who.0;
    let b = body.into_inner();
    if !(1..=MAX_SILENCE_S).contains(&b.duration_s) {
        return Err(bad(
            ErrorCode::BadSilence,
            format!(
                "duration_s must be 1..={MAX_SILENCE_S} (30 days), not {}",
                b.duration_s
            ),
        ));
    }
    if b.reason.trim().is_empty() || b.reason.len() > 500 {
        return Err(bad(
            ErrorCode::BadSilence,
            "a silence needs a reason (1 to 500 characters): it is shown with the silenced alerts",
        ));
    }
    let t = now();
    let s = Silence {
        silence_id: crate::api::enroll::new_id()?,
        vm_id: b.vm_id,
        ends_at: t + b.duration_s,
        reason: b.reason,
        created_by: who,
        created_at: t,
    };
    st.store.add_silence(&s).await?;
    Ok(HttpResponse::Created().json(s))
}

/// `GET /v1/silences` (admin or viewer): the silences in force.
#[utoipa::path(get, path = "/v1/silences", tag = "alerts",
    responses((status = 200, description = "The silences in force", body = vmseal_client::SilenceList)))]
pub(crate) async fn list_silences(
    req: HttpRequest,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    reader(&req)?;
    Ok(HttpResponse::Ok().json(vmseal_client::SilenceList {
        silences: st.store.silences(now()).await?,
    }))
}

/// `DELETE /v1/silences/{id}` (admin): end a silence now. The alerts it held back stay recorded
/// (marked silenced) and are not delivered; the answer says how many.
#[utoipa::path(delete, path = "/v1/silences/{id}", tag = "alerts", params(("id" = String, Path, description = "Silence id")),
    responses((status = 200, description = "Ended", body = vmseal_client::SilenceEnded), (status = 404, description = "not_found", body = vmseal_client::ApiErrorBody)))]
pub(crate) async fn end_silence(
    req: HttpRequest,
    path: web::Path<String>,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let who = admin(&req)?;
    let held = st.store.end_silence(&path, &who, now()).await?;
    Ok(HttpResponse::Ok().json(vmseal_client::SilenceEnded {
        silence_id: path.into_inner(),
        held_back: held,
    }))
}

/// `POST /v1/vms/{vm}/schedule` (admin): how often the VM's evidence is expected; a `silent`
/// alert is raised when none is accepted for twice that.
#[utoipa::path(post, path = "/v1/vms/{vm}/schedule", tag = "alerts", params(("vm" = String, Path, description = "VM id")),
    request_body = SetSchedule,
    responses((status = 200, description = "The schedule now", body = vmseal_client::ScheduleSet)))]
pub(crate) async fn set_schedule(
    AdminVm { who, vm }: AdminVm,
    body: web::Json<SetSchedule>,
    st: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if let Some(e) = body.expect_every_s
        && !(1..=MAX_SILENCE_S).contains(&e)
    {
        return Err(bad(
            ErrorCode::BadSchedule,
            format!("expect_every_s must be 1..={MAX_SILENCE_S}, not {e}"),
        ));
    }
    st.store.set_schedule(&vm, body.expect_every_s).await?;
    let detail = serde_json::json!({ "vm": vm, "expect_every_s": body.expect_every_s });
    st.store
        .audit(&who, "set_schedule", &detail.to_string(), now())
        .await?;
    Ok(HttpResponse::Ok().json(vmseal_client::ScheduleSet {
        vm_id: vm,
        expect_every_s: body.expect_every_s,
    }))
}
