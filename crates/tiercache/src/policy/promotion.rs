//! When a hit below a tier is copied up into it: [`Promotion`], the policy a user picks, and
//! [`Gate`], the per-tier state that applies it.

use std::{
    hash::{BuildHasher, RandomState},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

/// When a hit in a lower tier is copied into a tier above it.
///
/// A scan of cold keys (a report, a batch job, a crawler) reads each key once; promoting every
/// such hit would push the hot set out of L1. The stricter policies keep one-off reads below.
///
/// ```
/// use std::time::Duration;
/// use tiercache::{Promotion, TierOptions};
///
/// let l1 = TierOptions::new().promotion(Promotion::SecondHitWithin(Duration::from_secs(60)));
/// # let _ = l1;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Promotion {
    /// Every hit below is copied up (the default).
    Always,
    /// One hit in `n` below is copied up (every n-th, counted per tier): a key read often gets
    /// up soon, a key read once rarely does. `OneIn(1)` is `Always`; `OneIn(0)` is `Never`.
    OneIn(u32),
    /// A key is copied up on its second hit below within the window, so a key read once never
    /// is. The first hits are remembered in a fixed table of 4096 slots (a key whose slot was
    /// taken by another key meanwhile starts over).
    SecondHitWithin(Duration),
    /// Nothing is copied up.
    Never,
}

/// Slots of the second-hit table: a power of two, so a slot is the hash's low bits.
const SLOTS: usize = 4096;

/// The per-tier state of a [`Promotion`] policy. Lock-free; one atomic per decision.
#[derive(Debug)]
pub(crate) struct Gate {
    policy: Promotion,
    counter: AtomicU64,
    /// Second-hit table: per slot, the key's 32-bit fingerprint and the first hit's time (ms
    /// since `started`, wrapping), packed in one word; 0 is empty.
    seen: Box<[AtomicU64]>,
    hasher: RandomState,
    started: Instant,
}

impl Gate {
    pub(crate) fn new(policy: Promotion) -> Self {
        let slots = match policy {
            Promotion::SecondHitWithin(_) => SLOTS,
            _ => 0,
        };
        Self {
            policy,
            counter: AtomicU64::new(0),
            seen: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            hasher: RandomState::new(),
            started: Instant::now(),
        }
    }

    /// Whether this lower-tier hit of `key` is copied into the tier.
    pub(crate) fn admit(&self, key: &str) -> bool {
        match self.policy {
            Promotion::Always => true,
            Promotion::Never | Promotion::OneIn(0) => false,
            Promotion::OneIn(n) => self
                .counter
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(u64::from(n)),
            Promotion::SecondHitWithin(window) => self.second_hit(key, window),
        }
    }

    fn second_hit(&self, key: &str, window: Duration) -> bool {
        let hash = self.hasher.hash_one(key);
        // Low bits pick the slot; the high half is the fingerprint (never 0, so 0 means empty).
        #[expect(
            clippy::cast_possible_truncation,
            reason = "a slot index needs the low bits only"
        )]
        let slot = &self.seen[(hash as usize) & (SLOTS - 1)];
        let fingerprint = (hash >> 32).max(1);
        #[expect(
            clippy::cast_possible_truncation,
            reason = "times wrap; only differences matter"
        )]
        let now = self.started.elapsed().as_millis() as u32;
        let window_ms = u32::try_from(window.as_millis()).unwrap_or(u32::MAX);
        let previous = slot.load(Ordering::Relaxed);
        #[expect(clippy::cast_possible_truncation, reason = "the low half is the time")]
        let first_hit = previous as u32;
        if previous >> 32 == fingerprint && now.wrapping_sub(first_hit) <= window_ms {
            // Second hit in time: admit, and forget it so a third hit starts over.
            slot.store(0, Ordering::Relaxed);
            return true;
        }
        slot.store((fingerprint << 32) | u64::from(now), Ordering::Relaxed);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn always_never_and_one_in_n() {
        assert!(Gate::new(Promotion::Always).admit("k"));
        assert!(!Gate::new(Promotion::Never).admit("k"));
        let gate = Gate::new(Promotion::OneIn(4));
        let admitted = (0..100).filter(|_| gate.admit("k")).count();
        assert_eq!(admitted, 25);
    }

    #[test]
    fn second_hit_within_the_window_only() {
        let gate = Gate::new(Promotion::SecondHitWithin(Duration::from_secs(60)));
        assert!(!gate.admit("a"), "first hit");
        assert!(gate.admit("a"), "second hit");
        assert!(!gate.admit("a"), "counting starts over");
        // One read each of many keys (a scan) admits none of them.
        let admitted = (0..1_000)
            .filter(|i| gate.admit(&format!("scan:{i}")))
            .count();
        assert_eq!(admitted, 0);

        let quick = Gate::new(Promotion::SecondHitWithin(Duration::from_millis(1)));
        assert!(!quick.admit("b"));
        std::thread::sleep(Duration::from_millis(5));
        assert!(!quick.admit("b"), "too late: a new first hit");
    }
}
