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

use vmseal_sealer::merkle::{Digest, HashAlg};

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
