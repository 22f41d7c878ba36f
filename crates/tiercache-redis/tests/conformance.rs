//! `RedisTier` passes the conformance suite every tier runs, on one server and on a cluster.
#![expect(clippy::unwrap_used, reason = "test helpers fail the test loudly")]

use std::time::Duration;

use tiercache_redis::{RedisOptions, RedisTier};
use tiercache_testkit::{RedisCluster, RedisServer};

async fn tier(url: &str, prefix: &str) -> RedisTier {
    let options = RedisOptions::from_url(url)
        .unwrap()
        .key_prefix(prefix)
        .command_timeout(Duration::from_secs(2));
    RedisTier::connect_with(options).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_tier_passes_conformance_on_one_server() {
    let server = RedisServer::start().unwrap();
    let redis = tier(&server.url(), "conf:").await;
    tiercache_testkit::conformance::run(&redis, "suite:").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_tier_passes_conformance_on_a_cluster() {
    let cluster = RedisCluster::start().unwrap();
    let redis = tier(&cluster.url(), "conf:").await;
    tiercache_testkit::conformance::run(&redis, "suite:").await;
}
