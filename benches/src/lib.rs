//! Criterion benches for tiercache, each against the raw dependency in the same run: see `benches/`.
