//! The whole appraisal loop over HTTPS with client certificates: enrollment, registration,
//! nonces, evidence, baseline promotion, a code change scored down — and every refusal.

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::{Duration, OffsetDateTime};
use vmseal_sealer::claims::{RegionClass, RegionDelta, Severity};
use vmseal_sealer::evidence::Sealer;
use vmseal_sealer::keys::IntermediateKey;
use vmseal_sealer::merkle::{Digest, HashAlg, MerkleTree};
use vmseal_sealer::verify::{AnchorRequirement, TrustConfig};
use vmseal_sealer::x509::{IntermediateProfile, issue_intermediate};
use vmseal_verifier::bench::synthetic_claims;
use vmseal_verifier::pki::{Ca, Role};
use vmseal_verifier::server::{AppState, Settings};
use vmseal_verifier::store::Store;

struct Server {
    url: String,
    dir: tempfile::TempDir,
}

fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    Ca::init(dir.path(), &[]).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "https://localhost:{}",
        listener.local_addr().unwrap().port()
    );
    let state = dir.path().to_owned();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let read = |f: &str| std::fs::read(state.join(f)).unwrap();
            let tls = vmseal_verifier::server::tls_config(
                &read("ca.pem"),
                &read("server.pem"),
                &read("server.key"),
            )
            .unwrap();
            let store = Store::open(&format!("sqlite://{}", state.join("v.db").display()))
                .await
                .unwrap();
            let trust = TrustConfig {
                require: AnchorRequirement::from_name("none").unwrap(),
                ..TrustConfig::default()
            };
            let settings = Settings {
                max_age: 300,
                nonce_ttl: 60,
                enrollment_trust: trust,
                default_threshold: 70,
            };
            let data = actix_web::web::Data::new(AppState {
                store,
                ca: Ca::load(&state).unwrap(),
                settings,
                baselines: Default::default(),
                metrics: Default::default(),
            });
            actix_web::HttpServer::new(move || {
                actix_web::App::new()
                    .app_data(data.clone())
                    .configure(vmseal_verifier::server::routes)
            })
            .on_connect(vmseal_verifier::server::on_connect)
            .workers(1)
            .listen_rustls_0_23(listener, tls)
            .unwrap()
            .run()
            .await
            .unwrap();
        });
    });
    Server { url, dir }
}

