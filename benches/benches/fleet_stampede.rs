//! Fleet stampede: 3 instances (each its own L1 and connections, over one Redis) and 100
//! concurrent `get_or_compute` calls of one cold key on each, repeated over fresh keys. Measures
//! loader calls per round across the fleet (must be exactly 1: leases) and the waiters' p99
//! latency over the loader's own time; the instances that do not hold the lease wait by polling
//! Redis every `LeaseOptions::poll`. Prints the same figures for poll intervals of 1, 5 (the
//! default, the one in the table) and 20 ms. Writes its results for `cargo xtask bench`;
//! `--quick` runs fewer rounds.
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

use tiercache::{Cache, CacheStrategy, LeaseOptions, MemoryTier, RedisTier};
use tiercache_benches::{percentile, profile, report};
use tiercache_testkit::RedisServer;
use tokio::sync::Barrier;

const INSTANCES: usize = 3;
const CALLERS: usize = 100;
const LOADER_TIME: Duration = Duration::from_millis(20);

/// Loader calls (most in one round), every caller's latency, every loader's time.
struct Figures {
    max_calls: usize,
    latencies: Vec<Duration>,
    loader_times: Vec<Duration>,
}

async fn run(url: &str, poll: Duration, rounds: usize) -> Figures {
    let mut fleet = Vec::new();
    for _ in 0..INSTANCES {
        let cache = Cache::builder()
            .namespace("fleet")
            .memory(MemoryTier::new(100_000))
            .tier(RedisTier::connect(url).await.expect("connect"))
            .leases(LeaseOptions::new().poll(poll))
            .build()
            .await
            .expect("build the cache");
        fleet.push(cache);
    }
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let loader_times = Arc::new(Mutex::new(Vec::new()));
    let mut max_calls = 0;
    for round in 0..rounds {
        let calls = Arc::new(AtomicUsize::new(0));
        let barrier = Arc::new(Barrier::new(INSTANCES * CALLERS));
        let key = format!("cold:{}:{round}", poll.as_millis());
        let mut tasks = Vec::new();
        for cache in &fleet {
            for _ in 0..CALLERS {
                let (cache, calls, barrier, key) =
                    (cache.clone(), calls.clone(), barrier.clone(), key.clone());
                let (latencies, loader_times) = (latencies.clone(), loader_times.clone());
                tasks.push(tokio::spawn(async move {
                    barrier.wait().await;
                    let started = Instant::now();
                    let value = cache
                        .get_or_compute(&key, CacheStrategy::ShortTerm, || async move {
                            calls.fetch_add(1, Ordering::SeqCst);
                            let loading = Instant::now();
                            tokio::time::sleep(LOADER_TIME).await;
                            if let Ok(mut times) = loader_times.lock() {
                                times.push(loading.elapsed());
                            }
                            Ok::<_, std::io::Error>(profile(7))
                        })
                        .await;
                    if let Ok(mut all) = latencies.lock() {
                        all.push(started.elapsed());
                    }
                    value.is_ok()
                }));
            }
        }
        for task in tasks {
            assert!(task.await.expect("task"), "every caller gets the value");
        }
        max_calls = max_calls.max(calls.load(Ordering::SeqCst));
    }
    let take = |m: Arc<Mutex<Vec<Duration>>>| std::mem::take(&mut *m.lock().expect("lock"));
    let mut figures = Figures {
        max_calls,
        latencies: take(latencies),
        loader_times: take(loader_times),
    };
    figures.latencies.sort();
    figures.loader_times.sort();
    figures
}

fn main() {
    if !report::selected("fleet_stampede") {
        return;
    }
    let rounds = if report::quick() { 5 } else { 20 };
    let server = RedisServer::start().expect("start redis-server (is it installed?)");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build the runtime");
    for poll_ms in [1, 20, 5] {
        let poll = Duration::from_millis(poll_ms);
        let figures = rt.block_on(run(&server.url(), poll, rounds));
        let p99 = percentile(&figures.latencies, 99);
        let p50 = percentile(&figures.latencies, 50);
        let loader = percentile(&figures.loader_times, 50);
        println!(
            "fleet stampede, poll {poll:?}: {rounds} rounds x {INSTANCES} instances x {CALLERS} \
             callers; most loader calls in a round: {}; waiters p50 {p50:?}, p99 {p99:?}; loader \
             alone {loader:?}",
            figures.max_calls
        );
        if poll_ms == 5 {
            report::write(
                "fleet_stampede_loader_calls",
                figures.max_calls as f64,
                1.0,
                "required",
            )
            .expect("write results");
            report::write(
                "fleet_stampede_p99",
                p99.as_secs_f64() * 1e9,
                loader.as_secs_f64() * 1e9,
                "loader_alone",
            )
            .expect("write results");
        }
    }
}
