//! Tags: drop every entry about one tenant or product at once, in every tier and instance,
//! without keeping key lists.
//!
//! The design: per-tag invalidation times, checked on read.
//!
//! - A tagged value carries its tags and the wall-clock time it was written in its header.
//! - `invalidate_tag(tag)` writes a marker `<namespace>:\x01tag:<tag>` holding the time (one
//!   small key per tag, in every tier below L1), removes the tagged entries from this L1 (a walk
//!   over its entries, done when the call returns), and publishes the tag and time on the
//!   bus, where every other instance does the same to its L1 and writes the marker into its
//!   in-process tiers below L1 (which the sender cannot reach).
//! - A tagged value read from a lower tier is a miss when one of its tags was invalidated at or
//!   after its write time. The time of each tag is remembered per instance for the check
//!   interval (or until a bus message or gap changes it); after that it is read again from the
//!   tier the value came from, one batch read for all of the value's tags.
//!
//! Costs: an invalidation is one marker write per tier and one bus message, whatever the number
//! of entries; no entry is touched. A read of a tagged value below L1 costs at most one extra
//! batch read per check interval per tag; reads of untagged values and L1 hits cost nothing.
//! Every marker is a plain key, so this works on a Redis Cluster as it does on one server. The
//! markers live for the tag retention (default one day): an entry that outlives it (TTL plus
//! stale window) could come back after its marker expired. Write times are wall-clock times
//! of different machines, so clocks must agree to well under a second (NTP does this).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use scc::hash_map::Entry;
use tiercache_core::{Bytes, LoadCounters, Namespace, RESERVED_MARK, StoredMeta};

/// The name of a tag marker after the namespace's reserved mark: `tag:<tag>`.
const MARKER_NAME: &str = "tag:";

/// What every tag marker key starts with after the namespace's prefix (the reserved mark, then
/// [`MARKER_NAME`]): how a transport that reports changed keys reports a marker.
pub(crate) const MARKER_PREFIX: &str = "\u{1}tag:";

const _: () = assert!(MARKER_PREFIX.as_bytes()[0] == RESERVED_MARK as u8);

/// How long a tag's invalidation time read from a tier is trusted before it is read again.
pub const DEFAULT_TAG_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How long a tag marker lives in the tiers.
pub const DEFAULT_TAG_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

/// The most tag times one instance keeps. Past it, times no longer of use go first (a "never
/// invalidated" past its check interval, a time older than the tag retention), then the longest
/// known; each of those still of use is counted in
/// [`CacheStats::tag_times_evicted`](tiercache_core::CacheStats::tag_times_evicted). A dropped
/// time costs one marker read when a value with that tag is next read below L1.
pub const TAG_CLOCK_CAPACITY: usize = 100_000;

/// Times no longer of use are swept out once per this many new tags, so a fleet with
/// per-entity tags (`user:{id}`) does not hold every tag it ever checked until the cap.
const SWEEP_EVERY: usize = 4_096;

/// The tag invalidation times this instance knows.
#[derive(Debug)]
pub(crate) struct TagClock {
    known: scc::HashMap<String, Known>,
    /// About how many tags `known` holds (exact after each sweep): `len()` would read the
    /// whole table on every new tag.
    held: AtomicUsize,
    /// New tags since the last sweep.
    added: AtomicUsize,
    capacity: usize,
    counters: Arc<LoadCounters>,
    /// Moves on every forget: a time read from a tier before a forget must not be recorded
    /// after it (it may predate the invalidation the forget was for).
    forgets: AtomicU64,
    check_interval: Duration,
    pub(super) retention: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Known {
    invalidated_at_ms: u64,
    learned: Instant,
    /// A bus message said it (or a time at least as late): not undone by a tier's stale marker.
    from_bus: bool,
}

impl TagClock {
    pub(crate) fn new(
        check_interval: Duration,
        retention: Duration,
        counters: Arc<LoadCounters>,
    ) -> Self {
        Self::with_capacity(check_interval, retention, counters, TAG_CLOCK_CAPACITY)
    }

