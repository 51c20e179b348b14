//! The `kernel` claim: what the guest kernel's own structures held at the capture's pause — its
//! processes, modules, interrupt gates and system calls, each as the kernel's two views of it
//! hold it. Facts only: which differences matter, and how much, the verifier decides against its
//! golden state (`docs/kernel-objects.md`).

use ciborium::value::Value;

use super::{ClaimsError, Map, MapBuilder, as_u64, field};
use crate::merkle::Digest;

/// Most processes the claim holds: each of the capture's two walks stops at half of it.
pub const MAX_TASKS: usize = 65_536;
/// Most modules the claim holds (the module list's walk stops at 4,096, the kset's at 16,384).
pub const MAX_MODULES: usize = 32_768;
/// Most system-call table entries the claim holds.
pub const MAX_SYSCALLS: usize = 4_096;
/// Longest text (a name, a path, an error) the claim holds, bytes.
pub const MAX_TEXT: usize = 4_096;

/// A process (a thread group's leader) as the guest kernel holds it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskFact {
    /// Its pid.
    pub pid: u32,
    /// Its thread group.
    pub tgid: u32,
    /// Its parent's pid.
    pub parent: u32,
    /// Its effective uid.
    pub euid: u32,
    /// Its name (`comm`).
    pub comm: String,
    /// Its executable's path, when it has one.
    pub exe: Option<String>,
    /// A kernel thread (no address space).
    pub kernel_thread: bool,
    /// On the kernel's task list (`init_task.tasks`).
    pub listed: bool,
    /// Known by pid to the initial pid namespace (its IDR).
    pub by_pid: bool,
}

/// A loaded module as the guest kernel holds it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModuleFact {
    /// Its name.
    pub name: String,
    /// Where its core text starts (guest-virtual; 0 when only the kset names it).
    pub text: u64,
    /// Its core text's size, bytes.
    pub text_size: u64,
    /// On the kernel's module list (`modules`).
    pub listed: bool,
    /// In the module kset (`/sys/module`).
    pub in_kset: bool,
}

/// A walk of the guest's structures that did not finish: itself a finding (a list that loops in
/// a paused guest has been tampered with).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WalkFailure {
    /// Which walk: `tasks`, `pid_namespace`, `modules`, `module_kset`, `idt` or `syscalls`.
    pub walk: String,
    /// Why it stopped.
    pub error: String,
}

/// The `kernel` claim.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KernelObjects {
    /// Digest of the kernel profile (structure layout) the walks used (hex in JSON).
    #[serde(with = "hex_digest")]
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub profile: Digest,
    /// The kernel's GNU build id (hex).
    pub build_id: String,
    /// The kernel's KASLR slide: where its text runs minus where it was linked.
    pub slide: u64,
    /// The kernel's text as it runs, `[_stext, _etext)` guest-virtual (`[start, end]` in JSON).
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<u64>))]
    pub text: (u64, u64),
    /// The kernel's init text as it runs, `[_sinittext, _einittext)` (freed after boot; early
    /// exception handlers may stay pointed into it).
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<u64>))]
    pub init_text: (u64, u64),
    /// Processes, by pid ascending, each once.
    pub tasks: Vec<TaskFact>,
    /// Modules, by name ascending, each once.
    pub modules: Vec<ModuleFact>,
    /// Present interrupt gates as (vector, handler), by vector ascending (`[vector, handler]`
    /// pairs in JSON).
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Vec<u64>>))]
    pub idt: Vec<(u8, u64)>,
    /// The system-call table's entries, in table order.
    pub syscalls: Vec<u64>,
    /// Walks that did not finish, by walk name ascending.
    pub errors: Vec<WalkFailure>,
}

/// A digest as hex text in JSON.
mod hex_digest {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(super) fn serialize<S: Serializer>(d: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(d))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let t = String::deserialize(d)?;
        hex::decode(&t)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| D::Error::custom("expected 64 hex digits"))
    }
}

