//! How long entries live: named presets and per-call options.

use std::{
    hash::{BuildHasher, RandomState},
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use crate::{EagerRefresh, FailSafe};

/// A named time-to-live preset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum CacheStrategy {
    /// 10 seconds: values that change all the time.
    RealTime,
    /// 5 minutes.
    ShortTerm,
    /// 1 hour.
    MediumTerm,
    /// 3 hours.
    LongTerm,
    /// Any TTL.
    Custom(Duration),
    /// The cache's default TTL: 5 minutes unless the builder set another.
    #[default]
    Default,
}

impl CacheStrategy {
    /// The TTL of the preset (a custom one cut to [`MAX_TTL`]); `None` for
    /// [`CacheStrategy::Default`], which the cache resolves.
    pub fn ttl(self) -> Option<Duration> {
        match self {
            Self::RealTime => Some(Duration::from_secs(10)),
            Self::ShortTerm => Some(Duration::from_secs(5 * 60)),
            Self::MediumTerm => Some(Duration::from_secs(60 * 60)),
            Self::LongTerm => Some(Duration::from_secs(3 * 60 * 60)),
            Self::Custom(ttl) => Some(clamp_duration(ttl)),
            Self::Default => None,
        }
    }

    /// The TTL, with [`CacheStrategy::Default`] resolved to `default_ttl` (cut to [`MAX_TTL`]).
    pub fn ttl_or(self, default_ttl: Duration) -> Duration {
        self.ttl().unwrap_or(clamp_duration(default_ttl))
    }
}

/// The default TTL of a cache: 5 minutes.
pub const DEFAULT_TTL: Duration = Duration::from_secs(5 * 60);

/// The longest TTL (and the longest of every other duration setting): 2^32 − 1 ms, about 49.7
/// days, the longest a value's header can state. Longer ones, `Duration::MAX` included, are cut
/// to it, so no setting overflows a clock or a multiplication.
pub const MAX_TTL: Duration = Duration::from_millis(u32::MAX as u64);

/// `duration` cut to [`MAX_TTL`].
pub fn clamp_duration(duration: Duration) -> Duration {
    duration.min(MAX_TTL)
}

/// `ttl` times a tier's TTL `scale`, cut to [`MAX_TTL`]; a scale that is not a positive finite
/// number (which the cache's builder rejects) gives `ttl` itself.
pub fn scale_ttl(ttl: Duration, scale: f64) -> Duration {
    if !(scale.is_finite() && scale > 0.0) {
        return clamp_duration(ttl);
    }
    Duration::try_from_secs_f64(clamp_duration(ttl).as_secs_f64() * scale)
        .map_or(MAX_TTL, clamp_duration)
}

/// Per-call options: the strategy, jitter, negative caching, tags, and the resilience settings
/// (fail-safe, loader timeouts, eager refresh) that override the cache's defaults for this call.
///
/// Every method that takes options accepts a bare [`CacheStrategy`] too.
///
/// ```
/// use std::time::Duration;
/// use tiercache_core::{CacheStrategy, EagerRefresh, EntryOptions, FailSafe};
///
/// let opts = EntryOptions::new(CacheStrategy::ShortTerm)
///     .jitter(0.1)
///     .negative_ttl(Duration::from_secs(30))
///     .tags(["tenant:7", "product:42"])
///     .fail_safe(FailSafe::new(Duration::from_secs(3600)))
///     .soft_timeout(Duration::from_millis(100))
///     .hard_timeout(Duration::from_secs(2))
///     .eager_refresh(EagerRefresh::LastFraction(0.1));
/// assert_eq!(opts.strategy(), CacheStrategy::ShortTerm);
/// assert_eq!(opts.tags_value(), ["tenant:7", "product:42"]);
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct EntryOptions {
    strategy: CacheStrategy,
    jitter: f64,
    negative_ttl: Option<Duration>,
    tags: Vec<String>,
    fail_safe: Option<FailSafe>,
    soft_timeout: Option<Duration>,
    hard_timeout: Option<Duration>,
    eager_refresh: Option<EagerRefresh>,
    wait_for_lease: Option<bool>,
}

impl EntryOptions {
    /// Options with `strategy`, no jitter and no negative caching.
    pub fn new(strategy: CacheStrategy) -> Self {
        Self {
            strategy,
            ..Self::default()
        }
    }

    /// Tags the entry: [`invalidate_tag`](https://docs.rs/tiercache) with any of them drops it
    /// from every tier and instance. At most 255 tags of at most 255 bytes each, no control
    /// characters. Default: none.
    #[must_use]
    pub fn tags<I, S>(mut self, tags: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.tags = tags.into_iter().map(Into::into).collect();
        self
    }

    /// Fail-safe for this call (see [`FailSafe`]); [`FailSafe::disabled`] turns the cache's
    /// default off. Default: the cache's.
    #[must_use]
    pub fn fail_safe(mut self, fail_safe: FailSafe) -> Self {
        self.fail_safe = Some(fail_safe);
        self
    }

    /// After this long, a get-or-compute that has a stale fallback answers with it and lets the
    /// load go on in the background, where it updates the cache when it finishes. Without a
    /// fallback the caller keeps waiting (up to the hard timeout). `Duration::MAX` turns the
    /// cache's default off. Default: the cache's.
    #[must_use]
    pub fn soft_timeout(mut self, timeout: Duration) -> Self {
        self.soft_timeout = Some(timeout);
        self
    }

    /// After this long, a get-or-compute gives up on its load (the loader's future is dropped)
    /// and fails with [`Error::Timeout`](crate::Error::Timeout), or answers with the stale
    /// fallback when fail-safe has one. `Duration::MAX` turns the cache's default off.
    /// Default: the cache's.
    #[must_use]
    pub fn hard_timeout(mut self, timeout: Duration) -> Self {
        self.hard_timeout = Some(timeout);
        self
    }

