//! Fail-safe, soft and hard loader timeouts, eager refresh and tags, on an in-process L1 and a
//! map tier (the Redis versions are in `redis.rs`).
#![expect(clippy::unwrap_used, reason = "test helpers fail the test loudly")]

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use tiercache::{
    Cache, CacheStrategy, EagerRefresh, EntryOptions, Error, FailSafe, MemoryTier, Tier,
};
use tiercache_testkit::MapTier;

const SHORT: Duration = Duration::from_millis(150);

fn short_lived() -> EntryOptions {
    EntryOptions::new(CacheStrategy::Custom(SHORT))
}

fn fail_safe() -> FailSafe {
    FailSafe::new(Duration::from_secs(60)).throttle(Duration::from_millis(300))
}

async fn memory_cache() -> Cache {
    Cache::builder()
        .memory(MemoryTier::new(1_000))
        .build()
        .await
        .unwrap()
}

async fn two_tier_cache(l2: &MapTier) -> Cache {
    Cache::builder()
        .namespace("ns")
        .memory(MemoryTier::new(1_000))
        .tier(l2.clone())
        .build()
        .await
        .unwrap()
}

/// A loader that counts its calls and fails.
fn failing(
    calls: &Arc<AtomicUsize>,
) -> impl FnOnce() -> std::future::Ready<Result<u32, Error>> + use<> {
    let calls = Arc::clone(calls);
    move || {
        calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Err(Error::Config("source down".into())))
    }
}

/// Sets the drop flag when the loader's future is dropped, finished or not.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A loader that sleeps for `delay` before answering `value`; `dropped` is set once its future
/// is gone.
fn slow(
    value: u32,
    delay: Duration,
    dropped: &Arc<AtomicBool>,
) -> impl FnOnce() -> std::pin::Pin<Box<dyn Future<Output = Result<u32, Error>> + Send>> + use<> {
    let flag = DropFlag(Arc::clone(dropped));
    move || {
        Box::pin(async move {
            let _flag = flag;
            tokio::time::sleep(delay).await;
            Ok(value)
        })
    }
}

/// The loader passed its hard timeout: the call failed soon with the loader's timeout error,
/// the loader's future was dropped and no load is left in flight.
fn gave_up_at_the_hard_timeout(cache: &Cache, err: &Error, started: Instant, dropped: &AtomicBool) {
    assert!(
        matches!(err, Error::Timeout { what, .. } if what == "loader"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        dropped.load(Ordering::SeqCst),
        "the loader's future was dropped"
    );
    assert_eq!(cache.loads_in_flight(), 0);
}

async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(Instant::now() < deadline, "not within 5 s: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn fail_safe_answers_a_failed_load_with_the_stale_value_then_throttles() {
    let cache = memory_cache().await;
    let options = short_lived().fail_safe(fail_safe());
    cache.set("price", &100_u32, options.clone()).await.unwrap();
    tokio::time::sleep(SHORT + Duration::from_millis(50)).await;

    assert_eq!(
        cache.get::<u32>("price").await.unwrap(),
        None,
        "a stale value is not served by a plain read"
    );
    let calls = Arc::new(AtomicUsize::new(0));
    let answer = cache
        .get_or_compute("price", options.clone(), failing(&calls))
        .await
        .unwrap();
    assert_eq!(answer, 100, "the stale value instead of the error");
    assert_eq!(cache.stats().stale_served, 1);
    assert_eq!(cache.stats().load_errors, 1);

    // Within the throttle the stale value answers without asking the failing source.
    for _ in 0..5 {
        let again = cache
            .get_or_compute("price", options.clone(), failing(&calls))
            .await
            .unwrap();
        assert_eq!(again, 100);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "throttled");

    tokio::time::sleep(Duration::from_millis(350)).await;
    let after = cache
        .get_or_compute("price", options.clone(), failing(&calls))
        .await
        .unwrap();
    assert_eq!(after, 100);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "tried again after the throttle"
    );

    // A working source replaces the stale value.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let fresh = cache
        .get_or_compute("price", options, || async { Ok::<_, Error>(120_u32) })
        .await
        .unwrap();
    assert_eq!(fresh, 120);
    assert_eq!(cache.get::<u32>("price").await.unwrap(), Some(120));
}

