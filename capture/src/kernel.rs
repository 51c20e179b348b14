//! A kernel profile read from the guest's own kernel, with no debug package: the offsets of the
//! fields the kernel-object walkers follow (task list, pids, credentials, executables, modules),
//! from the BPF Type Format the kernel carries.
//!
//! Kernels built with `CONFIG_DEBUG_INFO_BTF` (Debian, Ubuntu, Fedora, RHEL 8.2+) hold their type
//! information in a `.BTF` section inside their read-only data — the same bytes a running guest
//! shows as `/sys/kernel/btf/vmlinux`, and that the rodata region of a capture already hashes.
//! A profile is read from the policy's `kernel` bzImage (decompressed as for KASLR: its vmlinux
//! keeps its section headers) and keyed by the kernel's GNU build id; the SHA-256 of the BTF and a
//! digest of the offsets go into the claims, so evidence names exactly the layout it was read
//! with. BTF is parsed by the `btfparse` crate; what vmseal feeds it is bounded
//! ([`MAX_BTF_BYTES`]) and every field it asks for is checked: missing, ambiguous (a version
//! difference neither of whose forms is present) or not byte-aligned fields are refused by name.
//!
//! Version differences handled: `task_struct.pid_links` (4.19+) or `pids` (older);
//! `module.mem[]` (6.4+) or `module.core_layout` (older).

use std::collections::BTreeMap;

use vmseal_sealer::claims::{KernelObjects, ModuleFact, TaskFact, WalkFailure};
use vmseal_sealer::merkle::{Digest, HashAlg};

use crate::source::PAGE;

/// Largest BTF blob read (a distribution kernel's is 4 – 6 MiB).
pub const MAX_BTF_BYTES: usize = 64 << 20;

/// Fields every supported kernel has: (type, member).
const REQUIRED: &[(&str, &str)] = &[
    ("list_head", "next"),
    ("task_struct", "tasks"),
    ("task_struct", "pid"),
    ("task_struct", "tgid"),
    ("task_struct", "comm"),
    ("task_struct", "real_parent"),
    ("task_struct", "cred"),
    ("task_struct", "mm"),
    ("task_struct", "thread_pid"),
    ("cred", "euid"),
    ("mm_struct", "exe_file"),
    ("file", "f_path"),
    ("path", "dentry"),
    ("dentry", "d_name"),
    ("dentry", "d_parent"),
    ("qstr", "name"),
    ("pid", "numbers"),
    ("upid", "nr"),
    ("pid_namespace", "idr"),
    ("pid", "tasks"),
    ("idr", "idr_rt"),
    ("xarray", "xa_head"),
    ("xa_node", "slots"),
    ("kset", "list"),
    ("kobject", "entry"),
    ("kobject", "name"),
    ("module_kobject", "kobj"),
    ("module_kobject", "mod"),
    ("module", "list"),
    ("module", "name"),
    ("module", "mkobj"),
];

/// Fields with two forms across kernel versions: (type, the newer member, the older member).
const EITHER: &[(&str, &str, &str)] = &[
    ("task_struct", "pid_links", "pids"),
    ("module", "mem", "core_layout"),
];

/// Why a kernel profile cannot be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileError {
    /// The kernel image is not one this reads.
    #[error("kernel image: {0}")]
    Image(String),
    /// The kernel carries no type information.
    #[error(
        "the kernel has no .BTF section: it was built without CONFIG_DEBUG_INFO_BTF (use a \
         distribution kernel, or build with it)"
    )]
    NoBtf,
    /// The BTF blob is larger than [`MAX_BTF_BYTES`].
    #[error("BTF of {0} bytes is larger than the {MAX_BTF_BYTES} this reads")]
    TooLarge(usize),
    /// The BTF does not parse.
    #[error("BTF does not parse: {0}")]
    Btf(String),
    /// A field the walkers need is missing, or not at a byte offset.
    #[error("this kernel's BTF has no usable {0} ({1}): its kernel objects cannot be read")]
    Field(String, String),
}

/// The layout of a kernel's objects, as its BTF describes them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KernelProfile {
    /// The kernel's GNU build id (hex; empty when the image has none).
    pub build_id: String,
    /// SHA-256 of its BTF (hex): equal to that of the running guest's `/sys/kernel/btf/vmlinux`.
    pub btf_sha256: String,
    /// Byte offsets of the fields the walkers follow, by `type.member`.
    pub offsets: BTreeMap<String, u64>,
}

impl KernelProfile {
    /// The profile of an x86 bzImage's kernel.
    pub fn from_bzimage(image: &[u8]) -> Result<Self, ProfileError> {
        let vmlinux = crate::kaslr::decompress_bzimage(image)
            .map_err(|e| ProfileError::Image(e.to_string()))?;
        Self::from_vmlinux(&vmlinux)
    }

    /// The profile of a vmlinux ELF (its `.BTF` section and its build id).
    pub fn from_vmlinux(elf: &[u8]) -> Result<Self, ProfileError> {
        use object::{Object, ObjectSection};
        let f = object::read::elf::ElfFile64::<object::Endianness>::parse(elf)
            .map_err(|e| ProfileError::Image(format!("not an ELF64 vmlinux: {e}")))?;
        let btf = f
            .section_by_name(".BTF")
            .ok_or(ProfileError::NoBtf)?
            .data()
            .map_err(|e| ProfileError::Image(format!(".BTF: {e}")))?;
        let build_id = f
            .build_id()
            .ok()
            .flatten()
            .map(hex::encode)
            .unwrap_or_default();
        Self::from_btf(btf, &build_id)
    }

