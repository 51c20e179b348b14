//! A real Linux kernel under QEMU (TCG): attach through QMP and the memory backend file, translate
//! kernel symbols through the guest's page tables, capture kernel text, rodata and the syscall table
//! by symbols, and detect a write into kernel text made from the host side.

use vmseal_capture::policy::{Policy, SymbolMap};
use vmseal_capture::source::{GuestMemory, PAGE, Pausable};
use vmseal_capture::{Consistency, Plan, Snapshot};
use vmseal_host::qemu::QemuSource;
use vmseal_testkit::QemuGuest;

const POLICY: &str = r#"
name = "linux"
version = 1

[[region]]
name = "kernel-text"
class = "code"
severity = "critical"
symbol = "_stext"
end_symbol = "_etext"

[[region]]
name = "kernel-rodata"
class = "rodata"
severity = "high"
symbol = "__start_rodata"
end_symbol = "__end_rodata"

[[region]]
name = "sys-call-table"
class = "structure"
severity = "critical"
symbol = "sys_call_table"
len = 0xe00
"#;

fn roots(s: &Snapshot) -> Vec<(String, [u8; 32])> {
    s.regions().into_iter().map(|r| (r.name, r.root)).collect()
}

#[test]
fn linux_kernel_regions_by_symbols_and_a_host_side_write_is_detected() {
    let g = QemuGuest::boot(256, false).unwrap();
    let mut src = QemuSource::attach(&g.qmp(), &g.mem(), "mem").unwrap();
    src.refresh_paging().unwrap();

    // nokaslr: the kernel is mapped at __START_KERNEL_map + 16 MiB physical.
    let stext = g.symbol("_stext").expect("the guest printed _stext");
    let pa = src.virt_to_phys(stext).unwrap();
    assert_eq!(pa, stext - 0xffff_ffff_8000_0000, "{stext:#x} -> {pa:#x}");

    // The page walk agrees with QEMU's own virtual-memory reads (`x`) at several kernel addresses.
    for va in [stext, stext + 0x12345, g.symbol("sys_call_table").unwrap()] {
        let text = src.hmp(&format!("x /2xg {va:#x}")).unwrap();
        let want: Vec<u64> = text
            .split(':')
            .nth(1)
            .unwrap()
            .split_whitespace()
            .map(|w| u64::from_str_radix(w.trim_start_matches("0x"), 16).unwrap())
            .collect();
        let mut b = [0u8; 16];
        src.read(src.virt_to_phys(va).unwrap(), &mut b).unwrap();
        let got = [
            u64::from_le_bytes(b[..8].try_into().unwrap()),
            u64::from_le_bytes(b[8..].try_into().unwrap()),
        ];
        assert_eq!(got.to_vec(), want, "at {va:#x}");
    }

    let policy = Policy::parse(POLICY).unwrap();
    let map = SymbolMap::parse(&g.system_map).unwrap();
    let plan = Plan::new(&policy, &src, Some(&map), None).unwrap();
    let text_pages = plan.regions[0].pfns.len();
    assert!(text_pages > 1000, "kernel text is {text_pages} pages");
    let s1 = Snapshot::full(&mut src, plan.clone(), Consistency::StopCopy).unwrap();
    let baseline = s1.baseline();
    let s2 = Snapshot::full(&mut src, plan.clone(), Consistency::StopCopy).unwrap();
    assert_eq!(
        roots(&s1),
        roots(&s2),
        "a running kernel's text, rodata and syscall table are stable"
    );

    // A host-side write into kernel text: flip one int3 padding byte (never executed).
    let text_start = plan.regions[0].pfns[0] * PAGE;
    let mut page = vec![0u8; 64 * PAGE as usize];
    src.read(text_start, &mut page).unwrap();
    let off = page
        .iter()
        .position(|&b| b == 0xcc)
        .expect("int3 padding in kernel text") as u64;
    src.write(text_start + off, &[0xcd]).unwrap();
    let s3 = Snapshot::full(&mut src, plan.clone(), Consistency::StopCopy).unwrap();
    src.write(text_start + off, &[0xcc]).unwrap();
    let (r1, r3) = (roots(&s1), roots(&s3));
    assert_ne!(r1[0], r3[0], "kernel text change detected");
    assert_eq!(
        r1[1..],
        r3[1..],
        "rodata and the syscall table are untouched"
    );
    let delta = s3.delta(&baseline);
    assert_eq!(delta.len(), 1);
    assert_eq!(delta[0].region, "kernel-text");
    let leaf = plan.regions[0]
        .pfns
        .iter()
        .position(|&p| p == (text_start + off) / PAGE)
        .unwrap() as u64;
    assert_eq!(
        delta[0].changes.iter().map(|c| c.0).collect::<Vec<_>>(),
        vec![leaf]
    );
    assert!(s3.stats.pause.as_millis() < 10_000);

    // Offline: QEMU's dump-guest-memory writes an ELF core; capturing the same physical ranges from
    // it gives the same kernel-text root as the live capture (the byte was restored above).
    let core = tempfile::NamedTempFile::new().unwrap();
    // Kernel text does not change while the guest runs (checked above), so a live capture and a
    // dump taken just after must agree.
    let live = Snapshot::full(&mut src, plan.clone(), Consistency::StopCopy).unwrap();
    src.hmp(&format!("dump-guest-memory {}", core.path().display()))
        .unwrap();
    let dump = vmseal_capture::dump::ElfDump::open(core.path()).unwrap();
    assert!(dump.segments().len() >= 2, "{:?}", dump.segments());
    let ranges = plan.regions[0].ranges();
    let gpa_policy = format!(
        "name = \"linux-offline\"\nversion = 1\n{}",
        ranges
            .iter()
            .enumerate()
            .map(|(i, r)| format!(
                "[[region]]\nname = \"text-{i}\"\nclass = \"code\"\nseverity = \"critical\"\ngpa = {{ start = {:#x}, len = {:#x} }}\n",
                r.start, r.len
            ))
            .collect::<String>()
    );
    let mut dump = dump;
    let offline_plan = Plan::new(&Policy::parse(&gpa_policy).unwrap(), &dump, None, None).unwrap();
    let offline = Snapshot::full(&mut dump, offline_plan, Consistency::StopCopy).unwrap();
    let live_leaves: Vec<[u8; 32]> = live.trees[0].leaves().to_vec();
    let offline_leaves: Vec<[u8; 32]> = offline
        .trees
        .iter()
        .flat_map(|t| t.leaves().to_vec())
        .collect();
    assert_eq!(
        live_leaves, offline_leaves,
        "ELF core and live guest agree page by page"
    );
    src.resume().unwrap();
}