fn text_ok(s: &str, what: &str) -> Result<(), ClaimsError> {
    if s.len() > MAX_TEXT {
        return Err(field(
            format!("kernel.{what}"),
            format!("{} bytes, more than {MAX_TEXT}", s.len()),
        ));
    }
    Ok(())
}

fn strictly_ascending<T: Ord>(
    items: impl Iterator<Item = T>,
    what: &str,
) -> Result<(), ClaimsError> {
    let mut last: Option<T> = None;
    for k in items {
        if last.as_ref().is_some_and(|l| *l >= k) {
            return Err(field(
                format!("kernel.{what}"),
                "not strictly ascending (each entry once, in order)",
            ));
        }
        last = Some(k);
    }
    Ok(())
}

impl KernelObjects {
    /// Check bounds and canonical order: one encoding per set of facts.
    pub fn check(&self) -> Result<(), ClaimsError> {
        let bound = |n: usize, max: usize, what: &str| {
            if n > max {
                Err(field(
                    format!("kernel.{what}"),
                    format!("{n} entries, more than {max}"),
                ))
            } else {
                Ok(())
            }
        };
        bound(self.tasks.len(), MAX_TASKS, "tasks")?;
        bound(self.modules.len(), MAX_MODULES, "modules")?;
        bound(self.syscalls.len(), MAX_SYSCALLS, "syscalls")?;
        bound(self.errors.len(), 16, "errors")?;
        text_ok(&self.build_id, "build_id")?;
        strictly_ascending(self.tasks.iter().map(|t| t.pid), "tasks")?;
        strictly_ascending(self.modules.iter().map(|m| m.name.as_str()), "modules")?;
        strictly_ascending(self.idt.iter().map(|g| g.0), "idt")?;
        strictly_ascending(self.errors.iter().map(|e| e.walk.as_str()), "errors")?;
        for t in &self.tasks {
            text_ok(&t.comm, "tasks.comm")?;
            text_ok(t.exe.as_deref().unwrap_or_default(), "tasks.exe")?;
            if !t.listed && !t.by_pid {
                return Err(field(
                    "kernel.tasks",
                    format!("pid {} is in neither view", t.pid),
                ));
            }
        }
        for m in &self.modules {
            text_ok(&m.name, "modules.name")?;
            if !m.listed && !m.in_kset {
                return Err(field(
                    "kernel.modules",
                    format!("module {:?} is in neither view", m.name),
                ));
            }
        }
        for e in &self.errors {
            text_ok(&e.walk, "errors.walk")?;
            text_ok(&e.error, "errors.error")?;
        }
        Ok(())
    }

