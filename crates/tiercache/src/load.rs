//! get-or-compute after a miss of L1's front entry: refresh early when the kept copy is still
//! fresh, coalesce by key, read the lower tiers, run the loader once under its timeouts, fall
//! back to a stale value when it fails, fill.

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
use tiercache_core::{Codec, EntryOptions, Error, Result, validate_key};

use crate::{
    background::Slot,
    cache::Inner,
    flight::{Join, Leader, Outcome, Waiter},
    guard::Stamp,
    memory::Lookup,
    observe,
    policy::{Policy, Stale},
    read::Behind,
    write::WriteSpec,
};

/// Whether a cached "not found" answers the call (the optional form) or is loaded over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Negatives {
    Answer,
    LoadOver,
}

/// A loader's error, erased.
type LoaderError = Box<dyn std::error::Error + Send + Sync>;
/// What a loader's future ends with: its answer, or the panic it unwound with.
type Loaded<T> = std::thread::Result<std::result::Result<Option<T>, LoaderError>>;
/// A running load, boxed so it can move into a background task.
type LoadFuture<T> = Pin<Box<dyn Future<Output = Loaded<T>> + Send>>;

/// One get-or-compute call's settings, and the stale value it can fall back to.
struct Job<T> {
    options: EntryOptions,
    policy: Policy,
    negatives: Negatives,
    fallback: Option<Stale<T>>,
}

/// Where a load's outcome is settled: in the caller (a panic goes on in the caller) or in a
/// background task (a panic is logged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Caller,
    Background,
}

/// How a wait under a soft and a hard timeout ended.
enum Timed<O, F> {
    Done(O),
    /// The soft timeout passed; the future is handed back, still running.
    Soft(F),
    /// The hard timeout passed; the future was dropped.
    Hard,
}

/// Runs `future` until it ends or a timeout passes. The soft timeout only counts when it is
/// shorter than the hard one.
async fn run_timed<F: Future + Unpin>(
    mut future: F,
    soft: Option<Duration>,
    hard: Option<Duration>,
) -> Timed<F::Output, F> {
    let started = Instant::now();
    if let Some(soft) = soft.filter(|soft| hard.is_none_or(|hard| *soft < hard)) {
        return match tokio::time::timeout(soft, &mut future).await {
            Ok(output) => Timed::Done(output),
            Err(_) => Timed::Soft(future),
        };
    }
    match hard {
        Some(hard) => {
            let left = hard.saturating_sub(started.elapsed());
            match tokio::time::timeout(left, &mut future).await {
                Ok(output) => Timed::Done(output),
                Err(_) => Timed::Hard,
            }
        }
        None => Timed::Done(future.await),
    }
}

fn finish(leader: Option<Leader>, outcome: Outcome) {
    if let Some(leader) = leader {
        leader.finish(outcome);
    }
}

fn erased<T: Send + Sync + 'static>(value: Option<Arc<T>>) -> Option<Arc<dyn Any + Send + Sync>> {
    value.map(|value| value as Arc<dyn Any + Send + Sync>)
}

/// The error of a load that passed its hard timeout.
pub(crate) fn timeout_error(key: &str) -> Error {
    Error::Timeout {
        what: "loader".to_owned(),
        key: Some(key.to_owned()),
    }
}

/// Starts the loader inside a boxed future that catches its panic.
fn start<T, F, Fut, E>(loader: F) -> LoadFuture<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = std::result::Result<Option<T>, E>> + Send + 'static,
    E: Into<LoaderError> + 'static,
{
    Box::pin(AssertUnwindSafe(async move { loader().await.map_err(Into::into) }).catch_unwind())
}

