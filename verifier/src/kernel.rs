//! Appraisal of a snapshot's kernel objects against the golden state (`docs/kernel-objects.md`).
//!
//! The evidence states facts — which processes and modules each of the kernel's two views holds,
//! the interrupt gates' and system calls' handlers — and the verifier decides what is a finding
//! and how much it matters: a hidden process or module, a hooked system call or gate (critical);
//! a walk that did not finish, another kernel build, a process that runs as root and is not in
//! the golden state (high); a new module (medium); a new process (low). The VM's policy can set
//! other severities and allow process and module names to appear.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use vmseal_client::{KernelAppraisal, KernelFinding};
use vmseal_policy::{KernelFindingKind as Kind, KernelObjectsPolicy};
use vmseal_sealer::claims::{KernelObjects, Severity, TaskFact};

/// Most findings of one kind an appraisal lists; the rest are counted in one more.
pub const MAX_FINDINGS_PER_KIND: usize = 32;

/// Points a kind of kernel finding costs, once per kind, by severity: a critical finding alone
/// makes a snapshot contraindicated.
pub fn kernel_penalty(s: Severity) -> u8 {
    match s {
        Severity::Critical => 100,
        Severity::High => 50,
        Severity::Medium => 20,
        Severity::Low => 5,
    }
}

