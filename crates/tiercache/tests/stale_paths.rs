//! Stale reads a user can see through the public API: an old value that comes back into L1 after
//! the write or invalidation that replaced it returned. Each check stages its interleaving with a
//! tier that holds one call until the test releases it, so the outcome does not depend on luck.
#![expect(clippy::unwrap_used, reason = "test helpers fail the test loudly")]

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tiercache::{
    Cache, CacheStrategy, Entry, EntryOptions, FailSafe, MemoryTier, MokaTier, Result, Tier,
    async_trait,
};
use tiercache_testkit::{LocalBus, LocalNetwork, MapTier};
use tokio::{sync::Notify, task::JoinHandle};

/// How long a test waits for something that should happen at once before it fails.
const PATIENCE: Duration = Duration::from_secs(5);
/// How long a test lets a concurrent call run on its own before it releases a held tier call
/// anyway (a correct cache may make that call wait for the held one).
const GRACE: Duration = Duration::from_millis(500);

/// One call of a tier that the test can hold: the next call after [`arm`](Self::arm) waits until
/// [`release`](Self::release); every other call goes straight through.
#[derive(Debug, Default)]
struct Gate {
    armed: AtomicBool,
    entered: Notify,
    released: Notify,
}

impl Gate {
    fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    async fn pass(&self) {
        if self.armed.swap(false, Ordering::SeqCst) {
            self.entered.notify_one();
            self.released.notified().await;
        }
    }

    /// Waits until the held call has started.
    async fn entered(&self) {
        tokio::time::timeout(PATIENCE, self.entered.notified())
            .await
            .unwrap();
    }

    fn release(&self) {
        self.released.notify_one();
    }
}

/// A [`MapTier`] whose reads (`get`, `get_many`) and writes (`set`, `set_many`, `remove`,
/// `remove_many`, `remove_prefix`, `clear`) can each be held once.
#[derive(Debug, Clone)]
struct HeldTier {
    map: MapTier,
    reads: Arc<Gate>,
    writes: Arc<Gate>,
}

impl HeldTier {
    fn new(name: &str) -> Self {
        Self {
            map: MapTier::new(name),
            reads: Arc::default(),
            writes: Arc::default(),
        }
    }
}

