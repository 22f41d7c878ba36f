//! Throughput as concurrency grows, tiercache and the raw dependency side by side:
//!
//! - L1: `Cache::get_arc` hits vs raw moka `get` of the `Arc<T>`, at 1, 2, 4, … tasks up to the
//!   cores available, on a runtime with one worker per core;
//! - L2: `Cache::get` with an empty L1 (promotion off) vs a raw fred pool with fred's defaults,
//!   `GET` + JSON decode, at 1, 4, 16, 64 and 256 tasks on a two-worker runtime.
//!
//! Each point is measured `ROUNDS` times, raw and tiercache alternating, and reports the median
//! reads per second of each side. The points go to `target/tiercache-bench/scaling.json`, which
//! `cargo xtask bench` turns into a table and `scaling.svg`. Not a criterion bench: a point is a
//! fixed number of reads spread over the tasks, timed as a whole.
#![expect(
    clippy::expect_used,
    reason = "a bench that cannot set up has nothing to measure"
)]
#![expect(clippy::print_stdout, reason = "a bench reports on the terminal")]

use std::{hint::black_box, sync::Arc, time::Duration};

use bytes::Bytes;
use tiercache::{Cache, MemoryTier, RedisOptions, RedisTier, TierOptions};
use tiercache_benches::{Profile, concurrent, report, shuffled_keys};
use tiercache_redis::fred::interfaces::KeysInterface;
use tiercache_testkit::RedisServer;

const L1_KEYS: usize = 2_000;
const L2_KEYS: usize = 1_000;
const L2_TASKS: [usize; 5] = [1, 4, 16, 64, 256];
/// Connections in each Redis pool: the tier's default, for the raw pool too.
const POOL_SIZE: usize = 4;

/// One measured point: reads per second of each side at `tasks` concurrent tasks.
struct Point {
    tier: &'static str,
    tasks: usize,
    tiercache: f64,
    raw: f64,
}

fn main() {
    if !report::selected("scaling") {
        return;
    }
    let quick = report::quick();
    let rounds = if quick { 2 } else { 5 };
    let mut points = l1_points(rounds, if quick { 50_000 } else { 200_000 });
    points.extend(l2_points(rounds, if quick { 4_000 } else { 32_000 }));
    for point in &points {
        println!(
            "scaling {} {:>3} tasks: tiercache {:>10.0} reads/s, raw {:>10.0} reads/s ({:.2}x)",
            point.tier,
            point.tasks,
            point.tiercache,
            point.raw,
            point.tiercache / point.raw
        );
    }
    let rows: Vec<String> = points
        .iter()
        .map(|p| {
            format!(
                "{{\"tier\": \"{}\", \"tasks\": {}, \"tiercache\": {}, \"raw\": {}}}",
                p.tier, p.tasks, p.tiercache, p.raw
            )
        })
        .collect();
    let dir = report::results_dir();
    std::fs::create_dir_all(&dir).expect("create the results directory");
    std::fs::write(
        dir.join("scaling.json"),
        format!("[\n{}\n]\n", rows.join(",\n")),
    )
    .expect("write scaling.json");
}

/// Medians of `rounds` alternating measurements of `reads` reads each, as reads per second.
fn alternate(
    rounds: usize,
    reads: u64,
    mut raw: impl FnMut() -> Duration,
    mut ours: impl FnMut() -> Duration,
) -> (f64, f64) {
    let (mut raw_rates, mut our_rates) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        raw_rates.push(reads as f64 / raw().as_secs_f64());
        our_rates.push(reads as f64 / ours().as_secs_f64());
    }
    (median(our_rates), median(raw_rates))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// 1, 2, 4, … up to the cores available (and the cores themselves when not a power of two).
fn l1_task_counts() -> Vec<usize> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let mut counts: Vec<usize> = std::iter::successors(Some(1), |n| Some(n * 2))
        .take_while(|n| *n <= cores)
        .collect();
    if counts.last() != Some(&cores) {
        counts.push(cores);
    }
    counts
}