    /// The section's deterministic CBOR encoding, as it stands in the claims (a golden kernel
    /// state travels as these bytes in a CoRIM).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Writing a `Value` into a `Vec` cannot fail.
        let _ = ciborium::into_writer(&self.to_value(), &mut out);
        out
    }

    /// Decode what [`encode`](Self::encode) made: deterministic and checked, or refused.
    pub fn decode(bytes: &[u8]) -> Result<Self, ClaimsError> {
        if bytes.len() > super::MAX_CLAIMS_LEN {
            return Err(ClaimsError::TooLarge(bytes.len()));
        }
        let v: Value = ciborium::de::from_reader_with_recursion_limit(bytes, 16)
            .map_err(|e| ClaimsError::Cbor(e.to_string()))?;
        let k = Self::from_value(&v)?;
        if k.encode() != bytes {
            return Err(ClaimsError::NotDeterministic);
        }
        Ok(k)
    }

    pub(super) fn to_value(&self) -> Value {
        let mut m = MapBuilder::default();
        m.bytes("profile", &self.profile);
        m.text("build_id", &self.build_id);
        m.uint("slide", self.slide);
        let range = |r: (u64, u64)| {
            Value::Array(vec![Value::Integer(r.0.into()), Value::Integer(r.1.into())])
        };
        m.put("text", range(self.text));
        m.put("init_text", range(self.init_text));
        let tasks = self.tasks.iter().map(|t| {
            let mut tm = MapBuilder::default();
            tm.uint("pid", t.pid.into());
            tm.uint("tgid", t.tgid.into());
            tm.uint("parent", t.parent.into());
            tm.uint("euid", t.euid.into());
            tm.text("comm", &t.comm);
            if let Some(e) = &t.exe {
                tm.text("exe", e);
            }
            tm.put("kthread", Value::Bool(t.kernel_thread));
            tm.put("listed", Value::Bool(t.listed));
            tm.put("by_pid", Value::Bool(t.by_pid));
            tm.build()
        });
        m.put("tasks", Value::Array(tasks.collect()));
        let modules = self.modules.iter().map(|md| {
            let mut mm = MapBuilder::default();
            mm.text("name", &md.name);
            mm.uint("text", md.text);
            mm.uint("text_size", md.text_size);
            mm.put("listed", Value::Bool(md.listed));
            mm.put("in_kset", Value::Bool(md.in_kset));
            mm.build()
        });
        m.put("modules", Value::Array(modules.collect()));
        let pair =
            |a: u64, b: u64| Value::Array(vec![Value::Integer(a.into()), Value::Integer(b.into())]);
        m.put(
            "idt",
            Value::Array(self.idt.iter().map(|&(v, h)| pair(v.into(), h)).collect()),
        );
        m.put(
            "syscalls",
            Value::Array(
                self.syscalls
                    .iter()
                    .map(|&h| Value::Integer(h.into()))
                    .collect(),
            ),
        );
        if !self.errors.is_empty() {
            let errors = self.errors.iter().map(|e| {
                let mut em = MapBuilder::default();
                em.text("walk", &e.walk);
                em.text("error", &e.error);
                em.build()
            });
            m.put("errors", Value::Array(errors.collect()));
        }
        m.build()
    }

    pub(super) fn from_value(v: &Value) -> Result<Self, ClaimsError> {
        let m = Map::new(v, "kernel")?;
        m.only(&[
            "profile",
            "build_id",
            "slide",
            "text",
            "init_text",
            "tasks",
            "modules",
            "idt",
            "syscalls",
            "errors",
        ])?;
        let u32_of = |tm: &Map<'_>, k: &str| {
            u32::try_from(tm.uint(k)?)
                .map_err(|_| field(format!("kernel.tasks.{k}"), "more than 32 bits"))
        };
        let tasks = m
            .array("tasks")?
            .iter()
            .map(|t| {
                let tm = Map::new(t, "kernel.tasks[]")?;
                tm.only(&[
                    "pid", "tgid", "parent", "euid", "comm", "exe", "kthread", "listed", "by_pid",
                ])?;
                Ok(TaskFact {
                    pid: u32_of(&tm, "pid")?,
                    tgid: u32_of(&tm, "tgid")?,
                    parent: u32_of(&tm, "parent")?,
                    euid: u32_of(&tm, "euid")?,
                    comm: tm.text("comm")?,
                    exe: tm.opt("exe").map(|_| tm.text("exe")).transpose()?,
                    kernel_thread: tm.boolean("kthread")?,
                    listed: tm.boolean("listed")?,
                    by_pid: tm.boolean("by_pid")?,
                })
            })
            .collect::<Result<Vec<_>, ClaimsError>>()?;
        let modules = m
            .array("modules")?
            .iter()
            .map(|v| {
                let mm = Map::new(v, "kernel.modules[]")?;
                mm.only(&["name", "text", "text_size", "listed", "in_kset"])?;
                Ok(ModuleFact {
                    name: mm.text("name")?,
                    text: mm.uint("text")?,
                    text_size: mm.uint("text_size")?,
                    listed: mm.boolean("listed")?,
                    in_kset: mm.boolean("in_kset")?,
                })
            })
            .collect::<Result<Vec<_>, ClaimsError>>()?;
        let idt = m
            .array("idt")?
            .iter()
            .map(|g| match g {
                Value::Array(a) if a.len() == 2 => {
                    let vector = as_u64(&a[0])
                        .and_then(|v| u8::try_from(v).ok())
                        .ok_or_else(|| field("kernel.idt", "a vector is not 0-255"))?;
                    let handler = as_u64(&a[1])
                        .ok_or_else(|| field("kernel.idt", "a handler is not a uint"))?;
                    Ok((vector, handler))
                }
                _ => Err(field("kernel.idt", "expected [vector, handler]")),
            })
            .collect::<Result<Vec<_>, ClaimsError>>()?;
        let syscalls = m
            .array("syscalls")?
            .iter()
            .map(|h| as_u64(h).ok_or_else(|| field("kernel.syscalls", "an entry is not a uint")))
            .collect::<Result<Vec<_>, ClaimsError>>()?;
        let errors = match m.opt("errors") {
            None => Vec::new(),
            Some(_) => m
                .array("errors")?
                .iter()
                .map(|v| {
                    let em = Map::new(v, "kernel.errors[]")?;
                    em.only(&["walk", "error"])?;
                    Ok(WalkFailure {
                        walk: em.text("walk")?,
                        error: em.text("error")?,
                    })
                })
                .collect::<Result<Vec<_>, ClaimsError>>()?,
        };
        let range = |k: &str| match m.array(k)? {
            [a, b] => match (as_u64(a), as_u64(b)) {
                (Some(a), Some(b)) if a <= b => Ok((a, b)),
                _ => Err(field(
                    format!("kernel.{k}"),
                    "expected [start, end], start <= end",
                )),
            },
            _ => Err(field(format!("kernel.{k}"), "expected [start, end]")),
        };
        let (text, init_text) = (range("text")?, range("init_text")?);
        let k = Self {
            profile: m.digest("profile")?,
            build_id: m.text("build_id")?,
            slide: m.uint("slide")?,
            text,
            init_text,
            tasks,
            modules,
            idt,
            syscalls,
            errors,
        };
        k.check()?;
        Ok(k)
    }
}

