//! Fuzz target: `vmseal_capture::fuzzing::kallsyms` (the kernel's compressed kallsyms tables, as
//! found in a vmlinux's read-only data).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vmseal_capture::fuzzing::kallsyms(data));
