//! Fuzz target: `vmseal_capture::fuzzing::elf_dump` (ELF core headers of memory dumps).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vmseal_capture::fuzzing::elf_dump(data));
