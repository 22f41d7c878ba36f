//! Loads handed to the background: an eager refresh started by a hit near the entry's end, and
//! a load that passed its soft timeout. The background task concludes the flight as the caller
//! would have; it reaches the engine through a weak handle, so it never keeps a dropped cache
//! alive (and the cache aborts it when dropped).

use std::{future::Future, sync::Arc, time::Instant};

use serde::{Serialize, de::DeserializeOwned};
use tiercache_core::Codec;

use super::{
    Engine,
    compute::{Flight, Job, LoadFuture, LoaderError, Place, finish, start, timeout_error},
};
use crate::load::{BackgroundPermit, Deadlines, Join, Timed, run_timed};

impl<C: Codec> Engine<C> {
    /// Starts one background load of `key` because a hit came near the entry's end, unless a
    /// load of the key is already in flight (which then is the refresh) or the background is
    /// full.
    pub(super) async fn refresh_in_background<T, F, Fut, E>(
        self: &Arc<Self>,
        key: &str,
        job: Job<T>,
        loader: F,
    ) where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<Option<T>, E>> + Send + 'static,
        E: Into<LoaderError> + 'static,
    {
        let stamp = self.front.stamp(key);
        let joined = self
            .flights
            .join(key, stamp, |flight| self.front.is_current(*flight))
            .await;
        let Join::Lead(leader) = joined else {
            return;
        };
        let Some(permit) = self.background.reserve() else {
            self.counters.background_refused();
            return;
        };
        self.counters.eager_refresh();
        self.counters.load();
        tracing::debug!(key, "refreshing in the background before the entry expires");
        let job_policy = job.policy;
        let flight = Flight {
            leader: Some(leader),
            key: key.to_owned(),
            job,
            stamp,
            started: Instant::now(),
            leases: None,
        };
        let deadlines = Deadlines::after(None, job_policy.hard_timeout);
        // The refresh takes its leases in the background, before its loader reads the source.
        let lease_first = job_policy
            .lease_ttl
            .filter(|_| self.stack.has_shared_levels());
        self.continue_in_background(permit, flight, start(loader), deadlines, lease_first);
    }

    /// Hands a running load to a background task, which concludes it (fills the cache, answers
    /// the waiters) when it ends, or gives up at the hard deadline. With `lease_first` (a load
    /// not started yet), the task first takes leases of that TTL on the shared tiers.
    pub(super) fn continue_in_background<T>(
        self: &Arc<Self>,
        permit: BackgroundPermit,
        mut flight: Flight<T>,
        running: LoadFuture<T>,
        deadlines: Deadlines,
        lease_first: Option<std::time::Duration>,
    ) where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        self.counters.background_load();
        // NOTE: a loader that never returns would hold its flight and a background slot for
        // good: past the bound it is dropped like one past its hard timeout.
        let deadlines = deadlines.at_most(self.defaults.background_timeout);
        let engine = Arc::downgrade(self);
        self.background.spawn(permit, async move {
            if let Some(ttl) = lease_first {
                let Some(engine) = engine.upgrade() else {
                    return;
                };
                flight.leases = Some(engine.stack.lease_key(&flight.key, ttl).await);
            }
            let result = match run_timed(running, deadlines).await {
                Timed::Done(result) => result,
                Timed::Soft(_) | Timed::Hard => {
                    if let Some(engine) = engine.upgrade() {
                        engine.counters.hard_timeout();
                    }
                    tracing::warn!(
                        key = flight.key,
                        "background load passed its hard timeout; nothing cached"
                    );
                    finish(flight.leader, Err(timeout_error(&flight.key)));
                    return;
                }
            };
            // The cache may be gone: then there is nothing to fill.
            let Some(engine) = engine.upgrade() else {
                return;
            };
            // NOTE: the outcome went to the waiters and into the cache; errors were logged.
            let _concluded = engine.conclude(flight, result, Place::Background).await;
        });
    }
}
