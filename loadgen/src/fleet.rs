//! `vmseal-loadgen fleet`: the service under a fleet — many agents, each with its own
//! enrolled host, agent certificate and mutual-TLS connection, submitting evidence for many VMs
//! at once, on SQLite or PostgreSQL. It reports errors, latency percentiles and throughput, and
//! the same connections' `GET /healthz` in the same process as the baseline. A benchmark, not a
//! test.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use time::OffsetDateTime;
use vmseal_sealer::evidence::Sealer;
use vmseal_sealer::keys::IntermediateKey;
use vmseal_sealer::x509::{IntermediateProfile, issue_intermediate};

use crate::appraise::{chain, server_cpu_seconds};
use vmseal_verifier::pki::{AGENT_CERT_LIFETIME, Ca, Role};
use vmseal_verifier::store::{BaselineSource, Store};

/// What to run.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// Agents: one host, one agent certificate and one connection each.
    pub agents: usize,
    /// VMs, spread evenly over the agents.
    pub vms: usize,
    /// Evidence per VM.
    pub rounds: usize,
    /// Pages of the code, structure and data regions.
    pub pages: [u64; 3],
    /// Database URL; None: SQLite in a temporary directory. A PostgreSQL database must be empty.
    pub database: Option<String>,
    /// Server worker threads.
    pub workers: usize,
    /// Offered load, evidence per second over the whole fleet (each agent submits on its own
    /// schedule, spread evenly); None: every agent submits back to back (saturation).
    pub rate: Option<f64>,
}

/// What the fleet benchmark measured.
#[derive(Debug, Clone, Serialize)]
pub struct FleetReport {
    /// `sqlite` or `postgres`.
    pub database: &'static str,
    /// Concurrent agents (mutual-TLS connections).
    pub agents: usize,
    /// VMs.
    pub vms: usize,
    /// Server worker threads.
    pub server_workers: usize,
    /// Offered evidence per second (None: saturation, every agent back to back).
    pub offered_per_sec: Option<f64>,
    /// Appraisals answered 200.
    pub appraisals: u64,
    /// Failed submissions (must be zero).
    pub errors: u64,
    /// TLS connections the service accepted during the run.
    pub tls_connections: u64,
    /// Wall time of the submissions, seconds.
    pub seconds: f64,
    /// Appraisals per second (wall; the agents share the machine with the service).
    pub appraisals_per_sec: f64,
    /// Service CPU, seconds.
    pub server_cpu_seconds: f64,
    /// Appraisals per CPU-second of the service.
    pub appraisals_per_server_cpu_second: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Slowest, ms.
    pub max_ms: f64,
    /// Baseline, same process, same connections: `GET /healthz` as many times, p99 ms.
    pub healthz_p99_ms: f64,
    /// Baseline: `GET /healthz` per second (wall).
    pub healthz_per_sec: f64,
    /// Appraisal p99 over `/healthz` p99.
    pub p99_over_healthz_p99: f64,
}

fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Every task's latencies, in one list.
async fn gather(mut tasks: tokio::task::JoinSet<Vec<Duration>>) -> Vec<Duration> {
    let mut all = Vec::new();
    while let Some(r) = tasks.join_next().await {
        all.extend(r.unwrap_or_default());
    }
    all
}