    /// The profile described by the BTF blob `btf` (what `/sys/kernel/btf/vmlinux` holds) of the
    /// kernel whose build id is `build_id` (hex).
    pub fn from_btf(btf: &[u8], build_id: &str) -> Result<Self, ProfileError> {
        if btf.len() > MAX_BTF_BYTES {
            return Err(ProfileError::TooLarge(btf.len()));
        }
        let types = btfparse::TypeInformation::new(&Bytes(btf))
            .map_err(|e| ProfileError::Btf(format!("{e:?}")))?;
        let offset = |ty: &str, member: &str| -> Result<u64, String> {
            let id = types
                .id_of(ty)
                .ok_or_else(|| format!("no type `struct {ty}`"))?;
            match types.offset_of(id, member) {
                Ok((_, btfparse::Offset::ByteOffset(o))) => Ok(o as u64),
                Ok((_, other)) => Err(format!("not at a byte offset: {other:?}")),
                Err(e) => Err(format!("{e:?}")),
            }
        };
        let mut offsets = BTreeMap::new();
        for &(ty, member) in REQUIRED {
            let o = offset(ty, member)
                .map_err(|why| ProfileError::Field(format!("{ty}.{member}"), why))?;
            offsets.insert(format!("{ty}.{member}"), o);
        }
        for &(ty, newer, older) in EITHER {
            let (member, o) = match (offset(ty, newer), offset(ty, older)) {
                (Ok(o), Err(_)) => (newer, o),
                (Err(_), Ok(o)) => (older, o),
                (Ok(_), Ok(_)) => {
                    return Err(ProfileError::Field(
                        format!("{ty}.{newer}"),
                        format!("both {newer} and {older} are present: which layout is unclear"),
                    ));
                }
                (Err(a), Err(_)) => {
                    return Err(ProfileError::Field(format!("{ty}.{newer} (or {older})"), a));
                }
            };
            offsets.insert(format!("{ty}.{member}"), o);
        }
        // Where a module's core text starts, from the start of `struct module`:
        // `core_layout.base`, or `mem[MOD_TEXT].base` (the first of `mem[]`) since 6.4.
        let layout = if offsets.contains_key("module.core_layout") {
            "core_layout"
        } else {
            "mem"
        };
        for member in ["base", "size"] {
            let path = format!("{layout}.{member}");
            let o = offset("module", &path)
                .map_err(|why| ProfileError::Field(format!("module.{path}"), why))?;
            offsets.insert(format!("module.text.{member}"), o);
        }
        Ok(Self {
            build_id: build_id.to_owned(),
            btf_sha256: hex::encode(HashAlg::Sha256.hash(&[btf])),
            offsets,
        })
    }

    /// The byte offset of `type.member`, if the profile has it.
    pub fn offset(&self, field: &str) -> Option<u64> {
        self.offsets.get(field).copied()
    }

    /// Whether the profile has `type.member` — for a version-dependent field, which form this
    /// kernel uses (`task_struct.pid_links` or `task_struct.pids`).
    pub fn has(&self, field: &str) -> bool {
        self.offsets.contains_key(field)
    }

    /// SHA-256 of the profile's canonical form (its JSON, fields in order): what evidence names.
    pub fn digest(&self) -> Digest {
        let json = serde_json::to_vec(self).unwrap_or_default();
        HashAlg::Sha256.hash(&[&json])
    }
}

/// A BTF blob as `btfparse` reads it: every read bounds-checked.
struct Bytes<'a>(&'a [u8]);

impl btfparse::Readable for Bytes<'_> {
    fn read(&self, offset: u64, buffer: &mut [u8]) -> btfparse::Result<()> {
        let end = usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(buffer.len()).map(|e| (o, e)));
        match end.and_then(|(o, e)| self.0.get(o..e)) {
            Some(src) => {
                buffer.copy_from_slice(src);
                Ok(())
            }
            None => Err(btfparse::Error::new(
                btfparse::ErrorKind::IOError,
                "read past the end of the BTF",
            )),
        }
    }
}

/// Most tasks a walk visits before it gives up (a guest's list may be corrupt or hostile).
pub const MAX_TASKS: usize = 32_768;

/// Most path components read from an executable's dentry up to its root.
const MAX_PATH_DEPTH: usize = 64;

/// Longest name read from guest memory.
const MAX_NAME: usize = 256;

/// Longest executable path reported (what a claim holds).
const MAX_PATH: usize = vmseal_sealer::claims::kernel::MAX_TEXT;

/// Why a walk of guest kernel memory stopped. Guest memory is hostile: every pointer is checked,
/// every walk bounded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalkError {
    /// The profile lacks a field the walk needs.
    #[error("the kernel profile has no {0}")]
    Field(String),
    /// Guest memory at `gva` cannot be read.
    #[error("guest memory at {gva:#x} ({what}): {why}")]
    Read {
        /// Guest-virtual address.
        gva: u64,
        /// What was being read.
        what: &'static str,
        /// Why not.
        why: String,
    },
    /// A pointer that should point into the kernel does not.
    #[error("{what} is {ptr:#x}, not a kernel address")]
    NotKernel {
        /// What it is.
        what: &'static str,
        /// Its value.
        ptr: u64,
    },
    /// The list comes back to an entry it has visited, not to its head.
    #[error("the list loops at {0:#x} without coming back to its head")]
    Cycle(u64),
    /// More entries than a walk visits ([`MAX_TASKS`], [`MAX_MODULES`]).
    #[error("the list has more than {0} entries")]
    TooMany(usize),
}

/// Most modules a walk visits.
pub const MAX_MODULES: usize = 4_096;

/// A loaded module as the kernel's module list holds it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KernelModule {
    /// Its name (`module.name`).
    pub name: String,
    /// Where its core text starts (guest-virtual).
    pub text: u64,
    /// Its core text's size, bytes.
    pub text_size: u32,
}

