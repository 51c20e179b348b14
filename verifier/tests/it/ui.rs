//! The web page in a real browser: Debian's Chromium, headless, driven by Playwright with a
//! viewer's client certificate. It must show the VMs with their tier and score, the score chart,
//! the changed pages of the latest snapshot as a picture, and the open alert; the test keeps a
//! screenshot (target/ui-screenshot.png).

use std::path::{Path, PathBuf};
use std::process::Command;

use time::Duration;
use vmseal_verifier::pki::{Ca, Role};

use crate::api::{ALG, Host, admin, client, enrol, json, post_to, promote, start};

fn ui_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui")
}

#[test]
fn the_web_page_shows_vms_scores_changed_pages_and_alerts_in_chromium() {
    assert!(
        ui_dir().join("node_modules/playwright-core").exists(),
        "playwright-core is not installed: run `npm ci --prefix verifier/tests/ui` \
         (scripts/install-deps.sh does, with Debian's chromium)"
    );
    let s = start();
    let admin_c = admin(&s);
    let mut h = Host::new("host-1");
    let agent = enrol(&s, &admin_c, &h, None);
    let mut db = Host::new("host-2");
    let db_agent = enrol(&s, &admin_c, &db, None);
    for (vm, host) in [("web-1", "host-1"), ("db-1", "host-2")] {
        let (st, e) = post_to(
            &admin_c,
            &s.url,
            "/v1/vms",
            serde_json::json!({ "vm_id": vm, "host_id": host, "policy": crate::api::POLICY }),
        );
        assert_eq!(st, 201, "{e}");
    }
    let send = |agent: &reqwest::blocking::Client, h: &mut Host, vm: &str| {
        let (st, a) = json(
            agent
                .post(format!("{}/v1/vms/{vm}/evidence", s.url))
                .body(h.evidence(vm, None))
                .send()
                .unwrap(),
        );
        assert_eq!(st, 200, "{a}");
        a
    };
    let submit = |h: &mut Host, vm: &str| send(&agent, h, vm);
    // db-1: baselined, clean.
    send(&db_agent, &mut db, "db-1");
    promote(&s, "db-1", &mut db, 0);
    send(&db_agent, &mut db, "db-1");
    // web-1: baselined, three clean snapshots, then three kernel-text pages patched.
    submit(&mut h, "web-1");
    promote(&s, "web-1", &mut h, 0);
    for i in 0..3 {
        h.regions[2].3[i] = ALG.leaf(&[b'h', i as u8]);
        submit(&mut h, "web-1");
    }
    for p in [3, 4, 9] {
        h.regions[0].3[p] = ALG.leaf(&[b'r', p as u8]);
    }
    // The same snapshot carries the guest kernel's objects, one process unlinked from the task
    // list: hidden.
    let mut kernel = vmseal_sealer::claims::kernel::example::kernel();
    kernel.tasks[2].listed = false;
    let ev = h.evidence_edited("web-1", None, 0, |c| c.kernel = Some(kernel));
    let (st, a) = json(
        agent
            .post(format!("{}/v1/vms/web-1/evidence", s.url))
            .body(ev)
            .send()
            .unwrap(),
    );
    assert_eq!((st, &a["score"]), (200, &0.into()), "{a}");

    let dir = tempfile::tempdir().unwrap();
    let viewer = Ca::load(s.dir.path())
        .unwrap()
        .issue_client(&Role::Viewer("carol".into()), Duration::days(1))
        .unwrap();
    std::fs::write(dir.path().join("viewer.pem"), &viewer.cert_pem).unwrap();
    std::fs::write(dir.path().join("viewer.key"), &viewer.key_pem).unwrap();
    // An agent's certificate does not open the page.
    let agent_page = agent.get(format!("{}/ui", s.url)).send().unwrap();
    assert_eq!(agent_page.status(), 403);
    let v = client(&s, Some((&viewer.cert_pem, &viewer.key_pem)), None);
    let r = v.get(format!("{}/ui/app.js", s.url)).send().unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );

    let shot = dir.path().join("ui.png");
    let out = Command::new("node")
        .arg(ui_dir().join("page.mjs"))
        .arg(&s.url)
        .arg(dir.path().join("viewer.pem"))
        .arg(dir.path().join("viewer.key"))
        .arg(&shot)
        .output()
        .expect("node (Node.js) must be installed: scripts/install-deps.sh installs it");
    assert!(
        out.status.success(),
        "the browser run failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let page: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(page["http"], 200, "{page}");
    assert!(
        page["csp"].as_str().unwrap().contains("script-src 'self'"),
        "{page}"
    );
    assert_eq!(page["errors"], serde_json::json!([]), "{page}");
    assert_eq!(page["vms"], serde_json::json!(["db-1", "web-1"]), "{page}");
    assert_eq!(
        page["tiers"],
        serde_json::json!(["affirming", "contraindicated"]),
        "{page}"
    );
    // The VM most in need of attention is shown: its five appraisals, its threshold.
    assert_eq!(page["selected"], "web-1", "{page}");
    assert_eq!(
        (page["points"].as_u64(), page["threshold"].as_u64()),
        (Some(5), Some(1)),
        "{page}"
    );
    // The picture: one cell per page; exactly the patched kernel pages are red; the heap
    // pages written since the baseline too (data, low: they cost nothing, but they changed).
    let regions = page["regions"].as_array().unwrap();
    let region = |n: &str| {
        regions
            .iter()
            .find(|r| r["name"] == n)
            .unwrap_or_else(|| panic!("{n}: {page}"))
    };
    assert_eq!(region("kernel-text")["cells"], 16);
    assert_eq!(
        region("kernel-text")["changed"],
        serde_json::json!([3, 4, 9]),
        "{page}"
    );
    assert_eq!(
        region("task-table")["changed"],
        serde_json::json!([]),
        "{page}"
    );
    assert_eq!(
        region("heap")["changed"],
        serde_json::json!([0, 1, 2]),
        "{page}"
    );
    assert!(
        page["caption"]
            .as_str()
            .unwrap()
            .contains("score 0 (contraindicated)"),
        "{page}"
    );
    // The kernel's finding, named, at its severity.
    assert_eq!(
        page["kernel"],
        serde_json::json!([{ "kind": "hidden_process", "severity": "critical",
            "text": "critical hidden process pid 2 kthreadd: known by pid to the pid namespace but not on the task list" }]),
        "{page}"
    );
    assert!(
        page["kernelCaption"]
            .as_str()
            .unwrap()
            .starts_with("3 process(es), 1 module(s); no golden kernel state"),
        "{page}"
    );
    let alerts = page["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1, "{page}");
    assert!(
        alerts[0].as_str().unwrap().contains("below_threshold"),
        "{page}"
    );

    // The screenshot: a PNG of the whole page at the viewport's width.
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert_eq!(width, 1280);
    assert!(height >= 600, "{height}");
    assert!(
        png.len() > 30_000,
        "a rendered page, not a blank one: {} bytes",
        png.len()
    );
    let keep = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/ui-screenshot.png");
    let _ = std::fs::write(keep, &png);
}
