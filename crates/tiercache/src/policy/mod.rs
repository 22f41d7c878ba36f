//! Policies: plain data and pure functions, resolved once per call. The cache's defaults
//! overridden by the call's options ([`Policy`]), what a write stores besides the value
//! ([`WriteSpec`]), the instants an entry lives by ([`Life`]), when hits are promoted
//! ([`Promotion`]) and how each tier is treated ([`TierOptions`]).

mod lease;
mod life;
mod promotion;
mod tier_options;
mod write_spec;

use std::time::Duration;

pub use lease::{DEFAULT_LEASE_POLL, DEFAULT_LEASE_TTL, LeaseOptions};
pub(crate) use life::{Life, Placement, tags_of};
pub(crate) use promotion::Gate;
pub use promotion::Promotion;
pub use tier_options::TierOptions;
use tiercache_core::{EagerRefresh, EntryOptions, FailSafe, StoredMeta};
pub(crate) use write_spec::WriteSpec;

/// The cache-wide defaults the builder sets.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Defaults {
    /// The TTL of [`CacheStrategy::Default`](tiercache_core::CacheStrategy::Default).
    pub(crate) ttl: Duration,
    pub(crate) fail_safe: FailSafe,
    pub(crate) soft_timeout: Option<Duration>,
    pub(crate) hard_timeout: Option<Duration>,
    pub(crate) eager_refresh: EagerRefresh,
    pub(crate) leases: LeaseOptions,
    /// The longest a load may run in the background (an eager refresh, a load past its soft
    /// timeout) when its call sets no shorter hard timeout.
    pub(crate) background_timeout: Duration,
}

/// The default bound on a load running in the background: 30 seconds.
pub const DEFAULT_BACKGROUND_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for Defaults {
    fn default() -> Self {
        Self {
            ttl: tiercache_core::DEFAULT_TTL,
            fail_safe: FailSafe::disabled(),
            soft_timeout: None,
            hard_timeout: None,
            eager_refresh: EagerRefresh::Off,
            leases: LeaseOptions::new(),
            background_timeout: DEFAULT_BACKGROUND_TIMEOUT,
        }
    }
}

/// What one call does about failures, slowness and expiry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    /// Fail-safe, when enabled.
    pub(crate) fail_safe: Option<FailSafe>,
    pub(crate) soft_timeout: Option<Duration>,
    pub(crate) hard_timeout: Option<Duration>,
    pub(crate) eager_refresh: EagerRefresh,
    /// The lease TTL of a load's read, when leases are on.
    pub(crate) lease_ttl: Option<Duration>,
    /// Whether a load waits for another instance's lease.
    pub(crate) wait_for_lease: bool,
}

impl Defaults {
    /// The defaults, overridden by what `options` sets.
    pub(crate) fn resolve(&self, options: &EntryOptions) -> Policy {
        let timeout = |set: Option<Duration>, default| {
            set.or(default).filter(|timeout| *timeout != Duration::MAX)
        };
        Policy {
            fail_safe: Some(options.fail_safe_value().unwrap_or(self.fail_safe))
                .filter(FailSafe::is_enabled),
            soft_timeout: timeout(options.soft_timeout_value(), self.soft_timeout),
            hard_timeout: timeout(options.hard_timeout_value(), self.hard_timeout),
            eager_refresh: options.eager_refresh_value().unwrap_or(self.eager_refresh),
            // NOTE: a lease outlives the longest load the call allows, or a slow load would lose
            // it and its value would never reach the shared tier.
            lease_ttl: self.leases.enabled.then(|| {
                let hard = timeout(options.hard_timeout_value(), self.hard_timeout);
                hard.map_or(self.leases.ttl, |hard| {
                    self.leases
                        .ttl
                        .max(hard.saturating_add(Duration::from_secs(1)))
                })
            }),
            wait_for_lease: options.wait_for_lease_value().unwrap_or(self.leases.wait),
        }
    }

    /// The spec of a write with `options` whose value took `load_time` to load (zero for a
    /// `set`).
    pub(crate) fn write_spec(&self, options: &EntryOptions, load_time: Duration) -> WriteSpec {
        WriteSpec::new(options, self.resolve(options), self.ttl, load_time)
    }
}

/// When a value that took `load_time` to load began loading, in whole milliseconds since the
/// Unix epoch, rounded down. A loaded value is as old as its load's start: a tag invalidation
/// during the load must reject it on read, as a lease rejects it in the shared tier. The
/// subtraction is made before rounding: rounding both sides first could put the start up to a
/// millisecond late, past a tag invalidation made just after the source was read.
fn load_start_ms(load_time: Duration) -> u64 {
    let now = std::time::SystemTime::now();
    let start = now.checked_sub(load_time).unwrap_or(std::time::UNIX_EPOCH);
    start
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

impl Policy {
    /// The same policy with no stale window and no eager refresh.
    pub(crate) fn without_keeping(self) -> Self {
        Self {
            fail_safe: None,
            eager_refresh: EagerRefresh::Off,
            ..self
        }
    }

    /// How long entries written under this policy are kept after they stop being fresh.
    pub(crate) fn stale_window(&self) -> Duration {
        self.fail_safe
            .map_or(Duration::ZERO, |fail_safe| fail_safe.max_stale_value())
    }

    /// The header of a value written now under this policy.
    pub(crate) fn meta(&self, ttl: Duration, load_time: Duration, tags: &[String]) -> StoredMeta {
        let mut meta = StoredMeta::default();
        meta.ttl = ttl;
        meta.stale_window = self.stale_window();
        meta.load_time = load_time;
        if !tags.is_empty() {
            meta.written_at_ms = load_start_ms(load_time);
            meta.tags = tags.to_vec();
        }
        meta
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use super::load_start_ms;

    fn ms(at: SystemTime) -> u64 {
        u64::try_from(at.duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap()
    }

    /// A load's start is never stated later than it was: with whole milliseconds subtracted
    /// from the rounded clock, a load of 1.999 ms read as starting up to a millisecond late.
    #[test]
    fn a_load_start_is_never_rounded_late() {
        let load = Duration::from_micros(1_999);
        for _ in 0..1_000 {
            let stated = load_start_ms(load);
            let latest = ms(SystemTime::now() - load);
            assert!(
                stated <= latest,
                "stated {stated} > latest possible {latest}"
            );
        }
    }
}
