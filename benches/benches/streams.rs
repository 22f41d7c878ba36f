//! The streams adapter against raw fred on the same server, in the same criterion groups.
//!
//! - `streams_publish`: 64 concurrent tasks publishing a 1 KiB event (`EventStream::publish`:
//!   JSON encode + `XADD`) vs 64 tasks of raw `serde_json` encode + `XADD`, on a two-worker
//!   runtime. Reported per publish; target: throughput at least 0.9x raw.
//! - `streams_latency`: one event from publish until a reader blocked in `XREAD BLOCK` on its own
//!   connection has it decoded, vs the same with raw fred `XADD` / `XREAD` + `serde_json`, on a
//!   current-thread runtime. Target: at most 1.2x.
//!
//! Each pair runs `ROUNDS` times, alternating; `cargo xtask bench` reports the median of the
//! per-round ratios. The bench starts its own `redis-server` on a free loopback port.
#![expect(
    clippy::expect_used,
    reason = "a bench that cannot set up has nothing to measure"
)]

use std::{
    hint::black_box,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use tiercache::{
    RedisOptions,
    streams::{EventStream, Streams},
};
use tiercache_benches::{Profile, profile};
use tiercache_redis::fred::{
    clients::{Client, Pool},
    interfaces::StreamsInterface,
    types::{
        Value,
        streams::{XCap, XID},
    },
};
use tiercache_testkit::RedisServer;
use tokio::runtime::Runtime;

const ROUNDS: u32 = 3;
const TASKS: usize = 64;
const MAX_LEN: i64 = 10_000;

struct Fixture {
    typed: EventStream<Profile, tiercache::JsonCodec>,
    raw: Pool,
    event: Profile,
}

fn fixture(rt: &Runtime, url: &str) -> Fixture {
    rt.block_on(async {
        let options = RedisOptions::from_url(url).expect("url");
        let streams = Streams::connect_with(options.clone())
            .await
            .expect("connect the adapter");
        let raw = options.connect_pool().await.expect("connect raw fred");
        Fixture {
            typed: streams
                .typed::<Profile>("bench:typed")
                .max_len(MAX_LEN as u64),
            raw,
            event: profile(1),
        }
    })
}

async fn raw_xadd(pool: &Pool, json: Bytes) -> Value {
    let cap = XCap::try_from(("MAXLEN", "~", MAX_LEN)).expect("cap");
    pool.xadd("bench:raw", false, cap, XID::Auto, vec![("data", json)])
        .await
        .expect("raw XADD")
}

/// The first entry of a raw XREAD reply: `[[key, [[id, [field, value]]]]]` -> `[id, fields]`.
fn raw_entry(reply: &Value) -> Option<&[Value]> {
    let mut level = reply;
    for index in [0, 1, 0] {
        let Value::Array(items) = level else {
            return None;
        };
        level = items.get(index)?;
    }
    match level {
        Value::Array(entry) => Some(entry),
        _ => None,
    }
}

fn raw_decode(reply: &Value) -> Option<Profile> {
    let Value::Array(fields) = raw_entry(reply)?.get(1)? else {
        return None;
    };
    serde_json::from_slice(fields.get(1)?.as_bytes()?).ok()
}

fn raw_id(reply: &Value) -> Option<String> {
    raw_entry(reply)?.first()?.as_string()
}

fn bench(c: &mut Criterion) {
    let server = RedisServer::start().expect("start redis-server (is it installed?)");
    let url = server.url();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build the runtime");
    let f = Arc::new(fixture(&rt, &url));
    let mut group = c.benchmark_group("streams_publish");
    for round in 1..=ROUNDS {
        group.bench_with_input(BenchmarkId::new("raw_fred_xadd", round), &round, |b, _| {
            b.iter_custom(|iters| {
                let f = Arc::clone(&f);
                tiercache_benches::concurrent(&rt, iters, TASKS, move |_, _| {
                    let f = Arc::clone(&f);
                    async move {
                        let json = serde_json::to_vec(&f.event).expect("encode");
                        black_box(raw_xadd(&f.raw, Bytes::from(json)).await);
                    }
                })
            });
        });
        group.bench_with_input(BenchmarkId::new("tiercache", round), &round, |b, _| {
            b.iter_custom(|iters| {
                let f = Arc::clone(&f);
                tiercache_benches::concurrent(&rt, iters, TASKS, move |_, _| {
                    let f = Arc::clone(&f);
                    async move {
                        black_box(f.typed.publish(&f.event).await.expect("publish"));
                    }
                })
            });
        });
    }
    group.finish();
    drop(f);
    drop(rt);

    let single = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build the runtime");
    let f = fixture(&single, &url);
    let (reader, raw_reader) = single.block_on(async {
        let reader = f.typed.reader().await.expect("typed reader");
        let raw_reader: Client = RedisOptions::from_url(&url)
            .expect("url")
            .connect_client()
            .await
            .expect("raw reader");
        (reader, raw_reader)
    });
    let mut group = c.benchmark_group("streams_latency");
    for round in 1..=ROUNDS {
        group.bench_with_input(
            BenchmarkId::new("raw_fred_xadd_xread", round),
            &round,
            |b, _| {
                b.iter_custom(|iters| {
                    single.block_on(async {
                        let mut last = "$".to_owned();
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            let started = Instant::now();
                            let read = raw_reader.xread::<Value, _, _>(
                                Some(1),
                                Some(5_000),
                                "bench:raw",
                                last.as_str(),
                            );
                            let json = serde_json::to_vec(&f.event).expect("encode");
                            let publish = raw_xadd(&f.raw, Bytes::from(json));
                            let (reply, _) = tokio::join!(read, publish);
                            let reply = reply.expect("raw XREAD");
                            black_box(raw_decode(&reply).expect("raw decode"));
                            total += started.elapsed();
                            last = raw_id(&reply).expect("raw id");
                        }
                        total
                    })
                });
            },
        );
        group.bench_with_input(BenchmarkId::new("tiercache", round), &round, |b, _| {
            b.iter_custom(|iters| {
                single.block_on(async {
                    let mut last = f.typed.fields().newest_id().await.expect("newest id");
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let started = Instant::now();
                        let read = reader.read_after(last, 1, Duration::from_secs(5));
                        let publish = f.typed.publish(&f.event);
                        let (items, _) = tokio::join!(read, publish);
                        let item = items
                            .expect("read")
                            .pop()
                            .expect("one event")
                            .expect("decodes");
                        total += started.elapsed();
                        last = black_box(item).id;
                    }
                    total
                })
            });
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
