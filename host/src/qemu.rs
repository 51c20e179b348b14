//! QEMU guests as a [`MemorySource`]: guest RAM from a shared `memory-backend-file` read with
//! positioned reads, control through QMP (`stop`/`cont`), the RAM layout from `info mtree -f`, and
//! guest-virtual addresses translated by walking the guest's page tables from CR3, as LibVMI does.
//!
//! Start QEMU with, for example:
//!
//! ```text
//! qemu-system-x86_64 -machine q35,memory-backend=mem \
//!   -object memory-backend-file,id=mem,size=1G,mem-path=/dev/shm/vm1,share=on \
//!   -qmp unix:/run/vm1.qmp,server=on,wait=off …
//! ```

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use vmseal_capture::source::{GuestMemory, MemorySource, Pausable, SourceError};

/// Errors talking QMP.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QmpError {
    /// Socket I/O.
    #[error("QMP socket {path}: {source}")]
    Io {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// QEMU answered with an error.
    #[error("QMP {command} failed: {message}")]
    Command {
        /// Command.
        command: String,
        /// QEMU's message.
        message: String,
    },
    /// Not QMP.
    #[error("QMP protocol error: {0}")]
    Protocol(String),
}

/// A minimal QMP client (QEMU Machine Protocol: line-delimited JSON over a Unix socket).
#[derive(Debug)]
pub struct Qmp {
    path: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
}

impl Qmp {
    /// Connect, read the greeting and negotiate capabilities.
    pub fn connect(path: &Path) -> Result<Self, QmpError> {
        let io = |source| QmpError::Io {
            path: path.to_owned(),
            source,
        };
        let stream = UnixStream::connect(path).map_err(io)?;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(io)?;
        let writer = stream.try_clone().map_err(io)?;
        let mut q = Self {
            path: path.to_owned(),
            reader: BufReader::new(stream),
            writer,
            next_id: 1,
        };
        let greeting = q.read_message()?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Protocol(format!(
                "expected a QMP greeting, got {greeting}"
            )));
        }
        q.execute("qmp_capabilities", None)?;
        Ok(q)
    }

    /// The QEMU process at the other end of the socket (SO_PEERCRED), if the kernel says.
    pub fn peer_pid(&self) -> Option<u32> {
        let cred = rustix::net::sockopt::socket_peercred(&self.writer).ok()?;
        u32::try_from(rustix::process::Pid::as_raw(Some(cred.pid))).ok()
    }

    fn read_message(&mut self) -> Result<Value, QmpError> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .map_err(|source| QmpError::Io {
                path: self.path.clone(),
                source,
            })?;
        if n == 0 {
            return Err(QmpError::Protocol(
                "QEMU closed the QMP socket (did the guest exit?)".into(),
            ));
        }
        serde_json::from_str(&line).map_err(|e| QmpError::Protocol(format!("{e}: {line:?}")))
    }

    /// Run a command and return its `return` value (events in between are skipped).
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({ "execute": command, "id": id });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        let mut bytes = serde_json::to_vec(&msg).map_err(|e| QmpError::Protocol(e.to_string()))?;
        bytes.push(b'\n');
        self.writer
            .write_all(&bytes)
            .map_err(|source| QmpError::Io {
                path: self.path.clone(),
                source,
            })?;
        loop {
            let m = self.read_message()?;
            if m.get("event").is_some() || m.get("id").and_then(Value::as_u64) != Some(id) {
                continue;
            }
            if let Some(e) = m.get("error") {
                return Err(QmpError::Command {
                    command: command.to_owned(),
                    message: e
                        .get("desc")
                        .and_then(Value::as_str)
                        .unwrap_or("unknown error")
                        .to_owned(),
                });
            }
            return Ok(m.get("return").cloned().unwrap_or(Value::Null));
        }
    }

    /// Run a human monitor command.
    pub fn hmp(&mut self, command_line: &str) -> Result<String, QmpError> {
        let r = self.execute(
            "human-monitor-command",
            Some(json!({ "command-line": command_line })),
        )?;
        Ok(r.as_str().unwrap_or_default().to_owned())
    }
}

/// One RAM range: guest-physical `[gpa, gpa + len)` at `offset` in the backend file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RamRange {
    /// Guest-physical start.
    pub gpa: u64,
    /// Length.
    pub len: u64,
    /// Offset in the memory backend.
    pub offset: u64,
}

