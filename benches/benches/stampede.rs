//! Stampede: 1000 concurrent `get_or_compute` calls for one cold key, repeated over fresh keys.
//! Measures loader calls per round (must be exactly 1) and the waiters' p99 latency over the
//! loader's own time (the rest is coalescing, scheduling 1000 tasks on two workers, and the fills).
//! Writes its results for `cargo xtask bench`; `--quick` runs fewer rounds.
#![expect(
    clippy::expect_used,
    reason = "a bench that cannot set up has nothing to measure"
)]
#![expect(clippy::print_stdout, reason = "a bench reports on the terminal")]

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use tiercache::{Cache, CacheStrategy, MemoryTier, RedisTier};
use tiercache_benches::{percentile, profile, report};
use tiercache_testkit::RedisServer;
use tokio::sync::Barrier;

const CALLERS: usize = 1_000;
const LOADER_TIME: Duration = Duration::from_millis(20);

fn main() {
    if !report::selected("stampede") {
        return;
    }
    let rounds = if report::quick() { 5 } else { 30 };
    let server = RedisServer::start().expect("start redis-server (is it installed?)");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build the runtime");
    let (max_calls, latencies, loader_times) = rt.block_on(async {
        let cache = Cache::builder()
            .namespace("stampede")
            .memory(MemoryTier::new(100_000))
            .tier(RedisTier::connect(&server.url()).await.expect("connect"))
            .build()
            .await
            .expect("build the cache");
        let mut max_calls = 0;
        let latencies = Arc::new(Mutex::new(Vec::with_capacity(rounds * CALLERS)));
        let loader_times = Arc::new(Mutex::new(Vec::with_capacity(rounds)));
        for round in 0..rounds {
            let calls = Arc::new(AtomicUsize::new(0));
            let barrier = Arc::new(Barrier::new(CALLERS));
            let key = format!("cold:{round}");
            let tasks: Vec<_> = (0..CALLERS)
                .map(|_| {
                    let (cache, calls, barrier, key) =
                        (cache.clone(), calls.clone(), barrier.clone(), key.clone());
                    let (latencies, loader_times) = (latencies.clone(), loader_times.clone());
                    tokio::spawn(async move {
                        barrier.wait().await;
                        let started = Instant::now();
                        let value = cache
                            .get_or_compute(&key, CacheStrategy::ShortTerm, || async move {
                                calls.fetch_add(1, Ordering::SeqCst);
                                let loading = Instant::now();
                                tokio::time::sleep(LOADER_TIME).await;
                                let value = profile(7);
                                if let Ok(mut times) = loader_times.lock() {
                                    times.push(loading.elapsed());
                                }
                                Ok::<_, std::io::Error>(value)
                            })
                            .await;
                        if let Ok(mut all) = latencies.lock() {
                            all.push(started.elapsed());
                        }
                        value.is_ok()
                    })
                })
                .collect();
            for task in tasks {
                assert!(task.await.expect("task"), "every caller gets the value");
            }
            max_calls = max_calls.max(calls.load(Ordering::SeqCst));
        }
        let take = |m: Arc<Mutex<Vec<Duration>>>| std::mem::take(&mut *m.lock().expect("lock"));
        (max_calls, take(latencies), take(loader_times))
    });
    let mut latencies = latencies;
    latencies.sort();
    let mut loader_times = loader_times;
    loader_times.sort();
    let p99 = percentile(&latencies, 99);
    let p50 = percentile(&latencies, 50);
    let loader = percentile(&loader_times, 50);
    println!(
        "stampede: {rounds} rounds x {CALLERS} callers; most loader calls in a round: {max_calls}; \
         waiters p50 {p50:?}, p99 {p99:?}; loader alone {loader:?}"
    );
    report::write("stampede_loader_calls", max_calls as f64, 1.0, "required")
        .expect("write results");
    report::write(
        "stampede_p99",
        p99.as_secs_f64() * 1e9,
        loader.as_secs_f64() * 1e9,
        "loader_alone",
    )
    .expect("write results");
}
