//! The capture engine on anonymous memory with a guest thread writing it: pre-copy equals
//! stop-copy of the memory at the pause, incremental equals full, a write shows in exactly its
//! region and page, each selector kind resolves (and refuses) as documented, sampling follows the
//! nonce, and a source without capabilities is captured without them. No /dev/kvm needed: the
//! same properties are tested on the KVM micro-VM in `vmseal-host`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step is a failed test

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use vmseal_capture::anon::{AnonMemory, Guest};
use vmseal_capture::dump::RawDump;
use vmseal_capture::policy::{Policy, SymbolMap};
use vmseal_capture::source::{GuestMemory, MemorySource, PAGE, Pausable};
use vmseal_capture::testing::{StayPaused, pre_copy_then_stop_copy, roots};
use vmseal_capture::{Baseline, CaptureError, Consistency, Plan, Snapshot};

const MIB: u64 = 1 << 20;

/// Four regions, one per selector kind this source can resolve, and a working set the guest
/// writes.
const POLICY: &str = r#"
name = "anon"
version = 1
hash = "sha256"

[[region]]
name = "code"
class = "code"
severity = "critical"
symbol = "code_start"
end_symbol = "code_end"

[[region]]
name = "table"
class = "structure"
severity = "critical"
symbol = "table"
len = 0x40

[[region]]
name = "config"
class = "rodata"
severity = "medium"
gpa = { start = 0x5000, len = 0x1000 }

[[region]]
name = "vectors"
class = "structure"
severity = "high"
gva = { start = 0x8000, len = 0x2000 }

[[region]]
name = "working-set"
class = "data"
severity = "low"
gpa = { start = 0x100000, len = 0x400000 }
"#;

const WORKING_SET: u64 = 0x100000;
const WORKING_PAGES: u64 = 0x400;

fn symbols() -> SymbolMap {
    let mut m = SymbolMap::default();
    m.insert("code_start", 0x10000);
    m.insert("code_end", 0x14000);
    m.insert("table", 0x20000);
    m
}

fn memory() -> (AnonMemory, Guest) {
    let mem = AnonMemory::new(&[(0, 8 * MIB)]).unwrap();
    let guest = mem.guest();
    guest.fill(0x5a).unwrap();
    (mem, guest)
}

fn plan(src: &dyn GuestMemory, nonce: Option<&[u8]>) -> Plan {
    Plan::new(
        &Policy::parse(POLICY).unwrap(),
        src,
        Some(&symbols()),
        nonce,
    )
    .unwrap()
}

/// A guest thread writing its working set, page after page, until stopped.
struct Writer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Writer {
    fn start(guest: Guest) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut n = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let page = WORKING_SET + (n * 7 % WORKING_PAGES) * PAGE;
                guest.write(page, &n.to_le_bytes()).unwrap();
                n += 1;
            }
            n
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stop the writer (resume the memory first: a paused guest cannot finish its write).
    fn stop(mut self, mem: &mut AnonMemory) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        mem.resume().unwrap();
        self.thread.take().unwrap().join().unwrap()
    }
}

#[test]
fn pre_copy_equals_stop_copy_of_the_memory_at_the_pause() {
    let (mut mem, guest) = memory();
    let p = plan(&mem, None);
    let writer = Writer::start(guest);
    // Let the guest get going, so that it writes during the pre-copy pass.
    std::thread::sleep(std::time::Duration::from_millis(20));
    pre_copy_then_stop_copy(&mut mem, p).unwrap();
    let writes = writer.stop(&mut mem);
    assert!(writes > 0);
}

/// A guest whose writes are scripted against the capture's steps: right after the `n`th look at
/// the dirty log, `script(n, guest)` writes. Deterministic where a racing thread would not be.
struct Scripted<'a> {
    mem: &'a mut AnonMemory,
    guest: Guest,
    looks: u32,
    script: fn(u32, &Guest),
    paused: bool,
}

impl GuestMemory for Scripted<'_> {
    fn describe(&self) -> String {
        self.mem.describe()
    }
    fn ram(&self) -> Vec<(u64, u64)> {
        self.mem.ram()
    }
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), vmseal_capture::SourceError> {
        self.mem.read(gpa, buf)
    }
    fn virt_to_phys(&self, gva: u64) -> Result<u64, vmseal_capture::SourceError> {
        self.mem.virt_to_phys(gva)
    }
}

impl vmseal_capture::DirtyLog for Scripted<'_> {
    fn dirty_pages(&mut self) -> Result<vmseal_capture::DirtyPages, vmseal_capture::SourceError> {
        self.looks += 1;
        let dirty = vmseal_capture::DirtyLog::dirty_pages(self.mem)?;
        // What the guest writes after this look shows at the next one. A stopped guest writes
        // nothing.
        if !self.paused {
            (self.script)(self.looks, &self.guest);
        }
        Ok(dirty)
    }
}

