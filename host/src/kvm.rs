//! The KVM micro-VM: one vCPU in 32-bit protected mode running [`crate::guest`]'s program on the
//! real `/dev/kvm`, its RAM in a vm-memory `GuestMemoryMmap` registered with dirty logging.
//!
//! Pausing kicks the vCPU thread out of `KVM_RUN` with a signal (repeated until the thread parks,
//! so a kick that lands just before `KVM_RUN` is not lost). Dirty pages are KVM's dirty log for
//! guest writes plus vm-memory's bitmap for writes the host makes through the mapping (the attack
//! injections), exactly what live migration needs too.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_bindings::{kvm_regs, kvm_segment};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use vm_memory::bitmap::AtomicBitmap;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::signal::Killable;

use crate::guest::{self, Program};
use crate::sys;
use vmseal_capture::source::{DirtyLog, DirtyPages, GuestMemory, PAGE, Pausable, SourceError};

/// Guest memory with a bitmap of host writes.
pub type GuestMem = GuestMemoryMmap<AtomicBitmap>;

/// Errors starting the micro-VM.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KvmError {
    /// /dev/kvm is missing or not accessible.
    #[error(
        "cannot open /dev/kvm: {0} (load kvm_intel/kvm_amd or kvm_pvm, and run as a user in the kvm group)"
    )]
    Open(String),
    /// A KVM ioctl failed.
    #[error("KVM {op} failed: {reason}")]
    Ioctl {
        /// Which.
        op: &'static str,
        /// Why.
        reason: String,
    },
    /// Guest memory could not be mapped.
    #[error("guest memory: {0}")]
    Memory(String),
    /// The guest program did not assemble.
    #[error(transparent)]
    Assemble(#[from] guest::AssembleError),
    /// The memory size is unusable.
    #[error("guest memory must be 2 to 3072 MiB, got {0} MiB")]
    Size(u64),
}

