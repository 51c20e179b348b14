//! Kernel profiles from BTF: what a bad or hostile kernel image or BTF blob gets (a clear error
//! naming what is missing, never a panic). The profile of the real test kernel, checked against
//! the running guest, is `vmseal-host`'s `qemu::the_kernel_profile_is_read_from_the_guests_own_btf`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step is a failed test

use vmseal_capture::kernel::{KernelProfile, MAX_BTF_BYTES, ProfileError};
use vmseal_capture::testing::{DIRECT_MAP as BASE, DirectMap, small_profile};

/// The test kernel's BTF (`scripts/fetch-test-kernel.sh`).
fn test_kernel_btf() -> Vec<u8> {
    use object::{Object, ObjectSection};
    let dir = vmseal_testkit::QemuGuest::kernel_dir().unwrap();
    let image = std::fs::read(dir.join("vmlinuz")).expect("run scripts/fetch-test-kernel.sh");
    let vmlinux = vmseal_capture::kaslr::decompress_bzimage(&image).unwrap();
    let f = object::read::elf::ElfFile64::<object::Endianness>::parse(&vmlinux[..]).unwrap();
    f.section_by_name(".BTF").unwrap().data().unwrap().to_vec()
}

#[test]
fn a_kernel_without_btf_or_with_bad_btf_is_refused_by_name() {
    assert!(matches!(
        KernelProfile::from_bzimage(b"not a kernel"),
        Err(ProfileError::Image(_))
    ));
    assert!(matches!(
        KernelProfile::from_btf(&[0u8; 64], ""),
        Err(ProfileError::Btf(_))
    ));
    assert!(matches!(
        KernelProfile::from_btf(&vec![0u8; MAX_BTF_BYTES + 1], ""),
        Err(ProfileError::TooLarge(_))
    ));
    // Real BTF cut short: refused, not read past its end.
    let btf = test_kernel_btf();
    for len in [24, btf.len() / 2, btf.len() - 1] {
        assert!(
            KernelProfile::from_btf(&btf[..len], "").is_err(),
            "{len} bytes"
        );
    }
    // A kernel whose BTF lacks a field the walkers need: named.
    let renamed = rename_string(&btf, b"\0real_parent\0", b"\0xeal_parent\0");
    let e = KernelProfile::from_btf(&renamed, "")
        .unwrap_err()
        .to_string();
    assert!(e.contains("task_struct.real_parent"), "{e}");
}

#[test]
fn both_forms_of_a_version_dependent_field_are_ambiguous() {
    // A kernel claiming both module layouts (core_layout and mem): which one is meant is unclear.
    let btf = test_kernel_btf();
    let both = rename_string(&btf, b"\0init_layout\0", b"\0mem\0\0\0\0\0\0\0\0\0");
    assert_ne!(
        both, btf,
        "the test kernel's struct module has an init_layout to rename"
    );
    let e = KernelProfile::from_btf(&both, "").unwrap_err().to_string();
    assert!(e.contains("module.mem") && e.contains("unclear"), "{e}");
}

/// `btf` with the first occurrence of `from` in its string section replaced by `to` (same
/// length).
fn rename_string(btf: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut out = btf.to_vec();
    if let Some(i) = btf.windows(from.len()).position(|w| w == from) {
        out[i..i + to.len()].copy_from_slice(to);
    }
    out
}

#[test]
fn mutated_btf_never_panics() {
    let btf = test_kernel_btf();
    // The header and the start of the type section, mutated; each result is a profile or an error.
    let seed = btf[..4096.min(btf.len())].to_vec();
    vmseal_testkit::mutations(
        &seed,
        3_000,
        b"\x00\x01\x04\x10\x7f\xff",
        vmseal_capture::fuzzing::kernel_btf,
    );
}