fn client(
    s: &Server,
    cert_key: Option<(&str, &str)>,
    extra_ca: Option<&str>,
) -> reqwest::blocking::Client {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(s.dir.path().join("ca.pem")).unwrap();
    for c in CertificateDer::pem_slice_iter(&ca) {
        roots.add(c.unwrap()).unwrap();
    }
    if let Some(x) = extra_ca {
        for c in CertificateDer::pem_slice_iter(x.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
    }
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let cfg = match cert_key {
        Some((c, k)) => b
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(c.as_bytes())
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_slice(k.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => b.with_no_client_auth(),
    };
    reqwest::blocking::Client::builder()
        .tls_backend_preconfigured(cfg)
        .build()
        .unwrap()
}

fn admin(s: &Server) -> reqwest::blocking::Client {
    let c = std::fs::read_to_string(s.dir.path().join("admin.pem")).unwrap();
    let k = std::fs::read_to_string(s.dir.path().join("admin.key")).unwrap();
    client(s, Some((&c, &k)), None)
}

const ALG: HashAlg = HashAlg::Sha256;

/// A host: its intermediate and sealer, and the VM's current memory (page leaves per region).
struct Host {
    id: String,
    der: Vec<u8>,
    sealer: Sealer,
    regions: Vec<(&'static str, RegionClass, Severity, Vec<Digest>)>,
    seq: u64,
    prev: Option<Digest>,
    baseline: Option<Vec<Vec<Digest>>>,
}

impl Host {
    fn new(id: &str) -> Self {
        let key = IntermediateKey::generate().unwrap();
        let der = issue_intermediate(
            &key,
            &IntermediateProfile {
                host_id: id,
                tpm: None,
                snp: None,
                validity: Duration::days(1),
            },
            OffsetDateTime::now_utc(),
        )
        .unwrap();
        let leaves = |tag: u8, n: usize| -> Vec<Digest> {
            (0..n).map(|i| ALG.leaf(&[tag, i as u8])).collect()
        };
        Self {
            id: id.into(),
            sealer: Sealer::new(key, der.clone()).unwrap(),
            der,
            regions: vec![
                (
                    "kernel-text",
                    RegionClass::Code,
                    Severity::Critical,
                    leaves(1, 16),
                ),
                (
                    "task-table",
                    RegionClass::Structure,
                    Severity::High,
                    leaves(2, 2),
                ),
                ("heap", RegionClass::Data, Severity::Low, leaves(3, 32)),
            ],
            seq: 0,
            prev: None,
            baseline: None,
        }
    }

    fn evidence(&mut self, vm: &str, nonce: Option<Vec<u8>>) -> Vec<u8> {
        let mut regions = Vec::new();
        let mut delta = Vec::new();
        for (i, (name, class, sev, leaves)) in self.regions.iter().enumerate() {
            let t = MerkleTree::from_leaves(ALG, leaves.clone()).unwrap();
            if let Some(b) = &self.baseline {
                let changes: Vec<(u64, Digest)> = leaves
                    .iter()
                    .zip(&b[i])
                    .enumerate()
                    .filter(|(_, (a, b))| a != b)
                    .map(|(j, (a, _))| (j as u64, *a))
                    .collect();
                if !changes.is_empty() {
                    delta.push(RegionDelta {
                        region: (*name).into(),
                        changes,
                    });
                }
            }
            regions.push(((*name).to_owned(), *class, *sev, t));
        }
        let mut c = synthetic_claims(&self.id, vm, self.seq, self.prev, &regions, delta, [4; 32]);
        c.nonce = nonce;
        let ev = self.sealer.seal(&c, OffsetDateTime::now_utc()).unwrap();
        self.seq += 1;
        self.prev = Some(vmseal_sealer::evidence::evidence_digest(&ev));
        ev
    }
}

fn json(r: reqwest::blocking::Response) -> (u16, serde_json::Value) {
    let status = r.status().as_u16();
    (status, r.json().unwrap())
}

#[test]
fn the_appraisal_loop_and_its_refusals() {
    let s = start();
    let admin = admin(&s);
    // Wait for the server.
    for _ in 0..100 {
        if admin.get(format!("{}/healthz", s.url)).send().is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    // No client certificate, or one from another CA: the handshake fails, no handler runs.
    assert!(
        client(&s, None, None)
            .get(format!("{}/healthz", s.url))
            .send()
            .is_err()
    );
    let foreign = tempfile::tempdir().unwrap();
    let other = Ca::init(foreign.path(), &[]).unwrap();
    let stranger = other.issue_client(&Role::Admin("mallory".into())).unwrap();
    assert!(
        client(&s, Some((&stranger.cert_pem, &stranger.key_pem)), None)
            .get(format!("{}/healthz", s.url))
            .send()
            .is_err()
    );

    // Enrol two hosts; register a VM on the first.
    let mut h1 = Host::new("host-1");
    let h2 = Host::new("host-2");
    let (st, e1) = json(
        admin
            .post(format!("{}/v1/hosts", s.url))
            .body(h1.der.clone())
            .send()
            .unwrap(),
    );
    assert_eq!(st, 201, "{e1}");
    let (_, e2) = json(
        admin
            .post(format!("{}/v1/hosts", s.url))
            .body(h2.der.clone())
            .send()
            .unwrap(),
    );
    let agent1 = client(
        &s,
        Some((
            e1["agent_cert_pem"].as_str().unwrap(),
            e1["agent_key_pem"].as_str().unwrap(),
        )),
        None,
    );
    let agent2 = client(
        &s,
        Some((
            e2["agent_cert_pem"].as_str().unwrap(),
            e2["agent_key_pem"].as_str().unwrap(),
        )),
        None,
    );
    let body = serde_json::json!({ "vm_id": "vm-a", "host_id": "host-1", "policy_digest": hex::encode([4u8; 32]) });
    assert_eq!(
        admin
            .post(format!("{}/v1/vms", s.url))
            .json(&body)
            .send()
            .unwrap()
            .status(),
        201
    );
    // An agent cannot register VMs.
    let (st, e) = json(
        agent1
            .post(format!("{}/v1/vms", s.url))
            .json(&serde_json::json!({ "vm_id": "vm-x", "host_id": "host-1" }))
            .send()
            .unwrap(),
    );
    assert_eq!((st, e["code"].as_str().unwrap()), (403, "forbidden"));

    // First snapshot, answering a nonce: no baseline yet, so at most 50.
    let (_, n) = json(
        agent1
            .post(format!("{}/v1/vms/vm-a/nonce", s.url))
            .send()
            .unwrap(),
    );
    let nonce = hex::decode(n["nonce"].as_str().unwrap()).unwrap();
    let ev0 = h1.evidence("vm-a", Some(nonce.clone()));
    let (st, a0) = json(
        agent1
            .post(format!("{}/v1/vms/vm-a/evidence", s.url))
            .body(ev0.clone())
            .send()
            .unwrap(),
    );
    assert_eq!(st, 200, "{a0}");
    assert_eq!(a0["score"], 50);
    // Replaying it is named as such, and changes nothing.
    let (st, e) = json(
        agent1
            .post(format!("{}/v1/vms/vm-a/evidence", s.url))
            .body(ev0.clone())
            .send()
            .unwrap(),
    );
    assert_eq!((st, e["code"].as_str().unwrap()), (422, "replay"), "{e}");
    // Another host's agent may neither submit nor ask for nonces for this VM.
    assert_eq!(
        agent2
            .post(format!("{}/v1/vms/vm-a/evidence", s.url))
            .body(ev0.clone())
            .send()
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        agent2
            .post(format!("{}/v1/vms/vm-a/nonce", s.url))
            .send()
            .unwrap()
            .status(),
        403
    );

    // The admin promotes snapshot #0 as the golden baseline (leaves must give the signed roots).
    let leaves: Vec<serde_json::Value> = h1
        .regions
        .iter()
        .map(|(n, _, _, l)| serde_json::json!({ "name": n, "leaves": hex::encode(l.concat()) }))
        .collect();
    let (st, b) = json(
        admin
            .post(format!("{}/v1/vms/vm-a/baselines", s.url))
            .json(&serde_json::json!({ "seq": 0, "regions": leaves }))
            .send()
            .unwrap(),
    );
    assert_eq!(st, 201, "{b}");
    assert_eq!(b["version"], 1);
    h1.baseline = Some(h1.regions.iter().map(|r| r.3.clone()).collect());
    // Forged leaves are refused; an agent may not promote.
    let mut forged = leaves.clone();
    forged[0]["leaves"] = serde_json::Value::String(hex::encode([[9u8; 32]; 16].concat()));
    let (st, e) = json(
        admin
            .post(format!("{}/v1/vms/vm-a/baselines", s.url))
            .json(&serde_json::json!({ "seq": 0, "regions": forged }))
            .send()
            .unwrap(),
    );
    assert_eq!(
        (st, e["code"].as_str().unwrap()),
        (422, "baseline_mismatch")
    );
    assert_eq!(
        agent1
            .post(format!("{}/v1/vms/vm-a/baselines", s.url))
            .json(&serde_json::json!({ "seq": 0, "regions": leaves }))
            .send()
            .unwrap()
            .status(),
        403
    );

    // A clean snapshot (only the heap changed) is affirming.
    h1.regions[2].3[5] = ALG.leaf(b"heap write");
    let (st, a1) = json(
        agent1
            .post(format!("{}/v1/vms/vm-a/evidence", s.url))
            .body(h1.evidence("vm-a", None))
            .send()
            .unwrap(),
    );
    assert_eq!(st, 200, "{a1}");
    assert_eq!(
        (a1["score"].as_u64(), a1["tier"].as_str()),
        (Some(100), Some("affirming"))
    );

    // The kernel text is patched: contraindicated, and the region is named.
    h1.regions[0].3[3] = ALG.leaf(b"rootkit");
    let (st, a2) = json(
        agent1
            .post(format!("{}/v1/vms/vm-a/evidence", s.url))
            .body(h1.evidence("vm-a", None))
            .send()
            .unwrap(),
    );
    assert_eq!(st, 200, "{a2}");
    assert_eq!(a2["score"], 0);
    assert_eq!(a2["tier"], "contraindicated");
    assert_eq!(a2["alert"], true);
    assert_eq!(a2["changes"][0]["region"], "kernel-text");
    assert_eq!(a2["changes"][0]["changed_pages"], 1);

    // Bad input: tampered, truncated, a gap, garbage JSON.
    let mut bad = h1.evidence("vm-a", None);
    let n = bad.len();
    bad[n / 2] ^= 1;
    let (st, e) = json(
        agent1
            .post(format!("{}/v1/vms/vm-a/evidence", s.url))
            .body(bad.clone())
            .send()
            .unwrap(),
    );
    assert_eq!(
        (st, e["code"].as_str().unwrap()),
        (422, "evidence_invalid"),
        "{e}"
    );
    let (st, _) = json(
        agent1
            .post(format!("{}/v1/vms/vm-a/evidence", s.url))
            .body(bad[..100].to_vec())
            .send()
            .unwrap(),
    );
    assert_eq!(st, 422);
    let ev_gap = h1.evidence("vm-a", None); // seq 4 while 3 was never accepted
    let (st, e) = json(
        agent1
            .post(format!("{}/v1/vms/vm-a/evidence", s.url))
            .body(ev_gap)
            .send()
            .unwrap(),
    );
    assert_eq!((st, e["code"].as_str().unwrap()), (422, "seq_gap"), "{e}");
    let (st, e) = json(
        admin
            .post(format!("{}/v1/vms", s.url))
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .unwrap(),
    );
    assert_eq!((st, e["code"].as_str().unwrap()), (400, "bad_json"), "{e}");
    let (st, e) = json(
        agent1
            .post(format!("{}/v1/vms/nope/nonce", s.url))
            .send()
            .unwrap(),
    );
    assert_eq!((st, e["code"].as_str().unwrap()), (404, "not_found"));

    // The history: accepted appraisals, newest first, exactly as returned; refusals left out.
    let list = |c: &reqwest::blocking::Client, q: &str| {
        json(
            c.get(format!("{}/v1/vms/vm-a/appraisals{q}", s.url))
                .send()
                .unwrap(),
        )
    };
    let (st, l) = list(&agent1, "?limit=2");
    assert_eq!(st, 200, "{l}");
    assert_eq!(l["appraisals"], serde_json::json!([a2, a1]));
    let (st, l) = list(&admin, "");
    assert_eq!(st, 200, "{l}");
    let all = l["appraisals"].as_array().unwrap();
    assert_eq!(all.first(), Some(&a2));
    assert_eq!(all.last(), Some(&a0));
    let seqs: Vec<u64> = all.iter().map(|a| a["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] == w[1] + 1), "{seqs:?}");
    let (st, e) = list(&agent2, "");
    assert_eq!((st, e["code"].as_str().unwrap()), (403, "forbidden"));
    for q in ["?limit=0", "?limit=501", "?limit=many"] {
        let (st, e) = list(&admin, q);
        assert_eq!(
            (st, e["code"].as_str().unwrap()),
            (400, "bad_query"),
            "{q}: {e}"
        );
    }
    let (st, e) = json(
        admin
            .get(format!("{}/v1/vms/nope/appraisals", s.url))
            .send()
            .unwrap(),
    );
    assert_eq!((st, e["code"].as_str().unwrap()), (404, "not_found"));
}
