//! The fleet coherence checker (tiercache-testkit's `coherence`) on `Cache`: three instances
//! over one real Redis, cache-aside writers and readers on each, faults on a schedule, on every
//! bus transport and with no bus but an L1 max age. Short, fixed-seed runs here; `cargo xtask
//! coherence` runs the long ones. `TIERCACHE_COHERENCE_SEED` replays a seed.
#![expect(clippy::unwrap_used, reason = "test helpers fail the test loudly")]
#![expect(
    clippy::print_stderr,
    reason = "the report of a run is read on the terminal"
)]

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tiercache::{
    Bus, Cache, CacheStrategy, Error, MemoryTier, RedisBus, RedisBusOptions, RedisOptions,
    RedisStreamBus, RedisTier, RedisTrackingBus,
};
use tiercache_redis::fred::types::config::ReconnectPolicy;
use tiercache_testkit::{
    RedisServer,
    coherence::{Bound, Fault, Node, NodeFuture, Source, Workload, run},
};

/// A `Cache` as the checker drives it.
struct CacheNode(Cache);

fn text(err: &Error) -> String {
    err.to_string()
}

impl Node for CacheNode {
    fn get<'a>(&'a self, key: &'a str) -> NodeFuture<'a, Option<u64>> {
        Box::pin(async move { self.0.get::<u64>(key).await.map_err(|err| text(&err)) })
    }

    fn get_or_compute<'a>(&'a self, key: &'a str, source: Arc<Source>) -> NodeFuture<'a, u64> {
        let owned = key.to_owned();
        Box::pin(async move {
            self.0
                .get_or_compute(key, CacheStrategy::ShortTerm, move || async move {
                    Ok::<_, Error>(source.load(&owned).await)
                })
                .await
                .map_err(|err| text(&err))
        })
    }

    fn get_many<'a>(&'a self, keys: &'a [String]) -> NodeFuture<'a, Vec<Option<u64>>> {
        Box::pin(async move {
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            self.0
                .get_many::<u64>(&keys)
                .await
                .map_err(|err| text(&err))
        })
    }

    fn set<'a>(&'a self, key: &'a str, version: u64) -> NodeFuture<'a, ()> {
        Box::pin(async move {
            self.0
                .set(key, &version, CacheStrategy::ShortTerm)
                .await
                .map_err(|err| text(&err))
        })
    }

    fn set_many<'a>(&'a self, pairs: &'a [(String, u64)]) -> NodeFuture<'a, ()> {
        Box::pin(async move {
            let pairs: Vec<(&str, u64)> = pairs.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            self.0
                .set_many(&pairs, CacheStrategy::ShortTerm)
                .await
                .map_err(|err| text(&err))
        })
    }

    fn invalidate<'a>(&'a self, key: &'a str) -> NodeFuture<'a, ()> {
        Box::pin(async move { self.0.invalidate(key).await.map_err(|err| text(&err)) })
    }

    fn invalidate_prefix<'a>(&'a self, prefix: &'a str) -> NodeFuture<'a, ()> {
        Box::pin(async move {
            self.0
                .invalidate_prefix(prefix)
                .await
                .map_err(|err| text(&err))
        })
    }
}

/// Which bus the instances share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    PubSub,
    Stream,
    Tracking,
    /// No bus: only the L1 max age bounds what an instance serves.
    None,
}

const L1_MAX_AGE: Duration = Duration::from_millis(1_500);

fn options(url: &str) -> RedisOptions {
    RedisOptions::from_url(url)
        .unwrap()
        .command_timeout(Duration::from_millis(300))
        .reconnect_policy(ReconnectPolicy::new_constant(0, 50))
}

async fn fleet(url: &str, transport: Transport, size: usize) -> Vec<Arc<dyn Node>> {
    let mut nodes: Vec<Arc<dyn Node>> = Vec::new();
    for _ in 0..size {
        let tier = RedisTier::connect_with(options(url)).await.unwrap();
        let bus_options = RedisBusOptions::new(options(url));
        let bus: Option<Arc<dyn Bus>> = match transport {
            Transport::PubSub => Some(Arc::new(RedisBus::connect_with(bus_options).await.unwrap())),
            Transport::Stream => Some(Arc::new(
                RedisStreamBus::connect_with(bus_options).await.unwrap(),
            )),
            Transport::Tracking => Some(Arc::new(
                RedisTrackingBus::connect_with(bus_options).await.unwrap(),
            )),
            Transport::None => None,
        };
        let builder = Cache::builder()
            .namespace("fleet")
            .memory(MemoryTier::new(10_000))
            .tier(tier)
            .l1_max_age(L1_MAX_AGE);
        let builder = match bus {
            Some(bus) => builder.bus(bus),
            None => builder,
        };
        nodes.push(Arc::new(CacheNode(builder.build().await.unwrap())));
    }
    nodes
}

fn seed() -> u64 {
    std::env::var("TIERCACHE_COHERENCE_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(0xC0FF_EE00)
}

async fn check(transport: Transport, faults: Vec<Fault>, bound: Bound) {
    let server = Arc::new(Mutex::new(RedisServer::start().unwrap()));
    let url = server.lock().unwrap().url();
    let nodes = fleet(&url, transport, 3).await;
    let workload = Workload {
        seed: seed(),
        keys: 16,
        duration: Duration::from_secs(4),
        readers_per_node: 2,
        write_pause: Duration::from_millis(4),
        read_pause: Duration::from_millis(2),
        bound,
        faults,
        load_delay: Duration::from_millis(3),
    };
    let (report, _history) = run(&nodes, &workload, Some(server)).await;
    eprintln!("{transport:?} (seed {}): {report}", workload.seed);
    assert!(
        report.reads > 1_000 && report.writes > 100,
        "the run ran: {report}"
    );
    assert!(
        report.violations.is_empty(),
        "{transport:?}, seed {}: {report}",
        workload.seed
    );
}

/// The bus's propagation on this two-core machine under the run's own load, with room.
const PROPAGATION: Duration = Duration::from_millis(250);

fn bus_bound() -> Bound {
    Bound {
        healthy: PROPAGATION,
        faulty: L1_MAX_AGE + PROPAGATION,
    }
}

fn faults() -> Vec<Fault> {
    vec![
        Fault::KillPubSub {
            at: Duration::from_millis(1_000),
        },
        Fault::Pause {
            at: Duration::from_millis(2_000),
            lasting: Duration::from_millis(400),
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_keeps_its_bound_under_faults() {
    check(Transport::PubSub, faults(), bus_bound()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_keeps_its_bound_under_faults() {
    check(Transport::Stream, faults(), bus_bound()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracking_keeps_its_bound_under_faults() {
    check(Transport::Tracking, faults(), bus_bound()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_bus_the_l1_max_age_bounds_staleness() {
    let bound = Bound {
        healthy: L1_MAX_AGE + PROPAGATION,
        faulty: L1_MAX_AGE + PROPAGATION,
    };
    check(Transport::None, Vec::new(), bound).await;
}
