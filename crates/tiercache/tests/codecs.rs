//! A fleet moving from JSON to postcard (then to MessagePack), with compression switched on
//! midway, in a rolling deploy against one real Redis: at every step each instance reads what
//! every other one wrote — from Redis and from the bus's value updates — and writes its own.
#![expect(clippy::unwrap_used, reason = "test helpers fail the test loudly")]

use std::{sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};
use tiercache::{
    Bus, BusOptions, Cache, CacheStrategy, Codec, JsonCodec, MemoryTier, MsgpackCodec,
    PostcardCodec, RedisBus, RedisBusOptions, RedisOptions, RedisTier,
};
use tiercache_testkit::RedisServer;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Product {
    id: u64,
    name: String,
    description: String,
    price_cents: u64,
}

fn product(id: u64, version: u64) -> Product {
    Product {
        id,
        name: format!("product {id} v{version}"),
        description: format!(
            "{} (version {version})",
            "a sturdy oak garden chair ".repeat(20)
        ),
        price_cents: 1_000 + version,
    }
}

async fn instance<C: Codec>(url: &str, codec: C, compress: bool) -> Cache<C> {
    let options = || {
        RedisOptions::from_url(url)
            .unwrap()
            .command_timeout(Duration::from_secs(2))
    };
    let redis = RedisTier::connect_with(options()).await.unwrap();
    let bus: Arc<dyn Bus> = Arc::new(
        RedisBus::connect_with(RedisBusOptions::new(options()))
            .await
            .unwrap(),
    );
    let builder = Cache::builder()
        .namespace("fleet")
        .memory(MemoryTier::new(1_000))
        .tier(redis)
        // Small values travel with the bus message, encoded by the sender's codec.
        .bus_with(bus, BusOptions::new().updates_up_to(4096))
        .codec(codec);
    let builder = if compress {
        builder.compress_above(256)
    } else {
        builder
    };
    builder.build().await.unwrap()
}

/// Raw bytes Redis holds for `key` (the stored form, header and all).
async fn raw(url: &str, key: &str) -> Vec<u8> {
    let tier = RedisTier::connect(url).await.unwrap();
    let cache = Cache::builder()
        .namespace("fleet")
        .tier(tier)
        .build()
        .await
        .unwrap();
    cache.get_bytes(key).await.unwrap().unwrap().to_vec()
}

/// Every instance reads `key` as `expected`, through the bus update and from Redis.
async fn all_read<C1: Codec, C2: Codec, C3: Codec>(
    fleet: (&Cache<C1>, &Cache<C2>, &Cache<C3>),
    key: &str,
    expected: &Product,
) {
    let until = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let seen = (
            fleet.0.get::<Product>(key).await.unwrap(),
            fleet.1.get::<Product>(key).await.unwrap(),
            fleet.2.get::<Product>(key).await.unwrap(),
        );
        let want = Some(expected.clone());
        if (seen.0.as_ref(), seen.1.as_ref(), seen.2.as_ref())
            == (want.as_ref(), want.as_ref(), want.as_ref())
        {
            return;
        }
        assert!(std::time::Instant::now() < until, "{key}: {seen:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_codec_switch_never_loses_a_read() {
    let server = RedisServer::start().unwrap();
    let url = server.url();
    // Step 0: all JSON.
    let a = instance(&url, JsonCodec, false).await;
    let b = instance(&url, JsonCodec, false).await;
    let c = instance(&url, JsonCodec, false).await;
    a.set("p:1", &product(1, 1), CacheStrategy::LongTerm)
        .await
        .unwrap();
    all_read((&a, &b, &c), "p:1", &product(1, 1)).await;

    // Step 1: B restarts on postcard with compression; A and C are still JSON.
    drop(b);
    let b = instance(&url, PostcardCodec, true).await;
    // B reads A's JSON value from Redis.
    assert_eq!(b.get::<Product>("p:1").await.unwrap(), Some(product(1, 1)));
    b.set("p:2", &product(2, 1), CacheStrategy::LongTerm)
        .await
        .unwrap();
    let stored = raw(&url, "p:2").await;
    assert_eq!(stored[1], PostcardCodec::ID, "B writes its own codec");
    all_read((&a, &b, &c), "p:2", &product(2, 1)).await;
    // Values written by B and read from Redis by instances that have nothing in L1.
    let newcomer = instance(&url, JsonCodec, false).await;
    assert_eq!(
        newcomer.get::<Product>("p:2").await.unwrap(),
        Some(product(2, 1))
    );
    // A writes again; B and C see it.
    a.set("p:2", &product(2, 2), CacheStrategy::LongTerm)
        .await
        .unwrap();
    all_read((&a, &b, &c), "p:2", &product(2, 2)).await;

    // Step 2: A and C restart on MessagePack (one of them compressing): three codecs at once.
    drop(a);
    let a = instance(&url, MsgpackCodec, true).await;
    drop(c);
    let c = instance(&url, PostcardCodec, false).await;
    for (writer, version) in [(0, 3), (1, 4), (2, 5)] {
        let value = product(3, version);
        match writer {
            0 => a.set("p:3", &value, CacheStrategy::LongTerm).await.unwrap(),
            1 => b.set("p:3", &value, CacheStrategy::LongTerm).await.unwrap(),
            _ => c.set("p:3", &value, CacheStrategy::LongTerm).await.unwrap(),
        }
        all_read((&a, &b, &c), "p:3", &value).await;
    }
    // What each left in Redis: the last writer's codec (postcard, uncompressed).
    assert_eq!(raw(&url, "p:3").await[1], PostcardCodec::ID);
    // get_or_compute on every instance finds the value in Redis instead of loading it.
    let fresh = instance(&url, MsgpackCodec, false).await;
    let loaded: Product = fresh
        .get_or_compute("p:3", CacheStrategy::LongTerm, || async {
            Err::<Product, _>(std::io::Error::other("must not load"))
        })
        .await
        .unwrap();
    assert_eq!(loaded, product(3, 5));
}

#[tokio::test]
async fn compression_shrinks_what_redis_holds() {
    let server = RedisServer::start().unwrap();
    let url = server.url();
    let plain = instance(&url, JsonCodec, false).await;
    let compressing = instance(&url, JsonCodec, true).await;
    plain
        .set("plain", &product(9, 1), CacheStrategy::LongTerm)
        .await
        .unwrap();
    compressing
        .set("small", &product(9, 1), CacheStrategy::LongTerm)
        .await
        .unwrap();
    let (plain_len, compressed_len) = (
        raw(&url, "plain").await.len(),
        raw(&url, "small").await.len(),
    );
    assert!(
        compressed_len * 3 < plain_len,
        "{compressed_len} vs {plain_len}"
    );
    assert_eq!(
        plain.get::<Product>("small").await.unwrap(),
        Some(product(9, 1))
    );
}
