//! Counters the cache keeps, and the plain snapshots a user reads.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// How many copies of each set of counters there are. Threads bump the copy of their own shard
/// and readers add the copies up, so busy threads do not fight over one cache line.
const SHARDS: usize = 8;

/// The shard of the calling thread: threads are dealt shards in turn as they first count.
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|shard| *shard)
}

/// One shard of a tier's counters, on cache lines of its own.
#[derive(Debug, Default)]
#[repr(align(128))]
struct TierShard {
    hits: AtomicU64,
    misses: AtomicU64,
    promotions: AtomicU64,
    writes: AtomicU64,
    errors: AtomicU64,
    decode_errors: AtomicU64,
    skipped: AtomicU64,
}

/// Live counters of one tier. Cheap to bump from any thread, even from many at once.
#[derive(Debug, Default)]
pub struct TierCounters {
    shards: [TierShard; SHARDS],
}

macro_rules! bump {
    ($($(#[$doc:meta])* $name:ident => $field:ident;)*) => {
        impl TierCounters {
            $($(#[$doc])* pub fn $name(&self) {
                self.shards[shard()].$field.fetch_add(1, Ordering::Relaxed);
            })*
        }
    };
}

bump! {
    /// Counts a read that found a live entry.
    hit => hits;
    /// Counts a read that found nothing.
    miss => misses;
    /// Counts an entry copied into this tier from a tier below it.
    promotion => promotions;
    /// Counts a write (set or fill).
    write => writes;
    /// Counts a failed call to the tier.
    error => errors;
    /// Counts stored bytes that did not decode (read as a miss).
    decode_error => decode_errors;
    /// Counts a call not made because the tier's circuit breaker was open.
    skip => skipped;
}

impl TierCounters {
    /// A snapshot named `name`.
    pub fn snapshot(&self, name: &str) -> TierStats {
        let sum = |field: fn(&TierShard) -> &AtomicU64| -> u64 {
            self.shards
                .iter()
                .map(|s| field(s).load(Ordering::Relaxed))
                .sum()
        };
        TierStats {
            name: name.to_owned(),
            hits: sum(|s| &s.hits),
            misses: sum(|s| &s.misses),
            promotions: sum(|s| &s.promotions),
            writes: sum(|s| &s.writes),
            errors: sum(|s| &s.errors),
            decode_errors: sum(|s| &s.decode_errors),
            skipped: sum(|s| &s.skipped),
            circuit: CircuitState::Closed,
            circuit_opens: 0,
        }
    }
}

/// What one tier has seen since the cache was built.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TierStats {
    /// The tier's name.
    pub name: String,
    /// Reads that found a live entry.
    pub hits: u64,
    /// Reads that found nothing (decode failures included).
    pub misses: u64,
    /// Entries copied into this tier from a tier below.
    pub promotions: u64,
    /// Writes: sets, fills and promotions.
    pub writes: u64,
    /// Failed calls.
    pub errors: u64,
    /// Stored values that did not decode and were read as misses.
    pub decode_errors: u64,
    /// Calls not made because the circuit breaker was open.
    pub skipped: u64,
    /// The circuit breaker's state when the snapshot was taken.
    pub circuit: CircuitState,
    /// How many times the circuit breaker opened.
    pub circuit_opens: u64,
}

/// The state of a tier's circuit breaker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CircuitState {
    /// Calls go through (also the state of a tier without a breaker).
    #[default]
    Closed,
    /// The tier failed repeatedly: calls are skipped until the cool-down ends.
    Open,
    /// The cool-down ended: one probe call may go through; its outcome closes or reopens.
    HalfOpen,
}

impl TierStats {
    /// Hits over reads, in 0..=1; 0 before the first read.
    pub fn hit_ratio(&self) -> f64 {
        let reads = self.hits + self.misses;
        if reads == 0 {
            0.0
        } else {
            self.hits as f64 / reads as f64
        }
    }
}

