//! Traits and plain types shared by every tiercache crate: no I/O, no Redis, no moka.
//!
//! A third party writes a tier by depending on this crate alone and implementing [`Tier`]; the
//! `tiercache` facade then stacks it with the others. This crate also holds the value [`Codec`]
//! and its header ([`Envelope`]), the TTL presets ([`CacheStrategy`], [`EntryOptions`]), key rules
//! ([`validate_key`], [`Namespace`]), the [`Error`] type, the stats types, and the invalidation
//! bus's message ([`BusMessage`]) and transport trait ([`Bus`]).
//!
//! ```
//! use std::time::Duration;
//! use tiercache_core::{CacheStrategy, Decoded, Entry, Envelope, JsonCodec};
//!
//! // What the facade does before it hands bytes to a tier:
//! let envelope = Envelope::new(JsonCodec, 1);
//! let bytes = envelope.encode("user:1", &vec![1, 2, 3])?;
//! let ttl = CacheStrategy::ShortTerm.ttl().unwrap_or(Duration::from_secs(300));
//! let entry = Entry::new(bytes, ttl);
//! assert_eq!(envelope.decode::<Vec<i32>>(&entry.value)?, Decoded::Value(vec![1, 2, 3]));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

mod bus;
mod bus_key;
mod bus_stats;
mod codec;
mod codecs;
mod compression;
mod entry;
mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod key;
pub mod lease;
mod resilience;
mod stats;
mod strategy;
mod tier;

pub use async_trait::async_trait;
pub use bytes::Bytes;

pub use bus::{
    Bus, BusEvent, BusHealth, BusMessage, BusScope, BusSink, GapReason, InstanceId, Invalidation,
    unix_millis,
};
pub use bus_key::{BusKey, MIN_BUS_KEY_LEN};
pub use bus_stats::{BusCounters, BusStats};
pub use codec::{
    Codec, CodecError, DecodeError, Decoded, Envelope, HEADER_LEN, JsonCodec, MAX_TAG_LEN,
    MAX_TAGS, StoredMeta,
};
#[cfg(feature = "msgpack")]
pub use codecs::MsgpackCodec;
#[cfg(feature = "postcard")]
pub use codecs::PostcardCodec;
pub use compression::MAX_DECOMPRESSED_LEN;
pub use entry::{Entry, expiry_after};
pub use error::{BoxError, Error, Result};
pub use key::{
    MAX_KEY_LEN, NAMESPACE_SEPARATOR, Namespace, RESERVED_MARK, reserved_key, validate_key,
    validate_tag, validate_tags,
};
pub use lease::{Filled, Lease, LeaseRead};
pub use resilience::{DEFAULT_FAIL_SAFE_THROTTLE, EagerRefresh, FailSafe, MAX_STALE_WINDOW};
pub use stats::{CacheStats, CircuitState, LoadCounters, TierCounters, TierStats};
pub use strategy::{
    CacheStrategy, DEFAULT_TTL, EntryOptions, MAX_TTL, clamp_duration, scale_ttl, unit_random,
};
pub use tier::Tier;
