//! tiercache: a multi-tier cache for Rust services.
//!
//! A typed in-process L1 (`MemoryTier`, on moka) in front of any number of shared or slower
//! tiers (`RedisTier`, or anything that implements [`Tier`]), with stampede protection, typed
//! get-or-compute, promotion with TTL scaling, a circuit breaker per tier, negative caching and
//! TTL jitter. With a [`Bus`] (`RedisBus` under the `bus` feature, or any transport of your own),
//! every instance's L1 stays coherent: writes are published, other instances drop what changed,
//! an invalidation beats a load racing it, and a lost message empties L1 rather than leave it
//! stale ([`CacheBuilder::bus`], [`BusOptions`], [`CacheBuilder::l1_max_age`]).
//!
//! When the source is slow or down, [`FailSafe`] answers a failed or timed-out load with the
//! value kept past its TTL, soft and hard loader timeouts bound how long a caller waits
//! ([`EntryOptions::soft_timeout`], [`EntryOptions::hard_timeout`]), and [`EagerRefresh`] reloads
//! hot keys in the background before they expire. [`EntryOptions::tags`] and
//! [`Cache::invalidate_tag`] drop every entry about one tenant or product at once, in every tier
//! and instance. Every call is a `tracing` span (target `tiercache`, level DEBUG) with the tier
//! that answered, hit or miss, and the duration; the `metrics` feature publishes the stats.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> tiercache::Result<()> {
//! use std::time::Duration;
//! use tiercache::{Cache, CacheStrategy, EntryOptions, Error, FailSafe, MemoryTier};
//!
//! let cache = Cache::builder()
//!     .memory(MemoryTier::new(10_000))
//!     .fail_safe(FailSafe::new(Duration::from_secs(3600)))
//!     .build()
//!     .await?;
//! let short = EntryOptions::new(CacheStrategy::Custom(Duration::from_millis(10)));
//! cache.set("price", &100_u32, short.clone()).await?;
//! tokio::time::sleep(Duration::from_millis(20)).await;
//!
//! // Expired, and the source is down: the stale value answers instead of the error.
//! let price = cache
//!     .get_or_compute("price", short, || async { Err::<u32, _>(Error::Config("db down".into())) })
//!     .await?;
//! assert_eq!(price, 100);
//! assert_eq!(cache.stats().stale_served, 1);
//! # Ok(()) }
//! ```
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> tiercache::Result<()> {
//! use serde::{Deserialize, Serialize};
//! use tiercache::{Cache, CacheStrategy, MemoryTier};
//!
//! #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
//! struct User {
//!     id: u64,
//!     name: String,
//! }
//!
//! async fn load_user(id: u64) -> Result<User, std::io::Error> {
//!     Ok(User { id, name: "Ada".into() })
//! }
//!
//! let cache = Cache::builder()
//!     .namespace("shop")
//!     .memory(MemoryTier::new(100_000))
//!     .build()
//!     .await?;
//!
//! let user: User = cache
//!     .get_or_compute("user:1", CacheStrategy::ShortTerm, || load_user(1))
//!     .await?;
//! assert_eq!(cache.get::<User>("user:1").await?, Some(user));
//!
//! cache.invalidate("user:1").await?;
//! assert_eq!(cache.get::<User>("user:1").await?, None);
//! assert_eq!(cache.stats().loads, 1);
//! # Ok(()) }
//! ```
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `moka` | yes | the typed L1 [`MemoryTier`] and the bytes tier [`MokaTier`] |
//! | `redis` | yes | the shared tier [`RedisTier`] (on fred) |
//! | `bus` | no | the invalidation bus, keeping every instance's L1 coherent: [`RedisBus`] (Pub/Sub) and [`RedisTrackingBus`] (server-assisted tracking); with `streams` also [`RedisStreamBus`] (replayable) |
//! | `streams` | no | [`Streams`]: Redis Streams with typed events and consumer groups |
//! | `tls` | no | `rediss://` URLs for the Redis tier and bus (rustls) |
//! | `postcard` | no | [`PostcardCodec`]: postcard, compact and fast, not self-describing |
//! | `msgpack` | no | [`MsgpackCodec`]: MessagePack (rmp-serde) with field names |
//! | `lz4` | no | values compressed below L1 above a threshold ([`CacheBuilder::compress_above`]) |
//! | `metrics` | no | the stats through the `metrics` crate facade (`Cache::record_metrics`, `CacheBuilder::metrics_every`), the bus's propagation lag as a histogram |
//!
//! The [`JsonCodec`] (serde_json) is always available and is the default codec; another codec is
//! plugged in with [`CacheBuilder::codec`]. A cache reads every shipped codec it was built with
//! and writes its own, so a fleet can switch codec in a rolling deploy.
// On docs.rs (every feature on), each item gated by a feature says which one.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

// The handle and its builder; under them the engine (the only sequencer), and under it the
// components, each owning one rule: front (L1 and the invalidation stamp), stack (the tiers
// below L1), load (flights and background loads), coherence (the bus), policy (plain data).
mod builder;
mod cache;
mod coherence;
mod common;
mod engine;
mod events;
mod front;
mod health;
mod load;
#[cfg(feature = "metrics")]
mod metrics;
mod observe;
mod policy;
mod stack;

pub use builder::{CacheBuilder, DEFAULT_L1_MAX_AGE_WITH_BUS};
pub use cache::{Cache, Refresh};
pub use coherence::{BusOptions, DEFAULT_FLUSH_INTERVAL};
pub use events::{CacheEvent, EVENT_BUFFER, Events};
pub use health::{HEALTH_PROBE_TIMEOUT, Health, PartHealth, PartKind, PartStatus};
pub use load::DEFAULT_BACKGROUND_LOADS;
pub use policy::{
    DEFAULT_BACKGROUND_TIMEOUT, DEFAULT_LEASE_POLL, DEFAULT_LEASE_TTL, LeaseOptions, Promotion,
    TierOptions,
};
pub use stack::{
    CircuitBreaker, DEFAULT_TAG_CHECK_INTERVAL, DEFAULT_TAG_RETENTION, TAG_CLOCK_CAPACITY,
};
#[cfg(all(feature = "bus", feature = "streams"))]
pub use tiercache_bus::RedisStreamBus;
#[cfg(feature = "bus")]
pub use tiercache_bus::{RedisBus, RedisBusOptions, RedisTrackingBus};
#[cfg(feature = "msgpack")]
pub use tiercache_core::MsgpackCodec;
#[cfg(feature = "postcard")]
pub use tiercache_core::PostcardCodec;
pub use tiercache_core::{
    BoxError, Bus, BusKey, BusStats, Bytes, CacheStats, CacheStrategy, CircuitState, Codec,
    DEFAULT_FAIL_SAFE_THROTTLE, EagerRefresh, Entry, EntryOptions, Error, FailSafe, JsonCodec,
    MAX_KEY_LEN, MAX_TTL, Result, Tier, TierStats, async_trait,
};
#[cfg(feature = "moka")]
pub use tiercache_moka::{MemoryConfig, MemoryTier, MokaTier};
#[cfg(feature = "redis")]
pub use tiercache_redis::{RedisOptions, RedisTier};
/// The Redis Streams adapter: typed events and consumer groups (`streams` feature). Connect it
/// with [`Streams::from_tier`](tiercache_streams::Streams::from_tier) to share the Redis tier's
/// pool and options.
#[cfg(feature = "streams")]
pub use tiercache_streams as streams;
#[cfg(feature = "streams")]
pub use tiercache_streams::Streams;

/// The README's examples, compiled and run as doc tests so the README stays true (they use
/// every feature, so they run under `--all-features`, as `cargo xtask test` does).
#[cfg(all(doctest, feature = "bus", feature = "streams"))]
#[doc = include_str!("../README.md")]
struct ReadmeExample;

/// The Redis tier's crate (`redis` feature), with the client it is built on:
/// `tiercache::redis::fred` is the fred version tiercache uses, so that
/// [`RedisOptions::reconnect_policy`] and [`RedisOptions::from_config`] can be called without
/// pinning fred in your own `Cargo.toml`.
///
/// ```
/// use tiercache::redis::fred::types::config::ReconnectPolicy;
/// use tiercache::RedisOptions;
///
/// let options = RedisOptions::from_url("redis://127.0.0.1:6379")?
///     .reconnect_policy(ReconnectPolicy::new_exponential(0, 100, 30_000, 2));
/// # let _ = options;
/// # Ok::<(), tiercache::Error>(())
/// ```
#[cfg(feature = "redis")]
pub mod redis {
    pub use tiercache_redis::*;
}

/// The crates under the facade, for what it does not re-export.
pub mod core {
    pub use tiercache_core::*;
}
