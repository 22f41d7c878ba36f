//! Test support for tiercache and for anyone writing a tier: the [`conformance`] suite that every
//! [`Tier`](tiercache_core::Tier) runs, ours and third parties', and [`MapTier`], a `HashMap` tier
//! that can be made to fail, [`LocalBus`], an in-process bus transport that can fail and drop
//! messages, and [`RedisServer`] / [`RedisCluster`]: Redis processes a test starts on free
//! loopback ports and can stop, pause and restart.
//!
//! Add it under `[dev-dependencies]`. The Redis processes are behind the `redis` feature and
//! the PostgreSQL helper behind `postgres`. Its checks panic with the name
//! of the behaviour that failed, like `assert!`, so they read well in a test report.
//!
//! A third-party tier, checked by the suite:
//!
//! ```
//! use std::{collections::HashMap, sync::Mutex};
//! use tiercache_core::{async_trait, Entry, Result, Tier};
//!
//! #[derive(Debug, Default)]
//! struct MapTier(Mutex<HashMap<String, Entry>>);
//!
//! impl MapTier {
//!     fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
//!         self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
//!     }
//! }
//!
//! #[async_trait]
//! impl Tier for MapTier {
//!     fn name(&self) -> &str { "map" }
//!     async fn get(&self, key: &str) -> Result<Option<Entry>> {
//!         Ok(self.map().get(key).filter(|e| !e.is_expired()).cloned())
//!     }
//!     async fn set(&self, key: &str, entry: Entry) -> Result<()> {
//!         if entry.is_expired() {
//!             self.map().remove(key);
//!         } else {
//!             self.map().insert(key.to_owned(), entry);
//!         }
//!         Ok(())
//!     }
//!     async fn remove(&self, key: &str) -> Result<()> {
//!         self.map().remove(key);
//!         Ok(())
//!     }
//!     async fn remove_prefix(&self, prefix: &str) -> Result<u64> {
//!         let mut map = self.map();
//!         let before = map.len();
//!         map.retain(|key, _| !key.starts_with(prefix));
//!         Ok((before - map.len()) as u64)
//!     }
//!     async fn clear(&self) -> Result<()> {
//!         self.map().clear();
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! tiercache_testkit::conformance::run(&MapTier::default(), "doc:").await;
//! # }
//! ```
// On docs.rs (every feature on), each item gated by a feature says which one.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

#[cfg(feature = "redis")]
pub mod coherence;
pub mod conformance;
mod conformance_leases;
mod local_bus;
mod map_tier;
#[cfg(feature = "postgres")]
mod postgres;
mod proxy;
#[cfg(feature = "redis")]
mod redis;

pub use local_bus::{LocalBus, LocalNetwork};
pub use map_tier::{InjectedFailure, MapTier};
#[cfg(feature = "postgres")]
pub use postgres::{FORCE_PRIVATE_ENV, POSTGRES_HINT, Postgres, lets_in};
pub use proxy::Proxy;
#[cfg(feature = "redis")]
pub use redis::{INSTALL_HINT, RedisCluster, RedisServer, redis_server_available};
