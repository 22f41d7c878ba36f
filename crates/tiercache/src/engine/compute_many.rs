//! get-or-compute for many keys: the batch read, then one loader call for the keys that missed
//! everywhere, each key in a flight of its own (coalesced with every other load of it in this
//! process, as a single load is), under the hard timeout, with fail-safe's stale copies
//! answering for keys whose load failed.

use std::{
    collections::HashMap, future::Future, panic::AssertUnwindSafe, sync::Arc, time::Instant,
};

use futures_util::FutureExt;
use serde::{Serialize, de::DeserializeOwned};
use tiercache_core::{Bytes, Codec, EntryOptions, Error, Result};

use super::{
    Engine, Fallback,
    compute::{LoaderError, erased, timeout_error},
    read::ReadOne,
};
use crate::{
    common::Lookup,
    front::Stamp,
    load::{Deadlines, Join, Leader, Outcome, Timed, Waiter, run_timed},
    policy::Policy,
    stack::Leases,
};

/// One batch call's settings, its fallbacks (one per key, kept only under fail-safe) and its
/// hard deadline.
struct ManyJob<'a, T> {
    keys: &'a [&'a str],
    options: &'a EntryOptions,
    policy: Policy,
    fallbacks: Vec<Option<Fallback<T>>>,
    deadlines: Deadlines,
}

/// A key this call leads the load of: its index, its flight and the stamp the flight took.
struct Led {
    index: usize,
    leader: Leader<Stamp>,
    stamp: Stamp,
}

/// Runs `future` until it ends, or `None` once the hard deadline passes.
async fn within<F: Future>(deadlines: Deadlines, future: F) -> Option<F::Output> {
    match run_timed(Box::pin(future), deadlines.hard_only()).await {
        Timed::Done(output) => Some(output),
        Timed::Soft(_) | Timed::Hard => None,
    }
}

