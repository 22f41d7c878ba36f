//! Settings at their extremes and expiries from outside never panic and never give an entry a
//! longer life than its header states: `Duration::MAX` as every duration, `usize::MAX`
//! background loads, a huge TTL scale, and a value whose expiry in Redis lies far in the future.

use std::time::{Duration, Instant};

use tiercache::{
    Cache, CacheStrategy, EagerRefresh, EntryOptions, FailSafe, MAX_TTL, MemoryTier, MokaTier,
    RedisTier, Tier, TierOptions,
};
use tiercache_testkit::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_setting_at_its_extreme_works_and_is_cut_to_the_longest_ttl() {
    let server = RedisServer::start().unwrap();
    let redis = RedisTier::connect(&server.url()).await.unwrap();
    let forever = Duration::MAX;
    let cache = Cache::builder()
        .namespace("edge")
        .memory(MemoryTier::new(100))
        .tier(MokaTier::new(100))
        .tier_with(redis.clone(), TierOptions::new().ttl_scale(1e300))
        .default_strategy(CacheStrategy::Custom(forever))
        .l1_max_age(forever - Duration::from_secs(1))
        .fail_safe(FailSafe::new(forever).throttle(forever))
        .soft_timeout(forever)
        .hard_timeout(forever)
        .background_timeout(forever)
        .background_loads(usize::MAX)
        .eager_refresh(EagerRefresh::LastFraction(1.0))
        .tag_check_interval(forever)
        .tag_retention(forever)
        .build()
        .await
        .unwrap();

    cache
        .set("set", &1_u32, CacheStrategy::Default)
        .await
        .unwrap();
    cache
        .set_many(&[("many", 2_u32)], CacheStrategy::Custom(forever))
        .await
        .unwrap();
    let tagged = EntryOptions::new(CacheStrategy::Custom(forever))
        .tags(["t"])
        .jitter(1.0)
        .negative_ttl(forever)
        .soft_timeout(forever)
        .hard_timeout(forever);
    let loaded = cache
        .get_or_compute("loaded", tagged.clone(), || async {
            Ok::<_, std::io::Error>(3_u32)
        })
        .await
        .unwrap();
    assert_eq!(loaded, 3);
    let none = cache
        .get_or_compute_optional("absent", tagged, || async {
            Ok::<Option<u32>, std::io::Error>(None)
        })
        .await
        .unwrap();
    assert_eq!(none, None);
    settled(&cache).await;
    assert_eq!(cache.get::<u32>("set").await.unwrap(), Some(1));
    assert_eq!(
        cache.get_many::<u32>(&["many", "loaded"]).await.unwrap(),
        vec![Some(2), Some(3)]
    );

    // Every TTL is cut to the longest: in Redis too, after the 1e300 scale.
    for key in ["set", "many", "loaded"] {
        let stored = redis.get(&format!("edge:{key}")).await.unwrap().unwrap();
        let left = stored.remaining_ttl();
        assert!(left <= MAX_TTL * 2, "{key} lives {left:?} in Redis");
        assert!(left > MAX_TTL / 2, "{key} lives {left:?} in Redis");
    }

    cache.invalidate_tag("t").await.unwrap();
    assert_eq!(cache.get::<u32>("loaded").await.unwrap(), None);
    cache.invalidate_prefix("ma").await.unwrap();
    assert_eq!(cache.get::<u32>("many").await.unwrap(), None);
    cache.clear().await.unwrap();
    assert_eq!(cache.get::<u32>("set").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_far_future_expiry_in_redis_gives_no_copy_more_life_than_its_header() {
    let server = RedisServer::start().unwrap();
    let redis = RedisTier::connect(&server.url()).await.unwrap();
    let writer = Cache::builder()
        .namespace("far")
        .tier(redis.clone())
        .build()
        .await
        .unwrap();
    let ttl = Duration::from_millis(600);
    writer
        .set("k", &7_u32, CacheStrategy::Custom(ttl))
        .await
        .unwrap();
    // Someone (a bad clock, a hostile writer) rewrites the stored expiry 40 days ahead.
    let stored = redis.get("far:k").await.unwrap().unwrap();
    let far = Instant::now() + Duration::from_secs(40 * 24 * 3600);
    redis
        .set("far:k", tiercache::Entry::expiring_at(stored.value, far))
        .await
        .unwrap();

    let reader = Cache::builder()
        .namespace("far")
        .memory(MemoryTier::new(100))
        .tier(RedisTier::connect(&server.url()).await.unwrap())
        .build()
        .await
        .unwrap();
    // Each copy made from it lives as long as its header says (then the next read misses L1
    // and reads Redis again), however far ahead the stored expiry lies.
    for round in 0..3 {
        let read_at = Instant::now();
        assert_eq!(reader.get::<u32>("k").await.unwrap(), Some(7));
        let l1 = reader.stats().memory.unwrap();
        assert_eq!(
            (l1.hits, l1.misses),
            (0, round + 1),
            "round {round}: {l1:?}"
        );
        tokio::time::sleep((read_at + ttl + Duration::from_millis(100)) - Instant::now()).await;
    }
}

/// Waits for the cache's background work (fills of the tiers below L1) to end.
async fn settled(cache: &Cache) {
    while cache.background_loads() > 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
