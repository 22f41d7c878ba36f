//! Fuzzes `tiercache_redis::fuzzing::redis_frame` (see there for what it checks).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tiercache_redis::fuzzing::redis_frame(data));
