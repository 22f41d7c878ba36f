//! Reads, writes and invalidation through the facade, memory-only and with a tier below.
#![expect(clippy::unwrap_used, reason = "test helpers fail the test loudly")]

use std::{sync::Arc, time::Duration};

use tiercache::{Bytes, Cache, CacheStrategy, Error, MemoryTier};
use tiercache_testkit::MapTier;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct User {
    id: u64,
    name: String,
}

fn ada() -> User {
    User {
        id: 1,
        name: "Ada".into(),
    }
}

async fn memory_only() -> Cache {
    Cache::builder()
        .memory(MemoryTier::new(1_000))
        .build()
        .await
        .unwrap()
}

async fn with_l2(namespace: &str, l2: &MapTier) -> Cache {
    Cache::builder()
        .namespace(namespace)
        .memory(MemoryTier::new(1_000))
        .tier(l2.clone())
        .build()
        .await
        .unwrap()
}

#[tokio::test]
async fn set_then_get_returns_the_value_memory_only() {
    let cache = memory_only().await;
    assert_eq!(cache.get::<User>("user:1").await.unwrap(), None);
    cache
        .set("user:1", &ada(), CacheStrategy::ShortTerm)
        .await
        .unwrap();
    assert_eq!(cache.get::<User>("user:1").await.unwrap(), Some(ada()));
    let stats = cache.stats();
    assert_eq!(
        stats.memory.as_ref().map(|m| (m.hits, m.misses)),
        Some((1, 1))
    );
}

#[tokio::test]
async fn get_arc_hands_back_the_shared_object_without_copying() {
    let cache = memory_only().await;
    let stored = Arc::new(ada());
    cache
        .set_arc("user:1", Arc::clone(&stored), CacheStrategy::ShortTerm)
        .await
        .unwrap();
    let first = cache.get_arc::<User>("user:1").await.unwrap().unwrap();
    let second = cache.get_arc::<User>("user:1").await.unwrap().unwrap();
    assert!(Arc::ptr_eq(&first, &stored) && Arc::ptr_eq(&first, &second));
    let computed = cache
        .get_or_compute_arc("user:1", CacheStrategy::ShortTerm, || async {
            Ok::<_, Error>(ada())
        })
        .await
        .unwrap();
    assert!(
        Arc::ptr_eq(&computed, &stored),
        "a hit does not run the loader"
    );
}

#[tokio::test]
async fn values_go_to_the_lower_tier_under_the_namespace_and_come_back() {
    let l2 = MapTier::new("l2");
    let writer = with_l2("shop", &l2).await;
    writer
        .set("user:1", &ada(), CacheStrategy::ShortTerm)
        .await
        .unwrap();
    assert_eq!(l2.keys(), ["shop:user:1"]);

    // A second cache (another process, in effect) with an empty L1 reads it from L2.
    let reader = with_l2("shop", &l2).await;
    assert_eq!(reader.get::<User>("user:1").await.unwrap(), Some(ada()));
    assert_eq!(reader.stats().tier("l2").map(|t| t.hits), Some(1));

    // Another namespace on the same tier sees nothing.
    let other = with_l2("blog", &l2).await;
    assert_eq!(other.get::<User>("user:1").await.unwrap(), None);
}

#[tokio::test]
async fn entries_expire_after_their_ttl() {
    let l2 = MapTier::new("l2");
    let cache = with_l2("ns", &l2).await;
    let short = CacheStrategy::Custom(Duration::from_millis(100));
    cache.set("k", &1u8, short).await.unwrap();
    assert_eq!(cache.get::<u8>("k").await.unwrap(), Some(1));
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(cache.get::<u8>("k").await.unwrap(), None);
}

#[tokio::test]
async fn the_default_strategy_is_five_minutes_unless_the_builder_says_otherwise() {
    let l2 = MapTier::new("l2");
    let cache = with_l2("ns", &l2).await;
    cache.set("k", &1u8, CacheStrategy::Default).await.unwrap();
    let ttl = l2.raw("ns:k").unwrap().remaining_ttl();
    assert!(
        ttl > Duration::from_secs(299) && ttl <= Duration::from_secs(300),
        "{ttl:?}"
    );

    let l2 = MapTier::new("l2");
    let cache = Cache::builder()
        .namespace("ns")
        .tier(l2.clone())
        .default_strategy(CacheStrategy::RealTime)
        .build()
        .await
        .unwrap();
    cache.set("k", &1u8, CacheStrategy::Default).await.unwrap();
    assert!(l2.raw("ns:k").unwrap().remaining_ttl() <= Duration::from_secs(10));
}

#[tokio::test]
async fn invalidate_removes_a_key_from_every_tier() {
    let l2 = MapTier::new("l2");
    let cache = with_l2("ns", &l2).await;
    cache
        .set("a", &1u8, CacheStrategy::ShortTerm)
        .await
        .unwrap();
    cache
        .set("b", &2u8, CacheStrategy::ShortTerm)
        .await
        .unwrap();
    cache.invalidate("a").await.unwrap();
    assert_eq!(cache.get::<u8>("a").await.unwrap(), None);
    assert_eq!(l2.keys(), ["ns:b"]);
    assert_eq!(cache.get::<u8>("b").await.unwrap(), Some(2));
    cache.invalidate("never-set").await.unwrap();
}

