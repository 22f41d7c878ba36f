//! Fuzzes `tiercache_bus::fuzzing::bus_wire` (see there for what it checks).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tiercache_bus::fuzzing::bus_wire(data));
