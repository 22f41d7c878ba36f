//! The multi-instance suite, written once against the [`Bus`] trait: each transport's test file
//! implements [`Transport`] and runs every check here, so a new transport proves the same
//! guarantees.
//!
//! Every check builds its own caches in a namespace of its own, so checks never see each other's
//! keys or messages even on one server.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use tiercache::{Bus, BusOptions, BusStats, Cache, CacheStrategy, EntryOptions, MemoryTier, Tier};
use tiercache_moka::MemoryEntry;

/// Generous: propagation latency belongs to the bench, not to a test.
const PATIENCE: Duration = Duration::from_secs(10);

/// What a transport gives the suite.
pub(crate) trait Transport {
    /// The bus type of one instance.
    type Bus: Bus + 'static;

    /// A bus for one more instance.
    fn bus(&self) -> impl Future<Output = Self::Bus>;

    /// The tier every instance shares (Redis, or a map in process).
    fn shared_tier(&self) -> Arc<dyn Tier>;

    /// Takes the transport away and brings it back: messages sent meanwhile are lost, and every
    /// instance's bus must notice.
    fn outage(&self) -> impl Future<Output = ()>;

    /// Whether an instance's own writes come back as invalidations of its own L1 (a transport
    /// that learns of writes from Redis cannot tell whose they were).
    fn echoes_own_writes(&self) -> bool {
        false
    }

    /// Whether a `set` can carry its value to the other instances.
    fn carries_updates(&self) -> bool {
        true
    }

    /// Whether fills (which write the shared tier) reach the other instances too.
    fn reports_fills(&self) -> bool {
        false
    }

    /// How many connections of one instance's bus an outage breaks (each reconnects on its own).
    fn connections_per_bus(&self) -> u64 {
        1
    }

    /// Whether [`outage`](Self::outage) costs every instance its L1. A replayable transport
    /// whose data survived the outage catches up instead.
    fn outage_flushes(&self) -> bool {
        true
    }
}

/// One cache instance, with a handle on its L1 to look inside.
pub(crate) struct Instance {
    pub(crate) cache: Cache,
    pub(crate) l1: MemoryTier,
    /// The transport reports this instance's own writes back to it.
    pub(crate) echoes: bool,
}

impl Instance {
    pub(crate) async fn new<T: Transport>(
        transport: &T,
        namespace: &str,
        options: BusOptions,
    ) -> Self {
        Self::with_bus(transport, namespace, transport.bus().await, options).await
    }

    /// An instance on the transport's shared tier with a bus of the caller's making.
    pub(crate) async fn with_bus<T: Transport>(
        transport: &T,
        namespace: &str,
        bus: impl Bus + 'static,
        options: BusOptions,
    ) -> Self {
        let l1 = MemoryTier::new(10_000);
        let cache = Cache::builder()
            .namespace(namespace)
            .memory(l1.clone())
            .tier(transport.shared_tier())
            .bus_with(bus, options)
            .build()
            .await
            .unwrap();
        Self {
            cache,
            l1,
            echoes: transport.echoes_own_writes(),
        }
    }

    /// What this instance's L1 holds for `key`, as a `u64`, without reading any other tier.
    pub(crate) async fn in_l1(&self, key: &str) -> Option<u64> {
        self.l1
            .get(key)
            .await
            .and_then(MemoryEntry::into_typed::<u64>)
            .map(|value| *value)
    }

    pub(crate) fn bus(&self) -> BusStats {
        self.cache.stats().bus.unwrap()
    }
}

pub(crate) async fn instances<T: Transport>(
    transport: &T,
    namespace: &str,
    count: usize,
) -> Vec<Instance> {
    let mut all = Vec::with_capacity(count);
    for _ in 0..count {
        all.push(Instance::new(transport, namespace, BusOptions::new()).await);
    }
    all
}

