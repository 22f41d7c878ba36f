//! How long an invalidation takes to reach another instance, against raw fred Pub/Sub in the same
//! run, on one current-thread runtime (so the figure is round trips and client work, not thread
//! wake-ups).
//!
//! - `invalidation`: instance A (L1 + bus) runs `set`; the clock stops when the entry is gone
//!   from instance B's L1 (B's bus handler has applied the message). Baseline: a raw fred
//!   `PUBLISH` of a message of the same size, until a raw subscriber receives it. Target: median
//!   at most 1.2x.
//! - `invalidation_with_redis`: the same with Redis as the shared tier below L1, so `set` writes
//!   Redis before it publishes (it must: an instance that drops its copy and re-reads has to find
//!   the new value). Baseline: raw `SET` then `PUBLISH`, until received.
//! - `stream_bus_p50` / `stream_bus_p99`: `invalidation` on the stream transport (`XADD`, then
//!   B's blocking `XREAD` wakes). Baseline, like for like: a raw `XADD` of a message of the same
//!   size until a raw reader blocked in `XREAD` on its own connection has it. Target: at most 1.5x.
//! - `tracking_bus_p50` / `tracking_bus_p99`: on the tracking transport, with Redis as the shared
//!   tier (Redis reports the write itself, so the `SET` is the message). Baseline: a raw `SET`
//!   until a raw RESP3 client tracking the key's prefix (`CLIENT TRACKING ON BCAST`, as the bus
//!   does) receives the invalidation push. Target: at most 1.5x.
//!
//!   These four are not criterion groups: each sample is one message, raw and tiercache
//!   alternating sample by sample, so both sides see the same machine; the rows are the p50
//!   and p99 of each side.
//!
//! - `invalidation_authenticated`: `invalidation` with a shared bus key (every message signed
//!   with HMAC-SHA256 and verified). Baseline: the same unsigned (`invalidation`'s pair), so the
//!   ratio is what authentication costs. Target: at most 1.05x.
//!
//! Each pair runs `ROUNDS` times, alternating; `cargo xtask bench` reports the median of the
//! per-round ratios. The bench starts its own `redis-server` on a free loopback port.
#![expect(
    clippy::expect_used,
    reason = "a bench that cannot set up has nothing to measure"
)]
#![expect(clippy::print_stdout, reason = "a bench reports on the terminal")]

