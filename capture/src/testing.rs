//! Aids for tests of the engine and of sources (used by this crate's tests, `vmseal-host`'s and
//! `vmseal-shim`'s).

use std::time::Duration;

use crate::source::{
    DirtyLog, DirtyPages, GuestMemory, Mapping, MemorySource, Pausable, SourceError,
};

/// Delegates to a source but never resumes it: after a capture, memory stays as it was at the
/// capture's pause, so a second capture can be compared with the first. Resume the inner source
/// yourself when done.
pub struct StayPaused<'a, S: MemorySource + ?Sized>(pub &'a mut S);

impl<S: MemorySource + ?Sized> GuestMemory for StayPaused<'_, S> {
    fn describe(&self) -> String {
        self.0.describe()
    }
    fn ram(&self) -> Vec<(u64, u64)> {
        self.0.ram()
    }
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        self.0.read(gpa, buf)
    }
    fn boot_id(&self) -> Option<[u8; 16]> {
        self.0.boot_id()
    }
    fn mappings(&self) -> Vec<Mapping> {
        self.0.mappings()
    }
    fn virt_to_phys(&self, gva: u64) -> Result<u64, SourceError> {
        self.0.virt_to_phys(gva)
    }
}

impl<S: MemorySource + ?Sized> Pausable for StayPaused<'_, S> {
    fn pause(&mut self) -> Result<Duration, SourceError> {
        self.0.pausable().map_or(Ok(Duration::ZERO), |p| p.pause())
    }
    fn resume(&mut self) -> Result<(), SourceError> {
        Ok(())
    }
}

impl<S: MemorySource + ?Sized> DirtyLog for StayPaused<'_, S> {
    fn dirty_pages(&mut self) -> Result<DirtyPages, SourceError> {
        match self.0.dirty_log() {
            Some(d) => d.dirty_pages(),
            None => Err(SourceError::DirtyLog(format!(
                "{} has no dirty log",
                self.0.describe()
            ))),
        }
    }
}

impl<S: MemorySource + ?Sized> MemorySource for StayPaused<'_, S> {
    fn pausable(&mut self) -> Option<&mut dyn Pausable> {
        if self.0.pausable().is_some() {
            Some(self)
        } else {
            None
        }
    }
    fn dirty_log(&mut self) -> Option<&mut dyn DirtyLog> {
        if self.0.dirty_log().is_some() {
            Some(self)
        } else {
            None
        }
    }
}

/// Each region's name and root, in order: what two captures of the same memory agree on.
pub fn roots(s: &crate::Snapshot) -> Vec<(String, [u8; 32])> {
    s.regions().into_iter().map(|r| (r.name, r.root)).collect()
}

/// A pre-copy capture of `src` under `plan`, then a stop-copy one of the memory as the first
/// left it paused, which must be the same — the guest having written meanwhile, so that the
/// pre-copy read some pages again while paused (else the test proved nothing). Both snapshots
/// (pre-copy, stop-copy); the source stays paused. A capture that fails is the error.
pub fn pre_copy_then_stop_copy<S: MemorySource + ?Sized>(
    src: &mut S,
    plan: crate::Plan,
) -> Result<(crate::Snapshot, crate::Snapshot), crate::CaptureError> {
    use crate::{Consistency, Snapshot};
    let pages = plan.pages().len() as u64;
    let pre = Snapshot::full(
        &mut StayPaused(&mut *src),
        plan.clone(),
        Consistency::PreCopy,
    )?;
    assert!(
        pre.stats.pages_read > pages,
        "the guest wrote during the pre-copy pass, so some pages must have been read again while \
         paused: {:?}",
        pre.stats
    );
    let stop = Snapshot::full(&mut StayPaused(&mut *src), plan, Consistency::StopCopy)?;
    assert_eq!(roots(&pre), roots(&stop), "pre-copy and stop-copy differ");
    Ok((pre, stop))
}

/// Where [`DirectMap`] maps guest-physical 0 (the x86-64 kernel's direct map).
pub const DIRECT_MAP: u64 = 0xffff_8880_0000_0000;

/// Guest memory whose kernel addresses map linearly onto anonymous RAM, as the kernel's direct
/// map does: guest-virtual `DIRECT_MAP + x` is guest-physical `x`. Enough to lay out kernel
/// structures, good and hostile, without a guest.
pub struct DirectMap(pub crate::anon::AnonMemory);