/// Waits until `check` holds, or fails the test saying what did not happen.
pub(crate) async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check().await {
        assert!(Instant::now() < deadline, "not within {PATIENCE:?}: {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Waits until every instance has applied every message the others published so far.
pub(crate) async fn settle(all: &[Instance]) {
    let published: Vec<u64> = all.iter().map(|i| i.bus().published).collect();
    let total: u64 = published.iter().sum();
    for (index, instance) in all.iter().enumerate() {
        let from_others = if instance.echoes {
            total
        } else {
            total - published[index]
        };
        let stats: Vec<BusStats> = all.iter().map(Instance::bus).collect();
        eventually(
            &format!("instance {index} received {from_others} messages; stats before: {stats:?}"),
            async || instance.bus().received >= from_others,
        )
        .await;
    }
}

/// Reads `key` into every instance's L1 (from the shared tier), once earlier messages are in.
pub(crate) async fn warm(all: &[Instance], key: &str, expected: u64) {
    settle(all).await;
    for instance in all {
        assert_eq!(
            instance.cache.get::<u64>(key).await.unwrap(),
            Some(expected)
        );
        assert_eq!(
            instance.in_l1(key).await,
            Some(expected),
            "promoted into L1"
        );
    }
}

/// `writer` sets `key` from `old` to `new`: every other instance drops its `old` L1 copy and
/// then reads `new`.
pub(crate) async fn write_and_expect_others_to_drop(
    all: &[Instance],
    writer: usize,
    key: &str,
    old: u64,
    new: u64,
) {
    all[writer]
        .cache
        .set(key, &new, CacheStrategy::LongTerm)
        .await
        .unwrap();
    for (index, other) in all.iter().enumerate().filter(|(i, _)| *i != writer) {
        eventually(
            &format!("instance {index} dropped {key}={old}"),
            async || other.in_l1(key).await != Some(old),
        )
        .await;
        assert_eq!(other.cache.get::<u64>(key).await.unwrap(), Some(new));
    }
}

/// A `set` on one instance drops the key from every other instance's L1, which then reads the
/// new value; the writer keeps its own copy (its own message is ignored).
pub(crate) async fn a_set_reaches_every_other_l1<T: Transport>(transport: &T) {
    let all = instances(transport, "suite-set", 3).await;
    all[0]
        .cache
        .set("user:1", &1_u64, CacheStrategy::LongTerm)
        .await
        .unwrap();
    warm(&all, "user:1", 1).await;

    write_and_expect_others_to_drop(&all, 1, "user:1", 1, 2).await;
    if !transport.echoes_own_writes() {
        eventually("the writer saw its own message come back", async || {
            all[1].bus().ignored_own >= 1
        })
        .await;
        assert_eq!(all[1].in_l1("user:1").await, Some(2), "own message ignored");
    }

    all[2].cache.invalidate("user:1").await.unwrap();
    for (index, other) in all.iter().enumerate().filter(|(i, _)| *i != 2) {
        eventually(
            &format!("instance {index} dropped user:1 after invalidate"),
            async || other.in_l1("user:1").await.is_none(),
        )
        .await;
    }
    assert_eq!(all[0].cache.get::<u64>("user:1").await.unwrap(), None);
}

/// Prefix invalidation and clear reach every instance's L1, and leave other keys alone.
pub(crate) async fn prefix_and_clear_reach_every_l1<T: Transport>(transport: &T) {
    let all = instances(transport, "suite-prefix", 3).await;
    for (key, value) in [("user:1", 1), ("user:2", 2), ("order:1", 3)] {
        all[0]
            .cache
            .set(key, &value, CacheStrategy::LongTerm)
            .await
            .unwrap();
        warm(&all, key, value).await;
    }

    all[0].cache.invalidate_prefix("user:").await.unwrap();
    for (index, instance) in all.iter().enumerate() {
        eventually(&format!("instance {index} dropped user:*"), async || {
            instance.in_l1("user:1").await.is_none() && instance.in_l1("user:2").await.is_none()
        })
        .await;
        assert_eq!(instance.in_l1("order:1").await, Some(3), "other keys stay");
    }

    all[2].cache.clear().await.unwrap();
    for (index, instance) in all.iter().enumerate() {
        eventually(&format!("instance {index} cleared"), async || {
            instance.in_l1("order:1").await.is_none()
        })
        .await;
    }
}

/// A fill after a miss publishes nothing; writes publish one message each; every message of
/// another instance is counted as received.
pub(crate) async fn fills_do_not_publish<T: Transport>(transport: &T) {
    let all = instances(transport, "suite-fills", 2).await;
    for i in 0..20_u64 {
        let key = format!("item:{i}");
        let loaded = all[0]
            .cache
            .get_or_compute(&key, CacheStrategy::LongTerm, move || async move {
                Ok::<_, std::io::Error>(i)
            })
            .await
            .unwrap();
        assert_eq!(loaded, i);
    }
    assert_eq!(all[0].bus().published, 0, "fills published");

    all[0]
        .cache
        .set("item:0", &100_u64, CacheStrategy::LongTerm)
        .await
        .unwrap();
    all[0].cache.invalidate("item:1").await.unwrap();
    assert_eq!(all[0].bus().published, 2);
    if transport.reports_fills() {
        // The fills above wrote the shared tier, and this transport reports every write.
        eventually(
            "the other instance received the fills and both writes",
            async || all[1].bus().received >= 22,
        )
        .await;
    } else {
        eventually("the other instance received both", async || {
            all[1].bus().received == 2
        })
        .await;
    }
    let stats = all[1].bus();
    assert!(stats.connected, "bus reports connected: {stats:?}");
    assert!(stats.since_last_message.is_some_and(|age| age < PATIENCE));
    assert_eq!((stats.gaps, stats.l1_flushes, stats.published), (0, 0, 0));
}

/// The stale-insert race, `iterations` times: B writes versions 1..=5 of a key while A reads it
/// concurrently (L1 miss, shared-tier read, promotion into L1). Once A has received all of B's
/// messages, A's L1 holds the last version or nothing — never an older one.
pub(crate) async fn an_invalidation_beats_a_racing_load<T: Transport>(
    transport: &T,
    iterations: usize,
) {
    const VERSIONS: u64 = 5;
    let all = instances(transport, "suite-race", 2).await;
    let (a, b) = (&all[0], &all[1]);
    let mut stale = Vec::new();
    for iteration in 0..iterations {
        let key = format!("race:{iteration}");
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (cache, key, stop) = (a.cache.clone(), key.clone(), Arc::clone(&stop));
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    cache.get::<u64>(&key).await.unwrap();
                    tokio::task::yield_now().await;
                }
            })
        };
        for version in 1..=VERSIONS {
            b.cache
                .set(&key, &version, CacheStrategy::LongTerm)
                .await
                .unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        reader.await.unwrap();
        let sent = b.bus().published;
        eventually("A received all of B's messages", async || {
            a.bus().received >= sent
        })
        .await;
        match a.in_l1(&key).await {
            None | Some(VERSIONS) => {}
            Some(old) => stale.push((iteration, old)),
        }
    }
    assert!(
        stale.is_empty(),
        "A's L1 kept an old version (iteration, version): {stale:?}"
    );
}

