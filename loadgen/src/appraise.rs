//! `vmseal-loadgen appraise`: a load generator on loopback. It starts the real service (one worker:
//! one core), enrols a host, registers VMs with baselines, pre-seals a chain of evidence per VM,
//! then submits them concurrently over mutual TLS (keep-alive) and reports appraisals per second
//! and latency percentiles. Warm path: the host's intermediate is pinned, so each appraisal is the
//! ML-DSA chain, the Merkle diff and the storage transaction. A benchmark, not a test.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use time::OffsetDateTime;
use vmseal_sealer::claims::{
    CaptureInfo, CaptureKind, Claims, GpaRange, ModuleInfo, PolicyRef, Region, RegionClass,
    RegionDelta, Severity,
};
use vmseal_sealer::evidence::{Sealer, evidence_digest};
use vmseal_sealer::keys::IntermediateKey;
use vmseal_sealer::merkle::{Digest, HashAlg, MerkleTree};
use vmseal_sealer::x509::{IntermediateProfile, issue_intermediate};

use vmseal_verifier::pki::{Ca, Role};
use vmseal_verifier::store::{BaselineSource, NewBaselineRegion, Store};

/// What the benchmark measured.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// Server worker threads (cores the service may use).
    pub server_workers: usize,
    /// Concurrent clients (one VM each).
    pub clients: usize,
    /// Appraisals completed.
    pub appraisals: u64,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Appraisals per second (with `server_workers` workers).
    pub appraisals_per_sec: f64,
    /// Appraisals per second per server worker (wall time; the clients share the machine).
    pub appraisals_per_sec_per_core: f64,
    /// CPU time the service's threads (HTTP worker and SQLite worker) used, seconds.
    pub server_cpu_seconds: f64,
    /// Appraisals per CPU-second of the service: what one dedicated core sustains.
    pub appraisals_per_server_cpu_second: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Pages per region in the evidence (code, structure, data).
    pub pages: [u64; 3],
    /// Changed pages per evidence (delta size).
    pub changed_pages: u64,
    /// Errors (must be zero).
    pub errors: u64,
    /// TLS connections the service accepted during the run (keep-alive: one per client).
    pub tls_connections: u64,
    /// Baseline in the same process: `GET /healthz` (same clients, mutual TLS, keep-alive; no
    /// appraisal, no database) per CPU-second of the service.
    pub healthz_per_server_cpu_second: f64,
    /// Service CPU per appraisal over service CPU per `/healthz` request: how many bare mutual-TLS
    /// requests one appraisal costs.
    pub appraisal_cost_in_healthz: f64,
    /// Appraisals per database transaction (group commit), from the service's `/metrics`.
    pub appraisals_per_commit: f64,
}

/// Appraisals per committing transaction, read from the service's `/metrics` (0 when unread).
pub(crate) fn appraisals_per_commit(client: &vmseal_client::Client) -> f64 {
    let Ok(text) = client.get_bytes("/metrics") else {
        return 0.0;
    };
    let text = String::from_utf8_lossy(&text);
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let groups = value("vmseal_appraisal_groups_total ");
    if groups > 0.0 {
        value("vmseal_appraisals_grouped_total ") / groups
    } else {
        0.0
    }
}

pub(crate) const ALG: HashAlg = HashAlg::Sha256;

/// The names of the load generator's own threads — its clients, the fleet's agents, and the
/// runtime thread reqwest's blocking client (vmseal's client) runs each connection on: every other
/// thread of this process belongs to the service under test.
pub(crate) const CLIENT_THREADS: [&str; 3] = [
    "loadgen-client",
    "fleet-agent",
    "reqwest-internal-sync-runtime",
];

/// CPU seconds used so far by this process's service threads, from /proc/self/task/*/stat (user
/// and system time, in USER_HZ = 100 ticks/s on Linux): every thread but the load generator's
/// clients ([`CLIENT_THREADS`]) — actix's workers, the blocking pool where evidence is verified
/// (tokio names those `tokio-runtime-worker`), the SQLite worker, the background tasks.
pub(crate) fn server_cpu_seconds() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    let mut ticks = 0u64;
    for t in tasks.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        // A thread's name is cut to 15 bytes in `comm`.
        if CLIENT_THREADS
            .iter()
            .any(|c| comm.trim_end().starts_with(&c[..c.len().min(15)]))
        {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let field = |n: usize| {
            fields
                .get(n - 3)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        ticks += field(14) + field(15);
    }
    ticks as f64 / 100.0
}

