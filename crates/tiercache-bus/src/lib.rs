//! The invalidation bus of tiercache: the wire message, and transports that carry it between
//! cache instances.
//!
//! Every cache instance publishes what it changed ([`tiercache_core::Invalidation`]) and drops
//! from its L1 what the others changed. The facade does the publishing and applying; this crate
//! carries the messages. Transports, each a [`tiercache_core::Bus`]:
//!
//! | transport | feature | a message sent while an instance is away | a reconnect costs |
//! |---|---|---|---|
//! | `RedisBus` (Pub/Sub) | `redis` (default) | lost | all of L1 |
//! | `RedisStreamBus` (a Redis Stream) | `streams` | replayed, in stream-id order | nothing, unless the position was trimmed away |
//! | `RedisTrackingBus` (`CLIENT TRACKING BCAST`) | `tracking` | lost; reports writes by any client | all of L1 |
//!
//! Messages travel in the versioned [`wire`] format: version 2 carries the send time (receivers
//! measure propagation lag with it) and tag invalidations; version 1 messages are still read. A
//! version-1 reader drops version-2 messages as undecodable (counted), so upgrade every instance
//! that shares a channel together.
//!
//! ```
//! use tiercache_bus::wire;
//! use tiercache_core::{BusMessage, InstanceId, Invalidation};
//!
//! let message = BusMessage {
//!     origin: InstanceId::random(),
//!     sequence: 1,
//!     sender_lost_messages: false,
//!     sent_at_ms: 0,
//!     invalidation: Invalidation::Keys(vec!["user:1".into()]),
//! };
//! let bytes = wire::encode(&message)?;
//! assert_eq!(wire::decode(&bytes)?, message);
//! // Garbage is an error value, never a panic.
//! assert!(wire::decode(&bytes.slice(..5)).is_err());
//! # Ok::<(), wire::WireError>(())
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(feature = "redis")]
mod options;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "streams")]
mod stream;
#[cfg(feature = "tracking")]
mod tracking;
pub mod wire;

#[cfg(feature = "redis")]
pub use options::RedisBusOptions;
#[cfg(feature = "redis")]
pub use redis::RedisBus;
#[cfg(feature = "streams")]
pub use stream::RedisStreamBus;
#[cfg(feature = "tracking")]
pub use tracking::RedisTrackingBus;