/// The kernel profile read from the policy's bzImage is the running guest's own: the SHA-256 of
/// its `.BTF` equals what the guest itself reports for /sys/kernel/btf/vmlinux, and every field
/// the kernel-object walkers follow is found, in this kernel's version of each layout.
#[test]
fn the_kernel_profile_is_read_from_the_guests_own_btf() {
    use vmseal_capture::kernel::KernelProfile;
    let g = QemuGuest::boot(256, false).unwrap();
    let console = g.console();
    let guest_btf = console
        .lines()
        .find_map(|l| l.strip_prefix("vmseal-btf "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| {
            panic!("the guest did not print its BTF digest (run scripts/fetch-test-kernel.sh): {console}")
        })
        .to_owned();
    let image = std::fs::read(QemuGuest::kernel_dir().unwrap().join("vmlinuz")).unwrap();
    let p = KernelProfile::from_bzimage(&image).unwrap();
    assert_eq!(p.btf_sha256, guest_btf);
    assert_eq!(p.build_id.len(), 40, "a GNU build id: {}", p.build_id);
    for field in [
        "task_struct.tasks",
        "task_struct.pid",
        "task_struct.comm",
        "task_struct.real_parent",
        "task_struct.cred",
        "cred.euid",
        "mm_struct.exe_file",
        "module.list",
        "module.name",
        "pid_namespace.idr",
    ] {
        assert!(p.offset(field).is_some(), "{field}: {:?}", p.offsets);
    }
    // Debian's 6.1 kernel: pid_links (4.19+), and core_layout (before 6.4's mem[]).
    assert!(p.has("task_struct.pid_links") && !p.has("task_struct.pids"));
    assert!(p.has("module.core_layout") && !p.has("module.mem"));
    // The same text, the same profile: its digest is stable.
    assert_eq!(
        p.digest(),
        KernelProfile::from_bzimage(&image).unwrap().digest()
    );
}

/// The task list read from outside, with the guest paused, is the guest's own: every process the
/// guest listed in /proc at boot that cannot have ended since (its kernel threads and init) is
/// found with its pid and name; init runs /bin/busybox as root, its parent the idle task; kernel
/// threads have no executable.
#[test]
fn the_task_list_read_from_outside_is_the_guests_own() {
    use vmseal_capture::kernel::KernelProfile;
    let g = QemuGuest::boot(256, false).unwrap();
    let console = g.console();
    let listed = guest_processes(&console);
    assert!(
        listed.len() > 10,
        "the guest listed its processes: {console}"
    );
    let image = std::fs::read(QemuGuest::kernel_dir().unwrap().join("vmlinuz")).unwrap();
    let profile = KernelProfile::from_bzimage(&image).unwrap();
    let mut src = QemuSource::attach(&g.qmp(), &g.mem(), "mem").unwrap();
    src.refresh_paging().unwrap();
    let init_task = g.symbol("init_task").expect("the guest printed init_task");
    src.pause().unwrap();
    let tasks = profile.tasks(&src, init_task);
    src.resume().unwrap();
    let tasks = tasks.unwrap();
    assert_eq!((tasks[0].pid, tasks[0].comm.as_str()), (0, "swapper/0"));
    let init = tasks.iter().find(|t| t.pid == 1).expect("pid 1");
    assert_eq!(
        (
            init.comm.as_str(),
            init.exe.as_deref(),
            init.euid,
            init.parent,
            init.kernel_thread
        ),
        ("init", Some("/bin/busybox"), 0, 0, false),
        "{init:?}"
    );
    for (pid, euid, comm) in &listed {
        let Some(t) = tasks.iter().find(|t| t.pid == *pid) else {
            // Only short-lived processes (the init's `sleep`, the listing's own `cat`) may be gone.
            assert!(
                ["sleep", "cat", "busybox", "sh"].contains(&comm.as_str()),
                "pid {pid} ({comm}) is missing from the task list read from outside: {tasks:?}"
            );
            continue;
        };
        assert_eq!(t.euid, *euid, "pid {pid} ({comm}): {t:?}");
        if t.kernel_thread {
            // `comm` holds 15 bytes; /proc shows a kernel thread's whole name.
            assert!(
                comm.starts_with(&t.comm) && !t.comm.is_empty(),
                "pid {pid}: {t:?} vs {comm}"
            );
            assert_eq!(t.exe, None, "a kernel thread has no executable: {t:?}");
        }
    }
    let kthreadd = tasks.iter().find(|t| t.pid == 2).expect("kthreadd");
    assert_eq!(
        (kthreadd.comm.as_str(), kthreadd.kernel_thread),
        ("kthreadd", true)
    );
}

/// The module list read from outside is the guest's own: the module its init loaded is found by
/// name, its text where /proc/modules says it is.
#[test]
fn the_module_list_read_from_outside_is_the_guests_own() {
    use vmseal_capture::kernel::KernelProfile;
    let g = QemuGuest::boot(256, false).unwrap();
    let console = g.console();
    let listed: Vec<(String, u64)> = console
        .lines()
        .filter_map(|l| l.strip_prefix("vmseal-module "))
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (name, _size, addr) = (w.next()?, w.next()?, w.next()?);
            let addr = u64::from_str_radix(addr.trim_start_matches("0x"), 16).ok()?;
            Some((name.to_owned(), addr))
        })
        .collect();
    assert!(
        listed.iter().any(|(n, _)| n == "virtio_ring"),
        "the guest loaded virtio_ring (run scripts/fetch-test-kernel.sh): {console}"
    );
    let image = std::fs::read(QemuGuest::kernel_dir().unwrap().join("vmlinuz")).unwrap();
    let profile = KernelProfile::from_bzimage(&image).unwrap();
    let mut src = QemuSource::attach(&g.qmp(), &g.mem(), "mem").unwrap();
    src.refresh_paging().unwrap();
    let head = g
        .symbol("modules")
        .expect("the guest printed the modules list head");
    src.pause().unwrap();
    let modules = profile.modules(&src, head);
    src.resume().unwrap();
    let modules = modules.unwrap();
    let found: Vec<(String, u64)> = modules.iter().map(|m| (m.name.clone(), m.text)).collect();
    assert_eq!(found, listed, "{modules:?}");
    assert!(modules.iter().all(|m| m.text_size > 0), "{modules:?}");
}

