//! Batch reads, writes and loads: one batch read per tier for what missed above it, one batch
//! write per tier, one loader call for what missed everywhere, each key loaded once however many
//! batches ask for it at the same time.
#![expect(clippy::unwrap_used, reason = "test helpers fail the test loudly")]

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tiercache::{Cache, CacheStrategy, EntryOptions, Error, MemoryTier};
use tiercache_testkit::{LocalNetwork, MapTier};

/// L1 in front of two map tiers the test can look into.
async fn three_tiers() -> (Cache, MapTier, MapTier) {
    let (l2, l3) = (MapTier::new("l2"), MapTier::new("l3"));
    let cache = Cache::builder()
        .memory(MemoryTier::new(1_000))
        .tier(l2.clone())
        .tier(l3.clone())
        .build()
        .await
        .unwrap();
    (cache, l2, l3)
}

#[tokio::test]
async fn get_many_reads_each_lower_tier_once_for_what_missed_above_it() {
    let (cache, l2, l3) = three_tiers().await;
    cache
        .set("in-l1", &1_u32, CacheStrategy::LongTerm)
        .await
        .unwrap();
    // "in-l3" only in L3, written by a cache over L3 alone.
    let l3_only = Cache::builder().tier(l3.clone()).build().await.unwrap();
    l3_only
        .set("in-l3", &3_u32, CacheStrategy::LongTerm)
        .await
        .unwrap();

    let found = cache
        .get_many::<u32>(&["in-l1", "in-l3", "nowhere"])
        .await
        .unwrap();
    assert_eq!(found, vec![Some(1), Some(3), None]);
    assert_eq!(
        (l2.batch_gets(), l3.batch_gets()),
        (1, 1),
        "one batch read per tier"
    );
    assert_eq!((l2.gets(), l3.gets()), (0, 0), "no single reads");
    assert!(
        l2.raw(":in-l3").is_none(),
        "a batch read takes no leases, so it copies nothing into a shared tier that leases"
    );

    // Now "in-l3" is in L1: only "nowhere" goes below, again once per tier.
    let again = cache
        .get_many::<u32>(&["in-l3", "nowhere", "in-l1"])
        .await
        .unwrap();
    assert_eq!(again, vec![Some(3), None, Some(1)]);
    assert_eq!((l2.batch_gets(), l3.batch_gets()), (2, 2));
    let stats = cache.stats();
    assert_eq!(stats.memory.unwrap().hits, 3);
}

