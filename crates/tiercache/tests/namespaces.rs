//! Caches that share one Redis never touch each other's keys: every (namespace, key) pair has a
//! stored key of its own, prefix and clear operations stay inside their namespace, and the keys
//! a cache keeps for itself (the stream bus's stream, tag markers) are out of reach of any user
//! key.
#![expect(clippy::unwrap_used, reason = "test helpers fail the test loudly")]

use std::time::{Duration, Instant};

use tiercache::{Cache, CacheStrategy, Error, MemoryTier, RedisStreamBus, RedisTier};
use tiercache_testkit::RedisServer;

/// A cache in `namespace` with no L1, so every read goes to Redis.
async fn shared_only(url: &str, namespace: &str) -> Cache {
    Cache::builder()
        .namespace(namespace)
        .tier(RedisTier::connect(url).await.unwrap())
        .build()
        .await
        .unwrap()
}

/// A cache in `namespace` with an L1, kept coherent by a stream bus.
async fn on_a_stream_bus(url: &str, namespace: &str) -> Cache {
    Cache::builder()
        .namespace(namespace)
        .memory(MemoryTier::new(100))
        .tier(RedisTier::connect(url).await.unwrap())
        .bus(RedisStreamBus::connect(url).await.unwrap())
        .build()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_namespace_name_may_not_hold_the_separator() {
    let err = Cache::builder()
        .namespace("x:y")
        .memory(MemoryTier::new(10))
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidKey { key, reason } if key == "x:y" && reason.contains("':'")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_prefixes_and_clear_stay_inside_their_namespace() {
    let server = RedisServer::start().unwrap();
    let url = server.url();
    // In 0.1 the unnamed cache's key "x:k" was namespace "x"'s key "k", in Redis.
    let unnamed = shared_only(&url, "").await;
    let x = shared_only(&url, "x").await;
    let xy = shared_only(&url, "xy").await;
    x.set("k", &1_u32, CacheStrategy::LongTerm).await.unwrap();
    xy.set("k", &3_u32, CacheStrategy::LongTerm).await.unwrap();
    unnamed
        .set("x:k", &2_u32, CacheStrategy::LongTerm)
        .await
        .unwrap();
    assert_eq!(x.get::<u32>("k").await.unwrap(), Some(1));
    assert_eq!(unnamed.get::<u32>("x:k").await.unwrap(), Some(2));

    // A prefix of the unnamed cache that covers "x:k" covers nothing of "x" or "xy".
    unnamed.invalidate_prefix("x").await.unwrap();
    assert_eq!(unnamed.get::<u32>("x:k").await.unwrap(), None);
    assert_eq!(x.get::<u32>("k").await.unwrap(), Some(1));
    assert_eq!(xy.get::<u32>("k").await.unwrap(), Some(3));

    // Clearing one namespace leaves the others, the unnamed one included.
    unnamed
        .set("x:k", &2_u32, CacheStrategy::LongTerm)
        .await
        .unwrap();
    x.clear().await.unwrap();
    assert_eq!(x.get::<u32>("k").await.unwrap(), None);
    assert_eq!(xy.get::<u32>("k").await.unwrap(), Some(3));
    assert_eq!(unnamed.get::<u32>("x:k").await.unwrap(), Some(2));
    unnamed.clear().await.unwrap();
    assert_eq!(unnamed.get::<u32>("x:k").await.unwrap(), None);
    assert_eq!(xy.get::<u32>("k").await.unwrap(), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_user_key_reaches_the_stream_bus_of_another_namespace() {
    let server = RedisServer::start().unwrap();
    let url = server.url();
    let writer = on_a_stream_bus(&url, "shop").await;
    let reader = on_a_stream_bus(&url, "shop").await;
    writer
        .set("price", &1_u32, CacheStrategy::LongTerm)
        .await
        .unwrap();
    assert_eq!(reader.get::<u32>("price").await.unwrap(), Some(1));

    // In 0.1 the stream of namespace "shop" was the key "tiercache:bus:shop": namespace
    // "tiercache" could overwrite it with a value, and its clear() deleted it.
    let neighbour = shared_only(&url, "tiercache").await;
    neighbour
        .set("bus:shop", &0_u32, CacheStrategy::LongTerm)
        .await
        .unwrap();
    writer
        .set("price", &2_u32, CacheStrategy::LongTerm)
        .await
        .unwrap();
    seen(&reader, 2).await;
    neighbour.clear().await.unwrap();
    writer
        .set("price", &3_u32, CacheStrategy::LongTerm)
        .await
        .unwrap();
    seen(&reader, 3).await;

    let sent = writer.stats().bus.unwrap();
    assert_eq!((sent.published, sent.publish_errors), (3, 0), "{sent:?}");
    let heard = reader.stats().bus.unwrap();
    assert_eq!((heard.gaps, heard.l1_flushes), (0, 0), "{heard:?}");
}

/// Waits (at most 3 s, far past the bus's delivery time) until `reader` answers `price`.
async fn seen(reader: &Cache, price: u32) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while reader.get::<u32>("price").await.unwrap() != Some(price) {
        assert!(
            Instant::now() < deadline,
            "the reader's L1 never heard of the write of {price}: {:?}",
            reader.stats().bus
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
