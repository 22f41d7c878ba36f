//! Shared fixtures for the criterion benches in `benches/`: each bench measures tiercache and the
//! raw dependency it is built on, in the same group and the same run.

use serde::{Deserialize, Serialize};

pub mod report;

/// The cached value of every bench: about 1 KiB once its strings are counted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// Id.
    pub id: u64,
    /// Display name.
    pub name: String,
    /// E-mail address.
    pub email: String,
    /// Eight short tags.
    pub tags: Vec<String>,
    /// 800 bytes of text.
    pub bio: String,
    /// A number.
    pub score: f64,
}

/// The profile with id `id`.
pub fn profile(id: u64) -> Profile {
    Profile {
        id,
        name: format!("user number {id}"),
        email: format!("user{id}@example.com"),
        tags: (0..8).map(|t| format!("tag-{t}-{id}")).collect(),
        bio: "x".repeat(800),
        score: id as f64 / 7.0,
    }
}

/// `count` keys `profile:N`, in a fixed shuffled order so consecutive reads do not walk memory in
/// insertion order.
pub fn shuffled_keys(count: usize) -> Vec<String> {
    let mut keys: Vec<String> = (0..count).map(|i| format!("profile:{i}")).collect();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for i in (1..keys.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let j = usize::try_from(state % (i as u64 + 1)).unwrap_or(0);
        keys.swap(i, j);
    }
    keys
}

/// Runs `iters` calls of `op` spread over `tasks` concurrent tasks on `rt` and returns the wall
/// time of the whole batch, scaled back to `iters` calls when rounding gave each task one more.
/// `op` gets the task's number and the call's number within the task.
///
/// # Panics
///
/// When a task panics: a bench with a broken task has nothing to report.
pub fn concurrent<F, Fut>(
    rt: &tokio::runtime::Runtime,
    iters: u64,
    tasks: usize,
    op: F,
) -> std::time::Duration
where
    F: Fn(u64, u64) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = ()> + Send,
{
    let per_task = iters.div_ceil(tasks as u64);
    rt.block_on(async move {
        let started = std::time::Instant::now();
        let handles: Vec<_> = (0..tasks as u64)
            .map(|task| {
                let op = op.clone();
                tokio::spawn(async move {
                    for call in 0..per_task {
                        op(task, call).await;
                    }
                })
            })
            .collect();
        for handle in handles {
            #[expect(
                clippy::expect_used,
                reason = "documented: a broken task ends the bench"
            )]
            handle.await.expect("bench task");
        }
        started
            .elapsed()
            .mul_f64(iters as f64 / (per_task * tasks as u64) as f64)
    })
}

/// The baseline of the L1-hit groups: raw moka get of the `Arc<Profile>` under the next key of
/// `keys`, then `Profile::clone`, as a typed cache's `get` hands back an owned value.
pub fn raw_moka_get_and_clone(
    b: &mut criterion::Bencher<'_>,
    rt: &tokio::runtime::Runtime,
    raw: &moka::future::Cache<String, std::sync::Arc<Profile>>,
    keys: &[String],
) {
    let mut i = 0;
    b.to_async(rt).iter(|| {
        i = (i + 1) % keys.len();
        let key = &keys[i];
        async move {
            let hit = raw.get(key.as_str()).await;
            std::hint::black_box(hit.map(|arc| Profile::clone(&arc)))
        }
    });
}

/// The `p_percent`-th percentile of sorted durations, by nearest rank (zero for none).
pub fn percentile(sorted: &[std::time::Duration], p_percent: usize) -> std::time::Duration {
    let last = sorted.len().saturating_sub(1);
    sorted
        .get(last * p_percent / 100)
        .copied()
        .unwrap_or_default()
}

/// A multi-threaded runtime of `workers` workers, timers and I/O on.
///
/// # Panics
///
/// When the runtime cannot be built: a bench without one has nothing to measure.
pub fn runtime(workers: usize) -> tokio::runtime::Runtime {
    #[expect(
        clippy::expect_used,
        reason = "documented: a bench without a runtime ends"
    )]
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("build the runtime")
}

/// Puts the profile of each key of `keys` into a raw moka map (as an `Arc`) and into `cache`.
///
/// # Panics
///
/// When `cache` refuses a write: the bench would measure misses.
pub async fn fill_l1(
    raw: &moka::future::Cache<String, std::sync::Arc<Profile>>,
    cache: &tiercache::Cache,
    keys: &[String],
) {
    for (i, key) in keys.iter().enumerate() {
        let value = profile(i as u64);
        raw.insert(key.clone(), std::sync::Arc::new(value.clone()))
            .await;
        #[expect(
            clippy::expect_used,
            reason = "documented: a bench that cannot fill has nothing to measure"
        )]
        cache
            .set(key, &value, tiercache::CacheStrategy::LongTerm)
            .await
            .expect("fill the cache");
    }
}

/// Writes the profile of each key of `keys` through `cache` (Redis below its L1) and, as plain
/// JSON, with `pool` under `raw:<key>`, where the raw baselines read it.
///
/// # Panics
///
/// When a write fails: the bench would measure misses.
pub async fn fill_redis(
    cache: &tiercache::Cache,
    pool: &tiercache_redis::fred::clients::Pool,
    keys: &[String],
) {
    use tiercache_redis::fred::interfaces::KeysInterface;
    for (i, key) in keys.iter().enumerate() {
        #[expect(
            clippy::expect_used,
            reason = "documented: a bench that cannot fill has nothing to measure"
        )]
        cache
            .set(key, &profile(i as u64), tiercache::CacheStrategy::LongTerm)
            .await
            .expect("fill Redis");
        #[expect(
            clippy::expect_used,
            reason = "documented: a bench that cannot fill has nothing to measure"
        )]
        let json = serde_json::to_vec(&profile(i as u64)).expect("encode");
        #[expect(
            clippy::expect_used,
            reason = "documented: a bench that cannot fill has nothing to measure"
        )]
        let _: () = pool
            .set(
                format!("raw:{key}"),
                bytes::Bytes::from(json),
                None,
                None,
                false,
            )
            .await
            .expect("fill raw keys");
    }
}

/// A connected fred pool of `size` connections to `url` with fred's defaults (no per-command
/// timeout, no unresponsive checks): the raw side of the L2 benches.
///
/// # Panics
///
/// When the pool cannot connect.
pub async fn raw_pool(url: &str, size: usize) -> tiercache_redis::fred::clients::Pool {
    use tiercache_redis::fred::{
        interfaces::ClientLike,
        types::{Builder, config::Config},
    };
    #[expect(
        clippy::expect_used,
        reason = "documented: a bench that cannot connect has nothing to measure"
    )]
    let pool = Builder::from_config(Config::from_url(url).expect("url"))
        .build_pool(size)
        .expect("build the raw pool");
    #[expect(
        clippy::expect_used,
        reason = "documented: a bench that cannot connect has nothing to measure"
    )]
    pool.init().await.expect("connect the raw pool");
    pool
}
