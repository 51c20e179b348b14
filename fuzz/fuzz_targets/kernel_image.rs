//! Fuzz target: `vmseal_capture::fuzzing::kernel_image` (bzImage, LZ4 payload, relocations, sections).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vmseal_capture::fuzzing::kernel_image(data));
