//! The invalidation bus as the facade sees it: what one instance tells the others, and the
//! [`Bus`] trait a transport implements (Redis Pub/Sub in `tiercache-bus`, others later).

use std::{fmt, sync::Arc, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;

use crate::{BusKey, Result};

/// Identifies one running cache instance on the bus, so it can ignore its own messages.
///
/// Random per [`InstanceId::random`] call; two instances picking the same id is as likely as a
/// 128-bit collision.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId(pub u128);

impl InstanceId {
    /// A fresh id, seeded from the standard library's per-process random hasher keys, the clock
    /// and a process-wide counter (no extra dependency for randomness).
    pub fn random() -> Self {
        use std::{
            hash::{BuildHasher, RandomState},
            sync::atomic::{AtomicU64, Ordering},
            time::SystemTime,
        };
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos());
        let seed = (nanos, count, std::process::id());
        let high = RandomState::new().hash_one(seed);
        let low = RandomState::new().hash_one((seed, high));
        Self((u128::from(high) << 64) | u128::from(low))
    }
}

impl fmt::Debug for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InstanceId({:032x})", self.0)
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// What changed. Keys are the user's keys, without the namespace: a bus channel belongs to one
/// namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Invalidation {
    /// These keys changed or were removed.
    Keys(Vec<String>),
    /// Every key starting with this prefix was removed.
    Prefix(String),
    /// The whole cache was cleared.
    Clear,
    /// `key` now holds `value` (the encoded bytes the lower tiers hold) for `ttl`. Sent instead
    /// of [`Invalidation::Keys`] only when the sender opted in and the value is small.
    Update {
        /// The key that changed.
        key: String,
        /// The new value, encoded as in the tiers below L1.
        value: Bytes,
        /// How long the value lives from when it was written.
        ttl: Duration,
    },
    /// Every entry carrying `tag` and written before `invalidated_at_ms` was dropped.
    Tag {
        /// The tag.
        tag: String,
        /// When it was invalidated, in milliseconds since the Unix epoch (the sender's clock).
        invalidated_at_ms: u64,
    },
}

/// One message on the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusMessage {
    /// The instance that sent it.
    pub origin: InstanceId,
    /// The sender's message counter, starting at 1: tells a sender's messages apart in logs and
    /// lets a replaying transport order them.
    pub sequence: u64,
    /// The sender failed to publish an earlier message: receivers may have missed an
    /// invalidation and must treat this as a gap.
    pub sender_lost_messages: bool,
    /// When the sender sent it, in milliseconds since the Unix epoch (the sender's clock); 0 when
    /// the transport does not carry it. Receivers measure propagation lag with it.
    pub sent_at_ms: u64,
    /// What changed.
    pub invalidation: Invalidation,
}

/// Milliseconds since the Unix epoch by this machine's clock (0 if the clock is before 1970).
pub fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// What a transport hands to the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BusEvent {
    /// A message from an instance (this one's own included; the cache filters those).
    Message(BusMessage),
    /// Messages may have been lost (a reconnect, a receive buffer overrun): every L1 entry may
    /// be stale.
    Gap {
        /// Why, for logs and stats.
        reason: GapReason,
    },
}

/// Why a transport reported a [`BusEvent::Gap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GapReason {
    /// The connection dropped and came back; messages sent meanwhile are gone.
    Reconnected,
    /// The transport fell behind and dropped messages it had received.
    Overrun,
    /// Another instance reported that one of its messages was never sent.
    SenderLost,
}

/// What a cache tells its transport when it starts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BusScope<'a> {
    /// The channel (or stream key) the cache's instances share: derived from the namespace
    /// unless the bus options name one.
    pub channel: &'a str,
    /// The prefix the cache puts before every key in the tiers below L1 (`"<namespace>:"`, or
    /// `":"` unnamed): a transport that learns of changes from the shared tier itself strips
    /// it, and one that keeps a key of its own names it with
    /// [`reserved_key`](crate::reserved_key) under it.
    pub key_prefix: &'a str,
    /// The fleet's shared key, when its messages are authenticated: the transport signs every
    /// message it sends with it and drops every one it receives that does not verify. Only
    /// given to a transport whose [`Bus::authenticates`] is true.
    pub key: Option<&'a BusKey>,
}

