//! The shim's sources with the host's capture engine, on this machine: a real process captured
//! through /proc/PID/mem (a patched code page found, exactly), this test process itself, and the
//! kernel source on a file in /proc/kcore's format (this host's kernel has no /proc/kcore; the
//! in-guest test reads a real one).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::process::{Child, Command};

use vmseal_capture::policy::Policy;
use vmseal_capture::source::{GuestMemory, MemorySource};
use vmseal_capture::{Consistency, Plan, Snapshot};
use vmseal_sealer::merkle::HashAlg;
use vmseal_shim::process::ProcessSource;

struct Sleeper(Child);

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn state(pid: u32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat.rsplit_once(')')
        .unwrap()
        .1
        .trim_start()
        .chars()
        .next()
        .unwrap()
}

fn capture(
    src: &mut dyn MemorySource,
    policy: &Policy,
    syms: Option<&vmseal_capture::policy::SymbolMap>,
) -> Snapshot {
    let plan = Plan::new(policy, src, syms, None).unwrap();
    Snapshot::full(src, plan, Consistency::StopCopy).unwrap()
}

/// The r-x mapping of `path` in process `pid`: its start.
fn code_start(pid: u32, path: &str) -> u64 {
    vmseal_testkit::code_start(pid, path).unwrap()
}

