//! What someone who can publish on the bus but lacks the fleet's key can do: nothing. Forged,
//! wrongly signed, elsewhere signed and garbage messages are dropped and counted, a recorded
//! message sent again is dropped as a replay (and one too old to tell keeps only its
//! invalidation); on a bus without a key, a flood of clears empties L1 once per interval and a
//! value planted with an endless TTL lives no longer than the receiver allows.
#![expect(clippy::unwrap_used, reason = "test helpers fail the test loudly")]

use std::time::{Duration, Instant};

use tiercache::{
    BusKey, BusOptions, Cache, CacheStrategy, Error, MemoryTier, RedisBus, RedisTier,
    RedisTrackingBus,
};
use tiercache_bus::wire;
use tiercache_core::{BusMessage, InstanceId, Invalidation};
use tiercache_testkit::RedisServer;

const CHANNEL: &[u8] = b"tiercache:bus:guarded";

fn key() -> BusKey {
    BusKey::new(b"a fleet secret of thirty-two b..").unwrap()
}

/// What the instances' MACs are bound to: their channel and namespace.
fn here() -> Vec<u8> {
    wire::context("tiercache:bus:guarded", "guarded:")
}

fn sign(message: &BusMessage) -> tiercache::Bytes {
    wire::encode_signed(message, &key(), &here()).unwrap()
}

/// An instance of namespace "guarded" with an L1 over `server`, on a Pub/Sub bus with `options`.
async fn instance(server: &RedisServer, options: BusOptions) -> Cache {
    Cache::builder()
        .namespace("guarded")
        .memory(MemoryTier::new(100))
        .tier(RedisTier::connect(&server.url()).await.unwrap())
        .bus_with(RedisBus::connect(&server.url()).await.unwrap(), options)
        .build()
        .await
        .unwrap()
}

/// A message from a sender that is not one of the test's caches.
fn from_outside(sequence: u64, invalidation: Invalidation) -> BusMessage {
    BusMessage {
        origin: InstanceId(0xbad),
        sequence,
        sender_lost_messages: false,
        sent_at_ms: tiercache_core::unix_millis(),
        invalidation,
    }
}

fn publish(server: &RedisServer, payload: &[u8]) {
    let reply = server
        .command_bytes(&[b"PUBLISH", CHANNEL, payload])
        .unwrap();
    assert_eq!(reply, ":2", "both instances are subscribed");
}

/// The value `encoded` as `cache` stores it (header and all), read back from its Redis.
async fn encoded(server: &RedisServer, key: &str) -> tiercache::Bytes {
    use tiercache::Tier;
    let tier = RedisTier::connect(&server.url()).await.unwrap();
    tier.get(&format!("guarded:{key}"))
        .await
        .unwrap()
        .unwrap()
        .value
}