    fn with_capacity(
        check_interval: Duration,
        retention: Duration,
        counters: Arc<LoadCounters>,
        capacity: usize,
    ) -> Self {
        Self {
            known: scc::HashMap::new(),
            held: AtomicUsize::new(0),
            added: AtomicUsize::new(0),
            capacity: capacity.max(1),
            counters,
            forgets: AtomicU64::new(0),
            check_interval,
            retention,
        }
    }

    /// Notes that `tag` was invalidated at `at_ms` (keeps the later of two times).
    pub(crate) fn record(&self, tag: &str, at_ms: u64) {
        let entry = self.known.entry_sync(tag.to_owned());
        self.note(entry, at_ms, true);
    }

    /// Keeps the later of the time in `entry` and `at_ms`, learned now; sweeps when the clock
    /// has grown enough.
    fn note(&self, entry: Entry<'_, String, Known>, at_ms: u64, from_bus: bool) {
        let now = Instant::now();
        match entry {
            Entry::Occupied(mut occupied) => {
                let known = occupied.get_mut();
                known.invalidated_at_ms = known.invalidated_at_ms.max(at_ms);
                known.learned = now;
                known.from_bus |= from_bus;
            }
            Entry::Vacant(vacant) => {
                // The entry goes (and its bucket lock with it) before a sweep walks the table.
                drop(vacant.insert_entry(Known {
                    invalidated_at_ms: at_ms,
                    learned: now,
                    from_bus,
                }));
                let held = self.held.fetch_add(1, Ordering::Relaxed) + 1;
                let added = self.added.fetch_add(1, Ordering::Relaxed) + 1;
                if held > self.capacity || added >= SWEEP_EVERY {
                    self.sweep();
                }
            }
        }
    }

    /// Drops the times no longer of use; when more than the capacity remain, the longest known
    /// go too, down to three quarters of it (so the next sweep is far off), counted.
    fn sweep(&self) {
        self.added.store(0, Ordering::Relaxed);
        let (check_interval, retention) = (self.check_interval, self.retention);
        let mut left = 0;
        self.known.retain_sync(|_, known| {
            let age = known.learned.elapsed();
            // A "never invalidated" proves nothing once it is no longer trusted; a time older
            // than the retention belongs to markers that have expired from the tiers.
            let useful = if known.invalidated_at_ms == 0 {
                age < check_interval
            } else {
                age < retention
            };
            left += usize::from(useful);
            useful
        });
        if left > self.capacity {
            let excess = left - self.capacity * 3 / 4;
            let mut learned = Vec::with_capacity(left);
            self.known.iter_sync(|_, known| {
                learned.push(known.learned);
                true
            });
            if let Some(index) = excess.checked_sub(1).filter(|&i| i < learned.len()) {
                let (_, &mut cutoff, _) = learned.select_nth_unstable(index);
                let mut evicted = 0;
                self.known.retain_sync(|_, known| {
                    let keep = evicted >= excess || known.learned > cutoff;
                    evicted += usize::from(!keep);
                    keep
                });
                left -= evicted;
                self.counters
                    .tag_times_evicted(u64::try_from(evicted).unwrap_or(u64::MAX));
            }
        }
        self.held.store(left, Ordering::Relaxed);
    }

    /// Where the forgets are now: taken before a tier's markers are read, handed to
    /// [`record_read`](Self::record_read) after.
    pub(super) fn epoch(&self) -> u64 {
        self.forgets.load(Ordering::SeqCst)
    }

    /// Notes the time of `tag` read from a tier's marker, unless a forget came since `epoch`
    /// was taken (before the read): then the marker may have changed after it was read, and the
    /// next check reads it again. The check is made under the entry's lock, which a forget's
    /// removal also takes after it moves the epoch.
    pub(super) fn record_read(&self, tag: &str, at_ms: u64, epoch: u64) {
        let entry = self.known.entry_sync(tag.to_owned());
        if self.forgets.load(Ordering::SeqCst) != epoch {
            return;
        }
        self.note(entry, at_ms, false);
    }

