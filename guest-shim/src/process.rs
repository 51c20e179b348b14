//! A process's memory as a capture source: `/proc/PID/maps` for the layout, `/proc/PID/mem` for
//! the bytes (positioned reads; the kernel checks ptrace access), SIGSTOP/SIGCONT around the read
//! so the capture is of one instant.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use vmseal_capture::source::{GuestMemory, Mapping, MemorySource, Pausable, SourceError};

/// Mappings that cannot be read through /proc/PID/mem (the kernel's vDSO data pages).
const UNREADABLE: [&str; 3] = ["[vvar]", "[vvar_vclock]", "[vsyscall]"];

/// How long a process gets to reach the stopped state.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// One process, captured from inside its guest.
#[derive(Debug)]
pub struct ProcessSource {
    pid: u32,
    comm: String,
    mem: File,
    maps: Vec<Mapping>,
    stopped: bool,
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> SourceError {
    move |e| SourceError::Io(std::io::Error::new(e.kind(), format!("{what}: {e}")))
}

/// Parse `/proc/PID/maps` text.
pub fn parse_maps(text: &str) -> Result<Vec<Mapping>, SourceError> {
    let bad = |n: usize, why: &str| {
        SourceError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("/proc/PID/maps line {n}: {why}"),
        ))
    };
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        // start-end perms offset dev inode [path]; the path may hold spaces.
        let mut f = line.splitn(6, ' ');
        let range = f.next().ok_or_else(|| bad(i + 1, "no range"))?;
        let perms = f.next().ok_or_else(|| bad(i + 1, "no permissions"))?;
        let (_off, _dev, _inode) = (f.next(), f.next(), f.next());
        let path = f.next().unwrap_or("").trim_start().to_owned();
        let (s, e) = range
            .split_once('-')
            .ok_or_else(|| bad(i + 1, "range is not start-end"))?;
        let hex = |v: &str| u64::from_str_radix(v, 16).map_err(|_| bad(i + 1, "not hexadecimal"));
        let (start, end) = (hex(s)?, hex(e)?);
        if end <= start || perms.len() != 4 {
            return Err(bad(i + 1, "empty range or malformed permissions"));
        }
        out.push(Mapping {
            start,
            len: end - start,
            perms: perms.to_owned(),
            path,
        });
    }
    Ok(out)
}

fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

impl ProcessSource {
    /// Attach to process `pid` (reading another process's memory needs ptrace access to it:
    /// root, or the same user under Yama's ptrace scope 0).
    pub fn attach(pid: u32) -> Result<Self, SourceError> {
        let hint = |e: std::io::Error, file: &str| {
            let why = match e.kind() {
                std::io::ErrorKind::NotFound => format!("no process {pid}"),
                std::io::ErrorKind::PermissionDenied => format!(
                    "no access to process {pid}: reading another process's memory needs root \
                     (or ptrace access to it)"
                ),
                _ => e.to_string(),
            };
            SourceError::Io(std::io::Error::new(
                e.kind(),
                format!("/proc/{pid}/{file}: {why}"),
            ))
        };
        let text =
            std::fs::read_to_string(format!("/proc/{pid}/maps")).map_err(|e| hint(e, "maps"))?;
        let maps = parse_maps(&text)?;
        let mem = File::open(format!("/proc/{pid}/mem")).map_err(|e| hint(e, "mem"))?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap_or_default()
            .trim()
            .to_owned();
        Ok(Self {
            pid,
            comm,
            mem,
            maps,
            stopped: false,
        })
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    fn readable(&self) -> impl Iterator<Item = &Mapping> {
        self.maps
            .iter()
            .filter(|m| m.perms.starts_with('r') && !UNREADABLE.contains(&m.path.as_str()))
    }

    fn signal(&self, sig: rustix::process::Signal) -> Result<(), SourceError> {
        let pid = rustix::process::Pid::from_raw(self.pid as i32).ok_or_else(|| {
            SourceError::Io(std::io::Error::other(format!(
                "pid {} is not valid",
                self.pid
            )))
        })?;
        rustix::process::kill_process(pid, sig)
            .map_err(|e| io(format!("signalling process {}", self.pid))(e.into()))
    }
}

impl GuestMemory for ProcessSource {
    fn boot_id(&self) -> Option<[u8; 16]> {
        vmseal_capture::source::process_boot_id(self.pid)
    }
    fn describe(&self) -> String {
        format!("process {} ({})", self.pid, self.comm)
    }

    fn ram(&self) -> Vec<(u64, u64)> {
        self.readable().map(|m| (m.start, m.len)).collect()
    }

    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        self.mem
            .read_exact_at(buf, addr)
            .map_err(io(format!("process {} at {addr:#x}", self.pid)))
    }

    fn mappings(&self) -> Vec<Mapping> {
        self.readable().cloned().collect()
    }

    fn virt_to_phys(&self, gva: u64) -> Result<u64, SourceError> {
        // The process's virtual addresses are this source's addresses.
        if self
            .readable()
            .any(|m| gva >= m.start && gva - m.start < m.len)
        {
            Ok(gva)
        } else {
            Err(SourceError::Translate {
                gva,
                reason: format!("not in a readable mapping of process {}", self.pid),
            })
        }
    }
}

impl Pausable for ProcessSource {
    fn pause(&mut self) -> Result<Duration, SourceError> {
        let t = Instant::now();
        self.signal(rustix::process::Signal::STOP)?;
        self.stopped = true;
        while state(self.pid) != Some('T') {
            if t.elapsed() > STOP_TIMEOUT {
                return Err(SourceError::Io(std::io::Error::other(format!(
                    "process {} did not stop within {STOP_TIMEOUT:?}",
                    self.pid
                ))));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        Ok(t.elapsed())
    }

    fn resume(&mut self) -> Result<(), SourceError> {
        if self.stopped {
            self.stopped = false;
            self.signal(rustix::process::Signal::CONT)?;
        }
        Ok(())
    }
}

impl MemorySource for ProcessSource {
    /// A process is stopped with SIGSTOP — unless it is this one: a process cannot stop itself
    /// and go on reading.
    fn pausable(&mut self) -> Option<&mut dyn Pausable> {
        if self.pid == std::process::id() {
            None
        } else {
            Some(self)
        }
    }
}

impl Drop for ProcessSource {
    fn drop(&mut self) {
        // Never leave a process stopped behind.
        let _ = self.resume();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_parse_with_spaces_in_paths_and_bad_lines_are_refused() {
        let m = parse_maps(
            "55d0c0a00000-55d0c0a02000 r-xp 00002000 fd:01 1234   /usr/bin/my tool (deleted)\n\
             7ffc1000-7ffc3000 rw-p 00000000 00:00 0                          [stack]\n\
             7f0000000000-7f0000001000 rw-p 00000000 00:00 0 \n",
        )
        .unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(
            (m[0].start, m[0].len, m[0].perms.as_str()),
            (0x55d0c0a00000, 0x2000, "r-xp")
        );
        assert_eq!(m[0].path, "/usr/bin/my tool (deleted)");
        assert_eq!(m[1].path, "[stack]");
        assert_eq!(m[2].path, "");
        for bad in [
            "zz-10 r-xp 0 0 0",
            "20-10 r-xp 0 0 0",
            "10-20 r-x 0 0 0",
            "1020 r-xp",
        ] {
            assert!(parse_maps(bad).is_err(), "{bad}");
        }
    }
}