/// Spawn a client thread, named so that its CPU is not counted as the service's.
fn client_thread<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<T>> {
    std::thread::Builder::new()
        .name(CLIENT_THREADS[0].into())
        .spawn(f)
}

pub(crate) fn regions(pages: [u64; 3]) -> Vec<(&'static str, RegionClass, Severity, Vec<Digest>)> {
    let leaves = |tag: u8, n: u64| -> Vec<Digest> {
        (0..n)
            .map(|i| ALG.leaf(&[tag, (i % 251) as u8, (i / 251) as u8]))
            .collect()
    };
    vec![
        (
            "code",
            RegionClass::Code,
            Severity::Critical,
            leaves(1, pages[0]),
        ),
        (
            "tasks",
            RegionClass::Structure,
            Severity::High,
            leaves(2, pages[1]),
        ),
        (
            "heap",
            RegionClass::Data,
            Severity::Low,
            leaves(3, pages[2]),
        ),
    ]
}

/// The synthetic VM's regions as a baseline to promote.
/// The enrollment of a load generator's host `host_id` with the intermediate `der` (no TPM or
/// SNP anchor: the load generators measure appraisal, not enrollment).
pub(crate) fn bench_host<'a>(
    host_id: &'a str,
    der: &'a [u8],
) -> vmseal_verifier::store::HostEnrollment<'a> {
    vmseal_verifier::store::HostEnrollment {
        host_id,
        intermediate_der: der,
        ak_name: b"",
        insecure_anchor: false,
        hardware_root: "",
        agent_serial: "",
        replace: false,
        restart_chains: false,
        hardware_checked: "[]",
        hardware_policy: None,
    }
}

pub(crate) fn baseline_regions(pages: [u64; 3]) -> Vec<NewBaselineRegion> {
    regions(pages)
        .into_iter()
        .map(|(n, c, s, l)| NewBaselineRegion {
            name: n.into(),
            class: c,
            severity: s,
            hash: ALG,
            ranges: vec![[0, l.len() as u64 * 4096]],
            leaves: l,
        })
        .collect()
}

/// Pre-seal `n` evidence for `vm`: each with `changed` heap pages differing from the baseline.
pub(crate) fn chain(
    sealer: &Sealer,
    host: &str,
    vm: &str,
    n: usize,
    pages: [u64; 3],
    changed: u64,
) -> Vec<Vec<u8>> {
    let base = regions(pages);
    let mut out = Vec::with_capacity(n);
    let mut prev = None;
    for seq in 0..n as u64 {
        let mut rs = Vec::new();
        let mut delta = Vec::new();
        for (name, class, sev, leaves) in &base {
            let mut t =
                MerkleTree::from_leaves(ALG, leaves.clone()).unwrap_or_else(|_| unreachable_tree());
            if *name == "heap" {
                let ch: Vec<(u64, Digest)> = (0..changed.min(leaves.len() as u64))
                    .map(|i| (i, ALG.leaf(&seq.to_le_bytes())))
                    .collect();
                let _ = t.apply_delta(&ch);
                if !ch.is_empty() {
                    delta.push(RegionDelta {
                        region: (*name).into(),
                        changes: ch,
                    });
                }
            }
            rs.push(((*name).to_owned(), *class, *sev, t));
        }
        let c = synthetic_claims(host, vm, seq, prev, &rs, delta, [1; 32]);
        if let Ok(ev) = sealer.seal(&c, OffsetDateTime::now_utc()) {
            prev = Some(evidence_digest(&ev));
            out.push(ev);
        }
    }
    out
}

/// One region of a synthetic snapshot: name, class, severity and its page tree.
pub type SyntheticRegion = (String, RegionClass, Severity, MerkleTree);