#[tokio::test]
async fn without_fail_safe_a_failed_load_is_an_error_as_before() {
    let cache = memory_cache().await;
    cache.set("price", &100_u32, short_lived()).await.unwrap();
    tokio::time::sleep(SHORT + Duration::from_millis(50)).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let err = cache
        .get_or_compute("price", short_lived(), failing(&calls))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Loader { .. }), "{err}");
    assert_eq!(cache.stats().stale_served, 0);

    // Fail-safe as the cache's default, turned off for one call.
    let cache = Cache::builder()
        .memory(MemoryTier::new(1_000))
        .fail_safe(fail_safe())
        .build()
        .await
        .unwrap();
    cache.set("price", &100_u32, short_lived()).await.unwrap();
    tokio::time::sleep(SHORT + Duration::from_millis(50)).await;
    let off = short_lived().fail_safe(FailSafe::disabled());
    assert!(
        cache
            .get_or_compute("price", off, failing(&calls))
            .await
            .is_err()
    );
    let on = cache
        .get_or_compute("price", short_lived(), failing(&calls))
        .await
        .unwrap();
    assert_eq!(on, 100, "the builder's default applies");
}

#[tokio::test]
async fn a_stale_value_from_a_lower_tier_is_a_fallback_too() {
    let l2 = MapTier::new("l2");
    let writer = two_tier_cache(&l2).await;
    let options = short_lived().fail_safe(fail_safe());
    writer
        .set("price", &100_u32, options.clone())
        .await
        .unwrap();
    let kept = l2.raw("ns:price").unwrap();
    assert!(
        kept.remaining_ttl() > Duration::from_secs(59),
        "the tier keeps the value for its stale window"
    );
    tokio::time::sleep(SHORT + Duration::from_millis(50)).await;

    // Another instance: nothing in its L1, the stale copy below.
    let reader = two_tier_cache(&l2).await;
    assert_eq!(reader.get::<u32>("price").await.unwrap(), None);
    let calls = Arc::new(AtomicUsize::new(0));
    let answer = reader
        .get_or_compute("price", options, failing(&calls))
        .await
        .unwrap();
    assert_eq!(answer, 100);
    assert_eq!(reader.stats().stale_served, 1);
}

#[tokio::test]
async fn a_hanging_loader_errors_at_the_hard_timeout_and_leaves_nothing_behind() {
    let cache = memory_cache().await;
    let dropped = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let options = short_lived().hard_timeout(Duration::from_millis(100));
    let err = cache
        .get_or_compute(
            "slow",
            options,
            slow(1, Duration::from_secs(3600), &dropped),
        )
        .await
        .unwrap_err();
    gave_up_at_the_hard_timeout(&cache, &err, started, &dropped);
    assert_eq!(cache.background_loads(), 0);
    assert_eq!(cache.stats().hard_timeouts, 1);
    assert_eq!(
        cache.get::<u32>("slow").await.unwrap(),
        None,
        "nothing cached"
    );
}

#[tokio::test]
async fn waiters_time_out_with_the_leader() {
    let cache = memory_cache().await;
    let options = short_lived().hard_timeout(Duration::from_millis(100));
    let dropped = Arc::new(AtomicBool::new(false));
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let (cache, options) = (cache.clone(), options.clone());
            let loader = slow(1, Duration::from_secs(3600), &dropped);
            tokio::spawn(async move { cache.get_or_compute("slow", options, loader).await })
        })
        .collect();
    for call in calls {
        let err = call.await.unwrap().unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err}");
    }
    assert_eq!(cache.loads_in_flight(), 0);
}

#[tokio::test]
async fn the_soft_timeout_answers_stale_and_the_load_finishes_in_the_background() {
    let cache = memory_cache().await;
    let options = short_lived()
        .fail_safe(fail_safe())
        .soft_timeout(Duration::from_millis(50))
        .hard_timeout(Duration::from_secs(5));
    cache.set("price", &100_u32, options.clone()).await.unwrap();
    tokio::time::sleep(SHORT + Duration::from_millis(50)).await;

    let dropped = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let answer = cache
        .get_or_compute(
            "price",
            options.clone(),
            slow(120, Duration::from_millis(300), &dropped),
        )
        .await
        .unwrap();
    assert_eq!(answer, 100, "the stale value, at the soft timeout");
    assert!(started.elapsed() < Duration::from_millis(250));
    assert_eq!(cache.background_loads(), 1, "the load goes on");
    assert_eq!(cache.stats().soft_timeouts, 1);

    wait_until("the background load finished", || {
        cache.background_loads() == 0
    })
    .await;
    assert_eq!(cache.get::<u32>("price").await.unwrap(), Some(120));
    assert_eq!(cache.loads_in_flight(), 0);
    let stats = cache.stats();
    assert_eq!((stats.background_loads, stats.loads), (1, 1));
}

