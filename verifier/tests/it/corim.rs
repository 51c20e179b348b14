//! Golden baselines as signed CoRIM: exported byte-stable, imported only from trusted signers and
//! only where they fit what the verifier decided for the VM, and appraised against once imported.

use vmseal_client::corim::{CorimSigner as _, Ed25519CorimKey, TrustedKey};
use vmseal_sealer::verify::{AnchorRequirement, TrustConfig};

use crate::api::{
    ALG, Host, POLICY, admin, enrol, json, promote, register, start_trusting, submit, viewer,
};

fn key(name: &str) -> Ed25519CorimKey {
    Ed25519CorimKey::from_pem(Ed25519CorimKey::generate_pem().unwrap().as_bytes(), name).unwrap()
}

#[test]
fn golden_baselines_travel_as_signed_corim() {
    // A kernel build's reference-value key, which the service is configured to trust, and one
    // it is not.
    let (kernel, stranger) = (key("kernel build"), key("stranger"));
    let s = start_trusting(
        TrustConfig {
            require: AnchorRequirement::from_name("none").unwrap(),
            ..TrustConfig::default()
        },
        vec![kernel.trusted("kernel-build.pem")],
    );
    let admin = admin(&s);
    let mut h = Host::new("host-1");
    let agent = enrol(&s, &admin, &h, None);
    for vm in ["vm-a", "vm-b"] {
        register(&s, &admin, vm, "host-1", POLICY);
    }
    let other_policy = POLICY.replace("version = 1", "version = 2");
    register(&s, &admin, "vm-c", "host-1", &other_policy);
    let submit = |vm: &str, ev: Vec<u8>| submit(&s, &agent, vm, ev);
    // vm-a's snapshot carries the guest kernel's objects: the golden kernel state travels too.
    let kernel_state = vmseal_sealer::claims::kernel::example::kernel();
    h.kernel = Some(kernel_state.clone());
    let (st, a) = submit("vm-a", h.evidence("vm-a", None));
    assert_eq!(st, 200, "{a}");
    // Promoting it needs its kernel objects, and exactly the ones signed.
    let leaves: Vec<serde_json::Value> = h
        .regions
        .iter()
        .map(|(n, _, _, l)| serde_json::json!({ "name": n, "leaves": hex::encode(l.concat()) }))
        .collect();
    let try_promote = |kernel: Option<String>| {
        crate::api::post_to(
            &admin,
            &s.url,
            "/v1/vms/vm-a/baselines",
            serde_json::json!({ "seq": 0, "regions": leaves, "kernel_objects": kernel }),
        )
    };
    let (st, e) = try_promote(None);
    assert_eq!(
        (st, &e["code"]),
        (400, &"baseline_incomplete".into()),
        "{e}"
    );
    let mut other = kernel_state.clone();
    other.tasks[2].listed = false;
    let (st, e) = try_promote(Some(hex::encode(other.encode())));
    assert_eq!((st, &e["code"]), (422, &"baseline_mismatch".into()), "{e}");
    promote(&s, "vm-a", &mut h, 0);

    // Export: the same version always gives the same bytes, signed by the verifier's key.
    let get = |c: &reqwest::blocking::Client, path: &str| {
        let r = c.get(format!("{}{path}", s.url)).send().unwrap();
        (
            r.status().as_u16(),
            r.headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned()),
            r.bytes().unwrap().to_vec(),
        )
    };
    let (st, ct, exported) = get(&admin, "/v1/vms/vm-a/baselines/1/corim");
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&exported));
    assert_eq!(ct.as_deref(), Some("application/rim+cbor"));
    assert_eq!(get(&admin, "/v1/vms/vm-a/baselines/1/corim").2, exported);
    let (st, _, pem) = get(&admin, "/v1/corim/signer");
    assert_eq!(st, 200);
    let own = TrustedKey::from_pem("verifier", &pem).unwrap();
    let o = vmseal_client::corim::open(
        &exported,
        &[own],
        time::OffsetDateTime::now_utc().unix_timestamp(),
    )
    .unwrap();
    assert_eq!(o.values.corim_id, "vmseal:vm-a:baseline:1");
    assert_eq!(o.values.policy_text.as_deref(), Some(POLICY));
    assert_eq!(o.values.kernel.as_ref(), Some(&kernel_state));
    for (name, _, _, leaves) in &h.regions {
        let r = o.values.regions.iter().find(|r| r.name == *name).unwrap();
        assert_eq!(&r.leaves, leaves, "{name}: the page digests promoted");
    }

    // Import into vm-b: a new version whose export is the same document, byte for byte.
    let import = |c: &reqwest::blocking::Client, vm: &str, body: Vec<u8>| {
        json(
            c.post(format!("{}/v1/vms/{vm}/baselines/corim", s.url))
                .header("content-type", "application/rim+cbor")
                .body(body)
                .send()
                .unwrap(),
        )
    };
    let (st, r) = import(&admin, "vm-b", exported.clone());
    assert_eq!(st, 201, "{r}");
    assert_eq!(
        (r["version"].as_u64(), r["signer"].as_str()),
        (Some(1), Some("this verifier"))
    );
    assert_eq!(get(&admin, "/v1/vms/vm-b/baselines/1/corim").2, exported);
    // And vm-b is appraised against it: its memory as promoted is trusted, a patched code page is
    // not.
    (h.seq, h.prev) = (0, None);
    let (st, a) = submit("vm-b", h.evidence("vm-b", None));
    assert_eq!((st, a["score"].as_u64()), (200, Some(100)), "{a}");
    assert_eq!(
        (&a["kernel"]["golden"], &a["kernel"]["findings"]),
        (&true.into(), &serde_json::json!([])),
        "the golden kernel state came with the CoRIM: {a}"
    );
    h.regions[0].3[5] = ALG.leaf(b"patched");
    let (st, a) = submit("vm-b", h.evidence("vm-b", None));
    assert_eq!(st, 200, "{a}");
    assert_eq!(a["changes"][0]["region"], "kernel-text", "{a}");
    assert_eq!(a["changes"][0]["changed_pages"], 1, "{a}");
    assert!(a["score"].as_u64().unwrap() < 50, "{a}");

    // The kernel build's CoRIM (the configured signer) is taken; the versions say where each came
    // from.
    let mut rv = o.values.clone();
    rv.corim_id = "kernel-6.12.1-reference".into();
    let (st, r) = import(
        &admin,
        "vm-b",
        vmseal_client::corim::seal(&rv, &kernel).unwrap(),
    );
    assert_eq!(
        (st, r["signer"].as_str()),
        (201, Some("kernel-build.pem")),
        "{r}"
    );
    let (st, l) = json(
        admin
            .get(format!("{}/v1/vms/vm-b/baselines", s.url))
            .send()
            .unwrap(),
    );
    assert_eq!(st, 200, "{l}");
    let signers: Vec<String> = l["baselines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            b["corim_signer"]
                .as_str()
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(signers, ["this", "kernel-build.pem"], "{l}");
    assert!(l["baselines"][0]["source_seq"].is_null(), "{l}");

    // Refused, and nothing stored: a stranger's signature, an altered document, junk, too much,
    // another policy's values, a non-admin caller.
    let refused = |c: &reqwest::blocking::Client, vm: &str, body: Vec<u8>, want: (u16, &str)| {
        let (st, e) = import(c, vm, body);
        assert_eq!((st, e["code"].as_str().unwrap_or("")), want, "{e}");
        e
    };
    let e = refused(
        &admin,
        "vm-b",
        vmseal_client::corim::seal(&rv, &stranger).unwrap(),
        (422, "corim_untrusted"),
    );
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains(&hex::encode(stranger.kid())),
        "{e}"
    );
    assert!(
        e["message"].as_str().unwrap().contains("corim_signers"),
        "{e}"
    );
    let leaf = h.regions[1].3[0];
    let at = exported.windows(32).position(|w| w == leaf).unwrap();
    let mut altered = exported.clone();
    altered[at] ^= 1;
    refused(&admin, "vm-b", altered, (422, "corim_untrusted"));
    refused(&admin, "vm-b", b"not a corim".to_vec(), (400, "bad_corim"));
    refused(&admin, "vm-b", vec![0; (16 << 20) + 1], (413, "too_large"));
    let e = refused(&admin, "vm-c", exported.clone(), (422, "policy_mismatch"));
    assert!(
        e["message"].as_str().unwrap().contains("assigned policy"),
        "{e}"
    );
    refused(&agent, "vm-b", exported.clone(), (403, "forbidden"));
    let viewer = viewer(&s, "auditor");
    refused(&viewer, "vm-b", exported.clone(), (403, "forbidden"));
    // A viewer may read and export.
    assert_eq!(get(&viewer, "/v1/vms/vm-b/baselines/1/corim").2, exported);
    // Another host's agent may do neither.
    let other = enrol(&s, &admin, &Host::new("host-2"), None);
    assert_eq!(get(&other, "/v1/vms/vm-b/baselines/1/corim").0, 403);
    assert_eq!(get(&other, "/v1/vms/vm-b/baselines").0, 403);
    let (_, l2) = json(
        admin
            .get(format!("{}/v1/vms/vm-b/baselines", s.url))
            .send()
            .unwrap(),
    );
    assert_eq!(l2, l, "refusals stored nothing");
    let (st, _, _) = get(&admin, "/v1/vms/vm-b/baselines/9/corim");
    assert_eq!(st, 404);
    // Each import is in the audit log, with its signer and the document's SHA-256, committed with
    // the baseline it made.
    let (st, log) = json(
        admin
            .get(format!("{}/v1/audit/export", s.url))
            .send()
            .unwrap(),
    );
    assert_eq!(st, 200, "{log}");
    let imports: Vec<serde_json::Value> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "import_baseline")
        .map(|e| serde_json::from_str(e["detail"].as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(imports.len(), 2, "{log}");
    let sha = hex::encode(vmseal_sealer::merkle::HashAlg::Sha256.hash(&[&exported]));
    assert_eq!(imports[0]["corim_sha256"], sha, "{imports:?}");
    assert!(
        imports[1]["signer"]
            .as_str()
            .unwrap()
            .starts_with("kernel-build.pem"),
        "{imports:?}"
    );
}

/// An exported baseline read by implementations that are not vmseal's: Python's cbor2 finds the
/// CoRIM structure (tags 18, 501, 506, the profile URI, the digests) and pycose verifies the
/// EdDSA signature with the public key of `GET /v1/corim/signer`, and refuses an altered copy.
#[test]
fn an_exported_corim_is_read_and_verified_by_cbor2_and_pycose() {
    let python = vmseal_testkit::python::with_packages(&["cbor2==5.*", "pycose==1.*"])
        .expect("a Python with cbor2 and pycose");
    let s = crate::api::start();
    let admin = admin(&s);
    let mut h = Host::new("host-1");
    let agent = enrol(&s, &admin, &h, None);
    register(&s, &admin, "vm-a", "host-1", POLICY);
    let ev = h.evidence("vm-a", None);
    let (st, a) = submit(&s, &agent, "vm-a", ev);
    assert_eq!(st, 200, "{a}");
    promote(&s, "vm-a", &mut h, 0);
    let bytes = |path: &str| {
        admin
            .get(format!("{}{path}", s.url))
            .send()
            .unwrap()
            .bytes()
            .unwrap()
            .to_vec()
    };
    let exported = bytes("/v1/vms/vm-a/baselines/1/corim");
    let pem = String::from_utf8(bytes("/v1/corim/signer")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("baseline.corim");
    std::fs::write(&file, &exported).unwrap();
    let mut altered = exported.clone();
    let n = altered.len();
    altered[n - 40] ^= 1; // inside the signature
    let altered_file = dir.path().join("altered.corim");
    std::fs::write(&altered_file, &altered).unwrap();
    let script = format!(
        r#"
import json, hashlib, cbor2
from cryptography.hazmat.primitives import serialization
from pycose.messages import Sign1Message
from pycose.keys import OKPKey
from pycose.keys.curves import Ed25519

pem = {pem:?}.encode()
pub = serialization.load_pem_public_key(pem)
raw_pub = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
spki = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
key = OKPKey(crv=Ed25519, x=raw_pub)

def verify(path):
    msg = Sign1Message.decode(open(path, "rb").read())
    msg.key = key
    try:
        return msg.verify_signature()
    except Exception as e:
        return "refused: " + str(e)

raw = open({file:?}, "rb").read()
outer = cbor2.loads(raw)
protected, unprotected, payload, signature = outer.value
hdr = cbor2.loads(protected)
corim = cbor2.loads(payload)
comid_tag = corim.value[1][0]
comid = cbor2.loads(comid_tag.value)
env, measurements = comid[4][0][0]
regions = {{}}
policy = None
for m in measurements:
    name = m[0]
    alg, digest = m[1][2][0]
    if name == "vmseal:capture-policy":
        policy = {{"alg": alg, "digest": digest.hex(), "text": m[1].get(-5)}}
    else:
        regions[name] = {{"alg": alg, "root": digest.hex(), "pages": len(m[1][-1]) // 32,
                          "class": m[1][-2], "severity": m[1][-3]}}
print(json.dumps({{
    "outer_tag": outer.tag,
    "alg": hdr.get(1),
    "content_type": hdr.get(3),
    "kid_is_spki_sha256": hdr.get(4) == hashlib.sha256(spki).digest(),
    "corim_tag": corim.tag,
    "corim_id": corim.value[0],
    "profile_tag": corim.value[3].tag,
    "profile": corim.value[3].value,
    "comid_tag": comid_tag.tag,
    "tag_id": comid[1][0],
    "vendor": env[0][1],
    "model": env[0][2],
    "policy": policy,
    "regions": regions,
    "pycose": verify({file:?}),
    "pycose_altered": verify({altered:?}),
}}))
"#,
        file = file.display().to_string(),
        altered = altered_file.display().to_string(),
    );
    let v = vmseal_testkit::python::run_json(&python, &script).unwrap();
    assert_eq!(
        (
            v["outer_tag"].as_u64(),
            v["corim_tag"].as_u64(),
            v["comid_tag"].as_u64(),
            v["profile_tag"].as_u64()
        ),
        (Some(18), Some(501), Some(506), Some(32)),
        "{v}"
    );
    assert_eq!(
        (v["alg"].as_i64(), v["content_type"].as_str()),
        (Some(-8), Some("application/rim+cbor")),
        "{v}"
    );
    assert_eq!(v["kid_is_spki_sha256"], true, "{v}");
    assert_eq!(v["profile"], "tag:vmseal.dev,2026:corim/v1");
    assert_eq!(
        (v["vendor"].as_str(), v["model"].as_str()),
        (Some("vmseal"), Some("guest-memory"))
    );
    assert_eq!(v["corim_id"], "vmseal:vm-a:baseline:1");
    assert_eq!(v["policy"]["alg"], 1);
    assert_eq!(
        v["policy"]["digest"],
        hex::encode(crate::api::policy_digest())
    );
    assert_eq!(v["policy"]["text"], POLICY);
    for (name, class, severity, leaves) in &h.regions {
        let r = &v["regions"][name];
        let root = vmseal_sealer::merkle::MerkleTree::from_leaves(ALG, leaves.clone())
            .unwrap()
            .root();
        assert_eq!(r["alg"], 1, "{name}: sha-256 by its IANA id");
        assert_eq!(r["root"], hex::encode(root), "{name}");
        assert_eq!(r["pages"], leaves.len(), "{name}");
        assert_eq!(
            (r["class"].as_str(), r["severity"].as_str()),
            (Some(class.name()), Some(severity.name())),
            "{name}"
        );
    }
    assert_eq!(v["pycose"], true, "pycose verifies the signature: {v}");
    assert_ne!(
        v["pycose_altered"], true,
        "pycose refuses an altered signature: {v}"
    );
}
