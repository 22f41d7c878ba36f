//! The API a Rust team expects beside get/set: `health`, `invalidate_many`, the loader's own
//! error type, adaptive entry options, conditional refresh and the event stream; against a real
//! Redis where a tier or the bus is involved.
#![expect(clippy::unwrap_used, reason = "test helpers fail the test loudly")]

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use tiercache::{
    Bus, Cache, CacheEvent, CacheStrategy, EVENT_BUFFER, EntryOptions, Error, FailSafe, MemoryTier,
    MokaTier, PartKind, PartStatus, RedisBus, RedisBusOptions, RedisOptions, RedisTier, Refresh,
};
use tiercache_testkit::RedisServer;

fn options_at(url: &str) -> RedisOptions {
    options_with(url, Duration::from_millis(300))
}

fn options_with(url: &str, timeout: Duration) -> RedisOptions {
    RedisOptions::from_url(url)
        .unwrap()
        .command_timeout(timeout)
        .reconnect_policy(
            tiercache::redis::fred::types::config::ReconnectPolicy::new_constant(0, 50),
        )
}

async fn instance(url: &str, namespace: &str) -> Cache {
    instance_with(url, namespace, Duration::from_millis(300)).await
}

async fn instance_with(url: &str, namespace: &str, timeout: Duration) -> Cache {
    let redis = RedisTier::connect_with(options_with(url, timeout))
        .await
        .unwrap();
    let bus: Arc<dyn Bus> = Arc::new(
        RedisBus::connect_with(RedisBusOptions::new(options_at(url)))
            .await
            .unwrap(),
    );
    Cache::builder()
        .namespace(namespace)
        .memory(MemoryTier::new(10_000))
        .tier(redis)
        .bus(bus)
        .build()
        .await
        .unwrap()
}

