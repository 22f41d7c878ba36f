//! Typed L1 hits against raw moka, in the same criterion groups.
//!
//! - `l1_hit`: `Cache::get` (returns an owned `T`) vs raw `moka::future::Cache::get` of an `Arc<T>`
//!   followed by `T::clone`. Target: at most 1.15x.
//! - `get_or_compute_hit`: `Cache::get_or_compute` on a hit vs the same raw baseline. Target: at
//!   most 1.15x.
//! - `l1_hit_arc`: `Cache::get_arc` (no clone) vs raw moka get of the `Arc<T>` alone: the pure
//!   overhead of the typed tier. Target: at most 1.10x.
//!
//! 100k keys of a ~1 KiB struct; each iteration reads the next key in a fixed shuffled order.
#![expect(
    clippy::expect_used,
    reason = "a bench that cannot set up has nothing to measure"
)]

use std::{hint::black_box, sync::Arc, time::Duration};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use tiercache::{Cache, CacheStrategy, MemoryTier};
use tiercache_benches::{Profile, profile, raw_moka_get_and_clone, shuffled_keys};
use tokio::runtime::Runtime;

const KEYS: usize = 100_000;
/// Each pair is measured this many times, alternating; the report takes the median of the
/// per-round ratios, so drift on a shared machine cancels out.
const ROUNDS: u32 = 3;

struct Fixture {
    keys: Vec<String>,
    raw: moka::future::Cache<String, Arc<Profile>>,
    cache: Cache,
}

fn fixture(rt: &Runtime) -> Fixture {
    let keys = shuffled_keys(KEYS);
    rt.block_on(async {
        let raw = moka::future::Cache::new(KEYS as u64 * 2);
        let cache = Cache::builder()
            .memory(MemoryTier::new(KEYS as u64 * 2))
            .build()
            .await
            .expect("build the cache");
        tiercache_benches::fill_l1(&raw, &cache, &keys).await;
        Fixture { keys, raw, cache }
    })
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("build the runtime");
    let f = fixture(&rt);
    let keys = &f.keys;

    let mut group = c.benchmark_group("l1_hit");
    for round in 1..=ROUNDS {
        group.bench_with_input(BenchmarkId::new("raw_moka", round), &round, |b, _| {
            raw_moka_get_and_clone(b, &rt, &f.raw, &f.keys);
        });
        group.bench_with_input(BenchmarkId::new("tiercache", round), &round, |b, _| {
            let mut i = 0;
            b.to_async(&rt).iter(|| {
                i = (i + 1) % KEYS;
                let key = &keys[i];
                async { black_box(f.cache.get::<Profile>(key).await.ok().flatten()) }
            });
        });
    }
    group.finish();

    let mut group = c.benchmark_group("get_or_compute_hit");
    for round in 1..=ROUNDS {
        group.bench_with_input(BenchmarkId::new("raw_moka", round), &round, |b, _| {
            raw_moka_get_and_clone(b, &rt, &f.raw, &f.keys);
        });
        group.bench_with_input(BenchmarkId::new("tiercache", round), &round, |b, _| {
            let mut i = 0;
            b.to_async(&rt).iter(|| {
                i = (i + 1) % KEYS;
                let key = &keys[i];
                async {
                    let found = f
                        .cache
                        .get_or_compute(key, CacheStrategy::LongTerm, || async {
                            Ok::<_, std::io::Error>(profile(0))
                        })
                        .await;
                    black_box(found.ok())
                }
            });
        });
    }
    group.finish();

    let mut group = c.benchmark_group("l1_hit_arc");
    for round in 1..=ROUNDS {
        group.bench_with_input(BenchmarkId::new("raw_moka", round), &round, |b, _| {
            let mut i = 0;
            b.to_async(&rt).iter(|| {
                i = (i + 1) % KEYS;
                let key = &keys[i];
                async { black_box(f.raw.get(key.as_str()).await) }
            });
        });
        group.bench_with_input(BenchmarkId::new("tiercache", round), &round, |b, _| {
            let mut i = 0;
            b.to_async(&rt).iter(|| {
                i = (i + 1) % KEYS;
                let key = &keys[i];
                async { black_box(f.cache.get_arc::<Profile>(key).await.ok().flatten()) }
            });
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
