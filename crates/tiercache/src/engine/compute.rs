//! get-or-compute for one key: L1; a kept copy still fresh answers and refreshes in the
//! background; otherwise one flight per key reads the stack and runs the loader under its
//! timeouts, falls back to a stale copy when it fails, and fills every tier under the stamp the
//! flight took before it read anything.

use std::{
    any::Any,
    future::Future,
    panic::AssertUnwindSafe,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::FutureExt;
use serde::{Serialize, de::DeserializeOwned};
use tiercache_core::{Bytes, Codec, EntryOptions, Error, Result, validate_key, validate_tags};

use super::{Engine, Fallback, adaptive::Adaptive, fleet::Awaited};
use crate::events::CacheEvent;
use crate::{
    common::Lookup,
    front::{Behind, FrontRead, Stamp},
    load::{Deadlines, Join, Leader, Outcome, Timed, Waiter, run_timed},
    observe,
    policy::Policy,
    stack::{Leases, Leasing},
};

/// Whether a cached "not found" answers the call (the optional form) or is loaded over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Negatives {
    Answer,
    LoadOver,
}

/// A loader's error, erased.
pub(super) type LoaderError = Box<dyn std::error::Error + Send + Sync>;
/// What a loader's future ends with: its answer, or the panic it unwound with.
pub(super) type Loaded<T> = std::thread::Result<std::result::Result<Option<T>, LoaderError>>;
/// A running load, boxed so it can move into a background task.
pub(super) type LoadFuture<T> = Pin<Box<dyn Future<Output = Loaded<T>> + Send>>;

/// One get-or-compute call's settings, and the stale copy it can fall back to.
pub(super) struct Job<T> {
    pub(super) options: EntryOptions,
    pub(super) policy: Policy,
    pub(super) negatives: Negatives,
    pub(super) fallback: Option<Fallback<T>>,
    /// The exchange with a loader that chooses its value's options or is handed the cached
    /// copy; `None` for a plain loader.
    pub(super) adaptive: Option<Arc<Adaptive<T>>>,
}

/// One flight's load: what its outcome is settled with.
pub(super) struct Flight<T> {
    pub(super) leader: Option<Leader<Stamp>>,
    pub(super) key: String,
    pub(super) job: Job<T>,
    /// Taken before anything was read for the flight; every fill of it is guarded by it.
    pub(super) stamp: Stamp,
    pub(super) started: Instant,
    /// The leases the flight's read took on the shared tiers; `None` when leases are off.
    pub(super) leases: Option<Leases>,
}

/// Where a load's outcome is settled: in the caller (a panic goes on in the caller) or in a
/// background task (a panic is logged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Place {
    Caller,
    Background,
}

/// What a waiter got from the leader.
enum Waited<T> {
    Value(Arc<T>),
    NotFound,
    /// A value of another type.
    Other,
}

pub(super) fn finish(leader: Option<Leader<Stamp>>, outcome: Outcome) {
    if let Some(leader) = leader {
        leader.finish(outcome);
    }
}

pub(super) fn erased<T: Send + Sync + 'static>(
    value: Option<Arc<T>>,
) -> Option<Arc<dyn Any + Send + Sync>> {
    value.map(|value| value as Arc<dyn Any + Send + Sync>)
}

/// The error of a load that passed its hard timeout.
pub(super) fn timeout_error(key: &str) -> Error {
    Error::Timeout {
        what: "loader".to_owned(),
        key: Some(key.to_owned()),
    }
}

/// Starts the loader inside a boxed future that catches its panic.
pub(super) fn start<T, F, Fut, E>(loader: F) -> LoadFuture<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = std::result::Result<Option<T>, E>> + Send + 'static,
    E: Into<LoaderError> + 'static,
{
    Box::pin(AssertUnwindSafe(async move { loader().await.map_err(Into::into) }).catch_unwind())
}