fn ioctl(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> KvmError {
    move |e| KvmError::Ioctl {
        op,
        reason: e.to_string(),
    }
}

/// Micro-VM settings.
#[derive(Debug, Clone, Copy)]
pub struct MicroVmConfig {
    /// Guest RAM in MiB.
    pub mem_mib: u64,
    /// Pages of the working set the guest writes (from [`guest::WORKING_SET`] + 1 page).
    pub ws_pages: u32,
    /// Stride between consecutive written pages.
    pub stride: u32,
}

impl Default for MicroVmConfig {
    fn default() -> Self {
        Self {
            mem_mib: 64,
            ws_pages: 1024,
            stride: 7,
        }
    }
}

#[derive(Debug, Default)]
struct VcpuState {
    pause_requested: bool,
    paused: bool,
    stop: bool,
    exited: Option<String>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<VcpuState>,
    cv: Condvar,
    heartbeats: AtomicU64,
}

/// A running micro-VM.
pub struct MicroVm {
    thread: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
    // Field order matters: the VM fd must close before the memory it maps is unmapped.
    vm: VmFd,
    mem: GuestMem,
    program: Program,
    config: MicroVmConfig,
    dirty_started: bool,
    boot: [u8; 16],
    _kvm: Kvm,
}

impl std::fmt::Debug for MicroVm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MicroVm")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn flat_segment(selector: u16, code: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_: if code { 0xb } else { 0x3 },
        present: 1,
        dpl: 0,
        db: 1,
        s: 1,
        l: 0,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, VcpuState> {
    // A poisoned lock means the vCPU thread panicked; its state is still meaningful.
    s.state.lock().unwrap_or_else(|p| p.into_inner())
}

fn vcpu_loop(mut vcpu: VcpuFd, shared: Arc<Shared>) {
    let reason = loop {
        {
            let mut st = lock(&shared);
            if st.pause_requested && !st.stop {
                st.paused = true;
                shared.cv.notify_all();
                while st.pause_requested && !st.stop {
                    st = shared.cv.wait(st).unwrap_or_else(|p| p.into_inner());
                }
                st.paused = false;
            }
            if st.stop {
                break "stopped".to_owned();
            }
        }
        match vcpu.run() {
            Ok(VcpuExit::IoOut(port, _)) if port == guest::HEARTBEAT_PORT => {
                shared.heartbeats.fetch_add(1, Ordering::Relaxed);
            }
            Ok(VcpuExit::IoOut(..) | VcpuExit::IoIn(..)) => {}
            Ok(other) => break format!("unexpected vCPU exit {other:?}"),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {}
            Err(e) => break format!("KVM_RUN failed: {e}"),
        }
    };
    let mut st = lock(&shared);
    st.exited = Some(reason);
    st.paused = true;
    shared.cv.notify_all();
}

impl MicroVm {
    /// Create the VM, load the guest program and start its vCPU.
    pub fn start(config: MicroVmConfig) -> Result<Self, KvmError> {
        if !(2..=3072).contains(&config.mem_mib) {
            return Err(KvmError::Size(config.mem_mib));
        }
        let mem_size = config.mem_mib << 20;
        let ws_max = ((mem_size - guest::WORKING_SET) / PAGE).saturating_sub(1) as u32;
        let ws_pages = config.ws_pages.clamp(1, ws_max.max(1));
        let kvm = Kvm::new().map_err(|e| KvmError::Open(e.to_string()))?;
        let vm = kvm.create_vm().map_err(ioctl("KVM_CREATE_VM"))?;
        let mem = GuestMem::from_ranges(&[(GuestAddress(0), mem_size as usize)])
            .map_err(|e| KvmError::Memory(e.to_string()))?;
        sys::register_memory(&vm, &mem, true).map_err(|e| KvmError::Ioctl {
            op: "KVM_SET_USER_MEMORY_REGION",
            reason: e.to_string(),
        })?;

        let program = guest::assemble()?;
        let w = |gpa: u64, b: &[u8]| {
            mem.write_slice(b, GuestAddress(gpa))
                .map_err(|e| KvmError::Memory(e.to_string()))
        };
        w(guest::CODE, &program.code)?;
        w(guest::SYSCALLS, &guest::syscall_table(&program))?;
        w(guest::TASKS, &guest::task_table())?;
        w(
            guest::CONFIG,
            &guest::config(
                (guest::WORKING_SET + PAGE) as u32,
                ws_pages,
                config.stride.max(1),
            ),
        )?;

        let vcpu = vm.create_vcpu(0).map_err(ioctl("KVM_CREATE_VCPU"))?;
        let mut sregs = vcpu.get_sregs().map_err(ioctl("KVM_GET_SREGS"))?;
        sregs.cs = flat_segment(0x08, true);
        for s in [
            &mut sregs.ds,
            &mut sregs.es,
            &mut sregs.fs,
            &mut sregs.gs,
            &mut sregs.ss,
        ] {
            *s = flat_segment(0x10, false);
        }
        sregs.cr0 = 0x11; // PE | ET: protected mode, no paging
        vcpu.set_sregs(&sregs).map_err(ioctl("KVM_SET_SREGS"))?;
        vcpu.set_regs(&kvm_regs {
            rip: guest::CODE,
            rflags: 0x2,
            rsp: guest::STACK_TOP,
            ..Default::default()
        })
        .map_err(ioctl("KVM_SET_REGS"))?;

        sys::install_kick_handler().map_err(|e| KvmError::Ioctl {
            op: "signal handler",
            reason: e.to_string(),
        })?;
        let shared = Arc::new(Shared::default());
        let s2 = shared.clone();
        let thread = std::thread::Builder::new()
            .name("vmseal-vcpu0".into())
            .spawn(move || vcpu_loop(vcpu, s2))
            .map_err(|e| KvmError::Memory(e.to_string()))?;
        Ok(Self {
            thread: Some(thread),
            shared,
            vm,
            mem,
            program,
            config: MicroVmConfig { ws_pages, ..config },
            dirty_started: false,
            boot: fresh_boot_id()?,
            _kvm: kvm,
        })
    }

    /// The guest's memory (vm-memory), for readers and injections.
    pub fn memory(&self) -> &GuestMem {
        &self.mem
    }

    /// The assembled guest program.
    pub fn program(&self) -> &Program {
        &self.program
    }

    /// The effective configuration.
    pub fn config(&self) -> MicroVmConfig {
        self.config
    }

    /// Heartbeats so far (one per 4096 guest loop iterations).
    pub fn heartbeats(&self) -> u64 {
        self.shared.heartbeats.load(Ordering::Relaxed)
    }

    /// Why the vCPU stopped, if it did.
    pub fn exited(&self) -> Option<String> {
        lock(&self.shared).exited.clone()
    }

    /// Wait until the guest has made `n` more heartbeats (or `timeout` passes).
    pub fn wait_heartbeats(&self, n: u64, timeout: Duration) -> bool {
        let target = self.heartbeats() + n;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.heartbeats() >= target {
                return true;
            }
            if self.exited().is_some() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    }

    fn kick(&self) {
        if let Some(t) = &self.thread {
            let _ = t.kill(sys::kick_signal());
        }
    }

    /// Write into guest memory from the host (marks the pages dirty).
    pub fn write(&self, gpa: u64, bytes: &[u8]) -> Result<(), SourceError> {
        self.mem
            .write_slice(bytes, GuestAddress(gpa))
            .map_err(|_| SourceError::OutOfRange {
                start: gpa,
                len: bytes.len() as u64,
            })
    }

    /// The guest address of syscall handler `n`.
    fn handler(&self, n: usize) -> Result<u32, SourceError> {
        self.program
            .handlers
            .get(n)
            .copied()
            .ok_or(SourceError::OutOfRange {
                start: n as u64,
                len: 0,
            })
    }

    /// Attack: overwrite the body of syscall handler `n` with NOPs (its `ret` stays).
    pub fn inject_code_patch(&self, n: usize) -> Result<u64, SourceError> {
        let at = u64::from(self.handler(n)?);
        // `inc dword ptr [abs32]` is 6 bytes: ff 05 imm32.
        self.write(at, &[0x90; 6])?;
        Ok(at)
    }

    /// Attack: point syscall slot `slot` at handler `to` (a hooked pointer).
    pub fn inject_pointer_hook(&self, slot: u32, to: usize) -> Result<u64, SourceError> {
        let target = self.handler(to)?;
        let at = guest::SYSCALLS + 4 * slot as u64;
        self.write(at, &target.to_le_bytes())?;
        Ok(at)
    }

    /// Attack: unlink task `n` (n ≥ 1) from the task list, as a rootkit hides a process.
    pub fn inject_hidden_task(&self, n: u32) -> Result<u64, SourceError> {
        if n == 0 || n >= guest::NR_TASKS {
            return Err(SourceError::OutOfRange {
                start: n as u64,
                len: 0,
            });
        }
        let prev = guest::TASKS + (n as u64 - 1) * guest::TASK_SIZE;
        let mut next = [0u8; 4];
        self.read(guest::TASKS + n as u64 * guest::TASK_SIZE + 8, &mut next)?;
        self.write(prev + 8, &next)?;
        Ok(prev)
    }
}

/// A random id for a new micro-VM: each one is a boot of its own.
fn fresh_boot_id() -> Result<[u8; 16], KvmError> {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::fill(&mut b)
        .map_err(|_| KvmError::Memory("no randomness for the boot id".into()))?;
    Ok(b)
}

impl GuestMemory for MicroVm {
    fn boot_id(&self) -> Option<[u8; 16]> {
        Some(self.boot)
    }
    fn describe(&self) -> String {
        format!(
            "kvm micro-VM ({} MiB, {} working-set pages)",
            self.config.mem_mib, self.config.ws_pages
        )
    }

    fn ram(&self) -> Vec<(u64, u64)> {
        vmseal_capture::anon::mmap_ram(&self.mem)
    }

    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        vmseal_capture::anon::mmap_read(&self.mem, gpa, buf)
    }

    /// The micro-VM runs without paging: virtual addresses are physical.
    fn virt_to_phys(&self, gva: u64) -> Result<u64, SourceError> {
        Ok(gva)
    }
}