/// A kernel thread's name with its instance numbers folded (`kworker/u4:2` → `kworker/u#:#`):
/// worker threads come and go under numbered names.
fn kthread_name(comm: &str) -> String {
    let mut out = String::with_capacity(comm.len());
    for c in comm.chars() {
        if c.is_ascii_digit() {
            if !out.ends_with('#') {
                out.push('#');
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// What identifies a process across boots: its name (folded for kernel threads) and executable.
fn identity(t: &TaskFact) -> (String, Option<String>) {
    let name = if t.kernel_thread {
        kthread_name(&t.comm)
    } else {
        t.comm.clone()
    };
    (name, t.exe.clone())
}

fn describe_task(t: &TaskFact) -> String {
    format!("pid {} {}", t.pid, t.comm)
}

/// Where `handler` is: inside the kernel's text, a listed module's text, or neither.
fn whereabouts(k: &KernelObjects, handler: u64) -> String {
    if (k.text.0..k.text.1).contains(&handler) {
        return "inside the kernel's text".into();
    }
    for m in k.modules.iter().filter(|m| m.listed) {
        if handler.wrapping_sub(m.text) < m.text_size {
            return format!("inside module {}", m.name);
        }
    }
    "outside the kernel's and every listed module's text".into()
}

struct Findings<'a> {
    policy: &'a KernelObjectsPolicy,
    by_kind: BTreeMap<Kind, (Vec<KernelFinding>, usize)>,
}

impl Findings<'_> {
    fn add(&mut self, kind: Kind, subject: String, detail: String) {
        let (list, more) = self.by_kind.entry(kind).or_default();
        if list.len() < MAX_FINDINGS_PER_KIND {
            list.push(KernelFinding {
                kind: kind.name().to_owned(),
                severity: self.policy.severity(kind),
                subject,
                detail,
            });
        } else {
            *more += 1;
        }
    }

    fn finish(self, golden: bool, k: Option<&KernelObjects>) -> KernelAppraisal {
        let mut penalty = 0u32;
        let mut findings = Vec::new();
        for (kind, (mut list, more)) in self.by_kind {
            let severity = self.policy.severity(kind);
            penalty += u32::from(kernel_penalty(severity));
            if more > 0 {
                list.push(KernelFinding {
                    kind: kind.name().to_owned(),
                    severity,
                    subject: format!("{more} more"),
                    detail: format!("more than {MAX_FINDINGS_PER_KIND} of this kind"),
                });
            }
            findings.extend(list);
        }
        // Most severe first; within a severity, in the kinds' order.
        findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
        KernelAppraisal {
            findings,
            penalty: penalty.min(100) as u8,
            golden,
            processes: k.map_or(0, |k| k.tasks.len() as u64),
            modules: k.map_or(0, |k| k.modules.len() as u64),
        }
    }
}

/// Appraise `now` (absent: the evidence carries no kernel objects although the VM's policy asks
/// for them) against `golden` under `policy`.
pub fn appraise_kernel(
    now: Option<&KernelObjects>,
    golden: Option<&KernelObjects>,
    policy: &KernelObjectsPolicy,
) -> KernelAppraisal {
    let mut f = Findings {
        policy,
        by_kind: BTreeMap::new(),
    };
    let Some(k) = now else {
        f.add(
            Kind::WalkFailed,
            "kernel objects".into(),
            "the evidence carries none, but the VM's policy asks for them".into(),
        );
        return f.finish(golden.is_some(), None);
    };
    // What holds without a golden state: the kernel's two views of its own objects agree, and
    // every walk finished.
    for t in k.tasks.iter().filter(|t| t.by_pid && !t.listed) {
        f.add(
            Kind::HiddenProcess,
            describe_task(t),
            "known by pid to the pid namespace but not on the task list".into(),
        );
    }
    for m in k.modules.iter().filter(|m| m.in_kset && !m.listed) {
        f.add(
            Kind::HiddenModule,
            format!("module {}", m.name),
            "in the module kset (/sys/module) but not on the module list".into(),
        );
    }
    for e in &k.errors {
        f.add(
            Kind::WalkFailed,
            format!("the {} walk", e.walk),
            e.error.clone(),
        );
    }
    // Every system call runs kernel or module code, and every gate too (or the early handlers
    // in the init text a kernel may leave on reserved vectors): whatever the golden state says,
    // even when it was taken from a kernel already hooked.
    let (syscalls_out, gates_out) = outside_code(&mut f, k);
    let Some(g) = golden else {
        return f.finish(false, Some(k));
    };
    if g.build_id != k.build_id || g.profile != k.profile {
        f.add(
            Kind::KernelChanged,
            format!("kernel {}", k.build_id),
            format!(
                "the golden state is of kernel {}: its tables are not compared; promote a golden state for this kernel",
                g.build_id
            ),
        );
    } else {
        tables(&mut f, k, g, &syscalls_out, &gates_out);
    }
    processes(&mut f, k, g);
    let golden_modules: BTreeSet<&str> = g.modules.iter().map(|m| m.name.as_str()).collect();
    for m in &k.modules {
        if !golden_modules.contains(m.name.as_str()) && !policy.allows(&m.name) {
            f.add(
                Kind::NewModule,
                format!("module {}", m.name),
                "not in the golden state".into(),
            );
        }
    }
    f.finish(true, Some(k))
}

/// Whether `h` is in the kernel's text or a listed module's text.
fn in_code(k: &KernelObjects, h: u64) -> bool {
    (k.text.0..k.text.1).contains(&h)
        || k.modules
            .iter()
            .any(|m| m.listed && h.wrapping_sub(m.text) < m.text_size)
}

/// System calls and gates that point outside the kernel's and the modules' code; which.
fn outside_code(f: &mut Findings<'_>, k: &KernelObjects) -> (BTreeSet<usize>, BTreeSet<u8>) {
    let mut syscalls = BTreeSet::new();
    for (i, &h) in k.syscalls.iter().enumerate() {
        if !in_code(k, h) {
            syscalls.insert(i);
            f.add(
                Kind::HookedSyscall,
                format!("syscall {i}"),
                format!("handler {h:#x}, {}", whereabouts(k, h)),
            );
        }
    }
    let mut gates = BTreeSet::new();
    for &(v, h) in &k.idt {
        if !in_code(k, h) && !(k.init_text.0..k.init_text.1).contains(&h) {
            gates.insert(v);
            f.add(
                Kind::HookedGate,
                format!("gate {v}"),
                format!(
                    "handler {h:#x}, outside the kernel's text, its init text and every listed module's text"
                ),
            );
        }
    }
    (syscalls, gates)
}

/// System calls and gates: equal to the golden state's after the KASLR slide (those already
/// found outside the code are not named twice).
fn tables(
    f: &mut Findings<'_>,
    k: &KernelObjects,
    g: &KernelObjects,
    syscalls_out: &BTreeSet<usize>,
    gates_out: &BTreeSet<u8>,
) {
    let moved = k.slide.wrapping_sub(g.slide);
    if k.syscalls.len() != g.syscalls.len() {
        f.add(
            Kind::HookedSyscall,
            "the system-call table".into(),
            format!(
                "{} entries, the golden state has {}",
                k.syscalls.len(),
                g.syscalls.len()
            ),
        );
    } else {
        for (i, (&h, &gh)) in k.syscalls.iter().zip(&g.syscalls).enumerate() {
            if h != gh.wrapping_add(moved) && !syscalls_out.contains(&i) {
                f.add(
                    Kind::HookedSyscall,
                    format!("syscall {i}"),
                    format!(
                        "handler {h:#x}, {}; the golden state's is {:#x} after the slide",
                        whereabouts(k, h),
                        gh.wrapping_add(moved)
                    ),
                );
            }
        }
    }
    let golden: HashMap<u8, u64> = g.idt.iter().copied().collect();
    let now: HashMap<u8, u64> = k.idt.iter().copied().collect();
    for v in (0..=255u8).filter(|v| !gates_out.contains(v)) {
        match (now.get(&v), golden.get(&v)) {
            (Some(&h), Some(&gh)) if h != gh.wrapping_add(moved) => f.add(
                Kind::HookedGate,
                format!("gate {v}"),
                format!(
                    "handler {h:#x}, {}; the golden state's is {:#x} after the slide",
                    whereabouts(k, h),
                    gh.wrapping_add(moved)
                ),
            ),
            (Some(&h), None) => f.add(
                Kind::HookedGate,
                format!("gate {v}"),
                format!(
                    "present (handler {h:#x}, {}), absent in the golden state",
                    whereabouts(k, h)
                ),
            ),
            (None, Some(_)) => f.add(
                Kind::HookedGate,
                format!("gate {v}"),
                "absent, present in the golden state".into(),
            ),
            _ => {}
        }
    }
}

/// Processes not in the golden state, and processes that now run as root.
fn processes(f: &mut Findings<'_>, k: &KernelObjects, g: &KernelObjects) {
    let mut golden: HashMap<(String, Option<String>), BTreeSet<u32>> = HashMap::new();
    for t in &g.tasks {
        golden.entry(identity(t)).or_default().insert(t.euid);
    }
    for t in &k.tasks {
        // A hidden process is already a critical finding.
        if t.by_pid && !t.listed {
            continue;
        }
        let root = t.euid == 0 && !t.kernel_thread;
        match golden.get(&identity(t)) {
            _ if f.policy.allows(&t.comm) => {}
            None if root => f.add(
                Kind::NewRootProcess,
                describe_task(t),
                format!(
                    "runs as root ({}) and is not in the golden state",
                    t.exe.as_deref().unwrap_or("no executable")
                ),
            ),
            None => f.add(
                Kind::NewProcess,
                describe_task(t),
                format!(
                    "not in the golden state (euid {}, {})",
                    t.euid,
                    t.exe.as_deref().unwrap_or("kernel thread")
                ),
            ),
            Some(euids) if root && !euids.contains(&0) => f.add(
                Kind::NewRootProcess,
                describe_task(t),
                format!(
                    "runs as root; in the golden state it ran as euid {}",
                    euids
                        .iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            Some(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmseal_sealer::claims::kernel::example::kernel;
    use vmseal_sealer::claims::{ModuleFact, WalkFailure};

    fn kinds(a: &KernelAppraisal) -> Vec<(String, String)> {
        a.findings
            .iter()
            .map(|f| (f.kind.clone(), f.subject.clone()))
            .collect()
    }

    fn user(pid: u32, comm: &str, euid: u32) -> TaskFact {
        TaskFact {
            pid,
            tgid: pid,
            parent: 1,
            euid,
            comm: comm.into(),
            exe: Some("/bin/busybox".into()),
            kernel_thread: false,
            listed: true,
            by_pid: true,
        }
    }

    #[test]
    fn a_clean_snapshot_after_a_reboot_has_no_findings() {
        let policy = KernelObjectsPolicy::default();
        let g = kernel();
        let mut k = kernel();
        // Another boot: every address moved by the new slide; pids and worker numbers differ.
        let moved = 0x0200_0000;
        k.slide += moved;
        k.text = (k.text.0 + moved, k.text.1 + moved);
        k.syscalls.iter_mut().for_each(|h| *h += moved);
        k.idt.iter_mut().for_each(|g| g.1 += moved);
        k.tasks[2].pid = 3;
        let a = appraise_kernel(Some(&k), Some(&g), &policy);
        assert_eq!(kinds(&a), []);
        assert_eq!(
            (a.penalty, a.golden, a.processes, a.modules),
            (0, true, 3, 1)
        );
    }

    #[test]
    fn each_attack_is_named_at_its_severity() {
        let policy = KernelObjectsPolicy::default();
        let g = {
            let mut g = kernel();
            g.tasks.push(user(40, "sleep", 1000));
            g
        };
        let mut k = g.clone();
        k.tasks[2].listed = false; // kthreadd unlinked from the task list
        k.modules[0].listed = false; // virtio_ring unlinked from the module list
        k.syscalls[1] = 0xffff_8880_0000_1000; // into the direct map
        k.idt[1].1 = k.idt[0].1; // gate 3 on gate 0's handler
        k.tasks[3].euid = 0; // the user's sleep became root
        k.tasks.push(user(41, "sh", 0));
        k.tasks.push(user(42, "nc", 1000));
        k.modules.push(ModuleFact {
            name: "rootkit".into(),
            text: 0xffff_ffff_c001_0000,
            text_size: 0x1000,
            listed: true,
            in_kset: true,
        });
        let a = appraise_kernel(Some(&k), Some(&g), &policy);
        assert_eq!(
            kinds(&a),
            [
                ("hidden_process", "pid 2 kthreadd"),
                ("hidden_module", "module virtio_ring"),
                ("hooked_syscall", "syscall 1"),
                ("hooked_gate", "gate 3"),
                ("new_root_process", "pid 40 sleep"),
                ("new_root_process", "pid 41 sh"),
                ("new_module", "module rootkit"),
                ("new_process", "pid 42 nc"),
            ]
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
        assert!(
            a.findings[2]
                .detail
                .contains("outside the kernel's and every listed module's text"),
            "{:?}",
            a.findings[2]
        );
        assert!(a.findings[3].detail.contains("inside the kernel's text"));
        assert!(a.findings[4].detail.contains("ran as euid 1000"));
        assert_eq!(a.penalty, 100);
        assert_eq!(
            a.findings[0].describe(),
            "hidden process pid 2 kthreadd (critical): known by pid to the pid namespace but not on the task list"
        );
    }

    #[test]
    fn policy_severities_and_allowed_names_are_the_verifiers() {
        let mut policy = KernelObjectsPolicy::default();
        let g = kernel();
        let mut k = kernel();
        k.tasks.push(user(41, "sshd", 0));
        k.tasks.push(user(42, "nc", 1000));
        let a = appraise_kernel(Some(&k), Some(&g), &policy);
        assert_eq!(a.penalty, 50 + 5);
        policy.allow.push("sshd".into());
        policy.severity.insert(Kind::NewProcess, Severity::Medium);
        let a = appraise_kernel(Some(&k), Some(&g), &policy);
        assert_eq!(
            kinds(&a),
            [("new_process".to_owned(), "pid 42 nc".to_owned())]
        );
        assert_eq!(a.findings[0].severity, Severity::Medium);
        assert_eq!(a.penalty, 20);
        // An allowed name never excuses a hidden process.
        k.tasks[3].listed = false;
        let a = appraise_kernel(Some(&k), Some(&g), &policy);
        assert_eq!(a.findings[0].kind, "hidden_process");
    }

    #[test]
    fn without_a_golden_state_the_views_and_walks_still_decide() {
        let policy = KernelObjectsPolicy::default();
        let mut k = kernel();
        let a = appraise_kernel(Some(&k), None, &policy);
        assert_eq!((kinds(&a), a.golden), (vec![], false));
        k.errors.push(WalkFailure {
            walk: "tasks".into(),
            error: "the list loops at 0xffff888000001000 without coming back to its head".into(),
        });
        k.tasks[1].listed = false;
        let a = appraise_kernel(Some(&k), None, &policy);
        assert_eq!(
            kinds(&a),
            [
                ("hidden_process", "pid 1 init"),
                ("walk_failed", "the tasks walk"),
            ]
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
        assert_eq!(a.penalty, 100);
        // Evidence that carries none under a policy that asks for them.
        let a = appraise_kernel(None, Some(&kernel()), &policy);
        assert_eq!(a.findings[0].kind, "walk_failed");
        assert_eq!(a.penalty, 50);
    }

    #[test]
    fn handlers_outside_the_code_are_hooks_whatever_the_golden_state_says() {
        let policy = KernelObjectsPolicy::default();
        // A golden state taken from a kernel already hooked: system call 2 into the direct map,
        // gate 3 into kernel data; gate 18 on an early handler in the init text (as Debian's
        // 6.1 leaves the reserved vectors).
        let mut hooked = kernel();
        hooked.syscalls[2] = 0xffff_8880_0001_0000;
        hooked.idt[1].1 = 0xffff_ffff_9f00_0000;
        hooked.idt.push((18, hooked.init_text.0 + 0x40));
        for golden in [None, Some(&hooked)] {
            let a = appraise_kernel(Some(&hooked), golden, &policy);
            assert_eq!(
                kinds(&a),
                [
                    ("hooked_syscall".to_owned(), "syscall 2".to_owned()),
                    ("hooked_gate".to_owned(), "gate 3".to_owned()),
                ],
                "{golden:?}"
            );
        }
        // A system call into a listed module's text is code; into an unlisted one's is not.
        let mut k = kernel();
        k.syscalls[0] = k.modules[0].text + 0x10;
        assert_eq!(kinds(&appraise_kernel(Some(&k), None, &policy)), []);
        k.modules[0].listed = false;
        let a = appraise_kernel(Some(&k), None, &policy);
        assert_eq!(
            kinds(&a)[1..],
            [("hooked_syscall".to_owned(), "syscall 0".to_owned())]
        );
    }

    #[test]
    fn another_kernel_is_named_and_its_tables_are_not_compared() {
        let g = kernel();
        let mut k = kernel();
        k.build_id = "feedbeef".into();
        k.syscalls.clear();
        let a = appraise_kernel(Some(&k), Some(&g), &KernelObjectsPolicy::default());
        assert_eq!(
            kinds(&a),
            [("kernel_changed".to_owned(), "kernel feedbeef".to_owned())]
        );
    }

    #[test]
    fn a_kernel_read_with_another_layout_is_named() {
        // The same build, but a profile of another digest: a guest that rewrote the BTF the
        // host found in its memory, to skew the walks.
        let g = kernel();
        let mut k = kernel();
        k.profile[0] ^= 1;
        let a = appraise_kernel(Some(&k), Some(&g), &KernelObjectsPolicy::default());
        assert_eq!(
            kinds(&a),
            [("kernel_changed".to_owned(), "kernel 0123abcd".to_owned())]
        );
        assert_eq!(a.penalty, 50);
    }

    #[test]
    fn findings_of_one_kind_are_bounded() {
        let g = kernel();
        let mut k = kernel();
        for pid in 100..200 {
            k.tasks.push(user(pid, &format!("p{pid}"), 1000));
        }
        let a = appraise_kernel(Some(&k), Some(&g), &KernelObjectsPolicy::default());
        assert_eq!(a.findings.len(), MAX_FINDINGS_PER_KIND + 1);
        assert_eq!(a.findings.last().unwrap().subject, "68 more");
        assert_eq!(kthread_name("kworker/u4:12"), "kworker/u#:#");
    }
}
