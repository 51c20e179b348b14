//! End to end across binaries: `vmseal-host init` and `seal` on a real swtpm, then
//! `vmseal-certs inspect` and `verify` as a third party would run them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step is a failed test

use std::path::Path;
use std::process::{Command, Output};

use vmseal_testkit::Swtpm;
use vmseal_testkit::scenario::{
    Agent, Guest, Host, Verifier, appraisals, bin, count, json_stream, micro_vm_policy, ok,
    path_in, run, text, webhook_receiver,
};

#[test]
fn seal_then_verify_and_reject_a_tampered_copy() {
    let h = Host::builder().init();
    h.image(64);
    let o = ok(h.seal(
        "vm-a",
        "s0.cose",
        &[
            "--region",
            "text:code:critical:0:0x10000",
            "--region",
            "rest:data:low:0x10000:0x30000",
            "--json",
        ],
    ));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["seq"], 0);
    assert_eq!(j["pages"], 64);

    let ok = run(
        "vmseal-certs",
        &["verify", "--roots", &h.ek_ca(), &h.p("s0.cose")],
    );
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));

    // Second snapshot continues the chain.
    let o = h.seal("vm-a", "s1.cose", &["--json"]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["seq"], 1);
    let insp = run(
        "vmseal-certs",
        &["inspect", "--json", "--roots", &h.ek_ca(), &h.p("s1.cose")],
    );
    assert!(insp.status.success());
    let v: serde_json::Value = serde_json::from_slice(&insp.stdout).unwrap();
    let node = &v[0]["node"];
    assert_eq!(node["fields"]["seq"], 1);
    assert_eq!(
        node["fields"]["profile"],
        "tag:vmseal.dev,2026:snapshot-evidence/v2"
    );
    let s0 = std::fs::read(h.p("s0.cose")).unwrap();
    let prev = node["fields"]["prev"].as_str().unwrap();
    assert_eq!(prev.len(), 64, "prev names the first evidence");
    assert_ne!(prev, node["fields"]["sha256"].as_str().unwrap());
    let _ = s0;

    // Tampered: flip bytes across the file; every copy is refused with exit status 1.
    let bytes = std::fs::read(h.p("s0.cose")).unwrap();
    for pos in [5, bytes.len() / 3, bytes.len() / 2, bytes.len() - 10] {
        let mut b = bytes.clone();
        b[pos] ^= 0x01;
        std::fs::write(h.p("bad.cose"), &b).unwrap();
        let bad = run(
            "vmseal-certs",
            &["verify", "--roots", &h.ek_ca(), &h.p("bad.cose")],
        );
        assert_eq!(bad.status.code(), Some(1), "byte {pos}: {}", text(&bad));
        assert!(text(&bad).contains("broken link"), "{}", text(&bad));
    }

    // Without the EK CA the TPM anchor is not trusted.
    let untrusted = run("vmseal-certs", &["verify", &h.p("s0.cose")]);
    assert_eq!(untrusted.status.code(), Some(1));
    assert!(
        text(&untrusted).contains("EK certificate"),
        "{}",
        text(&untrusted)
    );
}

#[test]
fn insecure_stand_in_needs_allow_insecure() {
    let h = Host::builder().snp("insecure-soft").init();
    h.image(4);
    assert!(h.seal("vm-b", "s.cose", &[]).status.success());
    let refused = run(
        "vmseal-certs",
        &[
            "verify",
            "--require",
            "both",
            "--roots",
            &h.ek_ca(),
            &h.p("s.cose"),
        ],
    );
    assert_eq!(refused.status.code(), Some(1));
    assert!(text(&refused).contains("INSECURE"), "{}", text(&refused));
    let allowed = run(
        "vmseal-certs",
        &[
            "verify",
            "--require",
            "both",
            "--allow-insecure",
            "--roots",
            &h.ek_ca(),
            &h.p("s.cose"),
        ],
    );
    assert_eq!(allowed.status.code(), Some(0), "{}", text(&allowed));
    assert!(
        text(&allowed).contains("INSECURE"),
        "the acceptance is labelled: {}",
        text(&allowed)
    );
    let insp = run(
        "vmseal-certs",
        &[
            "inspect",
            "--allow-insecure",
            "--roots",
            &h.ek_ca(),
            &h.p("s.cose"),
        ],
    );
    assert!(text(&insp).contains("[INSECURE]"), "{}", text(&insp));
}

