//! Two instances of a service, each with its own L1, sharing Redis and kept coherent by the
//! invalidation bus: an update on one reaches the other's L1.
//!
//! Uses the Redis at `REDIS_URL` when it is set; otherwise starts a private `redis-server` on a
//! free port for the length of the run (it must be installed).
//!
//! Run it with `cargo run --example two_instances`.
#![expect(
    clippy::print_stdout,
    reason = "an example shows its results on the terminal"
)]

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tiercache::{Cache, CacheStrategy, MemoryTier, RedisBus, RedisTier};
use tiercache_testkit::RedisServer;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Price {
    sku: String,
    cents: u64,
}

/// One instance: its own L1, the shared Redis below it, and the bus on the same Redis.
async fn instance(url: &str) -> tiercache::Result<Cache> {
    Cache::builder()
        .namespace("example-prices")
        .memory(MemoryTier::new(10_000))
        .tier(RedisTier::connect(url).await?)
        .bus(RedisBus::connect(url).await?)
        .build()
        .await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Keep the private server alive until the end of main.
    let (url, _private_server) = RedisServer::from_env_or_start()?;
    println!("Redis at {url}");
    let a = instance(&url).await?;
    let b = instance(&url).await?;

    let lamp = |cents| Price {
        sku: "lamp".into(),
        cents,
    };
    a.set("price:lamp", &lamp(4_900), CacheStrategy::LongTerm)
        .await?;
    // Let A's message reach B before B reads, so B's L1 copy is not dropped right away.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let seen: Option<Price> = b.get("price:lamp").await?;
    println!("B reads the price (now in B's L1):   {seen:?}");

    let started = Instant::now();
    a.set("price:lamp", &lamp(3_900), CacheStrategy::LongTerm)
        .await?;
    let seen = loop {
        let price: Option<Price> = b.get("price:lamp").await?;
        if price.as_ref().map(|p| p.cents) == Some(3_900)
            || started.elapsed() > Duration::from_secs(5)
        {
            break price;
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    };
    println!(
        "A changes it; B sees the new price:  {seen:?} after {:?}",
        started.elapsed()
    );

    a.invalidate_prefix("price:").await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let gone: Option<Price> = b.get("price:lamp").await?;
    println!("A invalidates price:*; B finds:      {gone:?}");

    for (name, cache) in [("A", &a), ("B", &b)] {
        if let Some(bus) = cache.stats().bus {
            println!(
                "{name}: bus {} connected {} published {} received {} own ignored {} gaps {}",
                bus.transport,
                bus.connected,
                bus.published,
                bus.received,
                bus.ignored_own,
                bus.gaps
            );
        }
    }
    Ok(())
}