/// The RAM of memory backend `memdev` in the `memory` address space of `info mtree -f` output.
pub fn parse_mtree(text: &str, memdev: &str) -> Vec<RamRange> {
    let mut out = Vec::new();
    let mut in_memory_view = false;
    for line in text.lines() {
        if line.starts_with("FlatView") {
            in_memory_view = false;
            continue;
        }
        let t = line.trim();
        if t.starts_with("AS \"memory\"") {
            in_memory_view = true;
            continue;
        }
        if !in_memory_view {
            continue;
        }
        // 0000000000100000-000000000fffffff (prio 0, ram): mem @0000000000100000
        let Some((range, rest)) = t.split_once(' ') else {
            continue;
        };
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else {
            continue;
        };
        let Some((kind, name)) = rest.split_once("): ") else {
            continue;
        };
        if !kind.ends_with(", ram") {
            continue;
        }
        let mut parts = name.split_whitespace();
        if parts.next() != Some(memdev) {
            continue;
        }
        let offset = parts
            .next()
            .and_then(|o| o.strip_prefix('@'))
            .and_then(|o| u64::from_str_radix(o, 16).ok())
            .unwrap_or(start);
        if end >= start {
            out.push(RamRange {
                gpa: start,
                len: end - start + 1,
                offset,
            });
        }
    }
    out.sort_by_key(|r| r.gpa);
    out.dedup();
    out
}

/// Control registers relevant to address translation, from `info registers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paging {
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// EFER.
    pub efer: u64,
    /// The IDT register's base (0 when `info registers` shows none).
    pub idt: u64,
}

/// Parse CR3, CR4, EFER and the IDT's base out of `info registers` (first CPU).
pub fn parse_registers(text: &str) -> Option<Paging> {
    let get = |key: &str| -> Option<u64> {
        let i = text.find(key)? + key.len();
        let hex: String = text[i..]
            .trim_start_matches(' ')
            .chars()
            .take_while(char::is_ascii_hexdigit)
            .collect();
        u64::from_str_radix(&hex, 16).ok()
    };
    Some(Paging {
        cr3: get("CR3=")?,
        cr4: get("CR4=")?,
        efer: get("EFER=")?,
        idt: get("IDT=").unwrap_or(0),
    })
}

const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Walk x86-64 page tables (4-level, or 5-level with CR4.LA57) to translate `gva`, reading
/// page-table entries with `read_u64` (guest-physical).
pub fn walk(
    paging: Paging,
    gva: u64,
    read_u64: &dyn Fn(u64) -> Result<u64, SourceError>,
) -> Result<u64, SourceError> {
    let fail = |reason: String| SourceError::Translate { gva, reason };
    if paging.efer & (1 << 10) == 0 {
        return Err(fail(
            "the guest is not in long mode (EFER.LMA clear)".into(),
        ));
    }
    let levels = if paging.cr4 & (1 << 12) != 0 { 5 } else { 4 };
    let mut table = paging.cr3 & ADDR_MASK; // drops PCID bits 0-11
    for level in (1..=levels).rev() {
        let shift = 12 + 9 * (level - 1);
        let index = (gva >> shift) & 0x1ff;
        let entry = read_u64(table + index * 8)?;
        if entry & 1 == 0 {
            return Err(fail(format!("not present at level {level}")));
        }
        let large = entry & (1 << 7) != 0;
        if (level == 2 || level == 3) && large {
            let page = 1u64 << shift;
            return Ok((entry & ADDR_MASK & !(page - 1)) | (gva & (page - 1)));
        }
        if level == 1 {
            return Ok((entry & ADDR_MASK) | (gva & 0xfff));
        }
        table = entry & ADDR_MASK;
    }
    Err(fail("page walk did not terminate".into()))
}

/// A QEMU guest.
#[derive(Debug)]
pub struct QemuSource {
    qmp: Qmp,
    mem_path: PathBuf,
    mem: File,
    ram: Vec<RamRange>,
    paging: Option<Paging>,
    paused: bool,
    boot: Option<[u8; 16]>,
}