impl<C: Codec> Engine<C> {
    /// get-or-compute for many keys. The hard timeout bounds the loader call and the waits
    /// together, from the end of the tier reads.
    ///
    /// # Errors
    ///
    /// As [`Cache::get_or_compute_many`](crate::Cache::get_or_compute_many).
    pub(crate) async fn compute_many<T, F, Fut, E>(
        self: &Arc<Self>,
        keys: &[&str],
        options: &EntryOptions,
        loader: F,
    ) -> Result<Vec<Option<Arc<T>>>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        F: Fn(Vec<String>) -> Fut,
        Fut: Future<Output = std::result::Result<HashMap<String, T>, E>>,
        E: Into<LoaderError>,
    {
        let decode = |bytes: &Bytes| self.envelope.decode::<T>(bytes);
        let policy = self.defaults.resolve(options);
        let found = self
            .read_many::<T, _>(keys, &decode, policy.eager_refresh)
            .await?;
        let mut answers: Vec<Option<Arc<T>>> = Vec::with_capacity(keys.len());
        let mut fallbacks = Vec::with_capacity(keys.len());
        let mut pending = Vec::new();
        for (index, ReadOne { found, fallback }) in found.into_iter().enumerate() {
            fallbacks.push(fallback.filter(|_| policy.fail_safe.is_some()));
            if matches!(found, Lookup::Miss) {
                pending.push(index);
            }
            answers.push(found.into_value());
        }
        let job = ManyJob {
            keys,
            options,
            policy,
            fallbacks,
            deadlines: Deadlines::after(None, policy.hard_timeout),
        };
        // Each round loads what this call leads and waits for the rest; a key whose leader went
        // away without an outcome (cancelled) is joined again in the next round.
        while !pending.is_empty() {
            let mut led = Vec::new();
            let mut waiters: Vec<(usize, Waiter)> = Vec::new();
            for index in pending.drain(..) {
                let key = keys[index];
                let stamp = self.front.stamp(key);
                let joined = self
                    .flights
                    .join(key, stamp, |flight| self.front.is_current(*flight))
                    .await;
                match joined {
                    Join::Lead(leader) => led.push(Led {
                        index,
                        leader,
                        stamp,
                    }),
                    Join::Wait(waiter) => {
                        self.counters.coalesced();
                        waiters.push((index, waiter));
                    }
                }
            }
            let mut to_load = Vec::new();
            for one in led {
                // A previous flight may have filled L1 between the read and the join.
                match self.peek_front(keys[one.index], &decode).await.into_value() {
                    Some(value) => {
                        one.leader.finish(Ok(erased(Some(Arc::clone(&value)))));
                        answers[one.index] = Some(value);
                    }
                    None => to_load.push(one),
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
                let outcome = match within(job.deadlines, waiter.outcome()).await {
                    Some(None) => {
                        pending.push(index);
                        continue;
                    }
                    Some(Some(outcome)) => outcome,
                    None => {
                        self.counters.hard_timeout();
                        Err(timeout_error(key))
                    }
                };
                answers[index] = match outcome {
                    Err(err) => match &job.fallbacks[index] {
                        Some(fallback) => Some(self.answer_stale(key, fallback)),
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
        self: &Arc<Self>,
        job: &ManyJob<'_, T>,
        to_load: Vec<Led>,
        loader: &F,
        answers: &mut [Option<Arc<T>>],
    ) -> Result<()>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        F: Fn(Vec<String>) -> Fut,
        Fut: Future<Output = std::result::Result<HashMap<String, T>, E>>,
        E: Into<LoaderError>,
    {
        let keys = job.keys;
        let asked: Vec<String> = to_load
            .iter()
            .map(|one| keys[one.index].to_owned())
            .collect();
        let first_key = asked.first().cloned().unwrap_or_default();
        let started = Instant::now();
        // Leases before the loader reads the source: a write of a key during the load then wins
        // over its fill in the shared tiers.
        let mut leases: Vec<Option<Leases>> = match job.policy.lease_ttl {
            Some(ttl) if self.stack.has_shared_levels() => {
                let taken = asked.iter().map(|key| self.stack.lease_key(key, ttl));
                futures_util::future::join_all(taken)
                    .await
                    .into_iter()
                    .map(Some)
                    .collect()
            }
            _ => asked.iter().map(|_| None).collect(),
        };
        self.counters.load();
        let call = AssertUnwindSafe(loader(asked)).catch_unwind();
        let mut loaded = match within(job.deadlines, call).await {
            Some(Ok(Ok(loaded))) => loaded,
            Some(Ok(Err(source))) => {
                self.counters.load_error();
                let err = Error::loader(&first_key, source);
                return self.batch_failed(job, to_load, err, answers).await;
            }
            None => {
                self.counters.hard_timeout();
                let err = timeout_error(&first_key);
                return self.batch_failed(job, to_load, err, answers).await;
            }
            Some(Err(panic)) => {
                self.counters.load_error();
                tracing::warn!(
                    keys = to_load.len(),
                    "batch loader panicked; waiters get an error, the panic goes on"
                );
                for one in to_load {
                    one.leader.finish(Err(Error::LoaderPanicked {
                        key: keys[one.index].to_owned(),
                    }));
                }
                std::panic::resume_unwind(panic);
            }
        };
        let spec = self.defaults.write_spec(job.options, started.elapsed());
        let mut first_error = None;
        for (one, leases) in to_load.into_iter().zip(leases.iter_mut()) {
            let key = keys[one.index];
            let value = loaded.remove(key).map(Arc::new);
            let (options, spec) = (job.options, spec.clone());
            let filled = self.fill(key, value.clone(), options, spec, one.stamp, leases.take());
            if let Err(err) = filled.await {
                one.leader.finish(Err(err.clone()));
                first_error.get_or_insert(err);
                continue;
            }
            one.leader.finish(Ok(erased(value.clone())));
            answers[one.index] = value;
        }
        first_error.map_or(Ok(()), Err)
    }

    /// After the batch loader failed or passed the hard timeout: each key with a stale fallback
    /// answers with it (put back in L1 for fail-safe's throttle, as a single load does, unless
    /// its key was invalidated since the copy was read); the others get `err`, which the call
    /// returns when there is any such key. Nothing is filled.
    async fn batch_failed<T: Send + Sync + 'static>(
        &self,
        job: &ManyJob<'_, T>,
        to_load: Vec<Led>,
        err: Error,
        answers: &mut [Option<Arc<T>>],
    ) -> Result<()> {
        let mut without_fallback = 0_usize;
        for one in to_load {
            let key = job.keys[one.index];
            let outcome: Outcome = match &job.fallbacks[one.index] {
                Some(fallback) => {
                    let value = self.serve_stale(key, fallback, job.policy).await;
                    answers[one.index] = Some(Arc::clone(&value));
                    Ok(erased(Some(value)))
                }
                None => {
                    without_fallback += 1;
                    Err(err.clone())
                }
            };
            one.leader.finish(outcome);
        }
        if without_fallback > 0 {
            tracing::debug!(without_fallback, %err, "batch loader failed; nothing cached");
            return Err(err);
        }
        tracing::warn!(%err, "batch loader failed; fail-safe answers every key with its stale value");
        Ok(())
    }
}