    /// Forgets the times read from tiers' markers, keeping those bus messages said: after a gap
    /// whose flush waited, a marker read meanwhile from an in-process tier (not yet emptied) may
    /// be older than the invalidation the lost message carried.
    pub(crate) fn forget_reads(&self) {
        self.forgets.fetch_add(1, Ordering::SeqCst);
        let mut left = 0;
        self.known.retain_sync(|_, known| {
            left += usize::from(known.from_bus);
            known.from_bus
        });
        self.held.store(left, Ordering::Relaxed);
    }

    /// Forgets what is known of `tag`, so the next check reads its marker.
    pub(crate) fn forget(&self, tag: &str) {
        self.forgets.fetch_add(1, Ordering::SeqCst);
        if self.known.remove_sync(tag).is_some() {
            // Saturating: `held` is a trigger, not a count anything relies on.
            let _ = self
                .held
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                    Some(held.saturating_sub(1))
                });
        }
    }

    /// Forgets every tag (after a bus gap: a tag message may have been lost).
    pub(crate) fn forget_all(&self) {
        self.forgets.fetch_add(1, Ordering::SeqCst);
        self.known.clear_sync();
        self.held.store(0, Ordering::Relaxed);
    }

    /// How many tag times this instance holds (reads the whole table).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.known.len()
    }

    /// Whether this instance knows that a tag of a value with `meta` was invalidated at or after
    /// the value was written. Any known time proves it, trusted or not: a tag's time only grows,
    /// so an old time at or after the write is still at or after it. Reads no tier: unknown tags
    /// answer no.
    pub(crate) fn known_invalidated(&self, meta: &StoredMeta) -> bool {
        meta.tags.iter().any(|tag| {
            self.known
                .read_sync(tag, |_, known| known.invalidated_at_ms)
                .is_some_and(|at| meta.written_at_ms <= at)
        })
    }

    /// The invalidation time of `tag`, when known recently enough to trust.
    pub(super) fn trusted(&self, tag: &str) -> Option<u64> {
        self.known
            .read_sync(tag, |_, known| *known)
            .filter(|known| known.learned.elapsed() < self.check_interval)
            .map(|known| known.invalidated_at_ms)
    }
}

/// The stored key of `tag`'s marker: an internal key of `namespace`, which no user key can
/// produce.
#[must_use]
pub(crate) fn marker_key(namespace: &Namespace, tag: &str) -> String {
    namespace.reserved(&format!("{MARKER_NAME}{tag}"))
}

