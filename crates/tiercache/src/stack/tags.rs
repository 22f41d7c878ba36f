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
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use tiercache_core::{Bytes, StoredMeta};

/// What every tag marker key starts with (after the namespace). The control character keeps
/// markers apart from user keys, which may not contain one.
pub(crate) const MARKER_PREFIX: &str = "\u{1}tag:";

/// How long a tag's invalidation time read from a tier is trusted before it is read again.
pub const DEFAULT_TAG_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How long a tag marker lives in the tiers.
pub const DEFAULT_TAG_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

/// The tag invalidation times this instance knows.
#[derive(Debug)]
pub(crate) struct TagClock {
    known: scc::HashMap<String, Known>,
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
}

impl TagClock {
    pub(crate) fn new(check_interval: Duration, retention: Duration) -> Self {
        Self {
            known: scc::HashMap::new(),
            forgets: AtomicU64::new(0),
            check_interval,
            retention,
        }
    }

    /// Notes that `tag` was invalidated at `at_ms` (keeps the later of two times).
    pub(crate) fn record(&self, tag: &str, at_ms: u64) {
        let now = Instant::now();
        self.known
            .entry_sync(tag.to_owned())
            .and_modify(|known| {
                known.invalidated_at_ms = known.invalidated_at_ms.max(at_ms);
                known.learned = now;
            })
            .or_insert(Known {
                invalidated_at_ms: at_ms,
                learned: now,
            });
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
        let now = Instant::now();
        let entry = self.known.entry_sync(tag.to_owned());
        if self.forgets.load(Ordering::SeqCst) != epoch {
            return;
        }
        entry
            .and_modify(|known| {
                known.invalidated_at_ms = known.invalidated_at_ms.max(at_ms);
                known.learned = now;
            })
            .or_insert(Known {
                invalidated_at_ms: at_ms,
                learned: now,
            });
    }

    /// Forgets what is known of `tag`, so the next check reads its marker.
    pub(crate) fn forget(&self, tag: &str) {
        self.forgets.fetch_add(1, Ordering::SeqCst);
        self.known.remove_sync(tag);
    }

    /// Forgets every tag (after a bus gap: a tag message may have been lost).
    pub(crate) fn forget_all(&self) {
        self.forgets.fetch_add(1, Ordering::SeqCst);
        self.known.clear_sync();
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

/// The marker key of `tag`, before the namespace.
#[must_use]
pub(crate) fn marker_key(tag: &str) -> String {
    format!("{MARKER_PREFIX}{tag}")
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
        let clock = TagClock::new(Duration::from_millis(20), DEFAULT_TAG_RETENTION);
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
        let clock = TagClock::new(Duration::from_secs(1), DEFAULT_TAG_RETENTION);
        let epoch = clock.epoch();
        clock.forget("t");
        clock.record_read("t", 0, epoch);
        assert_eq!(clock.trusted("t"), None);
        clock.record_read("t", 7, clock.epoch());
        assert_eq!(clock.trusted("t"), Some(7));
    }

    #[test]
    fn known_times_keep_the_latest_and_expire_from_trust() {
        let clock = TagClock::new(Duration::from_millis(50), DEFAULT_TAG_RETENTION);
        clock.record("t", 10);
        clock.record("t", 5);
        assert_eq!(clock.trusted("t"), Some(10));
        clock.forget("t");
        assert_eq!(clock.trusted("t"), None);
        clock.record("u", 1);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(clock.trusted("u"), None);
    }
}
