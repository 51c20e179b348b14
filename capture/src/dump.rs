//! Memory dumps as [`MemorySource`]s, for offline checks: raw images ([`RawDump`], byte N is
//! guest-physical address N) and ELF core files ([`ElfDump`], QEMU's `dump-guest-memory`: one
//! `PT_LOAD` per RAM range, `p_paddr` = guest-physical address). Read with positioned reads (no
//! mapping); a dump never changes, so it neither pauses nor keeps a dirty log.
//!
//! The same reader serves a running kernel's own memory from inside its guest: `/proc/kcore` is an
//! ELF core whose `PT_LOAD` segments are keyed by kernel *virtual* address ([`AddressKey::Virtual`];
//! `vmseal-shim`), so kallsyms addresses select regions directly.

use crate::source::{GuestMemory, MemorySource, PAGE, SourceError};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

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

impl GuestMemory for RawDump {
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
}

/// Errors specific to ELF dumps.
fn invalid(msg: String) -> SourceError {
    SourceError::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, msg))
}

/// Headers of an ELF core must sit in the first 16 MiB.
const ELF_HEAD_MAX: u64 = 16 << 20;

/// One loadable segment: guest-physical `[gpa, gpa + len)` at `offset` in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Guest-physical start.
    pub gpa: u64,
    /// Bytes present in the file.
    pub len: u64,
    /// File offset.
    pub offset: u64,
}

/// Which address of a `PT_LOAD` segment a core is read by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressKey {
    /// `p_paddr`: guest-physical (QEMU's `dump-guest-memory`).
    Physical,
    /// `p_vaddr`: virtual (the running kernel's `/proc/kcore`).
    Virtual,
}

/// Parse the `PT_LOAD` segments of an ELF64 little-endian core from its first bytes, by
/// guest-physical address.
pub fn parse_elf_segments(head: &[u8], file_len: u64) -> Result<Vec<Segment>, SourceError> {
    parse_elf_segments_by(head, file_len, AddressKey::Physical)
}

/// [`parse_elf_segments`], keyed by `key` (the returned `gpa` is then that address).
pub fn parse_elf_segments_by(
    head: &[u8],
    file_len: u64,
    key: AddressKey,
) -> Result<Vec<Segment>, SourceError> {
    use object::elf::{FileHeader64, PT_LOAD};
    use object::read::elf::{FileHeader, ProgramHeader};
    let hdr = FileHeader64::<object::Endianness>::parse(head)
        .map_err(|e| invalid(format!("not an ELF64 file: {e}")))?;
    let endian = hdr
        .endian()
        .map_err(|e| invalid(format!("ELF endianness: {e}")))?;
    if hdr.e_type(endian) != object::elf::ET_CORE {
        return Err(invalid(
            "ELF file is not a core dump (e_type != ET_CORE); use QEMU's dump-guest-memory".into(),
        ));
    }
    let phdrs = hdr.program_headers(endian, head).map_err(|e| {
        invalid(format!(
            "ELF program headers: {e} (they must be within the first 16 MiB)"
        ))
    })?;
    let mut out: Vec<Segment> = Vec::new();
    for ph in phdrs {
        if ph.p_type(endian) != PT_LOAD || ph.p_filesz(endian) == 0 {
            continue;
        }
        let s = Segment {
            gpa: match key {
                AddressKey::Physical => ph.p_paddr(endian),
                AddressKey::Virtual => ph.p_vaddr(endian),
            },
            len: ph.p_filesz(endian),
            offset: ph.p_offset(endian),
        };
        if s.offset.checked_add(s.len).is_none_or(|e| e > file_len)
            || s.gpa.checked_add(s.len).is_none()
        {
            return Err(invalid(format!(
                "PT_LOAD at gpa {:#x} points outside the file",
                s.gpa
            )));
        }
        if !s.gpa.is_multiple_of(PAGE) || !s.len.is_multiple_of(PAGE) {
            if key == AddressKey::Virtual && s.gpa.is_multiple_of(PAGE) && s.len >= PAGE {
                // /proc/kcore sizes some areas (vmalloc, vmemmap) as 2^n - 1 bytes: keep
                // the whole pages.
                out.push(Segment {
                    len: s.len - s.len % PAGE,
                    ..s
                });
                continue;
            }
            return Err(invalid(format!(
                "PT_LOAD at gpa {:#x}+{:#x} is not page-aligned",
                s.gpa, s.len
            )));
        }
        out.push(s);
    }
    out.sort_by_key(|s| s.gpa);
    if out.windows(2).any(|w| w[0].gpa + w[0].len > w[1].gpa) {
        return Err(invalid("PT_LOAD segments overlap".into()));
    }
    if out.is_empty() {
        return Err(invalid("ELF core has no PT_LOAD segments".into()));
    }
    Ok(out)
}

