//! The HTTP side: the routes, each handler reading through tiercache (or straight from the
//! database when the cache is switched off, for the load run's comparison).

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
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

/// The routes: `GET /products/{id}`, `PUT /products/{id}`, `GET /products?tag=…`,
/// `POST /products/reprice?tag=…&percent=…`, `/metrics`, `/healthz`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/products/{id}", get(get_product).put(put_product))
        .route("/products", get(list_products))
        .route("/products/reprice", post(reprice))
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
        // The database's and the cache's own words stay in the log: they can name tables,
        // hosts or keys a client has no business seeing.
        let body = match &self {
            Self::NotFound | Self::BadRequest(_) => self.to_string(),
            _ if status == StatusCode::SERVICE_UNAVAILABLE => "database unavailable".to_owned(),
            _ => "internal error".to_owned(),
        };
        (status, body).into_response()
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
                        Ok::<_, DbError>((found.clone(), product_options(found.as_ref())))
                    },
                )
                .await?
        }
    };
    found.map(Json).ok_or(AppError::NotFound)
}

/// How a loaded product is stored (adaptive caching): its TTL by whether it is on sale, and a
/// cache tag `tag:{t}` per product tag, so that a bulk change of every product tagged `t`
/// ([`reprice`]) drops them all without knowing their keys.
fn product_options(found: Option<&Product>) -> EntryOptions {
    let ttl = match found {
        None => MISSING_TTL,
        Some(product) if product.tags.iter().any(|tag| tag == "sale") => SALE_TTL,
        Some(_) => PRODUCT_TTL,
    };
    let tags = found
        .map(|product| {
            product
                .tags
                .iter()
                .map(|tag| cache_tag(tag))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    EntryOptions::new(CacheStrategy::Custom(ttl)).tags(tags)
}

/// The cache tag of product tag `tag`.
fn cache_tag(tag: &str) -> String {
    format!("tag:{tag}")
}

/// The cache key of tag `tag`'s list.
fn list_key(tag: &str) -> String {
    format!("list:{tag}")
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
                    &list_key(&query.tag),
                    CacheStrategy::Custom(LIST_TTL),
                    move || async move {
                        let products = loading.db().tagged(&tag).await?;
                        let options = EntryOptions::new(CacheStrategy::Custom(LIST_TTL))
                            .tags([cache_tag(&tag)]);
                        Ok::<_, DbError>((products, options))
                    },
                )
                .await?
        }
    };
    Ok(Json(products))
}

/// Cache-aside, as the README recommends: the database first, then the cache is told, by key:
/// the product, and the list of every tag it had or has now (a list holds the products' data,
/// so each list the product is or was in changes). Invalidating (rather than `set`ting the
/// written row) keeps concurrent writers right: whatever order their invalidations arrive in,
/// the next read loads the row the database holds, and a load that overlapped the write is
/// refused (leases, the invalidation stamp). Keys, not a tag: a tag invalidation walks L1 and
/// stops every load in flight on every instance, a price to pay for a bulk change
/// ([`reprice`]), not for each write of one row.
///
/// The write is committed once the database took it, so a cache that fails to take the
/// invalidation (Redis or the bus down) does not fail the request: the failure is logged and
/// counted (`service_invalidation_failures_total`). This instance's L1 was emptied of the keys
/// either way (the cache does that first); a failed publish is sent again before the bus's next
/// message, and L1 ages out at `l1_max_age` (60 s with a bus) at worst.
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
        let mut keys = vec![format!("product:{id}")];
        for tag in written.old_tags.iter().chain(&written.product.tags) {
            let key = list_key(tag);
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        invalidated(cache.invalidate_many(&keys).await, id);
    }
    Ok(Json(written.product))
}

fn invalidated(outcome: tiercache::Result<()>, about: impl std::fmt::Display) {
    if let Err(failed) = outcome {
        metrics::counter!("service_invalidation_failures_total").increment(1);
        tracing::warn!(%about, error = %failed, "the write is committed, but the cache did not take its invalidation");
    }
}

/// `POST /products/reprice?tag=…&percent=…`.
#[derive(Debug, Deserialize)]
pub struct RepriceQuery {
    /// Every product with this tag is repriced.
    pub tag: String,
    /// By this many percent (-90..=1000).
    pub percent: i64,
}

/// A bulk change: every product tagged `tag` gets a new price. Their keys are not known to the
/// handler, so the cache tag `tag:{tag}` drops every product and the tag's list, in every tier
/// and instance; the lists of the products' other tags hold their data too and are dropped by key.
async fn reprice(
    State(state): State<AppState>,
    Query(query): Query<RepriceQuery>,
) -> Result<Json<serde_json::Value>, AppError> {
    counted("reprice");
    if !valid_tag(&query.tag) || !(-90..=1000).contains(&query.percent) {
        return Err(AppError::BadRequest(
            "tag must be 1-64 letters, digits, '-' or '_'; percent in -90..=1000",
        ));
    }
    let touched = state.db().reprice(&query.tag, query.percent).await?;
    if let Some(cache) = state.cache() {
        invalidated(
            cache.invalidate_tag(&cache_tag(&query.tag)).await,
            &query.tag,
        );
        let lists: Vec<String> = touched.tags.iter().map(|tag| list_key(tag)).collect();
        let lists: Vec<&str> = lists.iter().map(String::as_str).collect();
        invalidated(cache.invalidate_many(&lists).await, &query.tag);
    }
    Ok(Json(serde_json::json!({ "repriced": touched.products })))
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

/// `/healthz`: the database (one `SELECT 1`) and every part of the cache, each `up`, `degraded`
/// or `down`. 503 only when the database is down: with Redis or the bus down the instance still
/// answers right (L1, then the database; fail-safe), only slower, so a load balancer must not
/// take the whole fleet out during a Redis outage; the body's `status` says `degraded` then.
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
    let database_down = parts.first().is_some_and(|part| part.status == "down");
    let worst = if database_down {
        "down"
    } else if parts.iter().any(|part| part.status != "up") {
        "degraded"
    } else {
        "up"
    };
    let code = if database_down {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let body = serde_json::json!({
        "status": worst,
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
