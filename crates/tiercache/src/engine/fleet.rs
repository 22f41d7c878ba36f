//! One loader per key across the fleet: a load that finds another instance holding the key's
//! lease waits for that instance's value instead of running its own loader, asking the shared
//! tiers again every poll interval, under the call's timeouts. When the holder's lease goes away
//! without a value (the holder died, its lease expired, a write or invalidation revoked it), the
//! next ask takes a lease for this instance, which then loads.

use std::{
    any::Any,
    sync::Arc,
    time::{Duration, Instant},
};

use tiercache_core::{Bytes, Codec, DecodeError, Decoded, Result};

use super::{
    Engine,
    compute::{Job, timeout_error},
};
use crate::{
    common::Lookup,
    front::Stamp,
    stack::{Leases, Leasing},
};

/// How a wait for another instance's lease ended.
pub(super) enum Awaited<T> {
    /// The holder's value (or cached "not found") arrived, read under these leases and after
    /// this stamp: a caller that loads over a cached "not found" fills under them.
    Found(Lookup<T>, Leases, Stamp),
    /// No value came: load under these leases (taken by the last ask, or none where another
    /// instance still holds one after the wait's bound), and the stamp taken before that ask
    /// (an invalidation during the wait must not be undone by this load's fill).
    Load(Leases, Stamp),
    /// A timeout ended the wait: the stale fallback, or the timeout error.
    GaveUp(Result<Option<Arc<T>>>),
}

impl<C: Codec> Engine<C> {
    /// Waits for the instance holding `key`'s lease (with `left` to run) to store its value.
    /// The wait is bounded by the holder's lease (and one more, should another instance take
    /// over meanwhile), and by the call's timeouts: past the soft timeout the stale fallback
    /// answers when there is one; past the hard timeout, the fallback or a timeout error.
    pub(super) async fn wait_for_holder<T, D>(
        &self,
        key: &str,
        decode: &D,
        left: Duration,
        job: &Job<T>,
        leasing: Option<Duration>,
    ) -> Awaited<T>
    where
        T: Any + Send + Sync,
        D: Fn(&Bytes) -> Result<Decoded<T>, DecodeError> + Sync,
    {
        self.counters.lease_wait();
        let started = Instant::now();
        let poll = self.defaults.leases.poll;
        let bound = left + leasing.unwrap_or(left) + poll;
        let soft = job.policy.soft_timeout.filter(|_| job.fallback.is_some());
        let hard = job.policy.hard_timeout;
        tracing::debug!(
            key,
            ?left,
            "another instance holds the lease: waiting for its value"
        );
        loop {
            let waited = started.elapsed();
            if let Some(fallback) = &job.fallback
                && (soft.is_some_and(|soft| waited >= soft)
                    || hard.is_some_and(|hard| waited >= hard))
            {
                self.counters.soft_timeout();
                return Awaited::GaveUp(Ok(Some(self.answer_stale(key, fallback))));
            }
            if hard.is_some_and(|hard| waited >= hard) {
                self.counters.hard_timeout();
                return Awaited::GaveUp(Err(timeout_error(key)));
            }
            let mut nap = poll;
            if let Some(deadline) = soft.or(hard) {
                nap = nap
                    .min(deadline.saturating_sub(waited))
                    .max(Duration::from_micros(100));
            }
            tokio::time::sleep(nap).await;
            let eager = job.policy.eager_refresh;
            let reads = leasing.map_or(Leasing::Off, Leasing::Load);
            let stamp = self.front.stamp(key);
            let (found, _, leases) = self.read_below(key, stamp, decode, eager, reads).await;
            match found {
                Lookup::Miss => {}
                found => return Awaited::Found(found, leases, stamp),
            }
            if leases.held_by_other().is_none() {
                self.counters.lease_takeover();
                tracing::debug!(key, "the lease holder left no value: loading here");
                return Awaited::Load(leases, stamp);
            }
            if started.elapsed() >= bound {
                self.counters.lease_takeover();
                tracing::warn!(key, waited = ?started.elapsed(), "waited the lease out: loading here, without storing into the tier another instance still holds");
                return Awaited::Load(leases, stamp);
            }
        }
    }
}
