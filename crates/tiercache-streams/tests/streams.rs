//! The streams adapter against a redis-server the test starts: order, trimming, consumer groups
//! (exactly one consumer per entry, claiming from a dead consumer, dead letters), blocking reads,
//! bad entries, and clear errors for what does not exist.
#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail the test loudly"
)]

use std::{collections::HashSet, time::Duration};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tiercache_streams::{EntryId, Event, GroupStart, StreamError, Streams, TailFrom};
use tiercache_testkit::RedisServer;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    n: u64,
}

async fn connect(server: &RedisServer) -> Streams {
    Streams::connect(&server.url()).await.unwrap()
}

fn values(items: Vec<Result<Event<Order>, StreamError>>) -> Vec<u64> {
    items
        .into_iter()
        .map(|item| item.unwrap().value.n)
        .collect()
}

/// Bounds a step so a broken build fails instead of hanging.
async fn within<T>(what: &str, step: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), step)
        .await
        .unwrap_or_else(|_| panic!("not within 10 s: {what}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_is_preserved_both_ways() {
    let server = RedisServer::start().unwrap();
    let orders = connect(&server).await.typed::<Order>("orders");
    let mut ids = Vec::new();
    for n in 0..100 {
        ids.push(orders.publish(&Order { n }).await.unwrap());
    }
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "ids increase");

    let oldest_first = values(orders.read_after(EntryId::ZERO, 1_000).await.unwrap());
    assert_eq!(oldest_first, (0..100).collect::<Vec<_>>());
    let newest_first = values(orders.latest(10).await.unwrap());
    assert_eq!(newest_first, (90..100).rev().collect::<Vec<_>>());
    let after = values(orders.read_after(ids[49], 5).await.unwrap());
    assert_eq!(after, vec![50, 51, 52, 53, 54]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approximate_trimming_keeps_about_max_len() {
    let server = RedisServer::start().unwrap();
    let orders = connect(&server)
        .await
        .typed::<Order>("trimmed")
        .max_len(100);
    for n in 0..1_000 {
        orders.publish(&Order { n }).await.unwrap();
    }
    let len = orders.fields().entry_count().await.unwrap();
    // `~` trims whole internal nodes (100 entries each by default): never below the cap.
    assert!((100..=300).contains(&len), "{len} entries kept");
    let newest = values(orders.latest(1).await.unwrap());
    assert_eq!(newest, vec![999], "trimming drops the oldest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn field_lists_round_trip_in_order() {
    let server = RedisServer::start().unwrap();
    let raw = connect(&server).await.fields("raw");
    let id = raw
        .publish(&[("b", "2"), ("a", "1"), ("binary", "\u{0}\u{ff}")])
        .await
        .unwrap();
    let entry = raw.latest(1).await.unwrap().remove(0);
    assert_eq!(entry.id, id);
    let names: Vec<&[u8]> = entry.fields.iter().map(|(name, _)| name.as_ref()).collect();
    assert_eq!(names, vec![&b"b"[..], b"a", b"binary"]);
    assert_eq!(entry.field("a").unwrap().as_ref(), b"1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumers_in_a_group_each_entry_reaches_exactly_one() {
    let server = RedisServer::start().unwrap();
    let streams = connect(&server).await;
    let orders = streams.typed::<Order>("shared-work");
    let first = orders.group("billing", "one").await.unwrap().batch(7);
    assert!(
        first.create(GroupStart::Beginning).await.unwrap(),
        "created"
    );
    assert!(
        !first.create(GroupStart::Beginning).await.unwrap(),
        "idempotent"
    );
    let second = orders.group("billing", "two").await.unwrap().batch(7);
    for n in 0..300 {
        orders.publish(&Order { n }).await.unwrap();
    }

    let consume = |group: tiercache_streams::ConsumerGroup<Order, _>| {
        tokio::spawn(async move {
            let mut seen = Vec::new();
            loop {
                let items = group.read(Some(Duration::from_millis(200))).await.unwrap();
                if items.is_empty() {
                    return seen;
                }
                let ids: Vec<EntryId> = items.iter().map(|i| i.as_ref().unwrap().id).collect();
                seen.extend(values(items));
                group.ack(&ids).await.unwrap();
                tokio::task::yield_now().await;
            }
        })
    };
    let (a, b) = (consume(first), consume(second));
    let (a, b) = within("both consumers drain the group", async {
        (a.await.unwrap(), b.await.unwrap())
    })
    .await;
    assert!(
        !a.is_empty() && !b.is_empty(),
        "both consumers got work: {} / {}",
        a.len(),
        b.len()
    );
    let (a_set, b_set): (HashSet<u64>, HashSet<u64>) =
        (a.iter().copied().collect(), b.iter().copied().collect());
    assert!(a_set.is_disjoint(&b_set), "no entry reached both");
    assert_eq!(a.len() + b.len(), 300, "no entry delivered twice");
    assert_eq!(a_set.union(&b_set).count(), 300, "every entry reached one");

    let checker = orders.group("billing", "checker").await.unwrap();
    assert_eq!(
        checker.pending().await.unwrap().count,
        0,
        "everything acked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_of_a_consumer_that_died_are_claimed_after_the_idle_threshold() {
    let server = RedisServer::start().unwrap();
    let orders = connect(&server).await.typed::<Order>("crashy");
    let doomed = orders.group("shipping", "doomed").await.unwrap().batch(10);
    doomed.create(GroupStart::New).await.unwrap();
    for n in 0..10 {
        orders.publish(&Order { n }).await.unwrap();
    }
    assert_eq!(values(doomed.read(None).await.unwrap()).len(), 10);
    drop(doomed); // read, never acked: the consumer is gone

    let survivor = orders.group("shipping", "survivor").await.unwrap();
    let pending = survivor.pending().await.unwrap();
    assert_eq!(pending.count, 10);
    assert_eq!(pending.consumers, vec![("doomed".to_owned(), 10)]);
    assert!(
        survivor
            .claim_idle(Duration::from_secs(60))
            .await
            .unwrap()
            .is_empty(),
        "not idle long enough yet"
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    let claimed = survivor
        .claim_idle(Duration::from_millis(100))
        .await
        .unwrap();
    let ids: Vec<EntryId> = claimed.iter().map(|i| i.as_ref().unwrap().id).collect();
    assert_eq!(values(claimed), (0..10).collect::<Vec<_>>());
    assert_eq!(survivor.ack(&ids).await.unwrap(), 10);
    assert_eq!(survivor.pending().await.unwrap().count, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_stream_claims_a_dead_consumers_entries_by_itself() {
    let server = RedisServer::start().unwrap();
    let orders = connect(&server).await.typed::<Order>("auto-claim");
    let doomed = orders.group("g", "doomed").await.unwrap();
    doomed.create(GroupStart::New).await.unwrap();
    for n in 0..3 {
        orders.publish(&Order { n }).await.unwrap();
    }
    doomed.read(None).await.unwrap();
    drop(doomed);

    let worker = orders
        .group("g", "worker")
        .await
        .unwrap()
        .claim_after(Duration::from_millis(200));
    let mut events = Box::pin(worker.events());
    let mut got = Vec::new();
    within("the worker claims all three", async {
        while got.len() < 3 {
            got.push(events.next().await.unwrap().unwrap().value.n);
        }
    })
    .await;
    got.sort_unstable();
    assert_eq!(got, vec![0, 1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_delivered_too_often_go_to_the_dead_letter_stream() {
    let server = RedisServer::start().unwrap();
    let streams = connect(&server).await;
    let orders = streams.typed::<Order>("poison");
    let consumer = orders
        .group("g", "c")
        .await
        .unwrap()
        .dead_letter("poison:dead", 2);
    consumer.create(GroupStart::New).await.unwrap();
    let poison = orders.publish(&Order { n: 13 }).await.unwrap();
    consumer.read(None).await.unwrap(); // delivery 1
    for delivery in 2..=3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let claimed = consumer
            .claim_idle(Duration::from_millis(10))
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1, "delivery {delivery}");
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    // Delivered three times, more than the limit of two: moved, acked, not delivered again.
    assert!(
        consumer
            .claim_idle(Duration::from_millis(10))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(consumer.pending().await.unwrap().count, 0);
    let dead = streams
        .fields("poison:dead")
        .latest(1)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(dead.field("data").unwrap().as_ref(), br#"{"n":13}"#);
    assert_eq!(
        dead.field("dead_letter_id").unwrap().as_ref(),
        poison.to_string().as_bytes()
    );
    assert_eq!(dead.field("dead_letter_deliveries").unwrap().as_ref(), b"3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_read_wakes_up_on_publish() {
    let server = RedisServer::start().unwrap();
    let orders = connect(&server).await.typed::<Order>("wakeup");
    let reader = orders.reader().await.unwrap();
    let waiting = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let items = reader
            .read_after(EntryId::ZERO, 10, Duration::from_secs(8))
            .await
            .unwrap();
        (values(items), started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    orders.publish(&Order { n: 7 }).await.unwrap();
    let (got, waited) = within("the reader wakes", waiting).await.unwrap();
    assert_eq!(got, vec![7]);
    assert!(
        waited < Duration::from_secs(5),
        "woke on publish, not on timeout: {waited:?}"
    );

    let reader = orders.reader().await.unwrap();
    let newest = orders.fields().newest_id().await.unwrap();
    let empty = reader
        .read_after(newest, 10, Duration::from_millis(100))
        .await
        .unwrap();
    assert!(empty.is_empty(), "nothing new: empty after the block time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_entry_is_an_error_item_and_the_stream_goes_on() {
    let server = RedisServer::start().unwrap();
    let streams = connect(&server).await;
    let orders = streams.typed::<Order>("mixed");
    let group = orders.group("g", "c").await.unwrap();
    group.create(GroupStart::New).await.unwrap();
    let tail = Box::pin(
        orders
            .reader()
            .await
            .unwrap()
            .tail(TailFrom::After(EntryId::ZERO)),
    );

    orders.publish(&Order { n: 1 }).await.unwrap();
    let garbage = orders
        .fields()
        .publish(&[("data", "not json")])
        .await
        .unwrap();
    let foreign = orders.fields().publish(&[("other", "x")]).await.unwrap();
    orders.publish(&Order { n: 2 }).await.unwrap();

    for mut items in [tail.boxed(), Box::pin(group.events()).boxed()] {
        let mut outcome = Vec::new();
        within("four items", async {
            while outcome.len() < 4 {
                outcome.push(items.next().await.unwrap());
            }
        })
        .await;
        assert_eq!(outcome[0].as_ref().unwrap().value.n, 1);
        assert_eq!(outcome[1].as_ref().unwrap_err().entry_id(), Some(garbage));
        assert_eq!(outcome[2].as_ref().unwrap_err().entry_id(), Some(foreign));
        assert_eq!(outcome[3].as_ref().unwrap().value.n, 2);
        assert!(matches!(outcome[1], Err(StreamError::Decode { .. })));
    }

    // The bad entry is pending in the group until it is dead-lettered (or acked) by its id.
    let checker = orders.group("g", "checker").await.unwrap();
    assert_eq!(checker.pending().await.unwrap().count, 4);
    checker
        .dead_letter_entry(garbage, "mixed:dead")
        .await
        .unwrap();
    assert_eq!(checker.pending().await.unwrap().count, 3);
    let dead = streams
        .fields("mixed:dead")
        .latest(1)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(dead.field("data").unwrap().as_ref(), b"not json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_does_not_exist_is_a_clear_error() {
    let server = RedisServer::start().unwrap();
    let orders = connect(&server).await.typed::<Order>("nowhere");
    let err = orders.latest(5).await.unwrap_err();
    assert!(
        matches!(err, StreamError::NoStream { ref stream } if stream == "nowhere"),
        "{err}"
    );
    assert!(matches!(
        orders.read_after(EntryId::ZERO, 5).await,
        Err(StreamError::NoStream { .. })
    ));

    let group = orders.group("ghosts", "c").await.unwrap();
    let err = group.read(None).await.unwrap_err();
    assert!(
        matches!(err, StreamError::NoGroup { ref group, .. } if group == "ghosts"),
        "{err}"
    );
    assert!(matches!(
        group.pending().await,
        Err(StreamError::NoGroup { .. })
    ));
    assert!(matches!(
        group.claim_idle(Duration::from_millis(1)).await,
        Err(StreamError::NoGroup { .. })
    ));
    assert!(err.to_string().contains("ghosts") && err.to_string().contains("nowhere"));
}
