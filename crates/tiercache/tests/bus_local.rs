//! The multi-instance suite on the in-process transport, plus what only an in-process transport
//! can stage: a publish that fails, and a receiver that drops off the bus.
#![expect(clippy::unwrap_used, reason = "test helpers fail the test loudly")]

mod bus_suite;

use std::{sync::Arc, time::Duration};

use bus_suite::{Instance, Transport, eventually};
use tiercache::{
    Bus, BusOptions, Cache, CacheStrategy, EntryOptions, Error, FailSafe, MemoryTier, Tier,
    async_trait,
    core::{BusHealth, BusMessage, BusScope, BusSink},
};
use tiercache_testkit::{LocalBus, LocalNetwork, MapTier};

struct Local {
    network: LocalNetwork,
    shared: Arc<MapTier>,
    buses: std::sync::Mutex<Vec<Arc<LocalBus>>>,
}

impl Local {
    fn new() -> Self {
        Self {
            network: LocalNetwork::new(),
            shared: Arc::new(MapTier::new("shared")),
            buses: std::sync::Mutex::default(),
        }
    }
}

impl Transport for Local {
    type Bus = Arc<LocalBus>;

    async fn bus(&self) -> Arc<LocalBus> {
        let bus = Arc::new(self.network.bus());
        self.buses.lock().unwrap().push(Arc::clone(&bus));
        bus
    }

    fn shared_tier(&self) -> Arc<dyn Tier> {
        self.shared.clone()
    }

