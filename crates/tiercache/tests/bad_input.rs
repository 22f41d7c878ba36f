//! Bad input never panics and never writes: bad keys, values that do not encode, and bytes in a
//! lower tier that do not decode.
#![expect(clippy::unwrap_used, reason = "test helpers fail the test loudly")]

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use tiercache::{Cache, CacheStrategy, Error, MAX_KEY_LEN, MemoryTier};
use tiercache_testkit::MapTier;

async fn cache_over(l2: &MapTier, schema_version: u16) -> Cache {
    Cache::builder()
        .namespace("ns")
        .memory(MemoryTier::new(1_000))
        .tier(l2.clone())
        .schema_version(schema_version)
        .build()
        .await
        .unwrap()
}

fn is_invalid_key<T>(result: &tiercache::Result<T>) -> bool {
    matches!(result, Err(Error::InvalidKey { .. }))
}

#[tokio::test]
async fn bad_keys_are_rejected_everywhere_and_nothing_is_written() {
    let l2 = MapTier::new("l2");
    let cache = cache_over(&l2, 0).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let too_long = "k".repeat(MAX_KEY_LEN + 1);
    for key in [
        "",
        too_long.as_str(),
        "line\nbreak",
        "nul\0",
        "tab\there",
        "del\u{7f}",
    ] {
        assert!(
            is_invalid_key(&cache.set(key, &1u8, CacheStrategy::ShortTerm).await),
            "{key:?}"
        );
        assert!(is_invalid_key(&cache.get::<u8>(key).await), "{key:?}");
        assert!(is_invalid_key(
            &cache
                .set_bytes(key, vec![1], CacheStrategy::ShortTerm)
                .await
        ));
        assert!(is_invalid_key(&cache.get_bytes(key).await));
        assert!(is_invalid_key(&cache.invalidate(key).await));
        assert!(is_invalid_key(&cache.invalidate_prefix(key).await));
        let calls = calls.clone();
        let loaded = cache
            .get_or_compute(key, CacheStrategy::ShortTerm, || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok::<_, Error>(1u8)
            })
            .await;
        assert!(is_invalid_key(&loaded), "{key:?}");
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "no loader runs for a bad key"
    );
    assert!(l2.keys().is_empty(), "nothing is written for a bad key");
    assert_eq!(cache.loads_in_flight(), 0);

    let longest = "k".repeat(MAX_KEY_LEN);
    cache
        .set(&longest, &1u8, CacheStrategy::ShortTerm)
        .await
        .unwrap();
    assert_eq!(cache.get::<u8>(&longest).await.unwrap(), Some(1));
}

#[tokio::test]
async fn a_bad_namespace_is_rejected_by_the_builder() {
    let built = Cache::builder()
        .namespace("a\nb")
        .memory(MemoryTier::new(10))
        .build()
        .await;
    assert!(matches!(built, Err(Error::InvalidKey { .. })));
}

#[tokio::test]
async fn a_value_that_does_not_encode_is_an_error_naming_its_type_and_writes_nothing() {
    let l2 = MapTier::new("l2");
    let cache = cache_over(&l2, 0).await;
    // JSON object keys must be strings, so this map cannot be encoded.
    let unencodable: HashMap<(u8, u8), u8> = HashMap::from([((1, 2), 3)]);
    let err = cache
        .set("map", &unencodable, CacheStrategy::ShortTerm)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Encode { type_name, .. } if type_name.contains("HashMap")),
        "{err}"
    );
    assert!(err.to_string().contains("\"map\""), "{err}");
    assert_eq!(
        cache.get::<HashMap<(u8, u8), u8>>("map").await.unwrap(),
        None
    );
    assert!(l2.keys().is_empty());

    let loaded = cache
        .get_or_compute("map", CacheStrategy::ShortTerm, || async {
            Ok::<_, Error>(unencodable)
        })
        .await;
    assert!(matches!(loaded, Err(Error::Encode { .. })));
    assert_eq!(cache.loads_in_flight(), 0);
}

#[tokio::test]
async fn undecodable_bytes_below_are_a_counted_miss_and_get_overwritten() {
    let l2 = MapTier::new("l2");
    let cache = cache_over(&l2, 0).await;
    let in_a_minute = Instant::now() + Duration::from_secs(60);
    for (key, junk) in [
        ("garbage", &b"\xff\x00not ours"[..]),
        ("empty", b""),
        ("json", b"{\"id\":1}"),
    ] {
        l2.put_raw(&format!("ns:{key}"), junk, in_a_minute);
        assert_eq!(cache.get::<u64>(key).await.unwrap(), None, "{key}");
    }
    assert_eq!(cache.stats().tier("l2").map(|t| t.decode_errors), Some(3));

    let loaded = cache
        .get_or_compute("garbage", CacheStrategy::ShortTerm, || async {
            Ok::<_, Error>(42u64)
        })
        .await
        .unwrap();
    assert_eq!(loaded, 42);
    settled(&cache).await;
    let fresh = cache_over(&l2, 0).await;
    assert_eq!(
        fresh.get::<u64>("garbage").await.unwrap(),
        Some(42),
        "the loaded value overwrote the junk"
    );
}

#[tokio::test]
async fn another_schema_version_or_type_reads_as_a_miss() {
    let l2 = MapTier::new("l2");
    let v1 = cache_over(&l2, 1).await;
    v1.set("k", &"a string".to_owned(), CacheStrategy::ShortTerm)
        .await
        .unwrap();

    let v2 = cache_over(&l2, 2).await;
    assert_eq!(v2.get::<String>("k").await.unwrap(), None);
    assert_eq!(v2.stats().tier("l2").map(|t| t.decode_errors), Some(1));

    // Same version, another type: L1 holds a String, the caller asks for a number.
    assert_eq!(v1.get::<u64>("k").await.unwrap(), None);
    assert_eq!(
        v1.get::<String>("k").await.unwrap().as_deref(),
        Some("a string")
    );
}

/// Waits for the cache's background work (fills of the tiers below L1) to end.
async fn settled(cache: &Cache) {
    while cache.background_loads() > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}
