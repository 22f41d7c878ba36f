//! L2 (Redis) hits against raw fred on the same connection pool, in the same criterion groups.
//!
//! - `l2_hit`: a facade `get` that misses L1 (L1 promotion is off, so every read goes to Redis)
//!   and hits Redis, vs one raw fred `GET` plus `serde_json` decode. Target: at most 1.1x.
//! - `l2_throughput` and `l2_throughput_256`: 64 (256) concurrent tasks doing the same, vs as many
//!   tasks of raw `GET` + decode, on a two-worker runtime. Reported per read; target: tiercache
//!   throughput at least 0.9x raw.
//!
//! - `l2_p99_promotion`: the p99 of single L2 reads with promotion on (each read misses L1, reads
//!   Redis, and copies the value into L1) vs the p99 of raw `GET` + decode, every key read once
//!   per round, alternating, L1 emptied (untimed) between rounds. Target: at most 1.2x.
//!
//! The raw side is a fred pool of as many connections as the tier's, built with fred's defaults
//! (no per-command timeout, no unresponsive-connection checks): what a user of plain fred gets.
//!
//! Each pair runs `ROUNDS` times, alternating; `cargo xtask bench` reports the median of the
//! per-round ratios. The bench starts its own `redis-server` on a free loopback port.
#![expect(
    clippy::expect_used,
    reason = "a bench that cannot set up has nothing to measure"
)]
#![expect(clippy::print_stdout, reason = "a bench reports on the terminal")]

