//! Fuzz target: `vmseal_capture::fuzzing::kernel_walk` (the kernel-object walks over arbitrary
//! guest memory; what they report must be a canonical claim).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vmseal_capture::fuzzing::kernel_walk(data));
