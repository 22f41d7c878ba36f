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
    Bus, Cache, CacheStrategy, EntryOptions, Error, MemoryTier, RedisBus, RedisBusOptions,
    RedisOptions, RedisStreamBus, RedisTier, RedisTrackingBus,
};
use tiercache_redis::fred::types::config::ReconnectPolicy;
use tiercache_testkit::{
    RedisServer,
    coherence::{Bound, Fault, Node, NodeFuture, Source, Targets, Workload, run, tag_of},
};

/// A `Cache` as the checker drives it.
struct CacheNode(Cache);

/// How every value of `key` is stored: the checker's TTL-free strategy and the key's tag.
fn tagged(key: &str) -> EntryOptions {
    EntryOptions::new(CacheStrategy::ShortTerm).tags([tag_of(key)])
}

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
                .get_or_compute(key, tagged(key), move || async move {
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
                .set(key, &version, tagged(key))
                .await
                .map_err(|err| text(&err))
        })
    }

    fn set_many<'a>(&'a self, pairs: &'a [(String, u64)]) -> NodeFuture<'a, ()> {
        Box::pin(async move {
            let pairs: Vec<(&str, u64)> = pairs.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            // The checker batches keys of one tag.
            let options = pairs
                .first()
                .map_or_else(EntryOptions::default, |(key, _)| tagged(key));
            self.0
                .set_many(&pairs, options)
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

    fn invalidate_tag<'a>(&'a self, tag: &'a str) -> NodeFuture<'a, ()> {
        Box::pin(async move { self.0.invalidate_tag(tag).await.map_err(|err| text(&err)) })
    }
}

/// Which bus the instances share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    PubSub,
    Stream,
    Tracking,
    /// No bus: only the L1 max age bounds what an instance serves.
    NoBus,
    /// Pub/Sub losing one message in 20 without a word: only the L1 max age bounds what the
    /// instances that missed one serve.
    LossyPubSub,
}

const L1_MAX_AGE: Duration = Duration::from_millis(1_500);

fn options(url: &str) -> RedisOptions {
    RedisOptions::from_url(url)
        .unwrap()
        .command_timeout(Duration::from_millis(300))
        .reconnect_policy(ReconnectPolicy::new_constant(0, 50))
}

/// One instance per URL (each its own connections; a URL may be a proxy's).
async fn fleet(urls: &[String], transport: Transport) -> Vec<Arc<dyn Node>> {
    let mut nodes: Vec<Arc<dyn Node>> = Vec::new();
    for url in urls {
        let url = url.as_str();
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
            Transport::LossyPubSub => {
                let inner: Arc<dyn Bus> =
                    Arc::new(RedisBus::connect_with(bus_options).await.unwrap());
                Some(Arc::new(tiercache_testkit::coherence::DroppingBus::new(
                    inner, 20,
                )))
            }
            Transport::NoBus => None,
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

/// How long each run lasts: 5 s here, `TIERCACHE_COHERENCE_SECONDS` (set by `cargo xtask
/// coherence`) for the long runs.
fn duration() -> Duration {
    let seconds = std::env::var("TIERCACHE_COHERENCE_SECONDS")
        .ok()
        .and_then(|seconds| seconds.parse().ok())
        .unwrap_or(5);
    Duration::from_secs(seconds)
}

async fn check(transport: Transport, faults: Vec<Fault>, bound: Bound) {
    let server = Arc::new(Mutex::new(RedisServer::start().unwrap()));
    let url = server.lock().unwrap().url();
    let targets = Targets {
        server: Some(server),
        proxies: Vec::new(),
    };
    let name = format!("{transport:?}");
    check_at(
        &name,
        &[url.clone(), url.clone(), url],
        targets,
        transport,
        faults,
        bound,
    )
    .await;
}

/// One run at a time: the bounds are checked against timing, and runs side by side on two cores
/// would measure each other's load.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn check_at(
    name: &str,
    urls: &[String],
    targets: Targets,
    transport: Transport,
    faults: Vec<Fault>,
    bound: Bound,
) {
    let _alone = ONE_AT_A_TIME.lock().await;
    let nodes = fleet(urls, transport).await;
    let workload = Workload {
        seed: seed(),
        keys: 16,
        duration: duration(),
        readers_per_node: 2,
        write_pause: Duration::from_millis(4),
        read_pause: Duration::from_millis(2),
        bound,
        faults,
        load_delay: Duration::from_millis(3),
    };
    let progress = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_secs(10));
        ticker.tick().await;
        loop {
            ticker.tick().await;
            eprintln!("{transport:?}: running");
        }
    });
    let (report, _history) = run(&nodes, &workload, targets).await;
    progress.abort();
    eprintln!("{name} (seed {}): {report}", workload.seed);
    write_row(name, &report, bound);
    assert!(
        report.reads > 1_000 && report.writes > 100,
        "the run ran: {report}"
    );
    assert!(
        report.violations.is_empty(),
        "{name}, seed {}: {report}",
        workload.seed
    );
}