use std::{
    hint::black_box,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use tiercache::{Cache, MemoryTier, RedisOptions, RedisTier, TierOptions};
use tiercache_benches::{Profile, percentile, report, shuffled_keys};
use tiercache_redis::fred::{clients::Pool, interfaces::KeysInterface};
use tiercache_testkit::RedisServer;
use tokio::runtime::Runtime;

const KEYS: usize = 1_000;
/// Connections in each pool: the tier's default, for the raw pool too.
const POOL_SIZE: usize = 4;
/// Each pair is measured this many times, alternating, and the report takes the median of the
/// per-round ratios: a loopback round trip on a shared two-core machine drifts by tens of percent
/// over a minute, far more than the margins the targets allow.
const ROUNDS: u32 = 3;

struct Fixture {
    keys: Arc<Vec<String>>,
    pool: Pool,
    /// Promotion off: every read goes to Redis.
    cache: Cache,
    /// The same Redis tier under an L1 that takes promotions, and that L1.
    promoting: Cache,
    promoting_l1: MemoryTier,
}

/// Connects on `rt` (fred runs its connection tasks there) and, when `fill` is set, writes the
/// values both cases read.
fn fixture(rt: &Runtime, url: &str, fill: bool) -> Fixture {
    rt.block_on(async {
        let options = RedisOptions::from_url(url)
            .expect("url")
            .pool_size(POOL_SIZE);
        let redis = RedisTier::connect_with(options)
            .await
            .expect("connect to the bench's Redis");
        let l1 = MemoryTier::new(KEYS as u64);
        let cache = Cache::builder()
            .memory_with(l1.clone(), TierOptions::new().promote(false))
            .tier(redis.clone())
            .build()
            .await
            .expect("build the cache");
        // Room for every key, so the figure is the promotion, not moka evicting.
        let promoting_l1 = MemoryTier::new(KEYS as u64 * 2);
        let promoting = Cache::builder()
            .memory(promoting_l1.clone())
            .tier(redis.clone())
            .build()
            .await
            .expect("build the promoting cache");
        let keys = shuffled_keys(KEYS);
        let pool = tiercache_benches::raw_pool(url, POOL_SIZE).await;
        if fill {
            tiercache_benches::fill_redis(&cache, &pool, &keys).await;
            // The writes also filled L1: empty it so every read below misses it.
            l1.clear();
        }
        Fixture {
            keys: Arc::new(keys),
            pool,
            cache,
            promoting,
            promoting_l1,
        }
    })
}

async fn raw_get(pool: &Pool, key: &str) -> Option<Profile> {
    let bytes: Option<Bytes> = pool.get(format!("raw:{key}")).await.ok()?;
    serde_json::from_slice(&bytes?).ok()
}

/// `iters` reads spread over `tasks` tasks, each reading keys in its own order.
fn concurrent<F, Fut>(rt: &Runtime, iters: u64, tasks: usize, read: F) -> Duration
where
    F: Fn(usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    tiercache_benches::concurrent(rt, iters, tasks, move |task, call| {
        let read = read.clone();
        async move {
            let index = (task * 7919 + call) % KEYS as u64;
            black_box(read(usize::try_from(index).unwrap_or(0)).await);
        }
    })
}

fn bench(c: &mut Criterion) {
    let server = RedisServer::start().expect("start redis-server (is it installed?)");
    // One round trip at a time: a single-threaded runtime, so the measure is the round trip and
    // the client's work, not thread wake-ups.
    let single = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build the runtime");
    let f = fixture(&single, &server.url(), true);
    let rt = &single;

    let mut group = c.benchmark_group("l2_hit");
    for round in 1..=ROUNDS {
        group.bench_with_input(
            BenchmarkId::new("raw_fred_get_decode", round),
            &round,
            |b, _| {
                let mut i = 0;
                b.to_async(rt).iter(|| {
                    i = (i + 1) % KEYS;
                    let key = &f.keys[i];
                    let pool = &f.pool;
                    async move { black_box(raw_get(pool, key).await) }
                });
            },
        );
        group.bench_with_input(BenchmarkId::new("tiercache", round), &round, |b, _| {
            let mut i = 0;
            b.to_async(rt).iter(|| {
                i = (i + 1) % KEYS;
                let key = &f.keys[i];
                let cache = &f.cache;
                async move { black_box(cache.get::<Profile>(key).await.ok().flatten()) }
            });
        });
    }
    group.finish();
    if report::selected("l2_p99_promotion") {
        tail_with_promotion(rt, &f);
    }

    // 64 tasks on two workers: the throughput of the whole client under load.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build the runtime");
    let f = fixture(&rt, &server.url(), false);

    for (group, tasks) in [("l2_throughput", 64), ("l2_throughput_256", 256)] {
        throughput(c, &rt, &f, group, tasks);
    }
    drop(server);
}

/// The p99 of single reads, each key once per round: raw `GET` + decode, then tiercache with
/// promotion into an L1 emptied (untimed) before the round. Written for `cargo xtask bench`.
fn tail_with_promotion(rt: &Runtime, f: &Fixture) {
    let rounds = if report::quick() { 2 } else { 5 };
    let (mut raw, mut ours) = (Vec::new(), Vec::new());
    rt.block_on(async {
        for _ in 0..rounds {
            for key in f.keys.iter() {
                let started = Instant::now();
                black_box(raw_get(&f.pool, key).await);
                raw.push(started.elapsed());
            }
            f.promoting_l1.clear();
            for key in f.keys.iter() {
                let started = Instant::now();
                black_box(f.promoting.get::<Profile>(key).await.ok().flatten());
                ours.push(started.elapsed());
            }
        }
    });
    raw.sort();
    ours.sort();
    let at = |sorted: &[Duration], percent: usize| {
        sorted[(sorted.len() * percent / 100).min(sorted.len() - 1)]
    };
    let (raw_p99, our_p99) = (at(&raw, 99), at(&ours, 99));
    println!(
        "l2_p99_promotion: tiercache p50 {:?} p99 {our_p99:?}; raw p50 {:?} p99 {raw_p99:?}",
        percentile(&ours, 50),
        percentile(&raw, 50)
    );
    report::write(
        "l2_p99_promotion",
        our_p99.as_secs_f64() * 1e9,
        raw_p99.as_secs_f64() * 1e9,
        "raw_fred_get_decode p99",
    )
    .expect("write the result");
}

/// `tasks` concurrent readers, raw and tiercache alternating for `ROUNDS` rounds.
fn throughput(c: &mut Criterion, rt: &Runtime, f: &Fixture, name: &str, tasks: usize) {
    let mut group = c.benchmark_group(name);
    for round in 1..=ROUNDS {
        group.bench_with_input(
            BenchmarkId::new("raw_fred_get_decode", round),
            &round,
            |b, _| {
                b.iter_custom(|iters| {
                    let (pool, keys) = (f.pool.clone(), Arc::clone(&f.keys));
                    concurrent(rt, iters, tasks, move |i| {
                        let (pool, keys) = (pool.clone(), Arc::clone(&keys));
                        async move { raw_get(&pool, &keys[i]).await.is_some() }
                    })
                });
            },
        );
        group.bench_with_input(BenchmarkId::new("tiercache", round), &round, |b, _| {
            b.iter_custom(|iters| {
                let (cache, keys) = (f.cache.clone(), Arc::clone(&f.keys));
                concurrent(rt, iters, tasks, move |i| {
                    let (cache, keys) = (cache.clone(), Arc::clone(&keys));
                    async move {
                        cache
                            .get::<Profile>(&keys[i])
                            .await
                            .ok()
                            .flatten()
                            .is_some()
                    }
                })
            });
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