/// A process as the kernel's task list holds it (a thread group's leader).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KernelTask {
    /// Its pid (`task_struct.pid`; 0 for the idle task).
    pub pid: i32,
    /// Its thread group (`tgid`).
    pub tgid: i32,
    /// Its name (`comm`, at most 15 bytes).
    pub comm: String,
    /// Its parent's pid (`real_parent`).
    pub parent: i32,
    /// Its effective uid (`cred->euid`).
    pub euid: u32,
    /// A kernel thread (it has no `mm`).
    pub kernel_thread: bool,
    /// Its executable's path (`mm->exe_file`), when it has one.
    pub exe: Option<String>,
}

/// Kernel virtual addresses are in the upper half.
fn is_kernel(ptr: u64) -> bool {
    ptr >= 0xffff_8000_0000_0000
}

/// Reads of guest-virtual memory through a source's page walk, each page translated and read
/// once per walk (the guest is paused: its page tables and memory hold still).
struct Guest<'a> {
    mem: &'a dyn crate::source::GuestMemory,
    /// Guest-virtual page → guest-physical page.
    tlb: std::cell::RefCell<std::collections::HashMap<u64, u64>>,
    /// Guest-physical page → its bytes.
    pages: std::cell::RefCell<std::collections::HashMap<u64, Box<[u8]>>>,
}

/// Most translations and pages a walk keeps (then it starts over): 64 MiB of pages at most.
const CACHE_ENTRIES: usize = 1 << 14;

impl<'a> Guest<'a> {
    fn new(mem: &'a dyn crate::source::GuestMemory) -> Self {
        Self {
            mem,
            tlb: Default::default(),
            pages: Default::default(),
        }
    }

    /// The guest-physical page of the guest-virtual page `page`.
    fn translate(&self, page: u64) -> Result<u64, crate::source::SourceError> {
        if let Some(pa) = self.tlb.borrow().get(&page) {
            return Ok(*pa);
        }
        let pa = self.mem.virt_to_phys(page)? & !(PAGE - 1);
        let mut tlb = self.tlb.borrow_mut();
        if tlb.len() >= CACHE_ENTRIES {
            tlb.clear();
        }
        tlb.insert(page, pa);
        Ok(pa)
    }

    /// Copy `out.len()` bytes at offset `off` of the guest-physical page `pa`.
    fn copy_page(
        &self,
        pa: u64,
        off: usize,
        out: &mut [u8],
    ) -> Result<(), crate::source::SourceError> {
        if let Some(p) = self.pages.borrow().get(&pa) {
            out.copy_from_slice(&p[off..off + out.len()]);
            return Ok(());
        }
        let mut p = vec![0u8; PAGE as usize].into_boxed_slice();
        self.mem.read(pa, &mut p)?;
        out.copy_from_slice(&p[off..off + out.len()]);
        let mut pages = self.pages.borrow_mut();
        if pages.len() >= CACHE_ENTRIES {
            pages.clear();
        }
        pages.insert(pa, p);
        Ok(())
    }

    fn bytes(&self, gva: u64, buf: &mut [u8], what: &'static str) -> Result<(), WalkError> {
        let err = |why: String| WalkError::Read { gva, what, why };
        let mut done = 0;
        while done < buf.len() {
            let at = gva
                .checked_add(done as u64)
                .ok_or_else(|| err("wraps".into()))?;
            let off = (at % PAGE) as usize;
            let n = (PAGE as usize - off).min(buf.len() - done);
            let pa = self
                .translate(at - off as u64)
                .map_err(|e| err(e.to_string()))?;
            self.copy_page(pa, off, &mut buf[done..done + n])
                .map_err(|e| err(e.to_string()))?;
            done += n;
        }
        Ok(())
    }

    fn u64(&self, gva: u64, what: &'static str) -> Result<u64, WalkError> {
        let mut b = [0u8; 8];
        self.bytes(gva, &mut b, what)?;
        Ok(u64::from_le_bytes(b))
    }

    fn u32(&self, gva: u64, what: &'static str) -> Result<u32, WalkError> {
        let mut b = [0u8; 4];
        self.bytes(gva, &mut b, what)?;
        Ok(u32::from_le_bytes(b))
    }

    /// A kernel pointer at `gva` (null allowed when `nullable`).
    fn ptr(&self, gva: u64, what: &'static str, nullable: bool) -> Result<u64, WalkError> {
        let p = self.u64(gva, what)?;
        if (p == 0 && nullable) || is_kernel(p) {
            Ok(p)
        } else {
            Err(WalkError::NotKernel { what, ptr: p })
        }
    }

