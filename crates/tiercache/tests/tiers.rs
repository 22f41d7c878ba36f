//! N tiers: promotion with scaled remaining TTL, promotion switches, builder ordering, failing
//! tiers, negative caching and jitter.
#![expect(clippy::unwrap_used, reason = "test helpers fail the test loudly")]

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use tiercache::{
    Cache, CacheStrategy, EntryOptions, Error, JsonCodec, MemoryTier, MokaTier, Tier, TierOptions,
    core::Envelope,
};
use tiercache_testkit::MapTier;

fn close_to(actual: Instant, expected: Instant) -> bool {
    let drift = if actual > expected {
        actual - expected
    } else {
        expected - actual
    };
    drift < Duration::from_millis(500)
}

fn encoded<T: serde::Serialize>(value: &T) -> tiercache::Bytes {
    Envelope::new(JsonCodec, 0).encode("k", value).unwrap()
}

struct Stack {
    cache: Cache,
    l1: MemoryTier,
    l2: MapTier,
    l3: MapTier,
}

async fn three_tiers(l1_options: TierOptions, l2_options: TierOptions) -> Stack {
    let (l1, l2, l3) = (
        MemoryTier::new(1_000),
        MapTier::new("l2"),
        MapTier::new("l3"),
    );
    let cache = Cache::builder()
        .namespace("ns")
        .memory_with(l1.clone(), l1_options)
        .tier_with(l2.clone(), l2_options)
        .tier(l3.clone())
        .build()
        .await
        .unwrap();
    Stack { cache, l1, l2, l3 }
}

#[tokio::test]
async fn an_l3_hit_is_promoted_to_l2_and_l1_with_scaled_remaining_ttl() {
    let s = three_tiers(
        TierOptions::new().ttl_scale(0.25),
        TierOptions::new().ttl_scale(0.5),
    )
    .await;
    let l3_expiry = Instant::now() + Duration::from_secs(100);
    s.l3.put_raw("ns:k", encoded(&"deep".to_owned()), l3_expiry);

    assert_eq!(
        s.cache.get::<String>("k").await.unwrap().as_deref(),
        Some("deep")
    );

    let l2_copy = s.l2.raw("ns:k").expect("promoted to L2");
    assert!(close_to(
        l2_copy.expires_at,
        Instant::now() + Duration::from_secs(50)
    ));
    let l1_copy = s.l1.get("k").await.expect("promoted to L1");
    assert!(close_to(
        l1_copy.expires_at(),
        Instant::now() + Duration::from_secs(25)
    ));

    let stats = s.cache.stats();
    let (l1, l2, l3) = (
        stats.tier("memory").unwrap(),
        stats.tier("l2").unwrap(),
        stats.tier("l3").unwrap(),
    );
    assert_eq!((l1.misses, l1.promotions), (1, 1));
    assert_eq!((l2.misses, l2.promotions), (1, 1));
    assert_eq!((l3.hits, l3.promotions), (1, 0));

    // The next read is an L1 hit and reaches no lower tier.
    let gets = (s.l2.gets(), s.l3.gets());
    assert_eq!(
        s.cache.get::<String>("k").await.unwrap().as_deref(),
        Some("deep")
    );
    assert_eq!((s.l2.gets(), s.l3.gets()), gets);
}

#[tokio::test]
async fn promotion_never_extends_an_entrys_life() {
    let s = three_tiers(TierOptions::new(), TierOptions::new()).await;
    let l3_expiry = Instant::now() + Duration::from_millis(300);
    s.l3.put_raw("ns:k", encoded(&1u32), l3_expiry);
    assert_eq!(s.cache.get::<u32>("k").await.unwrap(), Some(1));
    assert!(s.l2.raw("ns:k").unwrap().expires_at <= l3_expiry);
    assert!(s.l1.get("k").await.unwrap().expires_at() <= l3_expiry);

    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        s.cache.get::<u32>("k").await.unwrap(),
        None,
        "every copy expired with the original"
    );
}

