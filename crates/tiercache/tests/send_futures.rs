//! Every public async method of `Cache` returns a `Send` future, so any call can be spawned on a
//! multi-threaded runtime or held across an `.await` in a `Send` task. This file does not compile
//! when one of them stops being `Send`.

use std::{collections::HashMap, future::Future, sync::Arc};

use tiercache::{Cache, CacheStrategy, EntryOptions, MemoryTier, Result};
use tokio::task::JoinHandle;

/// Hands `future` back as it is; compiles only when it is `Send`.
fn assert_send<F: Future + Send>(future: F) -> F {
    future
}

/// Spawns `call` on the runtime (which needs a `Send` future), its answer dropped.
fn spawn<T: Send + 'static>(
    call: impl Future<Output = Result<T>> + Send + 'static,
) -> JoinHandle<Result<()>> {
    tokio::spawn(async move { call.await.map(drop) })
}

/// Every public async method of `Cache` can be spawned: its future is `Send`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_public_async_method_returns_a_send_future() {
    let cache = Cache::builder()
        .memory(MemoryTier::new(1_000))
        .build()
        .await
        .unwrap();
    let short = || EntryOptions::new(CacheStrategy::ShortTerm);
    let load = || async { Ok::<_, std::io::Error>(1_u64) };
    let load_optional = || async { Ok::<_, std::io::Error>(Some(1_u64)) };
    let load_many = |missing: Vec<String>| async move {
        Ok::<_, std::io::Error>(
            missing
                .into_iter()
                .map(|key| (key, 1_u64))
                .collect::<HashMap<_, _>>(),
        )
    };

    let mut calls = Vec::new();
    let c = cache.clone();
    calls.push(spawn(async move { assert_send(c.get::<u64>("k")).await }));
    let c = cache.clone();
    calls.push(spawn(
        async move { assert_send(c.get_arc::<u64>("k")).await },
    ));
    let c = cache.clone();
    calls.push(spawn(async move {
        assert_send(c.set("k", &1_u64, short())).await
    }));
    let c = cache.clone();
    calls.push(spawn(async move {
        assert_send(c.set_arc("k", Arc::new(1_u64), short())).await
    }));
    let c = cache.clone();
    calls.push(spawn(async move {
        assert_send(c.get_or_compute("a", short(), load)).await
    }));
    let c = cache.clone();
    calls.push(spawn(async move {
        assert_send(c.get_or_compute_arc("b", short(), load)).await
    }));
    let c = cache.clone();
    calls.push(spawn(async move {
        assert_send(c.get_or_compute_optional("c", short(), load_optional)).await
    }));
    let c = cache.clone();
    calls.push(spawn(async move { assert_send(c.invalidate("k")).await }));
    let c = cache.clone();
    calls.push(spawn(
        async move { assert_send(c.invalidate_tag("tag")).await },
    ));
    let c = cache.clone();
    calls.push(spawn(async move {
        assert_send(c.invalidate_prefix("pre")).await
    }));
    let c = cache.clone();
    calls.push(spawn(async move { assert_send(c.clear()).await }));
    let c = cache.clone();
    calls.push(spawn(async move { assert_send(c.get_bytes("raw")).await }));
    let c = cache.clone();
    calls.push(spawn(async move {
        assert_send(c.set_bytes("raw", vec![1_u8, 2, 3], short())).await
    }));
    let c = cache.clone();
    calls.push(spawn(async move {
        assert_send(c.get_many::<u64>(&["a", "b"])).await
    }));
    let c = cache.clone();
    calls.push(spawn(async move {
        assert_send(c.get_many_arc::<u64>(&["a", "b"])).await
    }));
    let c = cache.clone();
    calls.push(spawn(async move {
        assert_send(c.set_many(&[("d", 1_u64), ("e", 2)], short())).await
    }));
    let c = cache.clone();
    calls.push(spawn(async move {
        assert_send(c.get_or_compute_many(&["f", "g"], short(), load_many)).await
    }));

    for call in calls {
        call.await.unwrap().unwrap();
    }
}

/// Every public async method of the streams and bus handles returns a `Send` future: this
/// function only has to type-check (it needs a Redis to run), so the file fails to compile when
/// one of them stops being `Send`.
#[cfg(all(feature = "streams", feature = "bus"))]
#[expect(dead_code, reason = "a compile-time check: it only has to type-check")]
fn streams_and_bus_futures_are_send(
    streams: &tiercache::Streams,
    reader: &tiercache::streams::EventReader<u64, tiercache::JsonCodec>,
    group: &tiercache::streams::ConsumerGroup<u64, tiercache::JsonCodec>,
    field_reader: &tiercache::streams::FieldReader,
    field_group: &tiercache::streams::FieldGroup,
    id: tiercache::streams::EntryId,
) {
    use std::time::Duration;

    use tiercache::streams::GroupStart;

    let wait = Duration::from_millis(1);
    drop(assert_send(tiercache::Streams::connect(
        "redis://127.0.0.1:1",
    )));
    drop(assert_send(tiercache::RedisBus::connect(
        "redis://127.0.0.1:1",
    )));
    drop(assert_send(tiercache::RedisTrackingBus::connect(
        "redis://127.0.0.1:1",
    )));
    drop(assert_send(tiercache::RedisStreamBus::connect(
        "redis://127.0.0.1:1",
    )));

    let fields = streams.fields("k");
    drop(assert_send(fields.publish(&[("a", "b")])));
    drop(assert_send(fields.latest(1)));
    drop(assert_send(fields.read_after(id, 1)));
    drop(assert_send(fields.contains(id)));
    drop(assert_send(fields.newest_id()));
    drop(assert_send(fields.entry_count()));
    drop(assert_send(fields.reader()));
    drop(assert_send(fields.group("g", "c")));
    drop(assert_send(field_reader.read_after(id, 1, wait)));
    drop(assert_send(field_group.create(GroupStart::New)));
    drop(assert_send(field_group.read(Some(wait))));
    drop(assert_send(field_group.ack(&[id])));
    drop(assert_send(field_group.pending()));
    drop(assert_send(field_group.claim_idle(wait)));
    drop(assert_send(field_group.dead_letter_entry(id, "dead")));

    let typed = streams.typed::<u64>("t");
    drop(assert_send(typed.publish(&1)));
    drop(assert_send(typed.latest(1)));
    drop(assert_send(typed.read_after(id, 1)));
    drop(assert_send(typed.reader()));
    drop(assert_send(typed.group("g", "c")));
    drop(assert_send(reader.read_after(id, 1, wait)));
    drop(assert_send(group.create(GroupStart::New)));
    drop(assert_send(group.read(Some(wait))));
    drop(assert_send(group.ack(&[id])));
    drop(assert_send(group.pending()));
    drop(assert_send(group.claim_idle(wait)));
    drop(assert_send(group.dead_letter_entry(id, "dead")));
}
