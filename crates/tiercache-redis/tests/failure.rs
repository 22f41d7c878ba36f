//! Every call is bounded by the command timeout and names the tier; a restarted server is picked
//! up again by the same tier; `clear` never empties a database it was not given.
#![expect(clippy::unwrap_used, reason = "test helpers fail the test loudly")]

use std::time::{Duration, Instant};

use tiercache_core::{Entry, Error, Tier};
use tiercache_redis::{RedisOptions, RedisTier};
use tiercache_testkit::RedisServer;

const TIMEOUT: Duration = Duration::from_millis(200);

async fn tier(server: &RedisServer, prefix: &str) -> RedisTier {
    let options = RedisOptions::from_url(&server.url())
        .unwrap()
        .command_timeout(TIMEOUT)
        .key_prefix(prefix)
        .name("shared");
    RedisTier::connect_with(options).await.unwrap()
}

fn minute(value: &'static [u8]) -> Entry {
    Entry::new(value, Duration::from_secs(60))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_server_fails_fast_naming_the_tier_and_a_restarted_one_is_used_again() {
    let mut server = RedisServer::start().unwrap();
    let redis = tier(&server, "t:").await;
    redis.set("k", minute(b"v")).await.unwrap();

    server.stop();
    for call in 0..3 {
        let started = Instant::now();
        let err = redis.get("k").await.unwrap_err();
        assert!(
            started.elapsed() < TIMEOUT + Duration::from_millis(200),
            "call {call}: {:?}",
            started.elapsed()
        );
        assert_eq!(err.tier(), Some("shared"), "{err}");
        assert!(
            matches!(err, Error::Backend { .. } | Error::Timeout { .. }),
            "{err}"
        );
        assert!(err.is_retryable());
    }
    assert!(redis.health().await.is_err());

    server.restart().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis.health().await.is_err() {
        assert!(Instant::now() < deadline, "the tier did not reconnect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    redis.set("k", minute(b"again")).await.unwrap();
    assert_eq!(
        redis.get("k").await.unwrap().map(|e| e.value),
        Some((&b"again"[..]).into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_server_costs_one_timeout_per_call() {
    let server = RedisServer::start().unwrap();
    let redis = tier(&server, "t:").await;
    redis.set("k", minute(b"v")).await.unwrap();
    server.pause().unwrap();
    let started = Instant::now();
    let err = redis.get("k").await.unwrap_err();
    let waited = started.elapsed();
    assert!(
        matches!(err, Error::Timeout { ref what, key: Some(ref key) } if what == "shared" && key == "k"),
        "{err}"
    );
    assert!(waited >= TIMEOUT && waited < TIMEOUT * 3, "{waited:?}");
    let err = redis.remove_prefix("").await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    server.resume().unwrap();
}

/// A write that answered `Timeout` never lands later: fred replays the commands it queued while
/// the server was away once it reconnects, unless they were marked timed out. Otherwise a value
/// its writer saw fail (and may since have replaced elsewhere) would appear in Redis afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_timed_out_while_the_server_was_away_is_never_applied() {
    let mut server = RedisServer::start().unwrap();
    let redis = tier(&server, "t:").await;
    redis.set("before", minute(b"v")).await.unwrap();
    server.stop();
    for key in ["gone", "also-gone"] {
        let err = redis.set(key, minute(b"stale")).await.unwrap_err();
        assert!(
            matches!(err, Error::Timeout { .. } | Error::Backend { .. }),
            "{err}"
        );
    }
    let err = redis.remove("before").await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    server.restart().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis.health().await.is_err() {
        assert!(Instant::now() < deadline, "the tier did not reconnect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    redis.set("marker", minute(b"m")).await.unwrap();
    // Anything fred replayed on reconnect was written before this read.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for key in ["gone", "also-gone"] {
        assert_eq!(
            redis.get(key).await.unwrap(),
            None,
            "{key} landed after its timeout"
        );
    }
}

/// The bound holds for every call in flight at once, not only for one: the tier times each
/// call itself (fred's pool has no per-command timeout), so 256 reads and writes queued on four
/// frozen connections all answer `Timeout` within the command timeout plus scheduling slack,
/// and the tier serves again once the server resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_in_flight_on_a_frozen_server_answers_within_the_timeout() {
    let server = RedisServer::start().unwrap();
    let redis = tier(&server, "t:").await;
    redis.set("k", minute(b"v")).await.unwrap();
    server.pause().unwrap();
    let started = Instant::now();
    let calls: Vec<_> = (0..256)
        .map(|i| {
            let redis = redis.clone();
            tokio::spawn(async move {
                let key = format!("k{i}");
                let result = if i % 4 == 0 {
                    redis.set(&key, minute(b"w")).await.map(drop)
                } else {
                    redis.get(&key).await.map(drop)
                };
                (result, started.elapsed())
            })
        })
        .collect();
    for call in calls {
        let (result, waited) = call.await.unwrap();
        let err = result.unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err}");
        assert!(
            waited >= TIMEOUT && waited < TIMEOUT + Duration::from_millis(150),
            "{waited:?}"
        );
    }
    server.resume().unwrap();
    assert_eq!(
        redis.get("k").await.unwrap().map(|e| e.value),
        Some((&b"v"[..]).into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_never_see_each_other_and_clear_needs_a_prefix() {
    let server = RedisServer::start().unwrap();
    let (a, b) = (tier(&server, "a:").await, tier(&server, "b:").await);
    a.set("k", minute(b"from a")).await.unwrap();
    b.set("k", minute(b"from b")).await.unwrap();
    assert_eq!(
        a.get("k").await.unwrap().map(|e| e.value),
        Some((&b"from a"[..]).into())
    );
    a.clear().await.unwrap();
    assert!(a.get("k").await.unwrap().is_none());
    assert!(
        b.get("k").await.unwrap().is_some(),
        "clearing one prefix spares another"
    );

    let unprefixed = RedisTier::connect(&server.url()).await.unwrap();
    assert!(matches!(unprefixed.clear().await, Err(Error::Config(_))));
    assert!(
        b.get("k").await.unwrap().is_some(),
        "a refused clear removes nothing"
    );
}