#[tokio::test]
async fn a_bad_key_fails_the_batch_before_anything_is_read() {
    let (cache, l2, _) = three_tiers().await;
    let err = cache.get_many::<u32>(&["ok", ""]).await.unwrap_err();
    assert!(matches!(err, Error::InvalidKey { .. }), "{err}");
    assert_eq!(l2.batch_gets(), 0);
    let err = cache
        .set_many(&[("ok", 1_u32), ("bad\u{7}", 2)], CacheStrategy::LongTerm)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidKey { .. }), "{err}");
    assert!(l2.keys().is_empty(), "nothing written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_many_writes_every_tier_and_publishes_one_message() {
    let network = LocalNetwork::new();
    let shared = MapTier::new("shared");
    let build = async |l1: MemoryTier| {
        Cache::builder()
            .memory(l1)
            .tier(shared.clone())
            .bus(network.bus())
            .build()
            .await
            .unwrap()
    };
    let (a, b_l1) = (build(MemoryTier::new(100)).await, MemoryTier::new(100));
    let b = build(b_l1.clone()).await;
    a.set_many(&[("k1", 1_u32), ("k2", 2)], CacheStrategy::LongTerm)
        .await
        .unwrap();
    assert_eq!(shared.keys(), vec![":k1".to_owned(), ":k2".to_owned()]);
    assert_eq!(
        b.get_many::<u32>(&["k1", "k2"]).await.unwrap(),
        vec![Some(1), Some(2)]
    );

    a.set_many(&[("k1", 10_u32), ("k2", 20)], CacheStrategy::LongTerm)
        .await
        .unwrap();
    assert_eq!(
        a.stats().bus.unwrap().published,
        2,
        "one message per set_many"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while b_l1.get("k1").await.is_some() || b_l1.get("k2").await.is_some() {
        assert!(std::time::Instant::now() < deadline, "B dropped both keys");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(
        b.get_many::<u32>(&["k1", "k2"]).await.unwrap(),
        vec![Some(10), Some(20)]
    );
}

#[tokio::test]
async fn the_loader_runs_once_with_just_the_keys_that_missed_everywhere() {
    let (cache, l2, _) = three_tiers().await;
    cache
        .set("cached", &0_u32, CacheStrategy::LongTerm)
        .await
        .unwrap();
    let asked = Arc::new(Mutex::new(Vec::new()));
    let loader = |keys: Vec<String>| {
        let asked = Arc::clone(&asked);
        async move {
            asked.lock().unwrap().push(keys.clone());
            let values = keys
                .into_iter()
                .filter(|key| key != "missing")
                .map(|key| (key.clone(), key.len()))
                .collect::<HashMap<_, _>>();
            Ok::<_, std::io::Error>(values)
        }
    };
    let keys = ["cached", "abc", "missing", "abcdef"];
    let found = cache
        .get_or_compute_many(&keys, CacheStrategy::LongTerm, loader)
        .await
        .unwrap();
    assert_eq!(found, vec![Some(0), Some(3), None, Some(6)]);
    assert_eq!(
        *asked.lock().unwrap(),
        vec![vec![
            "abc".to_owned(),
            "missing".to_owned(),
            "abcdef".to_owned()
        ]]
    );
    settled(&cache).await;
    assert!(
        l2.raw(":abc").is_some() && l2.raw(":abcdef").is_some(),
        "loaded values stored below"
    );
    assert!(
        l2.raw(":missing").is_none(),
        "no negative entry unless asked for"
    );

    let again = cache
        .get_or_compute_many(&keys, CacheStrategy::LongTerm, loader)
        .await
        .unwrap();
    assert_eq!(again, found);
    assert_eq!(
        asked.lock().unwrap().len(),
        2,
        "only the missing key is asked again"
    );
    assert_eq!(asked.lock().unwrap()[1], vec!["missing".to_owned()]);
    assert_eq!(cache.stats().loads, 2);
}

#[tokio::test]
async fn keys_the_loader_leaves_out_are_cached_as_not_found_when_asked() {
    let (cache, _, _) = three_tiers().await;
    let calls = Arc::new(Mutex::new(0));
    let options = EntryOptions::new(CacheStrategy::LongTerm).negative_ttl(Duration::from_secs(60));
    for _ in 0..3 {
        let calls = Arc::clone(&calls);
        let found = cache
            .get_or_compute_many(&["ghost"], options.clone(), move |_keys| {
                let calls = Arc::clone(&calls);
                async move {
                    *calls.lock().unwrap() += 1;
                    Ok::<HashMap<String, u32>, std::io::Error>(HashMap::new())
                }
            })
            .await
            .unwrap();
        assert_eq!(found, vec![None]);
    }
    assert_eq!(
        *calls.lock().unwrap(),
        1,
        "the negative entry answered the later calls"
    );
}

#[tokio::test]
async fn a_loader_error_fails_the_batch_and_caches_nothing() {
    let (cache, l2, _) = three_tiers().await;
    let err = cache
        .get_or_compute_many(&["a", "b"], CacheStrategy::LongTerm, |_keys| async {
            Err::<HashMap<String, u32>, _>(std::io::Error::other("database down"))
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Loader { .. }), "{err}");
    assert!(err.to_string().contains("database down"), "{err}");
    assert!(l2.keys().is_empty());
    assert_eq!(cache.loads_in_flight(), 0);
    assert_eq!(cache.stats().load_errors, 1);
}

/// Twenty batches over overlapping keys at once: every key is loaded exactly once in total,
/// and every batch gets every value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batches_load_each_key_exactly_once() {
    let (cache, _, _) = three_tiers().await;
    let loaded: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let keys: Vec<String> = (0..100).map(|i| format!("item:{i}")).collect();
    let mut tasks = Vec::new();
    for batch in 0..20_usize {
        let (cache, loaded) = (cache.clone(), Arc::clone(&loaded));
        let wanted: Vec<String> = (0..50)
            .map(|i| keys[(batch * 7 + i * 3) % 100].clone())
            .collect();
        tasks.push(tokio::spawn(async move {
            let asked: Vec<&str> = wanted.iter().map(String::as_str).collect();
            let found = cache
                .get_or_compute_many(&asked, CacheStrategy::LongTerm, |missing| {
                    let loaded = Arc::clone(&loaded);
                    async move {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        let mut counts = loaded.lock().unwrap();
                        for key in &missing {
                            *counts.entry(key.clone()).or_default() += 1;
                        }
                        let values = missing.into_iter().map(|key| (key.clone(), key.len()));
                        Ok::<_, std::io::Error>(values.collect::<HashMap<_, _>>())
                    }
                })
                .await
                .unwrap();
            let expected: Vec<Option<usize>> = wanted.iter().map(|k| Some(k.len())).collect();
            assert_eq!(found, expected);
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let counts = loaded.lock().unwrap();
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "keys loaded more than once: {twice:?}");
    assert_eq!(cache.loads_in_flight(), 0);
    assert!(
        cache.stats().coalesced > 0,
        "some batches waited for others"
    );
}

/// Waits for the cache's background work (fills of the tiers below L1) to end.
async fn settled(cache: &Cache) {
    while cache.background_loads() > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}