/// Waits until `check` holds, at most 2 s.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while !check().await {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_key_a_publisher_changes_nothing_and_a_replay_is_dropped() {
    let server = RedisServer::start().unwrap();
    let guarded = || BusOptions::new().authenticate_with(key());
    let writer = instance(&server, guarded()).await;
    let reader = instance(&server, guarded()).await;
    writer
        .set("price", &1_u32, CacheStrategy::LongTerm)
        .await
        .unwrap();
    writer
        .set("bait", &666_u32, CacheStrategy::LongTerm)
        .await
        .unwrap();
    let planted = encoded(&server, "bait").await;
    // Both invalidations in, so none of them empties what the next read puts in L1.
    eventually("the writer's sets heard", async || {
        reader.stats().bus.unwrap().received == 2
    })
    .await;
    assert_eq!(reader.get::<u32>("price").await.unwrap(), Some(1));
    let plant = Invalidation::Update {
        key: "price".into(),
        value: planted,
        ttl: Duration::from_secs(3_600),
    };

    // Unsigned, signed with another key, signed for another namespace's channel, cut short,
    // and garbage.
    let other = BusKey::new([9_u8; 32]).unwrap();
    let unsigned = wire::encode(&from_outside(1, Invalidation::Clear)).unwrap();
    let wrong_key = wire::encode_signed(&from_outside(2, plant.clone()), &other, &here()).unwrap();
    let elsewhere = wire::context("tiercache:bus:users", "users:");
    let wrong_place =
        wire::encode_signed(&from_outside(2, plant.clone()), &key(), &elsewhere).unwrap();
    let signed = sign(&from_outside(3, plant.clone()));
    let cut = &signed[..signed.len() - 1];
    for payload in [
        &unsigned[..],
        &wrong_key[..],
        &wrong_place[..],
        cut,
        b"\xb7\x02garbage",
    ] {
        publish(&server, payload);
    }
    eventually("five messages dropped", async || {
        reader.stats().bus.unwrap().unauthenticated == 5
    })
    .await;
    let bus = reader.stats().bus.unwrap();
    // With a key, bytes without a MAC that verifies are unauthenticated before anything else.
    assert_eq!(
        (bus.unauthenticated, bus.bad_messages, bus.l1_flushes),
        (5, 0, 0),
        "{bus:?}"
    );
    assert_eq!(bus.received, 2, "the writer's two sets only");
    assert_eq!(reader.get::<u32>("price").await.unwrap(), Some(1));
    assert_eq!(reader.stats().memory.unwrap().hits, 1, "L1 was not emptied");

    // A message signed with the key is applied once; sent again (recorded and replayed), it is
    // dropped, and the newer write it would undo stays.
    publish(&server, &signed);
    eventually("the signed update applied", async || {
        reader.get::<u32>("price").await.unwrap() == Some(666)
    })
    .await;
    writer
        .set("price", &2_u32, CacheStrategy::LongTerm)
        .await
        .unwrap();
    eventually("the newer write seen", async || {
        reader.get::<u32>("price").await.unwrap() == Some(2)
    })
    .await;
    publish(&server, &signed);
    eventually("the replay dropped", async || {
        reader.stats().bus.unwrap().replayed == 1
    })
    .await;
    let hits = reader.stats().memory.unwrap().hits;
    assert_eq!(reader.get::<u32>("price").await.unwrap(), Some(2));
    assert_eq!(reader.stats().memory.unwrap().hits, hits + 1, "still in L1");

    // A signed update far behind its sender's newest message cannot be told from a replay: its
    // value is not planted, but its key is dropped (it may be a real message held up).
    let keys = Invalidation::Keys(vec!["other".into()]);
    publish(&server, &sign(&from_outside(5_000, keys)));
    publish(&server, &sign(&from_outside(2_000, plant)));
    eventually("the late update seen", async || {
        reader.stats().bus.unwrap().replayed == 2
    })
    .await;
    let hits = reader.stats().memory.unwrap().hits;
    assert_eq!(reader.get::<u32>("price").await.unwrap(), Some(2));
    assert_eq!(
        reader.stats().memory.unwrap().hits,
        hits,
        "read again from Redis: the key was dropped, not set"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_clears_empties_l1_once_per_interval_and_the_last_is_not_lost() {
    let server = RedisServer::start().unwrap();
    let interval = Duration::from_millis(300);
    // No key: anyone who can PUBLISH can send clears.
    let options = || BusOptions::new().flush_at_most_every(interval);
    let writer = instance(&server, options()).await;
    let reader = instance(&server, options()).await;
    writer
        .set("price", &1_u32, CacheStrategy::LongTerm)
        .await
        .unwrap();

    let started = Instant::now();
    for sequence in 1..=200 {
        let clear = wire::encode(&from_outside(sequence, Invalidation::Clear));
        publish(&server, &clear.unwrap());
        // Filled again between clears.
        assert!(reader.get::<u32>("price").await.unwrap().is_some());
    }
    // One more after the last read filled L1: whether it is carried out at once or folded into
    // a flush due later, L1 is emptied after it came.
    let last = wire::encode(&from_outside(201, Invalidation::Clear));
    publish(&server, &last.unwrap());
    let flooded_for = started.elapsed();
    eventually("every clear seen", async || {
        let bus = reader.stats().bus.unwrap();
        bus.l1_flushes + bus.flushes_coalesced == 201
    })
    .await;
    tokio::time::sleep(interval * 2).await;
    let misses = reader.stats().memory.unwrap().misses;
    assert!(reader.get::<u32>("price").await.unwrap().is_some());
    assert_eq!(
        reader.stats().memory.unwrap().misses,
        misses + 1,
        "the last clear was not lost: L1 no longer held the value"
    );
    let bus = reader.stats().bus.unwrap();
    let most = flooded_for.as_millis() / interval.as_millis() + 2;
    assert!(
        u128::from(bus.l1_flushes) <= most,
        "{} flushes in {flooded_for:?}: {bus:?}",
        bus.l1_flushes
    );
    assert!(bus.flushes_coalesced >= 150, "{bus:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_value_lives_no_longer_than_the_receiver_allows() {
    let server = RedisServer::start().unwrap();
    let cap = Duration::from_millis(300);
    let options = || BusOptions::new().max_update_ttl(cap);
    let writer = instance(&server, options()).await;
    let reader = instance(&server, options()).await;
    writer
        .set("bait", &666_u32, CacheStrategy::LongTerm)
        .await
        .unwrap();
    let value = encoded(&server, "bait").await;
    // No key on this bus, so the channel is trusted; the TTL is not: u64::MAX milliseconds.
    let endless = Invalidation::Update {
        key: "planted".into(),
        value,
        ttl: Duration::from_millis(u64::MAX),
    };
    let planted_at = Instant::now();
    publish(&server, &wire::encode(&from_outside(1, endless)).unwrap());
    eventually("the update applied", async || {
        // The writer's set of "bait" first, then the planted update.
        reader.stats().bus.unwrap().received == 2
    })
    .await;
    assert_eq!(reader.get::<u32>("planted").await.unwrap(), Some(666));
    tokio::time::sleep((planted_at + cap + Duration::from_millis(100)) - Instant::now()).await;
    assert_eq!(
        reader.get::<u32>("planted").await.unwrap(),
        None,
        "gone from L1 after the receiver's cap (and never in Redis)"
    );
}

#[tokio::test]
async fn a_key_with_a_transport_that_cannot_authenticate_is_refused() {
    let server = RedisServer::start().unwrap();
    let err = Cache::builder()
        .namespace("guarded")
        .memory(MemoryTier::new(10))
        .tier(RedisTier::connect(&server.url()).await.unwrap())
        .bus_with(
            RedisTrackingBus::connect(&server.url()).await.unwrap(),
            BusOptions::new().authenticate_with(key()),
        )
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Config(text) if text.contains("cannot authenticate")),
        "{err}"
    );
    assert!(!format!("{err} {err:?}").contains("fleet secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_time_learned_while_a_flush_waits_is_not_forgotten_by_it() {
    let server = RedisServer::start().unwrap();
    let interval = Duration::from_millis(300);
    let options = || BusOptions::new().flush_at_most_every(interval);
    let writer = instance(&server, options()).await;
    let reader = instance(&server, options()).await;
    // A value tagged "t", written now; its bytes go out in an update only later.
    let tagged = tiercache::EntryOptions::new(CacheStrategy::LongTerm).tags(["t"]);
    writer.set("k", &1_u32, tagged).await.unwrap();
    let old_bytes = encoded(&server, "k").await;
    tokio::time::sleep(Duration::from_millis(5)).await;

    // Two gaps: the first flushes at once, the second waits for the interval. Meanwhile "t" is
    // invalidated (after the value was written).
    let mut lost = from_outside(1, Invalidation::Keys(vec!["x".into()]));
    lost.sender_lost_messages = true;
    publish(&server, &wire::encode(&lost).unwrap());
    lost.sequence = 2;
    publish(&server, &wire::encode(&lost).unwrap());
    let tag = Invalidation::Tag {
        tag: "t".into(),
        invalidated_at_ms: tiercache_core::unix_millis(),
    };
    publish(&server, &wire::encode(&from_outside(3, tag)).unwrap());
    eventually("the waiting flush done", async || {
        reader.stats().bus.unwrap().l1_flushes == 2
    })
    .await;

    // Another instance's update of the value written before the tag's invalidation arrives late
    // (messages of different senders come in any order): it must not be planted.
    let late = Invalidation::Update {
        key: "k".into(),
        value: old_bytes,
        ttl: Duration::from_secs(60),
    };
    publish(&server, &wire::encode(&from_outside(4, late)).unwrap());
    eventually("the update handled", async || {
        // The writer's set, the two gaps' messages, the tag, the update.
        reader.stats().bus.unwrap().received == 5
    })
    .await;
    assert_eq!(
        reader.get::<u32>("k").await.unwrap(),
        None,
        "a value of an invalidated tag was served"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_old_tag_time_does_not_bring_back_what_the_tag_hid() {
    let server = RedisServer::start().unwrap();
    let guarded = || BusOptions::new().authenticate_with(key());
    let writer = instance(&server, guarded()).await;
    let tagged = tiercache::EntryOptions::new(CacheStrategy::LongTerm).tags(["sku:7"]);
    writer.set("price", &1_u32, tagged).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    // The tag is invalidated: its marker in Redis hides the value, which Redis still holds.
    writer.invalidate_tag("sku:7").await.unwrap();

    // An instance that starts afterwards knows nothing of the tag. Someone replays a signed tag
    // message recorded long ago (an old time, from a sender it has never heard of).
    let reader = instance(&server, guarded()).await;
    let mut recorded = from_outside(
        7,
        Invalidation::Tag {
            tag: "sku:7".into(),
            invalidated_at_ms: 1,
        },
    );
    recorded.sent_at_ms = tiercache_core::unix_millis() - 3_600_000;
    publish(&server, &sign(&recorded));
    eventually("the late message seen", async || {
        reader.stats().bus.unwrap().replayed == 1
    })
    .await;
    assert_eq!(
        reader.get::<u32>("price").await.unwrap(),
        None,
        "an old tag time was trusted over the marker"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_marker_read_while_a_gap_flush_waits_is_not_trusted_after_it() {
    use tiercache::{MokaTier, Tier};
    let server = RedisServer::start().unwrap();
    let interval = Duration::from_millis(300);
    // The reader has an in-process tier below L1, whose markers only its own bus messages keep
    // up to date; it hears nothing of the writer (another channel): every tag message lost.
    let in_process = MokaTier::new(100);
    let reader = Cache::builder()
        .namespace("guarded")
        .memory(MemoryTier::new(100))
        .tier(in_process.clone())
        .tier(RedisTier::connect(&server.url()).await.unwrap())
        .bus_with(
            RedisBus::connect(&server.url()).await.unwrap(),
            BusOptions::new().flush_at_most_every(interval),
        )
        .build()
        .await
        .unwrap();
    let writer = instance(&server, BusOptions::new().channel("elsewhere")).await;
    let tagged = tiercache::EntryOptions::new(CacheStrategy::LongTerm).tags(["sku:7"]);
    writer.set("price", &1_u32, tagged).await.unwrap();
    let old = encoded(&server, "price").await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    writer.invalidate_tag("sku:7").await.unwrap();

    // A gap empties everything; the in-process tier then gets the old value back (a copy made
    // before the invalidation), and a second gap comes within the interval: its flush waits.
    let publish_one = |payload: &[u8]| {
        let reply = server
            .command_bytes(&[b"PUBLISH", CHANNEL, payload])
            .unwrap();
        assert_eq!(reply, ":1", "the reader is subscribed");
    };
    let mut lost = from_outside(1, Invalidation::Keys(vec!["x".into()]));
    lost.sender_lost_messages = true;
    publish_one(&wire::encode(&lost).unwrap());
    eventually("the first flush", async || {
        reader.stats().bus.unwrap().l1_flushes == 1
    })
    .await;
    let far = Instant::now() + Duration::from_secs(3_600);
    in_process
        .set("guarded:price", tiercache::Entry::expiring_at(old, far))
        .await
        .unwrap();
    lost.sequence = 2;
    publish_one(&wire::encode(&lost).unwrap());
    eventually("the second gap seen", async || {
        reader.stats().bus.unwrap().gaps == 2
    })
    .await;
    // Meanwhile a read finds the copy below L1 and that tier's (absent) marker: "never".
    assert_eq!(reader.get::<u32>("price").await.unwrap(), Some(1));
    eventually("the waiting flush done", async || {
        reader.stats().bus.unwrap().l1_flushes == 2
    })
    .await;
    // After the flush, what that tier said of the tag is not trusted: Redis's marker is read.
    assert_eq!(
        reader.get::<u32>("price").await.unwrap(),
        None,
        "a marker read before the flush hid the tag's invalidation after it"
    );
}
