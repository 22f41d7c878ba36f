//! What keeps a cache answering when its source is slow or down: fail-safe and eager refresh.

use std::time::Duration;

/// Fail-safe: keep an entry for a while after it expires, and answer with it when a load fails
/// or times out.
///
/// An entry written with fail-safe lives `max_stale` longer in every tier than its TTL says. It
/// is not served during that window, except as the fallback of a failed or timed-out load. After
/// such a failure the stale value is served, without calling the loader, for the `throttle`
/// duration, so a failing source is not hit by every request.
///
/// ```
/// use std::time::Duration;
/// use tiercache_core::FailSafe;
///
/// let fail_safe = FailSafe::new(Duration::from_secs(3600)).throttle(Duration::from_secs(5));
/// assert_eq!(fail_safe.max_stale_value(), Duration::from_secs(3600));
/// assert!(!FailSafe::disabled().is_enabled());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FailSafe {
    max_stale: Duration,
    throttle: Duration,
}

/// The throttle a [`FailSafe`] has unless set: 10 seconds.
pub const DEFAULT_FAIL_SAFE_THROTTLE: Duration = Duration::from_secs(10);

/// The longest stale window: 2^32 − 1 ms, about 49.7 days, the longest a value's header can state
/// (longer ones are cut to it). A longer window in the stored expiry than in the header would read
/// as fresh life, so both must be cut alike.
pub const MAX_STALE_WINDOW: Duration = Duration::from_millis(u32::MAX as u64);

impl FailSafe {
    /// Keeps expired entries for `max_stale` (at most [`MAX_STALE_WINDOW`]); throttle of
    /// [`DEFAULT_FAIL_SAFE_THROTTLE`].
    pub fn new(max_stale: Duration) -> Self {
        Self {
            max_stale: max_stale.min(MAX_STALE_WINDOW),
            throttle: DEFAULT_FAIL_SAFE_THROTTLE,
        }
    }

    /// No fail-safe: turns a cache-wide default off for one call.
    pub fn disabled() -> Self {
        Self::new(Duration::ZERO)
    }

    /// After a failed load answered with a stale value, that value is served for `throttle`
    /// (never past the end of the stale window) before the loader is tried again.
    #[must_use]
    pub fn throttle(mut self, throttle: Duration) -> Self {
        self.throttle = throttle.min(MAX_STALE_WINDOW);
        self
    }

    /// How long an expired entry is kept as a fallback.
    pub fn max_stale_value(&self) -> Duration {
        self.max_stale
    }

    /// How long a stale fallback is reused after a failed load.
    pub fn throttle_value(&self) -> Duration {
        self.throttle
    }

    /// Whether expired entries are kept at all.
    pub fn is_enabled(&self) -> bool {
        !self.max_stale.is_zero()
    }
}

/// Eager refresh: reload a hot entry in the background before it expires, so callers never wait
/// for its load.
///
/// The first get-or-compute hit after the refresh point answers with the cached value and starts
/// one background load of the key, coalesced with any other load of it in this process. Only
/// get-or-compute refreshes (it has the loader); a plain `get` just reads.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[non_exhaustive]
pub enum EagerRefresh {
    /// Entries are loaded again only after they expire.
    #[default]
    Off,
    /// Refresh once a hit lands in the last `fraction` (0..=1) of the entry's life: `0.1`
    /// refreshes a 10-minute entry after 9 minutes.
    LastFraction(f64),
    /// Probabilistic early expiration ("XFetch", Vattani et al. 2015): the refresh point is the
    /// expiry minus `load_time × beta × −ln(u)` for a uniform random `u`, so slow loads start
    /// earlier and instances that share an entry spread their refreshes instead of reloading
    /// together. `beta` 1.0 is the paper's default; larger refreshes earlier. The random draw is
    /// taken when the entry is stored in this instance, not on every read, so a hit costs
    /// nothing extra. Entries written by `set` (no load time) are not refreshed early.
    XFetch {
        /// How eager: 1.0 is the default of the paper.
        beta: f64,
    },
}

impl EagerRefresh {
    /// How long before the end of an entry's fresh life its refresh starts: `ttl` is the fresh
    /// life it was given, `load_time` how long its load took, `unit_random` a uniform draw in
    /// `[0, 1)`. `None` when this policy does not refresh the entry.
    pub fn lead_time(
        self,
        ttl: Duration,
        load_time: Duration,
        unit_random: f64,
    ) -> Option<Duration> {
        let lead = match self {
            Self::Off => return None,
            Self::LastFraction(fraction) if fraction.is_finite() && fraction > 0.0 => {
                ttl.mul_f64(fraction.min(1.0))
            }
            Self::XFetch { beta } if beta.is_finite() && beta > 0.0 && !load_time.is_zero() => {
                // -ln(1 - u) with u in [0, 1) is an exponential draw in [0, inf).
                let draw = -(1.0 - unit_random.clamp(0.0, 0.999_999)).ln();
                Duration::try_from_secs_f64(load_time.as_secs_f64() * beta * draw).ok()?
            }
            Self::LastFraction(_) | Self::XFetch { .. } => return None,
        };
        (!lead.is_zero()).then_some(lead)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_fraction_leads_by_its_share_of_the_ttl() {
        let ttl = Duration::from_secs(600);
        let lead = EagerRefresh::LastFraction(0.1).lead_time(ttl, Duration::ZERO, 0.5);
        assert_eq!(lead, Some(Duration::from_secs(60)));
        assert_eq!(
            EagerRefresh::LastFraction(0.0).lead_time(ttl, Duration::ZERO, 0.5),
            None
        );
        assert_eq!(
            EagerRefresh::LastFraction(f64::NAN).lead_time(ttl, Duration::ZERO, 0.5),
            None
        );
        assert_eq!(EagerRefresh::Off.lead_time(ttl, Duration::ZERO, 0.5), None);
    }

    #[test]
    fn xfetch_spreads_by_load_time_and_skips_sets() {
        let ttl = Duration::from_secs(600);
        let load = Duration::from_millis(200);
        let xfetch = EagerRefresh::XFetch { beta: 1.0 };
        assert_eq!(xfetch.lead_time(ttl, Duration::ZERO, 0.5), None);
        let leads: Vec<Duration> = (1..100)
            .filter_map(|i| xfetch.lead_time(ttl, load, f64::from(i) / 100.0))
            .collect();
        // The mean of an exponential draw is 1: the mean lead is about one load time.
        let mean = leads.iter().sum::<Duration>() / u32::try_from(leads.len()).unwrap_or(1);
        assert!(mean > load / 2 && mean < load * 2, "{mean:?}");
        assert!(leads.windows(2).all(|pair| pair[0] <= pair[1]));
    }
}