impl Pausable for MicroVm {
    fn pause(&mut self) -> Result<Duration, SourceError> {
        let t = Instant::now();
        lock(&self.shared).pause_requested = true;
        loop {
            self.kick();
            let st = lock(&self.shared);
            let (st, _) = self
                .shared
                .cv
                .wait_timeout_while(st, Duration::from_micros(500), |s| !s.paused)
                .unwrap_or_else(|p| p.into_inner());
            if let Some(r) = &st.exited {
                return Err(SourceError::GuestDied(r.clone()));
            }
            if st.paused {
                return Ok(t.elapsed());
            }
            if t.elapsed() > Duration::from_secs(5) {
                return Err(SourceError::Control {
                    action: "pause",
                    reason: "the vCPU did not stop within 5 s".into(),
                });
            }
        }
    }

    fn resume(&mut self) -> Result<(), SourceError> {
        let mut st = lock(&self.shared);
        if let Some(r) = &st.exited {
            return Err(SourceError::GuestDied(r.clone()));
        }
        st.pause_requested = false;
        self.shared.cv.notify_all();
        Ok(())
    }
}

impl DirtyLog for MicroVm {
    fn dirty_pages(&mut self) -> Result<DirtyPages, SourceError> {
        let mut d = DirtyPages::with_pages(
            self.mem
                .iter()
                .map(|r| (r.start_addr().0 + r.len()) / PAGE)
                .max()
                .unwrap_or(0),
        );
        for (slot, r) in self.mem.iter().enumerate() {
            let first = r.start_addr().0 / PAGE;
            let kvm_log = self
                .vm
                .get_dirty_log(slot as u32, r.len() as usize)
                .map_err(|e| SourceError::DirtyLog(e.to_string()))?;
            d.merge(first, &kvm_log);
            let host_writes: &AtomicBitmap = std::ops::Deref::deref(r).bitmap();
            d.merge(first, &host_writes.get_and_reset());
        }
        let ram = self.ram();
        Ok(d.since_tracking(&mut self.dirty_started, &ram))
    }
}

vmseal_capture::pausable_with_dirty_log!(MicroVm);

impl Drop for MicroVm {
    fn drop(&mut self) {
        {
            let mut st = lock(&self.shared);
            st.stop = true;
            self.shared.cv.notify_all();
        }
        if let Some(t) = self.thread.take() {
            while !t.is_finished() {
                let _ = t.kill(sys::kick_signal());
                std::thread::sleep(Duration::from_micros(200));
            }
            let _ = t.join();
        }
    }
}