#[tokio::test]
async fn without_a_stale_value_the_soft_timeout_waits_for_the_load() {
    let cache = memory_cache().await;
    let options = short_lived().soft_timeout(Duration::from_millis(20));
    let dropped = Arc::new(AtomicBool::new(false));
    let answer = cache
        .get_or_compute(
            "fresh",
            options,
            slow(7, Duration::from_millis(100), &dropped),
        )
        .await
        .unwrap();
    assert_eq!(answer, 7);
    assert_eq!(cache.background_loads(), 0);
}

#[tokio::test]
async fn a_background_load_dies_with_the_cache() {
    let cache = memory_cache().await;
    let options = short_lived()
        .fail_safe(fail_safe())
        .soft_timeout(Duration::from_millis(20));
    cache.set("price", &100_u32, options.clone()).await.unwrap();
    tokio::time::sleep(SHORT + Duration::from_millis(50)).await;
    let dropped = Arc::new(AtomicBool::new(false));
    let answer = cache
        .get_or_compute(
            "price",
            options,
            slow(1, Duration::from_secs(3600), &dropped),
        )
        .await
        .unwrap();
    assert_eq!(answer, 100);
    assert_eq!(cache.background_loads(), 1);
    assert!(!dropped.load(Ordering::SeqCst));

    drop(cache);
    wait_until("the background load was aborted", || {
        dropped.load(Ordering::SeqCst)
    })
    .await;
}

#[tokio::test]
async fn background_loads_are_bounded() {
    let cache = Cache::builder()
        .memory(MemoryTier::new(1_000))
        .background_loads(1)
        .build()
        .await
        .unwrap();
    let options = short_lived()
        .fail_safe(fail_safe())
        .soft_timeout(Duration::from_millis(20))
        .hard_timeout(Duration::from_millis(400));
    for key in ["a", "b"] {
        cache.set(key, &1_u32, options.clone()).await.unwrap();
    }
    tokio::time::sleep(SHORT + Duration::from_millis(50)).await;
    let dropped = Arc::new(AtomicBool::new(false));
    let first = cache
        .get_or_compute(
            "a",
            options.clone(),
            slow(2, Duration::from_secs(3600), &dropped),
        )
        .await
        .unwrap();
    assert_eq!((first, cache.background_loads()), (1, 1));
    // No room in the background: the caller waits, up to the hard timeout, then falls back.
    let started = Instant::now();
    let second = cache
        .get_or_compute("b", options, slow(2, Duration::from_secs(3600), &dropped))
        .await
        .unwrap();
    assert_eq!(second, 1);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(cache.stats().background_refused, 1);
    wait_until("the background load hit its hard timeout", || {
        cache.background_loads() == 0
    })
    .await;
    assert_eq!(cache.loads_in_flight(), 0);
}

#[tokio::test]
async fn eager_refresh_reloads_a_hot_key_before_it_expires() {
    let cache = memory_cache().await;
    let ttl = Duration::from_millis(600);
    let options = EntryOptions::new(CacheStrategy::Custom(ttl))
        .eager_refresh(EagerRefresh::LastFraction(0.5));
    let calls = Arc::new(AtomicUsize::new(0));
    let loader = |calls: &Arc<AtomicUsize>| {
        let calls = Arc::clone(calls);
        move || async move {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok::<_, Error>(u32::try_from(n).unwrap())
        }
    };
    let first = cache
        .get_or_compute("hot", options.clone(), loader(&calls))
        .await
        .unwrap();
    assert_eq!(first, 0);

    // In the last half of its life: many hits answer at once, one refresh starts.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let started = Instant::now();
    for _ in 0..20 {
        let hit = cache
            .get_or_compute("hot", options.clone(), loader(&calls))
            .await
            .unwrap();
        assert_eq!(hit, 0, "the cached value answers while the refresh runs");
    }
    assert!(
        started.elapsed() < Duration::from_millis(80),
        "nobody waited for the load"
    );
    wait_until("the refresh finished", || calls.load(Ordering::SeqCst) == 2).await;
    wait_until("the refresh was stored", || cache.background_loads() == 0).await;
    assert_eq!(cache.get::<u32>("hot").await.unwrap(), Some(1));
    let stats = cache.stats();
    assert_eq!((stats.eager_refreshes, stats.loads), (1, 2));

    // Kept hot past the first value's expiry, without a caller ever waiting for a load.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let still = cache
        .get_or_compute("hot", options, loader(&calls))
        .await
        .unwrap();
    assert!(still >= 1);
}

