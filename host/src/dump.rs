//! Raw memory images as a [`MemorySource`]: a file whose byte N is guest-physical address N. Read
//! with positioned reads (no mapping), never changes, so pausing is free and there is no dirty log.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::source::{DirtyPages, MemorySource, PAGE, SourceError};

/// A raw memory image.
#[derive(Debug)]
pub struct RawDump {
    path: PathBuf,
    file: File,
    len: u64,
}

impl RawDump {
    /// Open an image; its size must be a whole number of pages.
    pub fn open(path: &Path) -> Result<Self, SourceError> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        if len == 0 || len % PAGE != 0 {
            return Err(SourceError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{} is {len} bytes, not a whole number of 4 KiB pages; pad it or capture whole pages",
                    path.display()
                ),
            )));
        }
        Ok(Self {
            path: path.to_owned(),
            file,
            len,
        })
    }
}

impl MemorySource for RawDump {
    fn describe(&self) -> String {
        format!("raw image {}", self.path.display())
    }
    fn ram(&self) -> Vec<(u64, u64)> {
        vec![(0, self.len)]
    }
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        if gpa
            .checked_add(buf.len() as u64)
            .is_none_or(|end| end > self.len)
        {
            return Err(SourceError::OutOfRange {
                start: gpa,
                len: buf.len() as u64,
            });
        }
        self.file.read_exact_at(buf, gpa)?;
        Ok(())
    }
    fn pause(&mut self) -> Result<Duration, SourceError> {
        Ok(Duration::ZERO)
    }
    fn resume(&mut self) -> Result<(), SourceError> {
        Ok(())
    }
    fn dirty_pages(&mut self) -> Result<Option<DirtyPages>, SourceError> {
        Ok(None)
    }
}
