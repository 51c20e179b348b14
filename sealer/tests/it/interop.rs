//! Evidence read by independent implementations: Python's `cbor2` (CBOR) and `pycose` (COSE),
//! installed from PyPI, decode real evidence the sealer made and find the EAT/CWT registered
//! claims under their integer keys, vmseal's own under text keys.

use time::{Duration, OffsetDateTime};
use vmseal_sealer::claims::example;
use vmseal_sealer::evidence::Sealer;
use vmseal_sealer::keys::IntermediateKey;
use vmseal_sealer::x509::{IntermediateProfile, issue_intermediate};

#[test]
fn independent_cbor_and_cose_decoders_find_the_registered_claims() {
    let python = vmseal_testkit::python::with_packages(&["cbor2==5.*", "pycose==1.*"])
        .expect("a Python with cbor2 and pycose");
    let key = IntermediateKey::generate().unwrap();
    let now = OffsetDateTime::now_utc();
    let der = issue_intermediate(
        &key,
        &IntermediateProfile {
            host_id: "host-1",
            tpm: None,
            snp: None,
            validity: Duration::days(1),
        },
        now,
    )
    .unwrap();
    let sealer = Sealer::new(key, der).unwrap();
    let claims = example::claims("vm-interop", 7);
    let ev = sealer.seal(&claims, now).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ev.cose");
    std::fs::write(&file, &ev).unwrap();
    let script = format!(
        r#"
import json, cbor2
raw = open({file:?}, "rb").read()
cose = cbor2.loads(raw)
protected, unprotected, payload, signature = cose.value
hdr = cbor2.loads(protected)
claims = cbor2.loads(payload)
try:
    from pycose.messages import Sign1Message
    Sign1Message.decode(raw)
    pycose = "decoded"
except Exception as e:
    pycose = str(e)
out = {{
    "tag": cose.tag,
    "alg": hdr.get(1),
    "int_keys": sorted(k for k in claims if isinstance(k, int)),
    "iat": claims.get(6),
    "nonce": claims.get(10).hex() if claims.get(10) else None,
    "profile": claims.get(265),
    "text_keys": sorted(k for k in claims if isinstance(k, str)),
    "vm_id": claims.get("vm_id"),
    "signature_len": len(signature),
    "pycose": pycose,
}}
print(json.dumps(out))
"#,
        file = file.display().to_string()
    );
    let v = vmseal_testkit::python::run_json(&python, &script).unwrap();
    assert_eq!(v["tag"], 18, "COSE_Sign1 tag: {v}");
    // ML-DSA-65 (COSE algorithm -49, draft-ietf-cose-dilithium), a 3,309-byte signature.
    assert_eq!(
        (v["alg"].as_i64(), v["signature_len"].as_u64()),
        (Some(-49), Some(3309)),
        "{v}"
    );
    // pycose 1.1 parses COSE_Sign1 but knows no ML-DSA algorithm yet: its refusal names that, and
    // nothing else of the evidence.
    let pycose = v["pycose"].as_str().unwrap();
    assert!(
        pycose == "decoded" || pycose.contains("Unknown COSE attribute"),
        "{pycose}"
    );
    assert_eq!(v["int_keys"], serde_json::json!([6, 10, 265]), "{v}");
    assert_eq!(v["iat"], claims.iat, "{v}");
    assert_eq!(
        v["nonce"],
        hex::encode(claims.nonce.as_ref().unwrap()),
        "{v}"
    );
    assert_eq!(v["profile"], vmseal_sealer::claims::PROFILE, "{v}");
    assert_eq!(v["vm_id"], "vm-interop", "{v}");
    for private in [
        "vm_id",
        "host_id",
        "seq",
        "regions",
        "memory_root",
        "policy",
    ] {
        assert!(
            v["text_keys"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k == private),
            "{private}: {v}"
        );
    }
    for registered in ["iat", "nonce", "eat_profile"] {
        assert!(
            !v["text_keys"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k == registered),
            "{registered}: {v}"
        );
    }
}
