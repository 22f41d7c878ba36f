//! The source of truth: a `products` table in PostgreSQL, in a schema of the service's own, read
//! and written through a few connections (tokio-postgres pipelines the queries of many requests
//! on each). Every query is counted, so a load run can report queries per request.

use std::sync::{
    Arc, PoisonError, RwLock,
    atomic::{AtomicU64, AtomicUsize, Ordering},
};

use serde::{Deserialize, Serialize};
use tokio_postgres::{Client, NoTls, Row};

/// A product as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    /// Its id.
    pub id: i64,
    /// Its name.
    pub name: String,
    /// Its price, in cents.
    pub price_cents: i64,
    /// Its tags (`GET /products?tag=…` lists by them).
    pub tags: Vec<String>,
    /// Bumped by every write: tells a reader which write it sees.
    pub version: i64,
}

/// What `PUT /products/{id}` takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductUpdate {
    /// The new name.
    pub name: String,
    /// The new price, in cents.
    pub price_cents: i64,
    /// The new tags.
    pub tags: Vec<String>,
}

/// A written product, with the tags it had before the write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The product as written.
    pub product: Product,
    /// Its tags before the write.
    pub old_tags: Vec<String>,
}

/// What can go wrong with the database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// PostgreSQL refused or failed a query (or the connection).
    #[error("database: {}", describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// The schema name is not a plain identifier.
    #[error("schema name {0:?} must be lowercase letters, digits and underscores")]
    BadSchema(String),
}

/// tokio-postgres says only "db error" for what the server refused: add the server's message.
fn describe(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => format!("{err}: {}", db.message()),
        None => err.to_string(),
    }
}

/// The tags seeded products get: product `id` has `TAGS[id % 20]` and `TAGS[id % 7]`.
pub const TAGS: [&str; 20] = [
    "garden", "kitchen", "outdoor", "office", "kids", "sale", "new", "eco", "premium", "classic",
    "modern", "vintage", "sport", "travel", "pets", "bath", "lighting", "storage", "tools",
    "gifts",
];

/// The database side of the service.
#[derive(Debug)]
pub struct Db {
    /// The connections; one that closed (a server restart) is opened again on its next use.
    clients: Vec<RwLock<Arc<Client>>>,
    url: String,
    next: AtomicUsize,
    schema: String,
    queries: Arc<AtomicU64>,
}