impl QemuSource {
    /// Attach as a source spec says: `QMP_SOCKET,MEM_FILE[,MEMDEV_ID]` (what follows `qemu:` in
    /// `--source`; the memory backend's id defaults to `mem`).
    pub fn open(spec: &str) -> Result<Self, SourceError> {
        let parts: Vec<&str> = spec.split(',').collect();
        let (qmp, mem, memdev) = match parts[..] {
            [q, m] if !q.is_empty() && !m.is_empty() => (q, m, "mem"),
            [q, m, d] if !q.is_empty() && !m.is_empty() && !d.is_empty() => (q, m, d),
            _ => {
                return Err(SourceError::Control {
                    action: "attach to",
                    reason: format!(
                        "{spec:?} is not QMP_SOCKET,MEM_FILE[,MEMDEV_ID] (e.g. qemu:/run/vm.qmp,/dev/shm/vm)"
                    ),
                });
            }
        };
        Self::attach(Path::new(qmp), Path::new(mem), memdev)
    }

    /// Attach to a running QEMU through its QMP socket and memory backend file (`memdev` is the
    /// backend's id, e.g. "mem").
    pub fn attach(qmp: &Path, mem_path: &Path, memdev: &str) -> Result<Self, SourceError> {
        let mut qmp = Qmp::connect(qmp).map_err(|e| SourceError::Control {
            action: "attach to",
            reason: e.to_string(),
        })?;
        let mtree = qmp.hmp("info mtree -f").map_err(|e| SourceError::Control {
            action: "query",
            reason: e.to_string(),
        })?;
        let ram = parse_mtree(&mtree, memdev);
        if ram.is_empty() {
            return Err(SourceError::Control {
                action: "map",
                reason: format!(
                    "no RAM of memory backend {memdev:?} in `info mtree -f`; start QEMU with -object memory-backend-file,id={memdev},…,share=on and -machine memory-backend={memdev}"
                ),
            });
        }
        let mem = File::open(mem_path)?;
        let file_len = mem.metadata()?.len();
        if let Some(r) = ram.iter().find(|r| r.offset + r.len > file_len) {
            return Err(SourceError::Control {
                action: "map",
                reason: format!(
                    "RAM at {:#x} needs {} bytes of {}, which has {file_len}",
                    r.gpa,
                    r.offset + r.len,
                    mem_path.display()
                ),
            });
        }
        let boot = qmp
            .peer_pid()
            .and_then(vmseal_capture::source::process_boot_id);
        let mut me = Self {
            qmp,
            mem_path: mem_path.to_owned(),
            mem,
            ram,
            paging: None,
            paused: false,
            boot,
        };
        // Paging registers are only meaningful once the guest kernel runs; a guest still in
        // firmware has none yet, which only matters for symbol selectors.
        let _ = me.refresh_paging();
        Ok(me)
    }

    /// The RAM layout with backend offsets.
    pub fn ram_ranges(&self) -> &[RamRange] {
        &self.ram
    }

    /// Re-read CR3/CR4/EFER (done at every pause; call it when translating while running).
    pub fn refresh_paging(&mut self) -> Result<Paging, SourceError> {
        let text = self
            .qmp
            .hmp("info registers")
            .map_err(|e| SourceError::Control {
                action: "query",
                reason: e.to_string(),
            })?;
        let p = parse_registers(&text).ok_or_else(|| SourceError::Control {
            action: "query",
            reason: "no CR3/CR4/EFER in `info registers`".into(),
        })?;
        self.paging = Some(p);
        Ok(p)
    }

    /// Read the paging registers when `policy` needs them: virtual selectors, a kernel image, or
    /// kernel objects (whose symbols and slide come from the guest's interrupt table).
    pub fn prepare_for(
        &mut self,
        policy: &vmseal_capture::policy::Policy,
    ) -> Result<(), SourceError> {
        use vmseal_capture::policy::Selector;
        if policy.kernel.is_some()
            || policy.kernel_objects.is_some()
            || policy
                .regions
                .iter()
                .any(|r| !matches!(r.selector, Selector::Gpa { .. }))
        {
            self.refresh_paging()?;
        }
        Ok(())
    }

    /// The kernel context and symbols to plan with: the given ones, or, without a symbol map,
    /// this boot's (`KernelContext::for_boot`, from where the guest's divide-error gate points).
    pub fn boot_context(
        &self,
        kernel: &vmseal_capture::kaslr::KernelContext,
        symbols: Option<vmseal_capture::policy::SymbolMap>,
    ) -> Result<
        (
            vmseal_capture::kaslr::KernelContext,
            Option<vmseal_capture::policy::SymbolMap>,
        ),
        String,
    > {
        match symbols {
            None if kernel.needs_boot() => kernel
                .for_boot(self, self.divide_error_handler()?)
                .map_err(|e| e.to_string()),
            symbols => Ok((kernel.clone(), symbols)),
        }
    }

