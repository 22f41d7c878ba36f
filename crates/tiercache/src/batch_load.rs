//! get-or-compute for many keys: one loader call for the keys that missed everywhere, coalesced
//! per key with every other load in this process, under the hard timeout, with fail-safe's stale
//! values answering for keys whose load failed.

use std::{
    any::Any, collections::HashMap, future::Future, panic::AssertUnwindSafe, sync::Arc,
    time::Instant,
};

use futures_util::FutureExt;
use serde::{Serialize, de::DeserializeOwned};
use tiercache_core::{Codec, EntryOptions, Error, Result};

use crate::{
    batch::ReadOne,
    cache::Inner,
    flight::{Join, Leader, Outcome, Waiter},
    guard::Stamp,
    load::timeout_error,
    memory::Lookup,
    policy::{Policy, Stale},
    write::WriteSpec,
};

/// One batch call's settings, its stale fallbacks (one slot per key, filled only under
/// fail-safe) and the instant its hard timeout ends.
struct ManyJob<'a, T> {
    keys: &'a [&'a str],
    options: &'a EntryOptions,
    policy: Policy,
    fallbacks: Vec<Option<Stale<T>>>,
    deadline: Option<tokio::time::Instant>,
}

/// Runs `future` until it ends, or `None` once `deadline` passes.
async fn until<F: Future>(deadline: Option<tokio::time::Instant>, future: F) -> Option<F::Output> {
    match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, future).await.ok(),
        None => Some(future.await),
    }
}