use std::{
    hint::black_box,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use tiercache::{
    Bus, BusKey, BusOptions, Cache, CacheStrategy, MemoryTier, RedisBus, RedisStreamBus, RedisTier,
    RedisTrackingBus, async_trait,
    core::{BusEvent, BusHealth, BusMessage, BusScope, BusSink},
};
use tiercache_benches::{Profile, profile};
use tiercache_benches::{percentile, report};
use tiercache_redis::fred::{
    clients::Client,
    interfaces::{
        ClientLike, EventInterface, KeysInterface, PubsubInterface, StreamsInterface,
        TrackingInterface,
    },
    prelude::Config,
    types::{Builder, Message, RespVersion, Value},
};
use tiercache_testkit::RedisServer;
use tokio::{
    runtime::Runtime,
    sync::{Notify, broadcast},
};

const ROUNDS: u32 = 3;
const KEY: &str = "profile:1";

/// B's bus, wrapped so the bench learns the moment B has applied a message.
#[derive(Debug)]
struct Watched {
    bus: Arc<dyn Bus>,
    applied: Arc<Notify>,
}

struct WatchedSink {
    sink: Arc<dyn BusSink>,
    applied: Arc<Notify>,
}

#[async_trait]
impl BusSink for WatchedSink {
    async fn deliver(&self, event: BusEvent) {
        self.sink.deliver(event).await;
        self.applied.notify_one();
    }
}

#[async_trait]
impl Bus for Watched {
    fn name(&self) -> &str {
        self.bus.name()
    }
    async fn start(&self, scope: BusScope<'_>, sink: Arc<dyn BusSink>) -> tiercache::Result<()> {
        let applied = Arc::clone(&self.applied);
        let sink = Arc::new(WatchedSink { sink, applied });
        self.bus.start(scope, sink).await
    }
    async fn publish(&self, message: &BusMessage) -> tiercache::Result<()> {
        self.bus.publish(message).await
    }
    fn health(&self) -> BusHealth {
        self.bus.health()
    }
    fn authenticates(&self) -> bool {
        self.bus.authenticates()
    }
}

/// Two instances on one Redis, and a handle on B's L1.
struct Pair {
    a: Cache,
    /// Kept alive for its bus handler; the bench looks at its L1 through `b_l1`.
    _b: Cache,
    b_l1: MemoryTier,
    applied: Arc<Notify>,
}

/// Which transport a pair uses.
#[derive(Clone, Copy)]
enum Via {
    PubSub,
    Stream,
    Tracking,
}

async fn connect_bus(url: &str, via: Via) -> Arc<dyn Bus> {
    match via {
        Via::PubSub => Arc::new(RedisBus::connect(url).await.expect("connect a Pub/Sub bus")),
        Via::Stream => Arc::new(
            RedisStreamBus::connect(url)
                .await
                .expect("connect a stream bus"),
        ),
        Via::Tracking => Arc::new(
            RedisTrackingBus::connect(url)
                .await
                .expect("connect a tracking bus"),
        ),
    }
}

async fn pair(url: &str, namespace: &str, via: Via, with_redis: bool, options: BusOptions) -> Pair {
    let applied = Arc::new(Notify::new());
    let b_l1 = MemoryTier::new(100);
    let instance = async |l1: MemoryTier, bus: Arc<dyn Bus>| {
        let mut builder = Cache::builder().namespace(namespace).memory(l1);
        if with_redis {
            builder = builder.tier(RedisTier::connect(url).await.expect("connect the tier"));
        }
        builder
            .bus_with(bus, options.clone())
            .build()
            .await
            .expect("build an instance")
    };
    let a_bus = connect_bus(url, via).await;
    let b_bus = Watched {
        bus: connect_bus(url, via).await,
        applied: Arc::clone(&applied),
    };
    let a = instance(MemoryTier::new(100), a_bus).await;
    let b = instance(b_l1.clone(), Arc::new(b_bus)).await;
    Pair {
        a,
        _b: b,
        b_l1,
        applied,
    }
}

/// Puts the value in B's L1 directly (no message), so each measured `set` has something to drop.
async fn plant_in_b(pair: &Pair, value: &Arc<Profile>) {
    let entry = tiercache_moka_entry(value);
    pair.b_l1.insert(KEY, entry).await;
}

fn tiercache_moka_entry(value: &Arc<Profile>) -> tiercache_moka::MemoryEntry {
    tiercache_moka::MemoryEntry::new(Arc::clone(value), Instant::now() + Duration::from_secs(600))
}

/// The time from A's `set` to B having dropped the key, `iters` times.
async fn set_until_gone(pair: &Pair, iters: u64) -> Duration {
    let value = Arc::new(profile(1));
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        plant_in_b(pair, &value).await;
        let started = Instant::now();
        pair.a
            .set_arc(KEY, Arc::clone(&value), CacheStrategy::LongTerm)
            .await
            .expect("set on A");
        pair.applied.notified().await;
        total += started.elapsed();
        assert!(pair.b_l1.get(KEY).await.is_none(), "B dropped the key");
    }
    total
}

/// Raw fred: a publisher and a subscriber client on their own connections.
struct Raw {
    publisher: Client,
    received: broadcast::Receiver<Message>,
    _subscriber: Client,
}

async fn raw(url: &str) -> Raw {
    let connect = async || {
        let client = Builder::from_config(Config::from_url(url).expect("url"))
            .build()
            .expect("build a client");
        client.init().await.expect("connect a raw client");
        client
    };
    let publisher = connect().await;
    let subscriber = connect().await;
    let received = subscriber.message_rx();
    subscriber.subscribe("raw:bench").await.expect("subscribe");
    Raw {
        publisher,
        received,
        _subscriber: subscriber,
    }
}

/// The time from a raw (SET and) PUBLISH to the subscriber having the message, `iters` times.
async fn raw_round_trips(raw: &mut Raw, iters: u64, set_first: Option<&Bytes>) -> Duration {
    // The size of a bus message that invalidates "bench-x:profile:1".
    let payload = Bytes::from(vec![0xB7_u8; 28 + 2 + 2 + KEY.len()]);
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let started = Instant::now();
        if let Some(value) = set_first {
            let _: () = raw
                .publisher
                .set("raw:profile:1", value.clone(), None, None, false)
                .await
                .expect("raw SET");
        }
        let _: i64 = raw
            .publisher
            .publish("raw:bench", payload.clone())
            .await
            .expect("raw PUBLISH");
        black_box(raw.received.recv().await.expect("raw receive"));
        total += started.elapsed();
    }
    total
}