#[async_trait]
impl Tier for HeldTier {
    fn name(&self) -> &str {
        self.map.name()
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>> {
        self.reads.pass().await;
        self.map.get(key).await
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        self.reads.pass().await;
        self.map.get_many(keys).await
    }

    async fn set(&self, key: &str, entry: Entry) -> Result<()> {
        self.writes.pass().await;
        self.map.set(key, entry).await
    }

    async fn set_many(&self, entries: Vec<(String, Entry)>) -> Result<()> {
        self.writes.pass().await;
        self.map.set_many(entries).await
    }

    async fn remove(&self, key: &str) -> Result<()> {
        self.writes.pass().await;
        self.map.remove(key).await
    }

    async fn remove_many(&self, keys: &[&str]) -> Result<()> {
        self.writes.pass().await;
        self.map.remove_many(keys).await
    }

    async fn remove_prefix(&self, prefix: &str) -> Result<u64> {
        self.writes.pass().await;
        self.map.remove_prefix(prefix).await
    }

    async fn clear(&self) -> Result<()> {
        self.writes.pass().await;
        self.map.clear().await
    }

    async fn health(&self) -> Result<()> {
        self.map.health().await
    }
}

/// L1 in front of a held map tier.
async fn held_cache(namespace: &str, l1_max_age: Option<Duration>) -> (Cache, HeldTier) {
    let l2 = HeldTier::new("l2");
    let mut builder = Cache::builder()
        .namespace(namespace)
        .memory(MemoryTier::new(1_000))
        .tier(l2.clone());
    if let Some(max_age) = l1_max_age {
        builder = builder.l1_max_age(max_age);
    }
    (builder.build().await.unwrap(), l2)
}

/// Lets `task` run for up to [`GRACE`], or until `done` holds.
async fn let_run<T>(task: &JoinHandle<T>, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + GRACE;
    while !task.is_finished() && !done() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Awaits a spawned call, failing the test if it does not end within [`PATIENCE`].
async fn join<T>(task: JoinHandle<T>) -> T {
    tokio::time::timeout(PATIENCE, task).await.unwrap().unwrap()
}

/// Waits until `check` holds, or fails the test saying what did not happen.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check() {
        assert!(Instant::now() < deadline, "not within {PATIENCE:?}: {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Runs `mutation` while the lower tier holds its write, and meanwhile a `get` of `key` on the
/// same instance (which may read the lower tier's old copy); returns once `mutation` returned.
/// The mutation runs on this task (not every mutation's future is `Send` on every version).
async fn race_a_read_with_a_held_write(
    cache: &Cache,
    l2: &HeldTier,
    key: &'static str,
    pause: Duration,
    mutation: impl Future<Output = Result<()>>,
) {
    let read_meanwhile = async {
        l2.writes.entered().await;
        tokio::time::sleep(pause).await;
        let reader = tokio::spawn({
            let cache = cache.clone();
            async move { cache.get::<u64>(key).await }
        });
        let_run(&reader, || false).await;
        l2.writes.release();
        join(reader).await
    };
    let both = async { tokio::join!(mutation, read_meanwhile) };
    let (mutated, read) = tokio::time::timeout(PATIENCE, both).await.unwrap();
    mutated.unwrap();
    // The concurrent read may answer either value: it overlapped the mutation.
    read.unwrap();
}

// 1. A local mutation and a read on the same instance.

/// After `invalidate(k)` returned, a read of `k` on the same instance never answers the old value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_racing_invalidate_does_not_leave_the_old_value_in_l1() {
    let (cache, l2) = held_cache("", None).await;
    cache
        .set("k", &1_u64, CacheStrategy::LongTerm)
        .await
        .unwrap();

    l2.writes.arm();
    let invalidate = cache.invalidate("k");
    race_a_read_with_a_held_write(&cache, &l2, "k", Duration::ZERO, invalidate).await;

    assert!(l2.map.raw(":k").is_none(), "the lower tier dropped k");
    assert_eq!(
        cache.get::<u64>("k").await.unwrap(),
        None,
        "a read after invalidate(k) returned answered the invalidated value"
    );
}

/// After `set(k, 2)` returned, a read of `k` on the same instance answers 2, not the old value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_racing_set_does_not_leave_the_old_value_in_l1() {
    // A short L1 max age lets the new value leave L1 while the lower-tier write is held, so the
    // overlapping read misses L1 and reads the lower tier.
    let max_age = Duration::from_millis(300);
    let (cache, l2) = held_cache("", Some(max_age)).await;
    cache
        .set("k", &1_u64, CacheStrategy::LongTerm)
        .await
        .unwrap();

    l2.writes.arm();
    let set = cache.set("k", &2_u64, CacheStrategy::LongTerm);
    let pause = max_age + Duration::from_millis(100);
    race_a_read_with_a_held_write(&cache, &l2, "k", pause, set).await;

    assert!(l2.map.raw(":k").is_some(), "the lower tier holds k");
    assert_eq!(
        cache.get::<u64>("k").await.unwrap(),
        Some(2),
        "a read after set(k, 2) returned did not answer 2"
    );
}

/// After `invalidate_prefix(p)` returned, a read of a key under `p` never answers the old value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_racing_invalidate_prefix_does_not_leave_the_old_value_in_l1() {
    let (cache, l2) = held_cache("ns", None).await;
    cache
        .set("user:1", &1_u64, CacheStrategy::LongTerm)
        .await
        .unwrap();

    l2.writes.arm();
    let invalidate = cache.invalidate_prefix("user:");
    race_a_read_with_a_held_write(&cache, &l2, "user:1", Duration::ZERO, invalidate).await;

    assert!(
        l2.map.keys().is_empty(),
        "the lower tier dropped the prefix"
    );
    assert_eq!(
        cache.get::<u64>("user:1").await.unwrap(),
        None,
        "a read after invalidate_prefix(\"user:\") returned answered the invalidated value"
    );
}

/// After `clear()` returned, a read on the same instance never answers a value from before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_racing_clear_does_not_leave_the_old_value_in_l1() {
    let (cache, l2) = held_cache("", None).await;
    cache
        .set("k", &1_u64, CacheStrategy::LongTerm)
        .await
        .unwrap();

    l2.writes.arm();
    let clear = cache.clear();
    race_a_read_with_a_held_write(&cache, &l2, "k", Duration::ZERO, clear).await;

    assert!(l2.map.keys().is_empty(), "the lower tier was cleared");
    assert_eq!(
        cache.get::<u64>("k").await.unwrap(),
        None,
        "a read after clear() returned answered a value from before the clear"
    );
}

// 2. In-process lower tiers under a bus.

