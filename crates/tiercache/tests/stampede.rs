//! Stampede protection: one loader call per key, shared outcomes, and no stuck keys whatever
//! happens to the caller that runs the loader.
#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail the test loudly"
)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tiercache::{Cache, CacheStrategy, Error, MemoryTier};
use tokio::sync::Barrier;

async fn memory_cache() -> Cache {
    Cache::builder()
        .memory(MemoryTier::new(1_000))
        .build()
        .await
        .unwrap()
}

/// Waits (bounded) until `n` callers are waiting on another caller's load.
async fn until_coalesced(cache: &Cache, n: u64) {
    for _ in 0..500 {
        if cache.stats().coalesced >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!(
        "only {} of {n} callers joined the load",
        cache.stats().coalesced
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_callers_run_the_loader_once() {
    let cache = memory_cache().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(1000));
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let (cache, calls, barrier) = (cache.clone(), calls.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                cache
                    .get_or_compute("cold", CacheStrategy::ShortTerm, || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok::<_, Error>(String::from("loaded once"))
                    })
                    .await
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), "loaded once");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(cache.stats().loads, 1);
    assert_eq!(
        cache.loads_in_flight(),
        0,
        "a successful load must leave no in-flight entry"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loader_error_reaches_every_waiter_and_caches_nothing() {
    let cache = memory_cache().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(tokio::sync::Notify::new());
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (cache, calls, release) = (cache.clone(), calls.clone(), release.clone());
            tokio::spawn(async move {
                cache
                    .get_or_compute("k", CacheStrategy::ShortTerm, || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        release.notified().await;
                        Err::<u32, _>(std::io::Error::other("database is down"))
                    })
                    .await
            })
        })
        .collect();
    until_coalesced(&cache, 19).await;
    release.notify_one();
    for task in tasks {
        let err = task.await.unwrap().unwrap_err();
        assert!(
            matches!(err, Error::Loader { ref key, .. } if key == "k"),
            "{err}"
        );
        assert!(err.to_string().contains("database is down"), "{err}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        cache.loads_in_flight(),
        0,
        "a failed load must leave no in-flight entry"
    );
    assert_eq!(
        cache.get::<u32>("k").await.unwrap(),
        None,
        "an error must cache nothing"
    );
    let stats = cache.stats();
    assert_eq!((stats.loads, stats.load_errors), (1, 1));

    let value = cache
        .get_or_compute("k", CacheStrategy::ShortTerm, || async {
            Ok::<_, Error>(7u32)
        })
        .await
        .unwrap();
    assert_eq!(value, 7, "the next call loads again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_leader_leaves_no_in_flight_entry() {
    let cache = memory_cache().await;
    let slow = cache.get_or_compute("k", CacheStrategy::ShortTerm, || async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        Ok::<_, Error>(1u8)
    });
    assert!(
        tokio::time::timeout(Duration::from_millis(20), slow)
            .await
            .is_err()
    );
    assert_eq!(
        cache.loads_in_flight(),
        0,
        "cancelling the leader must end its flight"
    );

    let value = tokio::time::timeout(
        Duration::from_secs(5),
        cache.get_or_compute("k", CacheStrategy::ShortTerm, || async {
            Ok::<_, Error>(2u8)
        }),
    )
    .await
    .expect("the next caller must not wait for the cancelled load")
    .unwrap();
    assert_eq!(value, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_of_a_cancelled_leader_take_over_instead_of_hanging() {
    let cache = memory_cache().await;
    let leader = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .get_or_compute("k", CacheStrategy::ShortTerm, || async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    Ok::<_, Error>(String::from("never"))
                })
                .await
        })
    };
    while cache.loads_in_flight() == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let calls = Arc::new(AtomicUsize::new(0));
    let waiters: Vec<_> = (0..10)
        .map(|_| {
            let (cache, calls) = (cache.clone(), calls.clone());
            tokio::spawn(async move {
                cache
                    .get_or_compute("k", CacheStrategy::ShortTerm, || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Ok::<_, Error>(String::from("from a waiter"))
                    })
                    .await
            })
        })
        .collect();
    until_coalesced(&cache, 10).await;
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());

    for waiter in waiters {
        let value = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("a waiter must not hang when its leader is cancelled")
            .unwrap()
            .unwrap();
        assert_eq!(value, "from a waiter");
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "one waiter takes over; the rest wait for it"
    );
    assert_eq!(cache.loads_in_flight(), 0);
}

fn buggy_loader() -> Result<u8, Error> {
    panic!("loader bug")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_loader_fails_its_waiters_and_leaves_no_in_flight_entry() {
    let cache = memory_cache().await;
    let release = Arc::new(tokio::sync::Notify::new());
    let leader = {
        let (cache, release) = (cache.clone(), release.clone());
        tokio::spawn(async move {
            cache
                .get_or_compute("k", CacheStrategy::ShortTerm, || async move {
                    release.notified().await;
                    buggy_loader()
                })
                .await
        })
    };
    while cache.loads_in_flight() == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let waiters: Vec<_> = (0..5)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move {
                cache
                    .get_or_compute("k", CacheStrategy::ShortTerm, || async {
                        Ok::<_, Error>(9u8)
                    })
                    .await
            })
        })
        .collect();
    until_coalesced(&cache, 5).await;
    release.notify_one();

    assert!(
        leader.await.unwrap_err().is_panic(),
        "the panic goes on in the leader's task"
    );
    for waiter in waiters {
        let err = waiter.await.unwrap().unwrap_err();
        assert!(
            matches!(err, Error::LoaderPanicked { ref key } if key == "k"),
            "{err}"
        );
    }
    assert_eq!(
        cache.loads_in_flight(),
        0,
        "a panicking loader must leave no in-flight entry"
    );
    assert_eq!(cache.stats().load_errors, 1);
    let value = cache
        .get_or_compute("k", CacheStrategy::ShortTerm, || async {
            Ok::<_, Error>(3u8)
        })
        .await
        .unwrap();
    assert_eq!(value, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_keys_load_independently() {
    let cache = memory_cache().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let (cache, calls) = (cache.clone(), calls.clone());
            tokio::spawn(async move {
                let key = format!("k{}", i % 5);
                cache
                    .get_or_compute(&key, CacheStrategy::ShortTerm, move || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(30)).await;
                        Ok::<_, Error>(i % 5)
                    })
                    .await
                    .map(|value| (i % 5, value))
            })
        })
        .collect();
    for task in tasks {
        let (expected, value) = task.await.unwrap().unwrap();
        assert_eq!(value, expected);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 5, "one load per key");
}