/// Claims for a synthetic VM whose regions are given as page trees (each range starts at GPA 0):
/// the load generator's evidence and the verifier's tests. `policy_digest` names the policy the
/// "capture" followed; the nonce is left empty for the caller to set.
pub fn synthetic_claims(
    host: &str,
    vm: &str,
    seq: u64,
    prev: Option<Digest>,
    regions: &[SyntheticRegion],
    delta: Vec<RegionDelta>,
    policy_digest: Digest,
) -> Claims {
    let regions: Vec<Region> = regions
        .iter()
        .map(|(name, class, severity, tree)| Region {
            name: name.clone(),
            class: *class,
            severity: *severity,
            ranges: vec![GpaRange {
                start: 0,
                len: tree.leaf_count() * 4096,
            }],
            pages: tree.leaf_count(),
            root: tree.root(),
        })
        .collect();
    let (memory_root, code_hash) = Claims::compute_roots(ALG, &regions).unwrap_or_default();
    let pages_read = regions.iter().map(|r| r.pages).sum();
    Claims {
        vm_id: vm.into(),
        host_id: host.into(),
        seq,
        prev,
        iat: OffsetDateTime::now_utc().unix_timestamp(),
        nonce: None,
        boot: Some([1; 16]),
        policy: PolicyRef {
            name: "synthetic".into(),
            version: 1,
            digest: policy_digest,
        },
        hash_alg: ALG,
        regions,
        memory_root,
        code_hash,
        module: ModuleInfo {
            name: "vmseal-host".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            build_digest: [0; 32],
        },
        capture: CaptureInfo {
            kind: CaptureKind::Full,
            pages_read,
            pause_us: 0,
            duration_us: 0,
        },
        delta,
        sealed: None,
        kernel: None,
    }
}

fn unreachable_tree() -> MerkleTree {
    // `regions` never builds an empty region; keep this total without a panic.
    MerkleTree::from_leaves(ALG, vec![[0; 32]]).unwrap_or_else(|_| std::process::abort())
}

/// Start the real service in this process on a loopback port (its own thread and actix system),
/// over the verifier state in `state` and the database `database`, with `workers` HTTP workers:
/// what the load generators measure. Returns the port once it listens.
pub(crate) fn spawn_service(
    state: std::path::PathBuf,
    database: String,
    workers: usize,
) -> Result<u16, Box<dyn std::error::Error>> {
    // The service as `serve` runs it: no hardware anchors required, evidence up to an hour old.
    let mut c = vmseal_verifier::config::ServeConfig::new(state);
    c.listen = "127.0.0.1:0".into();
    c.database = Some(database);
    c.workers = Some(workers);
    c.require = "none".into();
    c.max_age = 3600;
    c.nonce_ttl = 60;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<u16, String>>();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            match vmseal_verifier::service::start_with(&c, |st| st.state_dir = None).await {
                Ok(s) => {
                    let port = s.addrs().first().map_or(0, |a| a.port());
                    let _ = ready_tx.send(Ok(port));
                    let _ = s.run().await;
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(vmseal_client::error_chain_text(&e)));
                }
            }
        });
    });
    Ok(ready_rx.recv_timeout(Duration::from_secs(60))??)
}

