//! Every input the fuzz targets in `fuzz/` found (their corpus, kept in the repository, and the
//! inputs that once failed, in `fuzz/regressions/`) runs through the same checks again: a decoder
//! that panics, or breaks a round trip, on one of them fails here, without nightly Rust or
//! libFuzzer.

#![expect(
    clippy::expect_used,
    reason = "a corpus that cannot be read fails the test loudly"
)]

use std::path::PathBuf;

/// Runs `check` over every file of the corpus of `target` and of its regressions (inputs that
/// once failed, kept apart so that `cargo fuzz cmin` never drops them); returns how many corpus
/// files there were.
fn replay(target: &str, check: fn(&[u8])) -> usize {
    let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let files = |dir: PathBuf| -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .collect();
        files.sort();
        files
    };
    let corpus = files(fuzz.join("corpus").join(target));
    let regressions = files(fuzz.join("regressions").join(target));
    for file in corpus.iter().chain(&regressions) {
        let data = std::fs::read(file).expect("a corpus file reads");
        check(&data);
    }
    corpus.len()
}

#[test]
fn the_bus_wire_corpus_replays() {
    assert!(replay("bus_wire", tiercache_bus::fuzzing::bus_wire) > 0);
}

#[test]
fn the_value_header_corpus_replays() {
    assert!(replay("value_header", tiercache_core::fuzzing::value_header) > 0);
}

#[test]
fn the_redis_frame_corpus_replays() {
    assert!(replay("redis_frame", tiercache_redis::fuzzing::redis_frame) > 0);
}

#[test]
fn the_stream_replies_corpus_replays() {
    assert!(replay("stream_replies", tiercache_streams::fuzzing::stream_replies) > 0);
}