#[tokio::test]
async fn xfetch_refreshes_by_load_time_and_never_for_sets() {
    let cache = memory_cache().await;
    let ttl = Duration::from_millis(500);
    // A huge beta puts the refresh point before the load even ends: the next hit refreshes.
    let options = EntryOptions::new(CacheStrategy::Custom(ttl))
        .eager_refresh(EagerRefresh::XFetch { beta: 1e6 });
    let calls = Arc::new(AtomicUsize::new(0));
    let loader = |calls: &Arc<AtomicUsize>| {
        let calls = Arc::clone(calls);
        move || async move {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok::<_, Error>(5_u32)
        }
    };
    cache
        .get_or_compute("k", options.clone(), loader(&calls))
        .await
        .unwrap();
    cache
        .get_or_compute("k", options.clone(), loader(&calls))
        .await
        .unwrap();
    wait_until("an early refresh ran", || calls.load(Ordering::SeqCst) == 2).await;

    // A set has no load time: no early refresh.
    cache.set("s", &1_u32, options.clone()).await.unwrap();
    cache
        .get_or_compute("s", options, loader(&calls))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(cache.stats().eager_refreshes, 1);
}

#[tokio::test]
async fn a_tag_invalidation_drops_tagged_entries_in_every_tier() {
    let l2 = MapTier::new("l2");
    let cache = two_tier_cache(&l2).await;
    let tenant = EntryOptions::new(CacheStrategy::LongTerm).tags(["tenant:7", "eu"]);
    cache
        .set("invoice:1", &1_u32, tenant.clone())
        .await
        .unwrap();
    cache
        .set_many(&[("invoice:2", 2_u32)], tenant.clone())
        .await
        .unwrap();
    cache
        .set("invoice:3", &3_u32, CacheStrategy::LongTerm)
        .await
        .unwrap();

    cache.invalidate_tag("tenant:7").await.unwrap();
    assert_eq!(cache.get::<u32>("invoice:1").await.unwrap(), None);
    assert_eq!(cache.get::<u32>("invoice:2").await.unwrap(), None);
    assert_eq!(cache.get::<u32>("invoice:3").await.unwrap(), Some(3));
    assert!(
        l2.raw("ns:\u{1}tag:tenant:7").is_some(),
        "one marker, no key list"
    );

    // Another instance without a bus finds the tagged values in L2 and reads them as misses.
    let other = two_tier_cache(&l2).await;
    let gets = l2.gets();
    assert_eq!(other.get::<u32>("invoice:1").await.unwrap(), None);
    assert!(other.stats().tag_rejected >= 1);
    assert_eq!(other.get::<u32>("invoice:3").await.unwrap(), Some(3));
    assert!(l2.gets() > gets);

    // Written after the invalidation: kept; loads fill with the tags too.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let value = cache
        .get_or_compute("invoice:1", tenant, || async { Ok::<_, Error>(10_u32) })
        .await
        .unwrap();
    assert_eq!(value, 10);
    settled(&cache).await;
    assert_eq!(other.get::<u32>("invoice:1").await.unwrap(), Some(10));
    cache.invalidate_tag("eu").await.unwrap();
    assert_eq!(cache.get::<u32>("invoice:1").await.unwrap(), None);
}

#[tokio::test]
async fn bad_tags_are_refused_and_nothing_is_written() {
    let l2 = MapTier::new("l2");
    let cache = two_tier_cache(&l2).await;
    for bad in ["", "a\nb", &"x".repeat(256)] {
        let options = EntryOptions::new(CacheStrategy::LongTerm).tags([bad]);
        let err = cache.set("k", &1_u32, options).await.unwrap_err();
        assert!(matches!(err, Error::InvalidTag { .. }), "{err}");
        assert!(matches!(
            cache.invalidate_tag(bad).await,
            Err(Error::InvalidTag { .. })
        ));
    }
    assert!(l2.keys().is_empty());
    assert_eq!(cache.get::<u32>("k").await.unwrap(), None);
}

