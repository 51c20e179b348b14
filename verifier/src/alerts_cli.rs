//! `vmseal-verifier admin alerts|webhooks|set-schedule` and `vmseal-verifier webhook-receiver`.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::{Context, Result};
use clap::Subcommand;
use vmseal_client::{Alert, Client, NewSilence, NewWebhook};

/// `admin alerts …`
#[derive(Subcommand)]
pub(crate) enum AlertsCmd {
    /// List alerts, newest first.
    #[command(
        after_help = "Examples:\n  vmseal-verifier admin --state DIR alerts list --state-filter active\n  \
vmseal-verifier admin --state DIR alerts list --vm-id web-1 --limit 5 --json"
    )]
    List {
        /// Only alerts in this state: open, acknowledged, resolved, or active (open or
        /// acknowledged).
        #[arg(long = "state-filter", value_parser = ["open", "acknowledged", "resolved", "active"])]
        state: Option<String>,
        /// Only this VM's.
        #[arg(long)]
        vm_id: Option<String>,
        /// How many (1-500).
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Show one alert and where its webhook deliveries stand.
    Show {
        /// Alert id.
        id: i64,
    },
    /// Acknowledge alerts: a person has seen them. They stay until the VM recovers.
    Ack {
        /// Alert ids.
        #[arg(required = true)]
        ids: Vec<i64>,
    },
    /// Record but do not deliver a VM's alerts (or every VM's, with --all) for a while.
    #[command(
        after_help = "Example:\n  vmseal-verifier admin --state DIR alerts silence --vm-id web-1 --for 2h \\\n    \
--reason \"kernel live patch CHG-1234\""
    )]
    Silence {
        /// VM id.
        #[arg(long, conflicts_with = "all", required_unless_present = "all")]
        vm_id: Option<String>,
        /// Every VM.
        #[arg(long)]
        all: bool,
        /// How long: 90s, 15m, 2h, 1d … (at most 30 days).
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        duration: std::time::Duration,
        /// Why (kept with the silence and in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// The silences in force.
    Silences,
    /// End a silence now.
    Unsilence {
        /// Silence id.
        id: String,
    },
    /// Follow new alerts as they are raised (server-sent events), one line each; reconnects
    /// by itself and misses none.
    Watch {
        /// Start after this alert id (default: from now on).
        #[arg(long)]
        after: Option<i64>,
        /// Stop after this many alerts.
        #[arg(long)]
        count: Option<u64>,
    },
}

/// `admin webhooks …`
#[derive(Subcommand)]
pub(crate) enum WebhooksCmd {
    /// Deliver every alert raised from now on to URL (POST, a signed JWS: see docs/api.md).
    #[command(
        after_help = "Example:\n  vmseal-verifier admin --state DIR webhooks add --name ops --url https://hooks.example/vmseal\n\
Test a receiver with `vmseal-verifier webhook-receiver`."
    )]
    Add {
        /// Name (also the `aud` its deliveries carry).
        #[arg(long)]
        name: String,
        /// http:// or https:// URL.
        #[arg(long)]
        url: String,
    },
    /// List the webhooks.
    List,
    /// Stop delivering to a webhook; its undelivered alerts are given up.
    Remove {
        /// Name.
        name: String,
    },
}

fn when(t: i64) -> String {
    vmseal_client::rfc3339(t)
}

/// One line for an alert.
pub(crate) fn alert_line(a: &Alert) -> String {
    let mut flags = String::new();
    if a.silenced {
        flags.push_str(" [silenced]");
    }
    if let Some(by) = &a.acked_by {
        flags.push_str(&format!(" [acknowledged by {by}]"));
    }
    if a.count > 1 {
        flags.push_str(&format!(" [{} times]", a.count));
    }
    format!(
        "#{:<5} {}  {:<12} {:<15} {}{}",
        a.alert_id,
        when(a.created_at),
        a.state,
        a.kind,
        a.message,
        flags
    )
}

fn alerts_of(v: &serde_json::Value) -> Result<Vec<Alert>> {
    <vmseal_client::AlertList as serde::Deserialize>::deserialize(v)
        .map(|l| l.alerts)
        .context("the verifier's answer is not a list of alerts")
}