impl<C: Codec> Inner<C> {
    /// get-or-compute for many keys: what the tiers hold, and for the keys that missed
    /// everywhere, one call of `loader` with just those keys (minus the ones another caller is
    /// already loading, which this call waits for). A key the loader leaves out is "not found":
    /// `None`, cached as negative when the options ask for it.
    ///
    /// The hard timeout bounds the loader call and the waits together, from the end of the tier
    /// reads. With fail-safe on, a key whose load fails or times out answers with its stale
    /// value when one was met; the call fails only when some key has none.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidKey`]; [`Error::Loader`] (naming the first key of the batch) when the
    /// loader fails, [`Error::Timeout`] when it passes the hard timeout, or a waited-for load's
    /// error, each only for a key without a stale fallback; [`Error::Encode`] for a value that
    /// does not encode. A loader panic goes on in this caller, and other callers waiting for
    /// these keys get [`Error::LoaderPanicked`].
    pub(crate) async fn compute_many<T, F, Fut, E>(
        &self,
        keys: &[&str],
        options: &EntryOptions,
        loader: F,
    ) -> Result<Vec<Option<Arc<T>>>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        F: Fn(Vec<String>) -> Fut,
        Fut: Future<Output = std::result::Result<HashMap<String, T>, E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let decode = |bytes: &tiercache_core::Bytes| self.envelope.decode::<T>(bytes);
        let found = self.read_many::<T, _>(keys, decode).await?;
        let policy = self.defaults.resolve(options);
        let mut answers: Vec<Option<Arc<T>>> = Vec::with_capacity(keys.len());
        let mut fallbacks = Vec::with_capacity(keys.len());
        let mut pending = Vec::new();
        for (index, ReadOne { found, stale }) in found.into_iter().enumerate() {
            fallbacks.push(stale.filter(|_| policy.fail_safe.is_some()));
            match found {
                Lookup::Hit(value) => answers.push(Some(value)),
                Lookup::Negative => answers.push(None),
                Lookup::Miss => {
                    answers.push(None);
                    pending.push(index);
                }
            }
        }
        let job = ManyJob {
            keys,
            options,
            policy,
            fallbacks,
            deadline: policy
                .hard_timeout
                .map(|hard| tokio::time::Instant::now() + hard),
        };
        // Each round loads what this call leads and waits for the rest; a key whose leader went
        // away without an outcome (cancelled) is joined again in the next round.
        while !pending.is_empty() {
            let mut leaders: Vec<(usize, Leader, Stamp)> = Vec::new();
            let mut waiters: Vec<(usize, Waiter)> = Vec::new();
            for index in pending.drain(..) {
                match self.flights.join(keys[index]).await {
                    Join::Lead(leader) => {
                        leaders.push((index, leader, self.clock.stamp(keys[index])));
                    }
                    Join::Wait(waiter) => {
                        self.loads.coalesced();
                        waiters.push((index, waiter));
                    }
                }
            }
            let mut to_load = Vec::new();
            for (index, leader, stamp) in leaders {
                // A previous leader may have filled L1 between the read and the join.
                match self.peek_memory::<T, _>(keys[index], decode).await {
                    Lookup::Hit(value) => {
                        leader.finish(Ok(Some(value.clone() as Arc<dyn Any + Send + Sync>)));
                        answers[index] = Some(value);
                    }
                    Lookup::Negative | Lookup::Miss => to_load.push((index, leader, stamp)),
                }
            }
            if !to_load.is_empty() {
                self.load_batch(&job, to_load, &loader, &mut answers)
                    .await?;
            }
            // Loads led here are finished before waiting, so two batches that lead each
            // other's keys never wait on each other.
            for (index, waiter) in waiters {
                let key = keys[index];
                let outcome = match until(job.deadline, waiter.outcome()).await {
                    Some(None) => {
                        pending.push(index);
                        continue;
                    }
                    Some(Some(outcome)) => outcome,
                    None => {
                        self.loads.hard_timeout();
                        Err(timeout_error(key))
                    }
                };
                answers[index] = match outcome {
                    Err(err) => match &job.fallbacks[index] {
                        Some(stale) => Some(self.answer_stale(key, stale)),
                        None => return Err(err),
                    },
                    Ok(None) => None,
                    Ok(Some(value)) => match value.downcast::<T>() {
                        Ok(value) => Some(value),
                        // Another type was loaded under this key: load it for this call.
                        Err(_) => {
                            pending.push(index);
                            continue;
                        }
                    },
                };
            }
        }
        Ok(answers)
    }

    /// One loader call for the keys this call leads; fills and answers each, and hands every
    /// leader's outcome to its waiters.
    async fn load_batch<T, F, Fut, E>(
        &self,
        job: &ManyJob<'_, T>,
        to_load: Vec<(usize, Leader, Stamp)>,
        loader: &F,
        answers: &mut [Option<Arc<T>>],
    ) -> Result<()>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        F: Fn(Vec<String>) -> Fut,
        Fut: Future<Output = std::result::Result<HashMap<String, T>, E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let keys = job.keys;
        let asked: Vec<String> = to_load
            .iter()
            .map(|(index, _, _)| keys[*index].to_owned())
            .collect();
        let first_key = asked.first().cloned().unwrap_or_default();
        self.loads.load();
        let started = Instant::now();
        let call = AssertUnwindSafe(loader(asked)).catch_unwind();
        let mut loaded = match until(job.deadline, call).await {
            Some(Ok(Ok(loaded))) => loaded,
            Some(Ok(Err(source))) => {
                self.loads.load_error();
                let err = Error::loader(&first_key, source);
                return self.batch_failed(job, to_load, err, answers).await;
            }
            None => {
                self.loads.hard_timeout();
                let err = timeout_error(&first_key);
                return self.batch_failed(job, to_load, err, answers).await;
            }
            Some(Err(panic)) => {
                self.loads.load_error();
                tracing::warn!(
                    keys = to_load.len(),
                    "batch loader panicked; waiters get an error, the panic goes on"
                );
                for (index, leader, _) in to_load {
                    leader.finish(Err(Error::LoaderPanicked {
                        key: keys[index].to_owned(),
                    }));
                }
                std::panic::resume_unwind(panic);
            }
        };
        let spec = WriteSpec::new(job.options, job.policy, self.default_ttl, started.elapsed());
        let mut first_error = None;
        for (index, leader, stamp) in to_load {
            let key = keys[index];
            let value = loaded.remove(key).map(Arc::new);
            let filled = self.fill(key, value.clone(), job.options, spec.clone(), stamp);
            if let Err(err) = filled.await {
                leader.finish(Err(err.clone()));
                first_error.get_or_insert(err);
                continue;
            }
            leader.finish(Ok(value
                .clone()
                .map(|value| value as Arc<dyn Any + Send + Sync>)));
            answers[index] = value;
        }
        first_error.map_or(Ok(()), Err)
    }

    /// After the batch loader failed or passed the hard timeout: each key with a stale fallback
    /// answers with it (served again for fail-safe's throttle, as a single load does); the
    /// others get `err`, which the call returns when there is any such key. Nothing is filled.
    async fn batch_failed<T: Send + Sync + 'static>(
        &self,
        job: &ManyJob<'_, T>,
        to_load: Vec<(usize, Leader, Stamp)>,
        err: Error,
        answers: &mut [Option<Arc<T>>],
    ) -> Result<()> {
        let mut without_fallback = 0_usize;
        for (index, leader, stamp) in to_load {
            let key = job.keys[index];
            let outcome: Outcome = match &job.fallbacks[index] {
                Some(stale) => {
                    let value = self.serve_stale(key, stale, job.policy, stamp).await;
                    answers[index] = Some(Arc::clone(&value));
                    Ok(Some(value as Arc<dyn Any + Send + Sync>))
                }
                None => {
                    without_fallback += 1;
                    Err(err.clone())
                }
            };
            leader.finish(outcome);
        }
        if without_fallback > 0 {
            tracing::debug!(without_fallback, %err, "batch loader failed; nothing cached");
            return Err(err);
        }
        tracing::warn!(%err, "batch loader failed; fail-safe answers every key with its stale value");
        Ok(())
    }
}