/// What Redis holds for `key`, read by a cache with no L1 and no bus.
async fn in_redis(url: &str, namespace: &str, key: &str) -> Option<u64> {
    let redis = RedisTier::connect_with(options_at(url)).await.unwrap();
    let probe = Cache::builder()
        .namespace(namespace)
        .tier(redis)
        .build()
        .await
        .unwrap();
    probe.get::<u64>(key).await.unwrap()
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(5);
    while !check().await {
        assert!(Instant::now() < until, "not within 5 s: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_each_part_and_sees_redis_go_down() {
    let mut server = RedisServer::start().unwrap();
    let cache = instance(&server.url(), "health").await;
    let health = cache.health().await;
    assert_eq!(health.status(), PartStatus::Up, "{health:?}");
    let kinds: Vec<PartKind> = health.parts.iter().map(|part| part.kind).collect();
    assert_eq!(kinds, [PartKind::Memory, PartKind::Tier, PartKind::Bus]);
    assert!(health.parts[1].latency.is_some());
    // A probe is not a read of the user's: the stats do not move.
    assert_eq!(cache.stats().tiers[0].misses, 0);

    server.stop();
    eventually("the tier and the bus reported down", async || {
        let health = cache.health().await;
        health.parts[1].status == PartStatus::Down && health.parts[2].status == PartStatus::Down
    })
    .await;
    let health = cache.health().await;
    assert_eq!(health.status(), PartStatus::Down);
    assert!(!health.parts[1].detail.is_empty(), "{health:?}");
    assert_eq!(health.parts[0].status, PartStatus::Up, "L1 still serves");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_tier_is_reported_down_within_the_probe_timeout() {
    let server = RedisServer::start().unwrap();
    let proxy =
        tiercache_testkit::Proxy::start(format!("127.0.0.1:{}", server.port()).parse().unwrap())
            .await
            .unwrap();
    let redis = RedisTier::connect_with(
        RedisOptions::from_url(&proxy.url())
            .unwrap()
            .command_timeout(Duration::from_secs(30)),
    )
    .await
    .unwrap();
    let cache = Cache::builder().tier(redis).build().await.unwrap();
    proxy.blackhole();
    let started = Instant::now();
    let health = cache.health().await;
    let took = started.elapsed();
    assert_eq!(health.parts[0].status, PartStatus::Down, "{health:?}");
    assert!(
        took < tiercache::HEALTH_PROBE_TIMEOUT + Duration::from_millis(500),
        "the probe waited {took:?}"
    );
    proxy.heal();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_many_removes_every_key_everywhere_with_one_message() {
    let server = RedisServer::start().unwrap();
    let url = server.url();
    let (a, b) = (instance(&url, "many").await, instance(&url, "many").await);
    for (key, value) in [("k1", 1u64), ("k2", 2), ("k3", 3)] {
        a.set(key, &value, CacheStrategy::LongTerm).await.unwrap();
        assert_eq!(b.get::<u64>(key).await.unwrap(), Some(value));
    }
    let published = a.stats().bus.unwrap().published;
    a.invalidate_many(&["k1", "k2"]).await.unwrap();
    assert_eq!(a.stats().bus.unwrap().published, published + 1);
    for key in ["k1", "k2"] {
        assert_eq!(a.get::<u64>(key).await.unwrap(), None);
        assert_eq!(in_redis(&url, "many", key).await, None);
        eventually("B dropped the key from its L1", async || {
            b.get::<u64>(key).await.unwrap().is_none()
        })
        .await;
    }
    assert_eq!(b.get::<u64>("k3").await.unwrap(), Some(3));
    assert!(matches!(
        a.invalidate_many(&["fine", ""]).await,
        Err(Error::InvalidKey { .. })
    ));
    a.invalidate_many(&[]).await.unwrap();
}

#[derive(Debug, thiserror::Error)]
#[error("row {0} is locked")]
struct Locked(u64);

#[tokio::test]
async fn a_loader_error_comes_back_as_its_own_type() {
    let cache = Cache::builder()
        .memory(MemoryTier::new(100))
        .build()
        .await
        .unwrap();
    let err = cache
        .get_or_compute("row:9", CacheStrategy::ShortTerm, || async {
            Err::<u64, _>(Locked(9))
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.loader_source::<Locked>().map(|locked| locked.0),
        Some(9)
    );
    assert!(err.loader_source::<std::io::Error>().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loader_chooses_ttl_and_tags_and_they_hold_in_every_tier() {
    let server = RedisServer::start().unwrap();
    let url = server.url();
    let (a, b) = (
        instance(&url, "adaptive").await,
        instance(&url, "adaptive").await,
    );
    // A TTL chosen by the loader, shorter than the call's.
    let short: u64 = a
        .get_or_compute_with("volatile", CacheStrategy::LongTerm, || async {
            let stored = EntryOptions::new(CacheStrategy::Custom(Duration::from_millis(300)));
            Ok::<_, std::io::Error>((5u64, stored))
        })
        .await
        .unwrap();
    assert_eq!(short, 5);
    assert_eq!(in_redis(&url, "adaptive", "volatile").await, Some(5));
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(a.get::<u64>("volatile").await.unwrap(), None);
    assert_eq!(in_redis(&url, "adaptive", "volatile").await, None);

    // Tags chosen by the loader: a tag invalidation on another instance finds the value in
    // Redis and in A's L1.
    let _: u64 = a
        .get_or_compute_with("product:1", CacheStrategy::LongTerm, || async {
            let stored = EntryOptions::new(CacheStrategy::LongTerm).tags(["category:garden"]);
            Ok::<_, std::io::Error>((10u64, stored))
        })
        .await
        .unwrap();
    b.invalidate_tag("category:garden").await.unwrap();
    assert_eq!(in_redis(&url, "adaptive", "product:1").await, None);
    eventually("A dropped the tagged value", async || {
        a.get::<u64>("product:1").await.unwrap().is_none()
    })
    .await;

    // An invalid tag from the loader: an error, and nothing stored.
    let err = a
        .get_or_compute_with("bad", CacheStrategy::LongTerm, || async {
            let stored = EntryOptions::new(CacheStrategy::LongTerm).tags([""]);
            Ok::<_, std::io::Error>((1u64, stored))
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidTag { .. }), "{err}");
    assert_eq!(a.get::<u64>("bad").await.unwrap(), None);
    assert_eq!(in_redis(&url, "adaptive", "bad").await, None);
}

fn conditional(ttl_ms: u64) -> EntryOptions {
    EntryOptions::new(CacheStrategy::Custom(Duration::from_millis(ttl_ms)))
        .fail_safe(FailSafe::new(Duration::from_secs(60)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_modified_keeps_the_held_copy_for_another_ttl() {
    let server = RedisServer::start().unwrap();
    let url = server.url();
    let cache = instance(&url, "conditional").await;
    cache.set("page", &1u64, conditional(200)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;

    let handed = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&handed);
    let value: u64 = cache
        .get_or_refresh(
            "page",
            conditional(2_000),
            move |held: Option<Arc<u64>>| async move {
                seen.store(usize::try_from(*held.unwrap()).unwrap(), Ordering::SeqCst);
                Ok::<_, std::io::Error>(Refresh::NotModified)
            },
        )
        .await
        .unwrap();
    assert_eq!((value, handed.load(Ordering::SeqCst)), (1, 1));
    // Stored again with the new TTL: fresh in L1 and in Redis well past the old one.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(cache.get::<u64>("page").await.unwrap(), Some(1));
    assert_eq!(in_redis(&url, "conditional", "page").await, Some(1));

    // Modified replaces it.
    tokio::time::sleep(Duration::from_millis(1_700)).await;
    let value: u64 = cache
        .get_or_refresh(
            "page",
            conditional(2_000),
            |_held: Option<Arc<u64>>| async { Ok::<_, std::io::Error>(Refresh::Modified(2)) },
        )
        .await
        .unwrap();
    assert_eq!(value, 2);
    assert_eq!(in_redis(&url, "conditional", "page").await, Some(2));

    // Nothing held: the loader is handed `None`, and "not modified" is then an error.
    let err = cache
        .get_or_refresh(
            "absent",
            conditional(2_000),
            |held: Option<Arc<u64>>| async move {
                assert!(held.is_none());
                Ok::<_, std::io::Error>(Refresh::NotModified)
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Loader { .. }), "{err}");
    assert_eq!(cache.get::<u64>("absent").await.unwrap(), None);
}

/// A write that lands while a conditional refresh asks the source must win over the kept copy
/// the refresh stores again, in L1 and in Redis, whatever the timing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_during_a_not_modified_refresh_wins() {
    let server = RedisServer::start().unwrap();
    let url = server.url();
    let (reader, writer) = (
        instance(&url, "conditional-race").await,
        instance(&url, "conditional-race").await,
    );
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut jitter = move |below: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        Duration::from_micros(seed % below)
    };
    for round in 0..200u64 {
        let key = format!("item:{round}");
        reader.set(&key, &1u64, conditional(1)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(3)).await;
        let (ask, answer, write_at) = (jitter(2_000), jitter(2_000), jitter(3_000));
        let refresh = {
            let (reader, key) = (reader.clone(), key.clone());
            tokio::spawn(async move {
                reader
                    .get_or_refresh(
                        &key,
                        conditional(60_000),
                        move |_held: Option<Arc<u64>>| async move {
                            tokio::time::sleep(ask).await;
                            tokio::time::sleep(answer).await;
                            Ok::<_, std::io::Error>(Refresh::NotModified)
                        },
                    )
                    .await
                    .unwrap()
            })
        };
        tokio::time::sleep(write_at).await;
        writer
            .set(&key, &2u64, CacheStrategy::LongTerm)
            .await
            .unwrap();
        let answered = refresh.await.unwrap();
        assert!(answered == 1 || answered == 2);
        // After both returned and the writer's message arrived: only the write is anywhere.
        eventually("the reader sees the write", async || {
            reader.get::<u64>(&key).await.unwrap() == Some(2)
        })
        .await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(
            reader.get::<u64>(&key).await.unwrap(),
            Some(2),
            "round {round}: L1"
        );
        assert_eq!(
            in_redis(&url, "conditional-race", &key).await,
            Some(2),
            "round {round}: Redis"
        );
    }
}

#[tokio::test]
async fn events_tell_what_happened_and_a_slow_subscriber_never_blocks() {
    let cache = Cache::builder()
        .memory(MemoryTier::new(10_000))
        .tier(MokaTier::new(10_000))
        .build()
        .await
        .unwrap();
    // Nobody listens: nothing is kept for later subscribers.
    cache.get::<u64>("before").await.unwrap();
    let mut events = cache.events();
    assert_eq!(events.try_recv(), None);

    cache.get::<u64>("k").await.unwrap();
    let _: u64 = cache
        .get_or_compute("k", CacheStrategy::ShortTerm, || async {
            Ok::<_, std::io::Error>(1)
        })
        .await
        .unwrap();
    cache.get::<u64>("k").await.unwrap();
    let failed = cache
        .get_or_compute("broken", CacheStrategy::ShortTerm, || async {
            Err::<u64, _>(std::io::Error::other("down"))
        })
        .await;
    assert!(failed.is_err());
    let mut seen = Vec::new();
    while let Some(event) = events.try_recv() {
        seen.push(event);
    }
    let key = |key: &str| key.to_owned();
    assert_eq!(seen.len(), 6, "{seen:?}");
    assert_eq!(seen[0], CacheEvent::Miss { key: key("k") });
    assert_eq!(seen[1], CacheEvent::Miss { key: key("k") });
    assert!(matches!(&seen[2], CacheEvent::Loaded { key, .. } if key == "k"));
    assert_eq!(seen[3], CacheEvent::Hit { key: key("k") });
    assert_eq!(seen[4], CacheEvent::Miss { key: key("broken") });
    assert_eq!(seen[5], CacheEvent::LoadFailed { key: key("broken") });

    // A subscriber that never reads: the cache goes on at full speed, the subscriber loses
    // the oldest events and is told how many.
    let mut slow = cache.events();
    let reads = EVENT_BUFFER * 3;
    let started = Instant::now();
    for _ in 0..reads {
        cache.get::<u64>("k").await.unwrap();
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    let mut kept = 0;
    while slow.try_recv().is_some() {
        kept += 1;
    }
    assert_eq!(kept, EVENT_BUFFER);
    assert_eq!(slow.missed(), u64::try_from(reads - EVENT_BUFFER).unwrap());
    drop(events);
    drop(cache);
    assert_eq!(slow.recv().await, None, "the stream ends with the cache");
}

/// A caller that waited on another's refresh, then led its own after that one was cancelled,
/// must not hand the loader the copy it read before an invalidation that completed meanwhile:
/// "not modified" would put that copy back, in L1 and in Redis, after the invalidation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_read_before_a_finished_invalidation_is_not_offered_to_a_refresh() {
    let server = RedisServer::start().unwrap();
    let url = server.url();
    let cache = instance(&url, "conditional-relead").await;
    cache.set("k", &1u64, conditional(30)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;

    // The first refresh hangs until it is cancelled.
    let hanging = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .get_or_refresh("k", conditional(60_000), |_held: Option<Arc<u64>>| async {
                    std::future::pending::<()>().await;
                    Ok::<_, std::io::Error>(Refresh::Modified(0u64))
                })
                .await
        })
    };
    eventually("the first refresh runs", async || {
        cache.loads_in_flight() == 1
    })
    .await;
    // The second reads the stale copy (1) from L1 and waits for the first.
    let waiting = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .get_or_refresh(
                    "k",
                    conditional(60_000),
                    |held: Option<Arc<u64>>| async move {
                        Ok::<_, std::io::Error>(match held {
                            Some(_) => Refresh::NotModified,
                            None => Refresh::Modified(3u64),
                        })
                    },
                )
                .await
        })
    };
    eventually("the second waits", async || cache.stats().coalesced == 1).await;
    cache.invalidate("k").await.unwrap();
    hanging.abort();
    let answered = waiting.await.unwrap().unwrap();
    assert!(answered == 1 || answered == 3, "{answered}");
    // After the invalidation returned, the copy read before it is in no tier.
    assert_eq!(cache.get::<u64>("k").await.unwrap(), Some(3), "L1");
    assert_eq!(
        in_redis(&url, "conditional-relead", "k").await,
        Some(3),
        "Redis"
    );
}

/// A copy kept by "not modified" keeps the tags it was stored with, so a tag invalidation still
/// finds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_modified_keeps_the_copys_tags() {
    let server = RedisServer::start().unwrap();
    let url = server.url();
    let cache = instance(&url, "conditional-tags").await;
    let _: u64 = cache
        .get_or_compute_with("p", conditional(30), || async {
            Ok::<_, std::io::Error>((1u64, conditional(30).tags(["category:garden"])))
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;
    let kept: u64 = cache
        .get_or_refresh(
            "p",
            conditional(60_000),
            |held: Option<Arc<u64>>| async move {
                assert!(held.is_some());
                Ok::<_, std::io::Error>(Refresh::NotModified)
            },
        )
        .await
        .unwrap();
    assert_eq!(kept, 1);
    cache.invalidate_tag("category:garden").await.unwrap();
    assert_eq!(cache.get::<u64>("p").await.unwrap(), None, "L1");
    assert_eq!(in_redis(&url, "conditional-tags", "p").await, None, "Redis");
}

/// A batch of more keys than one bus message can name (65,535) still reaches every instance,
/// and the bus keeps working after it (the message is split, never stuck to be resent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_many_and_set_many_of_70k_keys_reach_the_other_instance() {
    let server = RedisServer::start().unwrap();
    let url = server.url();
    let slow = Duration::from_secs(10);
    let (a, b) = (
        instance_with(&url, "huge", slow).await,
        instance_with(&url, "huge", slow).await,
    );
    let names: Vec<String> = (0..70_000).map(|i| format!("item:{i:05}")).collect();
    let keys: Vec<&str> = names.iter().map(String::as_str).collect();
    let entries: Vec<(&str, u64)> = keys.iter().map(|key| (*key, 1u64)).collect();
    a.set_many(&entries, CacheStrategy::LongTerm).await.unwrap();
    for key in [keys[0], keys[69_999]] {
        assert_eq!(b.get::<u64>(key).await.unwrap(), Some(1));
    }
    let entries: Vec<(&str, u64)> = keys.iter().map(|key| (*key, 2u64)).collect();
    a.set_many(&entries, CacheStrategy::LongTerm).await.unwrap();
    for key in [keys[0], keys[69_999]] {
        eventually("B reads the second set_many", async || {
            b.get::<u64>(key).await.unwrap() == Some(2)
        })
        .await;
    }
    a.invalidate_many(&keys).await.unwrap();
    for key in [keys[0], keys[35_000], keys[69_999]] {
        eventually("B dropped the key", async || {
            b.get::<u64>(key).await.unwrap().is_none()
        })
        .await;
    }
    // The bus is not stuck behind an unsendable message: a plain invalidation still arrives.
    a.set("after", &7u64, CacheStrategy::LongTerm)
        .await
        .unwrap();
    assert_eq!(b.get::<u64>("after").await.unwrap(), Some(7));
    a.invalidate("after").await.unwrap();
    eventually("B dropped the last key", async || {
        b.get::<u64>("after").await.unwrap().is_none()
    })
    .await;
    assert_eq!(a.stats().bus.unwrap().publish_errors, 0);
}