/// A gate of the interrupt descriptor table that a host-side write points elsewhere (the
/// breakpoint handler, moved into kernel data) is found against the golden state, and only that
/// one; the gates a clean kernel leaves outside its text are named as such.
#[test]
fn a_hooked_idt_gate_is_found() {
    use vmseal_capture::kernel::{gates_changed, gates_outside, idt_gates};
    let g = QemuGuest::boot(256, false).unwrap();
    let mut src = QemuSource::attach(&g.qmp(), &g.mem(), "mem").unwrap();
    src.refresh_paging().unwrap();
    let sym = |n: &str| {
        g.symbol(n)
            .unwrap_or_else(|| panic!("the guest printed {n}"))
    };
    let (idt, text) = (sym("idt_table"), (sym("_stext"), sym("_etext")));
    src.pause().unwrap();
    let golden = idt_gates(&src, idt).unwrap();
    let present = golden.iter().filter(|g| g.present).count();
    assert!(present > 30, "{present} present gates");
    // Debian's 6.1 leaves the reserved exception vectors on their early handlers, in the init
    // text freed after boot: outside the kernel's text, in the golden state too.
    let clean_outside: Vec<u8> = gates_outside(&golden, &[text])
        .iter()
        .map(|g| g.vector)
        .collect();
    assert!(
        clean_outside.iter().all(|v| (18..32).contains(v)),
        "{clean_outside:?}"
    );
    assert_eq!(
        gates_changed(&golden, &idt_gates(&src, idt).unwrap(), 0),
        vec![0u8; 0]
    );
    // The hook: gate 3 (int3) now jumps into kernel data. Written with the guest paused and put
    // back before it runs again.
    let gate3 = src.virt_to_phys(idt + 3 * 16).unwrap();
    let mut saved = [0u8; 16];
    src.read(gate3, &mut saved).unwrap();
    let evil = sym("_sdata") + 0x40;
    let mut hooked = saved;
    hooked[0..2].copy_from_slice(&(evil as u16).to_le_bytes());
    hooked[6..8].copy_from_slice(&((evil >> 16) as u16).to_le_bytes());
    hooked[8..12].copy_from_slice(&((evil >> 32) as u32).to_le_bytes());
    src.write(gate3, &hooked).unwrap();
    let now = idt_gates(&src, idt).unwrap();
    src.write(gate3, &saved).unwrap();
    src.resume().unwrap();
    assert_eq!(gates_changed(&golden, &now, 0), vec![3u8]);
    let outside: Vec<(u8, u64)> = gates_outside(&now, &[text])
        .iter()
        .map(|g| (g.vector, g.handler))
        .filter(|(v, _)| !clean_outside.contains(v))
        .collect();
    assert_eq!(outside, vec![(3, evil)]);
}

