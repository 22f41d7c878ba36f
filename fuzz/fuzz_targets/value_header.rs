//! Fuzzes `tiercache_core::fuzzing::value_header` (see there for what it checks).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tiercache_core::fuzzing::value_header(data));
