//! The HTTP side: the routes, each handler reading through tiercache (or straight from the
//! database when the cache is switched off, for the load run's comparison).

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use tiercache::{Cache, CacheStrategy, EntryOptions, PartStatus, PostcardCodec};

use crate::db::{Db, DbError, Product, ProductUpdate};

/// The cache the service uses: postcard below L1, compressed above 1 KiB.
pub type ProductCache = Cache<PostcardCodec>;

/// How long a product stays cached: short for products on sale (their price moves), long
/// otherwise; a missing id briefly (negative caching).
pub const SALE_TTL: Duration = Duration::from_secs(30);
/// See [`SALE_TTL`].
pub const PRODUCT_TTL: Duration = Duration::from_secs(300);
/// See [`SALE_TTL`].
pub const MISSING_TTL: Duration = Duration::from_secs(10);
/// How long a tag's product list stays cached.
pub const LIST_TTL: Duration = Duration::from_secs(60);

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    cache: Option<ProductCache>,
    metrics: PrometheusHandle,
}

impl AppState {
    /// The state of one instance: its database connections, its cache (`None`: every read goes
    /// to the database) and the Prometheus registry `/metrics` renders.
    pub fn new(db: Db, cache: Option<ProductCache>, metrics: PrometheusHandle) -> Self {
        Self {
            inner: Arc::new(Inner { db, cache, metrics }),
        }
    }

    /// The database side.
    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    /// The cache, when it is on.
    pub fn cache(&self) -> Option<&ProductCache> {
        self.inner.cache.as_ref()
    }
}

/// The routes: `GET /products/{id}`, `PUT /products/{id}`, `GET /products?tag=…`, `/metrics`,
/// `/healthz`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/products/{id}", get(get_product).put(put_product))
        .route("/products", get(list_products))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(state)
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// No such product.
    #[error("no such product")]
    NotFound,
    /// The request itself is wrong.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The database failed (directly, or inside a cache load).
    #[error(transparent)]
    Db(#[from] DbError),
    /// The cache failed in a way that is not the database's.
    #[error(transparent)]
    Cache(tiercache::Error),
}

