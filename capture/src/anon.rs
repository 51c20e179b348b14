//! Guest memory that is anonymous host memory: a vm-memory `GuestMemoryMmap` with a dirty bitmap,
//! written by a [`Guest`] handle that honours pauses. It has every capability a source can have
//! ([`Pausable`], [`DirtyLog`]), so the whole engine — plans, stop-copy and pre-copy, incremental
//! updates — is tested on it without /dev/kvm, as vm-memory tests its own code on anonymous
//! mappings. The KVM micro-VM in `vmseal-host` is the same memory with a real vCPU writing it.
//!
//! Not a production source: nothing but the [`Guest`] handle writes this memory.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use vm_memory::bitmap::AtomicBitmap;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::source::{DirtyLog, DirtyPages, GuestMemory, PAGE, Pausable, SourceError};

type Mem = GuestMemoryMmap<AtomicBitmap>;

/// Whether the guest may write, and how many writes are under way.
#[derive(Debug, Default)]
struct GateState {
    paused: bool,
    writing: u32,
}

#[derive(Debug, Default)]
struct Gate {
    state: Mutex<GateState>,
    cv: Condvar,
}

impl Gate {
    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Anonymous guest memory: a [`MemorySource`](crate::source::MemorySource) with a pause and a dirty log.
#[derive(Debug)]
pub struct AnonMemory {
    mem: Mem,
    gate: Arc<Gate>,
    tracking: bool,
}

/// The guest's side of an [`AnonMemory`]: writes wait while the memory is paused, and are seen
/// by the dirty log. Clone it into the threads that play the guest.
#[derive(Debug, Clone)]
pub struct Guest {
    mem: Mem,
    gate: Arc<Gate>,
}

fn bad_range(gpa: u64, len: usize) -> SourceError {
    SourceError::OutOfRange {
        start: gpa,
        len: len as u64,
    }
}

/// The (start, length) ranges of vm-memory guest RAM: [`GuestMemory::ram`] of a source over it.
pub fn mmap_ram(mem: &GuestMemoryMmap<AtomicBitmap>) -> Vec<(u64, u64)> {
    mem.iter().map(|r| (r.start_addr().0, r.len())).collect()
}

/// `buf.len()` bytes at `gpa` of vm-memory guest RAM: [`GuestMemory::read`] of a source over it.
pub fn mmap_read(
    mem: &GuestMemoryMmap<AtomicBitmap>,
    gpa: u64,
    buf: &mut [u8],
) -> Result<(), SourceError> {
    mem.read_slice(buf, GuestAddress(gpa))
        .map_err(|_| bad_range(gpa, buf.len()))
}

impl AnonMemory {
    /// Zeroed memory over `ranges` (guest-physical start, length), each a whole number of pages.
    pub fn new(ranges: &[(u64, u64)]) -> Result<Self, SourceError> {
        if ranges.is_empty()
            || ranges
                .iter()
                .any(|&(s, l)| s % PAGE != 0 || l % PAGE != 0 || l == 0)
        {
            return Err(SourceError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("anonymous memory needs non-empty whole-page ranges, not {ranges:x?}"),
            )));
        }
        let layout: Vec<(GuestAddress, usize)> = ranges
            .iter()
            .map(|&(s, l)| (GuestAddress(s), l as usize))
            .collect();
        let mem = Mem::from_ranges(&layout).map_err(|e| {
            SourceError::Io(std::io::Error::other(format!(
                "cannot map {ranges:x?} of anonymous memory: {e}"
            )))
        })?;
        Ok(Self {
            mem,
            gate: Arc::default(),
            tracking: false,
        })
    }

    /// The guest's handle, for writing.
    pub fn guest(&self) -> Guest {
        Guest {
            mem: self.mem.clone(),
            gate: self.gate.clone(),
        }
    }
}

impl Guest {
    /// Write `data` at `gpa` as the guest would: waits while the memory is paused.
    pub fn write(&self, gpa: u64, data: &[u8]) -> Result<(), SourceError> {
        {
            let mut st = self.gate.lock();
            while st.paused {
                st = self.gate.cv.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            st.writing += 1;
        }
        let r = self
            .mem
            .write_slice(data, GuestAddress(gpa))
            .map_err(|_| bad_range(gpa, data.len()));
        let mut st = self.gate.lock();
        st.writing -= 1;
        self.gate.cv.notify_all();
        r
    }

    /// Fill every page with bytes derived from its address and `seed`: distinct pages, so that a
    /// page's leaf says which page it is.
    pub fn fill(&self, seed: u8) -> Result<(), SourceError> {
        let ranges: Vec<(u64, u64)> = self
            .mem
            .iter()
            .map(|r| (r.start_addr().0, r.len()))
            .collect();
        for (start, len) in ranges {
            for page in (start..start + len).step_by(PAGE as usize) {
                let word = (page / PAGE).to_le_bytes();
                let bytes: Vec<u8> = (0..PAGE as usize)
                    .map(|i| word[i % 8] ^ seed ^ (i / 8) as u8)
                    .collect();
                self.write(page, &bytes)?;
            }
        }
        Ok(())
    }
}

impl GuestMemory for AnonMemory {
    fn describe(&self) -> String {
        "anonymous memory".into()
    }

    fn ram(&self) -> Vec<(u64, u64)> {
        mmap_ram(&self.mem)
    }

    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        mmap_read(&self.mem, gpa, buf)
    }

    /// No paging: virtual addresses are physical, as in the micro-VM.
    fn virt_to_phys(&self, gva: u64) -> Result<u64, SourceError> {
        Ok(gva)
    }
}

impl Pausable for AnonMemory {
    /// Stop new writes and wait for the ones under way.
    fn pause(&mut self) -> Result<Duration, SourceError> {
        let t = Instant::now();
        let mut st = self.gate.lock();
        st.paused = true;
        while st.writing > 0 {
            st = self.gate.cv.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        Ok(t.elapsed())
    }

    fn resume(&mut self) -> Result<(), SourceError> {
        self.gate.lock().paused = false;
        self.gate.cv.notify_all();
        Ok(())
    }
}

impl DirtyLog for AnonMemory {
    fn dirty_pages(&mut self) -> Result<DirtyPages, SourceError> {
        let end = self.ram().iter().map(|&(s, l)| (s + l) / PAGE).max();
        let mut d = DirtyPages::with_pages(end.unwrap_or(0));
        for r in self.mem.iter() {
            let written: &AtomicBitmap = std::ops::Deref::deref(r).bitmap();
            d.merge(r.start_addr().0 / PAGE, &written.get_and_reset());
        }
        let ram = self.ram();
        Ok(d.since_tracking(&mut self.tracking, &ram))
    }
}

crate::pausable_with_dirty_log!(AnonMemory);