#[tokio::test]
async fn promotion_off_is_respected_per_tier() {
    let s = three_tiers(TierOptions::new(), TierOptions::new().promote(false)).await;
    s.l3.put_raw(
        "ns:k",
        encoded(&5u8),
        Instant::now() + Duration::from_secs(60),
    );
    assert_eq!(s.cache.get::<u8>("k").await.unwrap(), Some(5));
    assert!(s.l2.raw("ns:k").is_none(), "L2 has promotion off");
    assert!(s.l1.get("k").await.is_some(), "L1 still promotes");

    let s = three_tiers(TierOptions::new().promote(false), TierOptions::new()).await;
    s.l3.put_raw(
        "ns:k",
        encoded(&5u8),
        Instant::now() + Duration::from_secs(60),
    );
    assert_eq!(s.cache.get::<u8>("k").await.unwrap(), Some(5));
    assert!(s.l1.get("k").await.is_none(), "L1 has promotion off");
    assert!(s.l2.raw("ns:k").is_some());
}

#[tokio::test]
async fn set_writes_every_tier_with_its_scaled_ttl() {
    let s = three_tiers(
        TierOptions::new().ttl_scale(0.25),
        TierOptions::new().ttl_scale(0.5),
    )
    .await;
    let ttl = CacheStrategy::Custom(Duration::from_secs(100));
    s.cache.set("k", &"v".to_owned(), ttl).await.unwrap();
    let now = Instant::now();
    assert!(close_to(
        s.l1.get("k").await.unwrap().expires_at(),
        now + Duration::from_secs(25)
    ));
    assert!(close_to(
        s.l2.raw("ns:k").unwrap().expires_at,
        now + Duration::from_secs(50)
    ));
    assert!(close_to(
        s.l3.raw("ns:k").unwrap().expires_at,
        now + Duration::from_secs(100)
    ));
}

#[tokio::test]
async fn the_builder_rejects_tiers_out_of_order_and_other_bad_configs() {
    let out_of_order = Cache::builder()
        .memory(MemoryTier::new(10))
        .tier_with(MapTier::new("l2"), TierOptions::new().ttl_scale(0.5))
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(out_of_order, Error::Config(ref m) if m.contains("out of order")),
        "{out_of_order}"
    );

    let lower_first = Cache::builder()
        .tier_with(MapTier::new("l2"), TierOptions::new().ttl_scale(2.0))
        .tier(MapTier::new("l3"))
        .build()
        .await;
    assert!(matches!(lower_first, Err(Error::Config(_))));

    let duplicate = Cache::builder()
        .tier(MapTier::new("x"))
        .tier(MapTier::new("x"))
        .build()
        .await;
    assert!(matches!(duplicate, Err(Error::Config(ref m)) if m.contains("named")));

    for scale in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let bad = Cache::builder()
            .tier_with(MapTier::new("l2"), TierOptions::new().ttl_scale(scale))
            .build()
            .await;
        assert!(matches!(bad, Err(Error::Config(_))), "scale {scale}");
    }

    let empty = Cache::builder().build().await;
    assert!(matches!(empty, Err(Error::Config(ref m)) if m.contains("at least one tier")));
}

#[tokio::test]
async fn a_shared_dyn_tier_plugs_in_like_any_tier() {
    let shared: Arc<dyn Tier> = Arc::new(MokaTier::new(100));
    let cache = Cache::builder()
        .tier(Arc::clone(&shared))
        .build()
        .await
        .unwrap();
    cache
        .set("k", &3u16, CacheStrategy::ShortTerm)
        .await
        .unwrap();
    assert!(shared.get(":k").await.unwrap().is_some());
    assert_eq!(cache.get::<u16>("k").await.unwrap(), Some(3));
}

#[tokio::test]
async fn a_failing_lower_tier_is_reported_counted_and_keeps_the_l1_write() {
    let s = three_tiers(TierOptions::new(), TierOptions::new()).await;
    s.l2.set_failing(true);

    let err = s
        .cache
        .set("k", &1u32, CacheStrategy::ShortTerm)
        .await
        .unwrap_err();
    assert_eq!(err.tier(), Some("l2"));
    assert!(err.is_retryable());
    assert_eq!(
        s.cache.get::<u32>("k").await.unwrap(),
        Some(1),
        "the L1 write is kept"
    );
    assert!(
        s.l3.raw("ns:k").is_some(),
        "tiers below the failing one are still written"
    );
    assert_eq!(s.cache.stats().tier("l2").unwrap().errors, 1);

    // Reads and loads go on around the broken tier.
    s.l1.clear();
    assert_eq!(
        s.cache.get::<u32>("k").await.unwrap(),
        Some(1),
        "served from L3"
    );
    let loaded = s
        .cache
        .get_or_compute("other", CacheStrategy::ShortTerm, || async {
            Ok::<_, Error>(8u32)
        })
        .await
        .unwrap();
    assert_eq!(loaded, 8);
    assert!(s.cache.stats().tier("l2").unwrap().errors >= 3);
}

