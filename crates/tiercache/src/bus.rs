//! The cache's end of the invalidation bus: publishing what this instance changed, and applying
//! to L1 what the others changed.
//!
//! - `set`, `invalidate`, `invalidate_prefix` and `clear` publish, after the shared tiers were
//!   written, so an instance that drops its L1 copy and reads again finds the new value. A fill
//!   after a miss publishes nothing: nothing changed, and publishing fills is how caches cause
//!   invalidation storms.
//! - A received message acts on L1 only: its sender already wrote the shared tiers. Messages from
//!   this instance come back on Pub/Sub and are ignored.
//! - Every received invalidation goes through the [`InvalidationClock`](crate::guard) first, then
//!   removes: a load of the key that is in flight at that moment does not put its older value
//!   into L1 afterwards (the stale-insert race; see `guard.rs`).
//! - A gap (the transport may have lost messages) empties L1 and bumps the clock for every key,
//!   because any entry may be stale. A publish that fails marks this instance's next message, so
//!   the others treat it as a gap too.

use std::{
    sync::{
        Arc, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tiercache_core::{
    Bus, BusCounters, BusEvent, BusMessage, BusSink, BusStats, Bytes, Codec, GapReason, InstanceId,
    Invalidation, Result, StoredMeta, async_trait, unix_millis,
};

use crate::{cache::Inner, tags::MARKER_PREFIX};

/// How a cache uses its bus.
///
/// ```
/// use tiercache::BusOptions;
///
/// // Send small values along with the invalidation, so other instances need not re-read them.
/// let options = BusOptions::new().channel("shop:events").updates_up_to(512);
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct BusOptions {
    channel: Option<String>,
    updates_up_to: Option<usize>,
}

impl BusOptions {
    /// The defaults: the channel named after the namespace, invalidations without values.
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses `channel` instead of the one derived from the namespace
    /// (`tiercache:bus:<namespace>`, or `tiercache:bus` without a namespace). Every instance
    /// that shares data must use the same channel.
    #[must_use]
    pub fn channel(mut self, channel: impl Into<String>) -> Self {
        self.channel = Some(channel.into());
        self
    }

    /// Sends the new value with a `set` when it encodes to at most `bytes` bytes; receivers put
    /// it in their L1 instead of dropping the key, and decode it on first read. Off by default.
    ///
    /// The trade: fewer reads of the shared tier after a write, against bigger messages, and
    /// last-published-wins in L1 when two instances write the same key at the same moment (a
    /// plain invalidation has no such race: every instance re-reads the shared tier).
    #[must_use]
    pub fn updates_up_to(mut self, bytes: usize) -> Self {
        self.updates_up_to = Some(bytes);
        self
    }

    pub(crate) fn channel_for(&self, namespace: &str) -> String {
        match (&self.channel, namespace) {
            (Some(channel), _) => channel.clone(),
            (None, "") => "tiercache:bus".to_owned(),
            (None, namespace) => format!("tiercache:bus:{namespace}"),
        }
    }
}

/// This instance's link to the bus.
#[derive(Debug)]
pub(crate) struct BusLink {
    bus: Arc<dyn Bus>,
    pub(crate) origin: InstanceId,
    sequence: AtomicU64,
    /// A publish failed since the last one that worked: the next message says so.
    lost: AtomicBool,
    pub(crate) counters: BusCounters,
    options: BusOptions,
}

impl BusLink {
    pub(crate) fn new(bus: Arc<dyn Bus>, options: BusOptions) -> Self {
        Self {
            bus,
            origin: InstanceId::random(),
            sequence: AtomicU64::new(0),
            lost: AtomicBool::new(false),
            counters: BusCounters::default(),
            options,
        }
    }

    pub(crate) fn bus(&self) -> &Arc<dyn Bus> {
        &self.bus
    }

    /// The largest value sent along with a `set`, if values are sent at all.
    pub(crate) fn updates_up_to(&self) -> Option<usize> {
        self.options.updates_up_to
    }

    /// Sends `invalidation` to the other instances.
    ///
    /// # Errors
    ///
    /// The transport's error; the next message then tells receivers they missed one.
    pub(crate) async fn publish(&self, invalidation: Invalidation) -> Result<()> {
        let message = BusMessage {
            origin: self.origin,
            sequence: self.sequence.fetch_add(1, Ordering::Relaxed) + 1,
            sender_lost_messages: self.lost.swap(false, Ordering::SeqCst),
            sent_at_ms: unix_millis(),
            invalidation,
        };
        match self.bus.publish(&message).await {
            Ok(()) => {
                self.counters.published();
                Ok(())
            }
            Err(err) => {
                self.lost.store(true, Ordering::SeqCst);
                self.counters.publish_error();
                tracing::warn!(bus = self.bus.name(), sequence = message.sequence, %err, "bus publish failed; other instances may serve a stale L1 copy until the next message");
                Err(err)
            }
        }
    }

    pub(crate) fn stats(&self) -> BusStats {
        self.counters.snapshot(self.bus.name(), self.bus.health())
    }
}

/// What the transport delivers to: a weak handle, so the transport never keeps a dropped cache
/// alive.
pub(crate) struct Receiver<C> {
    pub(crate) inner: Weak<Inner<C>>,
}

#[async_trait]
impl<C: Codec> BusSink for Receiver<C> {
    async fn deliver(&self, event: BusEvent) {
        if let Some(inner) = self.inner.upgrade() {
            inner.apply(event).await;
        }
    }
}

impl<C: Codec> Inner<C> {
    /// Applies a bus event to L1.
    pub(crate) async fn apply(&self, event: BusEvent) {
        let Some(link) = &self.bus else {
            return;
        };
        let message = match event {
            BusEvent::Message(message) => message,
            BusEvent::Gap { reason } => return self.flush_after_gap(reason),
            other => {
                tracing::debug!(?other, "bus event this version does not know; ignored");
                return;
            }
        };
        if message.origin == link.origin {
            link.counters.ignored_own();
            return;
        }
        if message.sender_lost_messages {
            self.flush_after_gap(GapReason::SenderLost);
        }
        tracing::trace!(origin = %message.origin, sequence = message.sequence, "bus message");
        self.invalidate_in_memory(message.invalidation).await;
        // Counted once applied, so a reader of the stats that sees the count sees the effect.
        link.counters.received();
        if message.sent_at_ms != 0 {
            let lag = Duration::from_millis(unix_millis().saturating_sub(message.sent_at_ms));
            link.counters.propagation_lag(lag);
            #[cfg(feature = "metrics")]
            crate::metrics::record_propagation_lag(self.namespace.name(), lag);
        }
    }

    /// Drops from L1 what another instance changed: each key's clock first, then the entry.
    async fn invalidate_in_memory(&self, invalidation: Invalidation) {
        let Some(memory) = &self.memory else {
            return;
        };
        match invalidation {
            Invalidation::Keys(keys) => {
                for key in keys {
                    // Server-assisted tracking reports a tag marker's change as a key.
                    if let Some(tag) = key.strip_prefix(MARKER_PREFIX) {
                        self.invalidate_tag_in_memory(tag, None);
                        continue;
                    }
                    self.clock.invalidate_key(&key);
                    memory.remove(&key).await;
                }
            }
            Invalidation::Tag {
                tag,
                invalidated_at_ms,
            } => self.invalidate_tag_in_memory(&tag, Some(invalidated_at_ms)),
            Invalidation::Prefix(prefix) => {
                self.clock.invalidate_everything();
                if let Err(err) = memory.remove_prefix(&prefix) {
                    // Prefix removal can only fail if moka's predicate support is off; then
                    // nothing narrower than everything is safe.
                    tracing::warn!(%err, prefix, "prefix removal failed; emptying L1");
                    memory.clear();
                }
            }
            Invalidation::Clear => {
                self.clock.invalidate_everything();
                memory.clear();
            }
            Invalidation::Update { key, value, ttl } => {
                self.clock.invalidate_key(&key);
                self.store_update(&key, value, ttl).await;
            }
            other => {
                // An invalidation kind this version does not know: dropping all of L1 is the
                // only safe reading.
                tracing::debug!(?other, "unknown invalidation kind; emptying L1");
                self.flush_after_gap(GapReason::SenderLost);
            }
        }
    }

    /// Puts a value another instance just wrote into L1, as bytes decoded on first read, with
    /// its tags, so a tag invalidation finds it before it is ever read. A value one of whose
    /// tags this instance already knows to be invalidated after the write is dropped instead
    /// (messages from different instances can arrive in either order).
    async fn store_update(&self, key: &str, value: Bytes, ttl: Duration) {
        let Some(memory) = self.memory.as_ref() else {
            return;
        };
        let meta = StoredMeta::read(&value);
        if !memory.options().promotes() || self.tags.known_invalidated(&meta) {
            memory.remove(key).await;
            return;
        }
        let expires_at = Instant::now() + ttl.mul_f64(memory.options().ttl_scale_value());
        let tags = (!meta.tags.is_empty()).then(|| Arc::from(meta.tags));
        memory
            .insert_encoded(key, value, self.cap_l1_expiry(expires_at), tags)
            .await;
    }

    /// Empties L1 after the bus may have lost messages.
    fn flush_after_gap(&self, reason: GapReason) {
        let Some(link) = &self.bus else {
            return;
        };
        link.counters.gap();
        self.clock.invalidate_everything();
        // A tag message may have been lost too: read every tag's marker again.
        self.tags.forget_all();
        if let Some(memory) = &self.memory {
            memory.clear();
            link.counters.l1_flush();
        }
        tracing::info!(
            ?reason,
            "bus gap: L1 emptied, because any entry may be stale"
        );
    }

    /// Publishes `invalidation` when the cache has a bus.
    pub(crate) async fn publish(&self, invalidation: impl FnOnce() -> Invalidation) -> Result<()> {
        match &self.bus {
            Some(link) => link.publish(invalidation()).await,
            None => Ok(()),
        }
    }
}
