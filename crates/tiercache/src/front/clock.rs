//! The invalidation clock: an invalidation that arrives while a value is being read or loaded
//! wins over that value.
//!
//! A fill (a promotion from a lower tier or a loader's result) takes a [`Stamp`] before it starts
//! reading. Every invalidation bumps a counter first and removes entries second; a fill stores
//! its value first and checks its stamp second, undoing the store if the stamp moved. Whichever
//! order the two interleave in, the old value does not survive in L1: either the fill sees the
//! bump and removes its own insert, or the bump came after the fill's check, so the
//! invalidation's removal runs after the insert and removes it.
//!
//! Keys are hashed into a fixed number of counters, so an invalidation of one key can make a fill
//! of an unrelated key that shares its counter skip L1 once; that costs a miss, never staleness.
//! Prefix invalidations and clears bump a counter every key checks.

use std::{
    hash::{BuildHasher, RandomState},
    sync::atomic::{AtomicU64, Ordering},
};

const SHARDS: usize = 1024;

/// Counts invalidations, per key shard and for the whole cache.
#[derive(Debug)]
pub(super) struct InvalidationClock {
    everything: AtomicU64,
    shards: Box<[AtomicU64]>,
    hasher: RandomState,
}

/// What the clock read before a fill started. Only the clock makes one, so an L1 insert that
/// needs a stamp cannot be written without reading the clock first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    everything: u64,
    shard: usize,
    key: u64,
}

impl InvalidationClock {
    pub(super) fn new() -> Self {
        Self {
            everything: AtomicU64::new(0),
            shards: (0..SHARDS).map(|_| AtomicU64::new(0)).collect(),
            hasher: RandomState::new(),
        }
    }

    fn shard_of(&self, key: &str) -> usize {
        // Only the low bits matter, so truncating the hash on 32-bit targets is harmless.
        #[expect(
            clippy::cast_possible_truncation,
            reason = "the shard index needs only low bits"
        )]
        let hash = self.hasher.hash_one(key) as usize;
        hash % SHARDS
    }

    /// Reads the clock for `key` before a fill reads or loads it.
    pub(super) fn stamp(&self, key: &str) -> Stamp {
        let shard = self.shard_of(key);
        Stamp {
            everything: self.everything.load(Ordering::SeqCst),
            shard,
            key: self.shards[shard].load(Ordering::SeqCst),
        }
    }

    /// Records that `key` changed. Call before removing or overwriting its entries.
    pub(super) fn invalidate_key(&self, key: &str) {
        self.shards[self.shard_of(key)].fetch_add(1, Ordering::SeqCst);
    }

    /// Records that any key may have changed (prefix invalidation, clear, a bus gap).
    pub(super) fn invalidate_everything(&self) {
        self.everything.fetch_add(1, Ordering::SeqCst);
    }

    /// Whether nothing that concerns the stamped key was invalidated since the stamp.
    pub(super) fn unchanged_since(&self, stamp: Stamp) -> bool {
        self.everything.load(Ordering::SeqCst) == stamp.everything
            && self.shards[stamp.shard].load(Ordering::SeqCst) == stamp.key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_and_global_invalidations_move_the_stamp() {
        let clock = InvalidationClock::new();
        let stamp = clock.stamp("a");
        assert!(clock.unchanged_since(stamp));
        clock.invalidate_key("a");
        assert!(!clock.unchanged_since(stamp));

        let stamp = clock.stamp("a");
        clock.invalidate_everything();
        assert!(!clock.unchanged_since(stamp));
    }

    #[test]
    fn most_other_keys_do_not_move_the_stamp() {
        let clock = InvalidationClock::new();
        let moved = (0..100)
            .filter(|i| {
                let stamp = clock.stamp("a");
                clock.invalidate_key(&format!("other:{i}"));
                !clock.unchanged_since(stamp)
            })
            .count();
        // Each invalidation lands in "a"'s shard with probability 1/1024.
        assert!(
            moved <= 5,
            "{moved} of 100 unrelated invalidations hit the stamp"
        );
    }
}
