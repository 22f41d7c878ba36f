//! The multi-instance suite on the three Redis transports (Pub/Sub, Stream, server-assisted
//! tracking), against redis-servers the tests start, which the outage checks kill and restart;
//! and what only one transport can show.
#![expect(clippy::unwrap_used, reason = "test helpers fail the test loudly")]

mod bus_suite;

use std::{sync::Arc, time::Duration};

use bus_suite::{Instance, Transport, eventually};
use tiercache::{
    Bus, BusOptions, CacheStrategy, RedisBus, RedisBusOptions, RedisOptions, RedisStreamBus,
    RedisTier, RedisTrackingBus, Tier,
};
use tiercache_redis::fred::types::config::ReconnectPolicy;
use tiercache_testkit::{RedisCluster, RedisServer};

/// Which transport a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    PubSub,
    Stream,
    Tracking,
}

impl Kind {
    /// Tracking learns of writes from Redis itself: its own writes and fills included, values
    /// never.
    fn learns_from_redis(self) -> bool {
        self == Kind::Tracking
    }
}

fn options(url: &str, reconnect_ms: u32) -> RedisOptions {
    RedisOptions::from_url(url)
        .unwrap()
        .command_timeout(Duration::from_millis(500))
        .reconnect_policy(ReconnectPolicy::new_constant(0, reconnect_ms))
}

async fn connect_bus(kind: Kind, options: RedisOptions, stream_max_len: u64) -> Arc<dyn Bus> {
    match kind {
        Kind::PubSub => Arc::new(
            RedisBus::connect_with(RedisBusOptions::new(options))
                .await
                .unwrap(),
        ),
        Kind::Stream => Arc::new(
            RedisStreamBus::connect_with(
                RedisBusOptions::new(options).stream_max_len(stream_max_len),
            )
            .await
            .unwrap(),
        ),
        Kind::Tracking => Arc::new(
            RedisTrackingBus::connect_with(RedisBusOptions::new(options))
                .await
                .unwrap(),
        ),
    }
}

/// One redis-server, a Redis tier on it, and buses of one kind.
struct Redis {
    kind: Kind,
    server: std::sync::Mutex<RedisServer>,
    url: String,
    tier: Arc<RedisTier>,
    /// How long the buses wait before reconnecting.
    bus_reconnect_ms: u32,
    stream_max_len: u64,
}

impl Redis {
    async fn start(kind: Kind) -> Self {
        let server = RedisServer::start().unwrap();
        let url = server.url();
        let tier = Arc::new(RedisTier::connect_with(options(&url, 50)).await.unwrap());
        Self {
            kind,
            server: std::sync::Mutex::new(server),
            url,
            tier,
            bus_reconnect_ms: 50,
            stream_max_len: 100_000,
        }
    }

    fn command(&self, words: &[&str]) -> String {
        self.server.lock().unwrap().command(words).unwrap()
    }
}

impl Transport for Redis {
    type Bus = Arc<dyn Bus>;

    async fn bus(&self) -> Arc<dyn Bus> {
        let options = options(&self.url, self.bus_reconnect_ms);
        connect_bus(self.kind, options, self.stream_max_len).await
    }

    fn shared_tier(&self) -> Arc<dyn Tier> {
        self.tier.clone()
    }

    async fn outage(&self) {
        self.server.lock().unwrap().stop();
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.server.lock().unwrap().restart().unwrap();
    }

    fn echoes_own_writes(&self) -> bool {
        self.kind.learns_from_redis()
    }

    fn carries_updates(&self) -> bool {
        !self.kind.learns_from_redis()
    }

    fn reports_fills(&self) -> bool {
        self.kind.learns_from_redis()
    }
}

