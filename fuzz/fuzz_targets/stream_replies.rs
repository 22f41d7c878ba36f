//! Fuzzes `tiercache_streams::fuzzing::stream_replies` (see there for what it checks).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tiercache_streams::fuzzing::stream_replies(data));
