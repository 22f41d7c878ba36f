//! How a cache uses leases on its shared tiers: whether at all, for how long, and whether a load
//! waits for another instance that holds the lease.

use std::time::Duration;

/// The default lease TTL: how long a filler may take (load and fill) before another instance
/// may take over.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(5);

/// The default interval at which a waiting instance asks the shared tier again.
pub const DEFAULT_LEASE_POLL: Duration = Duration::from_millis(5);

/// Leases on the shared tiers (see [`tiercache_core::lease`]).
///
/// On a miss that will load, the cache takes a lease on the key in every shared tier that
/// supports leases, as one round trip that also reads the key; the fill after the load stores
/// only while the lease is valid, so a write or invalidation of the key on any instance during
/// the load wins. An instance that finds the lease held by another one waits for that
/// instance's value (asking the shared tier again every [`poll`](Self::poll)) instead of
/// running its loader, so one loader runs per key across the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaseOptions {
    pub(crate) enabled: bool,
    pub(crate) ttl: Duration,
    pub(crate) poll: Duration,
    pub(crate) wait: bool,
}

impl Default for LeaseOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl LeaseOptions {
    /// Leases on, with the defaults below.
    pub fn new() -> Self {
        Self {
            enabled: true,
            ttl: DEFAULT_LEASE_TTL,
            poll: DEFAULT_LEASE_POLL,
            wait: true,
        }
    }

    /// No leases: reads are plain reads and fills plain writes, as in tiercache 0.1. A fill may
    /// then overwrite a newer write in a shared tier, and every instance that misses loads.
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            ..Self::new()
        }
    }

    /// How long a lease lasts: a loader (plus its fill) that takes longer loses it, and its
    /// value is not stored in the shared tier; an instance that died holding it delays the
    /// others by at most this. Clamped to 1 ms ..= 1 day. Default: [`DEFAULT_LEASE_TTL`] (5 s).
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl.clamp(Duration::from_millis(1), Duration::from_secs(86_400));
        self
    }

    /// How often an instance waiting for another's lease asks the shared tier again. Clamped to
    /// 1 ms ..= 1 s. Default: [`DEFAULT_LEASE_POLL`] (5 ms).
    #[must_use]
    pub fn poll(mut self, poll: Duration) -> Self {
        self.poll = poll.clamp(Duration::from_millis(1), Duration::from_secs(1));
        self
    }

    /// Whether a load that finds another instance's lease waits for its value (`true`) or loads
    /// at once without storing into that tier (`false`). Per call:
    /// [`EntryOptions::wait_for_lease`](tiercache_core::EntryOptions::wait_for_lease).
    /// Default: `true`.
    #[must_use]
    pub fn wait_for_holder(mut self, wait: bool) -> Self {
        self.wait = wait;
        self
    }
}