/// The transport goes away and comes back: every instance reports the gap and empties its L1
/// (or, on a replayable transport whose data survived, reconnects and keeps its L1), and
/// invalidation works again afterwards.
pub(crate) async fn a_gap_empties_l1_and_the_bus_recovers<T: Transport>(transport: &T) {
    let all = instances(transport, "suite-gap", 3).await;
    all[0]
        .cache
        .set("user:1", &1_u64, CacheStrategy::LongTerm)
        .await
        .unwrap();
    warm(&all, "user:1", 1).await;

    transport.outage().await;
    let connections = transport.connections_per_bus();
    for (index, instance) in all.iter().enumerate() {
        if transport.outage_flushes() {
            eventually(
                &format!("instance {index} reported the gap of each connection and flushed"),
                async || {
                    let stats = instance.bus();
                    stats.gaps >= connections
                        && stats.reconnects >= connections
                        && stats.l1_flushes >= 1
                        && stats.connected
                },
            )
            .await;
            assert_eq!(
                instance.in_l1("user:1").await,
                None,
                "L1 emptied after the gap"
            );
        } else {
            eventually(&format!("instance {index} reconnected"), async || {
                let stats = instance.bus();
                stats.reconnects >= 1 && stats.connected
            })
            .await;
            assert_eq!(instance.bus().l1_flushes, 0, "caught up without a flush");
            assert_eq!(instance.in_l1("user:1").await, Some(1), "L1 kept");
        }
    }

    // The shared tier may have lost its data in the outage: write afresh, then invalidate.
    all[0]
        .cache
        .set("user:1", &2_u64, CacheStrategy::LongTerm)
        .await
        .unwrap();
    warm(&all, "user:1", 2).await;
    write_and_expect_others_to_drop(&all, 1, "user:1", 2, 3).await;
}

/// A tagged value that came with its update waits in L1 undecoded until it is first read; a
/// tag invalidation drops it all the same.
pub(crate) async fn a_tag_invalidation_reaches_updates_not_yet_read<T: Transport>(transport: &T) {
    if !transport.carries_updates() {
        return;
    }
    let options = || BusOptions::new().updates_up_to(256);
    let a = Instance::new(transport, "suite-tag-update", options()).await;
    let b = Instance::new(transport, "suite-tag-update", options()).await;
    let tenant = EntryOptions::new(CacheStrategy::LongTerm).tags(["tenant:9"]);
    a.cache.set("invoice:1", &1_u64, tenant).await.unwrap();
    eventually("B received the update", async || b.bus().received >= 1).await;
    assert!(
        b.l1.get("invoice:1").await.is_some(),
        "the update waits in B's L1"
    );

    a.cache.invalidate_tag("tenant:9").await.unwrap();
    eventually("B dropped the tagged update", async || {
        b.l1.get("invoice:1").await.is_none()
    })
    .await;
    assert_eq!(b.cache.get::<u64>("invoice:1").await.unwrap(), None);
}