/// Samples per side in a paired network measurement (half with `--quick`).
const PAIRED_SAMPLES: usize = 2_000;
/// The size of a bus message that invalidates one key of the bench's namespaces.
const MESSAGE_LEN: usize = 28 + 2 + 2 + KEY.len();

/// A raw fred client of `url`, RESP3 when `resp3`.
async fn raw_client(url: &str, resp3: bool) -> Client {
    let mut config = Config::from_url(url).expect("url");
    if resp3 {
        config.version = RespVersion::RESP3;
    }
    let client = Builder::from_config(config)
        .build()
        .expect("build a client");
    client.init().await.expect("connect a raw client");
    client
}

/// A raw stream reader: a task blocked in `XREAD` on its own connection, waking `arrived` per
/// batch it reads.
async fn raw_stream_reader(url: &str, stream: &'static str, arrived: Arc<Notify>) -> Client {
    let reader = raw_client(url, false).await;
    let task_reader = reader.clone();
    tokio::spawn(async move {
        let mut last = "$".to_owned();
        loop {
            let reply: Value = match task_reader
                .xread(Some(512), Some(2_000), stream, last.clone())
                .await
            {
                Ok(reply) => reply,
                Err(_) => return,
            };
            if let Some(id) = last_stream_id(&reply) {
                last = id;
                arrived.notify_one();
            }
        }
    });
    reader
}

/// The id of the last entry in a RESP2 `XREAD` reply of one stream
/// (`[[key, [[id, fields], ...]]]`), `None` for a timeout.
fn last_stream_id(reply: &Value) -> Option<String> {
    let Value::Array(streams) = reply else {
        return None;
    };
    let Value::Array(stream) = streams.first()? else {
        return None;
    };
    let Value::Array(entries) = stream.get(1)? else {
        return None;
    };
    let Value::Array(entry) = entries.last()? else {
        return None;
    };
    entry.first()?.as_string()
}

/// `samples` samples of each side, alternating: (ours, raw).
async fn paired<R, O>(samples: usize, mut raw: R, mut ours: O) -> (Vec<Duration>, Vec<Duration>)
where
    R: AsyncFnMut() -> Duration,
    O: AsyncFnMut() -> Duration,
{
    let (mut our_times, mut raw_times) = (Vec::with_capacity(samples), Vec::with_capacity(samples));
    for _ in 0..samples {
        raw_times.push(raw().await);
        our_times.push(ours().await);
    }
    (our_times, raw_times)
}

/// Writes the p50 and p99 rows of a paired measurement as `<row>_p50` and `<row>_p99`.
fn write_percentiles(row: &str, mut ours: Vec<Duration>, mut raw: Vec<Duration>, raw_name: &str) {
    ours.sort();
    raw.sort();
    let at = |sorted: &[Duration], percent: usize| percentile(sorted, percent).as_secs_f64() * 1e9;
    for percent in [50, 99] {
        let (mine, theirs) = (at(&ours, percent), at(&raw, percent));
        println!(
            "{row}_p{percent}: tiercache {:.1} µs, {raw_name} {:.1} µs ({:.2}x)",
            mine / 1e3,
            theirs / 1e3,
            mine / theirs
        );
        report::write(&format!("{row}_p{percent}"), mine, theirs, raw_name)
            .expect("write the result");
    }
}

/// The stream bus's set-until-gone against raw `XADD` until a blocked `XREAD` has it.
async fn stream_pairs(url: &str, pair: &Pair, samples: usize) {
    const STREAM: &str = "raw:bench-stream";
    let arrived = Arc::new(Notify::new());
    let _reader = raw_stream_reader(url, STREAM, Arc::clone(&arrived)).await;
    let writer = raw_client(url, false).await;
    // Let the reader block before the first sample.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let payload = Bytes::from(vec![0xB7_u8; MESSAGE_LEN]);
    let raw = async || {
        let started = Instant::now();
        let _: Value = writer
            .xadd(
                STREAM,
                false,
                ("MAXLEN", "~", 10_000),
                "*",
                vec![("m", payload.clone())],
            )
            .await
            .expect("raw XADD");
        arrived.notified().await;
        started.elapsed()
    };
    let ours = async || set_until_gone(pair, 1).await;
    let (ours, raw) = paired(samples, raw, ours).await;
    write_percentiles("stream_bus", ours, raw, "raw_fred_xadd_to_blocked_xread");
}

