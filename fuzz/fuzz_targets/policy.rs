//! Fuzz target: `vmseal_capture::fuzzing::policy` (capture policies, System.map, baselines).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vmseal_capture::fuzzing::policy(data));
