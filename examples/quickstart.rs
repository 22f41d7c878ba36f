//! Quickstart: a typed in-process L1 over an in-process L2, no Redis needed.
//!
//! Shows a typed set/get, a get-or-compute whose slow loader runs once for 100 concurrent
//! requests, a promotion from L2 after L1 is dropped, prefix invalidation, and the stats.
//!
//! Run it with `cargo run --example quickstart`.
#![expect(
    clippy::print_stdout,
    reason = "an example shows its results on the terminal"
)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use tiercache::{Cache, CacheStrategy, MemoryTier, MokaTier, TierOptions};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Product {
    id: u64,
    name: String,
    price_cents: u64,
}

/// Stands in for a database query that takes 100 ms.
async fn load_product(id: u64, calls: &AtomicUsize) -> Result<Product, std::io::Error> {
    calls.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(Product {
        id,
        name: format!("product #{id}"),
        price_cents: 1_999,
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let l1 = MemoryTier::new(10_000);
    let cache = Cache::builder()
        .namespace("shop")
        // L1 keeps entries for half as long as the tier below it.
        .memory_with(l1.clone(), TierOptions::new().ttl_scale(0.5))
        .tier(MokaTier::new(100_000))
        .build()
        .await?;

    // 1. Typed set and get.
    let lamp = Product {
        id: 1,
        name: "lamp".into(),
        price_cents: 4_500,
    };
    cache
        .set("product:1", &lamp, CacheStrategy::ShortTerm)
        .await?;
    let found: Option<Product> = cache.get("product:1").await?;
    println!("get product:1            -> {found:?}");

    // 2. A cold key asked for by 100 requests at once: the loader runs once.
    let calls = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let requests: Vec<_> = (0..100)
        .map(|_| {
            let (cache, calls) = (cache.clone(), Arc::clone(&calls));
            tokio::spawn(async move {
                // The loader owns what it uses (`move`): it may run in the background.
                cache
                    .get_or_compute("product:2", CacheStrategy::ShortTerm, move || async move {
                        load_product(2, &calls).await
                    })
                    .await
            })
        })
        .collect();
    for request in requests {
        request.await??;
    }
    println!(
        "100 concurrent loads     -> loader ran {} time(s), {:?} in all",
        calls.load(Ordering::SeqCst),
        started.elapsed()
    );

    // 3. L1 loses its copy (eviction, restart): the next read is an L2 hit, promoted back to L1.
    l1.clear();
    let again: Option<Product> = cache.get("product:2").await?;
    println!("after L1 clear           -> {again:?} (from L2, promoted to L1)");

    // 4. Drop every product at once, in every tier.
    cache.invalidate_prefix("product:").await?;
    let gone: Option<Product> = cache.get("product:1").await?;
    println!("after invalidate_prefix  -> {gone:?}");

    // 5. What each tier saw.
    let stats = cache.stats();
    for tier in stats.memory.iter().chain(&stats.tiers) {
        println!(
            "tier {:<8} hits {:>3}  misses {:>3}  promotions {:>2}  writes {:>2}  errors {}",
            tier.name, tier.hits, tier.misses, tier.promotions, tier.writes, tier.errors
        );
    }
    println!(
        "loader calls {}  coalesced waits {}",
        stats.loads, stats.coalesced
    );
    Ok(())
}