/// A process unlinked from the task list (the rootkit's hiding trick, done here by a host-side
/// write with the guest paused, and undone before it runs again) is still in the pid namespace's
/// IDR: the two views differ by exactly that process. Before the attack they agree.
#[test]
fn a_process_unlinked_from_the_task_list_is_found_hidden() {
    let (g, p, mut src) = kernel_guest();
    let sym = |n: &str| {
        g.symbol(n)
            .unwrap_or_else(|| panic!("the guest printed {n}"))
    };
    let (init_task, ns) = (sym("init_task"), sym("init_pid_ns"));
    let leaders = |tasks: Vec<vmseal_capture::kernel::KernelTask>| -> Vec<(i32, String)> {
        let mut v: Vec<(i32, String)> = tasks
            .into_iter()
            .filter(|t| t.pid == t.tgid && t.pid != 0)
            .map(|t| (t.pid, t.comm))
            .collect();
        v.sort();
        v
    };
    src.pause().unwrap();
    let listed = leaders(p.tasks(&src, init_task).unwrap());
    let by_pid = leaders(p.pid_namespace_tasks(&src, ns).unwrap());
    assert_eq!(listed, by_pid, "a clean guest: both views agree");
    assert!(listed.len() > 10);

    // Unlink kthreadd (pid 2) from the task list: its neighbours point past it.
    let off = |f: &str| p.offset(f).unwrap();
    let head = init_task + off("task_struct.tasks");
    let mut node = read_u64(&src, head);
    let victim = loop {
        let task = node - off("task_struct.tasks");
        let mut pid = [0u8; 4];
        src.read(
            src.virt_to_phys(task + off("task_struct.pid")).unwrap(),
            &mut pid,
        )
        .unwrap();
        if u32::from_le_bytes(pid) == 2 {
            break node;
        }
        node = read_u64(&src, node);
        assert_ne!(node, head, "kthreadd is on the task list");
    };
    let relink = unlink(&src, victim);
    let listed_now = leaders(p.tasks(&src, init_task).unwrap());
    let by_pid_now = leaders(p.pid_namespace_tasks(&src, ns).unwrap());
    // Put it back before the guest runs again.
    relink(&src);
    src.resume().unwrap();
    let hidden: Vec<&(i32, String)> = by_pid_now
        .iter()
        .filter(|t| !listed_now.contains(t))
        .collect();
    assert_eq!(hidden, vec![&(2, "kthreadd".to_owned())]);
    assert_eq!(listed_now.len() + 1, by_pid_now.len());
}