/// One instance: its own L1 and its own in-process L2, over the shared tier and the bus.
struct Instance {
    cache: Cache,
    bus: Arc<LocalBus>,
}

impl Instance {
    async fn new(network: &LocalNetwork, shared: &MapTier) -> Self {
        let bus = Arc::new(network.bus());
        let cache = Cache::builder()
            .namespace("two")
            .memory(MemoryTier::new(1_000))
            .tier(MokaTier::new(1_000))
            .tier(shared.clone())
            .bus(Arc::clone(&bus))
            .build()
            .await
            .unwrap();
        Self { cache, bus }
    }

    fn received(&self) -> u64 {
        self.cache.stats().bus.unwrap().received
    }

    fn flushes(&self) -> u64 {
        self.cache.stats().bus.unwrap().l1_flushes
    }
}

/// A writes `k = 1`, and B reads it, so B's L1 and B's own L2 hold it.
async fn two_instances_sharing_k() -> (Instance, Instance, MapTier) {
    let network = LocalNetwork::new();
    let shared = MapTier::new("shared");
    let a = Instance::new(&network, &shared).await;
    let b = Instance::new(&network, &shared).await;
    a.cache
        .set("k", &1_u64, CacheStrategy::LongTerm)
        .await
        .unwrap();
    eventually("B received A's first write", || b.received() == 1).await;
    assert_eq!(b.cache.get::<u64>("k").await.unwrap(), Some(1));
    (a, b, shared)
}

/// Once another instance's `set(k, 2)` arrived, a read here never answers the old value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_set_reaches_an_in_process_l2() {
    let (a, b, shared) = two_instances_sharing_k().await;
    a.cache
        .set("k", &2_u64, CacheStrategy::LongTerm)
        .await
        .unwrap();
    eventually("B received A's second write", || b.received() == 2).await;

    assert!(!shared.keys().is_empty(), "the shared tier holds k");
    let read = b.cache.get::<u64>("k").await.unwrap();
    assert!(
        matches!(read, None | Some(2)),
        "B answered {read:?} after A's set(k, 2) reached it: the old value from B's own L2"
    );
}

/// Once another instance's `invalidate(k)` arrived, a read here answers nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_invalidate_reaches_an_in_process_l2() {
    let (a, b, shared) = two_instances_sharing_k().await;
    a.cache.invalidate("k").await.unwrap();
    eventually("B received A's invalidation", || b.received() == 2).await;

    assert!(shared.keys().is_empty(), "the shared tier dropped k");
    assert_eq!(
        b.cache.get::<u64>("k").await.unwrap(),
        None,
        "B answered the invalidated value from its own L2 after A's invalidate(k) reached it"
    );
}

/// After a bus gap flush, a read never answers a value that changed during the gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bus_gap_reaches_an_in_process_l2() {
    let (a, b, _shared) = two_instances_sharing_k().await;
    b.bus.disconnect();
    a.cache
        .set("k", &2_u64, CacheStrategy::LongTerm)
        .await
        .unwrap();
    b.bus.reconnect();
    eventually("B flushed after the gap", || b.flushes() == 1).await;

    let read = b.cache.get::<u64>("k").await.unwrap();
    assert!(
        matches!(read, None | Some(2)),
        "B answered {read:?} after a gap flush: a value changed during the gap, from B's own L2"
    );
}

// 3. A fail-safe fallback and an invalidation.

/// Short-lived, with a long fail-safe window and throttle: a stale copy stays behind in L1.
fn fail_safe_options() -> EntryOptions {
    EntryOptions::new(CacheStrategy::Custom(Duration::from_millis(50)))
        .fail_safe(FailSafe::new(Duration::from_secs(60)).throttle(Duration::from_secs(30)))
}

fn source_down() -> std::io::Error {
    std::io::Error::other("source down")
}

