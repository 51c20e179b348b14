//! Several `vmseal-verifier serve` processes on one PostgreSQL, and the faults a deployment
//! meets: a replica killed with SIGKILL under load, the database stopped and started.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vmseal_testkit::postgres::{PgCluster, PgDatabase};
use vmseal_verifier::pki::Ca;

use crate::api::{ALG, Host, Server, admin, enrol, json, post_to, promote, webhook_receiver};

/// One `vmseal-verifier serve` process.
struct Replica {
    child: Child,
    server: Server,
    port: u16,
    database: String,
}

impl Replica {
    fn start(dir: &Arc<tempfile::TempDir>, database: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::start_on(dir, database, port)
    }

    fn start_on(dir: &Arc<tempfile::TempDir>, database: &str, port: u16) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_vmseal-verifier"))
            .args([
                "serve",
                "--require",
                "none",
                "--workers",
                "2",
                "--database",
                database,
            ])
            .arg("--state")
            .arg(dir.path())
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let r = Self {
            child,
            server: Server {
                url: format!("https://localhost:{port}"),
                dir: dir.clone(),
            },
            port,
            database: database.to_owned(),
        };
        let a = admin(&r.server);
        let deadline = Instant::now() + Duration::from_secs(20);
        while a.get(format!("{}/healthz", r.server.url)).send().is_err() {
            assert!(Instant::now() < deadline, "replica on {port} did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    /// SIGKILL: no shutdown, no flush.
    fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn state() -> Arc<tempfile::TempDir> {
    let dir = tempfile::tempdir().unwrap();
    Ca::init(dir.path(), &[]).unwrap();
    Arc::new(dir)
}

fn register(s: &Server, vm: &str, host: &str) {
    let (st, e) = post_to(
        &admin(s),
        &s.url,
        "/v1/vms",
        serde_json::json!({ "vm_id": vm, "host_id": host, "policy": crate::api::POLICY }),
    );
    assert_eq!(st, 201, "{e}");
}

/// Every appraisal of `vm` the agent saw acknowledged is stored at `s`, and each of the
/// `rounds` (plus the first, baseline snapshot) exactly once.
/// `n` hosts (`host-I`), each enrolled at `at` with its agent's client, and its VM (`vm-I`)
/// registered at `register_at`, its first evidence accepted at `at` and promoted to its baseline.
fn agents_with_baselines(
    n: usize,
    at: &Server,
    register_at: &Server,
) -> Vec<(Host, reqwest::blocking::Client, String)> {
    (0..n)
        .map(|i| {
            let mut h = Host::new(&format!("host-{i}"));
            let agent = enrol(at, &admin(at), &h, None);
            let vm = format!("vm-{i}");
            register(register_at, &vm, &h.id);
            let (st, _) = json(
                agent
                    .post(format!("{}/v1/vms/{vm}/evidence", at.url))
                    .body(h.evidence(&vm, None))
                    .send()
                    .unwrap(),
            );
            assert_eq!(st, 200);
            promote(at, &vm, &mut h, 0);
            (h, agent, vm)
        })
        .collect()
}

/// `work(host, agent, vm)` for each of `hosts`, each on a thread of its own.
fn spawn_agents<R: Send + 'static>(
    hosts: Vec<(Host, reqwest::blocking::Client, String)>,
    work: impl Fn(Host, reqwest::blocking::Client, String) -> R + Clone + Send + 'static,
) -> Vec<std::thread::JoinHandle<R>> {
    hosts
        .into_iter()
        .map(|(h, agent, vm)| {
            let work = work.clone();
            std::thread::spawn(move || work(h, agent, vm))
        })
        .collect()
}

fn assert_acknowledged_stored(s: &Server, vm: &str, acked: &[u64], rounds: u64) {
    let (st, l) = json(
        admin(s)
            .get(format!("{}/v1/vms/{vm}/appraisals?limit=500", s.url))
            .send()
            .unwrap(),
    );
    assert_eq!(st, 200);
    let stored: std::collections::BTreeSet<u64> = l["appraisals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["seq"].as_u64().unwrap())
        .collect();
    for seq in acked {
        assert!(
            stored.contains(seq),
            "{vm} #{seq} was acknowledged but is not stored"
        );
    }
    assert_eq!(
        stored.len() as u64,
        rounds + 1,
        "{vm}: every round stored once"
    );
}

/// The audit chain at `s` verifies.
fn assert_audit_intact(s: &Server) {
    let (_, v) = json(
        admin(s)
            .get(format!("{}/v1/audit/verify", s.url))
            .send()
            .unwrap(),
    );
    assert_eq!(v["ok"], true, "{v}");
}

#[test]
fn two_replicas_share_nonces_store_each_appraisal_once_and_alert_once() {
    let pg = PgDatabase::create().unwrap();
    let dir = state();
    let a = Replica::start(&dir, &pg.url);
    let b = Replica::start(&dir, &pg.url);
    let (sa, sb) = (&a.server, &b.server);
    let mut h = Host::new("host-1");
    // Enrolled through A, its VM registered through B: one database.
    let agent = enrol(sa, &admin(sa), &h, None);
    register(sb, "vm-a", "host-1");
    let (hook, hits) = webhook_receiver(0);
    let (st, _) = post_to(
        &admin(sa),
        &sa.url,
        "/v1/webhooks",
        serde_json::json!({ "name": "ops", "url": hook }),
    );
    assert_eq!(st, 201);

    // A nonce from A answers at B; the same evidence again, at A, gets B's stored appraisal.
    let (_, n) = json(
        agent
            .post(format!("{}/v1/vms/vm-a/nonce", sa.url))
            .send()
            .unwrap(),
    );
    let nonce = hex::decode(n["nonce"].as_str().unwrap()).unwrap();
    let ev = h.evidence("vm-a", Some(nonce));
    let (st, r) = json(
        agent
            .post(format!("{}/v1/vms/vm-a/evidence", sb.url))
            .body(ev.clone())
            .send()
            .unwrap(),
    );
    assert_eq!(st, 200, "{r}");
    let (st, again) = json(
        agent
            .post(format!("{}/v1/vms/vm-a/evidence", sa.url))
            .body(ev)
            .send()
            .unwrap(),
    );
    assert_eq!(
        (st, &again["duplicate"], &again["ear"]),
        (200, &true.into(), &r["ear"])
    );
    // Evidence skipping ahead, at A, is refused: an event, one evidence_refused alert delivered
    // once.
    let saved = h.chain();
    let gap = h.evidence_edited("vm-a", None, 0, |c| c.seq += 2);
    h.set_chain(saved);
    let (st, e) = json(
        agent
            .post(format!("{}/v1/vms/vm-a/evidence", sa.url))
            .body(gap)
            .send()
            .unwrap(),
    );
    assert_eq!(st, 422, "{e}");
    let ca = std::fs::read(dir.path().join("ca.pem")).unwrap();
    let (status, body) = hits.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(status, 200);
    let d = vmseal_client::verify_alert(&body, &ca, "ops", 300, time::OffsetDateTime::now_utc())
        .unwrap();
    assert_eq!(
        (d.alert.kind.as_str(), d.alert.code.as_deref()),
        ("evidence_refused", Some("seq_gap"))
    );
    promote(sb, "vm-a", &mut h, 0);

    // A code patch appraised at A: one alert, delivered once although both replicas deliver.
    h.regions[0].3[1] = ALG.leaf(b"patch");
    let (st, r) = json(
        agent
            .post(format!("{}/v1/vms/vm-a/evidence", sa.url))
            .body(h.evidence("vm-a", None))
            .send()
            .unwrap(),
    );
    assert_eq!((st, r["score"].as_u64()), (200, Some(0)), "{r}");
    let (status, body) = hits.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(status, 200);
    let d = vmseal_client::verify_alert(&body, &ca, "ops", 300, time::OffsetDateTime::now_utc())
        .unwrap();
    assert_eq!(d.alert.kind, "below_threshold");
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        hits.try_recv().is_err(),
        "delivered once, not once per replica"
    );
    // B's event stream shows the alert A raised.
    let follower = vmseal_client::Client::new(
        &sb.url,
        &ca,
        &std::fs::read(dir.path().join("admin.pem")).unwrap(),
        &std::fs::read(dir.path().join("admin.key")).unwrap(),
    )
    .unwrap();
    let mut seen = Vec::new();
    follower
        .follow_alerts(Some(0), |x| {
            seen.push((x.alert_id, x.kind));
            seen.len() < 2
        })
        .unwrap();
    assert_eq!(
        seen[1],
        (d.alert.alert_id, "below_threshold".into()),
        "{seen:?}"
    );
    assert_eq!(seen[0].1, "evidence_refused", "{seen:?}");
    assert_audit_intact(sa);
}

/// Agents submit to two replicas; one is killed with SIGKILL in the middle. Every appraisal any
/// replica answered 2xx is in the database afterwards, and the audit chain verifies.
#[test]
fn a_replica_killed_under_load_loses_nothing_it_acknowledged() {
    let pg = PgDatabase::create().unwrap();
    let dir = state();
    let mut a = Replica::start(&dir, &pg.url);
    let b = Replica::start(&dir, &pg.url);
    const AGENTS: usize = 6;
    const ROUNDS: u64 = 30;
    // Enrolled at A, registered at B: the two replicas share one database.
    let hosts = agents_with_baselines(AGENTS, &a.server, &b.server);
    let urls = [a.server.url.clone(), b.server.url.clone()];
    let killed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers = spawn_agents(hosts, {
        let killed = killed.clone();
        move |mut h, agent, vm| {
            let mut acked = vec![0u64];
            let mut failovers = 0;
            for round in 0..ROUNDS {
                let ev = h.evidence(&vm, None);
                let seq = h.seq - 1;
                // Alternate replicas; after the kill, A refuses connections: fail over to B
                // with the same evidence (stored already: its stored appraisal, marked
                // duplicate; not stored: accepted).
                let first = if killed.load(std::sync::atomic::Ordering::SeqCst) {
                    1
                } else {
                    (round % 2) as usize
                };
                let mut ok = false;
                for u in [first, 1] {
                    match agent
                        .post(format!("{}/v1/vms/{vm}/evidence", urls[u]))
                        .body(ev.clone())
                        .send()
                    {
                        Ok(r) if r.status().is_success() => {
                            acked.push(seq);
                            ok = true;
                            break;
                        }
                        Ok(r) => panic!("{}: {}", r.status(), r.text().unwrap()),
                        Err(_) => failovers += 1,
                    }
                }
                assert!(ok, "neither replica took #{seq}");
            }
            (vm, acked, failovers)
        }
    });
    std::thread::sleep(Duration::from_millis(1500));
    a.kill9();
    killed.store(true, std::sync::atomic::Ordering::SeqCst);
    let results: Vec<_> = workers.into_iter().map(|w| w.join().unwrap()).collect();

    // Restart A on the same database; both see every acknowledged appraisal.
    let a2 = Replica::start_on(&dir, &a.database, a.port);
    for s in [&a2.server, &b.server] {
        for (vm, acked, _) in &results {
            assert_acknowledged_stored(s, vm, acked, ROUNDS);
        }
        assert_audit_intact(s);
    }
    let failovers: usize = results.iter().map(|r| r.2).sum();
    eprintln!("failovers after the kill: {failovers}");
}

/// PostgreSQL stopped under a running verifier: requests fail fast with 503 `unavailable` and
/// change nothing; started again, the same process serves again, no restart.
#[test]
fn a_database_outage_gives_clear_503s_and_recovers_without_a_restart() {
    let mut cluster = PgCluster::start().unwrap();
    let url = cluster.url("postgres");
    let dir = state();
    let r = Replica::start(&dir, &url);
    let s = &r.server;
    let mut h = Host::new("host-1");
    let agent = enrol(s, &admin(s), &h, None);
    register(s, "vm-a", "host-1");
    let send = |ev: &[u8]| {
        agent
            .post(format!("{}/v1/vms/vm-a/evidence", s.url))
            .body(ev.to_vec())
            .send()
            .unwrap()
    };
    assert_eq!(send(&h.evidence("vm-a", None)).status(), 200);
    cluster.stop().unwrap();
    let t = Instant::now();
    let refused = h.evidence("vm-a", None);
    let down = send(&refused);
    assert_eq!(down.status(), 503);
    assert_eq!(down.headers()["retry-after"], "2");
    let e: serde_json::Value = down.json().unwrap();
    assert_eq!(e["code"], "unavailable", "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("database is unavailable"),
        "{e}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "fails fast: {:?}",
        t.elapsed()
    );
    let (st, _) = json(admin(s).get(format!("{}/v1/vms", s.url)).send().unwrap());
    assert_eq!(st, 503);
    assert_eq!(
        admin(s)
            .get(format!("{}/healthz", s.url))
            .send()
            .unwrap()
            .status(),
        200,
        "the process lives"
    );
    assert_eq!(
        admin(s)
            .get(format!("{}/readyz", s.url))
            .send()
            .unwrap()
            .status(),
        503,
        "but it is not ready"
    );
    cluster.start_again().unwrap();
    // The refused evidence was not stored: the agent sends it again and it is accepted, by the
    // same process.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = 0;
    while Instant::now() < deadline {
        last = send(&refused).status().as_u16();
        if last == 200 {
            break;
        }
        assert_eq!(last, 503, "only 503 while recovering");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(last, 200, "recovered without a restart");
    assert_eq!(send(&h.evidence("vm-a", None)).status(), 200);
    assert_eq!(
        admin(s)
            .get(format!("{}/readyz", s.url))
            .send()
            .unwrap()
            .status(),
        200,
        "ready again"
    );
    assert_audit_intact(s);
}

/// The default deployment — one verifier on SQLite (WAL) — killed with SIGKILL while agents
/// submit, and started again on the same file: every appraisal it answered 2xx is there, each
/// round once, and the audit chain verifies. Agents retry the same evidence until it is back.
#[test]
fn a_sqlite_verifier_killed_under_load_loses_nothing_it_acknowledged() {
    let dir = state();
    let db = format!("sqlite://{}", dir.path().join("v.db").display());
    let mut v = Replica::start(&dir, &db);
    const AGENTS: usize = 4;
    let hosts = agents_with_baselines(AGENTS, &v.server, &v.server);
    let url = v.server.url.clone();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers = spawn_agents(hosts, {
        let done = done.clone();
        move |mut h, agent, vm| {
            let mut acked = vec![0u64];
            let mut retries = 0;
            let mut rounds = 0u64;
            // Submit continuously until the test has killed and restarted the verifier.
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                rounds += 1;
                let ev = h.evidence(&vm, None);
                let seq = h.seq - 1;
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    assert!(
                        Instant::now() < deadline,
                        "{vm} #{seq}: the verifier never came back"
                    );
                    match agent
                        .post(format!("{url}/v1/vms/{vm}/evidence"))
                        .body(ev.clone())
                        .send()
                    {
                        Ok(r) if r.status().is_success() => {
                            acked.push(seq);
                            break;
                        }
                        // (Stored just before the kill, answered never: its stored
                        // appraisal comes back now, marked duplicate.)
                        Ok(r) => panic!("{}: {}", r.status(), r.text().unwrap()),
                        Err(_) => {
                            retries += 1;
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                }
            }
            (vm, acked, retries, rounds)
        }
    });
    std::thread::sleep(Duration::from_millis(1000));
    v.kill9();
    let v2 = Replica::start_on(&dir, &db, v.port);
    std::thread::sleep(Duration::from_millis(1000));
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let results: Vec<_> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    let s = &v2.server;
    for (vm, acked, _, rounds) in &results {
        assert_acknowledged_stored(s, vm, acked, *rounds);
    }
    assert_audit_intact(s);
    let retries: usize = results.iter().map(|r| r.2).sum();
    assert!(
        retries > 0,
        "the kill happened while agents were submitting"
    );
}
