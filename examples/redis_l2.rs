//! L1 in memory, L2 on Redis: a miss, an L2 hit promoted to L1, then an L1 hit, with the stats.
//!
//! Uses the Redis at `REDIS_URL` when it is set; otherwise starts a private `redis-server` on a
//! free port for the length of the run (it must be installed).
//!
//! Run it with `cargo run --example redis_l2`.
#![expect(
    clippy::print_stdout,
    reason = "an example shows its results on the terminal"
)]

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tiercache::{Cache, CacheStrategy, MemoryTier, RedisTier};
use tiercache_testkit::RedisServer;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Order {
    id: u64,
    items: Vec<String>,
    total_cents: u64,
}

async fn load_order(id: u64) -> Result<Order, std::io::Error> {
    tokio::time::sleep(Duration::from_millis(50)).await; // the database
    Ok(Order {
        id,
        items: vec!["lamp".into(), "bulb".into()],
        total_cents: 5_200,
    })
}

async fn instance(url: &str) -> tiercache::Result<Cache> {
    Cache::builder()
        .namespace("example-orders")
        .memory(MemoryTier::new(10_000))
        .tier(RedisTier::connect(url).await?)
        .build()
        .await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Keep the private server alive until the end of main.
    let (url, _private_server) = RedisServer::from_env_or_start()?;
    println!("Redis at {url}");

    // Two instances of a service, each with its own L1, sharing Redis.
    let a = instance(&url).await?;
    let b = instance(&url).await?;
    a.invalidate("order:7").await?; // start from a clean slate on a shared server

    let order = a
        .get_or_compute("order:7", CacheStrategy::ShortTerm, || load_order(7))
        .await?;
    println!("A: miss everywhere, loaded   -> {order:?}");

    let order: Option<Order> = b.get("order:7").await?;
    println!("B: L1 miss, L2 (Redis) hit   -> {order:?}");
    let order: Option<Order> = b.get("order:7").await?;
    println!("B: promoted, now an L1 hit   -> {}", order.is_some());

    for (name, cache) in [("A", &a), ("B", &b)] {
        let stats = cache.stats();
        for tier in stats.memory.iter().chain(&stats.tiers) {
            println!(
                "{name}: tier {:<7} hits {} misses {} promotions {} writes {} errors {} circuit {:?}",
                tier.name,
                tier.hits,
                tier.misses,
                tier.promotions,
                tier.writes,
                tier.errors,
                tier.circuit
            );
        }
        println!("{name}: loader calls {}", stats.loads);
    }
    a.invalidate("order:7").await?;
    Ok(())
}
