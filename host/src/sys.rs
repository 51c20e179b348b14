//! The kernel interfaces that need `unsafe`: registering guest memory with KVM and the vCPU kick
//! signal. This is the only module of `vmseal-host` allowed to use `unsafe`.
#![allow(unsafe_code)]

use kvm_bindings::{KVM_MEM_LOG_DIRTY_PAGES, kvm_userspace_memory_region};
use kvm_ioctls::VmFd;
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

use crate::kvm::GuestMem;

/// The signal used to kick a vCPU thread out of `KVM_RUN` (SIGRTMIN + 1; the handler does nothing:
/// its only effect is to make the ioctl return `EINTR`).
pub(crate) fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN() + 1
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Install the no-op handler for [`kick_signal`] (idempotent).
pub(crate) fn install_kick_handler() -> std::io::Result<()> {
    vmm_sys_util::signal::register_signal_handler(kick_signal(), on_kick)
        .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
}

/// Register every region of `mem` with the VM, slot by slot, with dirty logging when asked.
///
/// The caller must keep `mem` alive (mapped) for as long as `vm` exists: `MicroVm` owns both and
/// drops the `VmFd` first.
pub(crate) fn register_memory(vm: &VmFd, mem: &GuestMem, dirty_log: bool) -> std::io::Result<()> {
    for (slot, region) in mem.iter().enumerate() {
        let host = region
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let r = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: if dirty_log {
                KVM_MEM_LOG_DIRTY_PAGES
            } else {
                0
            },
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: `host` is the start of a live anonymous mapping of exactly `region.len()` bytes
        // owned by `mem`; the caller keeps `mem` mapped for the lifetime of `vm` (see above), so the
        // kernel never accesses unmapped memory through this slot.
        unsafe { vm.set_user_memory_region(r) }
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;
    }
    Ok(())
}
