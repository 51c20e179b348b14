//! The capture engine on the running micro-VM: pre-copy equals stop-copy, incremental equals full,
//! attacks change exactly the regions they should, sampling is keyed by the nonce, and the result
//! seals into evidence that verifies.

use std::time::Duration;

use time::OffsetDateTime;
use vmseal_capture::policy::Policy;
use vmseal_capture::source::Pausable;
use vmseal_capture::testing::{StayPaused, pre_copy_then_stop_copy, roots};
use vmseal_capture::{Consistency, Plan, Snapshot};
use vmseal_host::guest;
use vmseal_host::kvm::{MicroVm, MicroVmConfig};
use vmseal_sealer::claims::ModuleInfo;

fn vm(ws_pages: u32) -> MicroVm {
    let vm = MicroVm::start(MicroVmConfig {
        mem_mib: 16,
        ws_pages,
        stride: 7,
    })
    .unwrap();
    assert!(
        vm.wait_heartbeats(2, Duration::from_secs(20)),
        "{:?}",
        vm.exited()
    );
    vm
}

fn plan(vm: &MicroVm, nonce: Option<&[u8]>) -> Plan {
    let policy = Policy::parse(guest::POLICY).unwrap();
    Plan::new(&policy, vm, Some(&guest::symbols(vm.program())), nonce).unwrap()
}

#[test]
fn pre_copy_equals_stop_copy_of_the_memory_at_the_pause() {
    let mut vm = vm(2048);
    let p = plan(&vm, None);
    let (pre, stop) = pre_copy_then_stop_copy(&mut vm, p).unwrap();
    assert!(
        pre.stats.pause < stop.stats.pause * 2 + Duration::from_millis(5),
        "{:?} vs {:?}",
        pre.stats,
        stop.stats
    );
    vm.resume().unwrap();
}

#[test]
fn incremental_equals_full() {
    let mut vm = vm(512);
    let p = plan(&vm, None);
    let s0 = Snapshot::full(&mut vm, p.clone(), Consistency::PreCopy).unwrap();
    assert!(vm.wait_heartbeats(3, Duration::from_secs(10)));
    vm.inject_pointer_hook(2, 9).unwrap();
    let inc = s0.incremental(&mut StayPaused(&mut vm), 0).unwrap();
    let full = Snapshot::full(&mut StayPaused(&mut vm), p.clone(), Consistency::StopCopy).unwrap();
    assert_eq!(roots(&inc), roots(&full));
    for (a, b) in inc.trees.iter().zip(&full.trees) {
        assert_eq!(a.leaves(), b.leaves());
    }
    assert!(
        inc.stats.pages_read < full.stats.pages_read,
        "{:?} vs {:?}",
        inc.stats,
        full.stats
    );
    assert_ne!(
        roots(&inc)[1],
        roots(&s0)[1],
        "the hooked syscall table changed"
    );
    vm.resume().unwrap();
}

