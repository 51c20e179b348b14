//! The whole appraisal loop over HTTPS with client certificates: enrollment, registration,
//! nonces, evidence, baseline promotion, a code change scored down — and every refusal.

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::{Duration, OffsetDateTime};
use vmseal_loadgen::appraise::synthetic_claims;
use vmseal_sealer::claims::{RegionClass, RegionDelta, Severity};
use vmseal_sealer::evidence::Sealer;
use vmseal_sealer::keys::IntermediateKey;
use vmseal_sealer::merkle::{Digest, HashAlg, MerkleTree};
use vmseal_sealer::verify::{AnchorRequirement, TrustConfig};
use vmseal_sealer::x509::{IntermediateProfile, issue_intermediate};
use vmseal_verifier::pki::{Ca, Role};

pub(crate) struct Server {
    pub(crate) url: String,
    pub(crate) dir: Arc<tempfile::TempDir>,
}

/// The capture policy the tests' synthetic host captures under (its regions are the host's).
pub(crate) const POLICY: &str = "name = \"it\"\nversion = 1\n\
[[region]]\nname = \"kernel-text\"\nclass = \"code\"\nseverity = \"critical\"\ngpa = { start = 0, len = 0x10000 }\n\
[[region]]\nname = \"task-table\"\nclass = \"structure\"\nseverity = \"high\"\ngpa = { start = 0x10000, len = 0x2000 }\n\
[[region]]\nname = \"heap\"\nclass = \"data\"\nseverity = \"low\"\ngpa = { start = 0x12000, len = 0x20000 }\n";

/// SHA-256 of [`POLICY`]: what the synthetic evidence names.
pub(crate) fn policy_digest() -> Digest {
    HashAlg::Sha256.hash(&[POLICY.as_bytes()])
}

pub(crate) fn start() -> Server {
    start_with(TrustConfig {
        require: AnchorRequirement::from_name("none").unwrap(),
        ..TrustConfig::default()
    })
}

fn start_with(trust: TrustConfig) -> Server {
    start_trusting(trust, Vec::new())
}

/// A verifier that also imports CoRIMs signed by `corim_signers`.
pub(crate) fn start_trusting(
    trust: TrustConfig,
    corim_signers: Vec<vmseal_client::corim::TrustedKey>,
) -> Server {
    let dir = tempfile::tempdir().unwrap();
    Ca::init(dir.path(), &[]).unwrap();
    let state = dir.path().to_owned();
    // The service as `serve` runs it, with the trust this test built in memory.
    let mut c = vmseal_verifier::config::ServeConfig::new(state.clone());
    c.listen = "127.0.0.1:0".into();
    c.database = Some(format!("sqlite://{}", state.join("v.db").display()));
    c.nonce_ttl = 60;
    c.workers = Some(1);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let s = vmseal_verifier::service::start_with(&c, |st| {
                st.enrollment_trust = trust;
                st.corim_signers = corim_signers;
                st.state_dir = None;
            })
            .await
            .unwrap();
            tx.send(s.local_url()).unwrap();
            s.run().await.unwrap();
        });
    });
    let url = rx.recv().unwrap();
    let s = Server {
        url,
        dir: Arc::new(dir),
    };
    // Ready once it answers an admin.
    let a = admin(&s);
    for _ in 0..100 {
        if a.get(format!("{}/healthz", s.url)).send().is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    s
}

pub(crate) fn client(
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
        .default_headers(vmseal_client::default_headers())
        .build()
        .unwrap()
}

pub(crate) fn admin(s: &Server) -> reqwest::blocking::Client {
    let c = std::fs::read_to_string(s.dir.path().join("admin.pem")).unwrap();
    let k = std::fs::read_to_string(s.dir.path().join("admin.key")).unwrap();
    client(s, Some((&c, &k)), None)
}

/// A client with a viewer certificate for `name`, issued by the server's CA.
pub(crate) fn viewer(s: &Server, name: &str) -> reqwest::blocking::Client {
    let cert = Ca::load(s.dir.path())
        .unwrap()
        .issue_client(&Role::Viewer(name.into()), Duration::days(1))
        .unwrap();
    client(s, Some((&cert.cert_pem, &cert.key_pem)), None)
}

pub(crate) const ALG: HashAlg = HashAlg::Sha256;

/// A host: its intermediate and sealer, and the VM's current memory (page leaves per region).
pub(crate) struct Host {
    pub(crate) id: String,
    der: Vec<u8>,
    sealer: Sealer,
    pub(crate) regions: Vec<(&'static str, RegionClass, Severity, Vec<Digest>)>,
    pub(crate) seq: u64,
    pub(crate) prev: Option<Digest>,
    pub(crate) baseline: Option<Vec<Vec<Digest>>>,
    /// The kernel objects its evidence carries (and a promotion gives).
    pub(crate) kernel: Option<vmseal_sealer::claims::KernelObjects>,
}

impl Host {
    pub(crate) fn new(id: &str) -> Self {
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
            kernel: None,
        }
    }

    /// Where this host's chain stands (next sequence number, last evidence digest).
    pub(crate) fn chain(&self) -> (u64, Option<Digest>) {
        (self.seq, self.prev)
    }

    /// Put the chain back where [`Host::chain`] said it stood.
    pub(crate) fn set_chain(&mut self, (seq, prev): (u64, Option<Digest>)) {
        (self.seq, self.prev) = (seq, prev);
    }

    pub(crate) fn evidence(&mut self, vm: &str, nonce: Option<Vec<u8>>) -> Vec<u8> {
        self.evidence_aged(vm, nonce, 0)
    }

    /// Evidence whose claims say it was made `age` seconds ago.
    fn evidence_aged(&mut self, vm: &str, nonce: Option<Vec<u8>>, age: i64) -> Vec<u8> {
        self.evidence_edited(vm, nonce, age, |_| {})
    }

    /// Evidence whose claims `edit` changes before they are signed, as a host whose userspace
    /// is compromised can (its roots are recomputed, so the claims stay consistent).
    pub(crate) fn evidence_edited(
        &mut self,
        vm: &str,
        nonce: Option<Vec<u8>>,
        age: i64,
        edit: impl FnOnce(&mut vmseal_sealer::claims::Claims),
    ) -> Vec<u8> {
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
        let mut c = synthetic_claims(
            &self.id,
            vm,
            self.seq,
            self.prev,
            &regions,
            delta,
            policy_digest(),
        );
        c.nonce = nonce;
        c.iat -= age;
        c.kernel = self.kernel.clone();
        edit(&mut c);
        (c.memory_root, c.code_hash) =
            vmseal_sealer::claims::Claims::compute_roots(ALG, &c.regions).unwrap();
        let ev = self.sealer.seal(&c, OffsetDateTime::now_utc()).unwrap();
        self.seq += 1;
        self.prev = Some(vmseal_sealer::evidence::evidence_digest(&ev));
        ev
    }
}

/// The appraisal's EAR verifies with the verifier's ca.pem alone and says what the JSON says;
/// tampered, foreign-CA and wrong-key tokens do not verify.
pub(crate) fn check_ear(s: &Server, a: &serde_json::Value, nonce: Option<&[u8]>) {
    use base64::Engine as _;
    use vmseal_client::{EarError, verify_ear};
    let token = a["ear"].as_str().expect("the appraisal carries an EAR");
    let ca = std::fs::read(s.dir.path().join("ca.pem")).unwrap();
    let now = OffsetDateTime::now_utc();
    let claims = verify_ear(token, &ca, now).unwrap();
    assert_eq!(claims["eat_profile"], "tag:ietf.org,2026:rats/ear#04");
    let sub = &claims["submods"][a["vm_id"].as_str().unwrap()];
    assert_eq!(sub["ear_status"], a["tier"]);
    assert_eq!(sub["vmseal.score"], a["score"]);
    assert_eq!(sub["vmseal.seq"], a["seq"]);
    assert_eq!(sub["vmseal.evidence"], a["evidence"]);
    assert_eq!(
        sub["ear_trustworthiness_vector"]["executables"],
        a["trust_vector"]["executables"]
    );
    if let Some(n) = nonce {
        assert_eq!(
            claims["eat_nonce"],
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(n)
        );
    }
    // One flipped character of the payload.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut p: Vec<u8> = parts[1].clone().into_bytes();
    p[10] = if p[10] == b'A' { b'B' } else { b'A' };
    parts[1] = String::from_utf8(p).unwrap();
    assert!(matches!(
        verify_ear(&parts.join("."), &ca, now),
        Err(EarError::Invalid(_) | EarError::Format(_))
    ));
    // Another CA.
    let foreign = tempfile::tempdir().unwrap();
    Ca::init(foreign.path(), &[]).unwrap();
    let other = std::fs::read(foreign.path().join("ca.pem")).unwrap();
    assert!(matches!(
        verify_ear(token, &other, now),
        Err(EarError::Certificate(_))
    ));
    // A certificate of the same CA that is not the EAR signer's (the admin's), signing its own
    // token: refused for the missing EKU.
    let admin_pem = std::fs::read(s.dir.path().join("admin.pem")).unwrap();
    let admin_key = std::fs::read(s.dir.path().join("admin.key")).unwrap();
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    // With its whole chain (the admin certificate and the issuing CA), so only the EKU is wrong.
    h.x5c = Some(
        pem::parse_many(&admin_pem)
            .unwrap()
            .iter()
            .map(|c| base64::engine::general_purpose::STANDARD.encode(c.contents()))
            .collect(),
    );
    // Signed with the admin's key under header `h`.
    let forge = |h: &jsonwebtoken::Header| {
        jsonwebtoken::encode(
            h,
            &claims,
            &jsonwebtoken::EncodingKey::from_ec_pem(&admin_key).unwrap(),
        )
        .unwrap()
    };
    assert!(matches!(
        verify_ear(&forge(&h), &ca, now),
        Err(EarError::Certificate(m)) if m.contains("EKU")
    ));
    // The signer's certificate beside another CA's issuing certificate, or a chain of three.
    let ear_chain: Vec<String> = h.x5c.clone().unwrap();
    let foreign_issuing = base64::engine::general_purpose::STANDARD.encode(
        pem::parse(std::fs::read(foreign.path().join("issuing.pem")).unwrap())
            .unwrap()
            .contents(),
    );
    for x5c in [
        vec![ear_chain[0].clone(), foreign_issuing],
        vec![
            ear_chain[0].clone(),
            ear_chain[1].clone(),
            ear_chain[1].clone(),
        ],
    ] {
        h.x5c = Some(x5c);
        assert!(matches!(
            verify_ear(&forge(&h), &ca, now),
            Err(EarError::Certificate(_) | EarError::Format(_))
        ));
    }
}

/// POST a JSON body to `base` + `path`; the status and the JSON answer.
pub(crate) fn post_to(
    c: &reqwest::blocking::Client,
    base: &str,
    path: &str,
    body: impl serde::Serialize,
) -> (u16, serde_json::Value) {
    json(c.post(format!("{base}{path}")).json(&body).send().unwrap())
}

pub(crate) fn json(r: reqwest::blocking::Response) -> (u16, serde_json::Value) {
    let status = r.status().as_u16();
    (status, r.json().unwrap())
}

/// An enrollment token from the admin (optionally for one host only), as a client.
pub(crate) fn token(
    s: &Server,
    admin: &reqwest::blocking::Client,
    host: Option<&str>,
) -> reqwest::blocking::Client {
    let (st, t) = post_to(
        admin,
        &s.url,
        "/v1/enrollment-tokens",
        serde_json::json!({ "valid_minutes": 5, "host_id": host }),
    );
    assert_eq!(st, 201, "{t}");
    client(
        s,
        Some((
            t["cert_pem"].as_str().unwrap(),
            t["key_pem"].as_str().unwrap(),
        )),
        None,
    )
}