#[tokio::test]
async fn a_loaders_none_is_cached_only_when_negative_caching_is_asked_for() {
    let s = three_tiers(TierOptions::new(), TierOptions::new()).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let load = |calls: Arc<AtomicUsize>| async move {
        calls.fetch_add(1, Ordering::SeqCst);
        Ok::<Option<String>, Error>(None)
    };

    let plain = EntryOptions::new(CacheStrategy::ShortTerm);
    for _ in 0..2 {
        let found = s
            .cache
            .get_or_compute_optional("gone", plain.clone(), {
                let calls = calls.clone();
                move || load(calls)
            })
            .await;
        assert_eq!(found.unwrap(), None);
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "without a negative TTL a None is not cached"
    );
    assert!(s.l2.raw("ns:gone").is_none());

    let negative = plain.clone().negative_ttl(Duration::from_millis(300));
    for _ in 0..3 {
        let found = s
            .cache
            .get_or_compute_optional("gone", negative.clone(), {
                let calls = calls.clone();
                move || load(calls)
            })
            .await;
        assert_eq!(found.unwrap(), None);
        settled(&s.cache).await;
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "the None was cached after the first call"
    );
    assert!(
        s.l2.raw("ns:gone").is_some(),
        "the negative entry reaches the lower tiers"
    );
    assert_eq!(s.cache.get::<String>("gone").await.unwrap(), None);
    assert!(s.cache.stats().negative_hits >= 2);

    tokio::time::sleep(Duration::from_millis(400)).await;
    let found = s
        .cache
        .get_or_compute_optional("gone", negative, {
            let calls = calls.clone();
            move || load(calls)
        })
        .await;
    assert_eq!(found.unwrap(), None);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        4,
        "the negative entry expires after its TTL"
    );

    // A non-optional load is not answered by a negative entry: it loads over it.
    let value = s
        .cache
        .get_or_compute("gone", CacheStrategy::ShortTerm, || async {
            Ok::<_, Error>("back".to_owned())
        })
        .await
        .unwrap();
    assert_eq!(value, "back");
    assert_eq!(
        s.cache.get::<String>("gone").await.unwrap().as_deref(),
        Some("back")
    );
}

#[tokio::test]
async fn jitter_spreads_expiry_without_exceeding_the_ttl() {
    let s = three_tiers(TierOptions::new(), TierOptions::new()).await;
    let options = EntryOptions::new(CacheStrategy::LongTerm).jitter(0.2);
    let ttl = Duration::from_secs(3 * 60 * 60);
    let before = Instant::now();
    for i in 0..100 {
        s.cache
            .set(&format!("j{i}"), &i, options.clone())
            .await
            .unwrap();
    }
    let expiries: Vec<Instant> = (0..100)
        .map(|i| s.l3.raw(&format!("ns:j{i}")).unwrap().expires_at)
        .collect();
    let spread = expiries
        .iter()
        .max()
        .unwrap()
        .duration_since(*expiries.iter().min().unwrap());
    assert!(
        spread > ttl.mul_f64(0.1),
        "expiries spread over {spread:?} only"
    );
    assert!(expiries.iter().all(|e| *e <= Instant::now() + ttl));
    assert!(expiries.iter().all(|e| *e >= before + ttl.mul_f64(0.8)));

    let exact = EntryOptions::new(CacheStrategy::LongTerm);
    s.cache.set("exact", &0, exact).await.unwrap();
    assert!(close_to(
        s.l3.raw("ns:exact").unwrap().expires_at,
        Instant::now() + ttl
    ));
}

#[test]
fn public_handles_are_send_sync_and_cheap_to_clone() {
    fn send_sync<T: Send + Sync + 'static>() {}
    fn clone<T: Clone>() {}
    send_sync::<Cache>();
    send_sync::<tiercache::CacheBuilder>();
    send_sync::<MemoryTier>();
    send_sync::<MokaTier>();
    send_sync::<Error>();
    send_sync::<tiercache::CacheStats>();
    clone::<Cache>();
    clone::<MemoryTier>();
}