#[doc(hidden)]
pub mod example {
    //! Example kernel facts for tests.
    use super::*;

    /// A clean guest: three processes, one module, two gates, three system calls.
    pub fn kernel() -> KernelObjects {
        let task = |pid: u32, parent: u32, comm: &str, exe: Option<&str>| TaskFact {
            pid,
            tgid: pid,
            parent,
            euid: 0,
            comm: comm.into(),
            exe: exe.map(Into::into),
            kernel_thread: exe.is_none(),
            listed: true,
            by_pid: pid != 0,
        };
        KernelObjects {
            profile: [3; 32],
            build_id: "0123abcd".into(),
            slide: 0x1e00_0000,
            text: (0xffff_ffff_9e00_0000, 0xffff_ffff_9ec0_0000),
            init_text: (0xffff_ffff_a000_0000, 0xffff_ffff_a010_0000),
            tasks: vec![
                task(0, 0, "swapper/0", None),
                task(1, 0, "init", Some("/bin/busybox")),
                task(2, 0, "kthreadd", None),
            ],
            modules: vec![ModuleFact {
                name: "virtio_ring".into(),
                text: 0xffff_ffff_c000_0000,
                text_size: 0x5000,
                listed: true,
                in_kset: true,
            }],
            idt: vec![(0, 0xffff_ffff_9e00_1000), (3, 0xffff_ffff_9e00_1200)],
            syscalls: vec![
                0xffff_ffff_9e20_0000,
                0xffff_ffff_9e20_0100,
                0xffff_ffff_9e20_0200,
            ],
            errors: Vec::new(),
        }
    }
}
