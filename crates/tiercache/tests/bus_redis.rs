//! The multi-instance suite on Redis Pub/Sub, against a redis-server the test starts, which the
//! outage check kills and restarts.
#![expect(clippy::unwrap_used, reason = "test helpers fail the test loudly")]

mod bus_suite;

use std::{sync::Arc, time::Duration};

use bus_suite::Transport;
use tiercache::{RedisBus, RedisBusOptions, RedisOptions, RedisTier, Tier};
use tiercache_redis::fred::types::config::ReconnectPolicy;
use tiercache_testkit::RedisServer;

struct Redis {
    server: std::sync::Mutex<RedisServer>,
    url: String,
    tier: Arc<RedisTier>,
}

fn options(url: &str) -> RedisOptions {
    RedisOptions::from_url(url)
        .unwrap()
        .command_timeout(Duration::from_millis(500))
        .reconnect_policy(ReconnectPolicy::new_constant(0, 50))
}

impl Redis {
    async fn start() -> Self {
        let server = RedisServer::start().unwrap();
        let url = server.url();
        let tier = Arc::new(RedisTier::connect_with(options(&url)).await.unwrap());
        Self {
            server: std::sync::Mutex::new(server),
            url,
            tier,
        }
    }
}

impl Transport for Redis {
    type Bus = RedisBus;

    async fn bus(&self) -> RedisBus {
        RedisBus::connect_with(RedisBusOptions::new(options(&self.url)))
            .await
            .unwrap()
    }

    fn shared_tier(&self) -> Arc<dyn Tier> {
        self.tier.clone()
    }

    async fn outage(&self) {
        self.server.lock().unwrap().stop();
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.server.lock().unwrap().restart().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_reaches_every_other_l1() {
    bus_suite::a_set_reaches_every_other_l1(&Redis::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_and_clear_reach_every_l1() {
    bus_suite::prefix_and_clear_reach_every_l1(&Redis::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fills_do_not_publish() {
    bus_suite::fills_do_not_publish(&Redis::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_beats_a_racing_load() {
    bus_suite::an_invalidation_beats_a_racing_load(&Redis::start().await, 1_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_empties_l1_and_the_bus_recovers() {
    bus_suite::a_gap_empties_l1_and_the_bus_recovers(&Redis::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_updates_carry_their_value() {
    bus_suite::small_updates_carry_their_value(&Redis::start().await).await;
}

/// Garbage on the channel (another program, an old version) is counted and dropped; the
/// subscription goes on and the next real message is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_are_counted_and_the_bus_goes_on() {
    let redis = Redis::start().await;
    let a = bus_suite::Instance::new(&redis, "garbage", tiercache::BusOptions::new()).await;
    let b = bus_suite::Instance::new(&redis, "garbage", tiercache::BusOptions::new()).await;
    a.cache
        .set("k", &1_u64, tiercache::CacheStrategy::LongTerm)
        .await
        .unwrap();
    bus_suite::eventually("B received A's write", async || b.bus().received == 1).await;
    assert_eq!(b.cache.get::<u64>("k").await.unwrap(), Some(1));

    let mut truncated = vec![0xB7_u8, 1, 1, 0];
    truncated.extend([0xFF; 10]);
    for payload in ["garbage", "", &String::from_utf8_lossy(&truncated)] {
        let server = redis.server.lock().unwrap();
        server
            .command(&["PUBLISH", "tiercache:bus:garbage", payload])
            .unwrap();
    }
    bus_suite::eventually("B counted three bad messages", async || {
        b.bus().bad_messages == 3
    })
    .await;
    assert_eq!(b.in_l1("k").await, Some(1), "bad messages change nothing");

    a.cache
        .set("k", &2_u64, tiercache::CacheStrategy::LongTerm)
        .await
        .unwrap();
    bus_suite::eventually("B still applies real messages", async || {
        b.in_l1("k").await.is_none()
    })
    .await;
}

/// Only the subscriber connections die (the server and its data stay): the bus reconnects,
/// subscribes again, reports the gap, and invalidation works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_subscriber_connection_resubscribes_and_reports_the_gap() {
    let redis = Redis::start().await;
    let all = bus_suite::instances(&redis, "killed", 2).await;
    all[0]
        .cache
        .set("k", &1_u64, tiercache::CacheStrategy::LongTerm)
        .await
        .unwrap();
    bus_suite::warm(&all, "k", 1).await;

    let killed = redis
        .server
        .lock()
        .unwrap()
        .command(&["CLIENT", "KILL", "TYPE", "pubsub"])
        .unwrap();
    assert_eq!(
        killed.trim().trim_start_matches(":"),
        "2",
        "one subscriber per instance"
    );
    for instance in &all {
        bus_suite::eventually("the bus resubscribed and reported the gap", async || {
            let stats = instance.bus();
            stats.reconnects >= 1 && stats.gaps >= 1 && stats.connected
        })
        .await;
        assert_eq!(instance.in_l1("k").await, None, "L1 emptied after the gap");
    }
    bus_suite::warm(&all, "k", 1).await;
    bus_suite::write_and_expect_others_to_drop(&all, 0, "k", 1, 2).await;
}

/// The bus on a three-primary cluster: PUBLISH reaches subscribers on every node.
struct Cluster {
    cluster: tiercache_testkit::RedisCluster,
    tier: Arc<RedisTier>,
}

impl Transport for Cluster {
    type Bus = RedisBus;

    async fn bus(&self) -> RedisBus {
        RedisBus::connect_with(RedisBusOptions::new(options(&self.cluster.url())))
            .await
            .unwrap()
    }

    fn shared_tier(&self) -> Arc<dyn Tier> {
        self.tier.clone()
    }

    async fn outage(&self) {
        for node in self.cluster.nodes() {
            node.command(&["CLIENT", "KILL", "TYPE", "pubsub"]).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suite_on_a_cluster() {
    let cluster = tiercache_testkit::RedisCluster::start().unwrap();
    let tier = Arc::new(
        RedisTier::connect_with(options(&cluster.url()))
            .await
            .unwrap(),
    );
    let transport = Cluster { cluster, tier };
    bus_suite::a_set_reaches_every_other_l1(&transport).await;
    bus_suite::prefix_and_clear_reach_every_l1(&transport).await;
    bus_suite::a_gap_empties_l1_and_the_bus_recovers(&transport).await;
}