fn l1_points(rounds: usize, reads: u64) -> Vec<Point> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let rt = tiercache_benches::runtime(cores);
    let keys = Arc::new(shuffled_keys(L1_KEYS));
    let (raw, cache) = rt.block_on(async {
        let raw = moka::future::Cache::new(L1_KEYS as u64 * 2);
        let cache = Cache::builder()
            .memory(MemoryTier::new(L1_KEYS as u64 * 2))
            .build()
            .await
            .expect("build the cache");
        tiercache_benches::fill_l1(&raw, &cache, &keys).await;
        (raw, cache)
    });
    let key_of =
        |task: u64, call: u64| usize::try_from((task * 7919 + call) % L1_KEYS as u64).unwrap_or(0);
    l1_task_counts()
        .into_iter()
        .map(|tasks| {
            let raw_side = || {
                let (raw, keys) = (raw.clone(), Arc::clone(&keys));
                concurrent(&rt, reads, tasks, move |task, call| {
                    let (raw, keys) = (raw.clone(), Arc::clone(&keys));
                    async move {
                        black_box(raw.get(keys[key_of(task, call)].as_str()).await);
                    }
                })
            };
            let our_side = || {
                let (cache, keys) = (cache.clone(), Arc::clone(&keys));
                concurrent(&rt, reads, tasks, move |task, call| {
                    let (cache, keys) = (cache.clone(), Arc::clone(&keys));
                    async move {
                        let hit = cache.get_arc::<Profile>(&keys[key_of(task, call)]).await;
                        black_box(hit.ok().flatten());
                    }
                })
            };
            let (tiercache, raw) = alternate(rounds, reads, raw_side, our_side);
            Point {
                tier: "L1",
                tasks,
                tiercache,
                raw,
            }
        })
        .collect()
}

fn l2_points(rounds: usize, reads: u64) -> Vec<Point> {
    let server = RedisServer::start().expect("start redis-server (is it installed?)");
    let rt = tiercache_benches::runtime(2);
    let url = server.url();
    let keys = Arc::new(shuffled_keys(L2_KEYS));
    let (pool, cache) = rt.block_on(async {
        let options = RedisOptions::from_url(&url)
            .expect("url")
            .pool_size(POOL_SIZE);
        let redis = RedisTier::connect_with(options)
            .await
            .expect("connect to the bench's Redis");
        let l1 = MemoryTier::new(L2_KEYS as u64);
        let cache = Cache::builder()
            .memory_with(l1.clone(), TierOptions::new().promote(false))
            .tier(redis)
            .build()
            .await
            .expect("build the cache");
        let pool = tiercache_benches::raw_pool(&url, POOL_SIZE).await;
        tiercache_benches::fill_redis(&cache, &pool, &keys).await;
        // The writes also filled L1: empty it so every read below misses it.
        l1.clear();
        (pool, cache)
    });
    let key_of =
        |task: u64, call: u64| usize::try_from((task * 7919 + call) % L2_KEYS as u64).unwrap_or(0);
    let points = L2_TASKS
        .into_iter()
        .map(|tasks| {
            // A single task waits out each round trip: fewer reads keep the point short.
            let reads = if tasks == 1 { reads / 8 } else { reads };
            let raw_side = || {
                let (pool, keys) = (pool.clone(), Arc::clone(&keys));
                concurrent(&rt, reads, tasks, move |task, call| {
                    let (pool, keys) = (pool.clone(), Arc::clone(&keys));
                    async move {
                        let key = format!("raw:{}", keys[key_of(task, call)]);
                        let bytes: Option<Bytes> = pool.get(key).await.ok().flatten();
                        let decoded =
                            bytes.and_then(|b| serde_json::from_slice::<Profile>(&b).ok());
                        black_box(decoded);
                    }
                })
            };
            let our_side = || {
                let (cache, keys) = (cache.clone(), Arc::clone(&keys));
                concurrent(&rt, reads, tasks, move |task, call| {
                    let (cache, keys) = (cache.clone(), Arc::clone(&keys));
                    async move {
                        let hit = cache.get::<Profile>(&keys[key_of(task, call)]).await;
                        black_box(hit.ok().flatten());
                    }
                })
            };
            let (tiercache, raw) = alternate(rounds, reads, raw_side, our_side);
            Point {
                tier: "L2",
                tasks,
                tiercache,
                raw,
            }
        })
        .collect();
    drop(server);
    points
}