/// The verifier's answer read as this version's contract type `T`.
fn typed<T: serde::de::DeserializeOwned>(v: &serde_json::Value) -> Result<T> {
    T::deserialize(v).context(
        "the verifier's answer does not read as this version's (is it the same vmseal version?)",
    )
}

/// Run `admin alerts …`; returns JSON to print when `json`.
pub(crate) fn alerts(
    client: &Client,
    cmd: AlertsCmd,
    json: bool,
) -> Result<Option<serde_json::Value>> {
    Ok(match cmd {
        AlertsCmd::List {
            state,
            vm_id,
            limit,
        } => {
            let mut q = format!("/v1/alerts?limit={limit}");
            if let Some(s) = state {
                q.push_str(&format!("&state={s}"));
            }
            if let Some(v) = vm_id {
                q.push_str(&format!("&vm={v}"));
            }
            let out = client.get(&q)?;
            if json {
                return Ok(Some(out));
            }
            let list = alerts_of(&out)?;
            if list.is_empty() {
                println!("no alerts");
            }
            list.iter().for_each(|a| println!("{}", alert_line(a)));
            None
        }
        AlertsCmd::Show { id } => {
            let out = client.get(&format!("/v1/alerts/{id}"))?;
            if json {
                return Ok(Some(out));
            }
            let vmseal_client::AlertShown {
                alert: a,
                deliveries: ds,
            } = typed(&out)?;
            println!("{}", alert_line(&a));
            if ds.is_empty() {
                println!(
                    "  no webhook deliveries ({})",
                    if a.silenced {
                        "silenced"
                    } else {
                        "no webhooks when it was raised"
                    }
                );
            }
            for d in ds {
                let state = match (d.delivered_at, d.failed_at) {
                    (Some(t), _) => format!("delivered {}", when(t)),
                    (None, Some(t)) => format!("given up {}", when(t)),
                    (None, None) => format!("pending, next attempt {}", when(d.next_attempt_at)),
                };
                let err = d
                    .last_error
                    .map(|e| format!("; last error: {e}"))
                    .unwrap_or_default();
                println!(
                    "  webhook {}: {state} after {} attempt(s){err}",
                    d.webhook, d.attempts
                );
            }
            None
        }
        AlertsCmd::Ack { ids } => {
            let mut done = Vec::new();
            for id in ids {
                let a = client.post_json(&format!("/v1/alerts/{id}/ack"), &())?;
                if !json {
                    let a: Alert = serde_json::from_value(a.clone())?;
                    println!("{}", alert_line(&a));
                }
                done.push(a);
            }
            json.then(|| serde_json::json!({ "alerts": done }))
        }
        AlertsCmd::Silence {
            vm_id,
            all: _,
            duration,
            reason,
        } => {
            let s = client.post_json(
                "/v1/silences",
                &NewSilence {
                    vm_id: vm_id.clone(),
                    duration_s: duration.as_secs() as i64,
                    reason,
                },
            )?;
            if json {
                return Ok(Some(s));
            }
            let silence: vmseal_client::Silence = typed(&s)?;
            println!(
                "silence {}: alerts of {} are recorded but not delivered until {}",
                silence.silence_id,
                vm_id
                    .map(|v| format!("VM {v}"))
                    .unwrap_or_else(|| "every VM".into()),
                when(silence.ends_at)
            );
            None
        }
        AlertsCmd::Silences => {
            let out = client.get("/v1/silences")?;
            if json {
                return Ok(Some(out));
            }
            let list = typed::<vmseal_client::SilenceList>(&out)?.silences;
            if list.is_empty() {
                println!("no silences in force");
            }
            for s in list {
                println!(
                    "{}  {}  until {}  by {}: {}",
                    s.silence_id,
                    s.vm_id.as_deref().unwrap_or("(every VM)"),
                    when(s.ends_at),
                    s.created_by,
                    s.reason
                );
            }
            None
        }
        AlertsCmd::Unsilence { id } => {
            let out = client.delete(&format!("/v1/silences/{id}"))?;
            if !json {
                let held = typed::<vmseal_client::SilenceEnded>(&out)?.held_back;
                println!(
                    "silence {id} ended; {held} alert(s) raised during it stay recorded (marked \
                     [silenced] in `admin alerts list`) and are not delivered"
                );
            }
            json.then_some(out)
        }
        AlertsCmd::Watch { after, count } => {
            let mut seen = 0u64;
            let mut from = after;
            loop {
                let r = client.follow_alerts(from, |a| {
                    if json {
                        println!("{}", serde_json::to_string(&a).unwrap_or_default());
                    } else {
                        println!("{}", alert_line(&a));
                    }
                    seen += 1;
                    from = Some(a.alert_id);
                    count.is_none_or(|c| seen < c)
                });
                if count.is_some_and(|c| seen >= c) {
                    return Ok(None);
                }
                match r {
                    Ok(_) => eprintln!("alert stream ended; reconnecting"),
                    Err(e) => eprintln!("alert stream: {e}; reconnecting in 2 s"),
                }
                std::thread::sleep(std::time::Duration::from_secs(2));
            }
        }
    })
}