/// A module unlinked from the module list (how a rootkit module hides from `lsmod`) is still in
/// the module kset: the two views differ by exactly that module. Before the attack they agree.
#[test]
fn a_module_unlinked_from_the_module_list_is_found_hidden() {
    let (g, p, mut src) = kernel_guest();
    let sym = |n: &str| {
        g.symbol(n)
            .unwrap_or_else(|| panic!("the guest printed {n}"))
    };
    let head = sym("modules");
    src.pause().unwrap();
    let kset = read_u64(&src, sym("module_kset"));
    let names = |src: &QemuSource| -> Vec<String> {
        let mut v: Vec<String> = p
            .modules(src, head)
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect();
        v.sort();
        v
    };
    let listed = names(&src);
    assert_eq!(
        listed,
        p.kset_modules(&src, kset).unwrap(),
        "a clean guest: both views agree"
    );
    assert!(listed.contains(&"virtio_ring".to_owned()), "{listed:?}");
    // Unlink virtio_ring (the only module loaded: the list's head points past it both ways).
    let victim = read_u64(&src, head);
    let relink = unlink(&src, victim);
    let listed_now = names(&src);
    let kset_now = p.kset_modules(&src, kset).unwrap();
    relink(&src);
    src.resume().unwrap();
    let hidden: Vec<&String> = kset_now
        .iter()
        .filter(|m| !listed_now.contains(m))
        .collect();
    assert_eq!(hidden, vec!["virtio_ring"]);
}