impl<C: Codec> Engine<C> {
    /// get-or-compute: L1, then (boxed, off the hit path) everything else.
    ///
    /// # Errors
    ///
    /// As [`Cache::get_or_compute`](crate::Cache::get_or_compute).
    ///
    /// The options are turned into [`EntryOptions`] only after an L1 miss: a hit does not build
    /// them (from a `CacheStrategy`, say) and moves only what the caller passed.
    pub(crate) async fn compute<T, O, F, Fut, E>(
        self: &Arc<Self>,
        key: &str,
        options: O,
        negatives: Negatives,
        adaptive: Option<Arc<Adaptive<T>>>,
        loader: F,
    ) -> Result<Option<Arc<T>>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        O: Into<EntryOptions>,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<Option<T>, E>> + Send + 'static,
        E: Into<LoaderError> + 'static,
    {
        let past_deadline = match self.front.lookup::<T>(key).await {
            FrontRead::Hit(value) => {
                self.events.emit(|| CacheEvent::Hit {
                    key: key.to_owned(),
                });
                return Ok(Some(value));
            }
            FrontRead::Negative if negatives == Negatives::Answer => {
                self.answer_negative();
                self.events.emit(|| CacheEvent::Hit {
                    key: key.to_owned(),
                });
                return Ok(None);
            }
            FrontRead::Negative => {
                self.front.count_negative(false);
                false
            }
            FrontRead::Encoded(encoded) => {
                let decode = |bytes: &Bytes| self.envelope.decode::<T>(bytes);
                // Boxed: the rare path must not grow the hot path's future.
                match Box::pin(self.type_update(key, &encoded, &decode)).await {
                    Lookup::Hit(value) => {
                        self.events.emit(|| CacheEvent::Hit {
                            key: key.to_owned(),
                        });
                        return Ok(Some(value));
                    }
                    Lookup::Negative if negatives == Negatives::Answer => {
                        self.counters.negative_hit();
                        self.events.emit(|| CacheEvent::Hit {
                            key: key.to_owned(),
                        });
                        return Ok(None);
                    }
                    Lookup::Negative | Lookup::Miss => false,
                }
            }
            FrontRead::PastDeadline => true,
            FrontRead::Miss => false,
        };
        // Boxed: the miss path must not grow the hit path's future.
        let after = self.compute_after_front(
            key,
            options.into(),
            negatives,
            past_deadline,
            adaptive,
            loader,
        );
        Box::pin(after).await
    }

    /// After an L1 miss: a kept copy that is still fresh answers and starts a background
    /// refresh. Otherwise at most one caller per key (since the key's last invalidation) reads
    /// the stack and runs the loader; the others wait for its outcome.
    async fn compute_after_front<T, F, Fut, E>(
        self: &Arc<Self>,
        key: &str,
        options: EntryOptions,
        negatives: Negatives,
        past_deadline: bool,
        adaptive: Option<Arc<Adaptive<T>>>,
        loader: F,
    ) -> Result<Option<Arc<T>>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<Option<T>, E>> + Send + 'static,
        E: Into<LoaderError> + 'static,
    {
        validate_key(key)?;
        let policy = self.defaults.resolve(&options);
        let mut fallback = None;
        if past_deadline {
            match self.front.behind::<T>(key).await {
                Behind::Fresh(value) => {
                    // NOTE: an eager refresh offers its loader nothing: the fresh copy was read
                    // without a stamp, and the refresh's leases are taken after it.
                    let job = Job {
                        options,
                        policy,
                        negatives,
                        fallback: None,
                        adaptive,
                    };
                    self.refresh_in_background(key, job, loader).await;
                    return Ok(Some(value));
                }
                Behind::Stale(copy, stamp) => {
                    // An L1 copy may be offered to a conditional refresh only when no shared
                    // level is leased: a lease taken after this read would not stop a write
                    // that came between.
                    let leased = policy.lease_ttl.is_some() && self.stack.has_shared_levels();
                    if let Some(adaptive) = adaptive.as_ref().filter(|_| !leased) {
                        adaptive.consider(&copy, stamp);
                    }
                    if policy.fail_safe.is_some() {
                        fallback = Some(Fallback {
                            copy,
                            stamp,
                            offerable: false,
                        });
                    }
                }
                Behind::Nothing => {}
            }
        }
        let job = Job {
            options,
            policy,
            negatives,
            fallback,
            adaptive,
        };
        let mut counted = false;
        loop {
            let stamp = self.front.stamp(key);
            let joined = self
                .flights
                .join(key, stamp, |flight| self.front.is_current(*flight))
                .await;
            let waiter = match joined {
                Join::Lead(leader) => {
                    let flight = Flight {
                        leader: Some(leader),
                        key: key.to_owned(),
                        job,
                        stamp,
                        started: Instant::now(),
                        leases: None,
                    };
                    return self.lead(flight, loader).await;
                }
                Join::Wait(waiter) => waiter,
            };
            if !counted {
                self.counters.coalesced();
                counted = true;
            }
            let outcome = match self.wait(key, waiter, &job).await {
                // The leader was cancelled or unwound without an outcome: join again.
                None => continue,
                Some(Err(err)) => return Err(err),
                Some(Ok(outcome)) => outcome,
            };
            match outcome {
                Waited::Value(value) => return Ok(Some(value)),
                Waited::NotFound if negatives == Negatives::Answer => return Ok(None),
                // The leader loaded another type under this key, or a "not found" this caller
                // does not accept: load for this caller alone.
                Waited::Other | Waited::NotFound => {
                    let flight = Flight {
                        leader: None,
                        key: key.to_owned(),
                        job,
                        stamp: self.front.stamp(key),
                        started: Instant::now(),
                        leases: None,
                    };
                    return self.lead(flight, loader).await;
                }
            }
        }
    }

