//! Where guest memory comes from: the [`MemorySource`] trait the capture engine is written against,
//! split into what every source has ([`GuestMemory`]) and the capabilities some have ([`Pausable`],
//! [`DirtyLog`]). The KVM micro-VM and QEMU guests (in `vmseal-host`), processes and the kernel
//! (in `vmseal-shim`), dump files ([`crate::dump`]) and anonymous memory ([`crate::anon`])
//! implement it.

use std::time::Duration;

/// Guest pages are 4 KiB.
pub const PAGE: u64 = vmseal_policy::PAGE;

/// Errors of a memory source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// A read outside guest RAM.
    #[error("guest-physical range {start:#x}+{len:#x} is not guest RAM")]
    OutOfRange {
        /// Start.
        start: u64,
        /// Length.
        len: u64,
    },
    /// The VM could not be paused or resumed.
    #[error("cannot {action} the VM: {reason}")]
    Control {
        /// pause or resume.
        action: &'static str,
        /// Why.
        reason: String,
    },
    /// The guest died.
    #[error("the guest stopped: {0}")]
    GuestDied(String),
    /// Dirty tracking failed.
    #[error("dirty page log: {0}")]
    DirtyLog(String),
    /// A guest-virtual address has no translation.
    #[error("guest-virtual address {gva:#x}: {reason}")]
    Translate {
        /// The address.
        gva: u64,
        /// Why.
        reason: String,
    },
    /// I/O.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A set of dirty guest pages, as a bitmap over page frame numbers (bit n = gpa n × 4 KiB).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirtyPages {
    bits: Vec<u64>,
}

impl DirtyPages {
    /// An empty set able to hold `pages` pages.
    pub fn with_pages(pages: u64) -> Self {
        Self {
            bits: vec![0; pages.div_ceil(64) as usize],
        }
    }

    /// Merge a KVM-style bitmap whose bit 0 is page `first_pfn`.
    pub fn merge(&mut self, first_pfn: u64, bitmap: &[u64]) {
        for (w, word) in bitmap.iter().enumerate() {
            let mut word = *word;
            while word != 0 {
                let b = word.trailing_zeros() as u64;
                word &= word - 1;
                self.insert(first_pfn + w as u64 * 64 + b);
            }
        }
    }

    /// Mark one page.
    pub fn insert(&mut self, pfn: u64) {
        let w = (pfn / 64) as usize;
        if w >= self.bits.len() {
            self.bits.resize(w + 1, 0);
        }
        self.bits[w] |= 1 << (pfn % 64);
    }

    /// Whether a page is dirty.
    pub fn contains(&self, pfn: u64) -> bool {
        self.bits
            .get((pfn / 64) as usize)
            .is_some_and(|w| w & (1 << (pfn % 64)) != 0)
    }

    /// Number of dirty pages.
    pub fn count(&self) -> u64 {
        self.bits.iter().map(|w| w.count_ones() as u64).sum()
    }

    /// The dirty page frame numbers, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.bits.iter().enumerate().flat_map(|(w, &word)| {
            let mut word = word;
            std::iter::from_fn(move || {
                (word != 0).then(|| {
                    let b = word.trailing_zeros() as u64;
                    word &= word - 1;
                    w as u64 * 64 + b
                })
            })
        })
    }

    /// Mark every page of `ram` ((start, length) ranges): what a dirty log returns the first
    /// time, when tracking starts and everything before counts as written.
    pub fn insert_ram(&mut self, ram: &[(u64, u64)]) {
        for &(start, len) in ram {
            (start / PAGE..(start + len) / PAGE).for_each(|p| self.insert(p));
        }
    }

    /// This log as a source returns it: the first time (`tracking` not yet started, which this
    /// starts) with every page of `ram` added, since everything before counts as written.
    pub fn since_tracking(mut self, tracking: &mut bool, ram: &[(u64, u64)]) -> Self {
        if !*tracking {
            *tracking = true;
            self.insert_ram(ram);
        }
        self
    }

    /// Union with another set.
    pub fn union(&mut self, other: &DirtyPages) {
        if other.bits.len() > self.bits.len() {
            self.bits.resize(other.bits.len(), 0);
        }
        for (a, b) in self.bits.iter_mut().zip(&other.bits) {
            *a |= b;
        }
    }
}

/// One mapping of a process (a line of /proc/PID/maps), for sources that capture a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// Start address.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// Permissions, e.g. `r-xp`.
    pub perms: String,
    /// The mapped file, `[heap]`, `[stack]`, or empty for anonymous memory.
    pub path: String,
}