#[test]
fn a_process_captured_from_inside_shows_exactly_the_patched_code_page() {
    let sleep = std::fs::canonicalize("/bin/sleep").unwrap();
    let sleep = sleep.to_str().unwrap();
    let child = Sleeper(Command::new(sleep).arg("60").spawn().unwrap());
    let pid = child.0.id();
    // The dynamic loader must have mapped libc before the layout is read.
    let libc = loop {
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
        if let Some(l) = maps
            .lines()
            .find(|l| l.contains("libc.so") && l.contains("r-xp"))
        {
            break l.split_whitespace().last().unwrap().to_owned();
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let policy = Policy::parse(&format!(
        "name = \"sleep\"\nversion = 1\n\
         [[region]]\nname = \"sleep-code\"\nclass = \"code\"\nseverity = \"critical\"\nmapping = \"{sleep}\"\n\
         [[region]]\nname = \"libc-code\"\nclass = \"code\"\nseverity = \"high\"\nmapping = \"{libc}\"\n"
    ))
    .unwrap();
    let mut src = ProcessSource::attach(pid).unwrap();
    let first = capture(&mut src, &policy, None);
    assert_ne!(state(pid), 'T', "resumed after the capture");
    let again = capture(&mut src, &policy, None);
    assert_eq!(
        first.regions(),
        again.regions(),
        "code does not change by itself"
    );
    let base = first.baseline();

    // Patch one byte of sleep's code, as an injected hook would.
    let at = code_start(pid, sleep) + 0x1234;
    vmseal_testkit::flip_byte(pid, at).unwrap();

    let after = capture(&mut src, &policy, None);
    let changed = after.changed_pages(&base);
    let pages = |n: &str| changed.iter().find(|(r, _)| r == n).map_or(0, |c| c.1);
    assert_eq!(
        (pages("sleep-code"), pages("libc-code")),
        (1, 0),
        "{changed:?}"
    );
    let delta = after.delta(&base);
    assert_eq!(delta.len(), 1);
    assert_eq!(delta[0].changes.len(), 1);
    assert_eq!(
        delta[0].changes[0].0, 1,
        "the second page of the code mapping (offset 0x1234)"
    );
    assert_ne!(state(pid), 'T');
    // A mapping that is not there is named.
    let none = Policy::parse(
        "name = \"x\"\nversion = 1\n[[region]]\nname = \"x\"\nclass = \"code\"\nseverity = \"low\"\nmapping = \"/no/such/file\"\n",
    )
    .unwrap();
    let e = Plan::new(&none, &src, None, None).unwrap_err().to_string();
    assert!(e.contains("has no r-x mapping of \"/no/such/file\""), "{e}");
}

#[test]
fn the_shim_captures_its_own_process_without_stopping_itself() {
    let me = std::env::current_exe().unwrap();
    let policy = Policy::parse(&format!(
        "name = \"self\"\nversion = 1\n[[region]]\nname = \"text\"\nclass = \"code\"\nseverity = \"critical\"\nmapping = \"{}\"\n",
        me.display()
    ))
    .unwrap();
    let mut src = ProcessSource::attach(std::process::id()).unwrap();
    let a = capture(&mut src, &policy, None);
    let b = capture(&mut src, &policy, None);
    assert_eq!(a.regions(), b.regions());
    assert!(a.regions()[0].pages > 10, "{:?}", a.regions());
    // (It did not SIGSTOP itself: the test would hang here.)
    let e = ProcessSource::attach(u32::MAX / 2).unwrap_err().to_string();
    assert!(e.contains("no process"), "{e}");
}

/// An ELF64 core in /proc/kcore's format: `PT_LOAD` segments keyed by virtual address (with
/// `p_paddr` meaningless, as kcore has it for vmalloc and module space).
fn kcore(segments: &[(u64, &[u8])]) -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[..8].copy_from_slice(b"\x7fELF\x02\x01\x01\x00");
    f[16..18].copy_from_slice(&4u16.to_le_bytes()); // ET_CORE
    f[18..20].copy_from_slice(&62u16.to_le_bytes()); // x86-64
    f[20..24].copy_from_slice(&1u32.to_le_bytes());
    f[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    f[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    f[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    f[56..58].copy_from_slice(&(segments.len() as u16).to_le_bytes());
    let mut offset = 4096u64;
    let mut data = Vec::new();
    for (vaddr, bytes) in segments {
        let mut ph = vec![0u8; 56];
        ph[0..4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        ph[4..8].copy_from_slice(&7u32.to_le_bytes());
        ph[8..16].copy_from_slice(&offset.to_le_bytes());
        ph[16..24].copy_from_slice(&vaddr.to_le_bytes());
        ph[24..32].copy_from_slice(&u64::MAX.to_le_bytes()); // p_paddr: none
        ph[32..40].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
        ph[40..48].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
        f.extend_from_slice(&ph);
        data.push((offset, *bytes));
        offset += bytes.len() as u64;
    }
    for (off, bytes) in data {
        f.resize(off as usize, 0);
        f.extend_from_slice(bytes);
    }
    f
}

#[test]
fn the_kernel_source_reads_kcore_format_by_virtual_address_and_kallsyms_symbols() {
    let d = tempfile::tempdir().unwrap();
    let text: Vec<u8> = (0..3 * 4096).map(|i| (i % 253) as u8).collect();
    let modules = vec![0xabu8; 4096];
    std::fs::write(
        d.path().join("kcore"),
        kcore(&[
            (0xffff_ffff_8100_0000, &text),
            (0xffff_ffff_c000_0000, &modules),
        ]),
    )
    .unwrap();
    std::fs::write(
        d.path().join("kallsyms"),
        "ffffffff81000000 T _stext\nffffffff81003000 T _etext\nffffffffc0000000 t mod_init\t[some_module]\n",
    )
    .unwrap();
    let syms = vmseal_shim::kernel::symbols(&d.path().join("kallsyms")).unwrap();
    let mut src = vmseal_shim::kernel::open(&d.path().join("kcore")).unwrap();
    assert_eq!(
        src.ram(),
        vec![
            (0xffff_ffff_8100_0000, 3 * 4096),
            (0xffff_ffff_c000_0000, 4096)
        ]
    );
    let policy = Policy::parse(
        "name = \"linux\"\nversion = 1\n[[region]]\nname = \"kernel-text\"\nclass = \"code\"\nseverity = \"critical\"\nsymbol = \"_stext\"\nend_symbol = \"_etext\"\n\
         [[region]]\nname = \"module\"\nclass = \"code\"\nseverity = \"high\"\nsymbol = \"mod_init\"\nlen = 4096\n",
    )
    .unwrap();
    let snap = capture(&mut src, &policy, Some(&syms));
    let r = snap.regions();
    assert_eq!((r[0].pages, r[1].pages), (3, 1));
    let leaves: Vec<_> = text.chunks(4096).map(|p| HashAlg::Sha256.leaf(p)).collect();
    let tree = vmseal_sealer::merkle::MerkleTree::from_leaves(HashAlg::Sha256, leaves).unwrap();
    assert_eq!(
        r[0].root,
        tree.root(),
        "the bytes at those virtual addresses"
    );
    // kallsyms as an unprivileged reader sees it: refused with the reason.
    std::fs::write(
        d.path().join("zeros"),
        "0000000000000000 T _stext\n0000000000000000 T _etext\n",
    )
    .unwrap();
    let e = vmseal_shim::kernel::symbols(&d.path().join("zeros")).unwrap_err();
    assert!(e.contains("run as root"), "{e}");
    // Not a core, or missing: clear errors.
    std::fs::write(d.path().join("not-elf"), b"hello").unwrap();
    assert!(vmseal_shim::kernel::open(&d.path().join("not-elf")).is_err());
    let e = vmseal_shim::kernel::open(&d.path().join("absent"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("CONFIG_PROC_KCORE"), "{e}");
}

/// The fuzz target's entry point on real /proc text and deterministic mutations (stable toolchain).
#[test]
fn proc_text_parsers_never_panic() {
    let maps = std::fs::read("/proc/self/maps").unwrap();
    let syms = b"ffffffff81000000 T _stext\nffffffffc0000000 t mod_init\t[m]\n".to_vec();
    for seed in [maps, syms] {
        vmseal_testkit::mutations(&seed, 20_000, b"-0 \n[]xf\xff", |d| {
            vmseal_shim::fuzzing::proc_text(d)
        });
    }
}