    /// A NUL-terminated name of at most `max` bytes at `gva` (lossy UTF-8).
    fn name(&self, gva: u64, max: usize, what: &'static str) -> Result<String, WalkError> {
        let mut out = Vec::new();
        let mut chunk = [0u8; 16];
        while out.len() < max {
            let n = chunk.len().min(max - out.len());
            self.bytes(gva.wrapping_add(out.len() as u64), &mut chunk[..n], what)?;
            match chunk[..n].iter().position(|&b| b == 0) {
                Some(end) => {
                    out.extend_from_slice(&chunk[..end]);
                    break;
                }
                None => out.extend_from_slice(&chunk[..n]),
            }
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

impl KernelProfile {
    fn need(&self, field: &str) -> Result<u64, WalkError> {
        self.offset(field)
            .ok_or_else(|| WalkError::Field(field.to_owned()))
    }

    /// Every process on the kernel's task list, from `init_task` (its guest-virtual address, from
    /// the kernel's symbols) around the list back to it, in list order. Read with the guest
    /// paused, so the list holds still; bounded ([`MAX_TASKS`]), cycle-checked, every pointer
    /// checked to be a kernel address.
    pub fn tasks(
        &self,
        mem: &dyn crate::source::GuestMemory,
        init_task: u64,
    ) -> Result<Vec<KernelTask>, WalkError> {
        self.tasks_in(&Guest::new(mem), init_task)
    }

    fn tasks_in(&self, g: &Guest<'_>, init_task: u64) -> Result<Vec<KernelTask>, WalkError> {
        let tasks_off = self.need("task_struct.tasks")?;
        let head = init_task.wrapping_add(tasks_off);
        let mut out = vec![self.task(g, init_task)?];
        let mut seen = std::collections::HashSet::new();
        let mut node = g.ptr(head, "init_task.tasks.next", false)?;
        while node != head {
            if !seen.insert(node) {
                return Err(WalkError::Cycle(node));
            }
            if seen.len() >= MAX_TASKS {
                return Err(WalkError::TooMany(MAX_TASKS));
            }
            out.push(self.task(g, node.wrapping_sub(tasks_off))?);
            node = g.ptr(node, "task_struct.tasks.next", false)?;
        }
        Ok(out)
    }

    /// The address of the `task_struct` of process `pid` on the task list from `init_task`, if
    /// it is there (bounded and checked as [`tasks`](Self::tasks)).
    pub fn task_address(
        &self,
        mem: &dyn crate::source::GuestMemory,
        init_task: u64,
        pid: i32,
    ) -> Result<Option<u64>, WalkError> {
        let g = Guest::new(mem);
        let (tasks_off, pid_off) = (
            self.need("task_struct.tasks")?,
            self.need("task_struct.pid")?,
        );
        let head = init_task.wrapping_add(tasks_off);
        let mut node = head;
        for _ in 0..=MAX_TASKS {
            let t = node.wrapping_sub(tasks_off);
            if g.u32(t.wrapping_add(pid_off), "task_struct.pid")? as i32 == pid {
                return Ok(Some(t));
            }
            node = g.ptr(node, "task_struct.tasks.next", false)?;
            if node == head {
                return Ok(None);
            }
        }
        Err(WalkError::TooMany(MAX_TASKS))
    }

    /// The address of the `struct module` named `name` on the module list at `head`, if it is
    /// there (bounded and checked as [`modules`](Self::modules)).
    pub fn module_address(
        &self,
        mem: &dyn crate::source::GuestMemory,
        head: u64,
        name: &str,
    ) -> Result<Option<u64>, WalkError> {
        let g = Guest::new(mem);
        let (list, name_off) = (self.need("module.list")?, self.need("module.name")?);
        let mut node = g.ptr(head, "modules.next", false)?;
        for _ in 0..=MAX_MODULES {
            if node == head {
                return Ok(None);
            }
            let m = node.wrapping_sub(list);
            if g.name(m.wrapping_add(name_off), 55, "module.name")? == name {
                return Ok(Some(m));
            }
            node = g.ptr(node, "module.list.next", false)?;
        }
        Err(WalkError::TooMany(MAX_MODULES))
    }

    fn task(&self, g: &Guest<'_>, t: u64) -> Result<KernelTask, WalkError> {
        let pid_off = self.need("task_struct.pid")?;
        let pid = g.u32(t.wrapping_add(pid_off), "task_struct.pid")? as i32;
        let tgid = g.u32(
            t.wrapping_add(self.need("task_struct.tgid")?),
            "task_struct.tgid",
        )? as i32;
        let comm = g.name(
            t.wrapping_add(self.need("task_struct.comm")?),
            15,
            "task_struct.comm",
        )?;
        let parent_task = g.ptr(
            t.wrapping_add(self.need("task_struct.real_parent")?),
            "task_struct.real_parent",
            false,
        )?;
        let parent = g.u32(parent_task.wrapping_add(pid_off), "parent's pid")? as i32;
        let cred = g.ptr(
            t.wrapping_add(self.need("task_struct.cred")?),
            "task_struct.cred",
            false,
        )?;
        let euid = g.u32(cred.wrapping_add(self.need("cred.euid")?), "cred.euid")?;
        let mm = g.ptr(
            t.wrapping_add(self.need("task_struct.mm")?),
            "task_struct.mm",
            true,
        )?;
        let exe = if mm == 0 {
            None
        } else {
            let file = g.ptr(
                mm.wrapping_add(self.need("mm_struct.exe_file")?),
                "mm_struct.exe_file",
                true,
            )?;
            if file == 0 {
                None
            } else {
                Some(self.file_path(g, file)?)
            }
        };
        Ok(KernelTask {
            pid,
            tgid,
            comm,
            parent,
            euid,
            kernel_thread: mm == 0,
            exe,
        })
    }

    /// Every module on the kernel's module list, from its head (the `modules` symbol's
    /// guest-virtual address) around `module.list` back to it; bounded ([`MAX_MODULES`]),
    /// cycle-checked, every pointer checked.
    pub fn modules(
        &self,
        mem: &dyn crate::source::GuestMemory,
        head: u64,
    ) -> Result<Vec<KernelModule>, WalkError> {
        self.modules_in(&Guest::new(mem), head)
    }

    fn modules_in(&self, g: &Guest<'_>, head: u64) -> Result<Vec<KernelModule>, WalkError> {
        let list = self.need("module.list")?;
        let name = self.need("module.name")?;
        let (base, size) = (
            self.need("module.text.base")?,
            self.need("module.text.size")?,
        );
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut node = g.ptr(head, "modules.next", false)?;
        while node != head {
            if !seen.insert(node) {
                return Err(WalkError::Cycle(node));
            }
            if seen.len() > MAX_MODULES {
                return Err(WalkError::TooMany(MAX_MODULES));
            }
            let m = node.wrapping_sub(list);
            out.push(KernelModule {
                name: g.name(m.wrapping_add(name), 55, "module.name")?,
                text: g.ptr(m.wrapping_add(base), "a module's text", true)?,
                text_size: g.u32(m.wrapping_add(size), "a module's text size")?,
            });
            node = g.ptr(node, "module.list.next", false)?;
        }
        Ok(out)
    }

    /// The path of the `struct file` at `file`, from its dentry up to the root of its mount.
    fn file_path(&self, g: &Guest<'_>, file: u64) -> Result<String, WalkError> {
        let dentry_at = file
            .wrapping_add(self.need("file.f_path")?)
            .wrapping_add(self.need("path.dentry")?);
        let mut d = g.ptr(dentry_at, "file.f_path.dentry", false)?;
        let name_at = self
            .need("dentry.d_name")?
            .wrapping_add(self.need("qstr.name")?);
        let parent_at = self.need("dentry.d_parent")?;
        let mut parts = Vec::new();
        for _ in 0..MAX_PATH_DEPTH {
            let parent = g.ptr(d.wrapping_add(parent_at), "dentry.d_parent", false)?;
            if parent == d {
                break;
            }
            let name = g.ptr(d.wrapping_add(name_at), "dentry.d_name.name", false)?;
            parts.push(g.name(name, MAX_NAME, "a dentry's name")?);
            d = parent;
        }
        parts.reverse();
        let mut path = format!("/{}", parts.join("/"));
        // A path longer than a claim holds keeps its start, marked cut.
        if path.len() > MAX_PATH {
            let mut end = MAX_PATH - 3;
            while !path.is_char_boundary(end) {
                end -= 1;
            }
            path.truncate(end);
            path.push('…');
        }
        Ok(path)
    }
}

/// Most nodes of a pid namespace's IDR a walk visits.
pub const MAX_IDR_NODES: usize = 16_384;

impl KernelProfile {
    /// Every process the pid namespace at `ns` (e.g. the `init_pid_ns` symbol) knows by pid,
    /// from its IDR (an XArray) — the second view of the processes: a process in this view but
    /// not on the task list has been unlinked from it, hidden. Each pid's task is the first on
    /// its `PIDTYPE_PID` list; pids without a task (being freed) are left out. Bounded
    /// ([`MAX_IDR_NODES`] nodes), cycle-checked, every pointer checked.
    pub fn pid_namespace_tasks(
        &self,
        mem: &dyn crate::source::GuestMemory,
        ns: u64,
    ) -> Result<Vec<KernelTask>, WalkError> {
        self.pid_namespace_tasks_in(&Guest::new(mem), ns)
    }

    fn pid_namespace_tasks_in(&self, g: &Guest<'_>, ns: u64) -> Result<Vec<KernelTask>, WalkError> {
        let head_at = ns
            .wrapping_add(self.need("pid_namespace.idr")?)
            .wrapping_add(self.need("idr.idr_rt")?)
            .wrapping_add(self.need("xarray.xa_head")?);
        let slots = self.need("xa_node.slots")?;
        let (pid_tasks, links) = (self.need("pid.tasks")?, self.need("task_struct.pid_links")?);
        let mut stack = vec![g.u64(head_at, "the pid IDR's head")?];
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        while let Some(entry) = stack.pop() {
            // XArray entries: a node is tagged 2 (and above the reserved range); a pointer
            // (`struct pid *`) is 4-aligned; anything else (a value, a retry) is not a pid.
            if entry & 3 == 2 && entry > 4096 {
                let node = entry - 2;
                if !is_kernel(node) {
                    return Err(WalkError::NotKernel {
                        what: "an IDR node",
                        ptr: node,
                    });
                }
                if !seen.insert(node) {
                    return Err(WalkError::Cycle(node));
                }
                if seen.len() > MAX_IDR_NODES {
                    return Err(WalkError::TooMany(MAX_IDR_NODES));
                }
                let mut raw = [0u8; 64 * 8];
                g.bytes(node.wrapping_add(slots), &mut raw, "xa_node.slots")?;
                stack.extend(
                    raw.chunks_exact(8)
                        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
                        .filter(|&e| e != 0),
                );
            } else if entry & 3 == 0 && entry != 0 {
                if !is_kernel(entry) {
                    return Err(WalkError::NotKernel {
                        what: "a struct pid in the IDR",
                        ptr: entry,
                    });
                }
                // pid->tasks[PIDTYPE_PID].first: the task's pid_links[PIDTYPE_PID].
                let first = g.ptr(
                    entry.wrapping_add(pid_tasks),
                    "pid.tasks[PIDTYPE_PID]",
                    true,
                )?;
                if first != 0 {
                    out.push(self.task(g, first.wrapping_sub(links))?);
                }
            }
            if out.len() > MAX_TASKS {
                return Err(WalkError::TooMany(MAX_TASKS));
            }
        }
        out.sort_by_key(|t| t.pid);
        Ok(out)
    }
}

impl KernelProfile {
    /// The names of the loaded modules the module kset knows (`module_kset`'s kobjects whose
    /// `module_kobject` belongs to a loaded module — built-in modules' parameter kobjects have
    /// none), from the kset at `kset` (the value of the `module_kset` pointer): the second view
    /// of modules. A module here but not on the module list has been unlinked from it, hidden.
    /// Bounded ([`MAX_MODULES`]), cycle-checked, every pointer checked.
    pub fn kset_modules(
        &self,
        mem: &dyn crate::source::GuestMemory,
        kset: u64,
    ) -> Result<Vec<String>, WalkError> {
        self.kset_modules_in(&Guest::new(mem), kset)
    }

    fn kset_modules_in(&self, g: &Guest<'_>, kset: u64) -> Result<Vec<String>, WalkError> {
        let head = kset.wrapping_add(self.need("kset.list")?);
        let (entry, name) = (self.need("kobject.entry")?, self.need("kobject.name")?);
        let (kobj, owner) = (
            self.need("module_kobject.kobj")?,
            self.need("module_kobject.mod")?,
        );
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut node = g.ptr(head, "module_kset.list.next", false)?;
        while node != head {
            if !seen.insert(node) {
                return Err(WalkError::Cycle(node));
            }
            if seen.len() > 4 * MAX_MODULES {
                return Err(WalkError::TooMany(4 * MAX_MODULES));
            }
            let k = node.wrapping_sub(entry);
            let mk = k.wrapping_sub(kobj);
            if g.ptr(mk.wrapping_add(owner), "module_kobject.mod", true)? != 0 {
                let n = g.ptr(k.wrapping_add(name), "kobject.name", false)?;
                out.push(g.name(n, 55, "a module kobject's name")?);
            }
            node = g.ptr(node, "kobject.entry.next", false)?;
        }
        out.sort();
        Ok(out)
    }
}

/// Gates of the x86-64 interrupt descriptor table.
pub const IDT_GATES: usize = 256;

/// One gate of the interrupt descriptor table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdtGate {
    /// Its vector (0–255).
    pub vector: u8,
    /// Whether the gate is present.
    pub present: bool,
    /// The handler's address (guest-virtual).
    pub handler: u64,
}

/// The 256 gates of the x86-64 IDT at `idt` (the `idt_table` symbol's guest-virtual address),
/// read with the guest paused.
pub fn idt_gates(
    mem: &dyn crate::source::GuestMemory,
    idt: u64,
) -> Result<Vec<IdtGate>, WalkError> {
    idt_gates_in(&Guest::new(mem), idt)
}

fn idt_gates_in(g: &Guest<'_>, idt: u64) -> Result<Vec<IdtGate>, WalkError> {
    let mut raw = vec![0u8; IDT_GATES * 16];
    g.bytes(idt, &mut raw, "idt_table")?;
    Ok(raw
        .chunks_exact(16)
        .enumerate()
        .map(|(v, d)| {
            let w16 = |i: usize| u64::from(u16::from_le_bytes([d[i], d[i + 1]]));
            let high = u64::from(u32::from_le_bytes([d[8], d[9], d[10], d[11]]));
            IdtGate {
                vector: v as u8,
                present: d[5] & 0x80 != 0,
                handler: w16(0) | (w16(6) << 16) | (high << 32),
            }
        })
        .collect())
}

/// The vectors whose gate differs from the golden state's (`baseline`, read from the same kernel
/// before, its handlers moved by `slide` — the KASLR slide between the two boots): a hooked
/// interrupt or exception. Presence counts as part of a gate.
pub fn gates_changed(baseline: &[IdtGate], now: &[IdtGate], slide: u64) -> Vec<u8> {
    (0..IDT_GATES)
        .filter(|&v| {
            let (b, n) = (baseline.get(v), now.get(v));
            match (b, n) {
                (Some(b), Some(n)) => {
                    b.present != n.present
                        || (b.present && b.handler.wrapping_add(slide) != n.handler)
                }
                _ => true,
            }
        })
        .map(|v| v as u8)
        .collect()
}

/// The present gates whose handler is in none of `code` (guest-virtual `[start, end)` ranges:
/// the kernel's text, each module's text) — a hooked interrupt or exception.
pub fn gates_outside(gates: &[IdtGate], code: &[(u64, u64)]) -> Vec<IdtGate> {
    gates
        .iter()
        .filter(|g| g.present && !code.iter().any(|&(s, e)| (s..e).contains(&g.handler)))
        .copied()
        .collect()
}

/// Where an x86-64 distribution kernel links its text (`__START_KERNEL_map` plus the default
/// `CONFIG_PHYSICAL_START`): the slide of a kernel whose image is not at hand is taken against
/// it. Appraisal compares slides only with each other, so a kernel linked elsewhere is compared
/// right all the same.
pub const X86_64_LINK_TEXT: u64 = 0xffff_ffff_8100_0000;

/// The GNU build id (hex) among a kernel's ELF notes, as `/sys/kernel/notes` shows them.
pub fn build_id_of_notes(notes: &[u8]) -> Option<String> {
    use object::Endianness::Little;
    let mut it =
        object::read::elf::NoteIterator::<object::elf::FileHeader64<object::Endianness>>::new(
            Little, 4, notes,
        )
        .ok()?;
    while let Ok(Some(n)) = it.next() {
        if n.name() == b"GNU" && n.n_type(Little) == object::elf::NT_GNU_BUILD_ID {
            return Some(hex::encode(n.desc()));
        }
    }
    None
}

/// The symbols a kernel-objects walk needs from the running kernel's symbol map.
pub const WALK_SYMBOLS: [&str; 11] = [
    "_text",
    "_stext",
    "_etext",
    "_sinittext",
    "_einittext",
    "init_task",
    "init_pid_ns",
    "modules",
    "module_kset",
    "idt_table",
    "sys_call_table",
];

/// Why a kernel-objects walk cannot be set up for a guest.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalkSetupError {
    /// The symbol map lacks symbols the walk needs.
    #[error(
        "the running kernel's symbols lack {0}: give its symbol map (the guest's /proc/kallsyms \
         read as root, or its System.map; `symbols` in the policy or --symbols)"
    )]
    Symbols(String),
    /// The kernel profile cannot be read.
    #[error(transparent)]
    Profile(#[from] ProfileError),
}