#[tokio::test]
async fn a_marker_that_cannot_be_read_hides_the_tagged_value() {
    let l2 = MapTier::new("l2");
    let cache = two_tier_cache(&l2).await;
    let tagged = EntryOptions::new(CacheStrategy::LongTerm).tags(["t"]);
    cache.set("k", &1_u32, tagged).await.unwrap();
    let stored = l2.raw("ns:k").unwrap();
    l2.put_raw("ns:\u{1}tag:t", "not a time", stored.expires_at);
    let other = two_tier_cache(&l2).await;
    assert_eq!(other.get::<u32>("k").await.unwrap(), None);
    // The tier stays usable for untagged values.
    let tier: &dyn Tier = &l2;
    assert_eq!(tier.name(), "l2");
}

/// `get_or_compute_many` of `keys` against a source that fails, counting its calls in `calls`.
async fn batch_from_failing_source(
    cache: &Cache,
    keys: &[&str],
    options: &EntryOptions,
    calls: &AtomicUsize,
) -> Result<Vec<Option<u32>>, Error> {
    cache
        .get_or_compute_many(keys, options.clone(), |_keys| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<std::collections::HashMap<String, u32>, _>(Error::Config("source down".into()))
        })
        .await
}

#[tokio::test]
async fn fail_safe_answers_a_failed_batch_load_with_stale_values_from_any_tier() {
    let l2 = MapTier::new("l2");
    let writer = two_tier_cache(&l2).await;
    let options = short_lived().fail_safe(fail_safe());
    writer.set("a", &1_u32, options.clone()).await.unwrap();
    let reader = two_tier_cache(&l2).await;
    reader.set("b", &2_u32, options.clone()).await.unwrap();
    tokio::time::sleep(SHORT + Duration::from_millis(50)).await;

    // "a": stale only in L2 (for the reader); "b": stale in the reader's L1 too.
    let calls = AtomicUsize::new(0);
    let answers = batch_from_failing_source(&reader, &["a", "b"], &options, &calls)
        .await
        .unwrap();
    assert_eq!(
        answers,
        [Some(1), Some(2)],
        "stale values instead of the error"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(reader.stats().stale_served, 2);
    assert_eq!(reader.stats().load_errors, 1);

    // Within the throttle the stale values answer without asking the failing source.
    let again = batch_from_failing_source(&reader, &["a", "b"], &options, &calls)
        .await
        .unwrap();
    assert_eq!(again, [Some(1), Some(2)]);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "throttled");
}

#[tokio::test]
async fn a_failed_batch_load_is_an_error_when_a_key_has_no_stale_value() {
    let cache = memory_cache().await;
    let options = short_lived().fail_safe(fail_safe());
    cache.set("a", &1_u32, options.clone()).await.unwrap();
    tokio::time::sleep(SHORT + Duration::from_millis(50)).await;

    let calls = AtomicUsize::new(0);
    let err = batch_from_failing_source(&cache, &["a", "never-seen"], &options, &calls)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Loader { .. }), "{err}");
    // The key that had one was still answered stale, and is throttled like a single load.
    assert_eq!(cache.stats().stale_served, 1);
    assert_eq!(
        batch_from_failing_source(&cache, &["a"], &options, &calls)
            .await
            .unwrap(),
        [Some(1)]
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1, "throttled");

    // Without fail-safe the stale value is no answer.
    let plain = memory_cache().await;
    plain.set("a", &1_u32, short_lived()).await.unwrap();
    tokio::time::sleep(SHORT + Duration::from_millis(50)).await;
    assert!(
        batch_from_failing_source(&plain, &["a"], &short_lived(), &calls)
            .await
            .is_err()
    );
    assert_eq!(plain.stats().stale_served, 0);
}