/// Live counters of the loader and coalescing.
#[derive(Debug, Default)]
pub struct LoadCounters {
    loads: AtomicU64,
    load_errors: AtomicU64,
    coalesced: AtomicU64,
    negative_hits: AtomicU64,
    fills_rejected: AtomicU64,
    fills_revoked: AtomicU64,
    lease_waits: AtomicU64,
    lease_takeovers: AtomicU64,
    stale_served: AtomicU64,
    soft_timeouts: AtomicU64,
    hard_timeouts: AtomicU64,
    eager_refreshes: AtomicU64,
    background_loads: AtomicU64,
    background_refused: AtomicU64,
    tag_rejected: AtomicU64,
    tag_times_evicted: AtomicU64,
}

impl LoadCounters {
    /// Counts one loader call.
    pub fn load(&self) {
        self.loads.fetch_add(1, Ordering::Relaxed);
    }
    /// Counts a loader that failed or panicked.
    pub fn load_error(&self) {
        self.load_errors.fetch_add(1, Ordering::Relaxed);
    }
    /// Counts a caller that waited for another caller's load instead of loading.
    pub fn coalesced(&self) {
        self.coalesced.fetch_add(1, Ordering::Relaxed);
    }
    /// Counts a read answered by a cached "not found".
    pub fn negative_hit(&self) {
        self.negative_hits.fetch_add(1, Ordering::Relaxed);
    }
    /// Counts a fill (a loaded or promoted value) that an invalidation arriving meanwhile kept
    /// out of the cache.
    pub fn fill_rejected(&self) {
        self.fills_rejected.fetch_add(1, Ordering::Relaxed);
    }
    /// Counts a fill into a shared tier that its lease did not allow: a write or invalidation of
    /// the key came after the lease was taken (or the lease expired), so the older loaded value
    /// was not stored.
    pub fn fill_revoked(&self) {
        self.fills_revoked.fetch_add(1, Ordering::Relaxed);
    }
    /// Counts a load this instance did not run because another instance held the key's lease:
    /// it waited for that instance's value instead.
    pub fn lease_wait(&self) {
        self.lease_waits.fetch_add(1, Ordering::Relaxed);
    }
    /// Counts a wait for another instance's lease that ended without its value (the holder died,
    /// its lease expired or was revoked, or the wait reached its bound), so this instance loaded.
    pub fn lease_takeover(&self) {
        self.lease_takeovers.fetch_add(1, Ordering::Relaxed);
    }
    /// Counts a call answered with a stale value because its load failed or timed out.
    pub fn stale_served(&self) {
        self.stale_served.fetch_add(1, Ordering::Relaxed);
    }
    /// Counts a load that passed its soft timeout.
    pub fn soft_timeout(&self) {
        self.soft_timeouts.fetch_add(1, Ordering::Relaxed);
    }
    /// Counts a load abandoned at its hard timeout.
    pub fn hard_timeout(&self) {
        self.hard_timeouts.fetch_add(1, Ordering::Relaxed);
    }
    /// Counts a background refresh started because a hit came near the entry's expiry.
    pub fn eager_refresh(&self) {
        self.eager_refreshes.fetch_add(1, Ordering::Relaxed);
    }
    /// Counts a load moved to (or started in) the background.
    pub fn background_load(&self) {
        self.background_loads.fetch_add(1, Ordering::Relaxed);
    }
    /// Counts a background load not started because the background limit was reached.
    pub fn background_refused(&self) {
        self.background_refused.fetch_add(1, Ordering::Relaxed);
    }
    /// Counts a stored value read as a miss because one of its tags was invalidated after it
    /// was written.
    pub fn tag_rejected(&self) {
        self.tag_rejected.fetch_add(1, Ordering::Relaxed);
    }
    /// Counts tag invalidation times dropped from the tag clock while still of use, because it
    /// reached its capacity.
    pub fn tag_times_evicted(&self, count: u64) {
        self.tag_times_evicted.fetch_add(count, Ordering::Relaxed);
    }
}

