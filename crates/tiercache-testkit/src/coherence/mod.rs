//! A fleet coherence checker: several cache instances over real servers, cache-aside writers
//! and readers on every instance, faults injected while they run, and every operation recorded
//! and checked against the promise a multi-instance cache makes: a read that starts after a
//! write completed (on any instance) plus the promised bound never returns an older version,
//! and on the writing instance the bound is zero (read-your-writes).
//!
//! The checker knows no cache type: a test wraps each instance in a [`Node`] (the facade's own
//! tests do it for `tiercache::Cache`), so third-party tiers and transports can run it too.
//!
//! - The source of truth ([`Source`]) versions every key: version 0 at the start, one more on
//!   every write. A loader reads it.
//! - Writers follow cache-aside: bump the key's version in the source, then `set` the new
//!   version or `invalidate` the key (also `set_many`, `invalidate_prefix` and `invalidate_tag`,
//!   every key carrying one of [`TAGS`] tags). Writes of one key
//!   are serialized (as a row lock would do): two writers racing on one key with plain `set`s
//!   would leave the older one last whatever the cache did.
//! - Readers use `get`, `get_or_compute` and `get_many`.
//! - The check: for each read, the newest version whose write had completed `bound` before the
//!   read started (`0` before on the same instance) is the oldest the read may return; a miss
//!   of `get`/`get_many` is always allowed. Staleness is how long before the read the newest
//!   write it missed had completed.

mod check;
mod dropping;
mod history;
mod workload;

use std::{
    collections::HashMap,
    future::Future,
    hash::{BuildHasher, RandomState},
    pin::Pin,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

pub use check::{Report, Violation};
pub use dropping::DroppingBus;
pub use history::{Op, Record};
pub use workload::{Fault, Targets, Workload, run};

/// A future a [`Node`] returns.
pub type NodeFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

/// One cache instance as the checker drives it. Values are versions (`u64`).
pub trait Node: Send + Sync {
    /// A plain read: the cached version, or `None` on a miss.
    fn get<'a>(&'a self, key: &'a str) -> NodeFuture<'a, Option<u64>>;
    /// A read that loads from `source` on a miss (`source.load(key)` is the loader).
    fn get_or_compute<'a>(&'a self, key: &'a str, source: Arc<Source>) -> NodeFuture<'a, u64>;
    /// A batch read.
    fn get_many<'a>(&'a self, keys: &'a [String]) -> NodeFuture<'a, Vec<Option<u64>>>;
    /// Stores `version` under `key` in every tier and tells the other instances.
    fn set<'a>(&'a self, key: &'a str, version: u64) -> NodeFuture<'a, ()>;
    /// Stores every pair.
    fn set_many<'a>(&'a self, pairs: &'a [(String, u64)]) -> NodeFuture<'a, ()>;
    /// Removes `key` everywhere.
    fn invalidate<'a>(&'a self, key: &'a str) -> NodeFuture<'a, ()>;
    /// Removes every key that starts with `prefix` everywhere.
    fn invalidate_prefix<'a>(&'a self, prefix: &'a str) -> NodeFuture<'a, ()>;
    /// Drops every entry tagged `tag` everywhere. Every value a node stores or loads must carry
    /// the tag [`tag_of`] gives its key.
    fn invalidate_tag<'a>(&'a self, tag: &'a str) -> NodeFuture<'a, ()>;
}

/// How many tags the keys are spread over.
pub const TAGS: usize = 4;

/// The tag the checker gives `key` (`k:<n>` carries `t<n mod TAGS>`): a node stores and loads
/// every value with it, and `invalidate_tag` writes bump every key that carries it.
pub fn tag_of(key: &str) -> String {
    let index: usize = key
        .rsplit(':')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    format!("t{}", index % TAGS)
}

/// The source of truth: a version per key, 0 until first written.
#[derive(Debug, Default)]
pub struct Source {
    versions: Mutex<HashMap<String, u64>>,
    /// The longest a load takes after it read the source (a query's answer in transit).
    load_delay: Duration,
    loads: AtomicU64,
}

impl Source {
    /// A source whose loads take up to `load_delay` after reading (varied per load).
    pub fn with_load_delay(load_delay: Duration) -> Self {
        Self {
            load_delay,
            ..Self::default()
        }
    }

    /// The version `key` has now.
    pub fn read(&self, key: &str) -> u64 {
        let versions = self.versions.lock().unwrap_or_else(PoisonError::into_inner);
        versions.get(key).copied().unwrap_or(0)
    }

    /// What a loader does: reads the version of `key`, then takes a while to return it, as a
    /// database query does (which is when a write can overtake it).
    pub async fn load(&self, key: &str) -> u64 {
        let version = self.read(key);
        let nth = self.loads.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(self.load_delay.as_micros()).unwrap_or(u64::MAX);
        if micros > 0 {
            let spread = RandomState::new().hash_one(nth) % micros;
            tokio::time::sleep(Duration::from_micros(spread)).await;
        }
        version
    }

    /// A new version of `key`: what a writer stores in the source before it tells the cache.
    fn bump(&self, key: &str) -> u64 {
        let mut versions = self.versions.lock().unwrap_or_else(PoisonError::into_inner);
        let version = versions.entry(key.to_owned()).or_insert(0);
        *version += 1;
        *version
    }
}

/// The promise the checker holds a run to: how long after a write completed another instance
/// may still return an older version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    /// While the bus is healthy and no fault is under way.
    pub healthy: Duration,
    /// For a write that failed, and for writes and reads that overlap a fault or come within
    /// `healthy` of its end: the L1 max age (and the gap handling) bound these.
    pub faulty: Duration,
}