/// Tasks at 0x1000 (init_task), 0x2000, 0x3000 …, each pointing to the next; the last back to
/// init_task, unless `next` says otherwise; a shared cred (euid 0) at 0x9000.
fn lay_out(n: u64, next: impl Fn(u64) -> u64) -> DirectMap {
    let mem = vmseal_capture::anon::AnonMemory::new(&[(0, 0x10000)]).unwrap();
    let g = mem.guest();
    for i in 0..n {
        let t = 0x1000 * (i + 1);
        g.write(t, &next(i).to_le_bytes()).unwrap();
        g.write(t + 16, &(i as u32).to_le_bytes()).unwrap();
        g.write(t + 20, &(i as u32).to_le_bytes()).unwrap();
        g.write(t + 24, format!("task{i}\0").as_bytes()).unwrap();
        g.write(t + 40, &(BASE + 0x1000).to_le_bytes()).unwrap();
        g.write(t + 48, &(BASE + 0x9000).to_le_bytes()).unwrap();
        g.write(t + 56, &0u64.to_le_bytes()).unwrap();
    }
    DirectMap(mem)
}

#[test]
fn a_laid_out_task_list_is_read_and_hostile_ones_are_refused() {
    let p = small_profile();
    let init = BASE + 0x1000;
    let good = lay_out(3, |i| {
        if i == 2 {
            init
        } else {
            BASE + 0x1000 * (i + 2)
        }
    });
    let tasks = p.tasks(&good, init).unwrap();
    let names: Vec<&str> = tasks.iter().map(|t| t.comm.as_str()).collect();
    assert_eq!(names, ["task0", "task1", "task2"]);
    assert!(
        tasks
            .iter()
            .all(|t| t.kernel_thread && t.euid == 0 && t.parent == 0)
    );
    // A loop that never comes back to init_task.
    let cycle = lay_out(3, |i| {
        if i == 2 {
            BASE + 0x2000
        } else {
            BASE + 0x1000 * (i + 2)
        }
    });
    assert!(
        matches!(
            p.tasks(&cycle, init),
            Err(vmseal_capture::kernel::WalkError::Cycle(_))
        ),
        "a cycle is refused"
    );
    // A pointer out of the kernel's half, and one into memory that is not there.
    let user = lay_out(2, |i| if i == 0 { 0x1234 } else { init });
    let e = p.tasks(&user, init).unwrap_err().to_string();
    assert!(e.contains("not a kernel address"), "{e}");
    let gone = lay_out(2, |i| if i == 0 { BASE + 0x100_0000 } else { init });
    let e = p.tasks(&gone, init).unwrap_err().to_string();
    assert!(e.contains("guest memory at"), "{e}");
    // A profile without the fields: named.
    let mut bare = small_profile();
    bare.offsets.remove("cred.euid");
    let e = bare.tasks(&good, init).unwrap_err().to_string();
    assert!(e.contains("cred.euid"), "{e}");
}

#[test]
fn a_module_list_that_loops_is_refused() {
    let p = small_profile();
    let mem = vmseal_capture::anon::AnonMemory::new(&[(0, 0x10000)]).unwrap();
    let g = mem.guest();
    // head at 0x100 → module A's list (0x1008) → module B's list (0x2008) → back to A's.
    g.write(0x100, &(BASE + 0x1008).to_le_bytes()).unwrap();
    g.write(0x1008, &(BASE + 0x2008).to_le_bytes()).unwrap();
    g.write(0x2008, &(BASE + 0x1008).to_le_bytes()).unwrap();
    for (m, name) in [(0x1000u64, "a"), (0x2000, "b")] {
        g.write(m + 24, format!("{name}\0").as_bytes()).unwrap();
        g.write(m + 80, &(BASE + 0x8000).to_le_bytes()).unwrap();
    }
    let e = p
        .modules(&DirectMap(mem), BASE + 0x100)
        .unwrap_err()
        .to_string();
    assert!(e.contains("loops"), "{e}");
}