impl<'a> BusScope<'a> {
    /// A scope for `channel` and `key_prefix`.
    pub fn new(channel: &'a str, key_prefix: &'a str) -> Self {
        Self {
            channel,
            key_prefix,
            key: None,
        }
    }

    /// The same scope with messages authenticated by `key`.
    #[must_use]
    pub fn with_key(self, key: &'a BusKey) -> Self {
        Self {
            key: Some(key),
            ..self
        }
    }
}

/// Where a transport delivers what it receives: the cache implements this.
#[async_trait]
pub trait BusSink: Send + Sync {
    /// Handles one event. Returns once the event has been applied to L1, so a transport that
    /// awaits it delivers in order.
    async fn deliver(&self, event: BusEvent);
}

/// The transport's own view of its health.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BusHealth {
    /// Whether the receiving side is connected and subscribed right now.
    pub connected: bool,
    /// Received payloads that did not decode (dropped, never applied).
    pub bad_messages: u64,
    /// Times the receiving side reconnected after losing its connection.
    pub reconnects: u64,
    /// Received messages without a valid MAC for the scope's key (dropped, never applied).
    pub unauthenticated: u64,
}

impl BusHealth {
    /// A health report.
    pub fn new(connected: bool, bad_messages: u64, reconnects: u64) -> Self {
        Self {
            connected,
            bad_messages,
            reconnects,
            unauthenticated: 0,
        }
    }

    /// The same report with `count` messages dropped for want of a valid MAC.
    #[must_use]
    pub fn with_unauthenticated(self, count: u64) -> Self {
        Self {
            unauthenticated: count,
            ..self
        }
    }
}

/// A transport that carries [`BusMessage`]s between cache instances.
///
/// The cache calls [`start`](Self::start) once, when it is built, then
/// [`publish`](Self::publish) for every local write. A transport must deliver every message it
/// receives to the sink, in the order received, and must report a [`BusEvent::Gap`] whenever it
/// cannot rule out having missed one (after the subscription is back in place, so nothing is lost
/// between the gap and the messages after it). Dropping the transport stops its tasks.
#[async_trait]
pub trait Bus: Send + Sync + fmt::Debug {
    /// The transport's name, for stats and logs.
    fn name(&self) -> &str;

    /// Subscribes to the scope's channel and starts delivering to `sink`. Returns once
    /// subscribed, so a message published after `start` returns is received.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Backend`] or [`crate::Error::Timeout`] when the subscription cannot be made;
    /// [`crate::Error::Config`] when called twice.
    async fn start(&self, scope: BusScope<'_>, sink: Arc<dyn BusSink>) -> Result<()>;

    /// Sends `message` on the channel given to [`start`](Self::start). A transport that learns of
    /// changes from the shared tier itself may send nothing.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Backend`] or [`crate::Error::Timeout`] when it could not be sent;
    /// [`crate::Error::Config`] before `start`.
    async fn publish(&self, message: &BusMessage) -> Result<()>;

    /// Connection state and transport counters.
    fn health(&self) -> BusHealth;

    /// Whether this transport authenticates messages with [`BusScope::key`]: signs every one it
    /// sends and drops every one it receives that does not verify. The cache refuses to start a
    /// transport that does not while a key is set. Default: false.
    fn authenticates(&self) -> bool {
        false
    }
}

#[async_trait]
impl<B: Bus + ?Sized> Bus for Arc<B> {
    fn name(&self) -> &str {
        (**self).name()
    }
    async fn start(&self, scope: BusScope<'_>, sink: Arc<dyn BusSink>) -> Result<()> {
        (**self).start(scope, sink).await
    }
    async fn publish(&self, message: &BusMessage) -> Result<()> {
        (**self).publish(message).await
    }
    fn health(&self) -> BusHealth {
        (**self).health()
    }
    fn authenticates(&self) -> bool {
        (**self).authenticates()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_differ() {
        let ids: std::collections::HashSet<_> = (0..1000).map(|_| InstanceId::random()).collect();
        assert_eq!(ids.len(), 1000);
    }
}