    /// Where the guest kernel's divide-error gate (IDT vector 0) points: with the kernel's own
    /// symbols, its KASLR slide (`vmseal_capture::kallsyms::slide_from_divide_error`). The IDT
    /// register may point at a read-only alias of the table (page-table isolation); the gate in
    /// it is the same. Needs [`refresh_paging`](Self::refresh_paging).
    pub fn divide_error_handler(&self) -> Result<u64, String> {
        let idt = self
            .paging
            .map(|p| p.idt)
            .filter(|&b| b != 0)
            .ok_or("the guest's IDT register is not set (has its kernel booted?)")?;
        let gates = vmseal_capture::kernel::idt_gates(self, idt).map_err(|e| e.to_string())?;
        gates
            .first()
            .filter(|g| g.present)
            .map(|g| g.handler)
            .ok_or_else(|| "the guest's divide-error gate is not present".into())
    }

    /// The running kernel's symbols without a symbol map from the guest: its kallsyms tables
    /// decoded from `vmlinux` (its image, decompressed), moved by the slide its divide-error gate
    /// gives.
    pub fn kernel_symbols(
        &self,
        vmlinux: &[u8],
    ) -> Result<vmseal_capture::policy::SymbolMap, String> {
        let syms = vmseal_capture::kallsyms::decode(vmlinux).map_err(|e| e.to_string())?;
        let slide =
            vmseal_capture::kallsyms::slide_from_divide_error(&syms, self.divide_error_handler()?)
                .map_err(|e| e.to_string())?;
        Ok(vmseal_capture::kallsyms::running(&syms, slide))
    }

    /// Run a human monitor command (for tests and diagnostics).
    pub fn hmp(&mut self, cmd: &str) -> Result<String, SourceError> {
        self.qmp.hmp(cmd).map_err(|e| SourceError::Control {
            action: "query",
            reason: e.to_string(),
        })
    }

    /// Write into guest memory through the backend file (tests: a host-side tampering).
    pub fn write(&self, gpa: u64, bytes: &[u8]) -> Result<(), SourceError> {
        let off = self.offset(gpa, bytes.len() as u64)?;
        self.mem_writer()?.write_all_at(bytes, off)?;
        Ok(())
    }

    fn mem_writer(&self) -> Result<File, SourceError> {
        Ok(std::fs::OpenOptions::new()
            .write(true)
            .open(&self.mem_path)?)
    }

    fn offset(&self, gpa: u64, len: u64) -> Result<u64, SourceError> {
        self.ram
            .iter()
            .find(|r| gpa >= r.gpa && gpa.checked_add(len).is_some_and(|e| e <= r.gpa + r.len))
            .map(|r| r.offset + (gpa - r.gpa))
            .ok_or(SourceError::OutOfRange { start: gpa, len })
    }
}

impl GuestMemory for QemuSource {
    /// The QEMU process's identity (pid and start time, on this boot of the host): a guest reset
    /// inside the same process keeps it, so after one a moved kernel shows as `remapped`.
    fn boot_id(&self) -> Option<[u8; 16]> {
        self.boot
    }
    fn describe(&self) -> String {
        format!(
            "qemu guest ({}, {} RAM ranges)",
            self.mem_path.display(),
            self.ram.len()
        )
    }

    fn ram(&self) -> Vec<(u64, u64)> {
        self.ram.iter().map(|r| (r.gpa, r.len)).collect()
    }

    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        let off = self.offset(gpa, buf.len() as u64)?;
        self.mem.read_exact_at(buf, off)?;
        Ok(())
    }

    fn virt_to_phys(&self, gva: u64) -> Result<u64, SourceError> {
        let paging = self.paging.ok_or(SourceError::Translate {
            gva,
            reason: "paging registers not read yet (refresh_paging)".into(),
        })?;
        walk(paging, gva, &|pa| {
            let mut b = [0u8; 8];
            self.read(pa, &mut b)?;
            Ok(u64::from_le_bytes(b))
        })
    }
}

impl Pausable for QemuSource {
    fn pause(&mut self) -> Result<Duration, SourceError> {
        let t = Instant::now();
        self.qmp
            .execute("stop", None)
            .map_err(|e| SourceError::Control {
                action: "pause",
                reason: e.to_string(),
            })?;
        self.paused = true;
        Ok(t.elapsed())
    }