impl GuestMemory for DirectMap {
    fn describe(&self) -> String {
        "a laid-out kernel".into()
    }
    fn ram(&self) -> Vec<(u64, u64)> {
        self.0.ram()
    }
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        self.0.read(gpa, buf)
    }
    fn virt_to_phys(&self, gva: u64) -> Result<u64, SourceError> {
        gva.checked_sub(DIRECT_MAP).ok_or(SourceError::Translate {
            gva,
            reason: "below the direct map".into(),
        })
    }
}

/// A kernel profile with small offsets, for structures laid out in a [`DirectMap`].
pub fn small_profile() -> crate::kernel::KernelProfile {
    let offsets = [
        ("task_struct.tasks", 0),
        ("task_struct.pid", 16),
        ("task_struct.tgid", 20),
        ("task_struct.comm", 24),
        ("task_struct.real_parent", 40),
        ("task_struct.cred", 48),
        ("task_struct.mm", 56),
        ("task_struct.pid_links", 64),
        ("cred.euid", 4),
        ("mm_struct.exe_file", 8),
        ("file.f_path", 8),
        ("path.dentry", 8),
        ("dentry.d_name", 16),
        ("qstr.name", 8),
        ("dentry.d_parent", 0),
        ("module.list", 8),
        ("module.name", 24),
        ("module.text.base", 80),
        ("module.text.size", 88),
        ("pid_namespace.idr", 0),
        ("idr.idr_rt", 0),
        ("xarray.xa_head", 8),
        ("xa_node.slots", 40),
        ("pid.tasks", 8),
        ("kset.list", 0),
        ("kobject.entry", 8),
        ("kobject.name", 0),
        ("module_kobject.kobj", 0),
        ("module_kobject.mod", 64),
    ];
    crate::kernel::KernelProfile {
        build_id: String::new(),
        btf_sha256: String::new(),
        offsets: offsets.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
    }
}

/// A kernel-objects walk over 64 KiB of `data` in a [`DirectMap`], its symbols at fixed places
/// (`init_task` at +0x1000, `init_pid_ns` +0x2000, `modules` +0x3000, `module_kset` +0x4000,
/// `idt_table` +0x5000, `sys_call_table` +0x6000, 256 entries; [`walk_symbols`]), what it
/// read. Every 8-byte word of `data` whose low nibble is 0xf becomes a pointer into the memory,
/// so arbitrary input is full of lists to follow.
pub fn walk_over(data: &[u8]) -> Result<vmseal_sealer::claims::KernelObjects, String> {
    const SIZE: usize = 0x10000;
    let mut bytes = vec![0u8; SIZE];
    let n = data.len().min(SIZE);
    bytes[..n].copy_from_slice(&data[..n]);
    for w in bytes.chunks_exact_mut(8) {
        let v = u64::from_le_bytes(w.try_into().unwrap_or_default());
        if v & 0xf == 0xf {
            let p = DIRECT_MAP + (v >> 4) % SIZE as u64;
            w.copy_from_slice(&p.to_le_bytes());
        }
    }
    let mem = crate::anon::AnonMemory::new(&[(0, SIZE as u64)]).map_err(|e| e.to_string())?;
    // Writing inside the one range cannot fail.
    let _ = mem.guest().write(0, &bytes);
    let walk = crate::kernel::KernelWalk::new(
        small_profile(),
        DIRECT_MAP,
        &walk_symbols([0x1000, 0x2000, 0x3000, 0x4000, 0x5000, 0x6000, 0x6800]),
    )
    .map_err(|e| e.to_string())?;
    Ok(walk.observe(&DirectMap(mem)))
}

/// The symbols a kernel-objects walk needs, in a [`DirectMap`]: the text in its first 2 KiB, the
/// init text after it, and, at the given offsets, `init_task`, `init_pid_ns`, `modules`,
/// `module_kset`, `idt_table`, `sys_call_table` and the symbol that ends the table.
pub fn walk_symbols(at: [u64; 7]) -> crate::policy::SymbolMap {
    let mut symbols = crate::policy::SymbolMap::default();
    let names = [
        "init_task",
        "init_pid_ns",
        "modules",
        "module_kset",
        "idt_table",
        "sys_call_table",
        "after_sys_call_table",
    ];
    for (name, off) in [
        ("_text", 0),
        ("_stext", 0),
        ("_etext", 0x800),
        ("_sinittext", 0x800),
        ("_einittext", 0x900),
    ]
    .into_iter()
    .chain(names.into_iter().zip(at))
    {
        symbols.insert(name, DIRECT_MAP + off);
    }
    symbols
}