/// A guest booted with the test kernel, the kernel's profile, and the guest's memory attached.
/// The processes the guest listed from /proc at boot: (pid, effective uid, comm).
fn guest_processes(console: &str) -> Vec<(i32, u32, String)> {
    console
        .lines()
        .filter_map(|l| l.strip_prefix("vmseal-proc "))
        .filter_map(|l| {
            let mut w = l.trim().splitn(3, ' ');
            let (pid, euid, comm) = (w.next()?, w.next()?, w.next()?);
            Some((pid.parse().ok()?, euid.parse().ok()?, comm.to_owned()))
        })
        .collect()
}

fn kernel_guest() -> (QemuGuest, vmseal_capture::kernel::KernelProfile, QemuSource) {
    let g = QemuGuest::boot(256, false).unwrap();
    let image = std::fs::read(QemuGuest::kernel_dir().unwrap().join("vmlinuz")).unwrap();
    let p = vmseal_capture::kernel::KernelProfile::from_bzimage(&image).unwrap();
    let mut src = QemuSource::attach(&g.qmp(), &g.mem(), "mem").unwrap();
    src.refresh_paging().unwrap();
    (g, p, src)
}

/// The kernel pointer at guest-virtual `va`.
fn read_u64(src: &QemuSource, va: u64) -> u64 {
    let mut b = [0u8; 8];
    src.read(src.virt_to_phys(va).unwrap(), &mut b).unwrap();
    u64::from_le_bytes(b)
}

/// Unlink the `list_head` at `node` from its list (as a rootkit hides an entry: its neighbours
/// point past it); what puts it back.
fn unlink(src: &QemuSource, node: u64) -> impl Fn(&QemuSource) + use<> {
    let (next, prev) = (read_u64(src, node), read_u64(src, node + 8));
    let prev_next = src.virt_to_phys(prev).unwrap();
    let next_prev = src.virt_to_phys(next + 8).unwrap();
    src.write(prev_next, &next.to_le_bytes()).unwrap();
    src.write(next_prev, &prev.to_le_bytes()).unwrap();
    move |src: &QemuSource| {
        src.write(prev_next, &node.to_le_bytes()).unwrap();
        src.write(next_prev, &node.to_le_bytes()).unwrap();
    }
}