    async fn outage(&self) {
        let buses = self.buses.lock().unwrap().clone();
        buses.iter().for_each(|bus| bus.disconnect());
        tokio::time::sleep(Duration::from_millis(20)).await;
        buses.iter().for_each(|bus| bus.reconnect());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_reaches_every_other_l1() {
    bus_suite::a_set_reaches_every_other_l1(&Local::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_and_clear_reach_every_l1() {
    bus_suite::prefix_and_clear_reach_every_l1(&Local::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fills_do_not_publish() {
    bus_suite::fills_do_not_publish(&Local::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_beats_a_racing_load() {
    bus_suite::an_invalidation_beats_a_racing_load(&Local::new(), 1_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_empties_l1_and_the_bus_recovers() {
    bus_suite::a_gap_empties_l1_and_the_bus_recovers(&Local::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_invalidation_reaches_every_l1() {
    bus_suite::a_tag_invalidation_reaches_every_l1(&Local::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_updates_carry_their_value() {
    bus_suite::small_updates_carry_their_value(&Local::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_invalidation_reaches_updates_not_yet_read() {
    bus_suite::a_tag_invalidation_reaches_updates_not_yet_read(&Local::new()).await;
}

/// A publish that failed is sent again ahead of the next message: the other instances drop the
/// key they missed, and nothing else (before, the next message made them empty all of L1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_publish_is_sent_again_before_the_next_message() {
    let transport = Local::new();
    let a = Instance::new(&transport, "lost", BusOptions::new()).await;
    let b = Instance::new(&transport, "lost", BusOptions::new()).await;
    a.cache
        .set("k", &1_u64, CacheStrategy::LongTerm)
        .await
        .unwrap();
    b.cache
        .set("unrelated", &7_u64, CacheStrategy::LongTerm)
        .await
        .unwrap();
    eventually("B received A's write", async || b.bus().received == 1).await;
    assert_eq!(b.cache.get::<u64>("k").await.unwrap(), Some(1));

    let a_bus = Arc::clone(&transport.buses.lock().unwrap()[0]);
    a_bus.set_failing(true);
    let err = a
        .cache
        .set("k", &2_u64, CacheStrategy::LongTerm)
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert_eq!(a.bus().publish_errors, 1);
    assert_eq!(b.in_l1("k").await, Some(1), "B missed the invalidation");

    a_bus.set_failing(false);
    a.cache
        .set("other", &3_u64, CacheStrategy::LongTerm)
        .await
        .unwrap();
    eventually("B received the resent message and the next", async || {
        b.bus().received == 3
    })
    .await;
    assert_eq!(b.in_l1("k").await, None, "the key B missed is dropped");
    assert_eq!(b.bus().l1_flushes, 0, "and nothing else");
    assert_eq!(b.in_l1("unrelated").await, Some(7));
    assert_eq!(b.cache.get::<u64>("k").await.unwrap(), Some(2));
}

/// `l1_max_age` bounds how long an L1 copy is served when no message arrives at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l1_max_age_bounds_staleness_when_the_bus_is_silent() {
    let network = LocalNetwork::new();
    let shared = Arc::new(MapTier::new("shared"));
    let build = async |bus: Arc<LocalBus>| {
        Cache::builder()
            .memory(MemoryTier::new(100))
            .tier(shared.clone())
            .bus(bus)
            .l1_max_age(Duration::from_millis(150))
            .build()
            .await
            .unwrap()
    };
    let b_bus = Arc::new(network.bus());
    let a = build(Arc::new(network.bus())).await;
    let b = build(Arc::clone(&b_bus)).await;
    a.set("k", &1_u64, CacheStrategy::LongTerm).await.unwrap();
    eventually("B received A's write", async || {
        b.stats().bus.unwrap().received == 1
    })
    .await;
    assert_eq!(b.get::<u64>("k").await.unwrap(), Some(1));

    // B's bus goes silently dead: A's next write never reaches it, and no gap is reported.
    b_bus.disconnect();
    a.set("k", &2_u64, CacheStrategy::LongTerm).await.unwrap();
    assert_eq!(
        b.get::<u64>("k").await.unwrap(),
        Some(1),
        "stale within the max age"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        b.get::<u64>("k").await.unwrap(),
        Some(2),
        "re-read after the max age"
    );
    assert_eq!(b.stats().bus.unwrap().gaps, 0);
}

#[tokio::test]
async fn a_bus_cannot_be_shared_by_two_caches() {
    let bus = Arc::new(LocalNetwork::new().bus());
    let build = async || {
        Cache::builder()
            .memory(MemoryTier::new(10))
            .bus(Arc::clone(&bus))
            .build()
            .await
    };
    build().await.unwrap();
    assert!(matches!(build().await, Err(Error::Config(_))));
}

/// A bus that holds its instance's messages back until released, to stage messages from two
/// instances arriving in the other order.
#[derive(Debug)]
struct HeldBus {
    inner: LocalBus,
    held: std::sync::Mutex<Option<Vec<BusMessage>>>,
}

impl HeldBus {
    fn holding(inner: LocalBus) -> Self {
        Self {
            inner,
            held: std::sync::Mutex::new(Some(Vec::new())),
        }
    }

    async fn release(&self) {
        let held = self.held.lock().unwrap().take().unwrap_or_default();
        for message in &held {
            self.inner.publish(message).await.unwrap();
        }
    }
}

#[async_trait]
impl Bus for HeldBus {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn start(&self, scope: BusScope<'_>, sink: Arc<dyn BusSink>) -> tiercache::Result<()> {
        self.inner.start(scope, sink).await
    }

    async fn publish(&self, message: &BusMessage) -> tiercache::Result<()> {
        if let Some(held) = self.held.lock().unwrap().as_mut() {
            held.push(message.clone());
            return Ok(());
        }
        self.inner.publish(message).await
    }

    fn health(&self) -> BusHealth {
        self.inner.health()
    }
}

/// A tagged value's update that arrives after the invalidation of its tag (sent later, from
/// another instance) is not kept: the receiver knows the tag was dropped after the write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_arriving_after_its_tag_was_invalidated_is_not_kept() {
    let transport = Local::new();
    let options = || BusOptions::new().updates_up_to(256);
    let a_bus = Arc::new(HeldBus::holding(transport.network.bus()));
    let a = Instance::with_bus(&transport, "late", Arc::clone(&a_bus), options()).await;
    let b = Instance::new(&transport, "late", options()).await;
    let c = Instance::new(&transport, "late", options()).await;

    let tenant = EntryOptions::new(CacheStrategy::LongTerm).tags(["tenant:3"]);
    a.cache.set("invoice:1", &1_u64, tenant).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    c.cache.invalidate_tag("tenant:3").await.unwrap();
    eventually("B learned of the tag invalidation", async || {
        b.bus().received >= 1
    })
    .await;

    a_bus.release().await;
    eventually("B received A's late update", async || b.bus().received >= 2).await;
    assert!(b.l1.get("invoice:1").await.is_none(), "not kept");
    assert_eq!(b.cache.get::<u64>("invoice:1").await.unwrap(), None);
}

/// A value that came with its update keeps the stale window its writer gave it once it is
/// read, so fail-safe on the receiver can answer with it when the source fails, even without
/// a shared tier to find it in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_keeps_its_stale_window_for_fail_safe() {
    let network = LocalNetwork::new();
    let build = async |bus: LocalBus| {
        Cache::builder()
            .memory(MemoryTier::new(100))
            .bus_with(bus, BusOptions::new().updates_up_to(256))
            .build()
            .await
            .unwrap()
    };
    let a = build(network.bus()).await;
    let b = build(network.bus()).await;
    let ttl = Duration::from_millis(150);
    let options = EntryOptions::new(CacheStrategy::Custom(ttl))
        .fail_safe(FailSafe::new(Duration::from_secs(60)));
    a.set("price", &100_u32, options.clone()).await.unwrap();
    eventually("B received the update", async || {
        b.stats().bus.unwrap().received == 1
    })
    .await;
    assert_eq!(b.get::<u32>("price").await.unwrap(), Some(100));

    tokio::time::sleep(ttl + Duration::from_millis(50)).await;
    let answer = b
        .get_or_compute("price", options, || async {
            Err::<u32, _>(Error::Config("source down".into()))
        })
        .await
        .unwrap();
    assert_eq!(answer, 100, "the stale copy answered");
    assert_eq!(b.stats().stale_served, 1);
}

/// With a bus, an L1 max age applies unless the builder says otherwise: a bus that dies without a
/// word cannot leave L1 serving what other instances replaced for the whole TTL.
#[tokio::test]
async fn a_bus_brings_a_finite_l1_max_age_by_default() {
    let network = LocalNetwork::new();
    let with_bus = tiercache::Cache::builder()
        .memory(tiercache::MemoryTier::new(10))
        .bus(network.bus())
        .build()
        .await
        .unwrap();
    assert_eq!(
        with_bus.l1_max_age(),
        Some(tiercache::DEFAULT_L1_MAX_AGE_WITH_BUS)
    );
    let unbounded = tiercache::Cache::builder()
        .memory(tiercache::MemoryTier::new(10))
        .bus(network.bus())
        .l1_max_age(Duration::MAX)
        .build()
        .await
        .unwrap();
    assert_eq!(unbounded.l1_max_age(), None, "Duration::MAX opts out");
    let without_bus = tiercache::Cache::builder()
        .memory(tiercache::MemoryTier::new(10))
        .build()
        .await
        .unwrap();
    assert_eq!(without_bus.l1_max_age(), None);
}