impl<C: Codec> Inner<C> {
    /// The part of get-or-compute after a miss of L1's front entry. A kept copy that is still
    /// fresh answers and starts a background refresh. Otherwise at most one caller per key runs
    /// the lower-tier reads and the loader; the others wait for its outcome.
    pub(crate) async fn compute<T, F, Fut, E>(
        self: &Arc<Self>,
        key: &str,
        options: EntryOptions,
        negatives: Negatives,
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
        let fallback = match self.behind_front::<T>(key).await {
            Behind::Fresh(value) => {
                self.refresh_in_background(key, options, policy, negatives, loader)
                    .await;
                return Ok(Some(value));
            }
            Behind::Stale(stale) => policy.fail_safe.map(|_| stale),
            Behind::Nothing => None,
        };
        let job = Job {
            options,
            policy,
            negatives,
            fallback,
        };
        let mut counted = false;
        loop {
            let waiter = match self.flights.join(key).await {
                Join::Lead(leader) => return self.load(Some(leader), key, job, loader).await,
                Join::Wait(waiter) => waiter,
            };
            if !counted {
                self.loads.coalesced();
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
                    return self.load(None, key, job, loader).await;
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
        let outcome = Box::pin(waiter.outcome());
        let outcome = match run_timed(outcome, soft, job.policy.hard_timeout).await {
            Timed::Done(outcome) => outcome?,
            Timed::Soft(_) => {
                self.loads.soft_timeout();
                return job
                    .fallback
                    .as_ref()
                    .map(|stale| Ok(self.stale(key, stale)));
            }
            Timed::Hard => {
                self.loads.hard_timeout();
                return Some(match &job.fallback {
                    Some(stale) => Ok(self.stale(key, stale)),
                    None => Err(timeout_error(key)),
                });
            }
        };
        Some(match outcome {
            Err(err) => match &job.fallback {
                Some(stale) => Ok(self.stale(key, stale)),
                None => Err(err),
            },
            Ok(None) => Ok(Waited::NotFound),
            Ok(Some(value)) => Ok(value.downcast::<T>().map_or(Waited::Other, Waited::Value)),
        })
    }

    /// Answers with a stale fallback (counted), without putting it back in L1.
    fn stale<T>(&self, key: &str, stale: &Stale<T>) -> Waited<T> {
        Waited::Value(self.answer_stale(key, stale))
    }

    /// A stale fallback as the answer of a caller whose wait for a load failed or timed out
    /// (counted); the load's leader is the one that puts it back in L1.
    pub(crate) fn answer_stale<T>(&self, key: &str, stale: &Stale<T>) -> Arc<T> {
        self.loads.stale_served();
        tracing::warn!(
            key,
            "answering with a stale value: the load failed or timed out"
        );
        Arc::clone(&stale.value)
    }

    /// Runs one load: a second look at L1, the lower tiers, then the loader under its
    /// timeouts; fills the tiers and hands the outcome to the leader's waiters.
    async fn load<T, F, Fut, E>(
        self: &Arc<Self>,
        leader: Option<Leader>,
        key: &str,
        job: Job<T>,
        loader: F,
    ) -> Result<Option<Arc<T>>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<Option<T>, E>> + Send + 'static,
        E: Into<LoaderError> + 'static,
    {
        let stamp = self.clock.stamp(key);

        // A previous leader may have filled L1 between this caller's miss and its join.
        let decode = |bytes: &tiercache_core::Bytes| self.envelope.decode::<T>(bytes);
        let (cached, stale) = match self.peek_memory::<T, _>(key, decode).await {
            Lookup::Miss => {
                let below = self
                    .read_below(key, stamp, decode, job.policy.eager_refresh)
                    .await;
                (below.found, below.stale)
            }
            found => (found, None),
        };
        match cached {
            Lookup::Hit(value) => {
                finish(leader, Ok(Some(value.clone())));
                return Ok(Some(value));
            }
            Lookup::Negative if job.negatives == Negatives::Answer => {
                self.loads.negative_hit();
                finish(leader, Ok(None));
                return Ok(None);
            }
            Lookup::Negative | Lookup::Miss => {}
        }
        let job = Job {
            fallback: job
                .fallback
                .or(stale.filter(|_| job.policy.fail_safe.is_some())),
            ..job
        };

        self.loads.load();
        observe::answered_by("loader");
        let started = Instant::now();
        let soft = job.policy.soft_timeout.filter(|_| job.fallback.is_some());
        let hard = job.policy.hard_timeout;
        let result = match run_timed(start(loader), soft, hard).await {
            Timed::Done(result) => result,
            Timed::Soft(running) => {
                self.loads.soft_timeout();
                let hard_left = hard.map(|hard| hard.saturating_sub(started.elapsed()));
                match self.background.reserve() {
                    Some(slot) => {
                        let answer = job.fallback.as_ref().map(|stale| Arc::clone(&stale.value));
                        let background = Background {
                            leader,
                            key: key.to_owned(),
                            job: Job {
                                fallback: None,
                                ..job
                            },
                            stamp,
                            started,
                        };
                        self.continue_in_background(slot, background, running, hard_left);
                        self.loads.stale_served();
                        tracing::info!(
                            key,
                            "load passed its soft timeout: answering with the stale value, the load goes on in the background"
                        );
                        return Ok(answer);
                    }
                    None => {
                        // No room in the background: this caller keeps waiting, up to the hard
                        // timeout.
                        self.loads.background_refused();
                        match run_timed(running, None, hard_left).await {
                            Timed::Done(result) => result,
                            Timed::Soft(_) | Timed::Hard => {
                                return self.give_up(leader, key, &job, stamp).await;
                            }
                        }
                    }
                }
            }
            Timed::Hard => return self.give_up(leader, key, &job, stamp).await,
        };
        self.settle(leader, key, &job, stamp, started, result, Place::Caller)
            .await
    }

    /// After the hard timeout: the stale fallback when fail-safe has one, the timeout error
    /// otherwise. The loader's future was already dropped.
    async fn give_up<T: Send + Sync + 'static>(
        &self,
        leader: Option<Leader>,
        key: &str,
        job: &Job<T>,
        stamp: Stamp,
    ) -> Result<Option<Arc<T>>> {
        self.loads.hard_timeout();
        if let Some(stale) = &job.fallback {
            let value = self.serve_stale(key, stale, job.policy, stamp).await;
            finish(leader, Ok(erased(Some(Arc::clone(&value)))));
            return Ok(Some(value));
        }
        tracing::warn!(key, "loader passed its hard timeout; nothing cached");
        let err = timeout_error(key);
        finish(leader, Err(err.clone()));
        Err(err)
    }

    /// Settles a finished load: fills the tiers with a value; on an error, answers with the
    /// stale fallback when there is one; hands the outcome to the waiters.
    #[expect(
        clippy::too_many_arguments,
        reason = "a load's outcome needs its flight, key, job, guard stamp, start time and place"
    )]
    async fn settle<T>(
        &self,
        leader: Option<Leader>,
        key: &str,
        job: &Job<T>,
        stamp: Stamp,
        started: Instant,
        result: Loaded<T>,
        place: Place,
    ) -> Result<Option<Arc<T>>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        let loaded = match result {
            Ok(Ok(loaded)) => loaded.map(Arc::new),
            Ok(Err(source)) => {
                self.loads.load_error();
                let err = Error::loader(key, source);
                if let Some(stale) = &job.fallback {
                    tracing::warn!(key, %err, "loader failed; fail-safe answers with the stale value");
                    let value = self.serve_stale(key, stale, job.policy, stamp).await;
                    finish(leader, Ok(erased(Some(Arc::clone(&value)))));
                    return Ok(Some(value));
                }
                tracing::debug!(key, %err, "loader failed; nothing cached");
                finish(leader, Err(err.clone()));
                return Err(err);
            }
            Err(panic) => {
                self.loads.load_error();
                let err = Error::LoaderPanicked {
                    key: key.to_owned(),
                };
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
        let spec = WriteSpec::new(
            &job.options,
            job.policy,
            self.default_ttl,
            started.elapsed(),
        );
        if let Err(err) = self
            .fill(key, loaded.clone(), &job.options, spec, stamp)
            .await
        {
            finish(leader, Err(err.clone()));
            return Err(err);
        }
        finish(leader, Ok(erased(loaded.clone())));
        Ok(loaded)
    }

    /// Answers with a stale value after a failed or abandoned load, and puts it in L1's front
    /// for the fail-safe throttle (never past its stale window), so the failing source is not
    /// asked again by every call meanwhile.
    pub(crate) async fn serve_stale<T: Send + Sync + 'static>(
        &self,
        key: &str,
        stale: &Stale<T>,
        policy: Policy,
        stamp: Stamp,
    ) -> Arc<T> {
        self.loads.stale_served();
        if let Some(fail_safe) = policy.fail_safe {
            // Served as it is for the throttle, then a fallback again (stale) until its end.
            let until = (Instant::now() + fail_safe.throttle_value()).min(stale.keep_until);
            let tags = stale.tags.clone();
            self.refront(
                key,
                &stale.value,
                tags,
                (until, until),
                stale.keep_until,
                stamp,
            )
            .await;
        }
        Arc::clone(&stale.value)
    }

    /// Starts one background load of `key` because a hit came near the entry's end, unless a
    /// load of the key is already in flight (which then is the refresh) or the background is
    /// full.
    async fn refresh_in_background<T, F, Fut, E>(
        self: &Arc<Self>,
        key: &str,
        options: EntryOptions,
        policy: Policy,
        negatives: Negatives,
        loader: F,
    ) where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<Option<T>, E>> + Send + 'static,
        E: Into<LoaderError> + 'static,
    {
        let Join::Lead(leader) = self.flights.join(key).await else {
            return;
        };
        let Some(slot) = self.background.reserve() else {
            self.loads.background_refused();
            return;
        };
        self.loads.eager_refresh();
        self.loads.load();
        tracing::debug!(key, "refreshing in the background before the entry expires");
        let background = Background {
            leader: Some(leader),
            key: key.to_owned(),
            job: Job {
                options,
                policy,
                negatives,
                fallback: None,
            },
            stamp: self.clock.stamp(key),
            started: Instant::now(),
        };
        self.continue_in_background(slot, background, start(loader), policy.hard_timeout);
    }

    /// Hands a running load to a background task, which settles it (fills the cache, answers
    /// the waiters) when it ends, or gives up at `hard_left`.
    fn continue_in_background<T>(
        self: &Arc<Self>,
        slot: Slot,
        background: Background<T>,
        running: LoadFuture<T>,
        hard_left: Option<Duration>,
    ) where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        self.loads.background_load();
        let cache = Arc::downgrade(self);
        self.background.spawn(slot, async move {
            let Background {
                leader,
                key,
                job,
                stamp,
                started,
            } = background;
            let result = match run_timed(running, None, hard_left).await {
                Timed::Done(result) => result,
                Timed::Soft(_) | Timed::Hard => {
                    if let Some(inner) = cache.upgrade() {
                        inner.loads.hard_timeout();
                    }
                    tracing::warn!(
                        key,
                        "background load passed its hard timeout; nothing cached"
                    );
                    finish(leader, Err(timeout_error(&key)));
                    return;
                }
            };
            // The cache may be gone: then there is nothing to fill.
            let Some(inner) = cache.upgrade() else {
                return;
            };
            // NOTE: the outcome went to the waiters and into the cache; errors were logged.
            let _settled = inner
                .settle(
                    leader,
                    &key,
                    &job,
                    stamp,
                    started,
                    result,
                    Place::Background,
                )
                .await;
        });
    }
}

/// What a waiter got from the leader.
enum Waited<T> {
    Value(Arc<T>),
    NotFound,
    /// A value of another type.
    Other,
}

/// A load handed to the background: its flight, and what settling it needs.
struct Background<T> {
    leader: Option<Leader>,
    key: String,
    job: Job<T>,
    stamp: Stamp,
    started: Instant,
}