/// Run `admin webhooks …`.
pub(crate) fn webhooks(
    client: &Client,
    cmd: WebhooksCmd,
    json: bool,
) -> Result<Option<serde_json::Value>> {
    Ok(match cmd {
        WebhooksCmd::Add { name, url } => {
            let w = client.post_json("/v1/webhooks", &NewWebhook { name, url })?;
            if json {
                return Ok(Some(w));
            }
            let hook: vmseal_client::Webhook = typed(&w)?;
            println!(
                "webhook {} added: alerts raised from now on are posted to {}",
                hook.name, hook.url
            );
            None
        }
        WebhooksCmd::List => {
            let out = client.get("/v1/webhooks")?;
            if json {
                return Ok(Some(out));
            }
            let list = typed::<vmseal_client::WebhookList>(&out)?.webhooks;
            if list.is_empty() {
                println!("no webhooks (`admin webhooks add`)");
            }
            for w in list {
                println!(
                    "{}  {}  added by {} {}",
                    w.name,
                    w.url,
                    w.created_by,
                    when(w.created_at)
                );
            }
            None
        }
        WebhooksCmd::Remove { name } => {
            client.delete(&format!("/v1/webhooks/{name}"))?;
            if !json {
                println!("webhook {name} removed");
            }
            json.then(|| serde_json::json!({ "removed": name }))
        }
    })
}

/// Options of `webhook-receiver`.
#[derive(clap::Args)]
pub(crate) struct ReceiverArgs {
    /// Address to listen on (plain HTTP: the deliveries are signed; put TLS in front for
    /// confidentiality).
    #[arg(long, default_value = "127.0.0.1:9099")]
    listen: String,
    /// The verifier's CA certificate (its ca.pem): the only key material needed to check
    /// a delivery (`--ca` is the old spelling).
    #[arg(long = "verifier-ca", alias = "ca", env = "VMSEAL_VERIFIER_CA")]
    ca: PathBuf,
    /// This receiver's webhook name (deliveries addressed to another name are refused).
    #[arg(long)]
    name: String,
    /// Exit after this many verified alerts.
    #[arg(long)]
    count: Option<u64>,
    /// Answer 503 to the first N deliveries (to watch the verifier retry).
    #[arg(long, default_value_t = 0)]
    fail_first: u64,
    /// Print each verified alert as one JSON line.
    #[arg(long)]
    json: bool,
    /// Keep each new audit checkpoint the deliveries carry here (`checkpoint-<entry>.jwt`), for
    /// `vmseal-certs verify-audit --checkpoint DIR`.
    #[arg(long)]
    checkpoints: Option<PathBuf>,
}

struct Receiver {
    checkpoints: Option<PathBuf>,
    ca: Vec<u8>,
    name: String,
    seen: Mutex<(HashSet<String>, u64, u64)>,
    args_count: Option<u64>,
    fail_first: u64,
    json: bool,
    stop: tokio::sync::Notify,
}