impl Db {
    /// Opens `connections` connections to `url` (a libpq-style URL or key=value string) for
    /// tables in `schema`.
    ///
    /// # Errors
    ///
    /// [`DbError::BadSchema`]; [`DbError::Postgres`] when a connection fails.
    pub async fn connect(url: &str, schema: &str, connections: usize) -> Result<Self, DbError> {
        let plain = !schema.is_empty()
            && schema
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !plain {
            return Err(DbError::BadSchema(schema.to_owned()));
        }
        let mut clients = Vec::with_capacity(connections.max(1));
        for _ in 0..connections.max(1) {
            clients.push(RwLock::new(Arc::new(open(url).await?)));
        }
        Ok(Self {
            clients,
            url: url.to_owned(),
            next: AtomicUsize::new(0),
            schema: schema.to_owned(),
            queries: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The next connection, round robin; opened again first when it has closed.
    async fn client(&self) -> Result<Arc<Client>, DbError> {
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        let slot = &self.clients[turn];
        let current = Arc::clone(&slot.read().unwrap_or_else(PoisonError::into_inner));
        if !current.is_closed() {
            return Ok(current);
        }
        tracing::info!("database connection closed; connecting again");
        let fresh = Arc::new(open(&self.url).await?);
        *slot.write().unwrap_or_else(PoisonError::into_inner) = Arc::clone(&fresh);
        Ok(fresh)
    }

    async fn counted(&self) -> Result<Arc<Client>, DbError> {
        self.queries.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("service_db_queries_total").increment(1);
        self.client().await
    }

    /// Queries sent so far.
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    /// Creates the schema and the table when missing, and seeds `count` products when the table
    /// is empty (ids 1..=count).
    ///
    /// # Errors
    ///
    /// [`DbError::Postgres`].
    pub async fn prepare(&self, count: i64) -> Result<(), DbError> {
        let client = self.client().await?;
        // Instances starting together would race on the DDL (IF NOT EXISTS is not atomic in
        // PostgreSQL): one at a time, under a session lock.
        client
            .execute("SELECT pg_advisory_lock(7341001)", &[])
            .await?;
        let prepared = self.create_and_seed(&client, count).await;
        client
            .execute("SELECT pg_advisory_unlock(7341001)", &[])
            .await?;
        prepared
    }

    async fn create_and_seed(&self, client: &Client, count: i64) -> Result<(), DbError> {
        let schema = &self.schema;
        client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {schema};
                 CREATE TABLE IF NOT EXISTS {schema}.products (
                     id bigint PRIMARY KEY,
                     name text NOT NULL,
                     price_cents bigint NOT NULL,
                     tags text[] NOT NULL,
                     version bigint NOT NULL DEFAULT 1
                 );
                 CREATE INDEX IF NOT EXISTS products_tags ON {schema}.products USING gin (tags);"
            ))
            .await?;
        let seeded: i64 = client
            .query_one(&format!("SELECT count(*) FROM {schema}.products"), &[])
            .await?
            .try_get(0)?;
        if seeded == 0 {
            let tags: Vec<&str> = TAGS.to_vec();
            client
                .execute(
                    &format!(
                        "INSERT INTO {schema}.products (id, name, price_cents, tags)
                         SELECT i, 'product ' || i, 100 + (i * 37) % 10000,
                                ARRAY[($2::text[])[1 + i % 20], ($2::text[])[1 + i % 7]]
                         FROM generate_series(1, $1::bigint) AS i"
                    ),
                    &[&count, &tags],
                )
                .await?;
        }
        Ok(())
    }

    /// Drops the schema and everything in it.
    ///
    /// # Errors
    ///
    /// [`DbError::Postgres`].
    pub async fn drop_schema(&self) -> Result<(), DbError> {
        let schema = &self.schema;
        self.client()
            .await?
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .await?;
        Ok(())
    }

    /// One `SELECT 1` (not counted as a query of a request).
    ///
    /// # Errors
    ///
    /// [`DbError::Postgres`].
    pub async fn ping(&self) -> Result<(), DbError> {
        self.client().await?.execute("SELECT 1", &[]).await?;
        Ok(())
    }

    /// The product `id`, if there is one.
    ///
    /// # Errors
    ///
    /// [`DbError::Postgres`].
    pub async fn product(&self, id: i64) -> Result<Option<Product>, DbError> {
        let schema = &self.schema;
        let row = self
            .counted()
            .await?
            .query_opt(
                &format!(
                    "SELECT id, name, price_cents, tags, version FROM {schema}.products WHERE id = $1"
                ),
                &[&id],
            )
            .await?;
        row.as_ref().map(product).transpose()
    }

    /// Up to 100 products tagged `tag`, by id.
    ///
    /// # Errors
    ///
    /// [`DbError::Postgres`].
    pub async fn tagged(&self, tag: &str) -> Result<Vec<Product>, DbError> {
        let schema = &self.schema;
        let rows = self
            .counted()
            .await?
            .query(
                &format!(
                    "SELECT id, name, price_cents, tags, version FROM {schema}.products
                     WHERE tags @> ARRAY[$1::text] ORDER BY id LIMIT 100"
                ),
                &[&tag],
            )
            .await?;
        rows.iter().map(product).collect()
    }

    /// Writes the product `id` (bumping its version); `None` when there is none.
    ///
    /// # Errors
    ///
    /// [`DbError::Postgres`].
    pub async fn update(
        &self,
        id: i64,
        update: &ProductUpdate,
    ) -> Result<Option<Written>, DbError> {
        let schema = &self.schema;
        let row = self
            .counted()
            .await?
            .query_opt(
                &format!(
                    "WITH old AS (SELECT id, tags FROM {schema}.products WHERE id = $1 FOR UPDATE)
                     UPDATE {schema}.products p
                     SET name = $2, price_cents = $3, tags = $4, version = p.version + 1
                     FROM old WHERE p.id = old.id
                     RETURNING p.id, p.name, p.price_cents, p.tags, p.version, old.tags"
                ),
                &[&id, &update.name, &update.price_cents, &update.tags],
            )
            .await?;
        row.map(|row| {
            Ok(Written {
                product: product(&row)?,
                old_tags: row.try_get(5)?,
            })
        })
        .transpose()
    }
}

/// One connection, its driver task spawned.
async fn open(url: &str) -> Result<Client, DbError> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::warn!(%err, "database connection ended");
        }
    });
    Ok(client)
}

/// What a bulk change touched.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Touched {
    /// How many products changed.
    pub products: u64,
    /// Every tag those products have.
    pub tags: Vec<String>,
}

impl Db {
    /// Changes the price of every product tagged `tag` by `percent` (bumping their versions).
    ///
    /// # Errors
    ///
    /// [`DbError::Postgres`].
    pub async fn reprice(&self, tag: &str, percent: i64) -> Result<Touched, DbError> {
        let schema = &self.schema;
        let row = self
            .counted()
            .await?
            .query_one(
                &format!(
                    "WITH changed AS (
                         UPDATE {schema}.products
                         SET price_cents = GREATEST(1, price_cents * (100 + $2::bigint) / 100),
                             version = version + 1
                         WHERE tags @> ARRAY[$1::text]
                         RETURNING tags)
                     SELECT (SELECT count(*) FROM changed),
                            COALESCE((SELECT array_agg(DISTINCT t)
                                      FROM changed, unnest(changed.tags) AS t), '{{}}')"
                ),
                &[&tag, &percent],
            )
            .await?;
        let count: i64 = row.try_get(0)?;
        Ok(Touched {
            products: u64::try_from(count).unwrap_or(0),
            tags: row.try_get(1)?,
        })
    }
}

fn product(row: &Row) -> Result<Product, DbError> {
    Ok(Product {
        id: row.try_get(0)?,
        name: row.try_get(1)?,
        price_cents: row.try_get(2)?,
        tags: row.try_get(3)?,
        version: row.try_get(4)?,
    })
}