impl Pausable for Scripted<'_> {
    fn pause(&mut self) -> Result<std::time::Duration, vmseal_capture::SourceError> {
        self.paused = true;
        self.mem.pause()
    }
    fn resume(&mut self) -> Result<(), vmseal_capture::SourceError> {
        Ok(()) // stays paused: the test compares with a stop-copy capture of the same moment
    }
}

impl MemorySource for Scripted<'_> {
    fn pausable(&mut self) -> Option<&mut dyn Pausable> {
        Some(self)
    }
    fn dirty_log(&mut self) -> Option<&mut dyn vmseal_capture::DirtyLog> {
        Some(self)
    }
}

/// Pre-copy converges: a guest that wrote its whole 64 MiB working set during the first pass and
/// then keeps rewriting four pages leaves only about those four for the pause — one pass followed
/// by the pause (the old way) would have re-read all 16,384 pages with the guest stopped.
#[test]
fn pre_copy_converges_and_the_pause_reads_only_what_is_still_being_written() {
    const BIG: u64 = 16_384;
    let mut mem = AnonMemory::new(&[(0, 80 * MIB)]).unwrap();
    let guest = mem.guest();
    let policy = Policy::parse(&POLICY.replace(
        "gpa = { start = 0x100000, len = 0x400000 }",
        "gpa = { start = 0x100000, len = 0x4000000 }",
    ))
    .unwrap();
    let p = Plan::new(&policy, &mem, Some(&symbols()), None).unwrap();
    let mut src = Scripted {
        mem: &mut mem,
        guest,
        looks: 0,
        paused: false,
        // Look 1 starts tracking, just before the first pass: the guest then writes its whole
        // working set, as if during that pass. After every later look: four hot pages again.
        script: |look, g| {
            let pages = if look == 1 { 0..BIG } else { 0..4 };
            for n in pages {
                g.write(WORKING_SET + n * PAGE + 16, &u64::from(look).to_le_bytes())
                    .unwrap();
            }
        },
    };
    let pre = Snapshot::full(&mut src, p.clone(), Consistency::PreCopy).unwrap();
    assert!(
        pre.stats.paused_pages <= 8,
        "the pause re-read {} pages ({:?})",
        pre.stats.paused_pages,
        pre.stats
    );
    assert!(
        pre.stats.pages_read >= p.pages().len() as u64 + BIG,
        "a round re-read the working set while the guest ran: {:?}",
        pre.stats
    );
    let stop_copy = Snapshot::full(&mut StayPaused(&mut mem), p, Consistency::StopCopy).unwrap();
    assert_eq!(
        roots(&pre),
        roots(&stop_copy),
        "still the memory at the pause"
    );
    mem.resume().unwrap();
}

#[test]
fn stop_copy_holds_the_guest_for_the_whole_read() {
    let (mut mem, guest) = memory();
    let p = plan(&mem, None);
    let writer = Writer::start(guest);
    std::thread::sleep(std::time::Duration::from_millis(10));
    // Two stop-copy captures with the guest kept paused in between: nothing moved.
    let a = Snapshot::full(&mut StayPaused(&mut mem), p.clone(), Consistency::StopCopy).unwrap();
    let b = Snapshot::full(&mut StayPaused(&mut mem), p.clone(), Consistency::StopCopy).unwrap();
    assert_eq!(roots(&a), roots(&b));
    // Once resumed, the guest's writes show.
    mem.resume().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(10));
    let c = Snapshot::full(&mut mem, p, Consistency::StopCopy).unwrap();
    writer.stop(&mut mem);
    assert_ne!(roots(&a)[4], roots(&c)[4], "the working set moved on");
    assert_eq!(roots(&a)[..4], roots(&c)[..4], "nothing else did");
}

#[test]
fn incremental_equals_full_and_reads_only_what_was_written() {
    let (mut mem, guest) = memory();
    let p = plan(&mem, None);
    let s0 = Snapshot::full(&mut mem, p.clone(), Consistency::PreCopy).unwrap();
    for i in 0..16u64 {
        guest
            .write(WORKING_SET + i * 3 * PAGE + 100, b"written")
            .unwrap();
    }
    guest
        .write(0x20008, &0xdead_beef_u64.to_le_bytes())
        .unwrap();
    let inc = s0.incremental(&mut StayPaused(&mut mem), 0).unwrap();
    let full = Snapshot::full(&mut StayPaused(&mut mem), p, Consistency::StopCopy).unwrap();
    assert_eq!(roots(&inc), roots(&full));
    for (a, b) in inc.trees.iter().zip(&full.trees) {
        assert_eq!(a.leaves(), b.leaves());
    }
    assert_eq!(inc.stats.pages_read, 17, "{:?}", inc.stats);
    assert_eq!(
        inc.stats.kind,
        vmseal_sealer::claims::CaptureKind::Incremental { base_seq: 0 }
    );
    mem.resume().unwrap();
}