#[tokio::test]
async fn a_hanging_batch_loader_times_out_and_fail_safe_answers_what_it_can() {
    let cache = memory_cache().await;
    let dropped = Arc::new(AtomicBool::new(false));
    let hang = |keys: Vec<String>| {
        let flag = DropFlag(Arc::clone(&dropped));
        async move {
            let _flag = flag;
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok::<_, Error>(keys.into_iter().map(|key| (key, 9_u32)).collect())
        }
    };
    let options = short_lived().hard_timeout(Duration::from_millis(100));
    let started = Instant::now();
    let err = cache
        .get_or_compute_many(&["x", "y"], options, hang)
        .await
        .unwrap_err();
    gave_up_at_the_hard_timeout(&cache, &err, started, &dropped);
    assert_eq!(cache.stats().hard_timeouts, 1);

    // With fail-safe and a stale value for every key, the timeout is answered stale.
    let options = short_lived()
        .fail_safe(fail_safe())
        .hard_timeout(Duration::from_millis(100));
    cache
        .set_many(&[("x", 1_u32), ("y", 2)], options.clone())
        .await
        .unwrap();
    tokio::time::sleep(SHORT + Duration::from_millis(50)).await;
    let answers = cache
        .get_or_compute_many(&["x", "y"], options, hang)
        .await
        .unwrap();
    assert_eq!(answers, [Some(1), Some(2)]);
    assert_eq!(cache.stats().hard_timeouts, 2);
    assert_eq!(cache.stats().stale_served, 2);
}

#[tokio::test]
async fn a_batch_waiting_for_a_hanging_load_times_out_too() {
    let cache = memory_cache().await;
    let dropped = Arc::new(AtomicBool::new(false));
    // A single load of "k" with no timeout hangs; the batch joins it as a waiter.
    let leader = {
        let cache = cache.clone();
        let loader = slow(1, Duration::from_secs(3600), &dropped);
        tokio::spawn(async move { cache.get_or_compute("k", short_lived(), loader).await })
    };
    wait_until("the single load started", || cache.loads_in_flight() == 1).await;
    let options = short_lived().hard_timeout(Duration::from_millis(100));
    let err = cache
        .get_or_compute_many(&["k"], options, |keys: Vec<String>| async move {
            Ok::<_, Error>(keys.into_iter().map(|key| (key, 2_u32)).collect())
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    leader.abort();
}

/// Waits for the cache's background work (fills of the tiers below L1) to end.
async fn settled(cache: &Cache) {
    while cache.background_loads() > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

/// A stale window longer than a value's header can state (its milliseconds are a u32, about 49.7
/// days) must not leave the stored expiry longer than the header says: the reader would take the
/// difference for fresh life and serve a stale value as fresh for weeks.
#[tokio::test]
async fn a_stale_window_past_what_the_header_holds_never_reads_as_fresh() {
    let l2 = MapTier::new("l2");
    let writer = Cache::builder()
        .namespace("ns")
        .tier(l2.clone())
        .build()
        .await
        .unwrap();
    let hundred_days = Duration::from_secs(100 * 24 * 60 * 60);
    let options = EntryOptions::new(CacheStrategy::Custom(Duration::from_millis(50)))
        .fail_safe(FailSafe::new(hundred_days));
    writer.set("k", &1_u32, options).await.unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;
    let reader = two_tier_cache(&l2).await;
    assert_eq!(
        reader.get::<u32>("k").await.unwrap(),
        None,
        "past its TTL the value is stale, never fresh"
    );
}

/// A background load whose loader never returns (a soft timeout handed it to the background, and
/// no hard timeout is set) is dropped at the background bound: its flight and its background slot
/// do not stay taken for good, and the next call loads again.
#[tokio::test]
async fn a_background_load_that_never_returns_is_dropped_at_the_bound() {
    let cache = Cache::builder()
        .memory(MemoryTier::new(1_000))
        .background_timeout(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    let options = short_lived().fail_safe(fail_safe());
    cache.set("k", &1_u32, options.clone()).await.unwrap();
    tokio::time::sleep(SHORT + Duration::from_millis(20)).await;
    let stuck = cache
        .get_or_compute(
            "k",
            options.clone().soft_timeout(Duration::from_millis(20)),
            std::future::pending::<Result<u32, Error>>,
        )
        .await
        .unwrap();
    assert_eq!(stuck, 1, "the stale value answers at the soft timeout");
    assert_eq!((cache.loads_in_flight(), cache.background_loads()), (1, 1));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        (cache.loads_in_flight(), cache.background_loads()),
        (0, 0),
        "the stuck load was dropped at the bound"
    );
    let fresh = cache
        .get_or_compute("k", options, || async { Ok::<_, Error>(2_u32) })
        .await
        .unwrap();
    assert_eq!(fresh, 2, "and the next call loads again");
}