#[tokio::test]
async fn invalidate_prefix_reaches_l1_and_lower_tiers_and_is_literal() {
    let l2 = MapTier::new("l2");
    let cache = with_l2("ns", &l2).await;
    for key in [
        "user:1", "user:2", "users:1", "order:1", "glob*:1", "globX:1",
    ] {
        cache
            .set(key, &key.to_owned(), CacheStrategy::ShortTerm)
            .await
            .unwrap();
    }
    cache.invalidate_prefix("user:").await.unwrap();
    cache.invalidate_prefix("glob*").await.unwrap();
    for gone in ["user:1", "user:2", "glob*:1"] {
        assert_eq!(cache.get::<String>(gone).await.unwrap(), None, "{gone}");
    }
    for kept in ["users:1", "order:1", "globX:1"] {
        assert_eq!(
            cache.get::<String>(kept).await.unwrap().as_deref(),
            Some(kept)
        );
    }
    assert_eq!(l2.keys(), ["ns:globX:1", "ns:order:1", "ns:users:1"]);
    assert!(matches!(
        cache.invalidate_prefix("").await,
        Err(Error::InvalidKey { .. })
    ));
}

#[tokio::test]
async fn clear_removes_this_namespace_only() {
    let l2 = MapTier::new("l2");
    let shop = with_l2("shop", &l2).await;
    let blog = with_l2("blog", &l2).await;
    shop.set("k", &1u8, CacheStrategy::ShortTerm).await.unwrap();
    blog.set("k", &2u8, CacheStrategy::ShortTerm).await.unwrap();
    shop.clear().await.unwrap();
    assert_eq!(shop.get::<u8>("k").await.unwrap(), None);
    assert_eq!(blog.get::<u8>("k").await.unwrap(), Some(2));
    assert_eq!(l2.keys(), ["blog:k"]);
}

#[tokio::test]
async fn bytes_round_trip_raw_through_every_tier() {
    let l2 = MapTier::new("l2");
    let cache = with_l2("ns", &l2).await;
    let payload = Bytes::from_static(b"\x00\xffraw");
    cache
        .set_bytes("blob", payload.clone(), CacheStrategy::ShortTerm)
        .await
        .unwrap();
    assert_eq!(
        cache.get_bytes("blob").await.unwrap(),
        Some(payload.clone())
    );
    assert_eq!(
        l2.raw("ns:blob").unwrap().value,
        payload,
        "stored as given, no header"
    );

    let reader = with_l2("ns", &l2).await;
    assert_eq!(reader.get_bytes("blob").await.unwrap(), Some(payload));
    assert_eq!(reader.get_bytes("missing").await.unwrap(), None);
}

/// Starts a load of `"k"` that yields `"old"`, and returns once its loader is running; the loader
/// finishes when the returned `Notify` is notified.
async fn start_held_load(
    cache: &Cache,
) -> (
    tokio::task::JoinHandle<tiercache::Result<String>>,
    Arc<tokio::sync::Notify>,
) {
    let entered = Arc::new(tokio::sync::Notify::new());
    let release = Arc::new(tokio::sync::Notify::new());
    let load = {
        let (cache, entered, release) = (cache.clone(), entered.clone(), release.clone());
        tokio::spawn(async move {
            cache
                .get_or_compute("k", CacheStrategy::ShortTerm, || async move {
                    entered.notify_one();
                    release.notified().await;
                    Ok::<_, Error>("old".to_owned())
                })
                .await
        })
    };
    entered.notified().await;
    (load, release)
}

#[tokio::test]
async fn an_invalidation_during_a_load_wins_over_the_loaded_value() {
    let l2 = MapTier::new("l2");
    let cache = with_l2("ns", &l2).await;
    let (load, release) = start_held_load(&cache).await;
    cache.invalidate("k").await.unwrap();
    release.notify_one();
    assert_eq!(
        load.await.unwrap().unwrap(),
        "old",
        "the caller still gets what it loaded"
    );
    assert_eq!(
        cache.get::<String>("k").await.unwrap(),
        None,
        "but the old value is not cached"
    );
    assert!(l2.keys().is_empty());
    assert_eq!(
        cache.stats().fills_rejected,
        1,
        "the prevented stale insert is counted"
    );
}

#[tokio::test]
async fn a_set_during_a_load_is_not_overwritten_by_the_loaded_value() {
    let l2 = MapTier::new("l2");
    let cache = with_l2("ns", &l2).await;
    let (load, release) = start_held_load(&cache).await;
    cache
        .set("k", &"new".to_owned(), CacheStrategy::ShortTerm)
        .await
        .unwrap();
    release.notify_one();
    load.await.unwrap().unwrap();
    assert_eq!(cache.stats().fills_rejected, 1);
    assert_eq!(
        cache.get::<String>("k").await.unwrap().as_deref(),
        Some("new")
    );
    let reader = with_l2("ns", &l2).await;
    assert_eq!(
        reader.get::<String>("k").await.unwrap().as_deref(),
        Some("new")
    );
}

#[tokio::test]
async fn a_cache_with_only_a_bytes_tier_works_without_l1() {
    let l2 = MapTier::new("l2");
    let cache = Cache::builder().tier(l2.clone()).build().await.unwrap();
    let user = cache
        .get_or_compute("user:1", CacheStrategy::ShortTerm, || async {
            Ok::<_, Error>(ada())
        })
        .await
        .unwrap();
    assert_eq!(user, ada());
    assert_eq!(cache.get::<User>("user:1").await.unwrap(), Some(ada()));
    assert!(cache.stats().memory.is_none());
    assert_eq!(l2.keys(), [":user:1"], "stored in the unnamed namespace");
}
