//! A cold miss: `get_or_compute` of a key no tier holds, with a loader that sleeps 1 ms, against
//! the same loader called alone. The difference is what the cache adds to a miss: the L1 and
//! Redis lookups, the coalescing, and the writes of the loaded value to both tiers.
//! Target: at most 1.2x the loader alone.
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

use criterion::{Criterion, criterion_group, criterion_main};
use tiercache::{Cache, CacheStrategy, MemoryTier, RedisTier};
use tiercache_benches::{Profile, profile};
use tiercache_testkit::RedisServer;

/// Stands in for a database query.
async fn loader(id: u64) -> Result<Profile, std::io::Error> {
    tokio::time::sleep(Duration::from_millis(1)).await;
    Ok(profile(id))
}

fn bench(c: &mut Criterion) {
    let server = RedisServer::start().expect("start redis-server (is it installed?)");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build the runtime");
    let cache = rt.block_on(async {
        Cache::builder()
            .namespace("cold")
            .memory(MemoryTier::new(1_000_000))
            .tier(RedisTier::connect(&server.url()).await.expect("connect"))
            .build()
            .await
            .expect("build the cache")
    });
    let next_key = AtomicU64::new(0);

    let mut group = c.benchmark_group("cold_miss");
    group.bench_function("raw_loader_alone", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(loader(7).await) });
    });
    group.bench_function("tiercache", |b| {
        b.to_async(&rt).iter(|| {
            let id = next_key.fetch_add(1, Ordering::Relaxed);
            let key = format!("profile:{id}");
            let cache = &cache;
            async move {
                let found = cache
                    .get_or_compute(&key, CacheStrategy::ShortTerm, move || loader(id))
                    .await;
                black_box(found.ok())
            }
        });
    });
    group.finish();
    drop(server);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = bench
}
criterion_main!(benches);
