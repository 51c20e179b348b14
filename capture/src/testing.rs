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
