//! The facade over a real Redis that the test starts itself: L2 hits with promotion, bad bytes,
//! and what happens when the server dies, freezes and comes back.
#![expect(clippy::unwrap_used, reason = "test helpers fail the test loudly")]

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use tiercache::{
    Cache, CacheStrategy, CircuitBreaker, CircuitState, EntryOptions, Error, FailSafe, MemoryTier,
    RedisOptions, RedisTier, TierOptions,
};
use tiercache_redis::fred::interfaces::KeysInterface;
use tiercache_testkit::RedisServer;

const COMMAND_TIMEOUT: Duration = Duration::from_millis(200);

async fn redis_tier(server: &RedisServer) -> RedisTier {
    let options = RedisOptions::from_url(&server.url())
        .unwrap()
        .command_timeout(COMMAND_TIMEOUT)
        .reconnect_policy(
            tiercache_redis::fred::types::config::ReconnectPolicy::new_constant(0, 50),
        );
    RedisTier::connect_with(options).await.unwrap()
}

async fn cache_over(redis: &RedisTier, cool_down: Duration) -> Cache {
    Cache::builder()
        .namespace("shop")
        .memory(MemoryTier::new(1_000))
        .tier_with(
            redis.clone(),
            TierOptions::new().circuit_breaker(Some(CircuitBreaker::new(3, cool_down))),
        )
        .build()
        .await
        .unwrap()
}