impl From<tiercache::Error> for AppError {
    fn from(err: tiercache::Error) -> Self {
        Self::Cache(err)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Db(_) => StatusCode::SERVICE_UNAVAILABLE,
            // A load that failed because of the database is the database's failure: 503.
            Self::Cache(err) if err.loader_source::<DbError>().is_some() => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Cache(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        tracing::debug!(%status, error = %self, "request failed");
        (status, self.to_string()).into_response()
    }
}

fn counted(route: &'static str) {
    metrics::counter!("service_requests_total", "route" => route).increment(1);
}

async fn get_product(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<Product>, AppError> {
    counted("get_product");
    let found = match state.cache() {
        None => state.db().product(id).await?,
        Some(cache) => {
            let loading = state.clone();
            cache
                .get_or_compute_with(
                    &format!("product:{id}"),
                    CacheStrategy::Custom(PRODUCT_TTL),
                    move || async move {
                        let found = loading.db().product(id).await?;
                        Ok::<_, DbError>((found.clone(), product_options(id, found.as_ref())))
                    },
                )
                .await?
        }
    };
    found.map(Json).ok_or(AppError::NotFound)
}

/// How a loaded product is stored (adaptive caching): its TTL by whether it is on sale, and the
/// tag `product:{id}` that a write of it invalidates (together with every list holding it).
fn product_options(id: i64, found: Option<&Product>) -> EntryOptions {
    let ttl = match found {
        None => MISSING_TTL,
        Some(product) if product.tags.iter().any(|tag| tag == "sale") => SALE_TTL,
        Some(_) => PRODUCT_TTL,
    };
    EntryOptions::new(CacheStrategy::Custom(ttl)).tags([format!("product:{id}")])
}

/// `GET /products?tag=…`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    /// The tag to list.
    pub tag: String,
}

fn valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 64
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

async fn list_products(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Vec<Product>>, AppError> {
    counted("list_products");
    if !valid_tag(&query.tag) {
        return Err(AppError::BadRequest(
            "tag must be 1-64 letters, digits, '-' or '_'",
        ));
    }
    let products = match state.cache() {
        None => state.db().tagged(&query.tag).await?,
        Some(cache) => {
            let loading = state.clone();
            let tag = query.tag.clone();
            cache
                .get_or_compute_with(
                    &format!("list:{}", query.tag),
                    CacheStrategy::Custom(LIST_TTL),
                    move || async move {
                        let products = loading.db().tagged(&tag).await?;
                        // Tagged with every product it holds: a write of any of them drops it.
                        let tags = products
                            .iter()
                            .map(|product| format!("product:{}", product.id));
                        let options = EntryOptions::new(CacheStrategy::Custom(LIST_TTL)).tags(tags);
                        Ok::<_, DbError>((products, options))
                    },
                )
                .await?
        }
    };
    Ok(Json(products))
}

/// Cache-aside, as the README recommends: the database first, then the cache is told. The
/// product's tag drops its entry and every list that holds it, on every instance and in Redis;
/// the lists of tags it newly has are dropped by key. Invalidating (rather than `set`ting the
/// written row) keeps concurrent writers right: whatever order their invalidations arrive in,
/// the next read loads the row the database holds, and a load that overlapped the write is
/// refused (leases, the invalidation stamp).
async fn put_product(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Json(update): Json<ProductUpdate>,
) -> Result<Json<Product>, AppError> {
    counted("put_product");
    if update.tags.len() > 16 || !update.tags.iter().all(|tag| valid_tag(tag)) {
        return Err(AppError::BadRequest(
            "at most 16 tags, each 1-64 letters, digits, '-' or '_'",
        ));
    }
    let written = state
        .db()
        .update(id, &update)
        .await?
        .ok_or(AppError::NotFound)?;
    if let Some(cache) = state.cache() {
        cache.invalidate_tag(&format!("product:{id}")).await?;
        let new_lists: Vec<String> = written
            .product
            .tags
            .iter()
            .filter(|tag| !written.old_tags.contains(tag))
            .map(|tag| format!("list:{tag}"))
            .collect();
        let keys: Vec<&str> = new_lists.iter().map(String::as_str).collect();
        cache.invalidate_many(&keys).await?;
    }
    Ok(Json(written.product))
}

async fn metrics(State(state): State<AppState>) -> String {
    if let Some(cache) = state.cache() {
        cache.record_metrics();
    }
    state.inner.metrics.render()
}

/// One part of `/healthz`.
#[derive(Debug, Serialize)]
struct PartReport {
    name: String,
    status: &'static str,
    latency_ms: Option<f64>,
    detail: String,
}

/// `/healthz`: the database (one `SELECT 1`) and every part of the cache. 200 while everything
/// answers, even degraded; 503 when a part is down (a Redis outage makes the instance slower,
/// not wrong: a load balancer may still prefer an instance that has it).
async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    let mut parts = Vec::new();
    let started = std::time::Instant::now();
    let db = state.db().ping().await;
    parts.push(PartReport {
        name: "postgres".to_owned(),
        status: if db.is_ok() { "up" } else { "down" },
        latency_ms: Some(started.elapsed().as_secs_f64() * 1e3),
        detail: db.err().map(|err| err.to_string()).unwrap_or_default(),
    });
    if let Some(cache) = state.cache() {
        for part in cache.health().await.parts {
            parts.push(PartReport {
                name: part.name,
                status: status_name(part.status),
                latency_ms: part.latency.map(|latency| latency.as_secs_f64() * 1e3),
                detail: part.detail,
            });
        }
    }
    let down = parts.iter().any(|part| part.status == "down");
    let code = if down {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let body = serde_json::json!({
        "status": if down { "down" } else { "up" },
        "cache": state.cache().is_some(),
        "parts": parts,
    });
    (code, Json(body))
}

fn status_name(status: PartStatus) -> &'static str {
    match status {
        PartStatus::Up => "up",
        PartStatus::Degraded => "degraded",
        PartStatus::Down => "down",
    }
}