/// With updates on, a small value travels with the message: the receiver answers from L1
/// without reading the shared tier, and a large value is sent as a plain invalidation.
pub(crate) async fn small_updates_carry_their_value<T: Transport>(transport: &T) {
    let options = || BusOptions::new().updates_up_to(64);
    let a = Instance::new(transport, "suite-update", options()).await;
    let b = Instance::new(transport, "suite-update", options()).await;
    a.cache
        .set("small", &1_u64, CacheStrategy::LongTerm)
        .await
        .unwrap();
    a.cache
        .set("large", &"x".repeat(500), CacheStrategy::LongTerm)
        .await
        .unwrap();
    eventually("B received both", async || b.bus().received >= 2).await;
    warm(std::slice::from_ref(&b), "small", 1).await;
    assert_eq!(
        b.cache
            .get::<String>("large")
            .await
            .unwrap()
            .map(|s| s.len()),
        Some(500)
    );

    a.cache
        .set("small", &2_u64, CacheStrategy::LongTerm)
        .await
        .unwrap();
    a.cache
        .set("large", &"y".repeat(500), CacheStrategy::LongTerm)
        .await
        .unwrap();
    eventually("B received both", async || b.bus().received >= 4).await;
    if !transport.carries_updates() {
        // Plain invalidations only: B dropped both and reads them again from the shared tier.
        assert!(b.l1.get("small").await.is_none() && b.l1.get("large").await.is_none());
        assert_eq!(b.cache.get::<u64>("small").await.unwrap(), Some(2));
        return;
    }
    assert!(b.l1.get("small").await.is_some(), "the update is in B's L1");
    assert!(
        b.l1.get("large").await.is_none(),
        "the large value was only invalidated"
    );

    // B's next read of "small" is answered by L1: no read of the shared tier below.
    let below_before = b.cache.stats().tiers[0].hits + b.cache.stats().tiers[0].misses;
    assert_eq!(b.cache.get::<u64>("small").await.unwrap(), Some(2));
    assert_eq!(
        b.in_l1("small").await,
        Some(2),
        "decoded once, then kept typed"
    );
    let below_after = b.cache.stats().tiers[0].hits + b.cache.stats().tiers[0].misses;
    assert_eq!(below_before, below_after, "the shared tier was not read");
}

/// A tag invalidation on one instance drops the tagged entries from every instance's L1 and
/// from the shared tier, and leaves untagged and later entries alone. Transports that carry
/// messages also measure how long they took.
pub(crate) async fn a_tag_invalidation_reaches_every_l1<T: Transport>(transport: &T) {
    let all = instances(transport, "suite-tags", 3).await;
    let tenant = EntryOptions::new(CacheStrategy::LongTerm).tags(["tenant:7"]);
    for (key, value) in [("invoice:1", 1), ("invoice:2", 2)] {
        all[0].cache.set(key, &value, tenant.clone()).await.unwrap();
        warm(&all, key, value).await;
    }
    all[0]
        .cache
        .set("invoice:3", &3_u64, CacheStrategy::LongTerm)
        .await
        .unwrap();
    warm(&all, "invoice:3", 3).await;

    all[2].cache.invalidate_tag("tenant:7").await.unwrap();
    for (index, instance) in all.iter().enumerate() {
        eventually(&format!("instance {index} dropped tenant:7"), async || {
            instance.in_l1("invoice:1").await.is_none()
                && instance.in_l1("invoice:2").await.is_none()
        })
        .await;
        assert_eq!(instance.in_l1("invoice:3").await, Some(3), "untagged stays");
        assert_eq!(instance.cache.get::<u64>("invoice:1").await.unwrap(), None);
        assert_eq!(
            instance.cache.get::<u64>("invoice:3").await.unwrap(),
            Some(3)
        );
    }
    // Written after the invalidation: not affected by it.
    tokio::time::sleep(Duration::from_millis(5)).await;
    all[1]
        .cache
        .set("invoice:1", &10_u64, tenant)
        .await
        .unwrap();
    warm(&all, "invoice:1", 10).await;

    if !transport.echoes_own_writes() {
        let bus = all[0].bus();
        assert!(bus.lag_samples >= 1, "propagation lag measured: {bus:?}");
        assert!(bus.lag_max < PATIENCE, "{bus:?}");
    }
}
