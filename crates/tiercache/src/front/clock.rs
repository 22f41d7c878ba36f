//! The invalidation clock: an invalidation that arrives while a value is being read or loaded
//! wins over that value.
//!
//! A fill (a promotion from a lower tier, a loader's result, a kept copy put back in front)
//! takes a [`Stamp`] before it reads. To store, it [enters](InvalidationClock::enter): it counts
//! itself as storing in its key's shard, then checks that the clock has not moved since its
//! stamp, and stores while it holds the [`FillPass`]; after the store it checks again and undoes
//! the store if the clock moved. An invalidation moves the clock first, then
//! [drains](InvalidationClock::drain): it waits until no fill that entered before is still
//! storing in the shards it covers, and only then removes entries.
//!
//! Both sides write before they read (the fill its count, the invalidation the clock), with
//! sequentially consistent atomics, so at least one sees the other: either the fill sees the
//! move and stores nothing, or the invalidation sees the fill and waits for its store to end,
//! so the removal that follows removes what was stored. No store lands after an invalidation
//! returned, however the fill's task is scheduled (suspended between its check and its store,
//! say). The wait is bounded ([`DRAIN_LIMIT`]) so that fills that never stop coming cannot hold
//! an invalidation up: past it the invalidation goes on, and a store that lands after its
//! removal is still undone by the fill's own second check.
//!
//! Keys are hashed into a fixed number of counters, so an invalidation of one key can make a fill
//! of an unrelated key that shares its counter skip L1 once; that costs a miss, never staleness.
//! Prefix invalidations and clears bump a counter every key checks.

use std::{
    hash::BuildHasher,
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use crate::common::FillPass;

const SHARDS: usize = 1024;

/// The longest an invalidation waits for fills that were storing when it moved the clock.
/// Such a store is one in-memory insert (or a write to a tier in this process), so the wait is
/// normally a few microseconds; the bound only matters under a flood of fills of one shard.
pub(crate) const DRAIN_LIMIT: Duration = Duration::from_millis(20);

/// Counts invalidations, per key shard and for the whole cache, and the fills storing now.
#[derive(Debug)]
pub(super) struct InvalidationClock {
    everything: AtomicU64,
    shards: Box<[Shard]>,
    /// foldhash rather than SipHash: each L1 miss stamps its key, and SipHash of a short key is
    /// about 200 instructions. Seeded per clock, so which keys share a counter is not known
    /// outside the process.
    hasher: foldhash::quality::RandomState,
}

#[derive(Debug, Default)]
struct Shard {
    invalidations: AtomicU64,
    storing: AtomicU32,
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
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            hasher: foldhash::quality::RandomState::default(),
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
            key: self.shards[shard].invalidations.load(Ordering::SeqCst),
        }
    }

    /// Leave to store for the fill that took `stamp`, or `None` when an invalidation that
    /// concerns its key came since.
    pub(super) fn enter(&self, stamp: Stamp) -> Option<FillPass<'_>> {
        let storing = &self.shards[stamp.shard].storing;
        storing.fetch_add(1, Ordering::SeqCst);
        let pass = FillPass::counted(storing);
        self.unchanged_since(stamp).then_some(pass)
    }

    /// Waits (up to [`DRAIN_LIMIT`]) until no fill that entered before now is still storing:
    /// in `key`'s shard, or in every shard for `None`. Call after moving the clock, before
    /// removing entries.
    pub(super) async fn drain(&self, key: Option<&str>) {
        let deadline = Instant::now() + DRAIN_LIMIT;
        let shards = match key {
            Some(key) => std::slice::from_ref(&self.shards[self.shard_of(key)]),
            None => &self.shards[..],
        };
        for shard in shards {
            while shard.storing.load(Ordering::SeqCst) != 0 {
                if Instant::now() >= deadline {
                    tracing::warn!(
                        limit = ?DRAIN_LIMIT,
                        "fills were still storing when an invalidation's wait for them ended; going on (each undoes its store when it sees the invalidation)"
                    );
                    return;
                }
                tokio::task::yield_now().await;
            }
        }
    }

    /// Records that `key` changed. Call before removing or overwriting its entries.
    pub(super) fn invalidate_key(&self, key: &str) {
        self.shards[self.shard_of(key)]
            .invalidations
            .fetch_add(1, Ordering::SeqCst);
    }

    /// Records that any key may have changed (prefix invalidation, clear, a bus gap).
    pub(super) fn invalidate_everything(&self) {
        self.everything.fetch_add(1, Ordering::SeqCst);
    }

    /// Whether nothing that concerns the stamped key was invalidated since the stamp.
    pub(super) fn unchanged_since(&self, stamp: Stamp) -> bool {
        self.everything.load(Ordering::SeqCst) == stamp.everything
            && self.shards[stamp.shard]
                .invalidations
                .load(Ordering::SeqCst)
                == stamp.key
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_drain_waits_for_a_store_let_in_before_the_clock_moved() {
        let clock = std::sync::Arc::new(InvalidationClock::new());
        let stamp = clock.stamp("k");
        let pass = clock.enter(stamp).expect("nothing moved yet");
        clock.invalidate_key("k");
        assert!(clock.enter(stamp).is_none(), "a moved stamp gets no pass");
        let drain = tokio::spawn({
            let clock = std::sync::Arc::clone(&clock);
            async move { clock.drain(Some("k")).await }
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(
            !drain.is_finished(),
            "the drain ended while a store was running"
        );
        drop(pass);
        tokio::time::timeout(Duration::from_secs(5), drain)
            .await
            .expect("the drain ends once the store ended")
            .expect("no panic");
    }

    #[tokio::test]
    async fn a_drain_gives_up_at_its_limit() {
        let clock = InvalidationClock::new();
        let _stuck = clock.enter(clock.stamp("k")).expect("nothing moved yet");
        clock.invalidate_everything();
        let started = Instant::now();
        clock.drain(None).await;
        assert!(started.elapsed() >= DRAIN_LIMIT);
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