/// The capture walks the kernel's objects inside its own pause, in a guest booted with KASLR: the
/// slide is the running kernel's; every process the guest listed is there with its effective uid
/// (the one it started as uid 1000 too), in both views; its module in both views at the address
/// /proc/modules gives; every gate and system call inside the kernel's text; the section goes
/// through the claims unchanged. Then a system-call slot pointed into kernel data is the one
/// entry that differs.
#[test]
fn the_capture_walks_the_kernel_objects_inside_its_pause() {
    use vmseal_capture::kaslr::KernelContext;
    let g = QemuGuest::boot(256, true).unwrap();
    let console = g.console();
    let kdir = QemuGuest::kernel_dir().unwrap();
    let policy = Policy::parse(&format!(
        "name = \"linux\"\nversion = 1\nkernel = \"{}\"\n\
         [[region]]\nname = \"kernel-text\"\nclass = \"code\"\nseverity = \"critical\"\n\
         symbol = \"_stext\"\nend_symbol = \"_etext\"\nkaslr = \"undo\"\n[kernel_objects]\n",
        kdir.join("vmlinuz").display()
    ))
    .unwrap();
    let mut src = QemuSource::attach(&g.qmp(), &g.mem(), "mem").unwrap();
    src.refresh_paging().unwrap();
    // No symbol map from the guest: the kernel's own kallsyms tables, decoded from its image and
    // moved by the slide its interrupt table gives, are what the guest's /proc/kallsyms shows.
    let vmlinux =
        vmseal_capture::kaslr::decompress_bzimage(&std::fs::read(kdir.join("vmlinuz")).unwrap())
            .unwrap();
    let symbols = src.kernel_symbols(&vmlinux).unwrap();
    let printed = SymbolMap::parse(&g.system_map).unwrap();
    for line in g.system_map.lines() {
        let name = line.split_whitespace().nth(2).unwrap();
        assert_eq!(symbols.get(name), printed.get(name), "{name}");
    }
    let slide = symbols.get("_text").unwrap() - 0xffff_ffff_8100_0000;
    let mut lines: Vec<String> = vmseal_capture::kallsyms::decode(&vmlinux)
        .unwrap()
        .iter()
        .map(|s| {
            let addr = if s.addr >= 0xffff_8000_0000_0000 {
                s.addr + slide
            } else {
                s.addr
            };
            format!("{addr:016x} {} {}\n", s.kind, s.name)
        })
        .collect();
    lines.sort();
    let (sha, count) = console
        .lines()
        .find_map(|l| l.strip_prefix("vmseal-kallsyms "))
        .and_then(|l| l.trim().split_once(' '))
        .expect("the guest printed the digest of its /proc/kallsyms");
    assert_eq!(
        (
            hex::encode(vmseal_sealer::merkle::HashAlg::Sha256.hash(&[lines.concat().as_bytes()])),
            lines.len().to_string()
        ),
        (sha.to_owned(), count.to_owned()),
        "the decoded table, sorted, is the guest's /proc/kallsyms"
    );
    let ctx = KernelContext::load(&policy, &kdir, Some(&symbols)).unwrap();
    let plan = ctx.plan(&policy, &src, Some(&symbols), None).unwrap();
    let snap = Snapshot::full(&mut src, plan.clone(), Consistency::StopCopy).unwrap();
    let k = snap.kernel.clone().expect("the plan walks kernel objects");
    assert_eq!(k.errors, [], "every walk finished");
    let stext = g.symbol("_stext").unwrap();
    assert_eq!(k.text.0, stext);
    assert_eq!(k.slide, g.symbol("_text").unwrap() - 0xffff_ffff_8100_0000);
    assert_ne!(k.slide, 0, "KASLR moved the kernel");
    assert!(!snap.stats.kernel_walk.is_zero() && snap.stats.kernel_walk < snap.stats.pause);
    // Processes: both views agree; each listed one with its euid.
    assert!(
        k.tasks.iter().all(|t| t.listed && (t.by_pid || t.pid == 0)),
        "{:?}",
        k.tasks
    );
    let user: i32 = console
        .lines()
        .find_map(|l| l.strip_prefix("vmseal-user "))
        .and_then(|p| p.trim().parse().ok())
        .expect("the guest started its user process");
    for (pid, euid, comm) in guest_processes(&console) {
        match k.tasks.iter().find(|t| t.pid as i32 == pid) {
            Some(t) => assert_eq!(t.euid, euid, "{comm}: {t:?}"),
            None => assert!(
                ["cat", "awk", "busybox", "sh"].contains(&comm.as_str()),
                "{comm}"
            ),
        }
    }
    let u = k.tasks.iter().find(|t| t.pid as i32 == user).unwrap();
    assert_eq!(
        (u.comm.as_str(), u.euid, u.exe.as_deref(), u.kernel_thread),
        ("busybox", 1000, Some("/bin/busybox"), false)
    );
    // Modules: both views; the text where /proc/modules says.
    let vr = k.modules.iter().find(|m| m.name == "virtio_ring").unwrap();
    assert!(vr.listed && vr.in_kset, "{vr:?}");
    let addr = console
        .lines()
        .filter_map(|l| l.strip_prefix("vmseal-module virtio_ring "))
        .find_map(|l| l.split_whitespace().nth(1))
        .and_then(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok())
        .unwrap();
    assert_eq!(vr.text, addr);
    // Gates and system calls: in the kernel's text (the reserved vectors aside, see
    // docs/kernel-objects.md).
    let in_text = |h: u64| (k.text.0..k.text.1).contains(&h);
    assert!(k.idt.len() > 200, "{}", k.idt.len());
    assert!(
        (400..=1024).contains(&k.syscalls.len()),
        "{}",
        k.syscalls.len()
    );
    let outside: Vec<(usize, u64)> = k
        .syscalls
        .iter()
        .copied()
        .enumerate()
        .filter(|&(_, h)| !in_text(h))
        .collect();
    assert_eq!(outside, [], "{:x?}", k.text);
    // Canonical in the claims.
    let c = snap
        .claims("linux", "h", 0, None, 0, test_module(), None)
        .unwrap();
    let back = vmseal_sealer::claims::Claims::decode(&c.encode()).unwrap();
    assert_eq!(back.kernel.as_ref(), Some(&k));

    // A system-call slot pointed into kernel data, from the host side, is the one change.
    let slot = g.symbol("sys_call_table").unwrap() + 134 * 8;
    let was = read_u64(&src, slot);
    let to = g.symbol("init_task").unwrap();
    src.write(src.virt_to_phys(slot).unwrap(), &to.to_le_bytes())
        .unwrap();
    let hooked = Snapshot::full(&mut src, plan, Consistency::StopCopy).unwrap();
    src.write(src.virt_to_phys(slot).unwrap(), &was.to_le_bytes())
        .unwrap();
    let h = hooked.kernel.unwrap();
    let changed: Vec<usize> = (0..k.syscalls.len())
        .filter(|&i| h.syscalls[i] != k.syscalls[i])
        .collect();
    assert_eq!(changed, [134]);
    assert_eq!(h.syscalls[134], to);
    assert_eq!(h.idt, k.idt);

    // No image at all: the kernel's symbols and BTF found in its own memory, around where its
    // divide-error gate points, give the same kernel objects.
    let bare = Policy::parse(
        "name = \"linux\"\nversion = 1\n[[region]]\nname = \"kernel-text\"\nclass = \"code\"\n\
         severity = \"critical\"\nsymbol = \"_stext\"\nend_symbol = \"_etext\"\n[kernel_objects]\n",
    )
    .unwrap();
    let bare_ctx = KernelContext::load(&bare, &kdir, None).unwrap();
    assert!(bare_ctx.needs_boot());
    let t = std::time::Instant::now();
    let (bare_ctx, found) = bare_ctx
        .for_boot(&src, src.divide_error_handler().unwrap())
        .unwrap();
    eprintln!("the kernel found in its own memory in {:?}", t.elapsed());
    let found = found.unwrap();
    assert_eq!(found.get("init_task"), symbols.get("init_task"));
    assert_eq!(found.get("_text"), symbols.get("_text"));
    let plan = bare_ctx.plan(&bare, &src, Some(&found), None).unwrap();
    let m = Snapshot::full(&mut src, plan, Consistency::StopCopy)
        .unwrap()
        .kernel
        .unwrap();
    assert_eq!(
        (
            m.profile,
            &m.build_id,
            m.slide,
            m.text,
            &m.idt,
            &m.syscalls,
            &m.modules
        ),
        (
            k.profile,
            &k.build_id,
            k.slide,
            k.text,
            &k.idt,
            &k.syscalls,
            &k.modules
        ),
        "the same kernel, read from its memory as from its image"
    );
    assert_eq!(m.tasks.len(), k.tasks.len());

    // The benchmark of the walk's pause cost runs on this guest (its figures are in
    // docs/benchmarks.md; here only that it measures what it says).
    let plan = ctx.plan(&policy, &src, Some(&symbols), None).unwrap();
    let r = vmseal_host::bench::kernel(&mut src, &plan, 2, &|_| {}).unwrap();
    let n = (k.tasks.len() + k.modules.len() + k.idt.len() + k.syscalls.len()) as u64;
    assert_eq!(
        (r.rounds, r.pages, r.objects),
        (2, plan.pages().len() as u64, n)
    );
    assert!(r.walk_ms > 0.0 && r.walk_ms < r.pause_with_walk_ms, "{r:?}");
    assert!(
        r.walk_vs_page_hash_ratio.is_finite() && r.walk_in_pages > 0.0,
        "{r:?}"
    );
}

fn test_module() -> vmseal_sealer::claims::ModuleInfo {
    vmseal_sealer::claims::ModuleInfo {
        name: "vmseal-host".into(),
        version: "test".into(),
        build_digest: [0; 32],
    }
}
