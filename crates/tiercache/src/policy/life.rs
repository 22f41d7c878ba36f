//! The instants of one entry in L1: fresh until, refreshed from, kept until; and what goes into
//! L1 with a value.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tiercache_core::{EagerRefresh, StoredMeta, scale_ttl, unit_random};

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

    /// An entry served as it is until `until`, then kept as a fallback until `keep_until`, never
    /// refreshed early: a kept copy put back in front.
    pub(crate) fn serving_until(until: Instant, keep_until: Instant) -> Self {
        Self {
            fresh_until: until,
            refresh_at: None,
            keep_until: keep_until.max(until),
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

/// What goes into L1 with a value besides the value: its life, its weight and its tags.
#[derive(Debug, Clone)]
pub(crate) struct Placement {
    pub(crate) life: Life,
    /// The encoded size, when known.
    #[cfg_attr(
        not(feature = "moka"),
        expect(dead_code, reason = "without moka there is no L1 to weigh entries in")
    )]
    pub(crate) weight: Option<usize>,
    #[cfg_attr(
        not(feature = "moka"),
        expect(dead_code, reason = "without moka there is no L1 to tag entries in")
    )]
    pub(crate) tags: Option<Arc<[String]>>,
}

impl Placement {
    /// The placement of a copy of a stored value with header `meta`, read at `read_at` and
    /// fresh for `fresh` from then (already scaled for L1), never kept past `expires_at`, in L1
    /// with TTL scale `scale`.
    pub(crate) fn of_copy(
        meta: &StoredMeta,
        read_at: Instant,
        fresh: Duration,
        expires_at: Instant,
        scale: f64,
        weight: usize,
        eager: EagerRefresh,
    ) -> Self {
        // An entry without a recorded TTL (raw bytes, an older header) refreshes by what is left
        // of it.
        let ttl = if meta.ttl.is_zero() {
            fresh
        } else {
            scale_ttl(meta.ttl, scale)
        };
        let mut life = Life::new(
            read_at + fresh,
            ttl,
            meta.load_time,
            meta.stale_window,
            eager,
        );
        life.keep_until = life.keep_until.min(expires_at);
        Self {
            life,
            weight: Some(weight),
            tags: tags_of(meta),
        }
    }
}

/// The tags of a stored value's header, shared.
pub(crate) fn tags_of(meta: &StoredMeta) -> Option<Arc<[String]>> {
    (!meta.tags.is_empty()).then(|| Arc::from(meta.tags.as_slice()))
}
