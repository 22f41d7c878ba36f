//! The whole cache runs as a Redis user limited to its namespace's keys, its bus channel and the
//! commands it uses — the ACL the README's Security section gives — on every transport, with
//! tags, leases, prefixes and clear; the Streams adapter adds its own stream keys and group
//! commands. A command the user may not run is an error that names it.
#![expect(clippy::unwrap_used, reason = "test helpers fail the test loudly")]

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tiercache::{
    Bus, BusStats, Cache, CacheStrategy, EntryOptions, Error, MemoryTier, RedisBus, RedisStreamBus,
    RedisTier, RedisTrackingBus,
    streams::{GroupStart, Streams},
};
use tiercache_testkit::RedisServer;

const PASSWORD: &str = "cache-pw";

/// The rules of the cache's user, for namespace `shop` (keep in step with README.md, Security).
const CACHE_RULES: &[&str] = &[
    "~shop:*",
    "&tiercache:bus:shop",
    "+get",
    "+set",
    "+mget",
    "+unlink",
    "+scan",
    "+evalsha",
    "+eval",
    "+script|load",
    "+del",
    "+type",
    "+pttl",
    "+ping",
    "+publish",
    "+subscribe",
    "+xadd",
    "+xread",
    "+xrange",
    "+xrevrange",
    "+xlen",
    "+exists",
    "+client|tracking",
];

/// What the Streams adapter needs on top, for streams under `events:`.
const STREAMS_RULES: &[&str] = &[
    "~events:*",
    "+xgroup|create",
    "+xreadgroup",
    "+xack",
    "+xpending",
    "+xautoclaim",
];

/// A server where user `name` has only `rules` (and the default user, for the test harness,
/// everything).
fn server_with_user(name: &str, rules: &[&str]) -> RedisServer {
    let password = format!(">{PASSWORD}");
    let mut args = vec![
        "--user",
        name,
        "on",
        &password,
        "resetkeys",
        "resetchannels",
        "-@all",
    ];
    args.extend_from_slice(rules);
    RedisServer::start_with(&args).unwrap()
}

fn url_of(server: &RedisServer, user: &str) -> String {
    format!("redis://{user}:{PASSWORD}@127.0.0.1:{}", server.port())
}

#[derive(Clone, Copy, Debug)]
enum Transport {
    PubSub,
    Stream,
    Tracking,
}

async fn connect(url: &str, transport: Transport) -> Arc<dyn Bus> {
    match transport {
        Transport::PubSub => Arc::new(RedisBus::connect(url).await.unwrap()),
        Transport::Stream => Arc::new(RedisStreamBus::connect(url).await.unwrap()),
        Transport::Tracking => Arc::new(RedisTrackingBus::connect(url).await.unwrap()),
    }
}

async fn instance(url: &str, transport: Transport) -> Cache {
    Cache::builder()
        .namespace("shop")
        .memory(MemoryTier::new(100))
        .tier(RedisTier::connect(url).await.unwrap())
        .bus(connect(url, transport).await)
        .build()
        .await
        .unwrap()
}

