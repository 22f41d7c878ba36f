//! Leases against a real Redis the test starts: a fill never overwrites a newer write (the stale
//! set), one loader per key across instances, and what a dead holder, a restarted or a frozen
//! server leave.
#![expect(clippy::unwrap_used, reason = "test helpers fail the test loudly")]

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use tiercache::{
    Bus, Cache, CacheStrategy, EntryOptions, Error, MemoryTier, RedisBus, RedisBusOptions,
    RedisOptions, RedisTier,
};
use tiercache_redis::fred::types::config::ReconnectPolicy;
use tiercache_testkit::{RedisCluster, RedisServer};

fn options(server: &RedisServer, timeout: Duration) -> RedisOptions {
    options_at(&server.url(), timeout)
}

fn options_at(url: &str, timeout: Duration) -> RedisOptions {
    RedisOptions::from_url(url)
        .unwrap()
        .command_timeout(timeout)
        .reconnect_policy(ReconnectPolicy::new_constant(0, 50))
}

/// An instance of the service: L1, Redis, the Pub/Sub bus; its own connections.
async fn instance(server: &RedisServer, namespace: &str) -> Cache {
    instance_with(server, namespace, |builder| builder).await
}

async fn instance_with(
    server: &RedisServer,
    namespace: &str,
    tune: impl FnOnce(tiercache::CacheBuilder) -> tiercache::CacheBuilder,
) -> Cache {
    instance_at(&server.url(), namespace, tune).await
}

async fn instance_at(
    url: &str,
    namespace: &str,
    tune: impl FnOnce(tiercache::CacheBuilder) -> tiercache::CacheBuilder,
) -> Cache {
    let timeout = Duration::from_millis(500);
    let redis = RedisTier::connect_with(options_at(url, timeout))
        .await
        .unwrap();
    let bus: Arc<dyn Bus> = Arc::new(
        RedisBus::connect_with(RedisBusOptions::new(options_at(url, timeout)))
            .await
            .unwrap(),
    );
    let builder = Cache::builder()
        .namespace(namespace)
        .memory(MemoryTier::new(10_000))
        .tier(redis)
        .bus(bus);
    tune(builder).build().await.unwrap()
}

/// What Redis itself holds for `key`: read by a cache with no L1 and no bus.
async fn in_redis(server: &RedisServer, namespace: &str, key: &str) -> Option<u64> {
    in_redis_at(&server.url(), namespace, key).await
}

async fn in_redis_at(url: &str, namespace: &str, key: &str) -> Option<u64> {
    let redis = RedisTier::connect_with(options_at(url, Duration::from_secs(2)))
        .await
        .unwrap();
    let probe = Cache::builder()
        .namespace(namespace)
        .tier(redis)
        .build()
        .await
        .unwrap();
    probe.get::<u64>(key).await.unwrap()
}

/// A small seeded generator for timing jitter (xorshift64*).
struct Jitter(u64);

impl Jitter {
    fn seeded() -> Self {
        let seed = std::env::var("TIERCACHE_RACE_SEED")
            .ok()
            .and_then(|seed| seed.parse().ok())
            .unwrap_or(0x5eed_1ea5e);
        Self(seed | 1)
    }

    fn micros(&mut self, below: u64) -> Duration {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        Duration::from_micros(self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % below)
    }
}