async fn receive(
    body: actix_web::web::Bytes,
    r: actix_web::web::Data<Receiver>,
) -> actix_web::HttpResponse {
    use actix_web::HttpResponse;
    let Ok(token) = std::str::from_utf8(&body) else {
        return HttpResponse::BadRequest().body("not a JWS");
    };
    let delivery = match vmseal_client::verify_alert(
        token.trim(),
        &r.ca,
        &r.name,
        300,
        time::OffsetDateTime::now_utc(),
    ) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("REFUSED a delivery: {e}");
            return HttpResponse::Unauthorized().body(e.to_string());
        }
    };
    let Ok(mut seen) = r.seen.lock() else {
        return HttpResponse::InternalServerError().finish();
    };
    seen.2 += 1;
    if seen.2 <= r.fail_first {
        eprintln!(
            "answering 503 to delivery {} (attempt {}), as --fail-first asks",
            delivery.jti, delivery.attempt
        );
        return HttpResponse::ServiceUnavailable().finish();
    }
    if !seen.0.insert(delivery.jti.clone()) {
        eprintln!(
            "duplicate delivery {} (attempt {}): already handled",
            delivery.jti, delivery.attempt
        );
        return HttpResponse::Ok().finish();
    }
    seen.1 += 1;
    // The audit checkpoint it carries: verified like the alert, kept when asked.
    if let Some(t) = &delivery.checkpoint {
        match vmseal_client::audit::verify_checkpoint(t, &r.ca, time::OffsetDateTime::now_utc()) {
            Ok(c) => {
                if let Some(dir) = &r.checkpoints {
                    let p = dir.join(format!("checkpoint-{:08}.jwt", c.audit_id));
                    if !p.exists()
                        && let Err(e) = std::fs::create_dir_all(dir)
                            .map_err(|e| e.to_string())
                            .and_then(|()| {
                                vmseal_sealer::state::write_atomic(&p, format!("{t}\n").as_bytes())
                                    .map_err(|e| e.to_string())
                            })
                    {
                        eprintln!("cannot keep the audit checkpoint in {}: {e}", p.display());
                    }
                }
                if !r.json {
                    println!(
                        "verified audit checkpoint: entry #{} has hash {}",
                        c.audit_id,
                        c.audit_hash.get(..16).unwrap_or(&c.audit_hash)
                    );
                }
            }
            Err(e) => eprintln!("REFUSED the audit checkpoint the delivery carried: {e}"),
        }
    }
    if r.json {
        println!(
            "{}",
            serde_json::to_string(&delivery.alert).unwrap_or_default()
        );
    } else {
        println!(
            "verified alert (signature OK, attempt {}): {}",
            delivery.attempt,
            alert_line(&delivery.alert)
        );
    }
    if r.args_count.is_some_and(|c| seen.1 >= c) {
        r.stop.notify_one();
    }
    HttpResponse::Ok().finish()
}

/// `webhook-receiver`: a reference receiver that checks every delivery's signature with the
/// verifier's CA only and prints the alert.
pub(crate) fn receiver(a: ReceiverArgs) -> Result<()> {
    let ca = std::fs::read(&a.ca).with_context(|| format!("cannot read {}", a.ca.display()))?;
    let r = actix_web::web::Data::new(Receiver {
        checkpoints: a.checkpoints.clone(),
        ca,
        name: a.name,
        seen: Mutex::new((HashSet::new(), 0, 0)),
        args_count: a.count,
        fail_first: a.fail_first,
        json: a.json,
        stop: tokio::sync::Notify::new(),
    });
    let listen = a.listen.clone();
    actix_web::rt::System::new().block_on(async move {
        let data = r.clone();
        let server = actix_web::HttpServer::new(move || {
            actix_web::App::new()
                .app_data(data.clone())
                .app_data(actix_web::web::PayloadConfig::new(1 << 20))
                .default_service(actix_web::web::post().to(receive))
        })
        .workers(1)
        .bind(&listen)
        .with_context(|| format!("cannot listen on {listen}"))?
        .run();
        eprintln!("webhook receiver {} listening on http://{listen}", r.name);
        let handle = server.handle();
        let stopper = r.clone();
        actix_web::rt::spawn(async move {
            stopper.stop.notified().await;
            // Let the last 200 reach the verifier, then stop. (Not a graceful stop: actix-server
            // 2.9's graceful path underflows its connection counter in debug builds.)
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            handle.stop(false).await;
        });
        server.await.context("webhook receiver")
    })
}
