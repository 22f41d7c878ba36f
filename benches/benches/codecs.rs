//! The CPU part of an L2 hit per codec: decoding stored bytes (the header, decompression when
//! the value is compressed, the payload) into the benches' ~1 KiB struct, against the raw codec
//! decoding the payload alone, in the same criterion group, alternating rounds.
//!
//! - `decode_json`, `decode_postcard`, `decode_msgpack`: `Envelope::decode` vs
//!   `serde_json::from_slice` / `postcard::from_bytes` / `rmp_serde::from_slice`.
//! - `decode_json_lz4`: a value stored compressed (`compress_above(256)`) vs raw
//!   `lz4_flex` decompression followed by `serde_json::from_slice`.
//!
//! Also the bytes each stores for the struct (header included) against the raw encoding: JSON
//! files `stored_bytes_*.json` for the report.
#![expect(
    clippy::expect_used,
    reason = "a bench that cannot set up has nothing to measure"
)]
#![expect(clippy::print_stdout, reason = "a bench reports on the terminal")]

use std::{hint::black_box, time::Duration};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use tiercache::{
    Codec, JsonCodec, MsgpackCodec, PostcardCodec,
    core::{Decoded, Envelope},
};
use tiercache_benches::{Profile, profile, report};

const ROUNDS: u32 = 3;

fn stored<C: Codec>(envelope: &Envelope<C>) -> Vec<u8> {
    envelope
        .encode("profile:1", &profile(1))
        .expect("encode")
        .to_vec()
}

fn decoded<C: Codec>(envelope: &Envelope<C>, bytes: &[u8]) -> Option<Profile> {
    match envelope.decode::<Profile>(bytes) {
        Ok(Decoded::Value(value)) => Some(value),
        Ok(Decoded::Negative) | Err(_) => None,
    }
}

fn pair(
    c: &mut Criterion,
    group: &str,
    raw_name: &str,
    raw: &dyn Fn() -> Option<Profile>,
    ours: &dyn Fn() -> Option<Profile>,
) {
    let mut group = c.benchmark_group(group);
    for round in 1..=ROUNDS {
        group.bench_with_input(BenchmarkId::new(raw_name, round), &round, |b, _| {
            b.iter(|| black_box(raw()));
        });
        group.bench_with_input(BenchmarkId::new("tiercache", round), &round, |b, _| {
            b.iter(|| black_box(ours()));
        });
    }
    group.finish();
}

fn sizes() {
    let value = profile(1);
    let json = serde_json::to_vec(&value).expect("json");
    let postcard = postcard::to_allocvec(&value).expect("postcard");
    let msgpack = rmp_serde::to_vec_named(&value).expect("msgpack");
    let rows = [
        (
            "stored_bytes_json",
            stored(&Envelope::new(JsonCodec, 0)).len(),
            json.len(),
            "raw_serde_json",
        ),
        (
            "stored_bytes_postcard",
            stored(&Envelope::new(PostcardCodec, 0)).len(),
            postcard.len(),
            "raw_postcard",
        ),
        (
            "stored_bytes_msgpack",
            stored(&Envelope::new(MsgpackCodec, 0)).len(),
            msgpack.len(),
            "raw_rmp_serde",
        ),
        (
            "stored_bytes_json_lz4",
            stored(&Envelope::new(JsonCodec, 0).compress_above(Some(256))).len(),
            json.len(),
            "raw_serde_json_uncompressed",
        ),
    ];
    for (file, ours, raw, raw_name) in rows {
        println!("{file}: tiercache stores {ours} B, {raw_name} {raw} B");
        report::write(file, ours as f64, raw as f64, raw_name).expect("write results");
    }
}

fn bench(c: &mut Criterion) {
    sizes();
    let value = profile(1);

    let json = Envelope::new(JsonCodec, 0);
    let json_stored = stored(&json);
    // Each case must decode what was stored, or its time means nothing.
    assert_eq!(decoded(&json, &json_stored).as_ref(), Some(&value));
    let json_raw = serde_json::to_vec(&value).expect("json");
    pair(
        c,
        "decode_json",
        "raw_serde_json",
        &|| serde_json::from_slice(black_box(&json_raw)).ok(),
        &|| decoded(&json, black_box(&json_stored)),
    );

    let postcard_env = Envelope::new(PostcardCodec, 0);
    let postcard_stored = stored(&postcard_env);
    // Each case must decode what was stored, or its time means nothing.
    assert_eq!(
        decoded(&postcard_env, &postcard_stored).as_ref(),
        Some(&value)
    );
    let postcard_raw = postcard::to_allocvec(&value).expect("postcard");
    pair(
        c,
        "decode_postcard",
        "raw_postcard",
        &|| postcard::from_bytes(black_box(&postcard_raw)).ok(),
        &|| decoded(&postcard_env, black_box(&postcard_stored)),
    );

    let msgpack_env = Envelope::new(MsgpackCodec, 0);
    let msgpack_stored = stored(&msgpack_env);
    // Each case must decode what was stored, or its time means nothing.
    assert_eq!(
        decoded(&msgpack_env, &msgpack_stored).as_ref(),
        Some(&value)
    );
    let msgpack_raw = rmp_serde::to_vec_named(&value).expect("msgpack");
    pair(
        c,
        "decode_msgpack",
        "raw_rmp_serde",
        &|| rmp_serde::from_slice(black_box(&msgpack_raw)).ok(),
        &|| decoded(&msgpack_env, black_box(&msgpack_stored)),
    );

    let lz4 = Envelope::new(JsonCodec, 0).compress_above(Some(256));
    let lz4_stored = stored(&lz4);
    // Each case must decode what was stored, or its time means nothing.
    assert_eq!(decoded(&lz4, &lz4_stored).as_ref(), Some(&value));
    let lz4_raw = lz4_flex::compress_prepend_size(&json_raw);
    pair(
        c,
        "decode_json_lz4",
        "raw_lz4_flex_serde_json",
        &|| {
            let payload = lz4_flex::decompress_size_prepended(black_box(&lz4_raw)).ok()?;
            serde_json::from_slice(&payload).ok()
        },
        &|| decoded(&lz4, black_box(&lz4_stored)),
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