/// Where a running kernel's objects are and how they are laid out: what a capture walks inside
/// its pause when the policy has `[kernel_objects]`.
#[derive(Debug, Clone)]
pub struct KernelWalk {
    profile: KernelProfile,
    digest: Digest,
    slide: u64,
    text: (u64, u64),
    init_text: (u64, u64),
    init_task: u64,
    init_pid_ns: u64,
    modules: u64,
    module_kset: u64,
    idt_table: u64,
    sys_call_table: u64,
    syscalls: usize,
}

impl KernelWalk {
    /// The walk of the kernel laid out as `profile`, linked with its text at `link_text`, running
    /// with `symbols` (whose `_text` gives the KASLR slide). The system-call table is taken to
    /// end at the next symbol (at most [`claims::kernel::MAX_SYSCALLS`] entries).
    ///
    /// [`claims::kernel::MAX_SYSCALLS`]: vmseal_sealer::claims::kernel::MAX_SYSCALLS
    pub fn new(
        profile: KernelProfile,
        link_text: u64,
        symbols: &vmseal_policy::SymbolMap,
    ) -> Result<Self, WalkSetupError> {
        let missing: Vec<&str> = WALK_SYMBOLS
            .iter()
            .copied()
            .filter(|s| symbols.get(s).is_none())
            .collect();
        if !missing.is_empty() {
            return Err(WalkSetupError::Symbols(missing.join(", ")));
        }
        let sym = |s: &str| symbols.get(s).unwrap_or_default();
        let sys_call_table = sym("sys_call_table");
        let end = symbols.next_after(sys_call_table).ok_or_else(|| {
            WalkSetupError::Symbols("a symbol after sys_call_table (where the table ends)".into())
        })?;
        let syscalls = usize::try_from((end - sys_call_table) / 8)
            .unwrap_or(usize::MAX)
            .min(vmseal_sealer::claims::kernel::MAX_SYSCALLS);
        Ok(Self {
            digest: profile.digest(),
            profile,
            slide: sym("_text").wrapping_sub(link_text),
            text: (sym("_stext"), sym("_etext")),
            init_text: (sym("_sinittext"), sym("_einittext")),
            init_task: sym("init_task"),
            init_pid_ns: sym("init_pid_ns"),
            modules: sym("modules"),
            module_kset: sym("module_kset"),
            idt_table: sym("idt_table"),
            sys_call_table,
            syscalls,
        })
    }