/// Reads a marker's value: the invalidation time as decimal text. Anything else reads as
/// "invalidated at the end of time", so a corrupt marker hides the tag's entries rather than
/// serving them.
pub(super) fn marker_time(bytes: &Bytes) -> u64 {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use tiercache_core::CacheStats;

    use super::*;

    #[test]
    fn markers_read_as_times_and_garbage_hides_entries() {
        assert_eq!(
            marker_time(&Bytes::from_static(b"1790000000000")),
            1_790_000_000_000
        );
        assert_eq!(marker_time(&Bytes::from_static(b"\xff")), u64::MAX);
        assert_eq!(marker_time(&Bytes::from_static(b"-1")), u64::MAX);
    }

    #[test]
    fn a_known_time_past_its_trust_still_proves_a_value_stale() {
        let clock = TagClock::new(
            Duration::from_millis(20),
            DEFAULT_TAG_RETENTION,
            Arc::default(),
        );
        clock.record("t", 100);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(
            clock.trusted("t"),
            None,
            "no longer trusted as the latest time"
        );
        let mut meta = StoredMeta::default();
        meta.tags = vec!["t".to_owned()];
        meta.written_at_ms = 50;
        assert!(
            clock.known_invalidated(&meta),
            "written before a known invalidation"
        );
        meta.written_at_ms = 150;
        assert!(!clock.known_invalidated(&meta));
    }

    #[test]
    fn a_time_read_before_a_forget_is_not_recorded_after_it() {
        let clock = TagClock::new(
            Duration::from_secs(1),
            DEFAULT_TAG_RETENTION,
            Arc::default(),
        );
        let epoch = clock.epoch();
        clock.forget("t");
        clock.record_read("t", 0, epoch);
        assert_eq!(clock.trusted("t"), None);
        clock.record_read("t", 7, clock.epoch());
        assert_eq!(clock.trusted("t"), Some(7));
    }

    #[test]
    fn forgetting_reads_keeps_what_the_bus_said() {
        let clock = TagClock::new(
            Duration::from_secs(60),
            Duration::from_secs(60),
            Arc::default(),
        );
        clock.record("said", 10);
        clock.record_read("read", 20, clock.epoch());
        clock.record_read("said", 30, clock.epoch());
        clock.forget_reads();
        assert_eq!(
            clock.trusted("said"),
            Some(30),
            "a bus time, raised by a read"
        );
        assert_eq!(clock.trusted("read"), None);
        assert_eq!(clock.len(), 1);
    }

    #[test]
    fn known_times_keep_the_latest_and_expire_from_trust() {
        let clock = TagClock::new(
            Duration::from_millis(50),
            DEFAULT_TAG_RETENTION,
            Arc::default(),
        );
        clock.record("t", 10);
        clock.record("t", 5);
        assert_eq!(clock.trusted("t"), Some(10));
        clock.forget("t");
        assert_eq!(clock.trusted("t"), None);
        clock.record("u", 1);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(clock.trusted("u"), None);
    }

    #[test]
    fn the_clock_stays_under_its_capacity_and_counts_what_it_drops() {
        let counters = Arc::new(LoadCounters::default());
        let clock = TagClock::with_capacity(
            Duration::from_secs(60),
            DEFAULT_TAG_RETENTION,
            Arc::clone(&counters),
            1_000,
        );
        for id in 0..10_000_u64 {
            clock.record(&format!("user:{id}"), id + 1);
            assert!(clock.len() <= 1_000, "{} tags held", clock.len());
        }
        let snapshot = CacheStats::new(None, Vec::new(), &counters);
        assert!(snapshot.tag_times_evicted >= 9_000, "{snapshot:?}");
        // The latest stay: they are the likeliest to matter to a message still on its way.
        assert_eq!(clock.trusted("user:9999"), Some(10_000));
        assert_eq!(clock.trusted("user:0"), None);
    }

    #[test]
    fn times_no_longer_of_use_are_swept_out_without_counting() {
        let counters = Arc::new(LoadCounters::default());
        let clock = TagClock::new(
            Duration::from_millis(10),
            DEFAULT_TAG_RETENTION,
            Arc::clone(&counters),
        );
        // Checked and found never invalidated: of use only while trusted.
        for id in 0..SWEEP_EVERY {
            clock.record_read(&format!("checked:{id}"), 0, clock.epoch());
        }
        clock.record("invalidated", 5);
        std::thread::sleep(Duration::from_millis(20));
        for id in 0..SWEEP_EVERY {
            clock.record_read(&format!("later:{id}"), 0, clock.epoch());
        }
        assert!(clock.len() <= SWEEP_EVERY + 1, "{} tags held", clock.len());
        let mut meta = StoredMeta::default();
        meta.tags = vec!["invalidated".to_owned()];
        meta.written_at_ms = 1;
        assert!(clock.known_invalidated(&meta), "a real time is kept");
        let snapshot = CacheStats::new(None, Vec::new(), &counters);
        assert_eq!(snapshot.tag_times_evicted, 0);
    }
}