async fn load(value: u32) -> Result<u32, Error> {
    Ok(value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_l2_hit_is_promoted_and_the_next_read_is_an_l1_hit() {
    let server = RedisServer::start().unwrap();
    let redis = redis_tier(&server).await;
    let writer = cache_over(&redis, Duration::from_secs(5)).await;
    writer
        .set("user:1", &"ada".to_owned(), CacheStrategy::ShortTerm)
        .await
        .unwrap();
    let ttl: i64 = redis.pool().pttl("shop:user:1").await.unwrap();
    assert!(
        ttl > 299_000 && ttl <= 300_000,
        "stored under the namespace with its TTL: {ttl}"
    );

    let reader = cache_over(&redis, Duration::from_secs(5)).await;
    assert_eq!(
        reader.get::<String>("user:1").await.unwrap().as_deref(),
        Some("ada")
    );
    assert_eq!(
        reader.get::<String>("user:1").await.unwrap().as_deref(),
        Some("ada")
    );
    let stats = reader.stats();
    let (memory, l2) = (stats.memory.unwrap(), &stats.tiers[0]);
    assert_eq!((memory.hits, memory.misses, memory.promotions), (1, 1, 1));
    assert_eq!((l2.hits, l2.misses), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bytes_in_redis_are_a_counted_miss_and_get_overwritten() {
    let server = RedisServer::start().unwrap();
    let redis = redis_tier(&server).await;
    let cache = cache_over(&redis, Duration::from_secs(5)).await;
    let pool = redis.pool();
    let _: () = pool
        .set("shop:junk", "written by another program", None, None, false)
        .await
        .unwrap();
    let _: () = pool.pexpire("shop:junk", 60_000, None).await.unwrap();
    let _: () = pool
        .set("shop:old", "\u{1}{\"v\":1}", None, None, false)
        .await
        .unwrap();
    let _: () = pool.pexpire("shop:old", 60_000, None).await.unwrap();
    assert_eq!(server.command(&["RPUSH", "shop:list", "a"]).unwrap(), ":1");

    for key in ["junk", "old"] {
        assert_eq!(cache.get::<u32>(key).await.unwrap(), None, "{key}");
    }
    assert_eq!(
        cache.get::<u32>("list").await.unwrap(),
        None,
        "a non-string key is a miss"
    );
    assert_eq!(cache.stats().tiers[0].decode_errors, 2);

    for key in ["junk", "list"] {
        let value = cache
            .get_or_compute(key, CacheStrategy::ShortTerm, || load(7))
            .await
            .unwrap();
        assert_eq!(value, 7);
    }
    settled(&cache).await;
    let fresh = cache_over(&redis, Duration::from_secs(5)).await;
    assert_eq!(
        fresh.get::<u32>("junk").await.unwrap(),
        Some(7),
        "overwritten with a good value"
    );
    assert_eq!(
        fresh.get::<u32>("list").await.unwrap(),
        Some(7),
        "a non-string key is replaced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_dead_the_cache_answers_from_l1_and_the_loader_then_recovers() {
    let mut server = RedisServer::start().unwrap();
    let redis = redis_tier(&server).await;
    let cache = cache_over(&redis, Duration::from_millis(300)).await;
    cache
        .set("warm", &1u32, CacheStrategy::ShortTerm)
        .await
        .unwrap();

    server.stop();
    // Reads: L1 answers what it has, the loader what it does not, and no error reaches the caller.
    for _ in 0..5 {
        let warm = cache
            .get_or_compute("warm", CacheStrategy::ShortTerm, || load(0))
            .await;
        assert_eq!(warm.unwrap(), 1);
        let cold = cache
            .get_or_compute("cold", CacheStrategy::ShortTerm, || load(2))
            .await;
        assert_eq!(cold.unwrap(), 2);
        cache.invalidate("cold").await.ok();
    }
    // Writes: L1 keeps the value; the shared-tier failure is reported, naming the tier.
    let err = cache
        .set("written", &3u32, CacheStrategy::ShortTerm)
        .await
        .unwrap_err();
    assert_eq!(err.tier(), Some("redis"), "{err}");
    assert!(err.is_retryable());
    assert_eq!(cache.get::<u32>("written").await.unwrap(), Some(3));
    let l2 = cache.stats().tiers[0].clone();
    assert!(l2.errors >= 3, "{l2:?}");
    assert_eq!(l2.circuit, CircuitState::Open);
    assert!(
        l2.skipped > 0,
        "once open, the breaker skips the dead tier: {l2:?}"
    );

    // Redis comes back: the same cache writes and reads through it again, no restart.
    server.restart().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while cache
        .set("back", &4u32, CacheStrategy::ShortTerm)
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "the cache did not recover after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(cache.stats().tiers[0].circuit, CircuitState::Closed);
    let other = cache_over(&redis, Duration::from_millis(300)).await;
    assert_eq!(other.get::<u32>("back").await.unwrap(), Some(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_costs_at_most_the_timeout_and_then_nothing() {
    let server = RedisServer::start().unwrap();
    let redis = redis_tier(&server).await;
    let cache = cache_over(&redis, Duration::from_secs(30)).await;
    cache.get::<u32>("prime").await.unwrap();

    server.pause().unwrap();
    let slow = Instant::now();
    let value = cache
        .get_or_compute("k", CacheStrategy::ShortTerm, || load(5))
        .await
        .unwrap();
    assert_eq!(value, 5);
    // One read and one write, each bounded by the command timeout.
    assert!(
        slow.elapsed() < COMMAND_TIMEOUT * 2 + Duration::from_millis(300),
        "{:?}",
        slow.elapsed()
    );
    for i in 0..3 {
        cache.get::<u32>(&format!("miss{i}")).await.unwrap();
    }
    assert_eq!(cache.stats().tiers[0].circuit, CircuitState::Open);

    let fast = Instant::now();
    for i in 0..20 {
        let key = format!("later{i}");
        assert_eq!(
            cache
                .get_or_compute(&key, CacheStrategy::ShortTerm, move || load(i))
                .await
                .unwrap(),
            i
        );
    }
    assert!(
        fast.elapsed() < COMMAND_TIMEOUT,
        "with the breaker open, calls skip the frozen tier: {:?}",
        fast.elapsed()
    );
    server.resume().unwrap();
}

/// Streams that share the tier's pool keep the command timeout on a frozen server: the tier's
/// pool has no per-command timeout of its own (the tier times its calls), so the streams adapter
/// sets one on each of its commands.
#[cfg(feature = "streams")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_on_the_tiers_pool_answer_within_the_timeout_on_a_frozen_redis() {
    use tiercache::streams::{StreamError, Streams};

    let server = RedisServer::start().unwrap();
    let redis = redis_tier(&server).await;
    let changes = Streams::from_tier(&redis).typed::<String>("price-changes");
    changes.publish(&"before".to_owned()).await.unwrap();

    server.pause().unwrap();
    let started = Instant::now();
    let published = tokio::time::timeout(
        Duration::from_secs(5),
        changes.publish(&"frozen".to_owned()),
    )
    .await;
    let waited = started.elapsed();
    server.resume().unwrap();
    let Ok(result) = published else {
        panic!("XADD on a frozen Redis did not answer within 5 s");
    };
    assert!(
        matches!(result, Err(StreamError::Timeout { .. })),
        "{result:?}"
    );
    assert!(
        waited >= COMMAND_TIMEOUT && waited < COMMAND_TIMEOUT + Duration::from_millis(300),
        "{waited:?}"
    );
}

/// The streams adapter shares the Redis tier's pool and options, and a consumer group's event
/// can drive an invalidation: the pattern the adapter is for.
#[cfg(feature = "streams")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_share_the_tier_and_drive_invalidation() {
    use futures_util::StreamExt;
    use tiercache::streams::{GroupStart, Streams};

    let server = RedisServer::start().unwrap();
    let redis = redis_tier(&server).await;
    let cache = cache_over(&redis, Duration::from_secs(5)).await;
    cache
        .set("price:lamp", &4_900_u64, CacheStrategy::LongTerm)
        .await
        .unwrap();

    let streams = Streams::from_tier(&redis);
    let changes = streams.typed::<String>("price-changes");
    let worker = changes.group("invalidator", "w1").await.unwrap();
    worker.create(GroupStart::New).await.unwrap();
    changes.publish(&"price:lamp".to_owned()).await.unwrap();

    let mut events = Box::pin(worker.clone().events());
    let event = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    cache.invalidate(&event.value).await.unwrap();
    worker.ack(&[event.id]).await.unwrap();
    assert_eq!(cache.get::<u64>("price:lamp").await.unwrap(), None);
    assert_eq!(worker.pending().await.unwrap().count, 0);
}

/// Batches on Redis: `set_many` is one pipelined batch, and `get_many` of keys that missed L1
/// is a single MGET.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_many_is_one_mget_on_redis() {
    let server = RedisServer::start().unwrap();
    let redis = redis_tier(&server).await;
    let writer = cache_over(&redis, Duration::from_secs(5)).await;
    let entries: Vec<(String, u32)> = (0..50).map(|i| (format!("n:{i}"), i)).collect();
    let refs: Vec<(&str, u32)> = entries.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    writer
        .set_many(&refs, CacheStrategy::LongTerm)
        .await
        .unwrap();

    let mget_calls = || {
        let stats = server.bulk_command(&["INFO", "commandstats"]).unwrap();
        stats
            .lines()
            .find_map(|line| line.strip_prefix("cmdstat_mget:calls="))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |calls| calls.parse::<u64>().unwrap())
    };
    let before = mget_calls();
    let reader = cache_over(&redis, Duration::from_secs(5)).await;
    let mut keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
    keys.push("n:missing");
    let found = reader.get_many::<u32>(&keys).await.unwrap();
    let mut expected: Vec<Option<u32>> = (0..50).map(Some).collect();
    expected.push(None);
    assert_eq!(found, expected);
    assert_eq!(mget_calls() - before, 1, "one MGET for 51 keys");
    assert_eq!(reader.stats().tiers[0].hits, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_during_a_load_fail_safe_answers_with_the_stale_value() {
    let server = RedisServer::start().unwrap();
    let redis = redis_tier(&server).await;
    let server = Arc::new(Mutex::new(server));
    let with_fail_safe = |cache: tiercache::CacheBuilder| {
        cache
            .namespace("shop")
            .memory(MemoryTier::new(1_000))
            .tier(redis.clone())
            .fail_safe(FailSafe::new(Duration::from_secs(60)).throttle(Duration::from_secs(5)))
    };
    let warm = with_fail_safe(Cache::builder()).build().await.unwrap();
    let short = EntryOptions::new(CacheStrategy::Custom(Duration::from_millis(150)));
    warm.set("price", &100_u32, short.clone()).await.unwrap();
    let ttl: i64 = redis.pool().pttl("shop:price").await.unwrap();
    assert!(ttl > 59_000, "Redis keeps the stale window: {ttl} ms");
    tokio::time::sleep(Duration::from_millis(250)).await;

    // A fresh instance: the stale copy comes from Redis.
    let cold = with_fail_safe(Cache::builder()).build().await.unwrap();
    let from_redis = cold
        .get_or_compute("price", short.clone(), || async {
            Err::<u32, _>(std::io::Error::other("database down"))
        })
        .await
        .unwrap();
    assert_eq!(from_redis, 100);

    // The warm instance's load loses Redis and its source at once.
    let calls = Arc::new(AtomicUsize::new(0));
    let killer = {
        let (server, calls) = (Arc::clone(&server), Arc::clone(&calls));
        move || async move {
            calls.fetch_add(1, Ordering::SeqCst);
            server.lock().unwrap().stop();
            Err::<u32, _>(std::io::Error::other("database down"))
        }
    };
    let answer = warm
        .get_or_compute("price", short.clone(), killer)
        .await
        .unwrap();
    assert_eq!(answer, 100, "fail-safe answers with Redis gone");
    assert!(warm.stats().stale_served >= 1);

    // Throttled: no new load while Redis and the source are down.
    for _ in 0..3 {
        let again = warm
            .get_or_compute("price", short.clone(), || async {
                Err::<u32, _>(std::io::Error::other("must not be called"))
            })
            .await
            .unwrap();
        assert_eq!(again, 100);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_load_over_redis_answers_stale_at_the_soft_timeout_and_fills_redis_later() {
    let server = RedisServer::start().unwrap();
    let redis = redis_tier(&server).await;
    // Redis alone, no L1: the fallback and the background fill both go through Redis.
    let cache = Cache::builder()
        .namespace("shop")
        .tier(redis.clone())
        .build()
        .await
        .unwrap();
    let options = EntryOptions::new(CacheStrategy::Custom(Duration::from_millis(150)))
        .fail_safe(FailSafe::new(Duration::from_secs(60)))
        .soft_timeout(Duration::from_millis(50))
        .hard_timeout(Duration::from_secs(5));
    cache.set("price", &100_u32, options.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;

    let started = Instant::now();
    let answer = cache
        .get_or_compute("price", options, || async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok::<_, Error>(120_u32)
        })
        .await
        .unwrap();
    assert_eq!(answer, 100);
    assert!(started.elapsed() < Duration::from_millis(250));
    assert_eq!(cache.background_loads(), 1);

    let deadline = Instant::now() + Duration::from_secs(5);
    while cache.background_loads() > 0 {
        assert!(Instant::now() < deadline, "the background load did not end");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(cache.get::<u32>("price").await.unwrap(), Some(120));
    assert_eq!(cache.loads_in_flight(), 0);
}

/// Waits for the cache's background work (fills of the tiers below L1) to end.
async fn settled(cache: &Cache) {
    while cache.background_loads() > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

/// A server that refuses writes (out of memory under `noeviction`) is still reachable: the
/// refusals come back as errors naming the tier, but they do not open the circuit breaker, so
/// reads keep being served from Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_commands_do_not_open_the_breaker() {
    let server = RedisServer::start().unwrap();
    let redis = redis_tier(&server).await;
    let cache = cache_over(&redis, Duration::from_secs(30)).await;
    // Written by another instance: this one's L1 does not hold it.
    let other = cache_over(&redis, Duration::from_secs(30)).await;
    other
        .set("kept", &1_u32, CacheStrategy::LongTerm)
        .await
        .unwrap();
    server
        .command(&["CONFIG", "SET", "maxmemory-policy", "noeviction"])
        .unwrap();
    server
        .command(&["CONFIG", "SET", "maxmemory", "1"])
        .unwrap();
    for i in 0..10 {
        let err = cache
            .set(&format!("new:{i}"), &i, CacheStrategy::LongTerm)
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Refused { ref tier, .. } if tier == "redis"),
            "{err:?}"
        );
        assert!(err.to_string().contains("OOM"), "{err}");
    }
    assert_eq!(
        cache.get::<u32>("kept").await.unwrap(),
        Some(1),
        "reads still go to Redis"
    );
    let stats = cache.stats();
    assert_eq!(stats.tiers[0].circuit, CircuitState::Closed, "{stats:?}");
    assert_eq!(stats.tiers[0].circuit_opens, 0);
    assert!(stats.tiers[0].errors >= 10, "refusals are counted");
}