/// A challenge from the verifier for token `t`, answered with fresh anchors from `m` (CBOR,
/// base64).
pub(crate) fn fresh_for(
    s: &Server,
    t: &reqwest::blocking::Client,
    m: &mut vmseal_sealer::state::EnrollmentMaterial,
) -> String {
    use base64::Engine as _;
    let (st, c) = post_to(t, &s.url, "/v1/enrollment-challenges", ());
    assert_eq!(st, 201, "{c}");
    let nonce = hex::decode(c["nonce"].as_str().unwrap()).unwrap();
    base64::engine::general_purpose::STANDARD.encode(vmseal_sealer::anchor::encode(
        &m.fresh_anchors(&nonce).unwrap(),
    ))
}

pub(crate) fn bundle(h: &Host, csr_pem: &str) -> serde_json::Value {
    use base64::Engine as _;
    serde_json::json!({
        "intermediate": base64::engine::general_purpose::STANDARD.encode(&h.der),
        "csr_pem": csr_pem,
    })
}

/// `agent` submits `evidence` for `vm`: the status and the JSON answer.
pub(crate) fn submit(
    s: &Server,
    agent: &reqwest::blocking::Client,
    vm: &str,
    evidence: Vec<u8>,
) -> (u16, serde_json::Value) {
    json(
        agent
            .post(format!("{}/v1/vms/{vm}/evidence", s.url))
            .body(evidence)
            .send()
            .unwrap(),
    )
}

/// The admin registers `vm` on `host` under `policy`.
pub(crate) fn register(
    s: &Server,
    admin: &reqwest::blocking::Client,
    vm: &str,
    host: &str,
    policy: &str,
) {
    let (st, e) = post_to(
        admin,
        &s.url,
        "/v1/vms",
        serde_json::json!({ "vm_id": vm, "host_id": host, "policy": policy }),
    );
    assert_eq!(st, 201, "{e}");
}

/// The admin promotes snapshot `seq` of `vm` (the host's current memory) to its golden baseline.
pub(crate) fn promote(s: &Server, vm: &str, h: &mut Host, seq: u64) {
    let leaves: Vec<serde_json::Value> = h
        .regions
        .iter()
        .map(|(n, _, _, l)| serde_json::json!({ "name": n, "leaves": hex::encode(l.concat()) }))
        .collect();
    let (st, b) = post_to(
        &admin(s),
        &s.url,
        &format!("/v1/vms/{vm}/baselines"),
        serde_json::json!({ "seq": seq, "regions": leaves,
            "kernel_objects": h.kernel.as_ref().map(|k| hex::encode(k.encode())) }),
    );
    assert_eq!(st, 201, "{b}");
    h.baseline = Some(h.regions.iter().map(|r| r.3.clone()).collect());
}

/// Enrol `h` (no TPM anchor: one step, no credential challenge); returns its agent's client.
pub(crate) fn enrol(
    s: &Server,
    admin: &reqwest::blocking::Client,
    h: &Host,
    only: Option<&str>,
) -> reqwest::blocking::Client {
    let t = token(s, admin, only);
    let (csr, key) = vmseal_client::new_key_and_request().unwrap();
    let (st, e) = post_to(&t, &s.url, "/v1/enrollments", bundle(h, &csr));
    assert_eq!(st, 201, "{e}");
    assert_eq!(e["status"], "enrolled");
    assert_eq!(e["host_id"], h.id.as_str());
    assert_eq!(e["activated"], false, "no TPM anchor, nothing to activate");
    assert!(
        e.get("agent_key_pem").is_none(),
        "the key never leaves the host"
    );
    // The token is used up.
    let (st, again) = post_to(&t, &s.url, "/v1/enrollments", bundle(h, &csr));
    assert_eq!((st, again["code"].as_str().unwrap()), (422, "token_used"));
    client(s, Some((e["agent_cert_pem"].as_str().unwrap(), &key)), None)
}

#[test]
fn enrollment_refusals_change_nothing() {
    let s = start();
    let admin = admin(&s);
    let h = Host::new("host-9");
    let (csr, _key) = vmseal_client::new_key_and_request().unwrap();
    let post = |c: &reqwest::blocking::Client, body: serde_json::Value| {
        post_to(c, &s.url, "/v1/enrollments", body)
    };
    let code = |r: (u16, serde_json::Value)| (r.0, r.1["code"].as_str().unwrap().to_owned());

    // Only an enrollment token enrols; an admin certificate does not.
    assert_eq!(
        code(post(&admin, bundle(&h, &csr))),
        (403, "forbidden".into())
    );
    // A token for another host.
    let other = token(&s, &admin, Some("host-8"));
    assert_eq!(
        code(post(&other, bundle(&h, &csr))),
        (403, "forbidden".into())
    );
    // Malformed bundles: bad base64, not a certificate, a bad request, unknown fields.
    let t = token(&s, &admin, None);
    let mut b = bundle(&h, &csr);
    b["intermediate"] = "***".into();
    assert_eq!(code(post(&t, b)), (400, "bad_base64".into()));
    let mut b = bundle(&h, &csr);
    b["intermediate"] = "AAAA".into();
    assert_eq!(code(post(&t, b)), (422, "enrollment_refused".into()));
    assert_eq!(
        code(post(&t, bundle(&h, "not a csr"))),
        (400, "bad_csr".into())
    );
    let mut tampered = pem::parse(&csr).unwrap().into_contents();
    let n = tampered.len();
    tampered[n - 5] ^= 1;
    let tampered = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", tampered));
    assert_eq!(
        code(post(&t, bundle(&h, &tampered))),
        (400, "bad_csr".into())
    );
    let mut b = bundle(&h, &csr);
    b["extra"] = 1.into();
    assert_eq!(code(post(&t, b)), (400, "bad_json".into()));
    // A token is not an agent: it cannot ask for nonces or register VMs.
    let (st, _) = post_to(
        &t,
        &s.url,
        "/v1/vms",
        serde_json::json!({ "vm_id": "v", "host_id": "host-9" }),
    );
    assert_eq!(st, 403);
    // A token may require anchors the service does not: a host without a TPM anchor is refused
    // under a token that requires one; an unknown requirement is refused when the token is made.
    let (st, tt) = post_to(
        &admin,
        &s.url,
        "/v1/enrollment-tokens",
        serde_json::json!({ "valid_minutes": 5, "require": "tpm" }),
    );
    assert_eq!(st, 201, "{tt}");
    let strict = client(
        &s,
        Some((
            tt["cert_pem"].as_str().unwrap(),
            tt["key_pem"].as_str().unwrap(),
        )),
        None,
    );
    let (st, e) = post(&strict, bundle(&h, &csr));
    assert_eq!(
        (st, e["code"].as_str().unwrap()),
        (422, "enrollment_refused"),
        "{e}"
    );
    assert!(e["message"].as_str().unwrap().contains("TPM"), "{e}");
    let (st, e) = post_to(
        &admin,
        &s.url,
        "/v1/enrollment-tokens",
        serde_json::json!({ "valid_minutes": 5, "require": "quantum" }),
    );
    assert_eq!((st, e["code"].as_str().unwrap()), (400, "bad_require"));
    // Token lifetimes are bounded.
    let (st, e) = post_to(
        &admin,
        &s.url,
        "/v1/enrollment-tokens",
        serde_json::json!({ "valid_minutes": 0 }),
    );
    assert_eq!((st, e["code"].as_str().unwrap()), (400, "bad_lifetime"));
    // None of that enrolled host-9: registering a VM on it fails, and the token still works.
    let (st, _) = post_to(
        &admin,
        &s.url,
        "/v1/vms",
        serde_json::json!({ "vm_id": "v", "host_id": "host-9" }),
    );
    assert_eq!(st, 404);
    let (st, e) = post(&t, bundle(&h, &csr));
    assert_eq!((st, e["status"].as_str().unwrap()), (201, "enrolled"));
    // An activation answer for a challenge that was never made.
    let t2 = token(&s, &admin, None);
    let (st, e) = post_to(
        &t2,
        &s.url,
        "/v1/enrollments/0000/activation",
        serde_json::json!({ "secret": "AAAA" }),
    );
    assert_eq!((st, e["code"].as_str().unwrap()), (404, "not_found"));
}