/// Waits until `reader` answers `expected` for `key`, at most 3 s.
async fn seen(reader: &Cache, key: &str, expected: Option<u32>) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while reader.get::<u32>(key).await.unwrap() != expected {
        assert!(Instant::now() < deadline, "{key} never became {expected:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn no_failures(stats: &tiercache::CacheStats, bus: Option<BusStats>) {
    for tier in &stats.tiers {
        assert_eq!((tier.errors, tier.circuit_opens), (0, 0), "{tier:?}");
    }
    if let Some(bus) = bus {
        assert_eq!(bus.publish_errors, 0, "{bus:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_cache_runs_as_a_user_limited_to_its_namespace() {
    let server = server_with_user("cache", CACHE_RULES);
    let url = url_of(&server, "cache");
    for transport in [Transport::PubSub, Transport::Stream, Transport::Tracking] {
        let writer = instance(&url, transport).await;
        let reader = instance(&url, transport).await;
        writer.clear().await.unwrap();

        writer
            .set("plain", &1_u32, CacheStrategy::LongTerm)
            .await
            .unwrap();
        seen(&reader, "plain", Some(1)).await;
        let tagged = EntryOptions::new(CacheStrategy::LongTerm).tags(["sku:7"]);
        let loaded = reader
            .get_or_compute("loaded", tagged, || async {
                Ok::<_, std::io::Error>(2_u32)
            })
            .await
            .unwrap();
        assert_eq!(loaded, 2);
        let absent = reader
            .get_or_compute_optional(
                "absent",
                EntryOptions::new(CacheStrategy::LongTerm).negative_ttl(Duration::from_secs(60)),
                || async { Ok::<Option<u32>, std::io::Error>(None) },
            )
            .await
            .unwrap();
        assert_eq!(absent, None);
        writer
            .set_many(&[("many:1", 3_u32), ("many:2", 4)], CacheStrategy::LongTerm)
            .await
            .unwrap();
        assert_eq!(
            reader.get_many::<u32>(&["many:1", "many:2"]).await.unwrap(),
            vec![Some(3), Some(4)]
        );

        writer
            .set("plain", &5_u32, CacheStrategy::LongTerm)
            .await
            .unwrap();
        seen(&reader, "plain", Some(5)).await;
        writer.invalidate_tag("sku:7").await.unwrap();
        seen(&reader, "loaded", None).await;
        writer.invalidate_prefix("many:").await.unwrap();
        seen(&reader, "many:1", None).await;
        writer.invalidate("plain").await.unwrap();
        seen(&reader, "plain", None).await;
        writer.clear().await.unwrap();

        no_failures(&writer.stats(), writer.stats().bus);
        no_failures(&reader.stats(), reader.stats().bus);
        let bus = reader.stats().bus.unwrap();
        assert!(bus.connected, "{transport:?}: {bus:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_streams_adapter_runs_with_its_own_keys_and_group_commands() {
    let rules: Vec<&str> = CACHE_RULES.iter().chain(STREAMS_RULES).copied().collect();
    let server = server_with_user("events", &rules);
    let streams = Streams::connect(&url_of(&server, "events")).await.unwrap();
    let orders = streams.typed::<u32>("events:orders").max_len(1_000);
    let worker = orders.group("billing", "worker-1").await.unwrap();
    worker.create(GroupStart::Beginning).await.unwrap();
    for n in 0..5 {
        orders.publish(&n).await.unwrap();
    }
    let read = worker.read(Some(Duration::from_millis(100))).await.unwrap();
    let read: Vec<_> = read.into_iter().map(Result::unwrap).collect();
    let values: Vec<u32> = read.iter().map(|item| item.value).collect();
    assert_eq!(values, vec![0, 1, 2, 3, 4]);
    let ids: Vec<_> = read.iter().map(|item| item.id).collect();
    assert_eq!(worker.ack(&ids).await.unwrap(), 5);
    assert_eq!(worker.pending().await.unwrap().count, 0);
    assert!(worker.claim_idle(Duration::ZERO).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_the_user_may_not_run_is_an_error_naming_it() {
    let without_publish: Vec<&str> = CACHE_RULES
        .iter()
        .copied()
        .filter(|rule| *rule != "+publish")
        .collect();
    let server = server_with_user("cache", &without_publish);
    let url = url_of(&server, "cache");
    let cache = instance(&url, Transport::PubSub).await;
    let err = cache
        .set("k", &1_u32, CacheStrategy::LongTerm)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("NOPERM") && text.to_lowercase().contains("publish"),
        "{text}"
    );

    // A key outside the namespace is refused by the server too, and named.
    let outside = Cache::builder()
        .namespace("elsewhere")
        .tier(RedisTier::connect(&url).await.unwrap())
        .build()
        .await
        .unwrap();
    let err = outside
        .set("k", &1_u32, CacheStrategy::LongTerm)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Refused { tier, key: Some(key), .. } if tier == "redis" && key == "elsewhere:k"),
        "{err:?}"
    );
    assert!(err.to_string().contains("NOPERM"), "{err}");
    assert!(!format!("{err:?}").contains(PASSWORD));
}