#[test]
fn a_write_changes_exactly_its_region_and_page() {
    let (mut mem, _) = memory();
    let p = plan(&mem, None);
    let baseline = Snapshot::full(&mut mem, p.clone(), Consistency::StopCopy)
        .unwrap()
        .baseline();
    for (region, gpa) in [
        ("code", 0x12010u64),
        ("table", 0x20010),
        ("config", 0x5ff8),
        ("vectors", 0x9000),
    ] {
        // The same memory, written once at `gpa`.
        let (mut mem, guest) = memory();
        guest.write(gpa, b"\xcc\xcc\xcc\xcc").unwrap();
        let s = Snapshot::full(&mut mem, p.clone(), Consistency::StopCopy).unwrap();
        let d = s.delta(&baseline);
        assert_eq!(
            d.iter().map(|d| d.region.as_str()).collect::<Vec<_>>(),
            vec![region],
            "a write at {gpa:#x}"
        );
        let leaf = s.plan.leaf_of(region, gpa).unwrap();
        assert_eq!(
            d[0].changes.iter().map(|c| c.0).collect::<Vec<_>>(),
            vec![leaf as u64]
        );
        assert_eq!(
            s.changed_pages(&baseline)
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .collect::<Vec<_>>(),
            vec![(region.to_owned(), 1)]
        );
    }
}

#[test]
fn each_selector_kind_resolves_its_pages() {
    let (mem, _) = memory();
    let p = plan(&mem, None);
    let pages = |name: &str| p.region(name).unwrap().pfns.clone();
    assert_eq!(pages("code"), (0x10..0x14).collect::<Vec<_>>());
    assert_eq!(pages("table"), vec![0x20], "0x40 bytes, widened to a page");
    assert_eq!(pages("config"), vec![0x5]);
    assert_eq!(pages("vectors"), vec![0x8, 0x9]);
    assert_eq!(pages("working-set").len(), WORKING_PAGES as usize);
    assert_eq!(
        p.regions[0].gvas.as_deref(),
        Some(&[0x10000, 0x11000, 0x12000, 0x13000][..]),
        "virtual selectors keep their addresses (the KASLR undo needs them)"
    );
    assert!(p.regions[2].gvas.is_none());
}

/// What a policy with one region `region` says when planned on `mem`.
fn plan_error(mem: &AnonMemory, region: &str, syms: Option<&SymbolMap>) -> String {
    // A `section` selector needs an ELF file named at the top (which the plan is not given).
    let top = if region.starts_with("section") {
        "elf = \"guest.elf\"\n"
    } else {
        ""
    };
    let text = format!(
        "name = \"x\"\nversion = 1\nhash = \"sha256\"\n{top}[[region]]\nname = \"r\"\nclass = \"data\"\nseverity = \"low\"\n{region}\n"
    );
    let policy = Policy::parse(&text).unwrap();
    match Plan::new(&policy, mem, syms, None) {
        Err(e @ CaptureError::Plan { .. }) => e.to_string(),
        other => panic!("{region}: {other:?}"),
    }
}

#[test]
fn selectors_that_cannot_resolve_say_why() {
    let (mem, _) = memory();
    let syms = symbols();
    for (region, syms, says) in [
        (
            "symbol = \"nowhere\"\nlen = 16",
            Some(&syms),
            "symbol \"nowhere\" is not in the symbol map",
        ),
        (
            "symbol = \"table\"\nlen = 16",
            None,
            "no symbol map was given",
        ),
        (
            "symbol = \"code_end\"\nend_symbol = \"code_start\"",
            Some(&syms),
            "is not after start",
        ),
        ("section = \".text\"", Some(&syms), "no ELF file was loaded"),
        (
            "mapping = \"/usr/bin/x\"\nperms = \"r-x\"",
            None,
            "anonymous memory has no r-x mapping of \"/usr/bin/x\"",
        ),
        (
            "gpa = { start = 0x7ff000, len = 0x2000 }",
            None,
            "page 0x800000 is outside guest RAM",
        ),
        (
            "gpa = { start = 0, len = 0x10000 }\nsample = 4",
            None,
            "samples pages by the verifier's nonce",
        ),
    ] {
        let e = plan_error(&mem, region, syms);
        assert!(e.contains(says), "{region}: {e}");
        assert!(e.starts_with("region \"r\""), "{e}");
    }
}