#[test]
fn an_idr_whose_nodes_loop_is_refused() {
    let p = small_profile();
    let mem = vmseal_capture::anon::AnonMemory::new(&[(0, 0x10000)]).unwrap();
    let g = mem.guest();
    // The namespace at 0x100: its IDR's head is node 0x1000 (tagged 2), whose first slot is
    // node 0x2000, whose first slot is node 0x1000 again.
    g.write(0x108, &(BASE + 0x1000 + 2).to_le_bytes()).unwrap();
    g.write(0x1000 + 40, &(BASE + 0x2000 + 2).to_le_bytes())
        .unwrap();
    g.write(0x2000 + 40, &(BASE + 0x1000 + 2).to_le_bytes())
        .unwrap();
    let e = p
        .pid_namespace_tasks(&DirectMap(mem), BASE + 0x100)
        .unwrap_err()
        .to_string();
    assert!(e.contains("loops"), "{e}");
}

#[test]
fn walking_random_memory_never_panics() {
    let p = small_profile();
    let mem = vmseal_capture::anon::AnonMemory::new(&[(0, 0x10000)]).unwrap();
    let g = mem.guest();
    let d = DirectMap(mem);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for round in 0..200 {
        // Fill memory with pseudo-random words, a quarter of them kernel pointers into it.
        for at in (0..0x10000).step_by(8) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let w = if seed.is_multiple_of(4) {
                BASE + (seed >> 8) % 0x10000
            } else {
                seed
            };
            g.write(at, &w.to_le_bytes()).unwrap();
        }
        let _ = p.tasks(&d, BASE + (round * 0x100) % 0x10000);
        let _ = p.modules(&d, BASE + (round * 0x180) % 0x10000);
        let _ = p.pid_namespace_tasks(&d, BASE + (round * 0x140) % 0x10000);
        let _ = p.kset_modules(&d, BASE + (round * 0x1c0) % 0x10000);
    }
    // The whole capture-side walk, over memory full of pointers into itself: whatever it
    // holds, what the walk reports is a canonical claim.
    let mut words = Vec::with_capacity(0x10000);
    for _ in 0..0x2000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        words.extend_from_slice(&(seed | (u64::from(seed.is_multiple_of(3)) * 0xf)).to_le_bytes());
    }
    for round in 0..50 {
        words.rotate_left(8 * round + 1);
        vmseal_capture::fuzzing::kernel_walk(&words);
    }
}

#[test]
fn a_gate_is_changed_only_if_it_moved_more_than_the_slide() {
    use vmseal_capture::kernel::{IdtGate, gates_changed, gates_outside};
    let gates = |handlers: &[u64]| -> Vec<IdtGate> {
        (0..256)
            .map(|v| IdtGate {
                vector: v as u8,
                present: handlers.get(v).is_some(),
                handler: handlers.get(v).copied().unwrap_or(0),
            })
            .collect()
    };
    let golden = gates(&[0xffff_ffff_8100_0000, 0xffff_ffff_8100_0100]);
    let slid = gates(&[0xffff_ffff_8300_0000, 0xffff_ffff_8300_0100]);
    assert_eq!(gates_changed(&golden, &slid, 0x200_0000), Vec::<u8>::new());
    let hooked = gates(&[0xffff_ffff_8300_0000, 0xffff_c900_0000_0000]);
    assert_eq!(gates_changed(&golden, &hooked, 0x200_0000), vec![1]);
    // A gate that appears, and a table cut short: changed.
    let more = gates(&[
        0xffff_ffff_8300_0000,
        0xffff_ffff_8300_0100,
        0xffff_ffff_8300_0200,
    ]);
    assert_eq!(gates_changed(&golden, &more, 0x200_0000), vec![2]);
    assert_eq!(gates_changed(&golden, &golden[..10], 0).len(), 246);
    let text = [(0xffff_ffff_8300_0000, 0xffff_ffff_8400_0000)];
    assert_eq!(
        gates_outside(&hooked, &text)
            .iter()
            .map(|g| g.vector)
            .collect::<Vec<_>>(),
        vec![1]
    );
}