#[test]
fn each_attack_changes_exactly_its_region() {
    let mut vm = vm(256);
    let p = plan(&vm, None);
    let base = Snapshot::full(&mut vm, p.clone(), Consistency::PreCopy).unwrap();
    let baseline = base.baseline();
    let stable = |s: &Snapshot| -> Vec<(String, [u8; 32])> {
        roots(s)
            .into_iter()
            .filter(|(n, _)| n != "working-set")
            .collect()
    };
    // No attack: code, tables and config are stable while the guest runs.
    assert!(vm.wait_heartbeats(2, Duration::from_secs(10)));
    let again = Snapshot::full(&mut vm, p.clone(), Consistency::PreCopy).unwrap();
    assert_eq!(stable(&again), stable(&base));
    assert!(
        again
            .delta(&baseline)
            .iter()
            .all(|d| d.region == "working-set")
    );

    type Attack = fn(&MicroVm) -> u64;
    let cases: [(&str, Attack); 3] = [
        ("guest-code", |vm| vm.inject_code_patch(3).unwrap()),
        ("syscall-table", |vm| vm.inject_pointer_hook(5, 6).unwrap()),
        ("task-table", |vm| vm.inject_hidden_task(7).unwrap()),
    ];
    let mut prev = again;
    for (region, attack) in cases {
        let at = attack(&vm);
        assert!(
            vm.wait_heartbeats(1, Duration::from_secs(10)),
            "{:?}",
            vm.exited()
        );
        let s = prev.incremental(&mut vm, 1).unwrap();
        let changed: Vec<String> = stable(&s)
            .into_iter()
            .zip(stable(&prev))
            .filter(|(a, b)| a.1 != b.1)
            .map(|(a, _)| a.0)
            .collect();
        assert_eq!(changed, vec![region.to_owned()], "attack at {at:#x}");
        let d = s.delta(&baseline);
        let rd = d
            .iter()
            .find(|d| d.region == region)
            .expect("delta names the region");
        let idx = s.plan.leaf_of(region, at).unwrap();
        assert!(
            rd.changes.iter().any(|(i, _)| *i == idx as u64),
            "the attacked page is in the delta"
        );
        prev = s;
    }
}

#[test]
fn sampled_regions_follow_the_nonce_and_seal_into_verifiable_evidence() {
    let vm = vm(64);
    let text = guest::POLICY.replace(
        "gpa = { start = 0x100000, len = 0x400000 }",
        "gpa = { start = 0x100000, len = 0x400000 }\nsample = 8",
    );
    let policy = Policy::parse(&text).unwrap();
    let syms = guest::symbols(vm.program());
    let a = Plan::new(&policy, &vm, Some(&syms), Some(b"nonce-a")).unwrap();
    let a2 = Plan::new(&policy, &vm, Some(&syms), Some(b"nonce-a")).unwrap();
    let b = Plan::new(&policy, &vm, Some(&syms), Some(b"nonce-b")).unwrap();
    let ws = |p: &Plan| p.regions.last().unwrap().pfns.clone();
    assert_eq!(ws(&a), ws(&a2));
    assert_ne!(ws(&a), ws(&b));
    assert_eq!(ws(&a).len(), 8);
    let err = Plan::new(&policy, &vm, Some(&syms), None).unwrap_err();
    assert!(err.to_string().contains("--nonce"), "{err}");

    let mut vm = vm;
    let s = Snapshot::full(&mut vm, a, Consistency::PreCopy).unwrap();
    let claims = s
        .claims(
            "micro-vm",
            "host",
            0,
            None,
            OffsetDateTime::now_utc().unix_timestamp(),
            ModuleInfo {
                name: "vmseal-host".into(),
                version: "test".into(),
                build_digest: [0; 32],
            },
            None,
        )
        .unwrap();
    assert_eq!(claims.nonce.as_deref(), Some(&b"nonce-a"[..]));
    claims.check().unwrap();
    let key = vmseal_sealer::keys::IntermediateKey::generate().unwrap();
    let der = vmseal_sealer::x509::issue_intermediate(
        &key,
        &vmseal_sealer::x509::IntermediateProfile {
            host_id: "host",
            tpm: None,
            snp: None,
            validity: time::Duration::days(1),
        },
        OffsetDateTime::now_utc(),
    )
    .unwrap();
    let ev = vmseal_sealer::evidence::Sealer::new(key, der)
        .unwrap()
        .seal(&claims, OffsetDateTime::now_utc())
        .unwrap();
    let trust = vmseal_sealer::verify::TrustConfig {
        require: vmseal_sealer::verify::AnchorRequirement::from_name("none").unwrap(),
        ..Default::default()
    };
    let v = vmseal_sealer::verify::verify_evidence(&ev, &trust, OffsetDateTime::now_utc()).unwrap();
    assert_eq!(v.claims.regions.len(), 5);
    assert_eq!(v.claims.regions[4].pages, 8);
}
