//! An axum service reading products from PostgreSQL through tiercache: L1 (moka) in front of
//! Redis, kept coherent across instances by the Pub/Sub bus, with tags, fail-safe, adaptive
//! entry options, `/metrics` (Prometheus text) and `/healthz` from `Cache::health()`.
//!
//! Run two or three instances with `cargo xtask service`, and drive them with wrk, with the
//! cache and without it, with `cargo xtask service --load`.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use tiercache_service::{AppState, Config, Db, router};
//!
//! let config = Config::from_args(["--port", "8080"].map(String::from))?;
//! let db = Db::connect(&config.database_url, &config.schema, config.db_connections).await?;
//! db.prepare(config.seed).await?;
//! let cache = tiercache_service::cache(&config.redis_url, &config.namespace).await?;
//! let state = AppState::new(db, Some(cache), tiercache_service::prometheus()?);
//! let listener = tokio::net::TcpListener::bind(("127.0.0.1", config.port)).await?;
//! axum::serve(listener, router(state)).await?;
//! # Ok(()) }
//! ```

mod app;
mod config;
mod db;

use std::{sync::Mutex, time::Duration};

pub use app::{
    AppError, AppState, LIST_TTL, ListQuery, MISSING_TTL, PRODUCT_TTL, ProductCache, RepriceQuery,
    SALE_TTL, router,
};
pub use config::{Config, DEFAULT_DATABASE_URL};
pub use db::{Db, DbError, Product, ProductUpdate, TAGS, Touched, Written};
use metrics_exporter_prometheus::{BuildError, PrometheusBuilder, PrometheusHandle};
use tiercache::{
    Cache, FailSafe, MemoryTier, PostcardCodec, RedisBus, RedisBusOptions, RedisOptions, RedisTier,
};

/// The default namespace of the service's keys in Redis.
pub const NAMESPACE: &str = "products";

/// The cache of one instance: 100k products in L1, Redis below, the Pub/Sub bus, fail-safe for
/// an hour, loads bounded to 2 s, values in postcard and compressed above 1 KiB.
///
/// # Errors
///
/// When Redis cannot be reached or the URL is bad.
pub async fn cache(redis_url: &str, namespace: &str) -> tiercache::Result<ProductCache> {
    let options = || {
        RedisOptions::from_url(redis_url)
            .map(|options| options.command_timeout(Duration::from_millis(500)))
    };
    let redis = RedisTier::connect_with(options()?).await?;
    let bus = RedisBus::connect_with(RedisBusOptions::new(options()?)).await?;
    Cache::builder()
        .namespace(namespace)
        .memory(MemoryTier::new(100_000))
        .tier(redis)
        .bus(bus)
        .fail_safe(FailSafe::new(Duration::from_secs(3600)))
        .hard_timeout(Duration::from_secs(2))
        .codec(PostcardCodec)
        .compress_above(1024)
        .build()
        .await
}

/// The process's Prometheus recorder, installed on first use (every instance in a process —
/// the tests run several — renders the same registry).
///
/// # Errors
///
/// When another `metrics` recorder was installed first.
pub fn prometheus() -> Result<PrometheusHandle, BuildError> {
    static HANDLE: Mutex<Option<PrometheusHandle>> = Mutex::new(None);
    let mut handle = HANDLE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(handle) = handle.as_ref() {
        return Ok(handle.clone());
    }
    let installed = PrometheusBuilder::new().install_recorder()?;
    *handle = Some(installed.clone());
    Ok(installed)
}