/// A source with no Linux kernel to walk (anonymous memory here; a dump, the micro-VM, a
/// process) refuses a policy that asks for kernel objects, instead of capturing without them.
#[test]
fn a_source_without_a_kernel_refuses_kernel_objects() {
    let (mem, _) = memory();
    let policy = Policy::parse(
        "name = \"x\"\nversion = 1\n[[region]]\nname = \"r\"\nclass = \"data\"\nseverity = \"low\"\n\
         gpa = { start = 0, len = 0x1000 }\n[kernel_objects]\n",
    )
    .unwrap();
    let e = Plan::new(&policy, &mem, None, None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("has no Linux kernel objects to walk") && e.contains("vmseal-shim"),
        "{e}"
    );
}

#[test]
fn sampled_regions_follow_the_nonce() {
    let (mem, _) = memory();
    let text = POLICY.replace(
        "gpa = { start = 0x100000, len = 0x400000 }",
        "gpa = { start = 0x100000, len = 0x400000 }\nsample = 8",
    );
    let policy = Policy::parse(&text).unwrap();
    let ws = |nonce: &[u8]| {
        Plan::new(&policy, &mem, Some(&symbols()), Some(nonce))
            .unwrap()
            .regions
            .last()
            .unwrap()
            .pfns
            .clone()
    };
    assert_eq!(ws(b"nonce-a"), ws(b"nonce-a"));
    assert_ne!(ws(b"nonce-a"), ws(b"nonce-b"));
    assert_eq!(ws(b"nonce-a").len(), 8);
    let idx = vmseal_capture::policy::sample_indices(b"nonce-a", "working-set", 0x400, 8);
    assert_eq!(
        ws(b"nonce-a"),
        idx.iter().map(|&i| 0x100 + i as u64).collect::<Vec<_>>(),
        "the verifier's own sampling function picks the same pages"
    );
}

#[test]
fn a_source_without_capabilities_is_read_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("ram.img");
    let mut bytes = vec![0u8; (8 * MIB) as usize];
    bytes[0x5000..0x5004].copy_from_slice(b"conf");
    std::fs::write(&image, &bytes).unwrap();
    let mut dump = RawDump::open(&image).unwrap();
    assert!(dump.pausable().is_none() && dump.dirty_log().is_none());
    // Physical selectors only: a raw image has no MMU to translate virtual ones.
    let physical = POLICY
        .split("[[region]]")
        .filter(|r| !r.contains("symbol") && !r.contains("gva"))
        .collect::<Vec<_>>()
        .join("[[region]]");
    let p = Plan::new(&Policy::parse(&physical).unwrap(), &dump, None, None).unwrap();
    assert_eq!(p.regions.len(), 2);
    let s = Snapshot::full(&mut dump, p.clone(), Consistency::PreCopy).unwrap();
    assert_eq!(
        s.stats.pause,
        std::time::Duration::ZERO,
        "nothing was paused"
    );
    assert_eq!(
        s.stats.pages_read,
        2 * p.pages().len() as u64,
        "with no dirty log, pre-copy reads everything again at its consistent point"
    );
    let e = s.incremental(&mut dump, 0).unwrap_err();
    assert!(matches!(e, CaptureError::NoDirtyLog(_)), "{e}");
    assert!(e.to_string().contains("use a full capture"), "{e}");
}

#[test]
fn anonymous_memory_refuses_bad_layouts_and_reads_outside_it() {
    for bad in [&[][..], &[(0, 100)], &[(0x800, PAGE)], &[(0, 0)]] {
        assert!(AnonMemory::new(bad).is_err(), "{bad:x?}");
    }
    let (mem, guest) = memory();
    let mut buf = [0u8; 16];
    assert!(mem.read(8 * MIB - 8, &mut buf).is_err());
    assert!(guest.write(8 * MIB, b"x").is_err());
}

#[test]
fn baselines_round_trip_and_refuse_partial_leaves() {
    let (mut mem, _) = memory();
    let p = plan(&mem, None);
    let s = Snapshot::full(&mut mem, p, Consistency::StopCopy).unwrap();
    let b = s.baseline();
    assert_eq!(Baseline::from_bytes(&b.to_bytes()).unwrap(), b);
    let mut cut = b.clone();
    cut.regions[0].leaves.pop();
    let e = Baseline::from_bytes(&cut.to_bytes()).unwrap_err();
    assert!(
        e.to_string().contains("whole number of 32-byte digests"),
        "{e}"
    );
    assert!(s.delta(&b).is_empty());
}