/// The tracking bus's set-until-gone against raw `SET` until a tracking client's push.
async fn tracking_pairs(url: &str, pair: &Pair, samples: usize, value: &Bytes) {
    const PREFIX: &str = "raw:bench-tracking:";
    let tracker = raw_client(url, true).await;
    let mut pushes = tracker.invalidation_rx();
    tracker
        .start_tracking(vec![PREFIX.to_owned()], true, false, false, false)
        .await
        .expect("raw CLIENT TRACKING");
    let writer = raw_client(url, false).await;
    let key = format!("{PREFIX}{KEY}");
    let raw = async || {
        let started = Instant::now();
        let _: () = writer
            .set(key.as_str(), value.clone(), None, None, false)
            .await
            .expect("raw SET");
        black_box(pushes.recv().await.expect("raw invalidation push"));
        started.elapsed()
    };
    let ours = async || set_until_gone(pair, 1).await;
    let (ours, raw) = paired(samples, raw, ours).await;
    write_percentiles("tracking_bus", ours, raw, "raw_fred_set_to_tracking_push");
}

fn bench(c: &mut Criterion) {
    let server = RedisServer::start().expect("start redis-server (is it installed?)");
    let url = server.url();
    let rt: Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build the runtime");
    let plain = BusOptions::new;
    let bus_only = rt.block_on(pair(&url, "bench-bus", Via::PubSub, false, plain()));
    let with_redis = rt.block_on(pair(&url, "bench-redis", Via::PubSub, true, plain()));
    let stream = rt.block_on(pair(&url, "bench-stream", Via::Stream, false, plain()));
    let tracking = rt.block_on(pair(&url, "bench-tracking", Via::Tracking, true, plain()));
    let key = BusKey::new([0x5a_u8; 32]).expect("a 32-byte key");
    let signed = rt.block_on(pair(
        &url,
        "bench-signed",
        Via::PubSub,
        false,
        BusOptions::new().authenticate_with(key),
    ));
    let mut raw = rt.block_on(raw(&url));
    let encoded = Bytes::from(serde_json::to_vec(&profile(1)).expect("encode"));

    let samples = if report::quick() {
        PAIRED_SAMPLES / 2
    } else {
        PAIRED_SAMPLES
    };
    if report::selected("stream_bus_p50") || report::selected("stream_bus_p99") {
        rt.block_on(stream_pairs(&url, &stream, samples));
    }
    if report::selected("tracking_bus_p50") || report::selected("tracking_bus_p99") {
        rt.block_on(tracking_pairs(&url, &tracking, samples, &encoded));
    }
    for (group_name, pair, set_first) in [
        ("invalidation", &bus_only, None),
        ("invalidation_with_redis", &with_redis, Some(&encoded)),
    ] {
        let mut group = c.benchmark_group(group_name);
        for round in 1..=ROUNDS {
            let name = if set_first.is_some() {
                "raw_fred_set_publish_receive"
            } else {
                "raw_fred_publish_receive"
            };
            group.bench_with_input(BenchmarkId::new(name, round), &round, |b, _| {
                b.iter_custom(|iters| rt.block_on(raw_round_trips(&mut raw, iters, set_first)));
            });
            group.bench_with_input(BenchmarkId::new("tiercache", round), &round, |b, _| {
                b.iter_custom(|iters| rt.block_on(set_until_gone(pair, iters)));
            });
        }
        group.finish();
    }
    let mut group = c.benchmark_group("invalidation_authenticated");
    for round in 1..=ROUNDS {
        group.bench_with_input(
            BenchmarkId::new("baseline_unsigned", round),
            &round,
            |b, _| {
                b.iter_custom(|iters| rt.block_on(set_until_gone(&bus_only, iters)));
            },
        );
        group.bench_with_input(BenchmarkId::new("tiercache", round), &round, |b, _| {
            b.iter_custom(|iters| rt.block_on(set_until_gone(&signed, iters)));
        });
    }
    group.finish();
    drop(server);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
