//! What a write stores besides the value: how long it is fresh, how long it took to load, the
//! call's resilience policy (its stale window and eager refresh) and its tags; and the lives that
//! gives the value in each tier.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tiercache_core::{Bytes, Entry, EntryOptions, StoredMeta, scale_ttl};

use super::{Life, Placement, Policy};

/// The spec of one write (a `set`, or a fill after a load).
#[derive(Debug, Clone)]
pub(crate) struct WriteSpec {
    pub(crate) ttl: Duration,
    pub(crate) load_time: Duration,
    pub(crate) policy: Policy,
    pub(crate) tags: Option<Arc<[String]>>,
}

impl WriteSpec {
    /// The spec of a write with `options`, loaded in `load_time` (zero for a set).
    pub(crate) fn new(
        options: &EntryOptions,
        policy: Policy,
        default_ttl: Duration,
        load_time: Duration,
    ) -> Self {
        let tags = options.tags_value();
        Self {
            ttl: options.effective_ttl(default_ttl),
            load_time,
            policy,
            tags: (!tags.is_empty()).then(|| Arc::from(tags)),
        }
    }

    /// The spec of a cached "not found" for `ttl`: neither kept as a fallback nor refreshed
    /// early; it keeps its tags, so a tag invalidation drops it too.
    pub(crate) fn negative(self, ttl: Duration) -> Self {
        Self {
            ttl,
            policy: self.policy.without_keeping(),
            ..self
        }
    }

    /// The same spec for raw bytes, which have no header: no tags, no stale window.
    pub(crate) fn raw(self) -> Self {
        Self {
            policy: self.policy.without_keeping(),
            tags: None,
            ..self
        }
    }

    /// The header metadata of the value.
    pub(crate) fn meta(&self) -> StoredMeta {
        let tags = self.tags.as_deref().unwrap_or_default();
        self.policy.meta(self.ttl, self.load_time, tags)
    }

    /// The entry a tier with TTL scale `scale` stores for `bytes` written at `now`: fresh for
    /// the TTL times the scale, kept for the stale window after that.
    pub(crate) fn entry(&self, bytes: Bytes, scale: f64, now: Instant) -> Entry {
        let fresh = scale_ttl(self.ttl, scale);
        Entry::expiring_at(bytes, now + fresh + self.policy.stale_window())
    }

    /// Where the value goes in an L1 with TTL scale `scale`, written at `now`.
    pub(crate) fn placement(&self, scale: f64, weight: Option<usize>, now: Instant) -> Placement {
        let fresh = scale_ttl(self.ttl, scale);
        let life = Life::new(
            now + fresh,
            fresh,
            self.load_time,
            self.policy.stale_window(),
            self.policy.eager_refresh,
        );
        Placement {
            life,
            weight,
            tags: self.tags.clone(),
        }
    }
}