    /// Eager refresh for this call (see [`EagerRefresh`]). Default: the cache's.
    #[must_use]
    pub fn eager_refresh(mut self, eager_refresh: EagerRefresh) -> Self {
        self.eager_refresh = Some(eager_refresh);
        self
    }

    /// Whether a get-or-compute that finds another instance holding the key's lease (loading
    /// it) waits for that instance's value instead of running its own loader. `false` makes
    /// this call load at once; its value then answers the call but is not stored in the tier
    /// whose lease another instance holds. Default: the cache's (on).
    #[must_use]
    pub fn wait_for_lease(mut self, wait: bool) -> Self {
        self.wait_for_lease = Some(wait);
        self
    }

    /// Whether this call waits for another instance's lease, if it says.
    pub fn wait_for_lease_value(&self) -> Option<bool> {
        self.wait_for_lease
    }

    /// The tags.
    pub fn tags_value(&self) -> &[String] {
        &self.tags
    }

    /// The fail-safe setting of this call, if it sets one.
    pub fn fail_safe_value(&self) -> Option<FailSafe> {
        self.fail_safe
    }

    /// The soft timeout of this call, if it sets one.
    pub fn soft_timeout_value(&self) -> Option<Duration> {
        self.soft_timeout
    }

    /// The hard timeout of this call, if it sets one.
    pub fn hard_timeout_value(&self) -> Option<Duration> {
        self.hard_timeout
    }

    /// The eager refresh policy of this call, if it sets one.
    pub fn eager_refresh_value(&self) -> Option<EagerRefresh> {
        self.eager_refresh
    }

    /// Shortens each entry's TTL by a random fraction of up to `fraction` (clamped to 0..=1), so
    /// that entries written together do not all expire together. Never lengthens it.
    /// Default: 0 (no jitter).
    #[must_use]
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self
    }

    /// How long a "not found" from a loader is cached by the optional form of get-or-compute
    /// (at most [`MAX_TTL`]). Default: `None` (a "not found" is not cached).
    #[must_use]
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = Some(clamp_duration(ttl));
        self
    }

    /// The strategy.
    pub fn strategy(&self) -> CacheStrategy {
        self.strategy
    }

    /// The jitter fraction.
    pub fn jitter_fraction(&self) -> f64 {
        self.jitter
    }

    /// The negative-caching TTL, if any.
    pub fn negative_ttl_value(&self) -> Option<Duration> {
        self.negative_ttl
    }

    /// The TTL for one write: the strategy's TTL (with `Default` resolved to `default_ttl`),
    /// shortened by the jitter.
    pub fn effective_ttl(&self, default_ttl: Duration) -> Duration {
        apply_jitter(self.strategy.ttl_or(default_ttl), self.jitter)
    }

    /// The TTL for a negative entry, jittered like a value's; `None` when negative caching is off.
    pub fn effective_negative_ttl(&self) -> Option<Duration> {
        self.negative_ttl.map(|ttl| apply_jitter(ttl, self.jitter))
    }
}

impl From<CacheStrategy> for EntryOptions {
    fn from(strategy: CacheStrategy) -> Self {
        Self::new(strategy)
    }
}

fn apply_jitter(ttl: Duration, fraction: f64) -> Duration {
    if fraction <= 0.0 {
        return ttl;
    }
    ttl.mul_f64(1.0 - fraction * unit_random())
}

/// A uniform number in [0, 1). Jitter needs spread, not cryptographic quality, so this hashes a
/// counter with the standard library's randomly keyed hasher instead of pulling in a RNG crate.
pub fn unit_random() -> f64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let bits = RandomState::new().hash_one(n) >> 11;
    // 53 random bits scaled into [0, 1).
    bits as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_have_the_documented_ttls() {
        assert_eq!(CacheStrategy::RealTime.ttl(), Some(Duration::from_secs(10)));
        assert_eq!(
            CacheStrategy::ShortTerm.ttl(),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            CacheStrategy::MediumTerm.ttl(),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            CacheStrategy::LongTerm.ttl(),
            Some(Duration::from_secs(10800))
        );
        assert_eq!(
            CacheStrategy::Custom(Duration::from_millis(5)).ttl(),
            Some(Duration::from_millis(5))
        );
        assert_eq!(
            CacheStrategy::Default.ttl_or(DEFAULT_TTL),
            Duration::from_secs(300)
        );
    }

    #[test]
    fn jitter_spreads_ttls_without_exceeding_them() {
        let opts = EntryOptions::new(CacheStrategy::LongTerm).jitter(0.5);
        let ttls: Vec<Duration> = (0..200).map(|_| opts.effective_ttl(DEFAULT_TTL)).collect();
        let max = Duration::from_secs(10800);
        assert!(ttls.iter().all(|t| *t <= max && *t >= max / 2));
        let distinct: std::collections::HashSet<_> = ttls.iter().collect();
        assert!(
            distinct.len() > 150,
            "only {} distinct TTLs",
            distinct.len()
        );
    }

    #[test]
    fn no_jitter_means_exact_ttl_and_bad_fractions_are_tamed() {
        let exact = EntryOptions::new(CacheStrategy::RealTime);
        assert_eq!(exact.effective_ttl(DEFAULT_TTL), Duration::from_secs(10));
        assert_eq!(
            EntryOptions::default().jitter(f64::NAN).jitter_fraction(),
            0.0
        );
        assert_eq!(EntryOptions::default().jitter(7.0).jitter_fraction(), 1.0);
    }
}