/// After `invalidate(k)` returned, a fail-safe fallback read before it is not served for `k` again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidated_fallback_is_not_served_again() {
    let cache = Cache::builder()
        .memory(MemoryTier::new(1_000))
        .build()
        .await
        .unwrap();
    let options = fail_safe_options();
    cache.set("k", &1_u64, options.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    // X loads k and hangs; Y asks for k meanwhile (its loader fails) and waits for X.
    let started = Arc::new(Notify::new());
    let x = tokio::spawn({
        let (cache, options, started) = (cache.clone(), options.clone(), Arc::clone(&started));
        async move {
            let hang = move || async move {
                started.notify_one();
                std::future::pending::<std::result::Result<u64, std::io::Error>>().await
            };
            cache.get_or_compute("k", options, hang).await
        }
    });
    tokio::time::timeout(PATIENCE, started.notified())
        .await
        .unwrap();
    let y = tokio::spawn({
        let (cache, options) = (cache.clone(), options.clone());
        async move {
            let fail = || async { Err::<u64, _>(source_down()) };
            cache.get_or_compute("k", options, fail).await
        }
    });
    let_run(&y, || cache.stats().coalesced >= 1).await;

    // k is invalidated, then X's caller goes away (cancelled): Y loads for itself and fails.
    cache.invalidate("k").await.unwrap();
    x.abort();
    assert!(tokio::time::timeout(PATIENCE, x).await.unwrap().is_err());
    // Y may answer the stale value or the loader's error: it overlapped the invalidation.
    let _answer = join(y).await;

    assert_eq!(
        cache.get::<u64>("k").await.unwrap(),
        None,
        "a read after invalidate(k) returned answered the invalidated fail-safe fallback"
    );
}

/// After `invalidate(k)` returned, a fallback a `get_or_compute_many` read before it is not served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidated_batch_fallback_is_not_served_again() {
    let (cache, l2) = held_cache("", None).await;
    let options = fail_safe_options();
    cache.set("k", &1_u64, options.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    l2.reads.arm();
    let batch = tokio::spawn({
        let (cache, options) = (cache.clone(), options.clone());
        async move {
            let fail =
                |_missing: Vec<String>| async { Err::<HashMap<String, u64>, _>(source_down()) };
            cache.get_or_compute_many(&["k"], options, fail).await
        }
    });
    l2.reads.entered().await;
    // The invalidation runs on this task while the batch's read is held (released after it
    // returned, or after a grace period if it waits for the read).
    let mut invalidate = std::pin::pin!(cache.invalidate("k"));
    let early = tokio::time::timeout(GRACE, &mut invalidate).await;
    l2.reads.release();
    let invalidated = match early {
        Ok(invalidated) => invalidated,
        Err(_) => tokio::time::timeout(PATIENCE, invalidate).await.unwrap(),
    };
    invalidated.unwrap();
    // The batch may answer the stale value or the loader's error: it overlapped the invalidation.
    let _answer = join(batch).await;

    assert!(l2.map.raw(":k").is_none(), "the lower tier dropped k");
    assert_eq!(
        cache.get::<u64>("k").await.unwrap(),
        None,
        "a read after invalidate(k) returned answered the invalidated fail-safe fallback"
    );
}

// 4. A load in flight and a later caller.

/// A `get_or_compute(k)` started after `invalidate(k)` returned answers a value loaded after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_after_invalidate_does_not_join_an_older_load() {
    let cache = Cache::builder()
        .memory(MemoryTier::new(1_000))
        .build()
        .await
        .unwrap();
    let source = Arc::new(AtomicU64::new(1));

    // Caller 1 reads the source (1), then its load hangs until released.
    let (started, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let first = tokio::spawn({
        let (cache, source) = (cache.clone(), Arc::clone(&source));
        let (started, release) = (Arc::clone(&started), Arc::clone(&release));
        async move {
            let load = move || async move {
                let seen = source.load(Ordering::SeqCst);
                started.notify_one();
                release.notified().await;
                Ok::<_, std::io::Error>(seen)
            };
            cache
                .get_or_compute("k", CacheStrategy::LongTerm, load)
                .await
        }
    });
    tokio::time::timeout(PATIENCE, started.notified())
        .await
        .unwrap();

    // The source changes and the key is invalidated; then caller 2 asks.
    source.store(2, Ordering::SeqCst);
    cache.invalidate("k").await.unwrap();
    let second = tokio::spawn({
        let (cache, source) = (cache.clone(), Arc::clone(&source));
        async move {
            let load =
                move || async move { Ok::<_, std::io::Error>(source.load(Ordering::SeqCst)) };
            cache
                .get_or_compute("k", CacheStrategy::LongTerm, load)
                .await
        }
    });
    let_run(&second, || cache.stats().coalesced >= 1).await;
    release.notify_one();

    let second = join(second).await.unwrap();
    // Caller 1 may answer 1: its load started before the invalidation.
    join(first).await.unwrap();
    assert_eq!(
        second, 2,
        "a get_or_compute started after invalidate(k) returned answered an older load's value"
    );
    assert_ne!(
        cache.get::<u64>("k").await.unwrap(),
        Some(1),
        "L1 holds the value loaded before the invalidation"
    );
}