    /// The profile the walk reads structures with.
    pub fn profile(&self) -> &KernelProfile {
        &self.profile
    }

    /// Read every object the claim holds from `mem` (with the guest paused, the lists hold
    /// still). A walk that does not finish is recorded, not fatal: a tampered list is itself
    /// what the verifier must hear about.
    ///
    /// A kernel that runs while it is read (the shim's `/proc/kcore`) may be changing a list
    /// under the walk, or start a process between the two views' walks: a walk that did not
    /// finish is made twice more, and an object only the second view holds is looked for once
    /// more on the first (one that appeared meanwhile is on it now). A paused guest reads the
    /// same again: what is hidden stays hidden.
    pub fn observe(&self, mem: &dyn crate::source::GuestMemory) -> KernelObjects {
        let mut k = self.observe_once(mem);
        for _ in 0..2 {
            if k.errors.is_empty() {
                break;
            }
            k = self.observe_once(mem);
        }
        if k.tasks.iter().any(|t| !t.listed)
            && let Ok(list) = self.profile.tasks(mem, self.init_task)
        {
            let listed: std::collections::HashSet<u32> =
                list.iter().map(|t| t.pid as u32).collect();
            for t in k.tasks.iter_mut().filter(|t| listed.contains(&t.pid)) {
                t.listed = true;
            }
        }
        if k.modules.iter().any(|m| !m.listed)
            && let Ok(list) = self.profile.modules(mem, self.modules)
        {
            for m in &mut k.modules {
                if let Some(l) = list.iter().find(|l| l.name == m.name) {
                    (m.listed, m.text, m.text_size) = (true, l.text, l.text_size.into());
                }
            }
        }
        k
    }