#[test]
fn the_appraisal_loop_and_its_refusals() {
    let s = start();
    let admin = admin(&s);

    // No client certificate, or one from another CA: the handshake fails, no handler runs.
    assert!(
        client(&s, None, None)
            .get(format!("{}/healthz", s.url))
            .send()
            .is_err()
    );
    let foreign = tempfile::tempdir().unwrap();
    let other = Ca::init(foreign.path(), &[]).unwrap();
    let stranger = other
        .issue_client(&Role::Admin("mallory".into()), Duration::days(1))
        .unwrap();
    assert!(
        client(&s, Some((&stranger.cert_pem, &stranger.key_pem)), None)
            .get(format!("{}/healthz", s.url))
            .send()
            .is_err()
    );

    // The OpenAPI document is served to any client of the CA.
    let (st, doc) = json(admin.get(format!("{}/openapi.json", s.url)).send().unwrap());
    assert_eq!(st, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    assert!(doc["paths"]["/v1/vms/{vm}/evidence"]["post"].is_object());

    // Enrol two hosts with one-use enrollment tokens; register a VM on the first.
    let mut h1 = Host::new("host-1");
    let h2 = Host::new("host-2");
    let agent1 = enrol(&s, &admin, &h1, None);
    let agent2 = enrol(&s, &admin, &h2, Some("host-2"));
    let body = serde_json::json!({ "vm_id": "vm-a", "host_id": "host-1", "policy": POLICY });
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
    let (st, e) = post_to(
        &agent1,
        &s.url,
        "/v1/vms",
        serde_json::json!({ "vm_id": "vm-x", "host_id": "host-1" }),
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
    let (st, a0) = submit(&s, &agent1, "vm-a", ev0.clone());
    assert_eq!(st, 200, "{a0}");
    assert_eq!(a0["score"], 50);
    check_ear(&s, &a0, Some(&nonce));
    // Sending it again (an agent whose answer was lost) is idempotent: the stored appraisal comes
    // back, marked duplicate, and nothing is stored, consumed or raised.
    let (st, again) = submit(&s, &agent1, "vm-a", ev0.clone());
    assert_eq!(st, 200, "{again}");
    assert_eq!(again["duplicate"], true);
    assert_eq!((&again["seq"], &again["ear"]), (&a0["seq"], &a0["ear"]));
    let (_, listed) = json(
        admin
            .get(format!("{}/v1/vms/vm-a/appraisals", s.url))
            .send()
            .unwrap(),
    );
    assert_eq!(
        listed["appraisals"].as_array().unwrap().len(),
        1,
        "{listed}"
    );
    // The verifier says where the chain stands, to the VM's agent.
    let (st, head) = json(
        agent1
            .get(format!("{}/v1/vms/vm-a/chain", s.url))
            .send()
            .unwrap(),
    );
    assert_eq!(st, 200, "{head}");
    assert_eq!(head["next_seq"], 1);
    assert_eq!(
        head["prev"],
        hex::encode(vmseal_sealer::evidence::evidence_digest(&ev0))
    );
    // A refusal carries the head too: evidence that skips ahead is refused, naming #1.
    let saved = h1.chain();
    let gap = h1.evidence_edited("vm-a", None, 0, |c| c.seq += 3);
    h1.set_chain(saved);
    let (st, e) = submit(&s, &agent1, "vm-a", gap);
    assert_eq!((st, e["code"].as_str().unwrap()), (422, "seq_gap"), "{e}");
    assert_eq!(e["chain"], head, "{e}");
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
    let (st, b) = post_to(
        &admin,
        &s.url,
        "/v1/vms/vm-a/baselines",
        serde_json::json!({ "seq": 0, "regions": leaves }),
    );
    assert_eq!(st, 201, "{b}");
    assert_eq!(b["version"], 1);
    h1.baseline = Some(h1.regions.iter().map(|r| r.3.clone()).collect());
    // The host's agent reads the active baseline back (to compute its deltas); another host's
    // agent may not.
    let (st, got) = json(
        agent1
            .get(format!("{}/v1/vms/vm-a/baseline", s.url))
            .send()
            .unwrap(),
    );
    assert_eq!((st, got["version"].as_u64()), (200, Some(1)), "{got}");
    let kernel = got["regions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "kernel-text")
        .unwrap();
    assert_eq!(
        kernel["leaves"].as_str().unwrap(),
        hex::encode(h1.regions[0].3.concat())
    );
    assert_eq!(
        agent2
            .get(format!("{}/v1/vms/vm-a/baseline", s.url))
            .send()
            .unwrap()
            .status(),
        403
    );
    // Forged leaves are refused; an agent may not promote.
    let mut forged = leaves.clone();
    forged[0]["leaves"] = serde_json::Value::String(hex::encode([[9u8; 32]; 16].concat()));
    let (st, e) = post_to(
        &admin,
        &s.url,
        "/v1/vms/vm-a/baselines",
        serde_json::json!({ "seq": 0, "regions": forged }),
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
    let (st, a1) = submit(&s, &agent1, "vm-a", h1.evidence("vm-a", None));
    assert_eq!(st, 200, "{a1}");
    assert_eq!(
        (a1["score"].as_u64(), a1["tier"].as_str()),
        (Some(100), Some("affirming"))
    );

    // The kernel text is patched: contraindicated, and the region is named.
    h1.regions[0].3[3] = ALG.leaf(b"rootkit");
    let (st, a2) = submit(&s, &agent1, "vm-a", h1.evidence("vm-a", None));
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
    let (st, e) = submit(&s, &agent1, "vm-a", bad.clone());
    assert_eq!(
        (st, e["code"].as_str().unwrap()),
        (422, "evidence_invalid"),
        "{e}"
    );
    let (st, _) = submit(&s, &agent1, "vm-a", bad[..100].to_vec());
    assert_eq!(st, 422);
    let ev_gap = h1.evidence("vm-a", None); // seq 4 while 3 was never accepted
    let (st, e) = submit(&s, &agent1, "vm-a", ev_gap);
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

/// Enrollment of a host whose intermediate carries a real TPM anchor (swtpm) and the INSECURE SNP
/// stand-in: refused unless the verifier is configured to accept the stand-in; the EK public area
/// must be the certified EK's; a wrong answer to the credential challenge enrols nothing; the
/// answer only that TPM can give enrols the host with its AK activated.
#[test]
fn an_assigned_policy_is_the_verifiers() {
    let s = start();
    let admin = admin(&s);
    let mut h = Host::new("host-1");
    let agent = enrol(&s, &admin, &h, None);
    let code = |r: (u16, serde_json::Value)| (r.0, r.1["code"].as_str().unwrap_or("").to_owned());
    // A policy the host's parser refuses is refused at once, with its line and column.
    let (st, e) = post_to(
        &admin,
        &s.url,
        "/v1/vms",
        serde_json::json!({ "vm_id": "vm-a", "host_id": "host-1", "policy": "name = \"p\"\nversion = 1\n[[region]]\nname = \"x\"\nclass = \"kode\"\n" }),
    );
    assert_eq!(
        (st, e["code"].as_str().unwrap()),
        (400, "bad_policy"),
        "{e}"
    );
    assert!(e["message"].as_str().unwrap().contains("line"), "{e}");
    register(&s, &admin, "vm-a", "host-1", POLICY);
    // The agent reads the policy it must capture by; another host's agent may not.
    let (st, p) = json(
        agent
            .get(format!("{}/v1/vms/vm-a/policy", s.url))
            .send()
            .unwrap(),
    );
    assert_eq!(st, 200, "{p}");
    assert_eq!(p["policy"], POLICY);
    assert_eq!(p["policy_digest"], hex::encode(policy_digest()));
    let h2 = Host::new("host-2");
    let agent2 = enrol(&s, &admin, &h2, None);
    let r = agent2
        .get(format!("{}/v1/vms/vm-a/policy", s.url))
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    // Only admins set module rules; malformed rules are refused.
    let rules = |c: &reqwest::blocking::Client, allowed: &[&str]| {
        code(post_to(
            c,
            &s.url,
            "/v1/vms/vm-a/modules",
            serde_json::json!({ "allowed": allowed }),
        ))
    };
    assert_eq!(rules(&agent, &[]), (403, "forbidden".into()));
    assert_eq!(rules(&admin, &["vmseal-host"]), (400, "bad_module".into()));
    let many: Vec<String> = (0..65).map(|i| format!("vmseal-host 0.{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_eq!(rules(&admin, &many), (400, "bad_module".into()));
    // Only an admin resets a chain, and only to a sequence number the store can hold.
    let reset = |c: &reqwest::blocking::Client, at: u64| {
        code(post_to(
            c,
            &s.url,
            "/v1/vms/vm-a/reset-chain",
            serde_json::json!({ "at": at }),
        ))
    };
    assert_eq!(reset(&agent, 0), (403, "forbidden".into()));
    assert_eq!(reset(&admin, u64::MAX), (400, "bad_seq".into()));
    assert_eq!(rules(&admin, &["vmseal-host 9.9.9"]).0, 200);

    let submit = |ev: Vec<u8>| submit(&s, &agent, "vm-a", ev);
    let ev = h.evidence("vm-a", None);
    let (st, e) = submit(ev);
    assert_eq!(
        (st, e["code"].as_str().unwrap()),
        (422, "module_not_allowed"),
        "{e}"
    );
    assert!(
        e["message"].as_str().unwrap().contains("allow-modules"),
        "{e}"
    );
    h.seq = 0;
    h.prev = None;
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(rules(&admin, &[&format!("vmseal-host {version}")]).0, 200);
    let (st, a) = submit(h.evidence("vm-a", None));
    assert_eq!(st, 200, "{a}");
    promote(&s, "vm-a", &mut h, 0);
    // A compromised host drops the critical code region from otherwise genuine claims, and
    // patches it: the verifier's policy says it must be there.
    h.regions[0].3[3] = ALG.leaf(b"patched");
    let (st, a) = submit(h.evidence_edited("vm-a", None, 0, |c| {
        c.regions.retain(|r| r.name != "kernel-text");
        c.delta.retain(|d| d.region != "kernel-text");
    }));
    assert_eq!(st, 200, "{a}");
    assert_eq!(
        (a["score"].as_u64(), a["tier"].as_str()),
        (Some(0), Some("contraindicated")),
        "{a}"
    );
    assert_eq!(a["changes"][0]["region"], "kernel-text");
    assert_eq!(a["changes"][0]["findings"], serde_json::json!(["missing"]));
    // It keeps the region but calls it low data.
    let (st, a) = submit(h.evidence_edited("vm-a", None, 0, |c| {
        c.regions[0].class = RegionClass::Data;
        c.regions[0].severity = Severity::Low;
    }));
    assert_eq!(st, 200, "{a}");
    assert_eq!(a["score"], 0, "{a}");
    assert_eq!(a["changes"][0]["class"], "code");
    assert_eq!(
        a["changes"][0]["findings"],
        serde_json::json!(["changed", "relabelled"])
    );
    assert_eq!(a["changes"][0]["claimed"], "data/low");
    // It reads the code region from another copy within the same boot.
    let (st, a) = submit(h.evidence_edited("vm-a", None, 0, |c| {
        c.regions[0].ranges[0].start += 0x100_0000;
    }));
    assert_eq!(st, 200, "{a}");
    assert!(
        a["changes"][0]["findings"]
            .as_array()
            .unwrap()
            .contains(&"remapped".into()),
        "{a}"
    );
    // It captures under another policy than the assigned one.
    let (seq, prev) = (h.seq, h.prev);
    let (st, e) = submit(h.evidence_edited("vm-a", None, 0, |c| c.policy.digest = [9; 32]));
    assert_eq!(
        (st, e["code"].as_str().unwrap()),
        (422, "policy_mismatch"),
        "{e}"
    );
    // Both refusals (the module, the policy) were alerts naming their codes; the module's was
    // resolved by the evidence accepted after it.
    let (st, al) = json(
        admin
            .get(format!("{}/v1/alerts?vm=vm-a&state=open", s.url))
            .send()
            .unwrap(),
    );
    assert_eq!(st, 200, "{al}");
    let codes: Vec<&str> = al["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "evidence_refused")
        .map(|a| a["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["policy_mismatch"], "{al}");
    // Refused evidence changes nothing: the chain still stands where it was.
    (h.seq, h.prev) = (seq, prev);
    let (st, a) = submit(h.evidence("vm-a", None));
    assert_eq!(st, 200, "the chain goes on after refusals: {a}");
}

#[test]
fn viewers_never_see_webhook_urls_or_their_credentials() {
    let s = start();
    let admin = admin(&s);
    let mut h = Host::new("host-1");
    let agent = enrol(&s, &admin, &h, None);
    let viewer = viewer(&s, "auditor");
    // A webhook whose URL carries a credential, on a port nothing listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let url = format!("http://ops:s3cret-token@127.0.0.1:{port}/hook");
    let (st, w) = post_to(
        &admin,
        &s.url,
        "/v1/webhooks",
        serde_json::json!({ "name": "pager", "url": url }),
    );
    assert_eq!(st, 201, "{w}");
    assert_eq!(
        viewer
            .get(format!("{}/v1/webhooks", s.url))
            .send()
            .unwrap()
            .status(),
        403
    );
    // What a page of another origin could make an admin's browser send: a form post, a bodiless
    // DELETE. Refused before anything is read or changed.
    let (st, e) = json(
        admin
            .delete(format!("{}/v1/webhooks/pager", s.url))
            .header(vmseal_client::REQUEST_HEADER, "")
            .send()
            .unwrap(),
    );
    assert_eq!(st, 403, "{e}");
    assert!(e["message"].as_str().unwrap().contains("cross-site"), "{e}");
    let (st, _) = json(
        admin
            .post(format!("{}/v1/vms", s.url))
            .header(vmseal_client::REQUEST_HEADER, "")
            .header("content-type", "text/plain")
            .body(r#"{"vm_id":"vm-x","host_id":"host-1"}"#)
            .send()
            .unwrap(),
    );
    assert!(matches!(st, 400 | 403), "{st}");
    let (_, v) = json(admin.get(format!("{}/v1/vms", s.url)).send().unwrap());
    assert!(!v.to_string().contains("vm-x"), "{v}");
    let (_, w) = json(admin.get(format!("{}/v1/webhooks", s.url)).send().unwrap());
    assert_eq!(
        w["webhooks"].as_array().unwrap().len(),
        1,
        "still there: {w}"
    );
    register(&s, &admin, "vm-a", "host-1", POLICY);
    // A refused snapshot raises an alert, whose delivery fails.
    let ev = h.evidence_edited("vm-a", None, 0, |c| c.policy.digest = [9; 32]);
    let r = agent
        .post(format!("{}/v1/vms/vm-a/evidence", s.url))
        .body(ev)
        .send()
        .unwrap();
    assert_eq!(r.status(), 422);
    let (_, l) = json(
        admin
            .get(format!("{}/v1/alerts?vm=vm-a", s.url))
            .send()
            .unwrap(),
    );
    let id = l["alerts"][0]["alert_id"]
        .as_i64()
        .expect("an evidence_refused alert");
    let show = |c: &reqwest::blocking::Client| {
        json(c.get(format!("{}/v1/alerts/{id}", s.url)).send().unwrap()).1
    };
    let mut shown = show(&admin);
    for _ in 0..100 {
        if shown["deliveries"][0]["last_error"].is_string() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        shown = show(&admin);
    }
    let err = shown["deliveries"][0]["last_error"]
        .as_str()
        .expect("a failed attempt");
    assert!(
        !err.contains("s3cret") && !err.contains("127.0.0.1"),
        "{err}"
    );
    let seen = show(&viewer);
    assert_eq!(
        seen["deliveries"][0]["last_error"], "(admins see the error)",
        "{seen}"
    );
    assert!(!seen.to_string().contains("s3cret"), "{seen}");
}

#[test]
fn the_hardware_policy_refuses_a_debug_guest_and_names_the_field() {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as B64;
    use vmseal_sealer::snp::Product;
    use vmseal_sealer::snp::standin::ReportKnobs;
    use vmseal_sealer::state::{GuestInitOptions, SnpChoice, StandInOptions, init_guest};

    // Three SNP guests (INSECURE stand-in, one product each so one verifier accepts all three
    // test roots): a DEBUG guest, a guest at VMPL 2, an ordinary one.
    let guest = |id: &str, product: Product, knobs: ReportKnobs| {
        let dir = tempfile::tempdir().unwrap();
        let r = init_guest(
            dir.path(),
            &GuestInitOptions {
                host_id: id.into(),
                snp: SnpChoice::InsecureSoft,
                insecure: StandInOptions {
                    product,
                    report_version: 3,
                    knobs,
                },
                nonce: None,
                validity: Duration::days(1),
            },
        )
        .unwrap();
        (dir, r.intermediate_der)
    };
    let debug = guest(
        "g-debug",
        Product::Milan,
        ReportKnobs {
            policy: Some(0xB_0000),
            ..Default::default()
        },
    );
    let vmpl2 = guest(
        "g-vmpl",
        Product::Genoa,
        ReportKnobs {
            vmpl: Some(2),
            ..Default::default()
        },
    );
    let plain = guest("g-plain", Product::Turin, ReportKnobs::default());
    let mut trust = TrustConfig {
        require: AnchorRequirement::from_name("snp").unwrap(),
        ..TrustConfig::default()
    };
    for (d, _) in [&debug, &vmpl2, &plain] {
        let ark = std::fs::read(d.path().join("insecure-snp-ark.pem")).unwrap();
        trust.snp = trust.snp.clone().allow_insecure_bundle(&ark).unwrap();
    }
    let s = start_with(trust);
    let admin = admin(&s);
    let enrol_with = |hardware: serde_json::Value, dir: &tempfile::TempDir| {
        let mut m = vmseal_sealer::state::EnrollmentMaterial::open(dir.path(), None).unwrap();
        let (st, t) = post_to(
            &admin,
            &s.url,
            "/v1/enrollment-tokens",
            serde_json::json!({ "valid_minutes": 5, "hardware": hardware }),
        );
        assert_eq!(st, 201, "{t}");
        let t = client(
            &s,
            Some((
                t["cert_pem"].as_str().unwrap(),
                t["key_pem"].as_str().unwrap(),
            )),
            None,
        );
        let (csr, _key) = vmseal_client::new_key_and_request().unwrap();
        let fresh = fresh_for(&s, &t, &mut m);
        post_to(
            &t,
            &s.url,
            "/v1/enrollments",
            serde_json::json!({ "intermediate": B64.encode(&m.intermediate_der), "csr_pem": csr, "fresh": fresh }),
        )
    };
    // By default a DEBUG guest is refused, naming the field, the value and the requirement.
    let (st, e) = enrol_with(serde_json::Value::Null, &debug.0);
    assert_eq!(
        (st, e["code"].as_str().unwrap()),
        (422, "hardware_policy"),
        "{e}"
    );
    let m = e["message"].as_str().unwrap();
    assert!(
        m.contains("snp.policy.debug is allowed (policy 0xb0000)"),
        "{m}"
    );
    assert!(m.contains("allow_debug = false"), "{m}");
    // A token's own policy: VMPL 0 only.
    let (st, e) = enrol_with(serde_json::json!({ "vmpls": [0] }), &vmpl2.0);
    assert_eq!(
        (st, e["code"].as_str().unwrap()),
        (422, "hardware_policy"),
        "{e}"
    );
    assert!(
        e["message"].as_str().unwrap().contains("snp.vmpl is 2"),
        "{e}"
    );
    // A measurement allow-list that does not hold the guest's; a TCB it does not reach.
    let other = "ab".repeat(48);
    let (st, e) = enrol_with(serde_json::json!({ "measurements": [other] }), &plain.0);
    assert_eq!(st, 422, "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("snp.measurement is "),
        "{e}"
    );
    let (st, e) = enrol_with(serde_json::json!({ "min_tcb": { "snp": 250 } }), &plain.0);
    assert_eq!(st, 422, "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("snp.reported_tcb.snp is "),
        "{e}"
    );
    // Reference PCRs need a TPM anchor.
    let (st, e) = enrol_with(
        serde_json::json!({ "pcrs": { "7": "00".repeat(32) } }),
        &plain.0,
    );
    assert_eq!(st, 422, "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("no TPM anchor"),
        "{e}"
    );
    // Malformed policies are refused when the token is made.
    let (st, e) = post_to(
        &admin,
        &s.url,
        "/v1/enrollment-tokens",
        serde_json::json!({ "hardware": { "measurements": ["zz"] } }),
    );
    assert_eq!(
        (st, e["code"].as_str().unwrap()),
        (400, "bad_hardware"),
        "{e}"
    );
    // The ordinary guest, under its own measurement: enrolled, and the result says what was
    // checked.
    let measurement = hex::encode(vmseal_sealer::snp::standin::default_measurement());
    let (st, e) = enrol_with(
        serde_json::json!({ "measurements": [measurement], "vmpls": [0] }),
        &plain.0,
    );
    assert_eq!(st, 201, "{e}");
    let checked: Vec<&str> = e["hardware_checked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    for c in ["snp.policy.debug", "snp.vmpl", "snp.measurement"] {
        assert!(checked.contains(&c), "{checked:?}");
    }
    let (_, hosts) = json(admin.get(format!("{}/v1/hosts", s.url)).send().unwrap());
    assert!(hosts.to_string().contains("snp.measurement"), "{hosts}");
}

#[test]
fn one_client_cannot_hold_more_than_eight_submissions() {
    let s = start();
    let admin = admin(&s);
    let h = Host::new("host-1");
    let agent = enrol(&s, &admin, &h, None);
    let (st, _) = post_to(
        &admin,
        &s.url,
        "/v1/vms",
        serde_json::json!({ "vm_id": "vm-a", "host_id": "host-1" }),
    );
    assert_eq!(st, 201);
    // Eight submissions whose bodies never finish hold the agent's eight slots…
    let mut writers = Vec::new();
    let mut threads = Vec::new();
    for _ in 0..8 {
        let (r, w) = std::io::pipe().unwrap();
        writers.push(w);
        let (agent, url) = (agent.clone(), s.url.clone());
        threads.push(std::thread::spawn(move || {
            agent
                .post(format!("{url}/v1/vms/vm-a/evidence"))
                .header("content-type", "application/octet-stream")
                .body(reqwest::blocking::Body::new(r))
                .send()
                .map(|r| r.status().as_u16())
        }));
    }
    // (Give the eight time to reach the service: their heads go out when the client starts them.)
    std::thread::sleep(std::time::Duration::from_millis(1000));
    for t in &threads {
        assert!(!t.is_finished(), "a stalled submission ended early");
    }
    // …so a ninth is answered at once, 429 with Retry-After, its body unread.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (st, e, retry) = loop {
        let r = agent
            .post(format!("{}/v1/vms/vm-a/evidence", s.url))
            .body(vec![0u8; 16])
            .send()
            .unwrap();
        let st = r.status().as_u16();
        let retry = r.headers().get("retry-after").is_some();
        let e: serde_json::Value = r.json().unwrap();
        if st == 429 || std::time::Instant::now() > deadline {
            break (st, e, retry);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(
        (st, e["code"].as_str().unwrap()),
        (429, "too_many_requests"),
        "{e}"
    );
    assert!(retry);
    // Another client is not held up.
    let (st, _) = json(admin.get(format!("{}/v1/vms", s.url)).send().unwrap());
    assert_eq!(st, 200);
    // The stalled bodies end; their slots come back.
    drop(writers);
    for t in threads {
        assert_eq!(
            t.join().unwrap().unwrap(),
            422,
            "an empty body is refused evidence"
        );
    }
    let (st, e) = submit(&s, &agent, "vm-a", vec![0u8; 16]);
    assert_eq!(
        (st, e["code"].as_str().unwrap()),
        (422, "evidence_invalid"),
        "{e}"
    );
}

#[test]
fn tpm_enrollment_runs_credential_activation() {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as B64;
    use vmseal_sealer::snp::Product;
    use vmseal_sealer::state::{EnrollmentMaterial, InitOptions, SnpChoice, StandInOptions, init};

    let sw = vmseal_testkit::Swtpm::start().unwrap();
    let state = tempfile::tempdir().unwrap();
    init(
        state.path(),
        &InitOptions {
            host_id: "tpm-host".into(),
            tcti: sw.tcti(),
            pcrs: (0..8).collect(),
            snp: SnpChoice::InsecureSoft,
            insecure: StandInOptions {
                product: Product::Milan,
                ..Default::default()
            },
            nonce: None,
            validity: Duration::days(1),
        },
    )
    .unwrap();
    let mut trust = TrustConfig {
        require: AnchorRequirement::from_name("both").unwrap(),
        ..TrustConfig::default()
    };
    // Two genuine TPMs (each swtpm has its own manufacturer CA): the second one later claims the
    // first one's host id.
    let sw2 = vmseal_testkit::Swtpm::start().unwrap();
    trust.tpm.ek_roots = [&sw, &sw2]
        .iter()
        .map(|t| {
            pem::parse(std::fs::read(t.ek_issuer_pem()).unwrap())
                .unwrap()
                .into_contents()
        })
        .collect();
    trust.tpm.require_ek_chain = true;
    let mut m = EnrollmentMaterial::open(state.path(), None).unwrap();
    let (csr, key) = vmseal_client::new_key_and_request().unwrap();

    // A verifier that does not accept the stand-in refuses the bundle outright.
    let strict = start_with(trust.clone());
    let strict_admin = admin(&strict);
    let (st, e) = json(
        token(&strict, &strict_admin, None)
            .post(format!("{}/v1/enrollments", strict.url))
            .json(&serde_json::json!({
                "intermediate": B64.encode(&m.intermediate_der),
                "ek_public": B64.encode(&m.ek_public),
                "csr_pem": csr,
            }))
            .send()
            .unwrap(),
    );
    assert_eq!(
        (st, e["code"].as_str().unwrap()),
        (422, "enrollment_refused")
    );
    assert!(e["message"].as_str().unwrap().contains("INSECURE"), "{e}");

    let state2 = tempfile::tempdir().unwrap();
    init(
        state2.path(),
        &InitOptions {
            host_id: "tpm-host".into(),
            tcti: sw2.tcti(),
            pcrs: (0..8).collect(),
            snp: SnpChoice::InsecureSoft,
            insecure: StandInOptions {
                // its own stand-in root (one per product)
                product: Product::Genoa,
                ..Default::default()
            },
            nonce: None,
            validity: Duration::days(1),
        },
    )
    .unwrap();
    // One that is configured to accept it (tests only): both hosts' stand-in roots.
    for st in [&state, &state2] {
        let ark = std::fs::read(st.path().join("insecure-snp-ark.pem")).unwrap();
        trust.snp = trust.snp.clone().allow_insecure_bundle(&ark).unwrap();
    }
    let s = start_with(trust);
    let admin = admin(&s);
    let t = token(&s, &admin, Some("tpm-host"));
    let (der, ek) = (m.intermediate_der.clone(), m.ek_public.clone());
    let begin = |ek: &[u8], fresh: &str| {
        post_to(
            &t,
            &s.url,
            "/v1/enrollments",
            serde_json::json!({
                "intermediate": B64.encode(&der),
                "ek_public": B64.encode(ek),
                "csr_pem": csr,
                "fresh": fresh,
            }),
        )
    };
    // Without fresh anchors for a challenge, an intermediate's old anchors could be a replay.
    let (st, e) = post_to(
        &t,
        &s.url,
        "/v1/enrollments",
        serde_json::json!({
            "intermediate": B64.encode(&der),
            "ek_public": B64.encode(&ek),
            "csr_pem": csr,
        }),
    );
    assert_eq!(
        (st, e["code"].as_str().unwrap()),
        (422, "challenge_missing"),
        "{e}"
    );
    // Fresh anchors that are not base64, or not the CBOR of anchors.
    let (st, e) = begin(&ek, "!!");
    assert_eq!(
        (st, e["code"].as_str().unwrap()),
        (400, "bad_base64"),
        "{e}"
    );
    let (st, e) = begin(&ek, &B64.encode(b"\xa1\x01\x02junk"));
    assert_eq!((st, e["code"].as_str().unwrap()), (400, "bad_fresh"), "{e}");
    // Anchors made for a nonce the verifier never issued (made earlier, replayed).
    let old = vmseal_sealer::anchor::encode(&m.fresh_anchors(&[7u8; 32]).unwrap());
    let (st, e) = begin(&ek, &B64.encode(&old));
    assert_eq!(
        (st, e["code"].as_str().unwrap()),
        (422, "bad_challenge"),
        "{e}"
    );
    // Anchors answering the nonce, but the quote made by another TPM's AK for it.
    let f = fresh_for(&s, &t, &mut m);
    let mut other: vmseal_sealer::anchor::FreshAnchors =
        vmseal_sealer::anchor::decode(&B64.decode(&f).unwrap()).unwrap();
    let n2 = hex::decode(
        post_to(&t, &s.url, "/v1/enrollment-challenges", ()).1["nonce"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let theirs = EnrollmentMaterial::open(state2.path(), None)
        .unwrap()
        .fresh_anchors(&n2)
        .unwrap();
    other.nonce = n2.clone();
    other.tpm = theirs.tpm;
    other.snp.as_mut().unwrap().nonce = n2;
    let (st, e) = begin(&ek, &B64.encode(vmseal_sealer::anchor::encode(&other)));
    assert_eq!(
        (st, e["code"].as_str().unwrap()),
        (422, "enrollment_refused"),
        "{e}"
    );

    // Another TPM's EK public area: it is not the certified EK's key.
    let ek2 = vmseal_sealer::tpm::Tpm::open(&sw2.tcti())
        .unwrap()
        .ek_public()
        .unwrap();
    let f = fresh_for(&s, &t, &mut m);
    let (st, e) = begin(&ek2, &f);
    assert_eq!(
        (st, e["code"].as_str().unwrap()),
        (422, "ek_mismatch"),
        "{e}"
    );

    // The right EK, a wrong answer: refused, the challenge is gone, nothing enrolled.
    let f = fresh_for(&s, &t, &mut m);
    let (st, c) = begin(&ek, &f);
    assert_eq!(
        (st, c["status"].as_str().unwrap()),
        (200, "challenge"),
        "{c}"
    );
    let id = c["enrollment_id"].as_str().unwrap().to_owned();
    let activation = |id: &str, secret: &[u8]| {
        post_to(
            &t,
            &s.url,
            &format!("/v1/enrollments/{id}/activation"),
            serde_json::json!({ "secret": B64.encode(secret) }),
        )
    };
    let (st, e) = activation(&id, &[7u8; 32]);
    assert_eq!(
        (st, e["code"].as_str().unwrap()),
        (422, "activation_failed")
    );
    let (st, _) = activation(&id, &[7u8; 32]);
    assert_eq!(st, 404, "a wrong answer ends the challenge");
    let (st, _) = post_to(
        &admin,
        &s.url,
        "/v1/vms",
        serde_json::json!({ "vm_id": "v", "host_id": "tpm-host" }),
    );
    assert_eq!(st, 404, "nothing enrolled");

    // Start again; the TPM answers: enrolled, AK activated, the agent certificate works.
    let f = fresh_for(&s, &t, &mut m);
    let (st, c) = begin(&ek, &f);
    assert_eq!(st, 200, "{c}");
    let secret = m
        .activate(
            &B64.decode(c["credential_blob"].as_str().unwrap()).unwrap(),
            &B64.decode(c["encrypted_secret"].as_str().unwrap()).unwrap(),
        )
        .unwrap();
    let (st, e) = activation(c["enrollment_id"].as_str().unwrap(), &secret);
    assert_eq!(st, 201, "{e}");
    assert_eq!(e["host_id"], "tpm-host");
    assert_eq!(e["activated"], true);
    assert_eq!(e["insecure"], true);
    let agent = client(
        &s,
        Some((e["agent_cert_pem"].as_str().unwrap(), &key)),
        None,
    );
    let (st, _) = post_to(
        &admin,
        &s.url,
        "/v1/vms",
        serde_json::json!({ "vm_id": "v", "host_id": "tpm-host" }),
    );
    assert_eq!(st, 201);
    let (st, n) = json(
        agent
            .post(format!("{}/v1/vms/v/nonce", s.url))
            .send()
            .unwrap(),
    );
    assert_eq!(st, 200, "{n}");
    // The token is spent.
    let (st, e) = begin(&ek, "");
    assert_eq!((st, e["code"].as_str().unwrap()), (422, "token_used"));

    // The host id stays with this TPM. Another genuine TPM claiming "tpm-host" with a token that
    // does not name it is refused (409) and alerted; nothing changes.
    let mut m2 = EnrollmentMaterial::open(state2.path(), None).unwrap();
    let enrol_with = |t: &reqwest::blocking::Client, m: &mut EnrollmentMaterial| {
        let (csr, key) = vmseal_client::new_key_and_request().unwrap();
        let fresh = fresh_for(&s, t, m);
        let (st, c) = post_to(
            t,
            &s.url,
            "/v1/enrollments",
            serde_json::json!({
                "intermediate": B64.encode(&m.intermediate_der),
                "ek_public": B64.encode(&m.ek_public),
                "csr_pem": csr,
                "fresh": fresh,
            }),
        );
        if st != 200 {
            return Err((st, c));
        }
        let secret = m
            .activate(
                &B64.decode(c["credential_blob"].as_str().unwrap()).unwrap(),
                &B64.decode(c["encrypted_secret"].as_str().unwrap()).unwrap(),
            )
            .unwrap();
        let (st, e) = post_to(
            t,
            &s.url,
            &format!(
                "/v1/enrollments/{}/activation",
                c["enrollment_id"].as_str().unwrap()
            ),
            serde_json::json!({ "secret": B64.encode(secret) }),
        );
        assert_eq!(st, 201, "{e}");
        Ok(client(
            &s,
            Some((e["agent_cert_pem"].as_str().unwrap(), &key)),
            None,
        ))
    };
    let (st, e) = enrol_with(&token(&s, &admin, None), &mut m2)
        .map(|_| ())
        .unwrap_err();
    assert_eq!(
        (st, e["code"].as_str().unwrap()),
        (409, "host_identity_changed"),
        "{e}"
    );
    assert!(e["message"].as_str().unwrap().contains("--replace"), "{e}");
    let (_, al) = json(
        admin
            .get(format!("{}/v1/alerts?vm=v", s.url))
            .send()
            .unwrap(),
    );
    assert_eq!(al["alerts"][0]["code"], "host_identity_changed", "{al}");
    let (st, _) = json(
        agent
            .post(format!("{}/v1/vms/v/nonce", s.url))
            .send()
            .unwrap(),
    );
    assert_eq!(st, 200, "the real host is not locked out");

    // The same TPM re-enrols (a token naming no host is enough): its old certificate is revoked.
    let agent_b = enrol_with(&token(&s, &admin, None), &mut m).unwrap();
    let (st, e) = json(
        agent
            .post(format!("{}/v1/vms/v/nonce", s.url))
            .send()
            .unwrap(),
    );
    assert_eq!(st, 403, "{e}");
    assert!(e["message"].as_str().unwrap().contains("revoked"), "{e}");
    let (st, _) = json(
        agent_b
            .post(format!("{}/v1/vms/v/nonce", s.url))
            .send()
            .unwrap(),
    );
    assert_eq!(st, 200);

    // An admin replaces the machine: a token naming the host and saying replace.
    let (st, e) = post_to(
        &admin,
        &s.url,
        "/v1/enrollment-tokens",
        serde_json::json!({ "valid_minutes": 5, "replace": true }),
    );
    assert_eq!((st, e["code"].as_str().unwrap()), (400, "bad_replace"));
    let (st, rt) = post_to(
        &admin,
        &s.url,
        "/v1/enrollment-tokens",
        serde_json::json!({ "valid_minutes": 5, "host_id": "tpm-host", "replace": true }),
    );
    assert_eq!(st, 201, "{rt}");
    let rt = client(
        &s,
        Some((
            rt["cert_pem"].as_str().unwrap(),
            rt["key_pem"].as_str().unwrap(),
        )),
        None,
    );
    let agent_c = enrol_with(&rt, &mut m2).unwrap();
    let (st, _) = json(
        agent_b
            .post(format!("{}/v1/vms/v/nonce", s.url))
            .send()
            .unwrap(),
    );
    assert_eq!(st, 403, "the replaced machine's certificate is revoked");
    let (_, hosts) = json(admin.get(format!("{}/v1/hosts", s.url)).send().unwrap());
    let root = hosts["hosts"][0]["hardware_root"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        root.starts_with("tpm:") && root.contains(";snp:"),
        "{hosts}"
    );
    // Only an admin disables a host.
    let (st, _) = post_to(&agent_c, &s.url, "/v1/hosts/tpm-host/disable", ());
    assert_eq!(st, 403);
    // Disabling the host revokes its certificate at once.
    let (st, d) = post_to(&admin, &s.url, "/v1/hosts/tpm-host/disable", ());
    assert_eq!(st, 200, "{d}");
    let (st, _) = json(
        agent_c
            .post(format!("{}/v1/vms/v/nonce", s.url))
            .send()
            .unwrap(),
    );
    assert_eq!(st, 403);
    let (_, hosts) = json(admin.get(format!("{}/v1/hosts", s.url)).send().unwrap());
    assert!(hosts["hosts"][0]["disabled_at"].is_i64(), "{hosts}");
}

/// Captures on demand: an admin's request reaches the host's agent by long-poll (once), the
/// agent's evidence answering the request's nonce completes it, and other hosts' agents and bad
/// queries are refused.
#[test]
fn capture_requests_reach_the_agent_by_long_poll() {
    let s = start();
    let admin = admin(&s);
    let mut h1 = Host::new("host-1");
    let h2 = Host::new("host-2");
    let agent1 = enrol(&s, &admin, &h1, None);
    let agent2 = enrol(&s, &admin, &h2, None);
    let (st, _) = json(
        admin
            .post(format!("{}/v1/vms", s.url))
            .json(&serde_json::json!({ "vm_id": "vm-a", "host_id": "host-1", "policy": POLICY }))
            .send()
            .unwrap(),
    );
    assert_eq!(st, 201);
    let poll = |c: &reqwest::blocking::Client, host: &str, wait: u32| {
        json(
            c.get(format!(
                "{}/v1/hosts/{host}/capture-requests?wait={wait}",
                s.url
            ))
            .send()
            .unwrap(),
        )
    };
    let request = || {
        let (st, r) = json(
            admin
                .post(format!("{}/v1/vms/vm-a/capture-requests", s.url))
                .send()
                .unwrap(),
        );
        assert_eq!(st, 201, "{r}");
        r
    };
    let status = |id: &str| {
        json(
            admin
                .get(format!("{}/v1/capture-requests/{id}", s.url))
                .send()
                .unwrap(),
        )
        .1
    };

    // Refusals: an agent cannot request captures, nor poll another host's requests; wait ≤ 60.
    let (st, _) = json(
        agent1
            .post(format!("{}/v1/vms/vm-a/capture-requests", s.url))
            .send()
            .unwrap(),
    );
    assert_eq!(st, 403);
    assert_eq!(poll(&agent2, "host-1", 0).0, 403);
    let (st, e) = poll(&agent1, "host-1", 61);
    assert_eq!((st, e["code"].as_str().unwrap()), (400, "bad_query"));
    let (st, _) = json(
        admin
            .post(format!("{}/v1/vms/nope/capture-requests", s.url))
            .send()
            .unwrap(),
    );
    assert_eq!(st, 404);

    // A request is handed out once, to the agent: an admin reading the host's requests sees it
    // and leaves it there.
    let r = request();
    let id = r["request_id"].as_str().unwrap().to_owned();
    assert_eq!(status(&id)["state"], "pending");
    let (st, seen) = poll(&admin, "host-1", 0);
    assert_eq!(st, 200);
    assert_eq!(seen["requests"][0]["request_id"], id.as_str(), "{seen}");
    assert_eq!(
        status(&id)["state"],
        "pending",
        "an admin's look takes nothing"
    );
    let (st, got) = poll(&agent1, "host-1", 0);
    assert_eq!(st, 200);
    let got = got["requests"].as_array().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["request_id"], id.as_str());
    assert_eq!(got[0]["vm_id"], "vm-a");
    assert_eq!(got[0]["nonce"], r["nonce"]);
    assert_eq!(
        poll(&agent1, "host-1", 0).1["requests"],
        serde_json::json!([])
    );
    assert_eq!(status(&id)["state"], "picked");

    // The evidence answering its nonce completes it.
    let nonce = hex::decode(got[0]["nonce"].as_str().unwrap()).unwrap();
    let ev = h1.evidence("vm-a", Some(nonce));
    let (st, a) = submit(&s, &agent1, "vm-a", ev);
    assert_eq!(st, 200, "{a}");
    let done = status(&id);
    assert_eq!(done["state"], "done");
    assert_eq!(done["seq"], 0);
    assert_eq!(done["appraisal"]["score"], a["score"]);

    // A long-poll waiting when the request is made returns it (woken, not timed out).
    let waiting = std::thread::scope(|scope| {
        let h = scope.spawn(|| poll(&agent1, "host-1", 30));
        std::thread::sleep(std::time::Duration::from_millis(300));
        let r = request();
        let (st, got) = h.join().unwrap();
        assert_eq!(st, 200);
        (r, got)
    });
    assert_eq!(
        waiting.1["requests"][0]["request_id"],
        waiting.0["request_id"]
    );
}

/// Freshness, identity and size refusals over HTTP, each changing nothing: a consumed nonce used
/// again, a stale timestamp, evidence for another VM, and bodies over the limit.
#[test]
fn replayed_nonces_stale_evidence_wrong_vms_and_oversized_bodies_are_refused() {
    let s = start();
    let admin = admin(&s);
    let mut h = Host::new("host-1");
    let agent = enrol(&s, &admin, &h, None);
    for vm in ["vm-a", "vm-b"] {
        register(&s, &admin, vm, "host-1", POLICY);
    }
    let submit = |vm: &str, ev: Vec<u8>| submit(&s, &agent, vm, ev);
    let (_, n) = post_to(&agent, &s.url, "/v1/vms/vm-a/nonce", ());
    let nonce = hex::decode(n["nonce"].as_str().unwrap()).unwrap();
    let (st, a) = submit("vm-a", h.evidence("vm-a", Some(nonce.clone())));
    assert_eq!(st, 200, "{a}");
    let (seq, prev) = (h.seq, h.prev);
    let refused = |h: &mut Host, vm: &str, ev: Vec<u8>, code: &str| {
        let (st, e) = submit(vm, ev);
        assert_eq!((st, e["code"].as_str().unwrap()), (422, code), "{e}");
        (h.seq, h.prev) = (seq, prev);
    };
    // The nonce was consumed by the accepted evidence.
    let ev = h.evidence("vm-a", Some(nonce));
    refused(&mut h, "vm-a", ev, "bad_nonce");
    // Without a nonce, evidence older than max_age (300 s) is stale.
    let ev = h.evidence_aged("vm-a", None, 3600);
    refused(&mut h, "vm-a", ev, "stale");
    // Evidence about vm-b sent as vm-a's.
    let ev = h.evidence("vm-b", None);
    refused(&mut h, "vm-a", ev, "wrong_vm");
    // Evidence larger than the VM's baseline allows (4 MiB + 64 bytes per baseline page; this VM
    // has no baseline yet, so 4 MiB).
    let (st, e) = submit("vm-a", vec![0u8; (4 << 20) + 1]);
    assert_eq!((st, e["code"].as_str().unwrap()), (413, "too_large"), "{e}");
    assert!(e["message"].as_str().unwrap().contains("baseline"), "{e}");
    // JSON: a policy-carrying body may be 3 MiB, most bodies 64 KiB.
    let (st, e) = post_to(
        &admin,
        &s.url,
        "/v1/vms",
        serde_json::json!({ "vm_id": "x".repeat(3 << 20), "host_id": "host-1" }),
    );
    assert_eq!((st, e["code"].as_str().unwrap()), (413, "too_large"), "{e}");
    let (st, e) = post_to(
        &admin,
        &s.url,
        "/v1/vms/vm-a/threshold",
        serde_json::json!({ "threshold": 70, "pad": "x".repeat(64 << 10) }),
    );
    assert_eq!((st, e["code"].as_str().unwrap()), (413, "too_large"), "{e}");
    // Roles come before bodies: an agent's 60 MiB to an admin endpoint, or to another host's
    // VM's evidence, is refused for who it is, not read.
    let big = "x".repeat(60 << 20);
    let (st, e) = post_to(
        &agent,
        &s.url,
        "/v1/vms/vm-a/baselines",
        serde_json::json!({ "seq": 0, "regions": [{ "name": big, "leaves": "" }] }),
    );
    assert_eq!((st, e["code"].as_str().unwrap()), (403, "forbidden"), "{e}");
    // An unknown endpoint answers JSON too.
    let (st, e) = json(admin.get(format!("{}/v1/nothing", s.url)).send().unwrap());
    assert_eq!((st, e["code"].as_str().unwrap()), (404, "not_found"), "{e}");
    // None of that moved the chain: the next evidence in sequence is accepted.
    let (st, a) = submit("vm-a", h.evidence("vm-a", None));
    assert_eq!((st, a["seq"].as_u64()), (200, Some(1)), "{a}");
}

/// A webhook receiver on loopback: answers 503 to the first `fail_first` deliveries, 200 after;
/// every body it gets goes to the channel.
pub(crate) fn webhook_receiver(
    fail_first: usize,
) -> (String, std::sync::mpsc::Receiver<(u16, String)>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (tx, rx) = std::sync::mpsc::channel();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://127.0.0.1:{}/hook",
        listener.local_addr().unwrap().port()
    );
    let hits = Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            actix_web::HttpServer::new(move || {
                let (tx, hits) = (tx.clone(), hits.clone());
                actix_web::App::new().route(
                    "/hook",
                    actix_web::web::post().to(move |body: String| {
                        let n = hits.fetch_add(1, Ordering::SeqCst);
                        let status = if n < fail_first { 503 } else { 200 };
                        let _ = tx.send((status, body));
                        async move {
                            actix_web::HttpResponse::build(
                                actix_web::http::StatusCode::from_u16(status).unwrap(),
                            )
                            .finish()
                        }
                    }),
                )
            })
            .workers(1)
            .listen(listener)
            .unwrap()
            .run()
            .await
        })
    });
    (url, rx)
}

#[test]
fn alerts_reach_webhooks_signed_and_the_event_stream() {
    use vmseal_client::{Alert, EarError, verify_alert};
    let s = start();
    let admin = admin(&s);
    let ca = std::fs::read(s.dir.path().join("ca.pem")).unwrap();
    let viewer = viewer(&s, "carol");
    let mut h = Host::new("host-1");
    let agent = enrol(&s, &admin, &h, None);
    register(&s, &admin, "vm-a", "host-1", POLICY);

    // Webhooks: an admin adds one; bad ones and viewers are refused.
    let (hook_url, hits) = webhook_receiver(1);
    let (st, w) = post_to(
        &admin,
        &s.url,
        "/v1/webhooks",
        serde_json::json!({ "name": "ops", "url": hook_url }),
    );
    assert_eq!(st, 201, "{w}");
    for (name, url) in [
        ("ops", hook_url.as_str()),
        ("x y", hook_url.as_str()),
        ("ftp", "ftp://h/x"),
        ("rel", "/x"),
    ] {
        let (st, e) = post_to(
            &admin,
            &s.url,
            "/v1/webhooks",
            serde_json::json!({ "name": name, "url": url }),
        );
        assert!(
            matches!(
                (st, e["code"].as_str().unwrap()),
                (409, "conflict") | (400, "bad_webhook")
            ),
            "{name}: {st} {e}"
        );
    }
    let (st, _) = post_to(
        &viewer,
        &s.url,
        "/v1/webhooks",
        serde_json::json!({ "name": "v", "url": hook_url }),
    );
    assert_eq!(st, 403);

    // The event stream, followed from the start with the admin's client.
    let follower = vmseal_client::Client::new(
        &s.url,
        &ca,
        &std::fs::read(s.dir.path().join("admin.pem")).unwrap(),
        &std::fs::read(s.dir.path().join("admin.key")).unwrap(),
    )
    .unwrap();
    let (etx, events) = std::sync::mpsc::channel::<Alert>();
    std::thread::spawn(move || {
        let _ = follower.follow_alerts(Some(0), |a| etx.send(a).is_ok());
    });

    let submit = |h: &mut Host| {
        let (st, a) = submit(&s, &agent, "vm-a", h.evidence("vm-a", None));
        assert_eq!(st, 200, "{a}");
        a
    };
    // Not baselined yet (score 50 < 70): no alert. Then the baseline, and a clean snapshot.
    assert_eq!(submit(&mut h)["score"], 50);
    let leaves: Vec<serde_json::Value> = h
        .regions
        .iter()
        .map(|(n, _, _, l)| serde_json::json!({ "name": n, "leaves": hex::encode(l.concat()) }))
        .collect();
    let (st, _) = post_to(
        &admin,
        &s.url,
        "/v1/vms/vm-a/baselines",
        serde_json::json!({ "seq": 0, "regions": leaves }),
    );
    assert_eq!(st, 201);
    h.baseline = Some(h.regions.iter().map(|r| r.3.clone()).collect());
    assert_eq!(submit(&mut h)["score"], 100);
    assert!(hits.try_recv().is_err(), "nothing to deliver yet");

    // The kernel text is patched: one alert, to the stream and the webhook.
    h.regions[0].3[3] = ALG.leaf(b"rootkit");
    assert_eq!(submit(&mut h)["score"], 0);
    let streamed = events
        .recv_timeout(std::time::Duration::from_secs(10))
        .unwrap();
    assert_eq!(
        (streamed.kind.as_str(), streamed.score, streamed.seq),
        ("below_threshold", Some(0), Some(2))
    );
    assert!(
        streamed
            .message
            .contains("changed: kernel-text (code critical, 1 page(s) changed)"),
        "{}",
        streamed.message
    );
    // The receiver answered 503 first: the verifier retries (after 5 s) until it gets a 2xx.
    let (first, body1) = hits
        .recv_timeout(std::time::Duration::from_secs(10))
        .unwrap();
    assert_eq!(first, 503);
    let (second, body2) = hits
        .recv_timeout(std::time::Duration::from_secs(15))
        .unwrap();
    assert_eq!(second, 200);
    let now = OffsetDateTime::now_utc();
    let d1 = verify_alert(&body1, &ca, "ops", 300, now).unwrap();
    let d2 = verify_alert(&body2, &ca, "ops", 300, now).unwrap();
    assert_eq!((d1.attempt, d2.attempt), (1, 2));
    assert_eq!(d1.jti, d2.jti, "the same delivery id on every retry");
    assert_eq!(d2.alert, streamed);
    // What a receiver must refuse: another webhook's delivery, a forged body, an EAR, another CA.
    assert!(matches!(
        verify_alert(&body2, &ca, "pager", 300, now),
        Err(EarError::Invalid(_))
    ));
    let mut forged: Vec<String> = body2.split('.').map(str::to_owned).collect();
    let mut p = forged[1].clone().into_bytes();
    p[12] = if p[12] == b'A' { b'B' } else { b'A' };
    forged[1] = String::from_utf8(p).unwrap();
    assert!(verify_alert(&forged.join("."), &ca, "ops", 300, now).is_err());
    let foreign = tempfile::tempdir().unwrap();
    Ca::init(foreign.path(), &[]).unwrap();
    assert!(matches!(
        verify_alert(
            &body2,
            &std::fs::read(foreign.path().join("ca.pem")).unwrap(),
            "ops",
            300,
            now
        ),
        Err(EarError::Certificate(_))
    ));
    assert!(
        verify_alert(&body2, &ca, "ops", 300, now + Duration::hours(1)).is_err(),
        "stale"
    );
    // The delivery is recorded as made, after two attempts.
    let id = streamed.alert_id;
    let mut shown = serde_json::Value::Null;
    for _ in 0..50 {
        shown = json(
            admin
                .get(format!("{}/v1/alerts/{id}", s.url))
                .send()
                .unwrap(),
        )
        .1;
        if !shown["deliveries"][0]["delivered_at"].is_null() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(shown["deliveries"][0]["attempts"], 2, "{shown}");
    assert!(shown["deliveries"][0]["delivered_at"].is_i64(), "{shown}");

    // Viewers read; only admins acknowledge.
    let (st, l) = json(
        viewer
            .get(format!("{}/v1/alerts?state=open", s.url))
            .send()
            .unwrap(),
    );
    assert_eq!((st, l["alerts"].as_array().unwrap().len()), (200, 1));
    let (st, e) = json(
        viewer
            .get(format!("{}/v1/alerts?state=bogus", s.url))
            .send()
            .unwrap(),
    );
    assert_eq!((st, e["code"].as_str().unwrap()), (400, "bad_query"));
    assert_eq!(
        post_to(&viewer, &s.url, &format!("/v1/alerts/{id}/ack"), ()).0,
        403
    );
    assert_eq!(post_to(&agent, &s.url, "/v1/alerts/1/ack", ()).0, 403);
    let (st, k) = post_to(&admin, &s.url, &format!("/v1/alerts/{id}/ack"), ());
    assert_eq!(
        (st, k["state"].as_str(), k["acked_by"].as_str()),
        (200, Some("acknowledged"), Some("admin"))
    );
    assert_eq!(post_to(&admin, &s.url, "/v1/alerts/x/ack", ()).0, 400);
    assert_eq!(post_to(&admin, &s.url, "/v1/alerts/99999/ack", ()).0, 404);

    // Still compromised: no second alert. Repaired: the alert is resolved.
    submit(&mut h);
    h.regions[0].3[3] = h.baseline.as_ref().unwrap()[0][3];
    assert_eq!(submit(&mut h)["score"], 100);
    let (_, a) = json(
        admin
            .get(format!("{}/v1/alerts/{id}", s.url))
            .send()
            .unwrap(),
    );
    assert_eq!(a["alert"]["state"], "resolved");

    // Silenced: recorded, but neither delivered nor streamed.
    let (st, sil) = post_to(
        &admin,
        &s.url,
        "/v1/silences",
        serde_json::json!({ "vm_id": "vm-a", "duration_s": 3600, "reason": "patching" }),
    );
    assert_eq!(st, 201, "{sil}");
    for bad in [
        serde_json::json!({ "vm_id": "vm-a", "duration_s": 0, "reason": "x" }),
        serde_json::json!({ "vm_id": "vm-a", "duration_s": 60, "reason": " " }),
    ] {
        assert_eq!(post_to(&admin, &s.url, "/v1/silences", bad).0, 400);
    }
    h.regions[0].3[4] = ALG.leaf(b"patch");
    assert_eq!(submit(&mut h)["score"], 0);
    let (_, l) = json(
        admin
            .get(format!("{}/v1/alerts?vm=vm-a&limit=1", s.url))
            .send()
            .unwrap(),
    );
    assert_eq!(
        (
            l["alerts"][0]["silenced"].as_bool(),
            l["alerts"][0]["kind"].as_str()
        ),
        (Some(true), Some("below_threshold"))
    );
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(
        hits.try_recv().is_err(),
        "a silenced alert is not delivered"
    );
    assert!(events.try_recv().is_err(), "nor streamed");

    let (_, m) = (
        200,
        admin
            .get(format!("{}/metrics", s.url))
            .send()
            .unwrap()
            .text()
            .unwrap(),
    );
    assert!(
        m.contains("vmseal_alerts_raised_total{kind=\"below_threshold\"} 2"),
        "{m}"
    );
    assert!(
        m.contains("vmseal_webhook_deliveries_total{outcome=\"delivered\"} 1"),
        "{m}"
    );
}

/// `/openapi.json` validates with an independent OpenAPI 3.1 validator (openapi-spec-validator,
/// from PyPI), and the document the service serves is the one validated.
#[test]
fn the_openapi_document_validates_with_an_independent_validator() {
    let python = vmseal_testkit::python::with_packages(&["openapi-spec-validator==0.7.*"])
        .expect("a Python with openapi-spec-validator");
    let doc = serde_json::to_string_pretty(&vmseal_verifier::api::openapi()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, &doc).unwrap();
    let o = std::process::Command::new(&python)
        .args(["-m", "openapi_spec_validator", "--errors", "all"])
        .arg(&file)
        .output()
        .unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success() && out.contains("OK"), "{out}");
    // Query parameters are declared in the query, not the path.
    let v: serde_json::Value = serde_json::from_str(&doc).unwrap();
    for p in ["/v1/alerts", "/v1/alerts/stream"] {
        for param in v["paths"][p]["get"]["parameters"].as_array().unwrap() {
            assert_eq!(param["in"], "query", "{p}: {param}");
        }
    }
}

/// A client generated from the served `/openapi.json` by a standard generator
/// (openapi-python-client, from PyPI) makes real calls over mutual TLS: reads, a change, a
/// refusal parsed as the documented error body.
#[test]
fn a_client_generated_from_the_openapi_document_makes_real_calls() {
    let python = vmseal_testkit::python::with_packages(&["openapi-python-client==0.29.*"])
        .expect("a Python with openapi-python-client");
    let s = start();
    let admin = admin(&s);
    let h = Host::new("host-1");
    let agent = enrol(&s, &admin, &h, None);
    register(&s, &admin, "vm-a", "host-1", POLICY);
    let mut h = h;
    let (st, a) = submit(&s, &agent, "vm-a", h.evidence("vm-a", None));
    assert_eq!(st, 200, "{a}");
    let (st, doc) = json(admin.get(format!("{}/openapi.json", s.url)).send().unwrap());
    assert_eq!(st, 200);
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("openapi.json"), doc.to_string()).unwrap();
    let generator = python.with_file_name("openapi-python-client");
    let o = std::process::Command::new(&generator)
        .args([
            "generate",
            "--path",
            "openapi.json",
            "--meta",
            "none",
            "--output-path",
            "vmseal_api",
        ])
        .current_dir(work.path())
        .output()
        .unwrap();
    assert!(
        work.path().join("vmseal_api/client.py").exists(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let dir = s.dir.path().display().to_string();
    let script = format!(
        r#"
import json, ssl, sys
sys.path.insert(0, {work:?})
from vmseal_api import Client
from vmseal_api.api.operations import readyz, verify_audit, create_checkpoint
from vmseal_api.api.vms import list_vms, register_vm
from vmseal_api.api.evidence import get_chain, list_appraisals
from vmseal_api.models import NewVm, ApiErrorBody
ctx = ssl.create_default_context(cafile={dir:?} + "/ca.pem")
ctx.load_cert_chain({dir:?} + "/admin.pem", {dir:?} + "/admin.key")
c = Client(base_url={url:?}, verify_ssl=ctx, headers={{"x-vmseal-request": "1"}})
out = {{}}
out["ready"] = readyz.sync_detailed(client=c).status_code
out["vms"] = json.loads(list_vms.sync_detailed(client=c).content)
out["chain"] = json.loads(get_chain.sync_detailed(client=c, vm="vm-a").content)
out["appraisals"] = json.loads(list_appraisals.sync_detailed(client=c, vm="vm-a").content)
out["audit"] = json.loads(verify_audit.sync_detailed(client=c).content)
out["checkpoint"] = json.loads(create_checkpoint.sync_detailed(client=c).content)
r = register_vm.sync_detailed(client=c, body=NewVm(vm_id="vm-b", host_id="host-1", policy=None))
out["registered"] = r.status_code
r = register_vm.sync_detailed(client=c, body=NewVm(vm_id="vm-c", host_id="nope"))
err = ApiErrorBody.from_dict(json.loads(r.content))
out["refused"] = [r.status_code, err.code]
print(json.dumps(out))
"#,
        work = work.path().display().to_string(),
        url = s.url,
    );
    let v = vmseal_testkit::python::run_json(&python, &script).unwrap();
    assert_eq!(v["ready"], 200, "{v}");
    assert_eq!(v["vms"]["vms"][0]["vm_id"], "vm-a", "{v}");
    assert_eq!(v["chain"]["next_seq"], 1, "{v}");
    assert_eq!(v["appraisals"]["appraisals"][0]["seq"], 0, "{v}");
    assert_eq!(v["audit"]["ok"], true, "{v}");
    assert!(v["checkpoint"]["token"].is_string(), "{v}");
    assert_eq!(v["registered"], 201, "{v}");
    assert_eq!(v["refused"], serde_json::json!([404, "not_found"]), "{v}");
}

/// The EAR key's public key as a JWK (EC P-256), from `ear.pem`: what a relying party using
/// another library configures.
fn ear_jwk(s: &Server) -> String {
    use base64::Engine as _;
    let pem = std::fs::read(s.dir.path().join("ear.pem")).unwrap();
    let der = pem::parse_many(&pem).unwrap().remove(0).into_contents();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let point = &cert.public_key().subject_public_key.data;
    assert_eq!(
        (point.len(), point[0]),
        (65, 4),
        "an uncompressed P-256 point"
    );
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    serde_json::json!({ "kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..]) })
        .to_string()
}

/// Veraison's `ear` crate (0.6, the draft as it stands) verifies the verifier's results with the
/// EAR key alone, validates them (profile, verifier id, submods, status), reads the nonce it
/// echoes and vmseal's own claims, and refuses an altered result.
#[test]
fn veraisons_ear_crate_verifies_and_validates_the_results() {
    let s = start();
    let admin = admin(&s);
    let mut h = Host::new("host-1");
    let agent = enrol(&s, &admin, &h, None);
    register(&s, &admin, "vm-a", "host-1", POLICY);
    let (_, n) = json(
        agent
            .post(format!("{}/v1/vms/vm-a/nonce", s.url))
            .send()
            .unwrap(),
    );
    let nonce = hex::decode(n["nonce"].as_str().unwrap()).unwrap();
    let (st, a) = submit(&s, &agent, "vm-a", h.evidence("vm-a", Some(nonce.clone())));
    assert_eq!(st, 200, "{a}");
    let token = a["ear"].as_str().unwrap();
    let jwk = ear_jwk(&s);
    let ear = ear::Ear::from_jwt_jwk(token, ear::Algorithm::ES256, jwk.as_bytes())
        .expect("the ear crate verifies the result");
    ear.validate().expect("and validates it");
    assert_eq!(ear.profile, ear::EAR_PROFILE);
    assert_eq!(ear.vid.developer, "vmseal");
    let sub = &ear.submods["vm-a"];
    assert_eq!(
        serde_json::to_value(sub.status).unwrap(),
        a["tier"],
        "{:?}",
        sub.status
    );
    assert_eq!(
        serde_json::to_value(&ear.nonce).unwrap(),
        serde_json::Value::String(base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            &nonce
        )),
    );
    // An altered result (one character of the payload) is refused.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut p = parts[1].clone().into_bytes();
    p[10] = if p[10] == b'A' { b'B' } else { b'A' };
    parts[1] = String::from_utf8(p).unwrap();
    assert!(
        ear::Ear::from_jwt_jwk(&parts.join("."), ear::Algorithm::ES256, jwk.as_bytes()).is_err()
    );
    // Another key's result is refused.
    let other = start();
    assert!(
        ear::Ear::from_jwt_jwk(token, ear::Algorithm::ES256, ear_jwk(&other).as_bytes()).is_err()
    );
}

/// What a lesser certificate, or a host's own certificate without its hardware, sends to this
/// round's endpoints is refused: another host's agent may neither renew, read a chain nor remove a
/// VM; a viewer may not remove one; a renewal that proves no hardware is refused, audited and
/// alerted on the host's VMs; malformed renewal bodies are named.
#[test]
fn lesser_certificates_cannot_renew_read_chains_or_remove_vms() {
    use base64::Engine as _;
    let s = start();
    let admin = admin(&s);
    let h1 = Host::new("host-1");
    let agent1 = enrol(&s, &admin, &h1, None);
    let h2 = Host::new("host-2");
    let agent2 = enrol(&s, &admin, &h2, None);
    register(&s, &admin, "vm-a", "host-1", POLICY);
    let viewer = viewer(&s, "auditor");
    // Another host's agent.
    let (st, _) = post_to(
        &agent2,
        &s.url,
        "/v1/hosts/host-1/renewal-challenges",
        serde_json::json!({}),
    );
    assert_eq!(st, 403);
    let (st, _) = json(
        agent2
            .get(format!("{}/v1/vms/vm-a/chain", s.url))
            .send()
            .unwrap(),
    );
    assert_eq!(st, 403);
    for c in [&agent1, &agent2, &viewer] {
        let r = c
            .delete(format!("{}/v1/vms/vm-a", s.url))
            .header("x-vmseal-request", "1")
            .send()
            .unwrap();
        assert_eq!(r.status(), 403, "only an admin removes a VM");
    }
    // An agent renews its own certificate only through the proof of hardware, not here.
    let (st, _) = post_to(
        &agent1,
        &s.url,
        "/v1/certificates/renewals",
        serde_json::json!({ "csr_pem": "x" }),
    );
    assert_eq!(st, 403);
    // Malformed renewal bodies.
    let (_, c) = post_to(
        &agent1,
        &s.url,
        "/v1/hosts/host-1/renewal-challenges",
        serde_json::json!({}),
    );
    let nonce = hex::decode(c["nonce"].as_str().unwrap()).unwrap();
    let (csr_pem, _) = vmseal_client::new_key_and_request().unwrap();
    let code = |r: (u16, serde_json::Value)| (r.0, r.1["code"].as_str().unwrap_or("").to_owned());
    let renew = |fresh: String, csr: &str| {
        code(post_to(
            &agent1,
            &s.url,
            "/v1/hosts/host-1/renewals",
            serde_json::json!({ "fresh": fresh, "csr_pem": csr }),
        ))
    };
    assert_eq!(
        renew("AA==".into(), "not a request"),
        (400, "bad_csr".into())
    );
    assert_eq!(renew("%%%".into(), &csr_pem), (400, "bad_fresh".into()));
    assert_eq!(renew("AA==".into(), &csr_pem), (400, "bad_fresh".into()));
    // Well formed, but this host enrolled without a hardware anchor: nothing can vouch for the
    // renewal. Refused, audited, and alerted on its VM.
    let fresh = vmseal_sealer::anchor::FreshAnchors {
        nonce,
        tpm: None,
        snp: None,
    };
    let b64 =
        base64::engine::general_purpose::STANDARD.encode(vmseal_sealer::anchor::encode(&fresh));
    assert_eq!(renew(b64, &csr_pem), (422, "renewal_refused".into()));
    let (_, alerts) = json(
        admin
            .get(format!("{}/v1/alerts?vm=vm-a", s.url))
            .send()
            .unwrap(),
    );
    assert!(
        alerts["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["code"] == "renewal_refused"),
        "{alerts}"
    );
    // The host's certificate still works: a refused renewal changes nothing.
    let (st, _) = json(
        agent1
            .get(format!("{}/v1/vms/vm-a/chain", s.url))
            .send()
            .unwrap(),
    );
    assert_eq!(st, 200);
}

/// A SQLite verifier keeps the VM records it read (`store::records`); none of them outlives a
/// change: after an appraisal has its VM's record kept, a new policy assigned, a baseline
/// promoted, a threshold and a chain reset each take effect at the very next evidence.
#[test]
fn a_kept_vm_record_never_outlives_a_change() {
    let s = start();
    let admin = admin(&s);
    let mut h = Host::new("host-1");
    let agent = enrol(&s, &admin, &h, None);
    register(&s, &admin, "vm-a", "host-1", POLICY);
    let (st, a) = submit(&s, &agent, "vm-a", h.evidence("vm-a", None));
    assert_eq!(
        (st, a["baseline_version"].clone()),
        (200, serde_json::Value::Null),
        "{a}"
    );
    // A baseline promoted: the next appraisal is against it.
    promote(&s, "vm-a", &mut h, 0);
    let (st, a) = submit(&s, &agent, "vm-a", h.evidence("vm-a", None));
    assert_eq!((st, a["baseline_version"].as_u64()), (200, Some(1)), "{a}");
    // A threshold of 0: even a patched kernel (score 0) is no longer below it.
    let (st, e) = post_to(
        &admin,
        &s.url,
        "/v1/vms/vm-a/threshold",
        serde_json::json!({ "threshold": 0 }),
    );
    assert_eq!(st, 200, "{e}");
    h.regions[0].3[0] = ALG.leaf(b"a hook");
    let (st, a) = submit(&s, &agent, "vm-a", h.evidence("vm-a", None));
    assert_eq!(
        (st, a["score"].as_u64(), a["alert"].as_bool()),
        (200, Some(0), Some(false)),
        "{a}"
    );
    // Another policy assigned: evidence still made under the old one is refused.
    let other = POLICY.replace("name = \"it\"", "name = \"it-2\"");
    let (st, e) = post_to(
        &admin,
        &s.url,
        "/v1/vms/vm-a/policy",
        serde_json::json!({ "policy": other }),
    );
    assert_eq!(st, 200, "{e}");
    let (st, e) = submit(&s, &agent, "vm-a", h.evidence("vm-a", None));
    assert_eq!(
        (st, e["code"].as_str()),
        (422, Some("policy_mismatch")),
        "{e}"
    );
    // The chain restarted at 7: evidence continuing the old chain is refused, #7 expected.
    let (st, e) = post_to(
        &admin,
        &s.url,
        "/v1/vms/vm-a/reset-chain",
        serde_json::json!({ "at": 7 }),
    );
    assert_eq!(st, 200, "{e}");
    let (st, head) = json(
        agent
            .get(format!("{}/v1/vms/vm-a/chain", s.url))
            .send()
            .unwrap(),
    );
    assert_eq!((st, head["next_seq"].as_u64()), (200, Some(7)), "{head}");
}

/// The admin sets a VM's capture schedule and gets it back as it stands; a viewer cannot, and a
/// schedule out of range is refused by code.
#[test]
fn a_schedule_is_set_by_an_admin_and_answered_as_it_stands() {
    let s = start();
    let admin = admin(&s);
    let h = Host::new("host-1");
    enrol(&s, &admin, &h, None);
    register(&s, &admin, "vm-a", "host-1", POLICY);
    let (st, a) = post_to(
        &admin,
        &s.url,
        "/v1/vms/vm-a/schedule",
        serde_json::json!({ "expect_every_s": 60 }),
    );
    assert_eq!(st, 200, "{a}");
    let set: vmseal_client::ScheduleSet = serde_json::from_value(a).unwrap();
    assert_eq!((set.vm_id.as_str(), set.expect_every_s), ("vm-a", Some(60)));
    let (st, e) = post_to(
        &admin,
        &s.url,
        "/v1/vms/vm-a/schedule",
        serde_json::json!({ "expect_every_s": 0 }),
    );
    assert_eq!((st, e["code"].as_str()), (400, Some("bad_schedule")), "{e}");
    let (st, _) = post_to(
        &viewer(&s, "carol"),
        &s.url,
        "/v1/vms/vm-a/schedule",
        serde_json::json!({ "expect_every_s": null }),
    );
    assert_eq!(st, 403);
}
