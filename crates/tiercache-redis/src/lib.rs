//! The shared tier of tiercache: [`RedisTier`], a [`Tier`](tiercache_core::Tier) on Redis
//! through [fred](https://docs.rs/fred).
//!
//! One command per read (the value carries its absolute expiry in a small frame), batches grouped by hash slot so
//! they work on a cluster, prefix removal by SCAN on every primary with the prefix taken
//! literally, and every call bounded by a timeout so a slow or frozen server costs a bounded
//! wait. fred reconnects by itself ([`RedisOptions::reconnect_policy`]), so a restarted server is
//! picked up again without restarting the service.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> tiercache_core::Result<()> {
//! # let server = tiercache_testkit::RedisServer::start().map_err(|e| tiercache_core::Error::Config(e.to_string()))?;
//! # let url = server.url();
//! use std::time::Duration;
//! use tiercache_core::{Entry, Tier};
//! use tiercache_redis::{RedisOptions, RedisTier};
//!
//! let redis = RedisTier::connect_with(
//!     RedisOptions::from_url(&url)?.command_timeout(Duration::from_millis(200)),
//! )
//! .await?;
//! redis.set("greeting", Entry::new(&b"hello"[..], Duration::from_secs(60))).await?;
//! let hit = redis.get("greeting").await?;
//! assert!(hit.is_some_and(|entry| entry.remaining_ttl() <= Duration::from_secs(60)));
//! # Ok(()) }
//! ```
// On docs.rs (every feature on), each item gated by a feature says which one.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

mod error;
mod frame;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod glob;
mod lease;
mod options;
mod redact;
mod tier;

/// fred, re-exported for its configuration types ([`fred::types::config::Config`],
/// [`fred::types::config::ReconnectPolicy`]) and for raw access through [`RedisTier::pool`].
pub use fred;
pub use options::RedisOptions;
pub use tier::RedisTier;