#[tokio::test]
async fn a_tier_that_keeps_failing_is_skipped_for_the_cool_down_then_probed() {
    let (l1, l2) = (MemoryTier::new(100), MapTier::new("l2"));
    let breaker = tiercache::CircuitBreaker::new(3, Duration::from_millis(300));
    let cache = Cache::builder()
        .memory(l1.clone())
        .tier_with(
            l2.clone(),
            TierOptions::new().circuit_breaker(Some(breaker)),
        )
        .build()
        .await
        .unwrap();
    l2.set_failing(true);
    for i in 0..3 {
        assert_eq!(cache.get::<u8>(&format!("k{i}")).await.unwrap(), None);
    }
    let stats = cache.stats();
    let l2_stats = stats.tier("l2").unwrap();
    assert_eq!((l2_stats.errors, l2_stats.circuit_opens), (3, 1));
    assert_eq!(l2_stats.circuit, tiercache::CircuitState::Open);

    // While open, the tier is not called at all: reads miss, writes say it was skipped.
    let calls = l2.gets();
    assert_eq!(cache.get::<u8>("k").await.unwrap(), None);
    assert_eq!(l2.gets(), calls, "an open breaker skips the tier");
    let err = cache
        .set("k", &1u8, CacheStrategy::ShortTerm)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Unavailable { ref tier, .. } if tier == "l2"),
        "{err}"
    );
    assert_eq!(
        cache.get::<u8>("k").await.unwrap(),
        Some(1),
        "the L1 write is kept"
    );
    assert!(cache.stats().tier("l2").unwrap().skipped >= 2);

    // The tier recovers; after the cool-down one probe closes the breaker again.
    l2.set_failing(false);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        cache.stats().tier("l2").unwrap().circuit,
        tiercache::CircuitState::HalfOpen
    );
    cache
        .set("k", &2u8, CacheStrategy::ShortTerm)
        .await
        .unwrap();
    assert_eq!(
        cache.stats().tier("l2").unwrap().circuit,
        tiercache::CircuitState::Closed
    );
    assert!(l2.raw(":k").is_some());
}

/// The promotion policies: a key read once from below stays below under `SecondHitWithin`, and
/// is copied up on its second read; `OneIn(n)` copies every n-th hit; lower tiers obey their
/// own policy too.
#[tokio::test]
async fn promotion_policies_decide_which_hits_are_copied_up() {
    use tiercache::Promotion;

    let (l2, l3) = (MapTier::new("l2"), MapTier::new("l3"));
    let l1 = tiercache::MemoryTier::new(100);
    let second_hit = Promotion::SecondHitWithin(Duration::from_secs(60));
    let cache = Cache::builder()
        .memory_with(l1.clone(), TierOptions::new().promotion(second_hit))
        .tier_with(
            l2.clone(),
            TierOptions::new().promotion(Promotion::OneIn(2)),
        )
        .tier(l3.clone())
        .build()
        .await
        .unwrap();
    let l3_only = Cache::builder().tier(l3.clone()).build().await.unwrap();
    for key in ["a", "b"] {
        l3_only
            .set(key, &1_u32, CacheStrategy::LongTerm)
            .await
            .unwrap();
    }

    // "a": first hit in L3 is promoted to L2 (1st of every 2) but not to L1 (first hit).
    assert_eq!(cache.get::<u32>("a").await.unwrap(), Some(1));
    assert!(l2.raw(":a").is_some() && l1.get("a").await.is_none());
    // Second read: an L2 hit now, and the second hit below L1: promoted to L1.
    assert_eq!(cache.get::<u32>("a").await.unwrap(), Some(1));
    assert!(l1.get("a").await.is_some());

    // "b": the 2nd L2 candidate is skipped by OneIn(2), and it is only a first hit for L1.
    assert_eq!(cache.get::<u32>("b").await.unwrap(), Some(1));
    assert!(l2.raw(":b").is_none() && l1.get("b").await.is_none());
    assert_eq!(cache.stats().memory.unwrap().promotions, 1);
}

/// Waits for the cache's background work (fills of the tiers below L1) to end.
async fn settled(cache: &Cache) {
    while cache.background_loads() > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}
