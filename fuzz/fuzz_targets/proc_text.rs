//! Fuzz target: `vmseal_shim::fuzzing::proc_text` (/proc/PID/maps and /proc/kallsyms text).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vmseal_shim::fuzzing::proc_text(data));
