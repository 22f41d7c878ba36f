//! What fail-safe and eager refresh cost a plain L1 hit: nothing measurable is the target.
//!
//! - `resilient_l1_hit`: `get_or_compute` hits on a cache built with fail-safe (1 h stale
//!   window), eager refresh (last 10% of life) and soft/hard loader timeouts, against the same
//!   hits on a cache without them (the `raw_plain_tiercache` case), in the same run. Target: at
//!   most 1.05x.
//! - `resilient_l1_hit_moka`: the same resilient hits against raw moka get + clone, as the
//!   `get_or_compute_hit` group measures the plain ones. Target: at most 1.3x.
//! - `resilient_l1_hit_arc`: `get_arc` (no clone, the cheapest hit there is) on the same two
//!   caches, where the one clock read weighs most. Target: at most 1.1x.
//!
//! The entries are fresh and far from their refresh point, which is what almost every hit on a
//! hot key is. What such a hit pays for the features is one clock read: the entry carries its
//! refresh point and the end of its fresh life as deadlines before its expiry (the stale window),
//! checked only for entries that have them. No random draw, no extra lookup.
#![expect(
    clippy::expect_used,
    reason = "a bench that cannot set up has nothing to measure"
)]

use std::{hint::black_box, sync::Arc, time::Duration};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use tiercache::{Cache, CacheStrategy, EagerRefresh, FailSafe, MemoryTier};
use tiercache_benches::{Profile, profile, raw_moka_get_and_clone, shuffled_keys};
use tokio::runtime::Runtime;

const KEYS: usize = 100_000;
/// Each pair is measured this many times, alternating; the report takes the median of the
/// per-round ratios, so drift on a shared machine cancels out.
const ROUNDS: u32 = 3;

struct Fixture {
    keys: Vec<String>,
    raw: moka::future::Cache<String, Arc<Profile>>,
    plain: Cache,
    resilient: Cache,
}

fn fixture(rt: &Runtime) -> Fixture {
    let keys = shuffled_keys(KEYS);
    rt.block_on(async {
        let capacity = KEYS as u64 * 2;
        let raw = moka::future::Cache::new(capacity);
        let plain = Cache::builder()
            .memory(MemoryTier::new(capacity))
            .build()
            .await
            .expect("build the plain cache");
        let resilient = Cache::builder()
            .memory(MemoryTier::new(capacity))
            .fail_safe(FailSafe::new(Duration::from_secs(3600)))
            .eager_refresh(EagerRefresh::LastFraction(0.1))
            .soft_timeout(Duration::from_millis(100))
            .hard_timeout(Duration::from_secs(1))
            .build()
            .await
            .expect("build the resilient cache");
        for (i, key) in keys.iter().enumerate() {
            let value = profile(i as u64);
            raw.insert(key.clone(), Arc::new(value.clone())).await;
            for cache in [&plain, &resilient] {
                cache
                    .set(key, &value, CacheStrategy::LongTerm)
                    .await
                    .expect("fill the cache");
            }
        }
        Fixture {
            keys,
            raw,
            plain,
            resilient,
        }
    })
}

/// `get_or_compute` hits on `cache`, one key after the other.
fn hits(b: &mut criterion::Bencher<'_>, rt: &Runtime, keys: &[String], cache: &Cache) {
    let mut i = 0;
    b.to_async(rt).iter(|| {
        i = (i + 1) % KEYS;
        let key = &keys[i];
        async move {
            let found = cache
                .get_or_compute(key, CacheStrategy::LongTerm, || async {
                    Ok::<_, std::io::Error>(profile(0))
                })
                .await;
            black_box(found.ok())
        }
    });
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("build the runtime");
    let f = fixture(&rt);

    let mut group = c.benchmark_group("resilient_l1_hit");
    for round in 1..=ROUNDS {
        group.bench_with_input(
            BenchmarkId::new("raw_plain_tiercache", round),
            &round,
            |b, _| hits(b, &rt, &f.keys, &f.plain),
        );
        group.bench_with_input(BenchmarkId::new("tiercache", round), &round, |b, _| {
            hits(b, &rt, &f.keys, &f.resilient);
        });
    }
    group.finish();

    let mut group = c.benchmark_group("resilient_l1_hit_moka");
    for round in 1..=ROUNDS {
        group.bench_with_input(BenchmarkId::new("raw_moka", round), &round, |b, _| {
            raw_moka_get_and_clone(b, &rt, &f.raw, &f.keys);
        });
        group.bench_with_input(BenchmarkId::new("tiercache", round), &round, |b, _| {
            hits(b, &rt, &f.keys, &f.resilient);
        });
    }
    group.finish();

    let mut group = c.benchmark_group("resilient_l1_hit_arc");
    for round in 1..=ROUNDS {
        let arc_hits = |b: &mut criterion::Bencher<'_>, cache: &Cache| {
            let mut i = 0;
            b.to_async(&rt).iter(|| {
                i = (i + 1) % KEYS;
                let key = &f.keys[i];
                async move { black_box(cache.get_arc::<Profile>(key).await.ok().flatten()) }
            });
        };
        group.bench_with_input(
            BenchmarkId::new("raw_plain_tiercache", round),
            &round,
            |b, _| arc_hits(b, &f.plain),
        );
        group.bench_with_input(BenchmarkId::new("tiercache", round), &round, |b, _| {
            arc_hits(b, &f.resilient);
        });
    }
    group.finish();
    // Every hit answered from the fresh front entry: no refresh, no stale answer.
    let stats = f.resilient.stats();
    assert_eq!(
        (stats.loads, stats.eager_refreshes, stats.stale_served),
        (0, 0, 0),
        "the resilient hits did not take the fast path"
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
