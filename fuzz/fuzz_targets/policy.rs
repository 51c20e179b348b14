//! Fuzz target: `vmseal_host::fuzzing::policy` (capture policies, System.map, baselines).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vmseal_host::fuzzing::policy(data));