/// With `TIERCACHE_COHERENCE_REPORT` set (by `cargo xtask coherence`), appends the run's row of
/// the report table to that file.
fn write_row(name: &str, report: &tiercache_testkit::coherence::Report, bound: Bound) {
    use std::io::Write as _;
    let Ok(path) = std::env::var("TIERCACHE_COHERENCE_REPORT") else {
        return;
    };
    let row = format!(
        "| {name} | {} | {} | {} ({} failed) | {} | {} | {:.1} ms | {:.1} ms | {:.1} ms | {} ms / {} ms |\n",
        seed(),
        report.reads + report.writes,
        report.writes,
        report.failed_writes,
        report.faults,
        report.violations.len(),
        report.max_healthy_staleness.as_secs_f64() * 1e3,
        report.max_staleness.as_secs_f64() * 1e3,
        report.max_own_staleness.as_secs_f64() * 1e3,
        bound.healthy.as_millis(),
        bound.faulty.as_millis(),
    );
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut file| file.write_all(row.as_bytes()));
    assert!(
        written.is_ok(),
        "could not write the report row: {written:?}"
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

/// Every 5 s of the run: the Pub/Sub connections killed, then the server frozen for 400 ms, then
/// killed and restarted after 300 ms (the stream run also trims its stream away).
fn faults(duration: Duration) -> Vec<Fault> {
    let cycles = (duration.as_secs() / 5).max(1);
    (0..cycles)
        .flat_map(|cycle| {
            let base = Duration::from_secs(cycle * 5);
            [
                Fault::KillPubSub {
                    at: base + Duration::from_millis(1_000),
                },
                Fault::Pause {
                    at: base + Duration::from_millis(2_000),
                    lasting: Duration::from_millis(400),
                },
                Fault::Restart {
                    at: base + Duration::from_millis(3_200),
                    down: Duration::from_millis(300),
                },
            ]
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_keeps_its_bound_under_faults() {
    check(Transport::PubSub, faults(duration()), bus_bound()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_keeps_its_bound_under_faults() {
    // And the stream trimmed away under its readers once per cycle: they find their position
    // gone, report a gap and empty L1.
    let mut faults = faults(duration());
    let cycles = faults.len() / 3;
    faults.extend((0..cycles).map(|cycle| Fault::Command {
        at: Duration::from_millis(4_200 + 5_000 * cycle as u64),
        words: &["XTRIM", "fleet:\u{1}bus:tiercache:bus:fleet", "MAXLEN", "0"],
    }));
    check(Transport::Stream, faults, bus_bound()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracking_keeps_its_bound_under_faults() {
    check(Transport::Tracking, faults(duration()), bus_bound()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_bus_the_l1_max_age_bounds_staleness() {
    let bound = Bound {
        healthy: L1_MAX_AGE + PROPAGATION,
        faulty: L1_MAX_AGE + PROPAGATION,
    };
    check(Transport::NoBus, faults(duration()), bound).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bus_that_loses_messages_silently_is_bounded_by_the_l1_max_age() {
    let bound = Bound {
        healthy: L1_MAX_AGE + PROPAGATION,
        faulty: L1_MAX_AGE + PROPAGATION,
    };
    check(Transport::LossyPubSub, Vec::new(), bound).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_keeps_its_bound_on_a_cluster() {
    let cluster = tiercache_testkit::RedisCluster::start().unwrap();
    let url = cluster.url();
    let urls = [url.clone(), url.clone(), url];
    check_at(
        "PubSub on a 3-primary cluster",
        &urls,
        Targets::default(),
        Transport::PubSub,
        Vec::new(),
        bus_bound(),
    )
    .await;
}

/// One instance is cut off from Redis (its connections go through a proxy that stops carrying
/// bytes) for a second, twice, while the others keep writing: what it serves meanwhile is bounded
/// by its L1 max age, and once the path heals the bus's late messages (or its reconnect's gap)
/// clean its L1.
async fn partitioned(transport: Transport, bound: Bound) {
    let server = Arc::new(Mutex::new(RedisServer::start().unwrap()));
    let (url, port) = {
        let server = server.lock().unwrap();
        (server.url(), server.port())
    };
    let target = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let proxy = Arc::new(tiercache_testkit::Proxy::start(target).await.unwrap());
    let urls = [url.clone(), url, proxy.url()];
    let targets = Targets {
        server: Some(server),
        proxies: vec![Arc::clone(&proxy), Arc::clone(&proxy), proxy],
    };
    let cut = |at_ms| Fault::Partition {
        at: Duration::from_millis(at_ms),
        lasting: Duration::from_millis(1_000),
        instance: 2,
    };
    let name = format!("{transport:?}, one instance partitioned");
    let faults = vec![cut(1_000), cut(3_000)];
    check_at(&name, &urls, targets, transport, faults, bound).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_bounds_a_partitioned_instance_by_its_l1_max_age() {
    partitioned(Transport::PubSub, bus_bound()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_bounds_a_partitioned_instance_by_its_l1_max_age() {
    partitioned(Transport::Stream, bus_bound()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracking_bounds_a_partitioned_instance_by_its_l1_max_age() {
    partitioned(Transport::Tracking, bus_bound()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_bus_a_partitioned_instance_is_bounded_by_its_l1_max_age() {
    let bound = Bound {
        healthy: L1_MAX_AGE + PROPAGATION,
        faulty: L1_MAX_AGE + PROPAGATION,
    };
    partitioned(Transport::NoBus, bound).await;
}