    fn observe_once(&self, mem: &dyn crate::source::GuestMemory) -> KernelObjects {
        let mut errors = Vec::new();
        let mut failed = |walk: &str, e: WalkError| {
            errors.push(WalkFailure {
                walk: walk.to_owned(),
                error: e.to_string(),
            })
        };
        let p = &self.profile;
        // One reader for every walk: pages and translations read once.
        let g = &Guest::new(mem);
        let mut tasks: BTreeMap<u32, TaskFact> = BTreeMap::new();
        let fact = |t: KernelTask, listed: bool| TaskFact {
            pid: t.pid as u32,
            tgid: t.tgid as u32,
            parent: t.parent as u32,
            euid: t.euid,
            comm: t.comm,
            exe: t.exe,
            kernel_thread: t.kernel_thread,
            listed,
            by_pid: !listed,
        };
        match p.tasks_in(g, self.init_task) {
            Ok(list) => {
                for t in list {
                    tasks.entry(t.pid as u32).or_insert_with(|| fact(t, true));
                }
            }
            Err(e) => failed("tasks", e),
        }
        match p.pid_namespace_tasks_in(g, self.init_pid_ns) {
            // Threads are known by pid too; a process is its group's leader.
            Ok(by_pid) => {
                for t in by_pid.into_iter().filter(|t| t.pid == t.tgid) {
                    tasks
                        .entry(t.pid as u32)
                        .and_modify(|f| f.by_pid = true)
                        .or_insert_with(|| fact(t, false));
                }
            }
            Err(e) => failed("pid_namespace", e),
        }
        let mut modules: BTreeMap<String, ModuleFact> = BTreeMap::new();
        match p.modules_in(g, self.modules) {
            Ok(list) => {
                for m in list {
                    modules.entry(m.name.clone()).or_insert(ModuleFact {
                        name: m.name,
                        text: m.text,
                        text_size: m.text_size.into(),
                        listed: true,
                        in_kset: false,
                    });
                }
            }
            Err(e) => failed("modules", e),
        }
        let kset = g
            .ptr(self.module_kset, "module_kset", false)
            .and_then(|k| p.kset_modules_in(g, k));
        match kset {
            Ok(names) => {
                for name in names {
                    modules
                        .entry(name.clone())
                        .and_modify(|m| m.in_kset = true)
                        .or_insert(ModuleFact {
                            name,
                            text: 0,
                            text_size: 0,
                            listed: false,
                            in_kset: true,
                        });
                }
            }
            Err(e) => failed("module_kset", e),
        }
        let idt = match idt_gates_in(g, self.idt_table) {
            Ok(g) => g
                .into_iter()
                .filter(|g| g.present)
                .map(|g| (g.vector, g.handler))
                .collect(),
            Err(e) => {
                failed("idt", e);
                Vec::new()
            }
        };
        let syscalls = match syscall_table_in(g, self.sys_call_table, self.syscalls) {
            Ok(s) => s,
            Err(e) => {
                failed("syscalls", e);
                Vec::new()
            }
        };
        errors.sort_by(|a, b| a.walk.cmp(&b.walk));
        KernelObjects {
            profile: self.digest,
            build_id: p.build_id.clone(),
            slide: self.slide,
            text: self.text,
            init_text: self.init_text,
            tasks: tasks.into_values().collect(),
            modules: modules.into_values().collect(),
            idt,
            syscalls,
            errors,
        }
    }
}