/// The shared suite, once per transport.
macro_rules! suite_on {
    ($module:ident, $kind:expr) => {
        mod $module {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_set_reaches_every_other_l1() {
                bus_suite::a_set_reaches_every_other_l1(&Redis::start($kind).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn prefix_and_clear_reach_every_l1() {
                bus_suite::prefix_and_clear_reach_every_l1(&Redis::start($kind).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn fills_do_not_publish() {
                bus_suite::fills_do_not_publish(&Redis::start($kind).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn an_invalidation_beats_a_racing_load() {
                let redis = Redis::start($kind).await;
                bus_suite::an_invalidation_beats_a_racing_load(&redis, 1_000).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_gap_empties_l1_and_the_bus_recovers() {
                let redis = Redis::start($kind).await;
                bus_suite::a_gap_empties_l1_and_the_bus_recovers(&redis).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_tag_invalidation_reaches_every_l1() {
                bus_suite::a_tag_invalidation_reaches_every_l1(&Redis::start($kind).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn small_updates_carry_their_value() {
                bus_suite::small_updates_carry_their_value(&Redis::start($kind).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_tag_invalidation_reaches_updates_not_yet_read() {
                let redis = Redis::start($kind).await;
                bus_suite::a_tag_invalidation_reaches_updates_not_yet_read(&redis).await;
            }
        }
    };
}

suite_on!(pubsub, Kind::PubSub);
suite_on!(stream, Kind::Stream);
suite_on!(tracking, Kind::Tracking);

/// A Pub/Sub bus is subscribed when the cache's `build` returns, not only asked to be: fred
/// answers SUBSCRIBE when it is written, so with the server frozen `build` must still wait, and
/// once the server thaws, a message published at once reaches the new instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_the_bus_is_subscribed_when_build_returns() {
    let redis = Redis::start(Kind::PubSub).await;
    let a = Instance::new(&redis, "ready", BusOptions::new()).await;
    let patient = options(&redis.url, 50).command_timeout(Duration::from_secs(10));
    let b_bus = connect_bus(Kind::PubSub, patient, 100_000).await;

    redis.server.lock().unwrap().pause().unwrap();
    let build = Instance::with_bus(&redis, "ready", b_bus, BusOptions::new());
    tokio::pin!(build);
    let early = tokio::time::timeout(Duration::from_millis(300), &mut build).await;
    redis.server.lock().unwrap().resume().unwrap();
    assert!(
        early.is_err(),
        "build returned while the server could not have subscribed"
    );
    let b = build.await;

    a.cache
        .set("k", &1_u64, CacheStrategy::LongTerm)
        .await
        .unwrap();
    eventually(
        "B received the write published right after it started",
        async || b.bus().received == 1,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_bad_messages_are_counted_and_the_bus_goes_on() {
    let redis = Redis::start(Kind::PubSub).await;
    let a = Instance::new(&redis, "garbage", BusOptions::new()).await;
    let b = Instance::new(&redis, "garbage", BusOptions::new()).await;
    a.cache
        .set("k", &1_u64, CacheStrategy::LongTerm)
        .await
        .unwrap();
    eventually("B received A's write", async || b.bus().received == 1).await;
    assert_eq!(b.cache.get::<u64>("k").await.unwrap(), Some(1));

    let mut truncated = vec![0xB7_u8, 1, 1, 0];
    truncated.extend([0xFF; 10]);
    for payload in ["garbage", "", &String::from_utf8_lossy(&truncated)] {
        redis.command(&["PUBLISH", "tiercache:bus:garbage", payload]);
    }
    eventually("B counted three bad messages", async || {
        b.bus().bad_messages == 3
    })
    .await;
    assert_eq!(b.in_l1("k").await, Some(1), "bad messages change nothing");

    a.cache
        .set("k", &2_u64, CacheStrategy::LongTerm)
        .await
        .unwrap();
    eventually("B still applies real messages", async || {
        b.in_l1("k").await.is_none()
    })
    .await;
}

/// Only the subscriber connections die (the server and its data stay): the bus reconnects,
/// subscribes again, reports the gap, and invalidation works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_a_killed_subscriber_connection_resubscribes_and_reports_the_gap() {
    let redis = Redis::start(Kind::PubSub).await;
    let all = bus_suite::instances(&redis, "killed", 2).await;
    all[0]
        .cache
        .set("k", &1_u64, CacheStrategy::LongTerm)
        .await
        .unwrap();
    bus_suite::warm(&all, "k", 1).await;

    let killed = redis.command(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert_eq!(
        killed.trim().trim_start_matches(":"),
        "2",
        "one subscriber per instance"
    );
    for instance in &all {
        eventually("the bus resubscribed and reported the gap", async || {
            let stats = instance.bus();
            stats.reconnects >= 1 && stats.gaps >= 1 && stats.connected
        })
        .await;
        assert_eq!(instance.in_l1("k").await, None, "L1 emptied after the gap");
    }
    bus_suite::warm(&all, "k", 1).await;
    bus_suite::write_and_expect_others_to_drop(&all, 0, "k", 1, 2).await;
}

/// Every transport on a three-primary cluster: Pub/Sub messages reach subscribers on every
/// node, the stream lives in one slot, and tracking runs on each primary.
struct Cluster {
    kind: Kind,
    cluster: RedisCluster,
    tier: Arc<RedisTier>,
}

impl Transport for Cluster {
    type Bus = Arc<dyn Bus>;

    async fn bus(&self) -> Arc<dyn Bus> {
        connect_bus(self.kind, options(&self.cluster.url(), 50), 100_000).await
    }

    fn shared_tier(&self) -> Arc<dyn Tier> {
        self.tier.clone()
    }

    /// Every client connection of every node dies; fred reconnects them.
    async fn outage(&self) {
        for node in self.cluster.nodes() {
            for kind in ["pubsub", "normal"] {
                node.command(&["CLIENT", "KILL", "TYPE", kind]).unwrap();
            }
        }
    }

    fn echoes_own_writes(&self) -> bool {
        self.kind.learns_from_redis()
    }

    fn carries_updates(&self) -> bool {
        !self.kind.learns_from_redis()
    }

    fn reports_fills(&self) -> bool {
        self.kind.learns_from_redis()
    }

    /// The nodes keep their data, so the stream transport resumes where it was.
    fn outage_flushes(&self) -> bool {
        self.kind != Kind::Stream
    }

    /// Tracking holds one connection per primary.
    fn connections_per_bus(&self) -> u64 {
        match self.kind {
            Kind::Tracking => self.cluster.nodes().len() as u64,
            Kind::PubSub | Kind::Stream => 1,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suite_on_a_cluster() {
    let cluster = RedisCluster::start().unwrap();
    let tier = Arc::new(
        RedisTier::connect_with(options(&cluster.url(), 50))
            .await
            .unwrap(),
    );
    let mut transport = Cluster {
        kind: Kind::PubSub,
        cluster,
        tier,
    };
    for kind in [Kind::PubSub, Kind::Stream, Kind::Tracking] {
        transport.kind = kind;
        bus_suite::a_set_reaches_every_other_l1(&transport).await;
        bus_suite::prefix_and_clear_reach_every_l1(&transport).await;
        bus_suite::a_gap_empties_l1_and_the_bus_recovers(&transport).await;
        bus_suite::a_tag_invalidation_reaches_every_l1(&transport).await;
    }
}

/// Two stream-bus instances; B's bus logs in as its own ACL user, so a test can keep B away
/// (user off, connections killed) while A writes. B holds "k" = 1 and "unrelated" = 7 in L1.
async fn stream_pair(stream_max_len: u64) -> (Redis, Instance, Instance) {
    let mut redis = Redis::start(Kind::Stream).await;
    redis.stream_max_len = stream_max_len;
    redis.command(&[
        "ACL", "SETUSER", "bus-b", "on", ">secret", "~*", "&*", "+@all",
    ]);
    let a = Instance::new(&redis, "replay", BusOptions::new()).await;
    let b_url = redis.url.replace("redis://", "redis://bus-b:secret@");
    let b_bus = connect_bus(Kind::Stream, options(&b_url, 50), stream_max_len).await;
    let b = Instance::with_bus(&redis, "replay", b_bus, BusOptions::new()).await;
    for (key, value) in [("k", 1_u64), ("unrelated", 7)] {
        a.cache
            .set(key, &value, CacheStrategy::LongTerm)
            .await
            .unwrap();
    }
    eventually("B received A's writes", async || b.bus().received == 2).await;
    for (key, value) in [("k", 1_u64), ("unrelated", 7)] {
        assert_eq!(b.cache.get::<u64>(key).await.unwrap(), Some(value));
        assert_eq!(b.in_l1(key).await, Some(value));
    }
    (redis, a, b)
}

/// Keeps B's bus away: its user can no longer log in, and its connections are killed.
async fn cut_b_off(redis: &Redis, b: &Instance) {
    redis.command(&["ACL", "SETUSER", "bus-b", "off"]);
    redis.command(&["CLIENT", "KILL", "USER", "bus-b"]);
    eventually("B's bus is disconnected", async || !b.bus().connected).await;
}

fn let_b_back(redis: &Redis) {
    redis.command(&["ACL", "SETUSER", "bus-b", "on"]);
}

/// The stream transport's point: B's reader connection dies, A writes meanwhile, and B applies
/// that write when it is back, without emptying L1 (its unrelated entry survives).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_a_reconnect_replays_what_was_missed_without_a_flush() {
    let (redis, a, b) = stream_pair(100_000).await;
    cut_b_off(&redis, &b).await;
    a.cache
        .set("k", &2_u64, CacheStrategy::LongTerm)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!b.bus().connected, "the write landed while B was away");
    assert_eq!(b.in_l1("k").await, Some(1), "B has not seen it yet");
    let_b_back(&redis);

    eventually("B is back and applied the write it missed", async || {
        let stats = b.bus();
        stats.connected && stats.reconnects >= 1 && b.in_l1("k").await != Some(1)
    })
    .await;
    let stats = b.bus();
    assert_eq!((stats.gaps, stats.l1_flushes), (0, 0), "{stats:?}");
    assert_eq!(
        b.in_l1("unrelated").await,
        Some(7),
        "unrelated entries kept"
    );
    assert_eq!(b.cache.get::<u64>("k").await.unwrap(), Some(2));
}

/// If B's position was trimmed away while it was gone (more than about `max_len` messages), it
/// cannot know what it missed: it reports the gap and empties L1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_a_position_trimmed_away_empties_l1() {
    let (redis, a, b) = stream_pair(10).await;
    cut_b_off(&redis, &b).await;
    for i in 0..500 {
        a.cache.invalidate(&format!("other:{i}")).await.unwrap();
    }
    assert!(!b.bus().connected, "the writes landed while B was away");
    let_b_back(&redis);
    eventually("B reported the gap and flushed", async || {
        let stats = b.bus();
        stats.connected && stats.gaps >= 1 && stats.l1_flushes >= 1
    })
    .await;
    assert_eq!(b.in_l1("unrelated").await, None, "all of L1 emptied");
    assert_eq!(
        b.cache.get::<u64>("k").await.unwrap(),
        Some(1),
        "re-read from Redis"
    );
}

/// Tracking's point: a write by a program that does not use tiercache (here raw commands on
/// the server) invalidates L1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracking_a_write_by_a_plain_redis_client_invalidates_l1() {
    let redis = Redis::start(Kind::Tracking).await;
    let cache = Instance::new(&redis, "plain", BusOptions::new()).await;
    for key in ["k", "other"] {
        cache
            .cache
            .set(key, &1_u64, CacheStrategy::LongTerm)
            .await
            .unwrap();
        // Its own write comes back once: wait for it before filling L1 again.
        eventually("the write reported", async || {
            cache.in_l1(key).await.is_none()
        })
        .await;
        assert_eq!(cache.cache.get::<u64>(key).await.unwrap(), Some(1));
        assert_eq!(cache.in_l1(key).await, Some(1));
    }

    redis.command(&["SET", "plain:k", "written-by-someone-else"]);
    eventually("a plain SET dropped the key", async || {
        cache.in_l1("k").await.is_none()
    })
    .await;
    assert_eq!(cache.in_l1("other").await, Some(1), "other keys stay");

    redis.command(&["DEL", "plain:other"]);
    eventually("a plain DEL dropped the key", async || {
        cache.in_l1("other").await.is_none()
    })
    .await;
}

/// A Redis tier with its own key prefix stores `<prefix><namespace>:<key>`: a tracking bus made
/// from the same options tracks that, not the bare namespace, so other instances still hear of
/// every write (with the prefix unknown to the bus it tracked nothing, silently).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracking_follows_the_tiers_key_prefix() {
    let server = RedisServer::start().unwrap();
    let connect = async || {
        let options = options(&server.url(), 50).key_prefix("svc:");
        let tier = RedisTier::connect_with(options.clone()).await.unwrap();
        let bus = RedisTrackingBus::connect_with(RedisBusOptions::new(options))
            .await
            .unwrap();
        tiercache::Cache::builder()
            .namespace("shop")
            .memory(tiercache::MemoryTier::new(100))
            .tier(tier)
            .bus(bus)
            .build()
            .await
            .unwrap()
    };
    let (writer, reader) = (connect().await, connect().await);
    writer
        .set("k", &1_u64, CacheStrategy::LongTerm)
        .await
        .unwrap();
    assert_eq!(reader.get::<u64>("k").await.unwrap(), Some(1));
    writer
        .set("k", &2_u64, CacheStrategy::LongTerm)
        .await
        .unwrap();
    eventually(
        "the reader hears of the write under the tier's prefix",
        async || reader.get::<u64>("k").await.unwrap() == Some(2),
    )
    .await;
}

/// The stream bus replays what an instance missed while it was away. An update whose TTL ran out
/// meanwhile is not installed for a whole new TTL: its value is as old as its message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_a_replayed_update_keeps_only_the_life_it_had_left() {
    let redis = Redis::start(Kind::Stream).await;
    let updates = || BusOptions::new().updates_up_to(256);
    let writer = Instance::new(&redis, "replay", updates()).await;
    // The reader's bus comes back slowly after losing its connection.
    let slow = connect_bus(Kind::Stream, options(&redis.url, 600), 100_000).await;
    let reader = Instance::with_bus(&redis, "replay", slow, updates()).await;
    writer
        .cache
        .set("warm", &0_u64, CacheStrategy::LongTerm)
        .await
        .unwrap();
    eventually("the reader is reading the stream", async || {
        reader.bus().received == 1
    })
    .await;

    let killed = redis
        .server
        .lock()
        .unwrap()
        .kill_clients_running("xread")
        .unwrap();
    assert!(killed >= 1, "the reader's blocked XREAD was cut");
    let short =
        tiercache::EntryOptions::new(tiercache::CacheStrategy::Custom(Duration::from_millis(200)));
    writer.cache.set("k", &1_u64, short).await.unwrap();
    eventually("the reader replayed the update", async || {
        reader.bus().received >= 2
    })
    .await;
    // Redis let the key expire with its TTL: only an L1 copy could answer.
    assert_eq!(
        reader.cache.get::<u64>("k").await.unwrap(),
        None,
        "an update older than its TTL is not put in L1"
    );
}