/// A request sent at `t` was answered with `r`: its latency joins `lat` if it succeeded, else it
/// counts as an error.
fn answered(
    r: reqwest::Result<reqwest::Response>,
    t: Instant,
    lat: &mut Vec<Duration>,
    errors: &AtomicU64,
) {
    match r {
        Ok(r) if r.status().is_success() => lat.push(t.elapsed()),
        _ => {
            errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn pct(lat: &[Duration], p: f64) -> f64 {
    lat.get(((lat.len() as f64 - 1.0) * p).round() as usize)
        .map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

struct Agent {
    host: String,
    vms: Vec<String>,
    der: Vec<u8>,
    evidence: Vec<Vec<Vec<u8>>>,
    cert_pem: String,
    key_pem: String,
}

/// Run the fleet benchmark.
pub fn run(
    o: &FleetOptions,
    progress: &dyn Fn(&str),
) -> Result<FleetReport, Box<dyn std::error::Error>> {
    if o.agents == 0 || o.vms < o.agents || o.rounds == 0 {
        return Err(
            "need at least one agent, at least as many VMs as agents, and one round".into(),
        );
    }
    let need = 2 * o.agents as u64 + 256;
    if let Some(limit) = open_files_limit()
        && limit < need
    {
        return Err(format!(
            "{} agents need about {need} open files in this process (both ends of every \
             connection); the limit is {limit}: raise it (ulimit -n {need})",
            o.agents
        )
        .into());
    }
    let dir = tempfile::tempdir()?;
    Ca::init(dir.path(), &[])?;
    let ca = Ca::load(dir.path())?;
    let database = o
        .database
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("v.db").display()));
    let kind = if database.starts_with("postgres") {
        "postgres"
    } else {
        "sqlite"
    };

    progress(&format!(
        "making {} hosts and sealing {} evidence ({} VMs × {} rounds)",
        o.agents,
        o.vms * o.rounds,
        o.vms,
        o.rounds
    ));
    let per_agent = o.vms / o.agents;
    let extra = o.vms % o.agents;
    let make = |i: usize| -> Result<Agent, String> {
        let host = format!("host-{i:04}");
        let n = per_agent + usize::from(i < extra);
        let vms: Vec<String> = (0..n).map(|j| format!("{host}-vm{j:02}")).collect();
        let key = IntermediateKey::generate().map_err(|e| e.to_string())?;
        let der = issue_intermediate(
            &key,
            &IntermediateProfile {
                host_id: &host,
                tpm: None,
                snp: None,
                validity: time::Duration::days(30), // past the re-appraisal's 7-day warning
            },
            OffsetDateTime::now_utc(),
        )
        .map_err(|e| e.to_string())?;
        let sealer = Sealer::new(key, der.clone()).map_err(|e| e.to_string())?;
        let evidence = vms
            .iter()
            .map(|vm| chain(&sealer, &host, vm, o.rounds, o.pages, 4))
            .collect();
        let cert = ca
            .issue_client(&Role::Agent(host.clone()), AGENT_CERT_LIFETIME)
            .map_err(|e| e.to_string())?;
        Ok(Agent {
            host,
            vms,
            der,
            evidence,
            cert_pem: cert.cert_pem,
            key_pem: cert.key_pem,
        })
    };
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let agents: Vec<Agent> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let make = &make;
                s.spawn(move || {
                    (0..o.agents)
                        .filter(|i| i % threads == t)
                        .map(|i| make(i).map(|a| (i, a)))
                        .collect::<Result<Vec<_>, String>>()
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in handles {
            all.extend(
                h.join()
                    .map_err(|_| "a sealing thread panicked".to_string())??,
            );
        }
        all.sort_by_key(|(i, _)| *i);
        Ok::<_, String>(all.into_iter().map(|(_, a)| a).collect())
    })?;

    progress(&format!(
        "seeding the {kind} database: {} hosts, {} VMs with baselines",
        o.agents, o.vms
    ));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("fleet-agent")
        .enable_all()
        .build()?;
    let baseline = crate::appraise::baseline_regions(o.pages);
    rt.block_on(async {
        let store = Store::open(&database).await?;
        let mut tasks = tokio::task::JoinSet::new();
        let chunk = o.agents.div_ceil(8);
        for part in agents.chunks(chunk) {
            let store = store.clone();
            let baseline = baseline.clone();
            let part: Vec<(String, Vec<u8>, Vec<String>)> = part
                .iter()
                .map(|a| (a.host.clone(), a.der.clone(), a.vms.clone()))
                .collect();
            tasks.spawn(async move {
                for (host, der, vms) in part {
                    store
                        .enroll_host(&crate::appraise::bench_host(&host, &der), 0)
                        .await?;
                    for vm in vms {
                        store.register_vm(&vm, &host, 70, 0).await?;
                        store
                            .promote_baseline(
                                &vm,
                                BaselineSource::Snapshot(0),
                                &[1; 32],
                                &baseline,
                                None,
                                "bench",
                                0,
                            )
                            .await?;
                    }
                }
                Ok::<_, vmseal_verifier::store::StoreError>(())
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.map_err(|e| e.to_string())??;
        }
        // The service opens the database next (a SQLite file serves one store at a time).
        store.close().await;
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;

    let port = crate::appraise::spawn_service(dir.path().to_owned(), database.clone(), o.workers)?;

    let ca_pem = std::fs::read(dir.path().join("ca.pem"))?;
    let url = format!("https://localhost:{port}");
    progress(&format!(
        "connecting {} agents (one mutual-TLS connection each)",
        o.agents
    ));
    let errors = Arc::new(AtomicU64::new(0));
    let conns_before = vmseal_verifier::state::TLS_CONNECTIONS.load(Ordering::Relaxed);
    let clients: Vec<reqwest::Client> = agents
        .iter()
        .map(|a| {
            let cfg =
                vmseal_client::tls_config(&ca_pem, a.cert_pem.as_bytes(), a.key_pem.as_bytes())?;
            reqwest::Client::builder()
                .tls_backend_preconfigured(cfg)
                .default_headers(vmseal_client::default_headers())
                .pool_max_idle_per_host(1)
                .timeout(Duration::from_secs(120))
                .build()
                .map_err(|e| Box::<dyn std::error::Error>::from(e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    // Every agent connects first (its handshake), then all submit at once.
    rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for c in &clients {
            let (c, u, errors) = (c.clone(), url.clone(), errors.clone());
            tasks.spawn(async move {
                if !c
                    .get(format!("{u}/healthz"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
                {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    });
    let connect_errors = errors.swap(0, Ordering::Relaxed);
    if connect_errors > 0 {
        return Err(format!("{connect_errors} agents could not connect").into());
    }

    progress(&format!(
        "{} agents submitting {} evidence",
        o.agents,
        o.vms * o.rounds
    ));
    let cpu_before = server_cpu_seconds();
    let start = Instant::now();
    let mut lat: Vec<Duration> = rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        let t0 = tokio::time::Instant::now();
        for (i, (a, c)) in agents.iter().zip(&clients).enumerate() {
            let (c, u, errors) = (c.clone(), url.clone(), errors.clone());
            let work: Vec<(String, Vec<Vec<u8>>)> = a
                .vms
                .iter()
                .cloned()
                .zip(a.evidence.iter().cloned())
                .collect();
            let rounds = o.rounds;
            // Paced: agent i's k-th submission is due at (i + k × agents) / rate.
            let pace = o
                .rate
                .map(|r| (Duration::from_secs_f64(1.0 / r), o.agents as u32));
            tasks.spawn(async move {
                let mut lat = Vec::with_capacity(rounds * work.len());
                let mut k = 0u32;
                for round in 0..rounds {
                    for (vm, evs) in &work {
                        if let Some((gap, agents)) = pace {
                            tokio::time::sleep_until(t0 + gap * (i as u32 + k * agents)).await;
                        }
                        k += 1;
                        let t = Instant::now();
                        let r = c
                            .post(format!("{u}/v1/vms/{vm}/evidence"))
                            .header("content-type", "application/octet-stream")
                            .body(evs[round].clone())
                            .send()
                            .await;
                        answered(r, t, &mut lat, &errors);
                    }
                }
                lat
            });
        }
        gather(tasks).await
    });
    let secs = start.elapsed().as_secs_f64();
    let server_cpu = server_cpu_seconds() - cpu_before;
    lat.sort_unstable();

    progress("baseline: the same connections, GET /healthz as many times, paced alike");
    let h_start = Instant::now();
    let per = o.vms * o.rounds / o.agents;
    let mut hlat: Vec<Duration> = rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        let t0 = tokio::time::Instant::now();
        for (i, c) in clients.iter().enumerate() {
            let (c, u, errors) = (c.clone(), url.clone(), errors.clone());
            let pace = o
                .rate
                .map(|r| (Duration::from_secs_f64(1.0 / r), o.agents as u32));
            tasks.spawn(async move {
                let mut lat = Vec::with_capacity(per);
                for k in 0..per as u32 {
                    if let Some((gap, agents)) = pace {
                        tokio::time::sleep_until(t0 + gap * (i as u32 + k * agents)).await;
                    }
                    let t = Instant::now();
                    let r = c.get(format!("{u}/healthz")).send().await;
                    answered(r, t, &mut lat, &errors);
                }
                lat
            });
        }
        gather(tasks).await
    });
    let h_secs = h_start.elapsed().as_secs_f64();
    hlat.sort_unstable();
    let tls_connections =
        vmseal_verifier::state::TLS_CONNECTIONS.load(Ordering::Relaxed) - conns_before;
    let n = lat.len() as u64;
    let (p99, hp99) = (pct(&lat, 0.99), pct(&hlat, 0.99));
    Ok(FleetReport {
        database: kind,
        agents: o.agents,
        vms: o.vms,
        server_workers: o.workers,
        offered_per_sec: o.rate,
        appraisals: n,
        errors: errors.load(Ordering::Relaxed),
        tls_connections,
        seconds: secs,
        appraisals_per_sec: n as f64 / secs,
        server_cpu_seconds: server_cpu,
        appraisals_per_server_cpu_second: if server_cpu > 0.0 {
            n as f64 / server_cpu
        } else {
            0.0
        },
        p50_ms: pct(&lat, 0.5),
        p99_ms: p99,
        max_ms: lat.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        healthz_p99_ms: hp99,
        healthz_per_sec: hlat.len() as f64 / h_secs,
        p99_over_healthz_p99: if hp99 > 0.0 { p99 / hp99 } else { 0.0 },
    })
}
