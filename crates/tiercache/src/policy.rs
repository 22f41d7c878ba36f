//! The resilience settings of one call (the cache's defaults, overridden by the call's
//! options), and the instants they give an entry: fresh until, refreshed from, kept until.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tiercache_core::{EagerRefresh, EntryOptions, FailSafe, StoredMeta, unit_random};

/// The cache-wide defaults the builder sets.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Defaults {
    pub(crate) fail_safe: FailSafe,
    pub(crate) soft_timeout: Option<Duration>,
    pub(crate) hard_timeout: Option<Duration>,
    pub(crate) eager_refresh: EagerRefresh,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            fail_safe: FailSafe::disabled(),
            soft_timeout: None,
            hard_timeout: None,
            eager_refresh: EagerRefresh::Off,
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
        }
    }
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
            meta.written_at_ms = tiercache_core::unix_millis();
            meta.tags = tags.to_vec();
        }
        meta
    }
}

/// The instants of one entry in L1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Life {
    /// Served as fresh until then.
    pub(crate) fresh_until: Instant,
    /// A get-or-compute hit from then on starts a background refresh.
    pub(crate) refresh_at: Option<Instant>,
    /// Kept (as a fail-safe fallback) until then; `fresh_until` when there is no stale window.
    pub(crate) keep_until: Instant,
}

impl Life {
    /// An entry fresh until `fresh_until`, of a value whose full fresh life is `ttl` and whose
    /// load took `load_time`, kept `stale_window` longer, refreshed early as `eager` says.
    pub(crate) fn new(
        fresh_until: Instant,
        ttl: Duration,
        load_time: Duration,
        stale_window: Duration,
        eager: EagerRefresh,
    ) -> Self {
        // Only XFetch draws a random number; the common case (off) costs nothing.
        let draw = if matches!(eager, EagerRefresh::XFetch { .. }) {
            unit_random()
        } else {
            0.0
        };
        // A lead reaching before the clock's origin means "refresh at once".
        let refresh_at = eager
            .lead_time(ttl, load_time, draw)
            .map(|lead| fresh_until.checked_sub(lead).unwrap_or_else(Instant::now));
        Self {
            fresh_until,
            refresh_at: refresh_at.filter(|at| *at < fresh_until),
            keep_until: fresh_until + stale_window,
        }
    }

    /// When the L1 entry that answers hits directly expires: at the refresh point, so the first
    /// hit after it takes the slower path that starts the refresh, or when it stops being fresh.
    #[cfg_attr(
        not(feature = "moka"),
        expect(dead_code, reason = "without moka there is no L1 front entry")
    )]
    pub(crate) fn front_until(&self) -> Instant {
        self.refresh_at.unwrap_or(self.fresh_until)
    }

    /// Whether L1 also keeps a copy past the front entry's expiry (for a refresh or fail-safe).
    #[cfg_attr(
        not(feature = "moka"),
        expect(dead_code, reason = "without moka there is no L1 copy to keep")
    )]
    pub(crate) fn needs_kept(&self) -> bool {
        self.refresh_at.is_some() || self.keep_until > self.fresh_until
    }

    /// The same life, no longer than `cap` (the L1 max age): a capped entry is not kept past it.
    pub(crate) fn capped(self, cap: Option<Instant>) -> Self {
        let Some(cap) = cap else {
            return self;
        };
        Self {
            fresh_until: self.fresh_until.min(cap),
            refresh_at: self.refresh_at.filter(|at| *at < cap),
            keep_until: self.keep_until.min(cap),
        }
    }
}

/// A value that is past its fresh life but still kept: the fallback of a failed load.
#[derive(Debug)]
pub(crate) struct Stale<T> {
    pub(crate) value: Arc<T>,
    /// The end of its stale window.
    pub(crate) keep_until: Instant,
    pub(crate) tags: Option<Arc<[String]>>,
}