/// A boot id for a process of this machine: SHA-256 over the kernel's boot id
/// (`/proc/sys/kernel/random/boot_id`), the process id and its start time (field 22 of
/// `/proc/PID/stat`), cut to 16 bytes. It changes when the machine reboots or the process is
/// restarted, and only then. `None` when the process is gone.
pub fn process_boot_id(pid: u32) -> Option<[u8; 16]> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count fields after its end.
    let start = stat.rsplit_once(')')?.1.split_whitespace().nth(19)?;
    let d = vmseal_sealer::merkle::HashAlg::Sha256.hash(&[
        b"vmseal-boot\0",
        boot.trim().as_bytes(),
        &pid.to_le_bytes(),
        start.as_bytes(),
    ]);
    d[..16].try_into().ok()
}

/// The boot id of this machine's kernel, as [`process_boot_id`] derives it without a process.
pub fn kernel_boot_id() -> Option<[u8; 16]> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let d =
        vmseal_sealer::merkle::HashAlg::Sha256.hash(&[b"vmseal-boot\0", boot.trim().as_bytes()]);
    d[..16].try_into().ok()
}

/// A guest's memory as the capture engine reads it: its RAM layout, reads, and what the guest's
/// MMU and process table say. Every source has this; what else it can do is a capability
/// ([`Pausable`], [`DirtyLog`]) that [`MemorySource`] hands out when the source has it — as
/// cloud-hypervisor's `vm-migration` keeps `Pausable` apart from dirty logging.
pub trait GuestMemory: Send + Sync {
    /// A short description ("kvm micro-VM", "qemu:/run/vm.qmp", "dump:core.elf").
    fn describe(&self) -> String;
    /// Guest RAM as (guest-physical start, length) ranges, ascending.
    fn ram(&self) -> Vec<(u64, u64)>;
    /// Copy guest memory at `gpa` into `buf` (any length within RAM).
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), SourceError>;
    /// Which boot of the guest this is (the `boot` claim): ranges of code may move across boots
    /// (KASLR) but never within one, and the verifier compares them between snapshots of the same
    /// boot. `None` when the source cannot tell (a dump file).
    fn boot_id(&self) -> Option<[u8; 16]> {
        None
    }
    /// The process mappings `mapping` selectors choose from (sources of a process only).
    fn mappings(&self) -> Vec<Mapping> {
        Vec::new()
    }
    /// Translate a guest-virtual address to guest-physical, as the guest's MMU would now.
    fn virt_to_phys(&self, gva: u64) -> Result<u64, SourceError> {
        Err(SourceError::Translate {
            gva,
            reason: format!(
                "{} cannot translate guest-virtual addresses",
                self.describe()
            ),
        })
    }
}

/// A guest that can be stopped, so that a capture reads one moment of its memory.
pub trait Pausable {
    /// Stop the guest's vCPUs (or the process); returns how long stopping took.
    fn pause(&mut self) -> Result<Duration, SourceError>;
    /// Let the guest run again.
    fn resume(&mut self) -> Result<(), SourceError>;
}

/// A guest whose page writes are tracked (KVM's dirty log, a dirty bitmap).
pub trait DirtyLog {
    /// Pages written since the previous call. The first call starts tracking and returns every
    /// page.
    fn dirty_pages(&mut self) -> Result<DirtyPages, SourceError>;
}

/// A memory source: [`GuestMemory`], and the capabilities it has.
///
/// A source without [`Pausable`] is one that never changes (a dump file) or one that cannot be
/// stopped from where it is read (the running kernel through `/proc/kcore`, a process reading
/// itself): the engine reads it as it is. A source without [`DirtyLog`] is captured in full
/// every time, and a pre-copy capture of it re-reads every page while paused.
pub trait MemorySource: GuestMemory {
    /// Pausing, when the source can.
    fn pausable(&mut self) -> Option<&mut dyn Pausable> {
        None
    }
    /// The dirty log, when the source has one.
    fn dirty_log(&mut self) -> Option<&mut dyn DirtyLog> {
        None
    }
}

/// `impl MemorySource for T` handing out both capabilities, for a source that is [`Pausable`]
/// and has a [`DirtyLog`] (the micro-VM, anonymous memory).
#[macro_export]
macro_rules! pausable_with_dirty_log {
    ($t:ty) => {
        impl $crate::source::MemorySource for $t {
            fn pausable(&mut self) -> Option<&mut dyn $crate::source::Pausable> {
                Some(self)
            }
            fn dirty_log(&mut self) -> Option<&mut dyn $crate::source::DirtyLog> {
                Some(self)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirty_set_operations() {
        let mut d = DirtyPages::with_pages(200);
        d.merge(64, &[0b101, 1 << 63]);
        assert_eq!(d.iter().collect::<Vec<_>>(), vec![64, 66, 191]);
        assert_eq!(d.count(), 3);
        assert!(d.contains(66) && !d.contains(65));
        let mut e = DirtyPages::with_pages(10);
        e.insert(3);
        e.union(&d);
        assert_eq!(e.iter().collect::<Vec<_>>(), vec![3, 64, 66, 191]);
    }
}