/// An ELF core dump (e.g. QEMU `dump-guest-memory`).
#[derive(Debug)]
pub struct ElfDump {
    path: PathBuf,
    file: File,
    segments: Vec<Segment>,
    key: AddressKey,
    boot: Option<[u8; 16]>,
}

impl ElfDump {
    /// Open an ELF core and index its `PT_LOAD` segments by guest-physical address.
    pub fn open(path: &Path) -> Result<Self, SourceError> {
        Self::open_by(path, AddressKey::Physical)
    }

    /// Open an ELF core and index its `PT_LOAD` segments by `key`: [`AddressKey::Virtual`] for
    /// `/proc/kcore` (its size is the kernel's address space, so only the headers are read).
    pub fn open_by(path: &Path, key: AddressKey) -> Result<Self, SourceError> {
        let file = File::open(path).map_err(|e| {
            SourceError::Io(std::io::Error::new(
                e.kind(),
                format!("{}: {e}", path.display()),
            ))
        })?;
        let len = file.metadata()?.len();
        // /proc/kcore's headers come first and are small; what follows is live kernel memory.
        let max = match key {
            AddressKey::Physical => ELF_HEAD_MAX,
            AddressKey::Virtual => 1 << 16,
        };
        let mut head = vec![0u8; len.min(max) as usize];
        // A short read is fine: the parser checks the program headers are within what was read.
        let mut got = 0;
        while got < head.len() {
            match file.read_at(&mut head[got..], got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(_) if got > 0 => break,
                Err(e) => return Err(e.into()),
            }
        }
        head.truncate(got);
        let segments = parse_elf_segments_by(&head, len, key)?;
        Ok(Self {
            path: path.to_owned(),
            file,
            segments,
            key,
            boot: None,
        })
    }

    /// Say which boot this memory belongs to (the `boot` claim): a live `/proc/kcore` is
    /// this boot of this machine ([`crate::source::kernel_boot_id`]); a dump file cannot tell.
    pub fn with_boot(mut self, boot: Option<[u8; 16]>) -> Self {
        self.boot = boot;
        self
    }

    /// The segments.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }
}

/// Open a dump, ELF core or raw image, by its first bytes.
pub fn open_dump(path: &Path) -> Result<Box<dyn MemorySource>, SourceError> {
    let mut magic = [0u8; 4];
    let f = File::open(path).map_err(|e| {
        SourceError::Io(std::io::Error::new(
            e.kind(),
            format!("{}: {e}", path.display()),
        ))
    })?;
    let is_elf = f.read_exact_at(&mut magic, 0).is_ok() && magic == *b"\x7fELF";
    Ok(if is_elf {
        Box::new(ElfDump::open(path)?)
    } else {
        Box::new(RawDump::open(path)?)
    })
}

impl GuestMemory for ElfDump {
    fn describe(&self) -> String {
        match self.key {
            AddressKey::Physical => format!("ELF core {}", self.path.display()),
            AddressKey::Virtual => format!("kernel memory {}", self.path.display()),
        }
    }
    fn boot_id(&self) -> Option<[u8; 16]> {
        self.boot
    }
    fn virt_to_phys(&self, gva: u64) -> Result<u64, SourceError> {
        // Keyed by virtual address, the source's addresses *are* the virtual ones.
        match self.key {
            AddressKey::Virtual
                if self
                    .segments
                    .iter()
                    .any(|s| gva >= s.gpa && gva - s.gpa < s.len) =>
            {
                Ok(gva)
            }
            AddressKey::Virtual => Err(SourceError::Translate {
                gva,
                reason: format!("not in any segment of {}", self.path.display()),
            }),
            AddressKey::Physical => Err(SourceError::Translate {
                gva,
                reason: format!("{} holds guest-physical memory only", self.path.display()),
            }),
        }
    }
    fn ram(&self) -> Vec<(u64, u64)> {
        self.segments.iter().map(|s| (s.gpa, s.len)).collect()
    }
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        let len = buf.len() as u64;
        let s = self
            .segments
            .iter()
            .find(|s| gpa >= s.gpa && gpa.checked_add(len).is_some_and(|e| e <= s.gpa + s.len))
            .ok_or(SourceError::OutOfRange { start: gpa, len })?;
        self.file.read_exact_at(buf, s.offset + (gpa - s.gpa))?;
        Ok(())
    }
}

/// A dump never changes: no pause, no dirty log.
impl MemorySource for RawDump {}

/// A dump file never changes, and a running kernel cannot be stopped from inside itself (its own
/// `/proc/kcore`): no pause, no dirty log.
impl MemorySource for ElfDump {}