/// Run the load test: `clients` VMs × `per_client` evidence each.
pub fn run(
    clients: usize,
    per_client: usize,
    pages: [u64; 3],
    changed: u64,
    progress: &dyn Fn(&str),
) -> Result<LoadReport, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    Ca::init(dir.path(), &[])?;
    let ca = Ca::load(dir.path())?;
    let key = IntermediateKey::generate()?;
    let inter = issue_intermediate(
        &key,
        &IntermediateProfile {
            host_id: "bench-host",
            tpm: None,
            snp: None,
            validity: time::Duration::days(30), // past the re-appraisal's 7-day warning
        },
        OffsetDateTime::now_utc(),
    )?;
    let sealer = Sealer::new(key, inter.clone())?;
    progress(&format!("sealing {} evidence", clients * per_client));
    let chains: Vec<Vec<Vec<u8>>> = (0..clients)
        .map(|i| {
            chain(
                &sealer,
                "bench-host",
                &format!("vm{i}"),
                per_client,
                pages,
                changed,
            )
        })
        .collect();

    let database = format!("sqlite://{}", dir.path().join("v.db").display());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let store = Store::open(&database).await?;
            store
                .enroll_host(&bench_host("bench-host", &inter), 0)
                .await?;
            let rs = baseline_regions(pages);
            for i in 0..clients {
                let vm = format!("vm{i}");
                store.register_vm(&vm, "bench-host", 70, 0).await?;
                store
                    .promote_baseline(
                        &vm,
                        BaselineSource::Snapshot(0),
                        &[1; 32],
                        &rs,
                        None,
                        "bench",
                        0,
                    )
                    .await?;
            }
            // The service opens the database next (a SQLite file serves one store at a time).
            store.close().await;
            Ok::<_, vmseal_verifier::store::StoreError>(())
        })?;
    let port = spawn_service(dir.path().to_owned(), database, 1)?;

    let agent = ca.issue_client(
        &Role::Agent("bench-host".into()),
        vmseal_verifier::pki::AGENT_CERT_LIFETIME,
    )?;
    let ca_pem = std::fs::read(dir.path().join("ca.pem"))?;
    let url = format!("https://localhost:{port}");
    progress(&format!("submitting with {clients} concurrent clients"));
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let cpu_before = server_cpu_seconds();
    let conns_before =
        vmseal_verifier::state::TLS_CONNECTIONS.load(std::sync::atomic::Ordering::Relaxed);
    let new_client = || {
        vmseal_client::Client::new(
            &url,
            &ca_pem,
            agent.cert_pem.as_bytes(),
            agent.key_pem.as_bytes(),
        )
    };
    let start = Instant::now();
    let handles: Vec<_> = chains
        .into_iter()
        .enumerate()
        .map(|(i, evs)| {
            let client = new_client();
            let errors = errors.clone();
            client_thread(move || {
                let mut lat = Vec::with_capacity(evs.len());
                let Ok(client) = client else {
                    errors.fetch_add(evs.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    return lat;
                };
                for ev in evs {
                    let t = Instant::now();
                    if client.submit_evidence(&format!("vm{i}"), ev).is_err() {
                        errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect::<std::io::Result<_>>()?;
    let mut lat: Vec<Duration> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap_or_default())
        .collect();
    let secs = start.elapsed().as_secs_f64();
    let server_cpu = server_cpu_seconds() - cpu_before;
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p).round() as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    let n = lat.len() as u64;

    let tls_connections = vmseal_verifier::state::TLS_CONNECTIONS
        .load(std::sync::atomic::Ordering::Relaxed)
        - conns_before;

    // The baseline: the same clients asking /healthz, over mutual TLS — ten times as often as they
    // submitted (at least 20,000 requests), so that its CPU time spans many 10 ms ticks.
    let healthz_per_client = (per_client * 10).max(20_000usize.div_ceil(clients.max(1)));
    progress(&format!(
        "baseline: {} GET /healthz",
        healthz_per_client * clients
    ));
    let cpu_before = server_cpu_seconds();
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let client = new_client();
            let errors = errors.clone();
            client_thread(move || {
                let Ok(client) = client else {
                    errors.fetch_add(
                        healthz_per_client as u64,
                        std::sync::atomic::Ordering::Relaxed,
                    );
                    return;
                };
                for _ in 0..healthz_per_client {
                    if client.get("/healthz").is_err() {
                        errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            })
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    for h in handles {
        let _ = h.join();
    }
    let healthz_cpu = server_cpu_seconds() - cpu_before;
    let per_commit = new_client()
        .map(|c| appraisals_per_commit(&c))
        .unwrap_or(0.0);
    let healthz_n = (clients * healthz_per_client) as f64;
    let per = |n: f64, cpu: f64| if cpu > 0.0 { n / cpu } else { 0.0 };
    let healthz_rate = per(healthz_n, healthz_cpu);
    let appraisal_rate = per(n as f64, server_cpu);
    Ok(LoadReport {
        server_workers: 1,
        clients,
        appraisals: n,
        seconds: secs,
        appraisals_per_sec: n as f64 / secs,
        appraisals_per_sec_per_core: n as f64 / secs,
        server_cpu_seconds: server_cpu,
        appraisals_per_server_cpu_second: appraisal_rate,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        pages,
        changed_pages: changed,
        errors: errors.load(std::sync::atomic::Ordering::Relaxed),
        tls_connections,
        healthz_per_server_cpu_second: healthz_rate,
        appraisals_per_commit: per_commit,
        appraisal_cost_in_healthz: if appraisal_rate > 0.0 {
            healthz_rate / appraisal_rate
        } else {
            0.0
        },
    })
}