    /// Waits for another caller's load under the job's timeouts. `None`: the leader went away
    /// without an outcome (join again).
    async fn wait<T: Send + Sync + 'static>(
        &self,
        key: &str,
        waiter: Waiter,
        job: &Job<T>,
    ) -> Option<Result<Waited<T>>> {
        let soft = job.policy.soft_timeout.filter(|_| job.fallback.is_some());
        let deadlines = Deadlines::after(soft, job.policy.hard_timeout);
        let outcome = match run_timed(Box::pin(waiter.outcome()), deadlines).await {
            Timed::Done(outcome) => outcome?,
            Timed::Soft(_) => {
                self.counters.soft_timeout();
                return job
                    .fallback
                    .as_ref()
                    .map(|fallback| Ok(Waited::Value(self.answer_stale(key, fallback))));
            }
            Timed::Hard => {
                self.counters.hard_timeout();
                return Some(match &job.fallback {
                    Some(fallback) => Ok(Waited::Value(self.answer_stale(key, fallback))),
                    None => Err(timeout_error(key)),
                });
            }
        };
        Some(match outcome {
            Err(err) => match &job.fallback {
                Some(fallback) => Ok(Waited::Value(self.answer_stale(key, fallback))),
                None => Err(err),
            },
            Ok(None) => Ok(Waited::NotFound),
            Ok(Some(value)) => Ok(value.downcast::<T>().map_or(Waited::Other, Waited::Value)),
        })
    }

    /// Leads one load: a second look (L1 when there is no stack, the stack otherwise), then
    /// the loader under its timeouts; fills the tiers and hands the outcome to the waiters.
    async fn lead<T, F, Fut, E>(
        self: &Arc<Self>,
        flight: Flight<T>,
        loader: F,
    ) -> Result<Option<Arc<T>>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<Option<T>, E>> + Send + 'static,
        E: Into<LoaderError> + 'static,
    {
        let Flight {
            leader,
            key,
            job,
            stamp,
            started,
            leases: _,
        } = flight;
        let decode = |bytes: &Bytes| self.envelope.decode::<T>(bytes);
        let leasing = job
            .policy
            .lease_ttl
            .filter(|_| self.stack.has_shared_levels());
        let (mut cached, stale, mut leases) = if self.stack.is_empty() {
            (Lookup::Miss, None, Leases::default())
        } else {
            let eager = job.policy.eager_refresh;
            let reads = leasing.map_or(Leasing::Off, Leasing::Load);
            self.read_below(&key, stamp, &decode, eager, reads).await
        };
        if matches!(cached, Lookup::Miss) {
            // Before the loader runs: a previous flight may have filled L1 between this caller's
            // miss and its join (and the stack may not have taken its write).
            cached = self.peek_front(&key, &decode).await;
        }
        if let (Some(adaptive), Some(stale)) = (&job.adaptive, &stale)
            && stale.offerable
        {
            adaptive.consider(&stale.copy, stale.stamp);
        }
        let job = Job {
            fallback: job
                .fallback
                .or(stale.filter(|_| job.policy.fail_safe.is_some())),
            ..job
        };
        let loads_over = |cached: &Lookup<T>| match cached {
            Lookup::Miss => true,
            Lookup::Negative => job.negatives == Negatives::LoadOver,
            Lookup::Hit(_) => false,
        };
        let mut stamp = stamp;
        let mut waited = Duration::ZERO;
        if loads_over(&cached)
            && job.policy.wait_for_lease
            && let Some(left) = leases.held_by_other()
        {
            // Our own leases (on other levels) go back first: the waits' reads would take them
            // for another filler's.
            drop(leases);
            let waiting = Instant::now();
            match self
                .wait_for_holder(&key, &decode, left, &job, leasing)
                .await
            {
                Awaited::Found(found, newer, newer_stamp) => {
                    // A cached "not found" may be loaded over: under the leases of the read that
                    // found it (a write since revokes them), not with a plain store.
                    cached = found;
                    leases = newer;
                    stamp = newer_stamp;
                }
                Awaited::Load(newer, newer_stamp) => {
                    leases = newer;
                    stamp = newer_stamp;
                }
                Awaited::GaveUp(answer) => {
                    finish(leader, answer.clone().map(erased));
                    return answer;
                }
            }
            waited = waiting.elapsed();
            if let Some(adaptive) = &job.adaptive {
                // New leases, taken after the copies were read: a write in between would not
                // revoke them, so no copy read before may be stored again under them.
                adaptive.withdraw();
            }
        }
        match cached {
            Lookup::Hit(value) => {
                self.events.emit(|| CacheEvent::Hit { key: key.clone() });
                finish(leader, Ok(erased(Some(Arc::clone(&value)))));
                return Ok(Some(value));
            }
            Lookup::Negative if job.negatives == Negatives::Answer => {
                self.counters.negative_hit();
                finish(leader, Ok(None));
                return Ok(None);
            }
            Lookup::Negative | Lookup::Miss => {}
        }
        let leases = leasing.map(|_| leases);

        self.counters.load();
        self.events.emit(|| CacheEvent::Miss { key: key.clone() });
        observe::answered_by("loader");
        // A wait for another instance spent part of the call's timeouts already.
        let left = |timeout: Duration| timeout.saturating_sub(waited);
        let soft = job.policy.soft_timeout.filter(|_| job.fallback.is_some());
        let deadlines = Deadlines::after(soft.map(left), job.policy.hard_timeout.map(left));
        let flight = Flight {
            leader,
            key,
            job,
            stamp,
            started,
            leases,
        };
        if let Some(adaptive) = &flight.job.adaptive {
            // The copy goes to the loader only while no invalidation of the key came since it
            // was read (then storing it again is as if it had been loaded now).
            adaptive.offer(|read_at| self.front.is_current(read_at));
        }
        let result = match run_timed(start(loader), deadlines).await {
            Timed::Done(result) => result,
            Timed::Soft(running) => {
                self.counters.soft_timeout();
                let Some(permit) = self.background.reserve() else {
                    // No room in the background: this caller keeps waiting, up to the hard
                    // timeout.
                    self.counters.background_refused();
                    return match run_timed(running, deadlines.hard_only()).await {
                        Timed::Done(result) => self.conclude(flight, result, Place::Caller).await,
                        Timed::Soft(_) | Timed::Hard => self.give_up(flight).await,
                    };
                };
                let answer = flight
                    .job
                    .fallback
                    .as_ref()
                    .map(|fallback| Arc::clone(&fallback.copy.value));
                self.counters.stale_served();
                self.events.emit(|| CacheEvent::StaleServed {
                    key: flight.key.clone(),
                });
                tracing::info!(
                    key = flight.key,
                    "load passed its soft timeout: answering with the stale value, the load goes on in the background"
                );
                let flight = Flight {
                    job: Job {
                        fallback: None,
                        ..flight.job
                    },
                    ..flight
                };
                self.continue_in_background(permit, flight, running, deadlines.hard_only(), None);
                return Ok(answer);
            }
            Timed::Hard => return self.give_up(flight).await,
        };
        self.conclude(flight, result, Place::Caller).await
    }

    /// After the hard timeout: the stale fallback when fail-safe has one, the timeout error
    /// otherwise. The loader's future was already dropped.
    async fn give_up<T: Send + Sync + 'static>(&self, flight: Flight<T>) -> Result<Option<Arc<T>>> {
        self.counters.hard_timeout();
        let Flight {
            leader, key, job, ..
        } = flight;
        self.events
            .emit(|| CacheEvent::LoadFailed { key: key.clone() });
        if let Some(fallback) = &job.fallback {
            let value = self.serve_stale(&key, fallback, job.policy).await;
            finish(leader, Ok(erased(Some(Arc::clone(&value)))));
            return Ok(Some(value));
        }
        tracing::warn!(key, "loader passed its hard timeout; nothing cached");
        let err = timeout_error(&key);
        finish(leader, Err(err.clone()));
        Err(err)
    }

    /// Concludes a finished load: fills the tiers with a value; on an error, answers with the
    /// stale fallback when there is one; hands the outcome to the waiters.
    pub(super) async fn conclude<T>(
        self: &Arc<Self>,
        flight: Flight<T>,
        result: Loaded<T>,
        place: Place,
    ) -> Result<Option<Arc<T>>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        let Flight {
            leader,
            key,
            job,
            stamp,
            started,
            leases,
        } = flight;
        let loaded = match result {
            Ok(Ok(loaded)) => {
                self.events.emit(|| CacheEvent::Loaded {
                    key: key.clone(),
                    took: started.elapsed(),
                });
                loaded.map(Arc::new)
            }
            Ok(Err(source)) => {
                self.counters.load_error();
                self.events
                    .emit(|| CacheEvent::LoadFailed { key: key.clone() });
                let err = Error::loader(&key, source);
                if let Some(fallback) = &job.fallback {
                    tracing::warn!(key, %err, "loader failed; fail-safe answers with the stale value");
                    let value = self.serve_stale(&key, fallback, job.policy).await;
                    finish(leader, Ok(erased(Some(Arc::clone(&value)))));
                    return Ok(Some(value));
                }
                tracing::debug!(key, %err, "loader failed; nothing cached");
                finish(leader, Err(err.clone()));
                return Err(err);
            }
            Err(panic) => {
                self.counters.load_error();
                self.events
                    .emit(|| CacheEvent::LoadFailed { key: key.clone() });
                let err = Error::LoaderPanicked { key: key.clone() };
                finish(leader, Err(err.clone()));
                if place == Place::Background {
                    tracing::error!(key, "loader panicked in a background load; nothing cached");
                    return Err(err);
                }
                tracing::warn!(
                    key,
                    "loader panicked; waiters get an error, the panic goes on"
                );
                std::panic::resume_unwind(panic);
            }
        };
        // The loader's own choice of options, when it made one, decides how the value is stored.
        let options = match job
            .adaptive
            .as_ref()
            .and_then(|adaptive| adaptive.options())
        {
            Some(chosen) => {
                if let Err(err) = validate_tags(chosen.tags_value()) {
                    finish(leader, Err(err.clone()));
                    return Err(err);
                }
                chosen
            }
            None => &job.options,
        };
        let spec = self.defaults.write_spec(options, started.elapsed());
        if let Err(err) = self
            .fill(&key, loaded.clone(), options, spec, stamp, leases)
            .await
        {
            finish(leader, Err(err.clone()));
            return Err(err);
        }
        finish(leader, Ok(erased(loaded.clone())));
        Ok(loaded)
    }
}