/// Waits until no background work of `cache` runs (fills into Redis finish there).
async fn settled(cache: &Cache) {
    let until = Instant::now() + Duration::from_secs(2);
    while cache.background_loads() > 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Reads `key` on `cache` until it no longer answers `stale` (the bus carries the writer's
/// message), for at most a second; the last answer.
async fn after_propagation(cache: &Cache, key: &str, stale: u64) -> Option<u64> {
    let until = Instant::now() + Duration::from_secs(1);
    loop {
        let seen = cache.get::<u64>(key).await.unwrap();
        if seen != Some(stale) || Instant::now() >= until {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[derive(Debug, Clone, Copy)]
enum Write {
    Set,
    Invalidate,
}

/// The stale set, tried as a user would: instance A's loader reads version 1 of the source and
/// takes a while to return; meanwhile instance B (cache-aside) writes version 2 to the source,
/// then sets or invalidates the key. Whatever the timing, once both are done and B's message
/// has arrived, version 1 is in no tier and in no L1.
async fn stale_set_race(url: &str, write: Write, iterations: usize, write_within: Duration) {
    // Each run its own keys, so runs on one server do not see each other's values.
    let namespace = match write {
        Write::Set => "race-set",
        Write::Invalidate => "race-invalidate",
    };
    let reader = instance_at(url, namespace, |builder| builder).await;
    let writer = instance_at(url, namespace, |builder| builder).await;
    let mut jitter = Jitter::seeded();
    let mut source_wins = 0;
    for round in 0..iterations {
        let key = format!("item:{round}");
        let source = Arc::new(AtomicU64::new(1));
        let write_within = u64::try_from(write_within.as_micros()).unwrap();
        let (read_delay, load_delay) = (jitter.micros(write_within), jitter.micros(3_000));
        let write_delay = jitter.micros(write_within);
        let load = {
            let (reader, source, key) = (reader.clone(), Arc::clone(&source), key.clone());
            tokio::spawn(async move {
                reader
                    .get_or_compute(&key, CacheStrategy::ShortTerm, move || async move {
                        // The query runs some time into the load, then its answer takes a while.
                        tokio::time::sleep(read_delay).await;
                        let seen = source.load(Ordering::SeqCst);
                        tokio::time::sleep(load_delay).await;
                        Ok::<_, Error>(seen)
                    })
                    .await
                    .unwrap()
            })
        };
        tokio::time::sleep(write_delay).await;
        source.store(2, Ordering::SeqCst);
        match write {
            Write::Set => writer
                .set(&key, &2_u64, CacheStrategy::ShortTerm)
                .await
                .unwrap(),
            Write::Invalidate => writer.invalidate(&key).await.unwrap(),
        }
        let loaded = load.await.unwrap();
        if loaded == 2 {
            source_wins += 1;
        }
        settled(&reader).await;
        let stored = in_redis_at(url, namespace, &key).await;
        assert_ne!(
            stored,
            Some(1),
            "round {round} ({write:?}, read {read_delay:?}, load {load_delay:?}, write \
             {write_delay:?}): Redis holds \
             the version the writer replaced"
        );
        for (name, cache) in [("reader", &reader), ("writer", &writer)] {
            let seen = after_propagation(cache, &key, 1).await;
            assert_ne!(
                seen,
                Some(1),
                "round {round} ({write:?}): the {name} still serves the replaced version"
            );
        }
    }
    // Both orders happened: the race was really run, and leases refused the stale fills.
    assert!(
        source_wins > 0 && source_wins < iterations,
        "{source_wins} of {iterations} loads saw the new version"
    );
    assert!(
        reader.stats().fills_revoked > 0,
        "some fills raced the write and were refused by their lease"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_never_overwrites_a_newer_set() {
    let server = RedisServer::start().unwrap();
    stale_set_race(&server.url(), Write::Set, 500, Duration::from_millis(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_never_overwrites_a_newer_invalidation() {
    let server = RedisServer::start().unwrap();
    stale_set_race(
        &server.url(),
        Write::Invalidate,
        500,
        Duration::from_millis(3),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_never_overwrites_a_newer_write_on_a_cluster() {
    let cluster = RedisCluster::start().unwrap();
    // Round trips to a cluster take longer: the write comes within a wider window, so that it
    // lands before, during and after the load.
    let within = Duration::from_millis(5);
    stale_set_race(&cluster.url(), Write::Set, 150, within).await;
    stale_set_race(&cluster.url(), Write::Invalidate, 150, within).await;
}

/// What a test loader returns.
type LoadFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Option<u64>, Error>> + Send>>;

/// A loader that counts its calls and takes `delay`.
fn counted_loader(
    calls: &Arc<AtomicUsize>,
    delay: Duration,
    value: u64,
) -> impl FnOnce() -> LoadFuture + Send + 'static {
    let calls = Arc::clone(calls);
    move || {
        Box::pin(async move {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(delay).await;
            Ok(Some(value))
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_loader_runs_for_a_cold_key_across_three_instances() {
    let server = RedisServer::start().unwrap();
    let mut fleet = Vec::new();
    for _ in 0..3 {
        fleet.push(instance(&server, "fleet").await);
    }
    let calls = Arc::new(AtomicUsize::new(0));
    let mut callers = Vec::new();
    for cache in &fleet {
        for _ in 0..100 {
            let (cache, loader) = (
                cache.clone(),
                counted_loader(&calls, Duration::from_millis(100), 7),
            );
            callers.push(tokio::spawn(async move {
                cache
                    .get_or_compute_optional::<u64, _, _, _>(
                        "cold",
                        EntryOptions::new(CacheStrategy::ShortTerm),
                        loader,
                    )
                    .await
            }));
        }
    }
    for caller in callers {
        assert_eq!(caller.await.unwrap().unwrap(), Some(7));
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "one loader call for the fleet"
    );
    let waits: u64 = fleet.iter().map(|cache| cache.stats().lease_waits).sum();
    assert_eq!(waits, 2, "the two other instances waited for the holder");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_dies_with_its_lease_delays_the_others_at_most_its_ttl() {
    let server = RedisServer::start().unwrap();
    let ttl = Duration::from_millis(400);
    let cache = instance_with(&server, "dead", |builder| {
        builder.leases(tiercache::LeaseOptions::new().ttl(ttl))
    })
    .await;
    // Another instance took the lease and died without filling or releasing it.
    let dead = RedisTier::connect_with(options(&server, Duration::from_secs(1)))
        .await
        .unwrap();
    let taken = tiercache::Tier::lease(&dead, "dead:key", ttl)
        .await
        .unwrap();
    assert!(matches!(taken, tiercache_core::LeaseRead::Granted(_)));
    drop(dead);

    let calls = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let got = cache
        .get_or_compute_optional::<u64, _, _, _>(
            "key",
            EntryOptions::new(CacheStrategy::ShortTerm),
            counted_loader(&calls, Duration::from_millis(10), 3),
        )
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(got, Some(3));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "this instance loaded once the lease expired"
    );
    assert!(
        took <= ttl + Duration::from_millis(300),
        "answered within the lease TTL: {took:?}"
    );
    let stats = cache.stats();
    assert_eq!((stats.lease_waits, stats.lease_takeovers), (1, 1));
    settled(&cache).await;
    assert_eq!(
        in_redis(&server, "dead", "key").await,
        Some(3),
        "and filled Redis under its own lease"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_dropped_mid_load_gives_its_lease_back() {
    let server = RedisServer::start().unwrap();
    let ttl = Duration::from_secs(5);
    let tune =
        |builder: tiercache::CacheBuilder| builder.leases(tiercache::LeaseOptions::new().ttl(ttl));
    let holder = instance_with(&server, "drop", tune).await;
    let other = instance_with(&server, "drop", tune).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let load = {
        let (holder, loader) = (
            holder.clone(),
            counted_loader(&calls, Duration::from_secs(60), 1),
        );
        tokio::spawn(async move {
            holder
                .get_or_compute_optional::<u64, _, _, _>("k", EntryOptions::default(), loader)
                .await
        })
    };
    while calls.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let waiting = {
        let (other, loader) = (
            other.clone(),
            counted_loader(&calls, Duration::from_millis(10), 2),
        );
        tokio::spawn(async move {
            other
                .get_or_compute_optional::<u64, _, _, _>("k", EntryOptions::default(), loader)
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    // The holder's instance goes away in the middle of its load.
    load.abort();
    drop(holder);
    let got = tokio::time::timeout(ttl, waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got, Some(2), "the waiting instance loaded");
    assert!(
        started.elapsed() < ttl / 2,
        "the released lease let it load long before the TTL: {:?}",
        started.elapsed()
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_during_a_load_still_answers() {
    let mut server = RedisServer::start().unwrap();
    let cache = instance(&server, "restart").await;
    let calls = Arc::new(AtomicUsize::new(0));
    let load = {
        let (cache, loader) = (
            cache.clone(),
            counted_loader(&calls, Duration::from_millis(300), 5),
        );
        tokio::spawn(async move {
            cache
                .get_or_compute_optional::<u64, _, _, _>("k", EntryOptions::default(), loader)
                .await
        })
    };
    while calls.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.restart().unwrap();
    assert_eq!(load.await.unwrap().unwrap(), Some(5));
    settled(&cache).await;
    // The restarted server lost the lease: the fill was refused, nothing old came back.
    assert_eq!(in_redis(&server, "restart", "k").await, None);
    let again = cache
        .get_or_compute_optional::<u64, _, _, _>(
            "other",
            EntryOptions::default(),
            counted_loader(&calls, Duration::ZERO, 6),
        )
        .await
        .unwrap();
    assert_eq!(again, Some(6), "and the next load answers too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_costs_one_timeout_not_two() {
    let server = RedisServer::start().unwrap();
    let timeout = Duration::from_millis(300);
    let redis = RedisTier::connect_with(options(&server, timeout))
        .await
        .unwrap();
    let cache = Cache::builder()
        .namespace("frozen")
        .memory(MemoryTier::new(100))
        .tier(redis)
        .hard_timeout(Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    server.pause().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let got = cache
        .get_or_compute_optional::<u64, _, _, _>(
            "k",
            EntryOptions::default(),
            counted_loader(&calls, Duration::from_millis(50), 9),
        )
        .await;
    let took = started.elapsed();
    server.resume().unwrap();
    assert_eq!(got.unwrap(), Some(9));
    assert!(
        took < timeout + Duration::from_millis(50) + Duration::from_millis(120),
        "one command timeout plus the loader: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_can_load_at_once_instead_of_waiting_for_a_held_lease() {
    let server = RedisServer::start().unwrap();
    let cache = instance(&server, "optout").await;
    let other = RedisTier::connect_with(options(&server, Duration::from_secs(1)))
        .await
        .unwrap();
    let held = tiercache::Tier::lease(&other, "optout:k", Duration::from_secs(10))
        .await
        .unwrap();
    assert!(matches!(held, tiercache_core::LeaseRead::Granted(_)));
    let calls = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let got = cache
        .get_or_compute_optional::<u64, _, _, _>(
            "k",
            EntryOptions::default().wait_for_lease(false),
            counted_loader(&calls, Duration::ZERO, 4),
        )
        .await
        .unwrap();
    assert_eq!(got, Some(4));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "it did not wait"
    );
    settled(&cache).await;
    assert_eq!(
        in_redis(&server, "optout", "k").await,
        None,
        "the value is not stored over the lease another instance holds"
    );
    assert_eq!(cache.stats().lease_waits, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hard_timeout_bounds_a_wait_for_another_instance() {
    let server = RedisServer::start().unwrap();
    let cache = instance(&server, "bounded").await;
    let other = RedisTier::connect_with(options(&server, Duration::from_secs(1)))
        .await
        .unwrap();
    let held = tiercache::Tier::lease(&other, "bounded:k", Duration::from_secs(10))
        .await
        .unwrap();
    assert!(matches!(held, tiercache_core::LeaseRead::Granted(_)));
    let calls = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let got = cache
        .get_or_compute_optional::<u64, _, _, _>(
            "k",
            EntryOptions::default().hard_timeout(Duration::from_millis(150)),
            counted_loader(&calls, Duration::ZERO, 1),
        )
        .await;
    let took = started.elapsed();
    assert!(matches!(got, Err(Error::Timeout { .. })), "{got:?}");
    assert!(
        took < Duration::from_millis(400),
        "gave up at the hard timeout: {took:?}"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "and never ran a second loader"
    );
    assert_eq!(cache.loads_in_flight(), 0, "nothing left in flight");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unrelated_invalidation_during_a_load_leaks_no_lease() {
    let server = RedisServer::start().unwrap();
    let holder = instance(&server, "leak").await;
    let other = instance(&server, "leak").await;
    let calls = Arc::new(AtomicUsize::new(0));
    let load = {
        let (holder, loader) = (
            holder.clone(),
            counted_loader(&calls, Duration::from_millis(150), 1),
        );
        tokio::spawn(async move {
            holder
                .get_or_compute_optional::<u64, _, _, _>("k", EntryOptions::default(), loader)
                .await
        })
    };
    while calls.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Moves every stamp of the holder's clock, but touches nothing under "k".
    holder.invalidate_prefix("unrelated:").await.unwrap();
    assert_eq!(load.await.unwrap().unwrap(), Some(1));
    settled(&holder).await;
    let started = Instant::now();
    let got = other
        .get_or_compute_optional::<u64, _, _, _>(
            "k",
            EntryOptions::default(),
            counted_loader(&calls, Duration::ZERO, 2),
        )
        .await
        .unwrap();
    assert_eq!(
        got,
        Some(1),
        "the holder's fill reached Redis under its lease"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "nobody waits out a lease left behind: {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_after_an_invalidation_fills_under_a_new_stamp() {
    let server = RedisServer::start().unwrap();
    let waiter = instance(&server, "takeover").await;
    let writer = instance(&server, "takeover").await;
    // Another instance holds the lease and is slow.
    let other = RedisTier::connect_with(options(&server, Duration::from_secs(1)))
        .await
        .unwrap();
    let held = tiercache::Tier::lease(&other, "takeover:k", Duration::from_secs(10))
        .await
        .unwrap();
    assert!(matches!(held, tiercache_core::LeaseRead::Granted(_)));
    let calls = Arc::new(AtomicUsize::new(0));
    let waiting = {
        let (waiter, loader) = (waiter.clone(), counted_loader(&calls, Duration::ZERO, 2));
        tokio::spawn(async move {
            waiter
                .get_or_compute_optional::<u64, _, _, _>("k", EntryOptions::default(), loader)
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The source changed: the writer invalidates, which removes the other instance's lease and
    // reaches the waiter's clock over the bus.
    writer.invalidate("k").await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got, Some(2));
    settled(&waiter).await;
    assert_eq!(
        in_redis(&server, "takeover", "k").await,
        Some(2),
        "the value loaded after the invalidation is stored"
    );
    assert_eq!(waiter.stats().lease_takeovers, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_and_the_load_after_it_share_one_hard_timeout() {
    let server = RedisServer::start().unwrap();
    let cache = instance(&server, "budget").await;
    let other = RedisTier::connect_with(options(&server, Duration::from_secs(1)))
        .await
        .unwrap();
    let ttl = Duration::from_millis(250);
    let held = tiercache::Tier::lease(&other, "budget:k", ttl)
        .await
        .unwrap();
    assert!(matches!(held, tiercache_core::LeaseRead::Granted(_)));
    let calls = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let got = cache
        .get_or_compute_optional::<u64, _, _, _>(
            "k",
            EntryOptions::default().hard_timeout(Duration::from_millis(400)),
            counted_loader(&calls, Duration::from_millis(400), 1),
        )
        .await;
    let took = started.elapsed();
    assert!(matches!(got, Err(Error::Timeout { .. })), "{got:?}");
    assert!(
        took < Duration::from_millis(550),
        "one hard timeout for the whole call: {took:?}"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "it took over after the lease expired"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_slower_than_the_lease_ttl_keeps_its_lease_under_a_hard_timeout() {
    let server = RedisServer::start().unwrap();
    let ttl = Duration::from_millis(100);
    let cache = instance_with(&server, "slow", |builder| {
        builder
            .leases(tiercache::LeaseOptions::new().ttl(ttl))
            .hard_timeout(Duration::from_secs(2))
    })
    .await;
    let calls = Arc::new(AtomicUsize::new(0));
    let got = cache
        .get_or_compute_optional::<u64, _, _, _>(
            "k",
            EntryOptions::default(),
            counted_loader(&calls, Duration::from_millis(300), 8),
        )
        .await
        .unwrap();
    assert_eq!(got, Some(8));
    settled(&cache).await;
    assert_eq!(
        in_redis(&server, "slow", "k").await,
        Some(8),
        "the lease lasted as long as the load may"
    );
    assert_eq!(cache.stats().fills_revoked, 0);
}

/// Instance A holds the lease and its source says "not found", so A stores a cached "not found".
/// Instance B waited for A, finds that negative, and (as `get_or_compute` does) loads over it;
/// while B's loader runs, instance C writes version 2. B's late version 1 must not overwrite it
/// in Redis: B fills under the lease its last read took on the negative, which C's write revoked.
/// (B used to fill with a plain SET after a wait that found a negative.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_over_a_waited_for_negative_never_overwrites_a_newer_set() {
    let server = RedisServer::start().unwrap();
    let holder = instance(&server, "negative").await;
    // The waiter hears of no write over a bus (its messages may be late): only the lease can
    // keep its late value out of Redis.
    let redis = RedisTier::connect_with(options(&server, Duration::from_millis(500)))
        .await
        .unwrap();
    let waiter = Cache::builder()
        .namespace("negative")
        .memory(MemoryTier::new(100))
        .tier(redis)
        .build()
        .await
        .unwrap();
    let writer = instance(&server, "negative").await;
    let negatives_cached = EntryOptions::default().negative_ttl(Duration::from_secs(60));
    let holding = {
        let holder = holder.clone();
        tokio::spawn(async move {
            holder
                .get_or_compute_optional::<u64, _, _, _>("k", negatives_cached, || {
                    Box::pin(async {
                        tokio::time::sleep(Duration::from_millis(150)).await;
                        Ok(None)
                    }) as LoadFuture
                })
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(30)).await;
    let (wrote, written) = tokio::sync::oneshot::channel::<()>();
    let loading = {
        let (waiter, writer) = (waiter.clone(), writer.clone());
        tokio::spawn(async move {
            waiter
                .get_or_compute::<u64, _, _, _>("k", EntryOptions::default(), move || async move {
                    // Reads version 1 from the source; the writer then writes version 2 (source,
                    // then cache) before this load returns.
                    writer
                        .set("k", &2_u64, CacheStrategy::LongTerm)
                        .await
                        .unwrap();
                    drop(wrote);
                    Ok::<_, std::io::Error>(1_u64)
                })
                .await
        })
    };
    assert_eq!(holding.await.unwrap().unwrap(), None);
    let loaded = tokio::time::timeout(Duration::from_secs(5), loading)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(loaded, 1, "the caller gets what its loader read");
    assert!(written.await.is_err(), "the writer wrote during the load");
    assert!(
        waiter.stats().lease_waits >= 1,
        "the waiter waited for the holder"
    );
    settled(&waiter).await;
    assert_eq!(
        in_redis(&server, "negative", "k").await,
        Some(2),
        "the newer set stays in Redis"
    );
    assert_eq!(
        waiter.get::<u64>("k").await.unwrap(),
        Some(2),
        "and the waiter's L1 dropped its late value with the revoked fill"
    );
}
