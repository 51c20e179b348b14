//! Fuzz target: `vmseal_capture::fuzzing::kernel_btf` (a kernel's BTF, and the vmlinux holding it).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vmseal_capture::fuzzing::kernel_btf(data));