#[test]
fn bad_inputs_get_clear_errors_and_change_nothing() {
    let h = Host::builder().init();
    // A TPM address with a typo is named, not replaced by a default port; a bare device path
    // gets its prefix.
    for (tcti, says) in [
        ("swtpm:host=127.0.0.1,prot=2321", "host=H and port=P only"),
        ("/dev/tpmrm0", "device:/dev/tpmrm0"),
    ] {
        let o = run(
            "vmseal-host",
            &[
                "init",
                "--state",
                &h.p("other-state"),
                "--tpm",
                tcti,
                "--snp",
                "none",
            ],
        );
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(text(&o).contains(says), "{tcti}: {}", text(&o));
    }
    // The TPM library's own log lines are off by default (vmseal's error says it all, once).
    let o = Command::new(bin("vmseal-host"))
        .env_remove("TSS2_LOG")
        .env_remove("VMSEAL_LOG")
        .args([
            "init",
            "--state",
            &h.p("quiet-state"),
            "--tpm",
            "swtpm:host=127.0.0.1,port=1",
            "--snp",
            "none",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("cannot open TPM"), "{err}");
    assert_eq!(
        err.lines().count(),
        1,
        "one line, no library chatter: {err}"
    );
    // An unreachable PostgreSQL is named as such at once, its password never shown.
    let vst = h.p("verifier");
    assert!(
        run("vmseal-verifier", &["init", "--state", &vst])
            .status
            .success()
    );
    let o = run(
        "vmseal-verifier",
        &[
            "serve",
            "--state",
            &vst,
            "--database",
            "postgres://vmseal:hunter2@127.0.0.1:1/vmseal",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("PostgreSQL at 127.0.0.1:1 cannot be reached")
            && !text(&o).contains("hunter2"),
        "{}",
        text(&o)
    );
    // Not a whole number of pages.
    std::fs::write(h.p("mem.raw"), vec![0u8; 5000]).unwrap();
    let o = h.seal("vm-c", "x.cose", &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("not a whole number of 4 KiB pages"),
        "{}",
        text(&o)
    );
    assert!(!Path::new(&h.p("x.cose")).exists(), "no partial output");
    // Bad VM id, bad region.
    h.image(2);
    assert!(text(&h.seal("../evil", "x.cose", &[])).contains("VM id"));
    assert!(
        text(&h.seal("vm-c", "x.cose", &["--region", "a:code:critical:0:0x1800"]))
            .contains("multiples of 4096")
    );
    assert!(
        text(&h.seal("vm-c", "x.cose", &["--region", "a:cod:critical:0:0x1000"]))
            .contains("class must be")
    );
    assert!(!Path::new(&h.p("x.cose")).exists());
    // No state.
    let o = run(
        "vmseal-host",
        &[
            "seal",
            "--state",
            &h.p("nostate"),
            "--vm-id",
            "v",
            "--image",
            &h.p("mem.raw"),
            "--out",
            &h.p("x.cose"),
        ],
    );
    assert!(
        text(&o).contains("holds no vmseal host state"),
        "{}",
        text(&o)
    );
    // init over an existing state.
    let o = run(
        "vmseal-host",
        &["init", "--state", &h.p("state"), "--tpm", &h.tcti()],
    );
    assert!(text(&o).contains("already holds"), "{}", text(&o));
    // vmseal-certs usage and I/O errors exit 2; garbage input is reported, not a crash.
    assert_eq!(run("vmseal-certs", &["verify"]).status.code(), Some(2));
    assert_eq!(
        run("vmseal-certs", &["verify", &h.p("missing")])
            .status
            .code(),
        Some(2)
    );
    std::fs::write(h.p("junk"), b"hello world").unwrap();
    let o = run("vmseal-certs", &["inspect", &h.p("junk")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("unrecognised input"), "{}", text(&o));
    assert_eq!(run("vmseal-certs", &["--help"]).status.code(), Some(0));
}

#[test]
fn certs_tool_on_genuine_amd_material() {
    let v = vmseal_testkit::vectors_dir().join("sev-snp/reports/03-trustee-milan-v2");
    let o = run(
        "vmseal-certs",
        &[
            "verify",
            "--report",
            &v.join("test-report.bin").display().to_string(),
            "--vcek",
            &v.join("test-vcek.der").display().to_string(),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // The expired VLEK is refused at the current time and accepted as of its validity.
    let w = vmseal_testkit::vectors_dir().join("sev-snp/reports/04-trustee-milan-vlek-v3");
    let args = |at: Option<&str>| {
        let mut a = vec![
            "verify".to_owned(),
            "--report".into(),
            w.join("test-vlek-report.bin").display().to_string(),
            "--vcek".into(),
            w.join("test-vlek.der").display().to_string(),
        ];
        if let Some(t) = at {
            a.push("--at".into());
            a.push(t.into());
        }
        a
    };
    let now = Command::new(bin("vmseal-certs"))
        .args(args(None))
        .output()
        .unwrap();
    assert_eq!(now.status.code(), Some(1), "{}", text(&now));
    assert!(
        text(&now).contains("not valid at the verification time"),
        "{}",
        text(&now)
    );
    let then = Command::new(bin("vmseal-certs"))
        .args(args(Some("2025-06-01T00:00:00Z")))
        .output()
        .unwrap();
    assert_eq!(then.status.code(), Some(0), "{}", text(&then));
    // configfs-tsm JSON and a KDS bundle inspect cleanly.
    let j = vmseal_testkit::vectors_dir()
        .join("sev-snp/reports/08-veraison-genoa-v3/sevsnp-tsm-report.json");
    let o = ok(run(
        "vmseal-certs",
        &["inspect", "--json", &j.display().to_string()],
    ));
    assert!(String::from_utf8_lossy(&o.stdout).contains("\"AMD hwID\""));
    let o = run("vmseal-certs", &["verify", &j.display().to_string()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

#[test]
fn micro_vm_attacks_show_up_in_the_evidence() {
    let h = Host::builder().init();
    let out = h.p("ev");
    let o = ok(run(
        "vmseal-host",
        &[
            "vm",
            "run",
            "--state",
            &h.p("state"),
            "--vm-id",
            "mvm",
            "--mem-mib",
            "16",
            "--ws-pages",
            "64",
            "--captures",
            "3",
            "--interval-ms",
            "100",
            "--attack",
            "hidden-task",
            "--attack",
            "code-patch",
            "--attack-after",
            "2",
            "--incremental",
            "--out-dir",
            &out,
            "--json",
        ],
    ));
    // One JSON object per capture.
    let stream = serde_json::Deserializer::from_slice(&o.stdout).into_iter::<serde_json::Value>();
    let caps: Vec<serde_json::Value> = stream.map(Result::unwrap).collect();
    assert_eq!(caps.len(), 3);
    let changed = |c: &serde_json::Value, name: &str| {
        c["regions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap()["changed_pages"]
            .as_u64()
            .unwrap()
    };
    for name in ["guest-code", "syscall-table", "task-table", "config"] {
        assert_eq!(changed(&caps[1], name), 0, "no attack yet: {name}");
    }
    assert_eq!(changed(&caps[2], "guest-code"), 1);
    assert_eq!(changed(&caps[2], "task-table"), 1);
    assert_eq!(changed(&caps[2], "syscall-table"), 0);
    assert_eq!(caps[2]["kind"], "incremental:1");
    // Every snapshot verifies, and the chain links them.
    for i in 0..3 {
        let f = format!("{out}/mvm-{i:06}.cose");
        let v = run("vmseal-certs", &["verify", "--roots", &h.ek_ca(), &f]);
        assert_eq!(v.status.code(), Some(0), "{}", text(&v));
    }
    assert!(Path::new(&format!("{out}/baseline.cbor")).exists());

    // `capture --source dump:` with a policy file and a baseline written by an earlier capture.
    let img: Vec<u8> = (0..8 * 4096).map(|i| (i % 253) as u8).collect();
    std::fs::write(h.p("img.raw"), &img).unwrap();
    std::fs::write(
        h.p("p.toml"),
        "name = \"img\"\nversion = 2\n[[region]]\nname = \"k\"\nclass = \"code\"\nseverity = \"critical\"\ngpa = { start = 0, len = 0x4000 }\n",
    )
    .unwrap();
    let cap = |out: &str, extra: &[&str]| {
        let mut a = vec![
            "capture", "--source", "dump:", "--policy", "", "--state", "", "--vm-id", "img",
            "--out", out, "--json",
        ];
        let src = format!("dump:{}", h.p("img.raw"));
        let pol = h.p("p.toml");
        let st = h.p("state");
        a[2] = &src;
        a[4] = &pol;
        a[6] = &st;
        a.extend_from_slice(extra);
        run("vmseal-host", &a)
    };
    let base = h.p("base.cbor");
    ok(cap(&h.p("i0.cose"), &["--baseline-out", &base]));
    let mut img2 = img.clone();
    img2[0x2010] ^= 0xff;
    std::fs::write(h.p("img.raw"), &img2).unwrap();
    let o = cap(&h.p("i1.cose"), &["--baseline", &base]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["regions"][0]["changed_pages"], 1, "{j}");
    // A policy error names the line.
    std::fs::write(
        h.p("p.toml"),
        "name = \"img\"\nversion = 2\n[[region]]\nname = \"k\"\nclass = \"cod\"\nseverity = \"low\"\ngpa = { start = 0, len = 0x1000 }\n",
    )
    .unwrap();
    let o = cap(&h.p("i2.cose"), &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("line 5"), "{}", text(&o));
}

#[test]
fn bench_prints_every_documented_key() {
    // A tiny run: this checks the command and its output shape, not speed.
    let o = ok(run("vmseal-host", &["bench", "--mem-mib", "16", "--json"]));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for k in [
        "capture_vs_hash_ratio",
        "incremental_vs_full_ratio",
        "precopy_pause_ms",
        "stopcopy_pause_ms",
        "sha256_gbps_1t",
        "blake3_gbps_1t",
        "dirty_harvest_us_per_gib",
        "memory_gib",
    ] {
        assert!(j[k].as_f64().is_some_and(f64::is_finite), "{k}: {j}");
    }
    assert_eq!(j["memory_gib"], 0.015625);
}

#[test]
fn the_load_generators_print_one_json_line_with_every_documented_key() {
    // Tiny runs against the real service: these check the commands and their output shape, not
    // speed (docs/benchmarks.md has the figures). The report: one JSON line, with `appraisals`
    // appraised and no error.
    let report = |args: &[&str], appraisals: u64| -> serde_json::Value {
        let o = ok(run("vmseal-loadgen", args));
        let out = String::from_utf8(o.stdout.clone()).unwrap();
        assert_eq!(out.lines().count(), 1, "one JSON line: {out}");
        let j: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            (j["appraisals"].as_u64(), j["errors"].as_u64()),
            (Some(appraisals), Some(0)),
            "{j}"
        );
        j
    };
    // CPU time is read in 10 ms ticks: a run this small may cost the /healthz baseline none.
    let positive =
        |j: &serde_json::Value, k: &str| j[k].as_f64().is_some_and(|v| v.is_finite() && v > 0.0);
    let finite =
        |j: &serde_json::Value, k: &str| j[k].as_f64().is_some_and(|v| v.is_finite() && v >= 0.0);
    let j = report(
        &[
            "appraise",
            "--clients",
            "2",
            "--per-client",
            "25",
            "--pages",
            "8,1,32",
            "--changed",
            "2",
            "--json",
        ],
        50,
    );
    for k in [
        "appraisals_per_server_cpu_second",
        "p50_ms",
        "p99_ms",
        "server_cpu_seconds",
        "appraisals_per_commit",
    ] {
        assert!(positive(&j, k), "{k}: {j}");
    }
    for k in ["healthz_per_server_cpu_second", "appraisal_cost_in_healthz"] {
        assert!(finite(&j, k), "{k}: {j}");
    }
    let j = report(
        &[
            "fleet", "--agents", "3", "--vms", "6", "--rounds", "2", "--json",
        ],
        12,
    );
    for k in ["appraisals_per_sec", "p50_ms", "p99_ms", "healthz_p99_ms"] {
        assert!(positive(&j, k), "{k}: {j}");
    }
    for k in ["appraisals_per_server_cpu_second", "server_cpu_seconds"] {
        assert!(finite(&j, k), "{k}: {j}");
    }
    assert_eq!(j["database"], "sqlite");
}

#[test]
fn capture_a_linux_guest_under_qemu_by_symbols() {
    let g = vmseal_testkit::QemuGuest::boot(256, false).unwrap();
    let h = Host::builder().init();
    std::fs::write(h.p("System.map"), &g.system_map).unwrap();
    std::fs::write(
        h.p("linux.toml"),
        "name = \"linux\"\nversion = 1\n[[region]]\nname = \"kernel-text\"\nclass = \"code\"\nseverity = \"critical\"\nsymbol = \"_stext\"\nend_symbol = \"_etext\"\n",
    )
    .unwrap();
    let src = format!("qemu:{},{}", g.qmp().display(), g.mem().display());
    let o = ok(run(
        "vmseal-host",
        &[
            "capture",
            "--source",
            &src,
            "--policy",
            &h.p("linux.toml"),
            "--symbols",
            &h.p("System.map"),
            "--state",
            &h.p("state"),
            "--vm-id",
            "linux",
            "--out",
            &h.p("l.cose"),
            "--json",
        ],
    ));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(j["regions"][0]["pages"].as_u64().unwrap() > 1000, "{j}");
    let v = run(
        "vmseal-certs",
        &["verify", "--roots", &h.ek_ca(), &h.p("l.cose")],
    );
    assert_eq!(v.status.code(), Some(0), "{}", text(&v));
}

#[test]
fn agent_captures_every_vm_on_schedule_and_reports_changes() {
    let h = Host::builder().init();
    raw_guest(&h);
    std::fs::write(
        h.p("agent.toml"),
        "state = \"state\"\nout_dir = \"agent-ev\"\nmax_concurrent = 2\nbudget_mbps = 500\nfull_every = 2\n\
         [[vm]]\nid = \"micro\"\nsource = \"kvm\"\ninterval_secs = 1\n\
         [[vm]]\nid = \"img\"\nsource = \"dump:d.raw\"\npolicy = \"p.toml\"\ninterval_secs = 1\n",
    )
    .unwrap();
    let events = h.run_agent(3);
    assert_eq!(events.len(), 6, "{events:?}");
    assert!(events.iter().all(|e| e["error"].is_null()), "{events:?}");
    let kinds: Vec<String> = events
        .iter()
        .filter(|e| e["vm"] == "micro")
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["full", "incremental:0", "full"], "full_every = 2");
    for e in &events {
        let v = run(
            "vmseal-certs",
            &["verify", "--roots", &h.ek_ca(), e["out"].as_str().unwrap()],
        );
        assert_eq!(v.status.code(), Some(0), "{}", text(&v));
    }
    // A bad configuration is refused with its file and problem.
    std::fs::write(
        h.p("bad.toml"),
        "state = \"state\"\nout_dir = \"x\"\n[[vm]]\nid = \"a\"\nsource = \"floppy\"\n",
    )
    .unwrap();
    let o = run(
        "vmseal-host",
        &["run", "--config", &h.p("bad.toml"), "--rounds", "1"],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("source must be kvm"), "{}", text(&o));
}

#[test]
fn the_whole_loop_verifier_host_baseline_attack_score() {
    let h = Host::builder().snp("insecure-soft").init();
    let vst = h.p("verifier");
    // The service from a configuration file (paths relative to it) plus one environment
    // variable, as an operator would run it.
    std::fs::write(
        h.p("verifier.toml"),
        format!(
            "state = \"verifier\"\nrequire = \"both\"\nek_roots = [\"{}\"]\n\
             insecure_snp_root = \"state/insecure-snp-ark.pem\"\nworkers = 2\n",
            h.ek_ca()
        ),
    )
    .unwrap();
    let v = Verifier::builder(&vst)
        .config(&h.p("verifier.toml"))
        .listen_by_env()
        .start();
    let (url, ca) = (v.url(), v.ca());
    let admin = |args: &[&str]| v.admin(args);
    // The admin makes a one-use enrollment token for the host; the host enrols with it, proving
    // its AK by credential activation in swtpm; the token is spent afterwards.
    h.token(&v, "token", &[]);
    let cert = h.agent_cert_args();
    let enroll_args: Vec<&str> = cert.iter().map(String::as_str).chain(["--json"]).collect();
    let enroll = || h.enroll(&v, "token", &enroll_args);
    let o = ok(enroll());
    let e: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(e["host_id"], "e2e-host");
    assert_eq!(e["ak_activated"], true, "{e}");
    assert_eq!(e["insecure_snp"], true, "{e}");
    let o = enroll();
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("token_used"), "{}", text(&o));
    v.register_vm("vm-e2e", "e2e-host", Some(&micro_vm_policy()));
    let vm_run = |extra: &[&str], out: &str| h.vm_run(&v, "vm-e2e", extra, out);
    let first = vm_run(&["--captures", "1"], "ev0");
    assert_eq!(first.len(), 1, "one appraisal");
    assert_eq!(first[0]["score"], 50, "no baseline yet: {}", first[0]);
    v.promote("vm-e2e", 0, &h.p("ev0/baseline.cbor"));
    // The golden baseline as a signed CoRIM: exported, checked offline by vmseal-certs with the
    // verifier's CoRIM key alone, imported again (a new version, the same document), listed.
    let (v1, v2, signer) = (h.p("v1.corim"), h.p("v2.corim"), h.p("corim-signer.pem"));
    let export = |out: &str| {
        ok(admin(&[
            "baselines",
            "export",
            "--vm-id",
            "vm-e2e",
            "--corim",
            "--out",
            out,
        ]))
    };
    export(&v1);
    ok(admin(&["baselines", "signer", "--out", &signer]));
    ok(run(
        "vmseal-certs",
        &["verify", "--corim-signer", &signer, &v1],
    ));
    let o = run("vmseal-certs", &["verify", &v1]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--corim-signer"), "{}", text(&o));
    let o = run("vmseal-certs", &["inspect", &v1]);
    assert!(
        text(&o).contains("region guest-code") && text(&o).contains("no trusted signer given"),
        "{}",
        text(&o)
    );
    let o = admin(&["baselines", "import", "--vm-id", "vm-e2e", &v1]);
    assert!(
        text(&o).contains("baseline version 2 imported") && text(&o).contains("this verifier"),
        "{}",
        text(&o)
    );
    export(&v2);
    assert_eq!(
        std::fs::read(&v1).unwrap(),
        std::fs::read(&v2).unwrap(),
        "byte-stable"
    );
    let o = admin(&["baselines", "list", "--vm-id", "vm-e2e"]);
    assert!(
        text(&o).contains("snapshot #0") && text(&o).contains("CoRIM signed by this verifier"),
        "{}",
        text(&o)
    );
    // A webhook receiver that checks signatures with ca.pem alone, added by the admin.
    let (mut receiver, hook) = webhook_receiver(&ca, &["--json"]);
    ok(admin(&["webhooks", "add", "--name", "ops", "--url", &hook]));
    let base = h.p("ev0/baseline.cbor");
    let after = vm_run(
        &[
            "--captures",
            "2",
            "--interval-ms",
            "100",
            "--attack",
            "pointer-hook",
            "--attack-after",
            "1",
            "--baseline",
            &base,
        ],
        "ev1",
    );
    assert_eq!(after.len(), 2);
    assert_eq!(
        (after[0]["score"].as_u64(), after[0]["tier"].as_str()),
        (Some(100), Some("affirming")),
        "{}",
        after[0]
    );
    assert_eq!(after[1]["tier"], "warning", "{}", after[1]);
    assert_eq!(
        after[1]["score"], 40,
        "a critical structure change costs 60: {}",
        after[1]
    );
    let changed: Vec<&str> = after[1]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["region"].as_str().unwrap())
        .collect();
    assert!(changed.contains(&"syscall-table"), "{changed:?}");
    assert!(!changed.contains(&"guest-code"), "{changed:?}");
    // Score 40 < threshold 70: the alert reached the receiver, its signature verified there.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while receiver.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "no alert reached the webhook"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let mut got = String::new();
    std::io::Read::read_to_string(&mut receiver.stdout.take().unwrap(), &mut got).unwrap();
    let delivered: serde_json::Value = serde_json::from_str(got.trim()).unwrap();
    assert_eq!(
        (delivered["kind"].as_str(), delivered["score"].as_u64()),
        (Some("below_threshold"), Some(40)),
        "{delivered}"
    );
    assert!(
        delivered["message"]
            .as_str()
            .unwrap()
            .contains("syscall-table"),
        "{delivered}"
    );
    let o = ok(admin(&[
        "--json",
        "alerts",
        "list",
        "--state-filter",
        "open",
    ]));
    let open: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        open["alerts"][0]["alert_id"], delivered["alert_id"],
        "{open}"
    );
    let id = delivered["alert_id"].to_string();
    let o = ok(admin(&["alerts", "ack", &id]));
    assert!(text(&o).contains("acknowledged by admin"), "{}", text(&o));
    let o = admin(&["alerts", "show", &id]);
    assert!(text(&o).contains("webhook ops: delivered"), "{}", text(&o));
    // The admin's view of the history: newest first, the hook named.
    let o = ok(admin(&["appraisals", "--vm-id", "vm-e2e", "--limit", "2"]));
    let out = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "a header and two appraisals: {out}");
    assert!(
        lines[1].contains(" 40 ")
            && lines[1].contains("warning")
            && lines[1].contains("syscall-table"),
        "{out}"
    );
    assert!(
        lines[2].contains(" 100 ") && lines[2].contains("affirming"),
        "{out}"
    );
    // An admin certificate cannot submit evidence, and an agent cannot promote baselines.
    let o = run(
        "vmseal-verifier",
        &[
            "admin",
            "--verifier",
            &url,
            "--verifier-ca",
            &ca,
            "--cert",
            &h.p("agent.pem"),
            "--key",
            &h.p("agent.key"),
            "promote-baseline",
            "--vm-id",
            "vm-e2e",
            "--seq",
            "1",
            "--baseline",
            &base,
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("forbidden"), "{}", text(&o));

    // The agent (`vmseal-host run`) enrols itself with a fresh token (it has no agent certificate
    // at agent2.pem yet), then captures on its schedule and submits to the verifier; it has no
    // baseline file, so its deltas go against the baseline the verifier serves.
    ok(admin(&[
        "enrollment-token",
        "--out-cert",
        &h.p("token2.pem"),
        "--out-key",
        &h.p("token2.key"),
    ]));
    std::fs::write(
        h.p("agent.toml"),
        format!(
            "state = \"state\"\nout_dir = \"agent-ev\"\n[verifier]\nurl = \"{url}\"\nca = \"{ca}\"\nagent_cert = \"agent2.pem\"\nagent_key = \"agent2.key\"\ntoken_cert = \"token2.pem\"\ntoken_key = \"token2.key\"\n\
             [[vm]]\nid = \"vm-e2e\"\nsource = \"kvm\"\ninterval_secs = 1\n"
        ),
    )
    .unwrap();
    let events = h.run_agent(2);
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(std::path::Path::new(&h.p("agent2.pem")).exists());
    for e in &events {
        assert!(e["submit_error"].is_null(), "{e}");
        // The agent's micro-VM runs the same code and tables (the syscall-table hook above was in
        // another VM instance), but it is configured with 1,024 working-set pages where the
        // baseline VM had 64: its config page (rodata, medium) differs, which costs 25.
        assert_eq!(e["appraisal"]["score"], 75, "{e}");
        let changed: Vec<&str> = e["appraisal"]["changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["region"].as_str().unwrap())
            .collect();
        assert!(
            changed.contains(&"config")
                && !changed.contains(&"guest-code")
                && !changed.contains(&"syscall-table"),
            "{changed:?}"
        );
    }

    // On demand: the agent runs as a service; the admin asks for a capture and waits for its
    // appraisal. The agent picks the request up by long-poll (it has no inbound port).
    let agent = Agent::start(&h.p("agent.toml"));
    let o = ok(admin(&[
        "--json",
        "request-capture",
        "--vm-id",
        "vm-e2e",
        "--wait",
        "120",
    ]));
    let done: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["appraisal"]["score"], 75, "{done}");
    drop(agent);

    // The admin's view: every VM with its latest score; thresholds and policies change by admin.
    let o = ok(admin(&["--json", "vms"]));
    let vms: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(vms["vms"][0]["vm_id"], "vm-e2e");
    assert_eq!(vms["vms"][0]["score"], 75);
    assert_eq!(
        vms["vms"][0]["baseline_version"], 2,
        "the CoRIM import made version 2"
    );
    ok(admin(&[
        "set-threshold",
        "--vm-id",
        "vm-e2e",
        "--threshold",
        "80",
    ]));
    let o = admin(&["vms"]);
    assert!(text(&o).contains("vm-e2e"), "{}", text(&o));
    let o = admin(&["set-threshold", "--vm-id", "nope", "--threshold", "80"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("not_found"), "{}", text(&o));
    // The agent's snapshots scored 75 >= 70: the alert was resolved by them.
    let o = admin(&["--json", "alerts", "show", &id]);
    let shown: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(shown["alert"]["state"], "resolved", "{shown}");
    let o = ok(admin(&["audit", "verify"]));
    assert!(text(&o).contains("audit log intact"), "{}", text(&o));
}

#[test]
fn a_debug_guest_is_refused_at_enrollment_naming_the_field() {
    // A guest whose (stand-in) report says DEBUG is allowed: the hypervisor could read it.
    let g = Guest::init("g-debug", &["--insecure-policy", "b0000"]);
    // Offline inspection says so too.
    let o = run("vmseal-certs", &["inspect", &g.p("shim/intermediate.der")]);
    assert!(text(&o).contains("DEBUG ALLOWED"), "{}", text(&o));
    // The knobs mean nothing without the stand-in.
    let o = run(
        "vmseal-shim",
        &[
            "init",
            "--state",
            &g.p("x"),
            "--snp",
            "configfs",
            "--id",
            "g",
            "--insecure-vmpl",
            "2",
        ],
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("INSECURE stand-in only"), "{}", text(&o));
    let vstate = g.p("verifier");
    let v = Verifier::builder(&vstate)
        .args(&["--insecure-snp-root", &g.p("shim/insecure-snp-ark.pem")])
        .start();
    g.token(&v, "snp", &[]);
    let o = g.enroll(&v);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("hardware_policy") && text(&o).contains("snp.policy.debug is allowed"),
        "{}",
        text(&o)
    );
    // An admin may accept it for this host, knowingly, with a token's own policy.
    std::fs::write(g.p("debug-ok.toml"), "allow_debug = true\n").unwrap();
    g.token(&v, "snp", &["--hardware", &g.p("debug-ok.toml")]);
    ok(g.enroll(&v));
    let o = v.admin(&["hosts", "list"]);
    assert!(text(&o).contains("g-debug"), "{}", text(&o));
}

#[test]
fn a_stricter_hardware_policy_reappraises_hosts_already_enrolled() {
    let g = Guest::init("g-1", &[]);
    let p = |f: &str| g.p(f);
    let vstate = p("verifier");
    let standin = p("shim/insecure-snp-ark.pem");
    {
        let v = Verifier::builder(&vstate)
            .args(&["--insecure-snp-root", &standin])
            .start();
        g.token(&v, "snp", &[]);
        ok(g.enroll(&v));
        v.register_vm("g1", "g-1", None);
    }
    // The operator tightens the service's hardware policy: only another launch measurement.
    std::fs::write(
        p("verifier.toml"),
        format!(
            "insecure_snp_root = \"{standin}\"\n[hardware]\nmeasurements = [\"{}\"]\n",
            "ab".repeat(48)
        ),
    )
    .unwrap();
    let v = Verifier::builder(&vstate)
        .existing()
        .args(&["--config", &p("verifier.toml")])
        .start();
    let admin = |args: &[&str]| v.admin(args);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let alerts = loop {
        let o = admin(&["alerts", "list", "--vm-id", "g1"]);
        if text(&o).contains("hardware_reappraisal") || std::time::Instant::now() > deadline {
            break text(&o);
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(
        alerts.contains("(hardware_reappraisal)") && alerts.contains("snp.measurement is "),
        "{alerts}"
    );
    let o = admin(&["--json", "hosts", "list"]);
    assert!(
        text(&o).contains("the hardware policy refuses it: snp.measurement"),
        "{}",
        text(&o)
    );
}

/// Handshake with the verifier at `port` as `cfg` says; the negotiated key exchange group.
fn negotiated_group(port: u16, cfg: rustls::ClientConfig) -> Result<rustls::NamedGroup, String> {
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let mut conn =
        rustls::ClientConnection::new(std::sync::Arc::new(cfg), name).map_err(|e| e.to_string())?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).map_err(|e| e.to_string())?;
    }
    conn.negotiated_key_exchange_group()
        .map(|g| g.name())
        .ok_or_else(|| "no key exchange group".into())
}

#[test]
fn every_connection_negotiates_x25519mlkem768_and_pq_only_refuses_classical_peers() {
    let d = tempfile::tempdir().unwrap();
    let vst = path_in(d.path(), "verifier");
    assert!(
        run("vmseal-verifier", &["init", "--state", &vst])
            .status
            .success()
    );
    let read = |f: &str| std::fs::read(format!("{vst}/{f}")).unwrap();
    let (ca, cert, key) = (read("ca.pem"), read("admin.pem"), read("admin.key"));
    let classical = || {
        use rustls::pki_types::pem::PemObject;
        let mut p = rustls::crypto::aws_lc_rs::default_provider();
        p.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519];
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(&ca) {
            roots.add(c.unwrap()).unwrap();
        }
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(p))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(
                rustls::pki_types::CertificateDer::pem_slice_iter(&cert)
                    .map(Result::unwrap)
                    .collect(),
                rustls::pki_types::PrivateKeyDer::from_pem_slice(&key).unwrap(),
            )
            .unwrap()
    };
    let metric = |port: u16, group: &str| -> u64 {
        // GET /metrics over vmseal's own client configuration.
        use std::io::{Read as _, Write as _};
        let cfg = vmseal_client::tls_config(&ca, &cert, &key).unwrap();
        let mut sock = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut conn = rustls::ClientConnection::new(
            std::sync::Arc::new(cfg),
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
        )
        .unwrap();
        let mut tls = rustls::Stream::new(&mut conn, &mut sock);
        tls.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut t = String::new();
        let _ = tls.read_to_string(&mut t);
        t.lines()
            .find(|l| {
                l.starts_with(&format!(
                    "vmseal_tls_key_exchange_total{{group=\"{group}\"}}"
                ))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {group} count in {t}"))
    };
    {
        // The default: the hybrid group for vmseal's own clients, X25519 for a peer without it.
        let v = Verifier::builder(&vst).existing().start();
        let port = v.port();
        let ours = vmseal_client::tls_config(&ca, &cert, &key).unwrap();
        assert_eq!(
            negotiated_group(port, ours),
            Ok(rustls::NamedGroup::X25519MLKEM768)
        );
        assert_eq!(
            negotiated_group(port, classical()),
            Ok(rustls::NamedGroup::X25519)
        );
        // The admin client (a separate process) negotiated the hybrid group too: the server
        // counts what each connection negotiated.
        ok(v.admin(&["vms"]));
        assert!(metric(port, "X25519MLKEM768") >= 3);
        assert_eq!(metric(port, "classical"), 1);
    }
    // pq-only: a classical-only client cannot connect; vmseal's can.
    let v = Verifier::builder(&vst)
        .existing()
        .args(&["--tls-key-exchange", "pq-only"])
        .start();
    let port = v.port();
    let e = negotiated_group(port, classical()).unwrap_err();
    assert!(e.to_lowercase().contains("handshake"), "{e}");
    let ours = vmseal_client::tls_config(&ca, &cert, &key).unwrap();
    assert_eq!(
        negotiated_group(port, ours),
        Ok(rustls::NamedGroup::X25519MLKEM768)
    );
    ok(v.admin(&["vms"]));
    assert_eq!(metric(port, "classical"), 0);
}

/// A host whose userspace is compromised, TPM intact: it unseals its intermediate (the TPM lets it,
/// in its measured boot state) and signs what it likes, chained on the verifier's head.
fn forge(
    h: &Host,
    vm: &str,
    from: &str,
    prev: &str,
    edit: impl FnOnce(&mut vmseal_sealer::claims::Claims),
) -> Vec<u8> {
    use vmseal_sealer::claims::Claims;
    use vmseal_sealer::evidence::{DecodedEvidence, evidence_digest};
    let ev = std::fs::read(h.p(from)).unwrap();
    let prev_ev = DecodedEvidence::decode(&std::fs::read(h.p(prev)).unwrap()).unwrap();
    let prev_seq = Claims::decode(&prev_ev.payload).unwrap().seq;
    let mut c = Claims::decode(&DecodedEvidence::decode(&ev).unwrap().payload).unwrap();
    c.seq = prev_seq + 1;
    c.prev = Some(prev_ev.digest);
    c.iat = time::OffsetDateTime::now_utc().unix_timestamp();
    edit(&mut c);
    (c.memory_root, c.code_hash) = Claims::compute_roots(c.hash_alg, &c.regions).unwrap();
    let state =
        vmseal_sealer::state::HostState::load(std::path::Path::new(&h.p("state")), Some(&h.tcti()))
            .unwrap();
    let out = state
        .sealer
        .seal(&c, time::OffsetDateTime::now_utc())
        .unwrap();
    state.advance(vm, c.seq, &evidence_digest(&out)).unwrap();
    out
}

#[test]
fn a_compromised_host_cannot_make_a_patched_vm_look_healthy() {
    let h = Host::builder().snp("insecure-soft").init();
    let v = h.verifier().start();
    let (url, ca) = (v.url(), v.ca());
    let admin = |args: &[&str]| v.admin(args);
    h.enrol_agent(&v);
    let policy = micro_vm_policy();
    // vm-a: the admin assigned the policy; vm-b: only its baseline says which policy.
    v.register_vm("vm-a", "e2e-host", Some(&policy));
    v.register_vm("vm-b", "e2e-host", None);
    let vm_run = |vm: &str, extra: &[&str], out: &str, submit: bool| {
        h.vm_run_output(submit.then_some(&v), vm, extra, out)
    };
    for vm in ["vm-a", "vm-b"] {
        let o = ok(vm_run(vm, &["--captures", "1"], &format!("{vm}0"), true));
        let a = &appraisals(&o)[0];
        assert_eq!(a["score"], 50, "{}", text(&o));
        // The result says what the hardware policy checked of this host's anchors.
        let checked = a["hardware_checked"].to_string();
        assert!(checked.contains("snp.policy.debug"), "{a}");
        v.promote(vm, 0, &h.p(&format!("{vm}0/baseline.cbor")));
    }
    let client = vmseal_client::Client::new(
        &url,
        &std::fs::read(&ca).unwrap(),
        &std::fs::read(h.p("agent.pem")).unwrap(),
        &std::fs::read(h.p("agent.key")).unwrap(),
    )
    .unwrap();

    // The compromised host patches the guest's code and captures it without submitting…
    let base = h.p("vm-a0/baseline.cbor");
    ok(vm_run(
        "vm-a",
        &[
            "--captures",
            "1",
            "--attack",
            "code-patch",
            "--attack-after",
            "0",
            "--baseline",
            &base,
        ],
        "vm-a1",
        false,
    ));
    // …then signs claims that leave the patched code region out, on the verifier's chain head.
    let ev = forge(
        &h,
        "vm-a",
        "vm-a1/vm-a-000001.cose",
        "vm-a0/vm-a-000000.cose",
        |c| {
            assert!(
                c.delta.iter().any(|d| d.region == "guest-code"),
                "the patch is captured"
            );
            c.regions.retain(|r| r.name != "guest-code");
            c.delta.retain(|d| d.region != "guest-code");
        },
    );
    std::fs::write(h.p("forged-1.cose"), &ev).unwrap();
    let a = client.submit_evidence("vm-a", ev).unwrap();
    use vmseal_client::{Finding, Tier};
    assert_eq!((a.score, a.tier), (0, Tier::Contraindicated), "{a:?}");
    assert_eq!(a.changes[0].region, "guest-code", "{a:?}");
    assert_eq!(a.changes[0].findings, [Finding::Missing], "{a:?}");
    // …or keeps it but calls it unimportant data.
    let ev = forge(&h, "vm-a", "vm-a1/vm-a-000001.cose", "forged-1.cose", |c| {
        let code = c
            .regions
            .iter_mut()
            .find(|r| r.name == "guest-code")
            .unwrap();
        code.class = vmseal_sealer::claims::RegionClass::Data;
        code.severity = vmseal_sealer::claims::Severity::Low;
    });
    let a = client.submit_evidence("vm-a", ev).unwrap();
    assert_eq!(a.score, 0, "{a:?}");
    let code = a.changes.iter().find(|c| c.region == "guest-code").unwrap();
    assert_eq!(
        (code.class, code.severity),
        (
            vmseal_sealer::claims::RegionClass::Code,
            vmseal_sealer::claims::Severity::Critical
        )
    );
    assert_eq!(
        code.findings,
        [Finding::Changed, Finding::Relabelled],
        "{a:?}"
    );

    // The real host binary under a doctored policy without the code region: refused, for vm-a
    // by its assigned policy, for vm-b by its baseline's.
    let text_of = std::fs::read_to_string(&policy).unwrap();
    let doctored: Vec<&str> = text_of
        .split("[[region]]")
        .filter(|b| !b.contains("name = \"guest-code\""))
        .collect();
    std::fs::write(h.p("doctored.toml"), doctored.join("[[region]]")).unwrap();
    let doctored = h.p("doctored.toml");
    let o = vm_run(
        "vm-a",
        &["--captures", "1", "--policy", &doctored],
        "vm-a2",
        true,
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("policy_mismatch"), "{}", text(&o));
    // The refusal is an event: audited and alerted, with its code.
    let o = ok(admin(&[
        "alerts",
        "list",
        "--vm-id",
        "vm-a",
        "--state-filter",
        "open",
    ]));
    assert!(
        text(&o).contains("evidence_refused") && text(&o).contains("(policy_mismatch)"),
        "{}",
        text(&o)
    );
    ok(admin(&["audit", "verify"]));

    // vm-b: a module rule pinning the real binary's build lets it capture; the doctored policy
    // does not.
    let build = hex::encode(
        vmseal_sealer::merkle::HashAlg::Sha256.hash(&[&std::fs::read(bin("vmseal-host")).unwrap()]),
    );
    let version = env!("CARGO_PKG_VERSION");
    ok(admin(&[
        "allow-modules",
        "--vm-id",
        "vm-b",
        "--module",
        &format!("vmseal-host {version} {build}"),
    ]));
    let o = ok(vm_run(
        "vm-b",
        &["--captures", "1", "--baseline", &h.p("vm-b0/baseline.cbor")],
        "vm-b1",
        true,
    ));
    assert_eq!(appraisals(&o)[0]["tier"], "affirming", "{}", text(&o));
    let o = vm_run(
        "vm-b",
        &["--captures", "1", "--policy", &doctored],
        "vm-b2",
        true,
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("baseline_policy_mismatch"),
        "{}",
        text(&o)
    );
    // A module the admin did not allow: refused before anything else is looked at.
    ok(admin(&[
        "register-vm",
        "--vm-id",
        "vm-c",
        "--host-id",
        "e2e-host",
    ]));
    ok(admin(&[
        "allow-modules",
        "--vm-id",
        "vm-c",
        "--module",
        "vmseal-host 9.9.9",
    ]));
    let o = vm_run("vm-c", &["--captures", "1"], "vm-c0", true);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("module_not_allowed"), "{}", text(&o));
    // The refused #0 does not wedge vm-c: the host follows the verifier's chain, so once the
    // admin clears the rule the next capture is accepted, at #0, with no manual step.
    ok(admin(&["allow-modules", "--vm-id", "vm-c", "--any"]));
    let o = ok(vm_run("vm-c", &["--captures", "1"], "vm-c1", true));
    assert_eq!(appraisals(&o)[0]["seq"], 0, "{}", text(&o));
    // An admin's audited restart of the chain (at #5) is followed too.
    ok(admin(&[
        "vms",
        "reset-chain",
        "--vm-id",
        "vm-c",
        "--at",
        "5",
    ]));
    let o = ok(vm_run("vm-c", &["--captures", "1"], "vm-c2", true));
    assert_eq!(appraisals(&o)[0]["seq"], 5, "{}", text(&o));
    ok(admin(&["audit", "verify"]));
}

#[test]
fn the_agent_seals_through_a_swtpm_restart_and_names_a_missing_tpm() {
    let mut h = Host::builder().init();
    raw_guest(&h);
    let agent_toml = h.p("agent.toml");
    let config = |tcti: &str| {
        std::fs::write(
            &agent_toml,
            format!(
                "state = \"state\"\nout_dir = \"agent-ev\"\ntpm = \"{tcti}\"\n\
                 [[vm]]\nid = \"micro\"\nsource = \"kvm\"\ninterval_secs = 1\n\
                 [[vm]]\nid = \"img\"\nsource = \"dump:d.raw\"\npolicy = \"p.toml\"\ninterval_secs = 1\n"
            ),
        )
        .unwrap();
    };
    let old = h.tcti();
    config(&old);
    let agent = Agent::start(&h.p("agent.toml"));
    agent.until(60, |e| {
        count(e, "micro", true) >= 1 && count(e, "img", true) >= 1
    });
    // The TPM goes away and comes back (another port: the old address is dead). The running
    // agent holds its unsealed intermediate and keeps sealing both VMs.
    h.tpm().restart().unwrap();
    let after = agent.until(60, |e| {
        count(e, "micro", true) >= 2 && count(e, "img", true) >= 2
    });
    assert!(
        after.iter().all(|e| e["error"].is_null()),
        "no capture failed: {after:?}"
    );
    drop(agent);
    // Started where no TPM answers: a clear error, nothing sealed.
    let o = run(
        "vmseal-host",
        &["run", "--config", &h.p("agent.toml"), "--rounds", "1"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let msg = text(&o);
    assert!(msg.contains("cannot load host state"), "{msg}");
    assert!(msg.contains("TPM"), "{msg}");
    assert!(!msg.contains("panicked"), "{msg}");
    // Pointed at the restarted TPM: it unseals (same PCRs after its restart) and seals again.
    config(&h.tcti());
    let events = h.run_agent(1);
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events.iter().all(|e| e["error"].is_null()), "{events:?}");
    assert_ne!(old, h.tcti());
}

#[test]
fn a_qemu_guest_exiting_mid_capture_is_a_clean_error_and_the_agent_goes_on() {
    // A 1 GiB guest captured whole (stop-copy): each capture pauses it for about a second, and
    // with a 1 s interval the next one starts as soon as the last ends.
    let g = vmseal_testkit::QemuGuest::boot(1024, false).unwrap();
    let h = Host::builder().init();
    std::fs::write(
        h.p("linux.toml"),
        "name = \"ram\"\nversion = 1\n[[region]]\nname = \"ram\"\nclass = \"data\"\nseverity = \"low\"\ngpa = { start = 0x100000, len = 0x3ff00000 }\n",
    )
    .unwrap();
    std::fs::write(
        h.p("agent.toml"),
        format!(
            "state = \"state\"\nout_dir = \"agent-ev\"\nmax_concurrent = 2\n\
             [[vm]]\nid = \"linux\"\nsource = \"qemu:{},{}\"\npolicy = \"linux.toml\"\ninterval_secs = 1\n\
             [[vm]]\nid = \"micro\"\nsource = \"kvm\"\ninterval_secs = 1\n",
            g.qmp().display(),
            g.mem().display()
        ),
    )
    .unwrap();
    let mut agent = Agent::start(&h.p("agent.toml"));
    let before = agent.until(120, |e| {
        count(e, "linux", true) >= 1 && count(e, "micro", true) >= 1
    });
    assert!(before.iter().all(|e| e["error"].is_null()), "{before:?}");
    // The next capture of the guest started at once; a moment into it, QEMU is killed (its QMP
    // socket and RAM file go with it).
    std::thread::sleep(std::time::Duration::from_millis(300));
    drop(g);
    let after = agent.until(60, |e| {
        count(e, "linux", false) >= 2 && count(e, "micro", true) >= 2
    });
    let guest: Vec<&serde_json::Value> = after.iter().filter(|e| e["vm"] == "linux").collect();
    assert_eq!(count(&after, "linux", true), 0, "{guest:?}");
    let errors: Vec<&str> = guest.iter().filter_map(|e| e["error"].as_str()).collect();
    eprintln!("the guest's capture errors: {errors:?}");
    // The capture in flight fails with the cause (the guest went away while paused), not a
    // panic; the later ones cannot attach, and say where they looked.
    assert!(
        !errors[0].contains("cannot attach") && !errors[0].contains("panicked"),
        "{errors:?}"
    );
    assert!(
        errors[1].contains("cannot attach to the VM: QMP socket"),
        "{errors:?}"
    );
    assert!(agent.running(), "the agent still runs");
    // The micro-VM's chain went on: sequence numbers kept increasing, none lost.
    let seqs: Vec<u64> = before
        .iter()
        .chain(&after)
        .filter(|e| e["vm"] == "micro" && e["error"].is_null())
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
}

/// The guest shim against a real verifier, on this machine: a process attested from "inside"
/// (its memory read through /proc/PID/mem), sealed under an SNP-anchored intermediate — the
/// INSECURE stand-in here, accepted because the verifier is told to — affirming, then
/// contraindicated once its code is patched; the exit status is the verdict.
#[test]
fn the_shim_attests_a_process_and_its_exit_status_is_the_verdict() {
    let g = Guest::init("guest-1", &[]);
    let p = |f: &str| g.p(f);
    let shim = |args: &[&str]| run("vmseal-shim", args);
    assert!(g.init_text().contains("INSECURE"), "{}", g.init_text());
    let v = Verifier::builder(p("verifier"))
        .args(&["--insecure-snp-root", &g.insecure_snp_root()])
        .start();
    g.token(&v, "snp", &[]);
    let o = ok(g.enroll(&v));
    assert!(text(&o).contains("INSECURE stand-in"), "{}", text(&o));

    // The process: its own code and libc's, as the shim policy selects them.
    let (mut child, sleep_path) = sleeping_process(120, &p("sleep.toml"), "sleep-code");
    let pid = child.id();
    v.register_vm("g1", "guest-1", Some(&p("sleep.toml")));
    let source = format!("process:{pid}");
    let policy = p("sleep.toml");
    let attest = |extra: &[&str]| g.attest(&v, "g1", &source, &policy, extra);
    // No baseline yet: a warning (exit 1).
    let o = attest(&[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("(warning)") && text(&o).contains("[signed EAR verified]"),
        "{}",
        text(&o)
    );
    v.promote("g1", 0, &p("shim/evidence/g1-000000.baseline.cbor"));
    // From now on the deltas are against the promoted baseline, which the shim fetches from
    // the verifier (`--baseline FILE` would name it instead, as the `run` configuration does).
    let base = p("shim/evidence/g1-000000.baseline.cbor");
    let o = attest(&["--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let a: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (a["tier"].as_str(), a["score"].as_u64()),
        (Some("affirming"), Some(100)),
        "{a}"
    );
    // As a service: `run` on a configuration file (paths relative to it), two rounds.
    std::fs::write(
        p("shim.toml"),
        format!(
            "state = \"shim\"\nverifier = \"{}\"\nverifier_ca = \"verifier/ca.pem\"\ninterval_secs = 1\n\
             [[target]]\nvm_id = \"g1\"\nsource = \"process:{pid}\"\npolicy = \"sleep.toml\"\nbaseline = \"shim/evidence/g1-000000.baseline.cbor\"\n",
            v.url()
        ),
    )
    .unwrap();
    let o = shim(&[
        "run",
        "--config",
        &p("shim.toml"),
        "--rounds",
        "2",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let lines: Vec<serde_json::Value> = serde_json::Deserializer::from_slice(&o.stdout)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(lines.len(), 2, "{}", text(&o));
    assert!(
        lines.iter().all(|l| l["appraisal"]["tier"] == "affirming"),
        "{lines:?}"
    );
    std::fs::write(
        p("bad.toml"),
        "state = \"shim\"\nverifier = \"x\"\nverifier_ca = \"y\"\n",
    )
    .unwrap();
    let o = shim(&["run", "--config", &p("bad.toml"), "--rounds", "1"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(text(&o).contains("target"), "{}", text(&o));
    // A hook in the process's code: contraindicated (exit 2), the region named.
    let at = vmseal_testkit::code_start(pid, &sleep_path).unwrap() + 0x100;
    vmseal_testkit::flip_byte(pid, at).unwrap();
    let o = attest(&[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("(contraindicated)")
            && text(&o).contains("sleep-code (code critical, 1 page(s) changed)"),
        "{}",
        text(&o)
    );
    let _ = child.kill();
    let _ = child.wait();
    // The process is gone: no attestation (exit 3), and why; --json says it as JSON.
    let o = attest(&["--json", "--baseline", &base]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let e: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains(&format!("no process {pid}")),
        "{e}"
    );
}

/// A raw guest image of 16 pages (`d.raw`) and a policy with one region over all of it
/// (`p.toml`), in `h`'s directory, for `source = "dump:d.raw"` in an agent's configuration.
fn raw_guest(h: &Host) {
    let img: Vec<u8> = (0..16 * 4096).map(|i| (i % 249) as u8).collect();
    std::fs::write(h.p("d.raw"), &img).unwrap();
    std::fs::write(
        h.p("p.toml"),
        "name = \"img\"\nversion = 1\n[[region]]\nname = \"all\"\nclass = \"code\"\nseverity = \"high\"\ngpa = { start = 0, len = 0x10000 }\n",
    )
    .unwrap();
}

/// `/bin/sleep SECS` running, and a shim policy at `policy` whose one critical code region
/// (`region`) is its mapping; the process and the binary's path.
fn sleeping_process(secs: u32, policy: &str, region: &str) -> (std::process::Child, String) {
    let sleep_path = std::fs::canonicalize("/bin/sleep")
        .unwrap()
        .display()
        .to_string();
    let child = Command::new(&sleep_path)
        .arg(secs.to_string())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    std::fs::write(
        policy,
        format!(
            "name = \"sleep\"\nversion = 1\n[[region]]\nname = \"{region}\"\nclass = \"code\"\nseverity = \"critical\"\nmapping = \"{sleep_path}\"\n"
        ),
    )
    .unwrap();
    (child, sleep_path)
}

/// Copy `binary` and the shared libraries it loads (per `ldd`) into `root` at their own paths.
fn install_with_libs(binary: &Path, root: &Path, dest: &str) {
    let target = root.join(dest.trim_start_matches('/'));
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::copy(binary, &target).unwrap();
    // Debug info is most of a debug build; the guest only runs it.
    assert!(
        Command::new("strip")
            .arg(&target)
            .status()
            .unwrap()
            .success()
    );
    let ldd = Command::new("ldd").arg(binary).output().unwrap();
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let path = match line.split("=>").nth(1) {
            Some(rest) => rest.split_whitespace().next(),
            None => line
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/')),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            let to = root.join(p.trim_start_matches('/'));
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(p, &to).unwrap();
        }
    }
}

/// The shim inside a real Linux guest (Debian's cloud kernel under QEMU TCG, a busybox
/// initramfs, user-mode networking to the verifier on the host's loopback at 10.0.2.2): it
/// attests the kernel through /proc/kcore and a process through /proc/PID/mem; after the admin
/// promotes baselines both are affirming; a write into the process's code page from inside the
/// guest drives its verdict to contraindicated while the kernel stays affirming. The SNP anchor
/// is the INSECURE stand-in, which this verifier is configured to accept (and only this test).
#[test]
fn the_shim_attests_from_inside_a_linux_guest() {
    let d = tempfile::tempdir().unwrap();
    let p = |f: &str| path_in(d.path(), f);
    let root = d.path().join("initramfs");
    for dir in ["bin", "proc", "sys", "dev", "tmp", "lib/modules", "shim"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    // The verifier: its server certificate names 10.0.2.2, where the guest reaches the host.
    // The guest's shim state, made on the host (the stand-in's RSA-4096 test keys would take
    // minutes under TCG) and enrolled from here too; the attestations run in the guest.
    let state = root.join("shim/state");
    let g = Guest::builder("guest-1")
        .state(state.to_str().unwrap())
        .init();
    let server = Verifier::builder(p("verifier"))
        .init_args(&["--name", "10.0.2.2"])
        .args(&["--insecure-snp-root", &g.insecure_snp_root()])
        .start();
    let (port, ca) = (server.port(), server.ca());
    g.token(&server, "snp", &[]);
    ok(g.enroll(&server));
    std::fs::copy(&ca, root.join("shim/ca.pem")).unwrap();
    // The kernel's text, and its objects walked with its own BTF.
    let kernel_policy = "name = \"linux\"\nversion = 1\n[[region]]\nname = \"kernel-text\"\nclass = \"code\"\nseverity = \"critical\"\nsymbol = \"_stext\"\nend_symbol = \"_etext\"\n[kernel_objects]\n";
    let proc_policy = "name = \"busybox\"\nversion = 1\n[[region]]\nname = \"busybox-code\"\nclass = \"code\"\nseverity = \"critical\"\nmapping = \"/bin/busybox\"\n";
    std::fs::write(root.join("shim/kernel.toml"), kernel_policy).unwrap();
    std::fs::write(root.join("shim/proc.toml"), proc_policy).unwrap();
    std::fs::write(p("kernel.toml"), kernel_policy).unwrap();
    std::fs::write(p("proc.toml"), proc_policy).unwrap();
    server.register_vm("guest-kernel", "guest-1", Some(&p("kernel.toml")));
    server.register_vm("guest-proc", "guest-1", Some(&p("proc.toml")));

    // The initramfs: busybox, the network modules, the shim with its libraries, its state.
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", root.join("bin/sleep")).unwrap();
    let kdir = vmseal_testkit::QemuGuest::kernel_dir().unwrap();
    let modules = "virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci failover net_failover virtio_net";
    for m in modules.split(' ') {
        std::fs::copy(
            kdir.join(format!("modules/{m}.ko")),
            root.join(format!("lib/modules/{m}.ko")),
        )
        .expect("network modules missing: run scripts/fetch-test-kernel.sh");
    }
    install_with_libs(&bin("vmseal-shim"), &root, "/shim/vmseal-shim");
    let attest_sh = format!(
        "#!/bin/busybox sh\n\
         out=$(/shim/vmseal-shim attest --state /shim/state --verifier https://10.0.2.2:{port} \
         --verifier-ca /shim/ca.pem --vm-id \"$1\" --source \"$2\" --policy \"$3\" ${{4:+--baseline $4}} --json 2>/tmp/err)\n\
         code=$?\n/bin/busybox cat /tmp/err\necho vmseal-begin\necho \"$out\"\necho \"vmseal-end $code\"\n"
    );
    let scripts = [
        ("shim/attest.sh", attest_sh.as_str()),
        (
            "shim/baseline.sh",
            "#!/bin/busybox sh\necho vmseal-b64-begin\n/bin/busybox base64 /shim/state/evidence/\"$1\"-000000.baseline.cbor\necho vmseal-b64-end\n",
        ),
        // One byte of the process's code (its second code page), rewritten through
        // /proc/PID/mem from inside the guest.
        (
            "shim/patch.sh",
            "#!/bin/busybox sh\nB=/bin/busybox\n\
             start=$($B grep ' r-xp .*/bin/busybox' /proc/$1/maps | $B head -1 | $B cut -d- -f1)\n\
             at=$(( 0x$start + 4096 + 256 ))\n\
             printf '\\314\\314\\314\\314' | $B dd of=/proc/$1/mem bs=1 seek=$at conv=notrunc 2>/dev/null\n\
             echo \"vmseal-patched $?\"\n",
        ),
        (
            "init",
            "#!/bin/busybox sh\nB=/bin/busybox\n\
             $B mount -t proc proc /proc\n$B mount -t sysfs sys /sys\n$B mount -t devtmpfs dev /dev\n\
             echo 0 > /proc/sys/kernel/kptr_restrict\n\
             for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci failover net_failover virtio_net; do\n\
               $B insmod /lib/modules/$m.ko || echo \"vmseal-insmod-failed $m\"\ndone\n\
             n=0; while [ ! -e /sys/class/net/eth0 ] && [ $n -lt 50 ]; do $B sleep 0.2; n=$((n+1)); done\n\
             $B ip link set lo up\n$B ip link set eth0 up\n$B ip addr add 10.0.2.15/24 dev eth0\n$B ip route add default via 10.0.2.2\n\
             /bin/sleep 1000000 &\necho \"vmseal-target $!\"\n\
             exec 3</dev/ttyS1\necho vmseal-ready\n\
             while true; do\n  IFS= read -r line <&3 || continue\n  $B sh -c \"$line\"\n  echo \"vmseal-done $?\"\ndone\n",
        ),
    ];
    for (f, text) in scripts {
        std::fs::write(root.join(f), text).unwrap();
        std::fs::set_permissions(
            root.join(f),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
    }
    let initrd = p("initrd.gz");
    let pack = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd {} && find . | cpio -o -H newc 2>/dev/null | gzip -1 > {initrd}",
            root.display()
        ))
        .status()
        .unwrap();
    assert!(pack.success());

    let mut g = vmseal_testkit::QemuGuest::boot_with(&vmseal_testkit::GuestOptions {
        mem_mib: 512,
        kaslr: false,
        initrd: Some(initrd.into()),
        net: true,
        control: true,
    })
    .unwrap();
    let console = g.console();
    assert!(!console.contains("vmseal-insmod-failed"), "{console}");
    let pid: u32 = console
        .lines()
        .find_map(|l| l.strip_prefix("vmseal-target "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut at = 0;
    let wait = std::time::Duration::from_secs(300);
    fn attest(
        g: &mut vmseal_testkit::QemuGuest,
        at: &mut usize,
        args: &str,
    ) -> (i32, serde_json::Value) {
        g.send(&format!("/shim/attest.sh {args}")).unwrap();
        let (out, next) = g
            .wait_for("vmseal-end", *at, std::time::Duration::from_secs(300))
            .unwrap();
        *at = next;
        let code: i32 = out
            .lines()
            .last()
            .unwrap()
            .trim_start_matches("vmseal-end ")
            .trim()
            .parse()
            .unwrap();
        let body = out.split("vmseal-begin").nth(1).unwrap();
        let body = body.rsplit_once("vmseal-end").unwrap().0;
        let v = serde_json::from_str(body.trim())
            .unwrap_or_else(|_| serde_json::json!({ "raw": body }));
        (code, v)
    }
    let proc_src = format!("process:{pid}");
    // Not baselined yet: warnings.
    let (c, v) = attest(&mut g, &mut at, "guest-kernel kernel /shim/kernel.toml");
    assert_eq!(c, 1, "{v}");
    assert!(
        v["regions"][0]["pages"].as_u64().unwrap_or(0) > 1000,
        "the kernel text: {v}"
    );
    // Its objects were walked: the appraisal keeps their digest (the facts are in the baseline
    // file, checked below).
    assert_eq!(v["kernel"]["findings"], serde_json::json!([]), "{v}");
    assert_eq!(v["kernel_digest"].as_str().map(str::len), Some(64), "{v}");
    let (c, v) = attest(
        &mut g,
        &mut at,
        &format!("guest-proc {proc_src} /shim/proc.toml"),
    );
    assert_eq!(c, 1, "{v}");
    // The admin promotes both first snapshots (their page hashes, copied out of the guest).
    for vm in ["guest-kernel", "guest-proc"] {
        g.send(&format!("/shim/baseline.sh {vm}")).unwrap();
        let (out, next) = g.wait_for("vmseal-b64-end", at, wait).unwrap();
        at = next;
        let b64: String = out
            .split("vmseal-b64-begin")
            .nth(1)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with("vmseal-"))
            .collect();
        let file = p(&format!("{vm}.baseline.cbor"));
        std::fs::write(p("b64"), b64.trim()).unwrap();
        let dec = Command::new("sh")
            .arg("-c")
            .arg(format!("base64 -d {} > {file}", p("b64")))
            .status()
            .unwrap();
        assert!(dec.success());
        if vm == "guest-kernel" {
            // The kernel's objects, read through /proc/kcore with the layout of
            // /sys/kernel/btf/vmlinux: every walk finished, the two views agree, the shim itself
            // among the processes, virtio_net in both views.
            let b = vmseal_capture::Baseline::from_bytes(&std::fs::read(&file).unwrap()).unwrap();
            let k = vmseal_sealer::claims::KernelObjects::decode(&b.kernel.unwrap()).unwrap();
            assert_eq!(k.errors, [], "{k:?}");
            assert!(k.tasks.len() > 20, "{k:?}");
            assert!(k.tasks.iter().all(|t| t.listed), "{k:?}");
            assert!(
                k.tasks
                    .iter()
                    .any(|t| t.comm == "vmseal-shim"
                        && t.exe.as_deref() == Some("/shim/vmseal-shim")),
                "{k:?}"
            );
            assert!(
                k.modules
                    .iter()
                    .any(|m| m.name == "virtio_net" && m.listed && m.in_kset),
                "{k:?}"
            );
        }
        server.promote(vm, 0, &file);
    }
    // From now on the shim computes its deltas against the baseline the verifier serves.
    let (c, v) = attest(&mut g, &mut at, "guest-kernel kernel /shim/kernel.toml");
    assert_eq!((c, v["tier"].as_str()), (0, Some("affirming")), "{v}");
    let (c, v) = attest(
        &mut g,
        &mut at,
        &format!("guest-proc {proc_src} /shim/proc.toml"),
    );
    assert_eq!((c, v["tier"].as_str()), (0, Some("affirming")), "{v}");
    // Inside the guest, a write into the process's code.
    g.send(&format!("/shim/patch.sh {pid}")).unwrap();
    let (out, next) = g.wait_for("vmseal-patched", at, wait).unwrap();
    at = next;
    assert!(out.contains("vmseal-patched 0"), "{out}");
    let (c, v) = attest(
        &mut g,
        &mut at,
        &format!("guest-proc {proc_src} /shim/proc.toml"),
    );
    assert_eq!((c, v["tier"].as_str()), (2, Some("contraindicated")), "{v}");
    assert_eq!(v["changes"][0]["region"], "busybox-code", "{v}");
    assert_eq!(v["changes"][0]["changed_pages"], 1, "{v}");
    let (c, v) = attest(&mut g, &mut at, "guest-kernel kernel /shim/kernel.toml");
    assert_eq!(
        (c, v["tier"].as_str()),
        (0, Some("affirming")),
        "the kernel is untouched: {v}"
    );
    assert_eq!(
        (&v["kernel"]["golden"], &v["kernel"]["findings"]),
        (&true.into(), &serde_json::json!([])),
        "{v}"
    );
    // A root process the golden state does not know, started inside the guest: busybox's
    // `sleep` from a copy in /tmp (busybox runs the applet its file is named after).
    g.send("/bin/busybox mkdir -p /tmp/x && /bin/busybox cp /bin/busybox /tmp/x/sleep && /tmp/x/sleep 1000000 </dev/null >/dev/null 2>&1 &")
        .unwrap();
    at = g.wait_for("vmseal-done", at, wait).unwrap().1;
    let (c, v) = attest(&mut g, &mut at, "guest-kernel kernel /shim/kernel.toml");
    assert_eq!((c, v["score"].as_u64()), (1, Some(50)), "{v}");
    let f = &v["kernel"]["findings"][0];
    assert_eq!(
        (f["kind"].as_str(), f["severity"].as_str()),
        (Some("new_root_process"), Some("high")),
        "{v}"
    );
    assert!(
        f["subject"].as_str().unwrap().ends_with(" sleep")
            && f["detail"].as_str().unwrap().contains("(/tmp/x/sleep)"),
        "{v}"
    );
}

/// A guest with a vTPM (swtpm here, as an SVSM vTPM would be): the shim's intermediate carries both
/// anchors, its seed is sealed by the TPM, enrollment proves the AK by credential activation under
/// a token that requires both anchors, and the guest attests.
#[test]
fn a_shim_with_a_vtpm_enrols_by_credential_activation_and_attests() {
    let sw = Swtpm::start().unwrap();
    let g = Guest::init("guest-2", &["--tpm", &sw.tcti()]);
    let p = |f: &str| g.p(f);
    let v = Verifier::builder(p("verifier"))
        .args(&[
            "--ek-roots",
            sw.ek_issuer_pem().to_str().unwrap(),
            "--insecure-snp-root",
            &g.insecure_snp_root(),
        ])
        .start();
    g.token(&v, "both", &[]);
    let o = ok(g.enroll(&v));
    assert!(text(&o).contains("AK activated"), "{}", text(&o));
    let (mut child, _) = sleeping_process(60, &p("sleep.toml"), "code");
    v.register_vm("g2", "guest-2", Some(&p("sleep.toml")));
    let source = format!("process:{}", child.id());
    let o = g.attest(&v, "g2", &source, &p("sleep.toml"), &["--json"]);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(o.status.code(), Some(1), "no baseline yet: {}", text(&o));
    let a: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // Both anchors were verified at enrollment; the SNP one is the INSECURE stand-in, which the
    // trust vector flags (hardware 32, not 2).
    assert_eq!(a["trust_vector"]["hardware"], 32, "{a}");
}

/// Every cause that used to wedge a VM for good — a refused snapshot (a stale baseline, a
/// host-side policy edit), a wrong verifier URL or CA, a crash between sealing and submitting, a
/// rebuilt host, a VM removed and registered again — now costs one snapshot at most: once the
/// cause is fixed, the next capture is accepted with no manual step on the chain. Each entry of
/// docs/operations.md's "When something goes wrong" is one step here.
#[test]
fn a_refused_snapshot_never_wedges_a_vm_and_a_rebuilt_host_resumes() {
    // A TPM-anchored host: rebuilt below from the same TPM (its hardware root continues).
    let h = Host::builder().init();
    let server = h.verifier().start();
    let (url, ca) = (server.url(), server.ca());
    let admin = |args: &[&str]| server.admin(args);
    let cert = h.agent_cert_args();
    let cert: Vec<&str> = cert.iter().map(String::as_str).collect();
    let enroll = |token: &str| h.enroll(&server, token, &cert);
    let token = |name: &str, extra: &[&str]| h.token(&server, name, extra);
    token("token", &[]);
    // The token's key given as its certificate: named before anything is sent.
    std::fs::copy(h.p("token.key"), h.p("swapped.pem")).unwrap();
    std::fs::copy(h.p("token.key"), h.p("swapped.key")).unwrap();
    let o = enroll("swapped");
    assert!(text(&o).contains("not a PEM certificate"), "{}", text(&o));
    ok(enroll("token"));
    let policy = micro_vm_policy();
    let register = || server.register_vm("vm-r", "e2e-host", Some(&policy));
    register();
    // `vm run` of vm-r, one capture, submitted to `verifier` with `ca`; its JSON lines.
    let vm_run = |verifier: &str, ca: &str, extra: &[&str]| -> (Output, Vec<serde_json::Value>) {
        let mut a = vec![
            "--captures",
            "1",
            "--retry-secs",
            "2",
            "--verifier",
            verifier,
            "--verifier-ca",
            ca,
        ];
        a.extend_from_slice(&cert);
        a.extend_from_slice(extra);
        let o = h.vm_run_output(None, "vm-r", &a, "ev");
        let lines = json_stream(&o.stdout);
        (o, lines)
    };
    let accepted_seq = |o: &Output, lines: &[serde_json::Value]| -> u64 {
        assert!(o.status.success(), "{}", text(o));
        lines
            .iter()
            .find_map(|l| l["appraisal"]["seq"].as_u64())
            .unwrap_or_else(|| panic!("no appraisal: {}", text(o)))
    };
    let set_aside = |dir: &str| -> Vec<serde_json::Value> {
        let Ok(rd) = std::fs::read_dir(h.p(&format!("ev/{dir}"))) else {
            return vec![];
        };
        let mut notes: Vec<serde_json::Value> = rd
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .map(|e| serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap())
            .collect();
        notes.sort_by_key(|n| n["seq"].as_u64());
        notes
    };

    // #0 accepted; its page hashes become the golden baseline.
    let (o, l) = vm_run(&url, &ca, &[]);
    assert_eq!(accepted_seq(&o, &l), 0);
    server.promote("vm-r", 0, &h.p("ev/baseline.cbor"));
    let promoted = std::fs::read(h.p("ev/baseline.cbor")).unwrap();

    // 1. A policy edited on the host (by a comment): refused policy_mismatch, the evidence set
    //    aside with the verifier's reason, exit 1. The fix (the verifier's policy): accepted at
    //    #1, on the verifier's head.
    std::fs::write(
        h.p("edited.toml"),
        format!(
            "{}\n# tuned on the host\n",
            std::fs::read_to_string(&policy).unwrap()
        ),
    )
    .unwrap();
    let (o, _) = vm_run(&url, &ca, &["--policy", &h.p("edited.toml")]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let refused = set_aside("refused");
    assert_eq!(refused.len(), 1, "{}", text(&o));
    assert_eq!(refused[0]["seq"], 1);
    assert_eq!(refused[0]["code"], "policy_mismatch", "{}", refused[0]);
    let (o, l) = vm_run(&url, &ca, &[]);
    assert_eq!(accepted_seq(&o, &l), 1, "{}", text(&o));
    assert_eq!(
        std::fs::read(h.p("ev/baseline.cbor")).unwrap(),
        promoted,
        "the promoted baseline file is never overwritten"
    );

    // 2. A wrong verifier URL: retried for --retry-secs, then set aside, exit 1. Then accepted.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("https://localhost:{}", l.local_addr().unwrap().port())
    };
    let (o, _) = vm_run(&dead, &ca, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("cannot reach the verifier"),
        "{}",
        text(&o)
    );
    assert_eq!(
        set_aside("undelivered").len(),
        0,
        "sync fails first: nothing was sealed"
    );

    // 3. A CA that is not the verifier's: named, nothing sealed; then accepted.
    let other_ca = h.p("other-verifier");
    ok(run("vmseal-verifier", &["init", "--state", &other_ca]));
    let (o, _) = vm_run(&url, &format!("{other_ca}/ca.pem"), &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("give the verifier's own ca.pem"),
        "{}",
        text(&o)
    );
    let (o, l) = vm_run(&url, &ca, &[]);
    assert_eq!(accepted_seq(&o, &l), 2, "{}", text(&o));

    // 3b. The verifier goes down (killed) while a snapshot is on its way: the same evidence is
    //     retried until it is back, and accepted once (#3 and #4 of this run).
    let mut child = Command::new(bin("vmseal-host"))
        .args([
            "vm",
            "run",
            "--state",
            &h.p("state"),
            "--vm-id",
            "vm-r",
            "--mem-mib",
            "16",
            "--ws-pages",
            "64",
            "--out-dir",
            &h.p("ev"),
            "--json",
            "--captures",
            "2",
            "--interval-ms",
            "3000",
            "--retry-secs",
            "40",
            "--verifier",
            &url,
            "--verifier-ca",
            &ca,
            "--agent-cert",
            &h.p("agent.pem"),
            "--agent-key",
            &h.p("agent.key"),
        ])
        .env("TSS2_LOG", "all+NONE")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = serde_json::Deserializer::from_reader(child.stdout.take().unwrap())
        .into_iter::<serde_json::Value>();
    let first: serde_json::Value = loop {
        let v = lines.next().expect("vm run ended early").unwrap();
        if v.get("appraisal").is_some() {
            break v;
        }
    };
    assert_eq!(first["appraisal"]["seq"], 3, "{first}");
    server.stop();
    std::thread::sleep(std::time::Duration::from_secs(7));
    server.restart();
    let rest: Vec<serde_json::Value> = lines.map(Result::unwrap).collect();
    assert!(child.wait().unwrap().success(), "{rest:?}");
    let second = rest.iter().find(|v| v.get("appraisal").is_some()).unwrap();
    assert_eq!(second["appraisal"]["seq"], 4, "{rest:?}");
    assert!(second["attempts"].as_u64().unwrap() > 1, "{second}");

    // 4. Sealed but never submitted (a crash, an outage): the local record ran ahead to #7. The
    //    agent builds on the verifier's head, and a host-side policy edit does not drift: it
    //    captures under the verifier's assigned policy.
    for n in 0..2 {
        ok(run(
            "vmseal-host",
            &[
                "capture",
                "--state",
                &h.p("state"),
                "--vm-id",
                "vm-r",
                "--source",
                "kvm",
                "--out",
                &h.p(&format!("lost-{n}.cose")),
            ],
        ));
    }
    std::fs::write(
        h.p("agent.toml"),
        format!(
            "state = \"state\"\nout_dir = \"agent-ev\"\n\
             [verifier]\nurl = \"{url}\"\nca = \"{ca}\"\nagent_cert = \"agent.pem\"\nagent_key = \"agent.key\"\nretry_secs = 2\n\
             [[vm]]\nid = \"vm-r\"\nsource = \"kvm\"\npolicy = \"edited.toml\"\ninterval_secs = 1\n"
        ),
    )
    .unwrap();
    let events = h.run_agent(1);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["seq"], 5, "{events:?}");
    assert_eq!(events[0]["appraisal"]["seq"], 5, "{events:?}");

    // 5. A rebuilt host: new state (same TPM, same host id), so a new intermediate key. A plain
    //    token is refused, naming the fix; a --restart-chains token continues the chain at #6.
    std::fs::remove_dir_all(h.p("state")).unwrap();
    ok(run(
        "vmseal-host",
        &[
            "init",
            "--state",
            &h.p("state"),
            "--tpm",
            &h.tcti(),
            "--snp",
            "none",
            "--host-id",
            "e2e-host",
        ],
    ));
    token("token2", &[]);
    let o = enroll("token2");
    assert!(!o.status.success());
    assert!(
        text(&o).contains("chains_exist") && text(&o).contains("--restart-chains"),
        "{}",
        text(&o)
    );
    token("token3", &["--restart-chains"]);
    ok(enroll("token3"));
    let (o, l) = vm_run(&url, &ca, &[]);
    assert_eq!(accepted_seq(&o, &l), 6, "{}", text(&o));
    let audit = ok(admin(&["--json", "audit", "verify"]));
    assert!(audit.status.success());

    // 6. Removed and registered again: the chain starts over at #0, no manual step on the host.
    let o = admin(&["vms", "remove", "--vm-id", "vm-r"]);
    assert!(
        !o.status.success() && text(&o).contains("--yes"),
        "{}",
        text(&o)
    );
    ok(admin(&["vms", "remove", "--vm-id", "vm-r", "--yes"]));
    register();
    let (o, l) = vm_run(&url, &ca, &[]);
    assert_eq!(accepted_seq(&o, &l), 0, "{}", text(&o));
    let head = ok(admin(&["--json", "vms", "chain", "--vm-id", "vm-r"]));
    let head: serde_json::Value = serde_json::from_slice(&head.stdout).unwrap();
    assert_eq!(head["next_seq"], 1);
    drop(server);
}

/// An auditor checks a VM's history offline with public material: `verify --chain` verifies every
/// file and names each gap (a removed snapshot) and fork (two snapshots claiming one number).
#[test]
fn an_auditor_finds_every_gap_and_fork_in_a_vms_history() {
    let h = Host::builder().init();
    h.image(16);
    std::fs::create_dir(h.p("hist")).unwrap();
    let seal = |seq: u64| {
        ok(h.seal(
            "vm-h",
            &format!("hist/vm-h-{seq:06}.cose"),
            &["--region", "all:code:critical:0:0x10000", "--json"],
        ));
    };
    for seq in 0..12 {
        seal(seq);
    }
    let audit = |extra: &[&str]| {
        let roots = h.ek_ca();
        let hist = h.p("hist");
        let mut a = vec!["verify", "--chain", "--roots", &roots];
        a.extend_from_slice(extra);
        a.push(&hist);
        run("vmseal-certs", &a)
    };
    let o = audit(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("vm-h: #0..#11, 12 evidence, host e2e-host: chain intact"),
        "{}",
        text(&o)
    );
    // #5 removed: named, exit 1 (each file alone still verifies).
    let removed = h.p("removed-5.cose");
    std::fs::rename(h.p("hist/vm-h-000005.cose"), &removed).unwrap();
    let o = audit(&[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("gap: #5 is missing (between #4 and #6"),
        "{}",
        text(&o)
    );
    std::fs::rename(&removed, h.p("hist/vm-h-000005.cose")).unwrap();
    // A fork: the host state rolled back to #10 seals another #11 (a host hiding a snapshot).
    let st = h.p("state/vms/vm-h.json");
    let at11 = std::fs::read(&st).unwrap();
    let mut chain: serde_json::Value = serde_json::from_slice(&at11).unwrap();
    chain["next_seq"] = 11.into();
    // Roll back to #10's digest: the prev of #11 as sealed.
    let c11 = run(
        "vmseal-certs",
        &[
            "inspect",
            "--json",
            "--roots",
            &h.ek_ca(),
            &h.p("hist/vm-h-000011.cose"),
        ],
    );
    let v: serde_json::Value = serde_json::from_slice(&c11.stdout).unwrap();
    chain["prev"] = v[0]["node"]["fields"]["prev"].clone();
    std::fs::write(&st, serde_json::to_vec(&chain).unwrap()).unwrap();
    ok(h.seal(
        "vm-h",
        "hist/vm-h-000011-other.cose",
        &["--region", "all:code:critical:0:0x10000"],
    ));
    let o = audit(&["--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let f = &j["chains"][0]["findings"];
    assert_eq!(f.as_array().unwrap().len(), 1, "{j}");
    assert_eq!(
        (f[0]["kind"].as_str(), f[0]["seq"].as_u64()),
        (Some("fork"), Some(11)),
        "{j}"
    );
    assert_eq!(j["files"], 13);
    // A tampered file is invalid on its own, and named.
    let mut bad = std::fs::read(h.p("hist/vm-h-000003.cose")).unwrap();
    let n = bad.len();
    bad[n - 10] ^= 1;
    std::fs::write(h.p("hist/vm-h-000003.cose"), bad).unwrap();
    let o = audit(&[]);
    assert!(
        text(&o).contains("vm-h-000003.cose: INVALID"),
        "{}",
        text(&o)
    );
}

/// Every fuzz target under fuzz/ also runs as a short deterministic smoke test on stable (a
/// `fuzzing::<target>` call in some crate's tests), and docs/testing.md names every target.
#[test]
fn every_fuzz_target_has_a_smoke_run_and_is_documented() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut tests_text = String::new();
    for dir in [
        "sealer/tests/it",
        "capture/tests",
        "host/tests/it",
        "verifier/tests/it",
        "guest-shim/tests",
    ] {
        for e in std::fs::read_dir(root.join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "rs") {
                tests_text.push_str(&std::fs::read_to_string(p).unwrap());
            }
        }
    }
    let testing = std::fs::read_to_string(root.join("docs/testing.md")).unwrap();
    let mut targets = Vec::new();
    for e in std::fs::read_dir(root.join("fuzz/fuzz_targets")).unwrap() {
        let p = e.unwrap().path();
        targets.push(p.file_stem().unwrap().to_str().unwrap().to_owned());
    }
    targets.sort();
    let smoked: Vec<&String> = targets
        .iter()
        .filter(|t| {
            ['(', ',', ';']
                .iter()
                .any(|c| tests_text.contains(&format!("fuzzing::{t}{c}")))
        })
        .collect();
    assert_eq!(
        smoked.len(),
        targets.len(),
        "smoke runs: {smoked:?} of {targets:?}"
    );
    for t in &targets {
        assert!(
            testing.contains(&format!("`{t}`")),
            "docs/testing.md does not name {t}"
        );
    }
    assert!(
        testing.contains(&format!("{} targets", targets.len())),
        "docs/testing.md must say how many targets there are ({})",
        targets.len()
    );
}

/// The audit log cannot be rewritten unnoticed: the verifier signs checkpoints of its head, every
/// alert delivery carries the newest (the reference receiver keeps them), and `vmseal-certs
/// verify-audit` checks an export against them offline — a history rewritten with every hash
/// recomputed (what a database writer can do) is named.
#[test]
fn signed_audit_checkpoints_expose_a_rewritten_history() {
    let h = Host::builder().init();
    let v = h.verifier().args(&["--audit-checkpoint-secs", "1"]).start();
    let ca = v.ca();
    let admin = |args: &[&str]| v.admin(args);
    h.enrol_agent(&v);
    let policy = micro_vm_policy();
    v.register_vm("vm-a", "e2e-host", Some(&policy));
    // A receiver that keeps the checkpoints its deliveries carry.
    let kept = h.p("kept");
    let (receiver, hook) = webhook_receiver(&ca, &["--checkpoints", &kept]);
    ok(admin(&["webhooks", "add", "--name", "ops", "--url", &hook]));
    // Let the periodic checkpoint cover the setup, then raise an alert: a refused snapshot.
    std::thread::sleep(std::time::Duration::from_secs(2));
    std::fs::write(
        h.p("edited.toml"),
        format!("{}\n# edited\n", std::fs::read_to_string(&policy).unwrap()),
    )
    .unwrap();
    let edited = h.p("edited.toml");
    let o = h.vm_run_output(
        Some(&v),
        "vm-a",
        &["--captures", "1", "--policy", &edited],
        "ev",
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = receiver.wait_with_output().unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("verified audit checkpoint: entry #"),
        "{printed}"
    );
    assert!(
        std::fs::read_dir(&kept).unwrap().count() >= 1,
        "the receiver kept the checkpoint"
    );
    // On demand, and the export.
    ok(admin(&["audit", "checkpoint", "--out", &h.p("now.jwt")]));
    ok(admin(&["audit", "export", "--out", &h.p("audit.json")]));
    let verify = |export: &str, checkpoints: &[&str]| {
        let mut a = vec!["verify-audit", "--ca", &ca, "--export", export];
        for c in checkpoints {
            a.extend(["--checkpoint", c]);
        }
        run("vmseal-certs", &a)
    };
    let o = verify(&h.p("audit.json"), &[&kept, &h.p("now.jwt")]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("audit log intact"), "{}", text(&o));
    // The history rewritten: the enrollment's entry edited, every later hash recomputed.
    let mut e: serde_json::Value =
        serde_json::from_slice(&std::fs::read(h.p("audit.json")).unwrap()).unwrap();
    let entries = e["entries"].as_array_mut().unwrap();
    let mut prev = [0u8; 32];
    for x in entries.iter_mut() {
        if x["action"] == "enroll_host" {
            x["detail"] = serde_json::Value::String("{\"host\":\"someone-else\"}".into());
        }
        let h = vmseal_client::audit::entry_hash(
            &prev,
            x["id"].as_i64().unwrap(),
            x["at"].as_i64().unwrap(),
            x["actor"].as_str().unwrap(),
            x["action"].as_str().unwrap(),
            x["detail"].as_str().unwrap(),
        );
        x["prev_hash"] = hex::encode(prev).into();
        x["hash"] = hex::encode(h).into();
        prev = h;
    }
    std::fs::write(h.p("rewritten.json"), serde_json::to_vec(&e).unwrap()).unwrap();
    let o = verify(&h.p("rewritten.json"), &[]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "without checkpoints: {}",
        text(&o)
    );
    let o = verify(&h.p("rewritten.json"), &[&kept, &h.p("now.jwt")]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("was rewritten"), "{}", text(&o));
    // A checkpoint signed by another verifier's key is refused, not trusted.
    let other = h.p("other-verifier");
    ok(run("vmseal-verifier", &["init", "--state", &other]));
    let o = run(
        "vmseal-certs",
        &[
            "verify-audit",
            "--ca",
            &format!("{other}/ca.pem"),
            "--export",
            &h.p("audit.json"),
            "--checkpoint",
            &h.p("now.jwt"),
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("INVALID"), "{}", text(&o));
}

/// An agent renews its certificate by proving its TPM again: the new certificate works, the old
/// one is refused at once (revoked), the renewal is audited, and `admin hosts list` shows the new
/// expiry and the host's last evidence.
#[test]
fn an_agent_renews_its_certificate_by_proving_its_tpm_again() {
    let h = Host::builder().init();
    let server = h.verifier().start();
    let (url, ca, vst) = (server.url(), server.ca(), server.state().to_owned());
    let admin = |args: &[&str]| server.admin(args);
    h.enrol(&server, &[]);
    server.register_vm("vm-a", "e2e-host", None);
    let state = h.p("state");
    let host_cmd = |sub: &str, extra: &[&str]| {
        let mut a = vec![
            sub,
            "--state",
            &state,
            "--verifier",
            &url,
            "--verifier-ca",
            &ca,
        ];
        a.extend_from_slice(extra);
        run("vmseal-host", &a)
    };
    let vm_run = |cert: &str, key: &str| {
        let a = [
            "--captures",
            "1",
            "--retry-secs",
            "0",
            "--verifier",
            &url,
            "--verifier-ca",
            &ca,
            "--agent-cert",
            cert,
            "--agent-key",
            key,
        ];
        h.vm_run_output(None, "vm-a", &a, "ev")
    };
    ok(vm_run(&h.p("state/agent.pem"), &h.p("state/agent.key")));
    std::fs::copy(h.p("state/agent.pem"), h.p("old.pem")).unwrap();
    std::fs::copy(h.p("state/agent.key"), h.p("old.key")).unwrap();
    let o = ok(host_cmd("renew", &["--json"]));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let left = r["not_after"].as_i64().unwrap() - time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(left > 390 * 86_400, "{r}");
    assert_ne!(
        std::fs::read(h.p("state/agent.pem")).unwrap(),
        std::fs::read(h.p("old.pem")).unwrap()
    );
    // The new certificate works; the old one is revoked (the revocation reaches this replica at
    // once).
    ok(vm_run(&h.p("state/agent.pem"), &h.p("state/agent.key")));
    let o = vm_run(&h.p("old.pem"), &h.p("old.key"));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("revoked"), "{}", text(&o));
    // The old certificate cannot renew itself either.
    let o = host_cmd(
        "renew",
        &[
            "--agent-cert",
            &h.p("old.pem"),
            "--agent-key",
            &h.p("old.key"),
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let hosts = ok(admin(&["--json", "hosts", "list"]));
    let v: serde_json::Value = serde_json::from_slice(&hosts.stdout).unwrap();
    let host = &v["hosts"][0];
    assert_eq!(host["agent_not_after"], r["not_after"], "{v}");
    assert!(host["last_evidence"].is_i64(), "{v}");
    assert_eq!(host["vms"], 1);
    let human = ok(admin(&["hosts", "list"]));
    assert!(text(&human).contains("days left"), "{}", text(&human));
    ok(admin(&["audit", "verify"]));
    // The doctors: the host's (state, TPM, PCRs, certificates, the verifier, each VM's chain) and
    // the admin's (the verifier, certificates, audit, hosts, VMs, alerts) all pass…
    let o = ok(host_cmd("status", &["--json"]));
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let names: Vec<&str> = st["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "state",
            "tpm",
            "seal",
            "intermediate certificate",
            "agent certificate",
            "verifier",
            "vm vm-a"
        ],
        "{st}"
    );
    assert!(
        text(&o).contains("last accepted snapshot #1"),
        "{}",
        text(&o)
    );
    ok(admin(&["status"]));
    // …and fail, naming the fix, when the TPM is gone.
    let o = run(
        "vmseal-host",
        &[
            "status",
            "--state",
            &h.p("state"),
            "--tpm",
            "swtpm:host=127.0.0.1,port=1",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("FAIL tpm") && text(&o).contains("fix:"),
        "{}",
        text(&o)
    );
    // An agent certificate 10 days from its end is the host's problem, alerted on its VMs (the
    // database edited as if 387 days had passed; the re-appraisal runs at start).
    server.stop();
    let ends = time::OffsetDateTime::now_utc().unix_timestamp() + 10 * 86_400;
    let py = format!(
        "import sqlite3; c = sqlite3.connect('{vst}/verifier.db'); \
         c.execute('UPDATE hosts SET agent_not_after = {ends}'); c.commit()"
    );
    ok(Command::new("python3").args(["-c", &py]).output().unwrap());
    server.restart();
    let mut listed = String::new();
    for _ in 0..50 {
        listed = text(&ok(admin(&["hosts", "list"])));
        if listed.contains("agent certificate expires") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(listed.contains("vmseal-host renew"), "{listed}");
    let alerts = text(&ok(admin(&["alerts", "list"])));
    assert!(alerts.contains("agent certificate expires"), "{alerts}");
    let o = admin(&["status"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("FAIL hosts"), "{}", text(&o));
    // An admin renews their own certificate: the new one works, the old one is revoked.
    ok(admin(&[
        "renew-cert",
        "--out-cert",
        &h.p("admin2.pem"),
        "--out-key",
        &h.p("admin2.key"),
    ]));
    let with = |cert: &str, key: &str| {
        run(
            "vmseal-verifier",
            &[
                "admin",
                "--verifier",
                &url,
                "--state",
                &vst,
                "--cert",
                cert,
                "--key",
                key,
                "vms",
            ],
        )
    };
    ok(with(&h.p("admin2.pem"), &h.p("admin2.key")));
    let o = with(&format!("{vst}/admin.pem"), &format!("{vst}/admin.key"));
    assert!(
        !o.status.success() && text(&o).contains("revoked"),
        "{}",
        text(&o)
    );
}

/// Each binary prints its shell completions and man page, made from its CLI definition.
#[test]
fn every_binary_makes_its_completions_and_man_page() {
    for (bin, sub) in [
        ("vmseal-host", "renew"),
        ("vmseal-verifier", "admin"),
        ("vmseal-certs", "verify-audit"),
        ("vmseal-shim", "attest"),
    ] {
        for shell in ["bash", "zsh", "fish", "elvish"] {
            let o = run(bin, &["completions", shell]);
            assert!(o.status.success(), "{bin} {shell}: {}", text(&o));
            let t = String::from_utf8_lossy(&o.stdout);
            assert!(t.contains(bin) && t.contains(sub), "{bin} {shell}");
        }
        let o = run(bin, &["man"]);
        assert!(o.status.success(), "{bin}: {}", text(&o));
        let t = String::from_utf8_lossy(&o.stdout);
        assert!(
            t.starts_with(".ie") || t.contains(".TH"),
            "{bin}: {}",
            &t[..t.len().min(200)]
        );
        assert!(t.to_uppercase().contains(&sub.to_uppercase()), "{bin}");
        let o = run(bin, &["completions", "tcsh"]);
        assert_eq!(
            o.status.code(),
            Some(2),
            "{bin}: an unknown shell is a usage error"
        );
    }
}

/// docs/architecture.md's diagram names every module of every crate under its crate, and names no
/// module that is gone (an indented `name   what it is` line under a crate is a module).
#[test]
fn the_architecture_diagram_names_every_module() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let doc = std::fs::read_to_string(root.join("docs/architecture.md")).unwrap();
    let diagram = doc.split("```").nth(1).unwrap();
    // crate directory → its section of the diagram
    let mut sections: Vec<(String, String)> = Vec::new();
    for line in diagram.lines() {
        match line.split_once('/') {
            Some((dir, _)) if !line.starts_with(' ') && !dir.contains(' ') => {
                sections.push((dir.to_owned(), String::new()))
            }
            _ => {
                if let Some((_, text)) = sections.last_mut() {
                    text.push_str(line);
                    text.push('\n');
                }
            }
        }
    }
    let words = |text: &str, w: &str| {
        text.split(|c: char| !c.is_alphanumeric() && c != '_')
            .any(|t| t == w)
    };
    let mut problems = Vec::new();
    for (dir, text) in &sections {
        let mut modules = std::collections::BTreeSet::new();
        let declared = |file: &Path| -> Vec<String> {
            std::fs::read_to_string(file)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.strip_prefix("pub mod ").or(l.strip_prefix("mod ")))
                .filter_map(|d| d.strip_suffix(';'))
                .map(str::to_owned)
                .collect()
        };
        let src = root.join(dir).join("src");
        for f in ["lib.rs", "main.rs"] {
            modules.extend(declared(&src.join(f)));
        }
        // A module that is a directory: its own modules must be named in the crate's section too.
        let mut nested = Vec::new();
        for m in &modules {
            for sub in declared(&src.join(m).join("mod.rs")) {
                if !sub.ends_with("tests") && sub != "fuzzing" && !words(text, &sub) {
                    nested.push(format!("{dir}/: module `{m}::{sub}` is not in the diagram"));
                }
            }
        }
        problems.extend(nested);
        // Test-only and fuzzing entry points are not part of the design.
        modules.retain(|m| !m.ends_with("tests") && m != "fuzzing");
        for m in &modules {
            if !words(text, m) {
                problems.push(format!("{dir}/: module `{m}` is not in the diagram"));
            }
        }
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("  ") else {
                continue;
            };
            let name = rest.split_whitespace().next().unwrap_or_default();
            let is_entry = !rest.starts_with(' ')
                && rest.len() > name.len() + 1
                && rest[name.len()..].starts_with("  ")
                && name.chars().all(|c| c.is_ascii_lowercase() || c == '_');
            if is_entry && !modules.is_empty() && !modules.contains(name) {
                problems.push(format!(
                    "{dir}/: the diagram names `{name}`, which is no module"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Kernel objects through the whole loop, in a real Linux guest (QEMU TCG, KASLR on): the host
/// captures with the policy's `[kernel_objects]` and no symbol map (the kernel's own kallsyms
/// tables from its image, this boot's slide from its interrupt table), the verifier promotes the
/// golden state with the baseline, then each rootkit attack, made from the host side by `vmseal-rootkit` or through
/// the guest's own console, is found, named and scored — in the appraisal, `admin appraisals`
/// and the alert.
#[test]
fn every_rootkit_attack_on_a_linux_guests_kernel_objects_is_found_named_and_scored() {
    let mut g = vmseal_testkit::QemuGuest::boot_with(&vmseal_testkit::GuestOptions {
        mem_mib: 256,
        kaslr: true,
        control: true,
        ..Default::default()
    })
    .unwrap();
    let console = g.console();
    let user = console
        .lines()
        .find_map(|l| l.strip_prefix("vmseal-user "))
        .expect("the guest started its user process")
        .trim()
        .to_owned();
    let h = Host::builder().init();
    let v = h.verifier().start();
    h.enrol_agent(&v);
    let kernel = vmseal_testkit::QemuGuest::kernel_dir()
        .unwrap()
        .join("vmlinuz");
    std::fs::write(
        h.p("linux.toml"),
        format!(
            "name = \"linux\"\nversion = 1\nkernel = \"{}\"\n\
             [[region]]\nname = \"kernel-text\"\nclass = \"code\"\nseverity = \"critical\"\n\
             symbol = \"_stext\"\nend_symbol = \"_etext\"\nkaslr = \"undo\"\n\
             [kernel_objects]\nallow = [\"kworker\"]\n",
            kernel.display()
        ),
    )
    .unwrap();
    v.register_vm("linux", h.id(), Some(&h.p("linux.toml")));
    let qemu = format!("{},{}", g.qmp().display(), g.mem().display());
    let source = format!("qemu:{qemu}");
    let agent = h.agent_args(&v);
    let (policy, state) = (h.p("linux.toml"), h.p("state"));
    let capture = |n: u32| -> serde_json::Value {
        let (out, base) = (h.p(&format!("k{n}.cose")), h.p(&format!("k{n}.cbor")));
        let mut a = vec![
            "capture",
            "--source",
            &source,
            "--policy",
            &policy,
            "--state",
            &state,
            "--vm-id",
            "linux",
            "--out",
            &out,
            "--baseline-out",
            &base,
            "--json",
        ];
        a.extend(agent.iter().map(String::as_str));
        let o = ok(run("vmseal-host", &a));
        let events = vmseal_testkit::scenario::json_stream(&o.stdout);
        assert!(
            events[0]["kernel"]["processes"].as_u64().unwrap() > 20,
            "{events:?}"
        );
        events
            .iter()
            .find_map(|e| e.get("appraisal").cloned())
            .unwrap_or_else(|| panic!("no appraisal: {events:?}"))
    };
    let findings = |a: &serde_json::Value| -> Vec<(String, String, String)> {
        a["kernel"]["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["kind"].as_str().unwrap().to_owned(),
                    f["subject"].as_str().unwrap().to_owned(),
                    f["severity"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let rootkit = |args: &[&str]| {
        let mut a = vec!["--qemu", &qemu, "--kernel", kernel.to_str().unwrap()];
        a.extend_from_slice(args);
        ok(run("vmseal-rootkit", &a))
    };
    let f3 = |k: &str, s: &str, sev: &str| (k.to_owned(), s.to_owned(), sev.to_owned());

    // 0. The first capture: both views of every object agree, every walk finished.
    let a = capture(0);
    assert_eq!(findings(&a), [], "{a}");
    assert_eq!(a["kernel"]["golden"], false, "{a}");
    v.promote("linux", 0, &h.p("k0.cbor"));
    // 1. Against the golden state: clean.
    let a = capture(1);
    assert_eq!((findings(&a), &a["score"]), (vec![], &100.into()), "{a}");
    assert_eq!(a["kernel"]["golden"], true, "{a}");
    // The agent captures it the same way, under the policy the verifier assigned.
    std::fs::write(
        h.p("agent.toml"),
        format!(
            "state = \"state\"\nout_dir = \"agent-ev\"\n\
             [verifier]\nurl = \"{}\"\nca = \"{}\"\nagent_cert = \"agent.pem\"\nagent_key = \"agent.key\"\n\
             [[vm]]\nid = \"linux\"\nsource = \"{source}\"\ninterval_secs = 1\n",
            v.url(),
            v.ca()
        ),
    )
    .unwrap();
    // Two rounds: the second reuses what the first found of this boot's kernel.
    let events = h.run_agent(2);
    assert_eq!(events.len(), 2, "{events:?}");
    for e in &events {
        let a = &e["appraisal"];
        assert_eq!(
            (findings(a), &a["score"], &a["kernel"]["golden"]),
            (vec![], &100.into(), &true.into()),
            "{events:?}"
        );
    }

    // 2. A shell that became root: the golden user process's euid set to 0.
    rootkit(&["raise-euid", &user]);
    let a = capture(2);
    assert_eq!(
        findings(&a),
        [f3(
            "new_root_process",
            &format!("pid {user} busybox"),
            "high"
        )],
        "{a}"
    );
    assert_eq!(a["score"], 50, "{a}");

    // 3. Processes started through the guest's console: one as root, one as the user.
    let (_, mut at) = g
        .wait_for("vmseal-ready", 0, std::time::Duration::from_secs(5))
        .unwrap();
    for cmd in [
        "/bin/sh -c 'while :; do /bin/busybox sleep 100; done' </dev/null >/dev/null 2>&1 &",
        "/bin/busybox su user -c \"exec /bin/sh -c 'while :; do /bin/busybox sleep 100; done'\" </dev/null >/dev/null 2>&1 &",
    ] {
        g.send(cmd).unwrap();
        at = g
            .wait_for("vmseal-done", at, std::time::Duration::from_secs(30))
            .unwrap()
            .1;
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let a = capture(3);
    let f = findings(&a);
    let kinds: Vec<(&str, &str)> = f
        .iter()
        .map(|(k, s, _)| (k.as_str(), s.rsplit(' ').next().unwrap()))
        .collect();
    // The raised process still runs as root; the root shell and its `sleep` are new root
    // processes; the user's shell is a new process (its `sleep` runs as the golden user process
    // does).
    assert_eq!(
        kinds,
        [
            ("new_root_process", "busybox"),
            ("new_root_process", "sh"),
            ("new_root_process", "busybox"),
            ("new_process", "sh")
        ],
        "{a}"
    );
    assert_eq!(
        (&a["score"], &a["tier"]),
        (&45.into(), &"warning".into()),
        "{a}"
    );

    // 4. Direct kernel object manipulation: a process and a module hidden, a system call and
    //    an interrupt gate hooked. Each is critical, and named.
    rootkit(&["hide-process", "2"]);
    rootkit(&["hide-module", "virtio_ring"]);
    rootkit(&["hook-syscall", "134"]);
    rootkit(&["hook-gate", "3"]);
    let a = capture(4);
    let critical: Vec<(String, String, String)> = findings(&a)
        .into_iter()
        .filter(|(_, _, s)| s == "critical")
        .collect();
    assert_eq!(
        critical,
        [
            f3("hidden_process", "pid 2 kthreadd", "critical"),
            f3("hidden_module", "module virtio_ring", "critical"),
            f3("hooked_syscall", "syscall 134", "critical"),
            f3("hooked_gate", "gate 3", "critical"),
        ],
        "{a}"
    );
    assert_eq!(
        (&a["score"], &a["tier"]),
        (&0.into(), &"contraindicated".into()),
        "{a}"
    );
    assert!(
        a["kernel"]["findings"][2]["detail"]
            .as_str()
            .unwrap()
            .contains("outside the kernel's and every listed module's text"),
        "{a}"
    );
    // Anyone reading the evidence with public material sees the views disagree.
    let o = run("vmseal-certs", &["inspect", &h.p("k4.cose")]);
    assert!(
        text(&o).contains("HIDDEN process")
            && text(&o).contains("pid 2 kthreadd (known by pid, not on the task list)")
            && text(&o).contains("virtio_ring (in the module kset, not on the module list)"),
        "{}",
        text(&o)
    );
    // The admin's view and the alert name them too.
    let o = ok(v.admin(&["appraisals", "--vm-id", "linux"]));
    assert!(
        text(&o).contains("kernel: hidden process pid 2 kthreadd (critical)"),
        "{}",
        text(&o)
    );
    let o = ok(v.admin(&["--json", "alerts", "list"]));
    let alerts: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        alerts["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|al| al["message"]
                .as_str()
                .unwrap()
                .contains("hidden process pid 2 kthreadd (critical)")),
        "{alerts}"
    );
}
