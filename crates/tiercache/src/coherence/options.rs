//! How a cache uses its bus: the channel, whether values travel with a `set`, the shared key
//! that authenticates messages, and the limits a receiver puts on what it is told.

use std::time::Duration;

use tiercache_core::{BusKey, clamp_duration};

/// The shortest time between two flushes of L1 asked for by the bus, unless the bus options set
/// another (see [`BusOptions::flush_at_most_every`]).
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_millis(200);

/// How a cache uses its bus.
///
/// ```
/// use tiercache::BusOptions;
///
/// // Send small values along with the invalidation, so other instances need not re-read them.
/// let options = BusOptions::new().channel("shop:events").updates_up_to(512);
/// # let _ = options;
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BusOptions {
    channel: Option<String>,
    updates_up_to: Option<usize>,
    key: Option<BusKey>,
    max_update_ttl: Option<Duration>,
    flush_interval: Duration,
}

impl Default for BusOptions {
    fn default() -> Self {
        Self {
            channel: None,
            updates_up_to: None,
            key: None,
            max_update_ttl: None,
            flush_interval: DEFAULT_FLUSH_INTERVAL,
        }
    }
}

impl BusOptions {
    /// The defaults: the channel named after the namespace, invalidations without values, no
    /// authentication, updates kept at most the cache's default TTL, L1 flushed at most every
    /// [`DEFAULT_FLUSH_INTERVAL`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Authenticates every message with `key`, which every instance of the fleet must share:
    /// each message sent carries an HMAC-SHA256 under it (of the channel, the namespace and the
    /// message), and a received message without a valid one is dropped (counted in
    /// [`BusStats::unauthenticated`](crate::BusStats)), as is a valid one seen before (a replay,
    /// counted in [`BusStats::replayed`](crate::BusStats); one too old to tell keeps only its
    /// invalidation).
    /// Someone who can `PUBLISH` to the channel (or `XADD` to the stream) but lacks the key
    /// can then neither invalidate, plant values nor empty L1s. The cache refuses to build
    /// with a transport that cannot authenticate (server-assisted tracking carries no
    /// messages). Default: none.
    #[must_use]
    pub fn authenticate_with(mut self, key: BusKey) -> Self {
        self.key = Some(key);
        self
    }

    /// A value another instance sends along with a `set` lives at most `ttl` in this
    /// instance's L1 (and never past `l1_max_age`), whatever TTL the message says. Default:
    /// the cache's default TTL.
    #[must_use]
    pub fn max_update_ttl(mut self, ttl: Duration) -> Self {
        self.max_update_ttl = Some(clamp_duration(ttl));
        self
    }

    /// Requests to empty L1 from the bus (a gap, a message that says its sender lost one, and,
    /// on a bus without a key, another instance's `clear`) are carried out at most once per
    /// `interval`: one that comes sooner after the previous flush is done at the end of the
    /// interval, together with every other that came meanwhile (counted in
    /// [`BusStats::flushes_coalesced`](crate::BusStats)). A flood of such messages then costs
    /// one flush per interval, and the staleness bound after one grows by at most `interval`.
    /// With a key, a peer's `clear` is carried out at once. Default: [`DEFAULT_FLUSH_INTERVAL`] (200 ms);
    /// `Duration::ZERO` flushes at every request.
    #[must_use]
    pub fn flush_at_most_every(mut self, interval: Duration) -> Self {
        self.flush_interval = clamp_duration(interval);
        self
    }

    pub(crate) fn key(&self) -> Option<&BusKey> {
        self.key.as_ref()
    }

    pub(crate) fn max_update_ttl_value(&self) -> Option<Duration> {
        self.max_update_ttl
    }

    pub(crate) fn flush_interval(&self) -> Duration {
        self.flush_interval
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

    pub(crate) fn updates_up_to_value(&self) -> Option<usize> {
        self.updates_up_to
    }

    pub(crate) fn channel_for(&self, namespace: &str) -> String {
        match (&self.channel, namespace) {
            (Some(channel), _) => channel.clone(),
            (None, "") => "tiercache:bus".to_owned(),
            (None, namespace) => format!("tiercache:bus:{namespace}"),
        }
    }
}
