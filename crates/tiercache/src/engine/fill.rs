//! What a finished load leaves behind: the loaded value in every tier, under the flight's
//! stamp; or, when the load failed, the stale fallback as the answer, put back in L1 for the
//! fail-safe throttle under the stamp taken when it was read.

use std::{any::Any, sync::Arc, time::Instant};

use serde::Serialize;
use tiercache_core::{Bytes, Codec, EntryOptions, Result};

use super::{Engine, Fallback};
use crate::{
    common::Scope,
    front::Stamp,
    policy::{Life, Placement, Policy, WriteSpec},
    stack::Reach,
};

impl<C: Codec> Engine<C> {
    /// A stale fallback as the answer of a caller whose wait for a load failed or timed out
    /// (counted); the load's leader is the one that puts it back in L1.
    pub(super) fn answer_stale<T>(&self, key: &str, fallback: &Fallback<T>) -> Arc<T> {
        self.counters.stale_served();
        tracing::warn!(
            key,
            "answering with a stale value: the load failed or timed out"
        );
        Arc::clone(&fallback.copy.value)
    }

    /// Stores what a loader returned in every tier, top-down, guarded by the stamp the flight
    /// took before it read anything: once an invalidation of the key has come, nothing more is
    /// stored, and what was stored meanwhile is undone. A `None` is stored as a negative entry
    /// only when the options ask for negative caching. Tier failures are counted and logged,
    /// not returned: the caller has its value.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] when the value cannot be encoded; nothing is stored then.
    pub(super) async fn fill<T: Serialize + Any + Send + Sync>(
        &self,
        key: &str,
        loaded: Option<Arc<T>>,
        options: &EntryOptions,
        spec: WriteSpec,
        stamp: Stamp,
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
        let gate = || self.front.enter(stamp);
        let written = self
            .stack
            .write(key, bytes.as_ref(), &spec, Some(&gate), Reach::Every)
            .await;
        if written.raced() {
            // A read of this instance may have copied the undone store into L1 meanwhile.
            self.drop_here(Scope::Key(key)).await;
        }
        // NOTE: failures were counted and logged per tier; the caller has its value.
        let _tier_failure = written.into_result();
        if !self.front.is_current(stamp) {
            self.counters.fill_rejected();
        }
        Ok(())
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