/// A snapshot of a whole cache: each tier top-down, then the loader.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// The typed in-process tier, when there is one.
    pub memory: Option<TierStats>,
    /// The tiers below it, top-down (L2 first).
    pub tiers: Vec<TierStats>,
    /// Loader calls.
    pub loads: u64,
    /// Loader calls that failed or panicked.
    pub load_errors: u64,
    /// Callers that shared another caller's load.
    pub coalesced: u64,
    /// Reads answered by a cached "not found".
    pub negative_hits: u64,
    /// Loaded or promoted values kept out of the cache because an invalidation of their key (or
    /// a gap) arrived while they were read: each one a stale insert prevented.
    pub fills_rejected: u64,
    /// Fills kept out of a shared tier by its lease: a write or invalidation of the key (on any
    /// instance) came while the value was loaded, so the older value was not stored there.
    pub fills_revoked: u64,
    /// Loads not run here because another instance held the key's lease; the value it loaded
    /// answered instead.
    pub lease_waits: u64,
    /// Waits for another instance's lease that ended without its value, after which this
    /// instance loaded itself.
    pub lease_takeovers: u64,
    /// Calls answered with a stale value by fail-safe, because their load failed or timed out.
    pub stale_served: u64,
    /// Loads that passed their soft timeout (the caller got the stale value when there was one).
    pub soft_timeouts: u64,
    /// Loads abandoned at their hard timeout.
    pub hard_timeouts: u64,
    /// Background refreshes started because a hit came near the entry's expiry.
    pub eager_refreshes: u64,
    /// Loads run in the background (eager refreshes, and loads that passed a soft timeout).
    pub background_loads: u64,
    /// Background loads not started because the limit of loads in the background was reached.
    pub background_refused: u64,
    /// Stored values read as misses because a tag of theirs was invalidated after they were
    /// written.
    pub tag_rejected: u64,
    /// Tag invalidation times this instance dropped while still of use because its tag clock
    /// was full (their markers are read again when needed).
    pub tag_times_evicted: u64,
    /// The invalidation bus, when the cache has one.
    pub bus: Option<crate::BusStats>,
}

impl CacheStats {
    /// Builds a snapshot from the load counters and the tiers' snapshots.
    pub fn new(memory: Option<TierStats>, tiers: Vec<TierStats>, loads: &LoadCounters) -> Self {
        Self {
            memory,
            tiers,
            loads: loads.loads.load(Ordering::Relaxed),
            load_errors: loads.load_errors.load(Ordering::Relaxed),
            coalesced: loads.coalesced.load(Ordering::Relaxed),
            negative_hits: loads.negative_hits.load(Ordering::Relaxed),
            fills_rejected: loads.fills_rejected.load(Ordering::Relaxed),
            fills_revoked: loads.fills_revoked.load(Ordering::Relaxed),
            lease_waits: loads.lease_waits.load(Ordering::Relaxed),
            lease_takeovers: loads.lease_takeovers.load(Ordering::Relaxed),
            stale_served: loads.stale_served.load(Ordering::Relaxed),
            soft_timeouts: loads.soft_timeouts.load(Ordering::Relaxed),
            hard_timeouts: loads.hard_timeouts.load(Ordering::Relaxed),
            eager_refreshes: loads.eager_refreshes.load(Ordering::Relaxed),
            background_loads: loads.background_loads.load(Ordering::Relaxed),
            background_refused: loads.background_refused.load(Ordering::Relaxed),
            tag_rejected: loads.tag_rejected.load(Ordering::Relaxed),
            tag_times_evicted: loads.tag_times_evicted.load(Ordering::Relaxed),
            bus: None,
        }
    }

    /// The same snapshot with the bus's stats.
    #[must_use]
    pub fn with_bus(mut self, bus: Option<crate::BusStats>) -> Self {
        self.bus = bus;
        self
    }

    /// The stats of the tier named `name`, the memory tier included.
    pub fn tier(&self, name: &str) -> Option<&TierStats> {
        self.memory
            .iter()
            .chain(&self.tiers)
            .find(|tier| tier.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_snapshot_what_was_bumped() {
        let c = TierCounters::default();
        c.hit();
        c.hit();
        c.miss();
        c.decode_error();
        let s = c.snapshot("l2");
        assert_eq!((s.hits, s.misses, s.decode_errors), (2, 1, 1));
        assert!((s.hit_ratio() - 2.0 / 3.0).abs() < 1e-9);

        let loads = LoadCounters::default();
        loads.load();
        let stats = CacheStats::new(None, vec![s], &loads);
        assert_eq!(stats.loads, 1);
        assert_eq!(stats.tier("l2").map(|t| t.hits), Some(2));
    }
}
