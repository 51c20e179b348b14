//! KASLR: the relocation table from Debian's bzImage, and one baseline for every boot: kernel text
//! captured from a randomised boot, with the relocations undone, equals a `nokaslr` boot's.

use vmseal_capture::kaslr::KernelRelocs;
use vmseal_capture::policy::{Policy, SymbolMap};
use vmseal_capture::{Consistency, Plan, Snapshot};
use vmseal_host::qemu::QemuSource;
use vmseal_testkit::QemuGuest;

fn kernel() -> Vec<u8> {
    let dir = vmseal_testkit::QemuGuest::kernel_dir().unwrap();
    std::fs::read(dir.join("vmlinuz")).expect("run scripts/fetch-test-kernel.sh")
}

#[test]
fn relocation_table_of_the_test_kernel() {
    let r = KernelRelocs::from_bzimage(&kernel()).unwrap();
    assert_eq!(r.link_text, 0xffff_ffff_8100_0000);
    assert!(r.r32.len() > 10_000, "{} 32-bit sites", r.r32.len());
    assert!(!r.r64.is_empty());
    eprintln!(
        "relocations: {} 32-bit, {} inverse, {} 64-bit",
        r.r32.len(),
        r.r32_inv.len(),
        r.r64.len()
    );
}

const POLICY: &str = r#"
name = "linux-kaslr"
version = 1
kernel = "vmlinuz"

[[region]]
name = "kernel-text"
class = "code"
severity = "critical"
symbol = "_stext"
end_symbol = "_etext"
kaslr = "undo"
"#;

fn capture(g: &QemuGuest, undo: bool) -> Vec<[u8; 32]> {
    let mut src = QemuSource::attach(&g.qmp(), &g.mem(), "mem").unwrap();
    src.refresh_paging().unwrap();
    let text = if undo {
        POLICY.to_owned()
    } else {
        POLICY
            .replace("kaslr = \"undo\"\n", "")
            .replace("kernel = \"vmlinuz\"\n", "")
    };
    let policy = Policy::parse(&text).unwrap();
    let map = SymbolMap::parse(&g.system_map).unwrap();
    let mut plan = Plan::new(&policy, &src, Some(&map), None).unwrap();
    if undo {
        let relocs = std::sync::Arc::new(KernelRelocs::from_bzimage(&kernel()).unwrap());
        plan.undo_kaslr(relocs, &map).unwrap();
    }
    let s = Snapshot::full(&mut src, plan, Consistency::StopCopy).unwrap();
    s.trees[0].leaves().to_vec()
}

#[test]
fn one_baseline_serves_every_boot() {
    let fixed = QemuGuest::boot(256, false).unwrap();
    let random = QemuGuest::boot(256, true).unwrap();
    let slide = random.symbol("_text").unwrap() - fixed.symbol("_text").unwrap();
    assert_ne!(
        slide, 0,
        "KASLR moved the kernel (retry if the slide happened to be zero)"
    );
    let base = capture(&fixed, true);
    assert_eq!(
        base,
        capture(&fixed, false),
        "with no slide, undo changes nothing"
    );
    let raw = capture(&random, false);
    assert_eq!(base.len(), raw.len());
    let differing = base.iter().zip(&raw).filter(|(a, b)| a != b).count();
    assert!(
        differing > base.len() / 2,
        "without undo most text pages differ ({differing} of {})",
        base.len()
    );
    assert_eq!(
        capture(&random, true),
        base,
        "with the relocations undone, the randomised boot hashes like the fixed one"
    );
}

#[test]
fn section_and_gva_selectors_follow_the_slide() {
    let guest = (0..5)
        .map(|_| QemuGuest::boot(256, true).unwrap())
        .find(|g| g.symbol("_text") != Some(0xffff_ffff_8100_0000))
        .expect("KASLR moved the kernel in one of five boots");
    let rodata = guest.symbol("__start_rodata").unwrap();
    let policy = Policy::parse(&format!(
        "name = \"s\"\nversion = 1\nkernel = \"vmlinuz\"\n\
         [[region]]\nname = \"by-section\"\nclass = \"rodata\"\nseverity = \"high\"\nsection = \".rodata\"\n\
         [[region]]\nname = \"by-gva\"\nclass = \"rodata\"\nseverity = \"high\"\ngva = {{ start = {rodata:#x}, len = 0x2000 }}\n\
         [[region]]\nname = \"by-symbol\"\nclass = \"rodata\"\nseverity = \"high\"\nsymbol = \"__start_rodata\"\nlen = 0x2000\n"
    ))
    .unwrap();
    let map = SymbolMap::parse(&guest.system_map).unwrap();
    let mut src = QemuSource::attach(&guest.qmp(), &guest.mem(), "mem").unwrap();
    src.refresh_paging().unwrap();
    let dir = std::env::var_os("VMSEAL_TEST_KERNEL_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/vmseal/kernel")
        });
    let ctx = vmseal_capture::kaslr::KernelContext::load(&policy, &dir, Some(&map)).unwrap();
    let plan = ctx.plan(&policy, &src, Some(&map), None).unwrap();
    let (sec, gva, sym) = (&plan.regions[0], &plan.regions[1], &plan.regions[2]);
    assert_eq!(
        gva.pfns, sym.pfns,
        "a gva range and the same symbol range select the same pages"
    );
    assert_eq!(
        sec.gvas.as_ref().unwrap()[0],
        rodata,
        "the .rodata section, slid, starts at __start_rodata"
    );
    assert_eq!(
        sec.pfns[..2],
        sym.pfns[..],
        "and covers the same first pages"
    );
    let s = Snapshot::full(&mut src, plan, Consistency::StopCopy).unwrap();
    assert!(s.trees[0].leaf_count() > 100);
}

/// The `kernel_image` fuzz target's entry point on the real bzImage's first 64 KiB and on
/// deterministic mutations of its header (stable toolchain): errors, never panics.
#[test]
fn kernel_image_target_never_panics() {
    let k = kernel();
    let head = &k[..k.len().min(64 << 10)];
    vmseal_capture::fuzzing::kernel_image(head);
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..20_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut d = head[..1024].to_vec();
        let i = (x as usize) % d.len();
        d[i] ^= (x >> 32) as u8 | 1;
        if x.is_multiple_of(7) {
            d.truncate((x >> 8) as usize % d.len());
        }
        vmseal_capture::fuzzing::kernel_image(&d);
    }
}
