//! The service's handlers over real HTTP, against a real PostgreSQL (each test in a schema of
//! its own, dropped at the end) and a real Redis this test starts: two instances share both.
#![expect(clippy::unwrap_used, reason = "test helpers fail the test loudly")]

use std::{
    net::SocketAddr,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use serde_json::Value;
use tiercache_service::{AppState, Db, Product, router};
use tiercache_testkit::{Postgres, RedisServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A schema of this test's own, dropped when the test ends, passed or failed.
struct Schema(String);

impl Schema {
    fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        Self(format!(
            "svc_test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ))
    }
}

impl std::ops::Deref for Schema {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime (or while a failed test unwinds): the schema is
        // dropped from a thread of its own, with a runtime of its own.
        let name = self.0.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let url = Postgres::shared().unwrap().url();
                let db = Db::connect(url, &name, 1).await.unwrap();
                db.drop_schema().await.unwrap();
            });
        })
        .join();
        assert!(
            dropped.is_ok() || std::thread::panicking(),
            "dropping the schema failed"
        );
    }
}

struct Instance {
    addr: SocketAddr,
    state: AppState,
}

async fn instance(schema: &str, redis: Option<&RedisServer>) -> Instance {
    let postgres = Postgres::shared().unwrap();
    if std::env::var(tiercache_testkit::FORCE_PRIVATE_ENV).is_ok_and(|value| value == "private") {
        assert!(
            postgres.is_private(),
            "asked for a private server: {postgres:?}"
        );
    }
    let db = Db::connect(postgres.url(), schema, 2).await.unwrap();
    db.prepare(50).await.unwrap();
    let cache = match redis {
        Some(server) => Some(
            tiercache_service::cache(&server.url(), tiercache_service::NAMESPACE)
                .await
                .unwrap(),
        ),
        None => None,
    };
    let state = AppState::new(db, cache, tiercache_service::prometheus().unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Instance { addr, state }
}

/// One HTTP/1.1 request on a connection of its own: (status, body).
async fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

async fn product(addr: SocketAddr, id: i64) -> Product {
    let (status, body) = http(addr, "GET", &format!("/products/{id}"), None).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

async fn listed(addr: SocketAddr, tag: &str) -> Vec<i64> {
    let (status, body) = http(addr, "GET", &format!("/products?tag={tag}"), None).await;
    assert_eq!(status, 200, "{body}");
    let products: Vec<Product> = serde_json::from_str(&body).unwrap();
    products.iter().map(|product| product.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_cached_and_a_write_on_one_instance_is_read_on_the_other() {
    let redis = RedisServer::start().unwrap();
    let schema = Schema::new();
    let (a, b) = (
        instance(&schema, Some(&redis)).await,
        instance(&schema, Some(&redis)).await,
    );
    let first = product(a.addr, 7).await;
    assert_eq!((first.id, first.version), (7, 1));
    let queries = a.state.db().queries();
    assert_eq!(product(a.addr, 7).await, first);
    assert_eq!(
        a.state.db().queries(),
        queries,
        "the second read is a cache hit"
    );
    // B finds it in Redis: no query either.
    assert_eq!(product(b.addr, 7).await, first);
    assert_eq!(b.state.db().queries(), 0);

    // Product 7 has the tags TAGS[7] = "eco" and TAGS[0] = "garden".
    assert!(listed(b.addr, "eco").await.contains(&7));
    assert!(!listed(b.addr, "sport").await.contains(&7));

    let update =
        serde_json::json!({"name": "renamed", "price_cents": 4_200, "tags": ["sport", "garden"]});
    let (status, body) = http(a.addr, "PUT", "/products/7", Some(&update)).await;
    assert_eq!(status, 200, "{body}");
    let written: Product = serde_json::from_str(&body).unwrap();
    assert_eq!((written.version, written.price_cents), (2, 4_200));

    // B had product 7 and both lists in L1; within the bus's bound it reads the write.
    let until = Instant::now() + Duration::from_secs(2);
    loop {
        let seen = product(b.addr, 7).await;
        let (eco, sport) = (listed(b.addr, "eco").await, listed(b.addr, "sport").await);
        if seen == written && !eco.contains(&7) && sport.contains(&7) {
            break;
        }
        assert!(
            Instant::now() < until,
            "B still reads {seen:?}, eco {eco:?}, sport {sport:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(product(a.addr, 7).await, written);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_product_is_a_404_cached_briefly_and_bad_input_a_400() {
    let redis = RedisServer::start().unwrap();
    let schema = Schema::new();
    let a = instance(&schema, Some(&redis)).await;
    let (status, _) = http(a.addr, "GET", "/products/9999", None).await;
    assert_eq!(status, 404);
    let queries = a.state.db().queries();
    let (status, _) = http(a.addr, "GET", "/products/9999", None).await;
    assert_eq!(status, 404);
    assert_eq!(a.state.db().queries(), queries, "the miss is cached");
    let (status, _) = http(a.addr, "GET", "/products?tag=no%20spaces", None).await;
    assert_eq!(status, 400);
    let (status, _) = http(a.addr, "GET", "/products/not-a-number", None).await;
    assert_eq!(status, 400);
    let update = serde_json::json!({"name": "x", "price_cents": 1, "tags": ["ok"]});
    let (status, _) = http(a.addr, "PUT", "/products/9999", Some(&update)).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_metrics_report_every_part_and_redis_down_is_survived() {
    let mut redis = RedisServer::start().unwrap();
    let schema = Schema::new();
    let a = instance(&schema, Some(&redis)).await;
    let (status, body) = http(a.addr, "GET", "/healthz", None).await;
    assert_eq!(status, 200, "{body}");
    let health: Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = health["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|part| part["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["postgres", "memory", "redis", "redis-pubsub"],
        "{body}"
    );

    product(a.addr, 3).await;
    let (status, metrics) = http(a.addr, "GET", "/metrics", None).await;
    assert_eq!(status, 200);
    assert!(metrics.contains("service_db_queries_total"), "{metrics}");
    assert!(metrics.contains("tiercache_"), "{metrics}");

    redis.stop();
    // Redis is gone: reads still answer (L1, then the database), health says which part is down.
    assert_eq!(product(a.addr, 3).await.id, 3);
    assert_eq!(product(a.addr, 4).await.id, 4);
    // Degraded, not down: a load balancer keeps the instance (and the fleet) in.
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = http(a.addr, "GET", "/healthz", None).await;
        let health: Value = serde_json::from_str(&body).unwrap();
        if health["parts"][2]["status"] == "down" {
            assert_eq!(status, 200, "{body}");
            assert_eq!(health["status"], "degraded", "{body}");
            assert_eq!(health["parts"][0]["status"], "up", "{body}");
            break;
        }
        assert!(Instant::now() < until, "{status} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A write with Redis gone is committed and reported as such; the failure is counted.
    let update =
        serde_json::json!({"name": "while redis is down", "price_cents": 1, "tags": ["eco"]});
    let (status, body) = http(a.addr, "PUT", "/products/3", Some(&update)).await;
    assert_eq!(status, 200, "{body}");
    let reread = product(a.addr, 3).await;
    assert_eq!(
        reread.name, "while redis is down",
        "this instance's L1 dropped the key"
    );
    let (_, metrics) = http(a.addr, "GET", "/metrics", None).await;
    assert!(
        metrics.contains("service_invalidation_failures_total"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_cache_off_every_read_is_a_query() {
    let schema = Schema::new();
    let a = instance(&schema, None).await;
    for _ in 0..3 {
        product(a.addr, 5).await;
    }
    assert_eq!(a.state.db().queries(), 3);
    let (status, body) = http(a.addr, "GET", "/healthz", None).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_reprice_by_tag_reaches_every_product_and_list_on_the_other_instance() {
    let redis = RedisServer::start().unwrap();
    let schema = Schema::new();
    let (a, b) = (
        instance(&schema, Some(&redis)).await,
        instance(&schema, Some(&redis)).await,
    );
    // Product 7 has the tags "eco" and "garden"; product 27 too (27 % 20 = 7, 27 % 7 = 6: "eco",
    // "new").
    let before = product(b.addr, 7).await;
    let before_27 = product(b.addr, 27).await;
    let garden_before = listed(b.addr, "garden").await;
    assert!(garden_before.contains(&7) && listed(b.addr, "eco").await.contains(&27));
    let queries = b.state.db().queries();
    product(b.addr, 7).await;
    listed(b.addr, "garden").await;
    assert_eq!(b.state.db().queries(), queries, "all of it cached on B");

    let (status, body) = http(a.addr, "POST", "/products/reprice?tag=eco&percent=10", None).await;
    assert_eq!(status, 200, "{body}");
    let repriced: Value = serde_json::from_str(&body).unwrap();
    assert!(repriced["repriced"].as_u64().unwrap() >= 2, "{body}");

    let price_in = |products: &[Product], id: i64| {
        products
            .iter()
            .find(|product| product.id == id)
            .map(|product| product.price_cents)
    };
    let until = Instant::now() + Duration::from_secs(2);
    loop {
        let (seven, twenty_seven) = (product(b.addr, 7).await, product(b.addr, 27).await);
        let (_, body) = http(b.addr, "GET", "/products?tag=garden", None).await;
        let garden: Vec<Product> = serde_json::from_str(&body).unwrap();
        let fresh = seven.version == before.version + 1
            && seven.price_cents == before.price_cents * 110 / 100
            && twenty_seven.version == before_27.version + 1
            && price_in(&garden, 7) == Some(seven.price_cents);
        if fresh {
            break;
        }
        assert!(
            Instant::now() < until,
            "B still reads {seven:?}, {twenty_seven:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, _) = http(
        a.addr,
        "POST",
        "/products/reprice?tag=eco&percent=5000",
        None,
    )
    .await;
    assert_eq!(status, 400);
}