    fn resume(&mut self) -> Result<(), SourceError> {
        self.qmp
            .execute("cont", None)
            .map_err(|e| SourceError::Control {
                action: "resume",
                reason: e.to_string(),
            })?;
        self.paused = false;
        Ok(())
    }
}

impl MemorySource for QemuSource {
    fn pausable(&mut self) -> Option<&mut dyn Pausable> {
        Some(self)
    }
}

impl Drop for QemuSource {
    fn drop(&mut self) {
        if self.paused {
            let _ = self.qmp.execute("cont", None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MTREE: &str = "FlatView #0\n AS \"I/O\", root: io\n  0000000000000000-0000000000000007 (prio 0, i/o): dma-chan\nFlatView #1\n AS \"memory\", root: system\n AS \"cpu-memory-0\", root: system\n Root memory region: system\n  0000000000000000-000000000009ffff (prio 0, ram): mem\n  00000000000cb000-00000000000cdfff (prio 0, ram): mem @00000000000cb000\n  0000000000100000-000000007fffffff (prio 0, ram): mem @0000000000100000\n  00000000fd000000-00000000fdffffff (prio 1, ram): vga.vram\n  0000000100000000-000000013fffffff (prio 0, ram): mem @0000000080000000\nFlatView #2\n AS \"other\", root: x\n  0000000000000000-0000000000000fff (prio 0, ram): mem\n";

    #[test]
    fn mtree_ram_of_the_memory_address_space() {
        let r = parse_mtree(MTREE, "mem");
        assert_eq!(r.len(), 4);
        assert_eq!(
            r[0],
            RamRange {
                gpa: 0,
                len: 0xa0000,
                offset: 0
            }
        );
        assert_eq!(
            r[3],
            RamRange {
                gpa: 0x1_0000_0000,
                len: 0x4000_0000,
                offset: 0x8000_0000
            }
        );
        assert!(parse_mtree(MTREE, "other").is_empty());
        assert!(parse_mtree("garbage\n(prio", "mem").is_empty());
    }

    #[test]
    fn registers_parse() {
        let p = parse_registers(
            "RAX=0 CR0=80050033 CR2=0 CR3=00000000055ee000 CR4=000006b0\nIDT=     ffffffff96cb4000 00000fff\nEFER=0000000000000d01",
        )
        .unwrap();
        assert_eq!(
            p,
            Paging {
                cr3: 0x55ee000,
                cr4: 0x6b0,
                efer: 0xd01,
                idt: 0xffff_ffff_96cb_4000,
            }
        );
        assert!(parse_registers("nothing").is_none());
    }

    #[test]
    fn page_walk_handles_4k_2m_and_1g_pages() {
        use std::collections::HashMap;
        let mut mem: HashMap<u64, u64> = HashMap::new();
        let (pml4, pdpt, pd, pt) = (0x1000u64, 0x2000u64, 0x3000u64, 0x4000u64);
        let va4k: u64 = 0xffff_8000_0020_1123; // PML4 256, PDPT 0, PD 1, PT 1
        mem.insert(pml4 + 256 * 8, pdpt | 3);
        mem.insert(pdpt, pd | 3);
        mem.insert(pd + 8, pt | 3);
        mem.insert(pt + 8, 0x0000_0000_7777_7000 | 3 | (1 << 63));
        let va2m: u64 = 0xffff_8000_0040_0abc; // PD 2: a 2 MiB page
        mem.insert(pd + 16, 0x0000_0000_4020_0000 | 0x83);
        let va1g: u64 = 0xffff_8000_4000_1234; // PDPT 1: a 1 GiB page
        mem.insert(pdpt + 8, 0x0000_0001_4000_0000 | 0x83);
        let read = |a: u64| {
            mem.get(&a)
                .copied()
                .ok_or(SourceError::OutOfRange { start: a, len: 8 })
        };
        let p = Paging {
            cr3: pml4 | 0x5,
            cr4: 0,
            efer: 1 << 10,
            idt: 0,
        };
        assert_eq!(walk(p, va4k, &read).unwrap(), 0x7777_7123);
        assert_eq!(walk(p, va2m, &read).unwrap(), 0x4020_0abc);
        assert_eq!(walk(p, va1g, &read).unwrap(), 0x1_4000_1234);
        assert!(
            walk(p, 0xffff_8000_0060_0000, &read).is_err(),
            "not present"
        );
        assert!(
            walk(Paging { efer: 0, ..p }, va4k, &read).is_err(),
            "not long mode"
        );
    }
}
