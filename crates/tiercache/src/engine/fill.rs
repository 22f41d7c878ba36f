//! What a finished load leaves behind: the loaded value in every tier, under the flight's
//! stamp; or, when the load failed, the stale fallback as the answer, put back in L1 for the
//! fail-safe throttle under the stamp taken when it was read.

use std::{any::Any, sync::Arc, time::Instant};

use serde::Serialize;
use tiercache_core::{Bytes, Codec, EntryOptions, Result};

use super::{Engine, Fallback};
use crate::events::CacheEvent;
use crate::{
    common::Scope,
    front::Stamp,
    policy::{Life, Placement, Policy, WriteSpec},
    stack::{Leases, Reach},
};

impl<C: Codec> Engine<C> {
    /// A stale fallback as the answer of a caller whose wait for a load failed or timed out
    /// (counted); the load's leader is the one that puts it back in L1.
    pub(super) fn answer_stale<T>(&self, key: &str, fallback: &Fallback<T>) -> Arc<T> {
        self.counters.stale_served();
        self.events.emit(|| CacheEvent::StaleServed {
            key: key.to_owned(),
        });
        tracing::warn!(
            key,
            "answering with a stale value: the load failed or timed out"
        );
        Arc::clone(&fallback.copy.value)
    }

    /// Stores what a loader returned in every tier, top-down, guarded by the stamp the flight
    /// took before it read anything: once an invalidation of the key has come, nothing more is
    /// stored, and what was stored meanwhile is undone. Shared tiers are written only under the
    /// leases the flight's read took (`leases`; `None` when leases are off), so a write of the key
    /// by any instance during the load wins there too. L1 is written here; the tiers below in
    /// the background when there is room (the caller and its waiters need not wait for a
    /// network round trip, nor a frozen server's timeout), inline otherwise. A `None` is stored
    /// as a negative entry only when the options ask for negative caching. Tier failures are
    /// counted and logged, not returned: the caller has its value.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] when the value cannot be encoded; nothing is stored then.
    pub(super) async fn fill<T: Serialize + Any + Send + Sync>(
        self: &Arc<Self>,
        key: &str,
        loaded: Option<Arc<T>>,
        options: &EntryOptions,
        spec: WriteSpec,
        stamp: Stamp,
        leases: Option<Leases>,
    ) -> Result<()> {
        let (spec, bytes) = match &loaded {
            Some(value) => {
                let bytes = self.encode_for_stack(key, value.as_ref(), &spec)?;
                (spec, bytes)
            }
            None => match options.effective_negative_ttl() {
                Some(ttl) => {
                    let spec = spec.negative(ttl);
                    let bytes = (!self.stack.is_empty())
                        .then(|| self.envelope.encode_negative_with(&spec.meta()));
                    (spec, bytes)
                }
                None => return Ok(()),
            },
        };
        let now = Instant::now();
        if let Some(scale) = self.front.ttl_scale() {
            let placement = spec.placement(scale, bytes.as_ref().map(Bytes::len), now);
            self.front.insert(stamp, key, loaded, placement).await;
        }
        let Some(bytes) = bytes else {
            return Ok(());
        };
        // NOTE: only with an L1, where the value is already in place: without one, this
        // instance's next read must find it in the stack.
        if self.front.ttl_scale().is_some()
            && self.stack.has_shared_levels()
            && let Some(permit) = self.background.reserve()
        {
            let engine = Arc::downgrade(self);
            let key = key.to_owned();
            self.background.spawn(permit, async move {
                // The cache may be gone: then there is nothing to fill.
                if let Some(engine) = engine.upgrade() {
                    engine.fill_below(&key, &bytes, &spec, stamp, leases).await;
                }
            });
            return Ok(());
        }
        self.fill_below(key, &bytes, &spec, stamp, leases).await;
        Ok(())
    }

    /// The tiers below L1 of a fill (see [`fill`](Self::fill)).
    async fn fill_below(
        &self,
        key: &str,
        bytes: &Bytes,
        spec: &WriteSpec,
        stamp: Stamp,
        mut leases: Option<Leases>,
    ) {
        let gate = || self.front.enter(stamp);
        let written = self
            .stack
            .write(
                key,
                Some(bytes),
                spec,
                Some(&gate),
                Reach::Every,
                leases.as_mut(),
            )
            .await;
        if written.raced() {
            // A read of this instance may have copied the undone store into L1 meanwhile; or a
            // newer write of the key is in a shared tier, so the loaded value is older than it.
            self.drop_here(Scope::Key(key)).await;
        }
        // NOTE: failures were counted and logged per tier; the caller has its value.
        let _tier_failure = written.into_result();
        if !self.front.is_current(stamp) {
            self.counters.fill_rejected();
            self.events.emit(|| CacheEvent::FillRejected {
                key: key.to_owned(),
            });
        }
    }

    /// Answers with a stale fallback after a failed or abandoned load, and puts it back in L1's
    /// front for the fail-safe throttle (never past its stale window), so the failing source is
    /// not asked again by every call meanwhile; unless its key was invalidated since the copy
    /// was read.
    pub(super) async fn serve_stale<T: Send + Sync + 'static>(
        &self,
        key: &str,
        fallback: &Fallback<T>,
        policy: Policy,
    ) -> Arc<T> {
        self.counters.stale_served();
        self.events.emit(|| CacheEvent::StaleServed {
            key: key.to_owned(),
        });
        let copy = &fallback.copy;
        if let Some(fail_safe) = policy.fail_safe {
            // Served as it is for the throttle, then a fallback again (stale) until its end.
            let until = (Instant::now() + fail_safe.throttle_value()).min(copy.keep_until);
            let placement = Placement {
                life: Life::serving_until(until, copy.keep_until),
                weight: None,
                tags: copy.tags.clone(),
            };
            self.front
                .insert(
                    fallback.stamp,
                    key,
                    Some(Arc::clone(&copy.value)),
                    placement,
                )
                .await;
        }
        Arc::clone(&copy.value)
    }
}