/// The entries of the system-call table at `table` (the `sys_call_table` symbol's guest-virtual
/// address), each a handler's address: at most `n` (up to the next symbol), without the zero
/// padding that may follow the last (a real table has no empty slot: `sys_ni_syscall` fills
/// them).
pub fn syscall_table(
    mem: &dyn crate::source::GuestMemory,
    table: u64,
    n: usize,
) -> Result<Vec<u64>, WalkError> {
    syscall_table_in(&Guest::new(mem), table, n)
}

fn syscall_table_in(g: &Guest<'_>, table: u64, n: usize) -> Result<Vec<u64>, WalkError> {
    let mut raw = vec![0u8; n * 8];
    g.bytes(table, &mut raw, "sys_call_table")?;
    let mut entries: Vec<u64> = raw
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
        .collect();
    while entries.last() == Some(&0) {
        entries.pop();
    }
    Ok(entries)
}

/// What a running kernel says of itself in its own memory: for a host without an image of the
/// guest's kernel.
#[derive(Debug, Clone)]
pub struct FoundKernel {
    /// Its symbol table, as it runs (its kallsyms tables were relocated at boot).
    pub symbols: vmseal_policy::SymbolMap,
    /// Its profile, from the BTF between its `__start_BTF` and `__stop_BTF`, keyed by the build
    /// id between `__start_notes` and `__stop_notes`.
    pub profile: KernelProfile,
}

/// How much of the kernel's mapping is searched for its tables: from 32 MiB below the 2 MiB
/// page of its entry code to 64 MiB above it (its text and read-only data).
pub const SEARCH_BELOW: u64 = 32 << 20;
/// See [`SEARCH_BELOW`].
pub const SEARCH_ABOVE: u64 = 64 << 20;

/// Find the running kernel's own symbol table and BTF in `mem`, around `entry` (a kernel text
/// address, e.g. where its divide-error gate points): the kallsyms tables by their shape
/// (`crate::kallsyms`), then the BTF and the notes where its symbols say. Pages the kernel does
/// not map read as zeros. What the guest's memory holds is what is read — a kernel that rewrote
/// its tables gives another profile, and the profile's digest in the claims shows it against the
/// golden state.
pub fn find_in_memory(
    mem: &dyn crate::source::GuestMemory,
    entry: u64,
) -> Result<FoundKernel, WalkSetupError> {
    let base = (entry & !0x1f_ffff).wrapping_sub(SEARCH_BELOW);
    let len = (SEARCH_BELOW + SEARCH_ABOVE) as usize;
    let mut image = vec![0u8; len];
    for (i, page) in image.chunks_mut(PAGE as usize).enumerate() {
        let va = base.wrapping_add(i as u64 * PAGE);
        if let Ok(pa) = mem.virt_to_phys(va) {
            let _ = mem.read(pa & !(PAGE - 1), page);
        }
    }
    let missing = |what: &str| {
        WalkSetupError::Symbols(format!(
            "{what} in the guest's memory around its entry code ({base:#x}, {} MiB): give its \
             image (`kernel` in the policy) or its symbols",
            len >> 20
        ))
    };
    let table = crate::kallsyms::decode(&image).map_err(|e| missing(&e.to_string()))?;
    let symbols = crate::kallsyms::running(&table, 0);
    let span = |from: &str, to: &str| -> Result<&[u8], WalkSetupError> {
        let (Some(a), Some(b)) = (symbols.get(from), symbols.get(to)) else {
            return Err(missing(&format!("no {from} and {to}")));
        };
        let (a, b) = (a.wrapping_sub(base) as usize, b.wrapping_sub(base) as usize);
        image
            .get(a..b)
            .filter(|s| !s.is_empty() && s.len() <= MAX_BTF_BYTES)
            .ok_or_else(|| missing(&format!("{from}..{to} not within the searched mapping")))
    };
    let btf = span("__start_BTF", "__stop_BTF")?;
    let build_id = span("__start_notes", "__stop_notes")
        .ok()
        .and_then(build_id_of_notes)
        .unwrap_or_default();
    let profile = KernelProfile::from_btf(btf, &build_id)?;
    Ok(FoundKernel { symbols, profile })
}
