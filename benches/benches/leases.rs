//! What leases cost, each case against the same cache with leases off, in alternating rounds
//! (the ratio is the median of the per-round ratios):
//!
//! - `cold_miss_leases`: `get_or_compute` of a key no tier holds (loader sleeps 1 ms), L1 + Redis:
//!   with leases the Redis read is the lease script and the fill the conditional fill script.
//!   Target: at most 1.15x.
//! - `set_leases`: a plain `set` (L1 + Redis). Revocation is the `SET` itself, so the target is
//!   at most 1.1x.
//!
//! The bench starts its own `redis-server` on a free loopback port.
#![expect(
    clippy::expect_used,
    reason = "a bench that cannot set up has nothing to measure"
)]

use std::{
    hint::black_box,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use tiercache::{Cache, CacheStrategy, LeaseOptions, MemoryTier, RedisTier};
use tiercache_benches::{Profile, profile};
use tiercache_testkit::RedisServer;

/// Rounds of each pair, alternating, so drift of the loopback round trip cancels out.
const ROUNDS: u32 = 3;

/// Stands in for a database query.
async fn loader(id: u64) -> Result<Profile, std::io::Error> {
    tokio::time::sleep(Duration::from_millis(1)).await;
    Ok(profile(id))
}

async fn cache(url: &str, namespace: &str, leases: LeaseOptions) -> Cache {
    Cache::builder()
        .namespace(namespace)
        .memory(MemoryTier::new(1_000_000))
        .tier(RedisTier::connect(url).await.expect("connect"))
        .leases(leases)
        .build()
        .await
        .expect("build the cache")
}

fn bench(c: &mut Criterion) {
    let server = RedisServer::start().expect("start redis-server (is it installed?)");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build the runtime");
    let (leased, plain) = rt.block_on(async {
        (
            cache(&server.url(), "leased", LeaseOptions::new()).await,
            cache(&server.url(), "plain", LeaseOptions::disabled()).await,
        )
    });
    let next_key = AtomicU64::new(0);
    let cold = |cache: &Cache| {
        let id = next_key.fetch_add(1, Ordering::Relaxed);
        let key = format!("profile:{id}");
        let cache = cache.clone();
        async move {
            let found = cache
                .get_or_compute(&key, CacheStrategy::ShortTerm, move || loader(id))
                .await;
            // The fill runs in the background: wait for it, so each miss pays for its fill.
            while cache.background_loads() > 0 {
                tokio::task::yield_now().await;
            }
            black_box(found.ok())
        }
    };
    let mut group = c.benchmark_group("cold_miss_leases");
    for round in 1..=ROUNDS {
        group.bench_with_input(BenchmarkId::new("raw_no_leases", round), &round, |b, _| {
            b.to_async(&rt).iter(|| cold(&plain));
        });
        group.bench_with_input(BenchmarkId::new("tiercache", round), &round, |b, _| {
            b.to_async(&rt).iter(|| cold(&leased));
        });
    }
    group.finish();

    let value = profile(1);
    let set = |cache: &Cache| {
        let id = next_key.fetch_add(1, Ordering::Relaxed) % 1_000;
        let (cache, value) = (cache.clone(), &value);
        async move {
            let key = format!("set:{id}");
            black_box(cache.set(&key, value, CacheStrategy::ShortTerm).await.ok())
        }
    };
    let mut group = c.benchmark_group("set_leases");
    for round in 1..=ROUNDS {
        group.bench_with_input(BenchmarkId::new("raw_no_leases", round), &round, |b, _| {
            b.to_async(&rt).iter(|| set(&plain));
        });
        group.bench_with_input(BenchmarkId::new("tiercache", round), &round, |b, _| {
            b.to_async(&rt).iter(|| set(&leased));
        });
    }
    group.finish();
    drop(server);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