/// Guest memory whose task list gains a process once its pid namespace has been read, as a
/// running kernel (the shim's /proc/kcore) forks between the two views' walks: pid 2 is linked
/// after pid 1 from then on.
struct Forking {
    mem: DirectMap,
    forked: std::sync::atomic::AtomicBool,
    fork: bool,
}

impl vmseal_capture::source::GuestMemory for Forking {
    fn describe(&self) -> String {
        "a running kernel".into()
    }
    fn ram(&self) -> Vec<(u64, u64)> {
        self.mem.ram()
    }
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), vmseal_capture::source::SourceError> {
        if (0x8000..0x9000).contains(&gpa) {
            self.forked
                .store(self.fork, std::sync::atomic::Ordering::Relaxed);
        }
        self.mem.read(gpa, buf)?;
        if self.forked.load(std::sync::atomic::Ordering::Relaxed)
            && gpa <= 0x2000
            && gpa + buf.len() as u64 >= 0x2008
        {
            let at = (0x2000 - gpa) as usize;
            buf[at..at + 8].copy_from_slice(&(BASE + 0x3000).to_le_bytes());
        }
        Ok(())
    }
    fn virt_to_phys(&self, gva: u64) -> Result<u64, vmseal_capture::source::SourceError> {
        self.mem.virt_to_phys(gva)
    }
}

/// pid 0 (init_task) → pid 1 → back, with pid 2 laid out but off the list; the pid namespace's
/// IDR knows pids 1 and 2; no modules, an empty kset.
fn running_kernel(fork: bool) -> (Forking, vmseal_capture::kernel::KernelWalk) {
    let mem = lay_out(3, |i| if i == 0 { BASE + 0x2000 } else { BASE + 0x1000 });
    let g = mem.0.guest();
    let w = |at: u64, v: u64| g.write(at, &v.to_le_bytes()).unwrap();
    w(0x8008, BASE + 0x8100 + 2); // the IDR's head: a node
    w(0x8100 + 40, BASE + 0x8400); // slot 0: struct pid of pid 1
    w(0x8100 + 48, BASE + 0x8500); // slot 1: struct pid of pid 2
    w(0x8408, BASE + 0x2000 + 64); // pid.tasks[PIDTYPE_PID] → the task's pid_links
    w(0x8508, BASE + 0x3000 + 64);
    w(0xa000, BASE + 0xa000); // an empty module list
    w(0xb000, BASE + 0xb100); // module_kset → a kset with an empty list
    w(0xb100, BASE + 0xb100);
    let symbols = vmseal_capture::testing::walk_symbols([
        0x1000, 0x8000, 0xa000, 0xb000, 0xc000, 0xd000, 0xd100,
    ]);
    let walk = vmseal_capture::kernel::KernelWalk::new(small_profile(), BASE, &symbols).unwrap();
    let mem = Forking {
        mem,
        forked: false.into(),
        fork,
    };
    (mem, walk)
}

#[test]
fn a_process_started_between_the_two_walks_is_not_hidden_and_a_hidden_one_stays_hidden() {
    let views = |fork: bool| -> Vec<(u32, bool, bool)> {
        let (mem, walk) = running_kernel(fork);
        let k = walk.observe(&mem);
        assert_eq!(k.errors, [], "{k:?}");
        k.check().unwrap();
        k.tasks
            .iter()
            .map(|t| (t.pid, t.listed, t.by_pid))
            .collect()
    };
    // Forked after the task list was read: the second look at the list finds it.
    assert_eq!(
        views(true),
        [(0, true, false), (1, true, true), (2, true, true)]
    );
    // Never on the list: hidden, whatever the second look.
    assert_eq!(
        views(false),
        [(0, true, false), (1, true, true), (2, false, true)]
    );
}
