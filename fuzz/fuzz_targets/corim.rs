//! Fuzz target: `vmseal_client::corim::fuzzing::corim` (signed CoRIM golden baselines: the
//! `corim` crate's strict decoding, the signature check, and vmseal's reading of the payload).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vmseal_client::corim::fuzzing::corim(data));
