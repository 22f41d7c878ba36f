//! Batches: one batch read per tier for the keys that missed above it, one batch write per tier,
//! and one loader call for the keys that missed everywhere, coalesced per key with every other
//! load in this process.

use std::{
    any::Any,
    collections::HashMap,
    future::Future,
    panic::AssertUnwindSafe,
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::FutureExt;
use serde::{Serialize, de::DeserializeOwned};
use tiercache_core::{
    Bytes, Codec, DecodeError, Decoded, Entry, EntryOptions, Error, Invalidation, Result,
    validate_key, validate_tags,
};

use crate::{
    Cache,
    cache::Inner,
    flight::{Join, Leader, Waiter},
    guard::Stamp,
    memory::{Lookup, Placement},
    observe::{self, call_span},
    policy::Life,
    read::{Behind, Examined},
    write::WriteSpec,
};

/// What a batch read found for one key.
type Found<T> = Lookup<T>;

impl<C: Codec> Inner<C> {
    /// Reads `keys` through every tier: L1 for each key, then one `get_many` per lower tier for
    /// the keys still missing (the Redis tier makes that one `MGET` per hash slot). Hits are
    /// promoted upwards like single reads. One answer per key, in order.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidKey`] when any key breaks the key rules (nothing is read then).
    pub(crate) async fn read_many<T, D>(&self, keys: &[&str], decode: D) -> Result<Vec<Found<T>>>
    where
        T: Any + Send + Sync,
        D: Fn(&Bytes) -> Result<Decoded<T>, DecodeError>,
    {
        for key in keys {
            validate_key(key)?;
        }
        let mut found = Vec::with_capacity(keys.len());
        for key in keys {
            let mut lookup = self.lookup_memory::<T, _>(key, &decode).await;
            if matches!(lookup, Lookup::Miss)
                && let Behind::Fresh(value) = self.behind_front::<T>(key).await
            {
                lookup = Lookup::Hit(value);
            }
            found.push(lookup);
        }
        // Stamped before the tiers below are read, so an invalidation meanwhile wins (guard.rs).
        let mut missing: Vec<(usize, Stamp)> = found
            .iter()
            .enumerate()
            .filter(|(_, lookup)| matches!(lookup, Lookup::Miss))
            .map(|(index, _)| (index, self.clock.stamp(keys[index])))
            .collect();
        for (level, layer) in self.tiers.iter().enumerate() {
            if missing.is_empty() {
                break;
            }
            let stored: Vec<String> = missing
                .iter()
                .map(|(index, _)| self.namespace.apply(keys[*index]))
                .collect();
            let asked: Vec<&str> = stored.iter().map(String::as_str).collect();
            let first_key = keys[missing[0].0];
            let entries = match layer
                .call("get_many", first_key, layer.tier.get_many(&asked))
                .await
            {
                Ok(entries) if entries.len() == asked.len() => entries,
                Ok(entries) => {
                    layer.counters.error();
                    tracing::warn!(
                        tier = layer.name(),
                        asked = asked.len(),
                        answered = entries.len(),
                        "get_many answered a different number of keys; read as misses"
                    );
                    continue;
                }
                // Counted and logged by `call`; a broken tier reads as misses.
                Err(_) => continue,
            };
            let mut still_missing = Vec::new();
            for (((index, stamp), stored_key), entry) in
                missing.into_iter().zip(&stored).zip(entries)
            {
                let key = keys[index];
                let Some(entry) = entry else {
                    layer.counters.miss();
                    still_missing.push((index, stamp));
                    continue;
                };
                let Examined::Fresh(value, meta) = self.examine(layer, key, &entry, &decode).await
                else {
                    still_missing.push((index, stamp));
                    continue;
                };
                let eager = self.defaults.eager_refresh;
                self.promote(
                    key,
                    stored_key,
                    level,
                    (&entry, &meta),
                    value.clone(),
                    stamp,
                    eager,
                )
                .await;
                found[index] = value.map_or(Lookup::Negative, Lookup::Hit);
            }
            missing = still_missing;
        }
        Ok(found)
    }

    /// Writes every entry to every tier, top-down, with one batch write per tier below L1, then
    /// publishes one message naming every key.
    ///
    /// # Errors
    ///
    /// The first tier failure, after all tiers were tried, or the bus's error.
    pub(crate) async fn write_many<T: Any + Send + Sync>(
        &self,
        entries: Vec<(String, Arc<T>, Option<Bytes>)>,
        spec: &WriteSpec,
    ) -> Result<()> {
        let now = Instant::now();
        let ttl = spec.ttl;
        for (key, value, bytes) in &entries {
            self.clock.invalidate_key(key);
            if let Some(memory) = &self.memory {
                let fresh = ttl.mul_f64(memory.options().ttl_scale_value());
                let eager = spec.policy.eager_refresh;
                let placement = Placement {
                    life: Life::new(
                        now + fresh,
                        fresh,
                        Duration::ZERO,
                        spec.stale_window(),
                        eager,
                    ),
                    weight: bytes.as_ref().map(Bytes::len),
                    tags: spec.tags.clone(),
                };
                self.store_in_memory(key, Some(Arc::clone(value)), placement, None)
                    .await;
            }
        }
        let mut first_error = None;
        if let Some((first_key, _, _)) = entries.first() {
            for layer in &self.tiers {
                let fresh = ttl.mul_f64(layer.options.ttl_scale_value());
                let expires_at = now + fresh + spec.stale_window();
                let batch: Vec<(String, Entry)> = entries
                    .iter()
                    .filter_map(|(key, _, bytes)| {
                        let bytes = bytes.clone()?;
                        Some((
                            self.namespace.apply(key),
                            Entry::expiring_at(bytes, expires_at),
                        ))
                    })
                    .collect();
                match layer
                    .call("set_many", first_key, layer.tier.set_many(batch))
                    .await
                {
                    Ok(()) => layer.counters.write(),
                    Err(err) => {
                        first_error.get_or_insert(err);
                    }
                }
            }
        }
        let keys: Vec<String> = entries.into_iter().map(|(key, _, _)| key).collect();
        let published = if keys.is_empty() {
            Ok(())
        } else {
            self.publish(|| Invalidation::Keys(keys)).await
        };
        first_error.map_or(published, Err)
    }

    /// get-or-compute for many keys: what the tiers hold, and for the keys that missed
    /// everywhere, one call of `loader` with just those keys (minus the ones another caller is
    /// already loading, which this call waits for). A key the loader leaves out is "not found":
    /// `None`, cached as negative when the options ask for it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidKey`]; [`Error::Loader`] (naming the first key of the batch) when the
    /// loader fails, or a waited-for load's error; [`Error::Encode`] for a value that does not
    /// encode. A loader panic goes on in this caller, and other callers waiting for these keys
    /// get [`Error::LoaderPanicked`].
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
        let decode = |bytes: &Bytes| self.envelope.decode::<T>(bytes);
        let found = self.read_many::<T, _>(keys, decode).await?;
        let mut answers: Vec<Option<Arc<T>>> = Vec::with_capacity(keys.len());
        let mut pending = Vec::new();
        for (index, lookup) in found.into_iter().enumerate() {
            match lookup {
                Lookup::Hit(value) => answers.push(Some(value)),
                Lookup::Negative => answers.push(None),
                Lookup::Miss => {
                    answers.push(None);
                    pending.push(index);
                }
            }
        }
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
                self.load_batch(keys, to_load, options, &loader, &mut answers)
                    .await?;
            }
            // Loads led here are finished before waiting, so two batches that lead each
            // other's keys never wait on each other.
            for (index, waiter) in waiters {
                match waiter.outcome().await {
                    None => pending.push(index),
                    Some(Err(err)) => return Err(err),
                    Some(Ok(None)) => answers[index] = None,
                    Some(Ok(Some(value))) => match value.downcast::<T>() {
                        Ok(value) => answers[index] = Some(value),
                        // Another type was loaded under this key: load it for this call.
                        Err(_) => pending.push(index),
                    },
                }
            }
        }
        Ok(answers)
    }

    /// One loader call for the keys this call leads; fills and answers each, and hands every
    /// leader's outcome to its waiters.
    async fn load_batch<T, F, Fut, E>(
        &self,
        keys: &[&str],
        to_load: Vec<(usize, Leader, Stamp)>,
        options: &EntryOptions,
        loader: &F,
        answers: &mut [Option<Arc<T>>],
    ) -> Result<()>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        F: Fn(Vec<String>) -> Fut,
        Fut: Future<Output = std::result::Result<HashMap<String, T>, E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let asked: Vec<String> = to_load
            .iter()
            .map(|(index, _, _)| keys[*index].to_owned())
            .collect();
        let first_key = asked.first().cloned().unwrap_or_default();
        self.loads.load();
        let started = Instant::now();
        let mut loaded = match AssertUnwindSafe(loader(asked)).catch_unwind().await {
            Ok(Ok(loaded)) => loaded,
            Ok(Err(source)) => {
                self.loads.load_error();
                let err = Error::loader(&first_key, source);
                tracing::debug!(keys = to_load.len(), %err, "batch loader failed; nothing cached");
                for (_, leader, _) in to_load {
                    leader.finish(Err(err.clone()));
                }
                return Err(err);
            }
            Err(panic) => {
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
        let policy = self.defaults.resolve(options);
        let spec = WriteSpec::new(options, policy, self.default_ttl, started.elapsed());
        let mut first_error = None;
        for (index, leader, stamp) in to_load {
            let key = keys[index];
            let value = loaded.remove(key).map(Arc::new);
            let filled = self.fill(key, value.clone(), options, spec.clone(), stamp);
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
}

impl<C: Codec> Cache<C> {
    /// The values under `keys`, in order, cloned out of the cache: L1 for each key, then one
    /// batch read per lower tier for the keys that missed above it (on Redis, one `MGET` per hash
    /// slot). Hits below L1 are promoted, as with [`get`](Self::get).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidKey`] when any key breaks the key rules (nothing is read).
    pub async fn get_many<T>(&self, keys: &[&str]) -> Result<Vec<Option<T>>>
    where
        T: DeserializeOwned + Clone + Send + Sync + 'static,
    {
        let found = self.get_many_arc::<T>(keys).await?;
        Ok(found
            .into_iter()
            .map(|v| v.map(Arc::unwrap_or_clone))
            .collect())
    }

    /// Like [`get_many`](Self::get_many), handing back the shared `Arc<T>`s.
    ///
    /// # Errors
    ///
    /// As [`get_many`](Self::get_many).
    pub async fn get_many_arc<T>(&self, keys: &[&str]) -> Result<Vec<Option<Arc<T>>>>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        let call = async {
            let inner = &*self.inner;
            let decode = |bytes: &Bytes| inner.envelope.decode::<T>(bytes);
            let found = inner.read_many::<T, _>(keys, decode).await?;
            Ok(found
                .into_iter()
                .map(|lookup| match lookup {
                    Lookup::Hit(value) => Some(value),
                    Lookup::Negative | Lookup::Miss => None,
                })
                .collect())
        };
        let first = keys.first().copied().unwrap_or_default();
        observe::traced(call_span!("get_many", first), call, observe::no_hit).await
    }

    /// Stores every `(key, value)` in every tier, with one batch write per tier below L1 (on
    /// Redis, grouped by hash slot), then publishes one message naming every key (values never
    /// travel with it, whatever [`BusOptions::updates_up_to`](crate::BusOptions::updates_up_to)
    /// says).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidKey`] or [`Error::Encode`] for any entry (nothing is written); otherwise
    /// the first tier failure, after all tiers were tried, or the bus's error.
    pub async fn set_many<T>(
        &self,
        entries: &[(&str, T)],
        options: impl Into<EntryOptions>,
    ) -> Result<()>
    where
        T: Serialize + Clone + Send + Sync + 'static,
    {
        let options = options.into();
        let call = async {
            let inner = &*self.inner;
            validate_tags(options.tags_value())?;
            let spec = inner.write_spec(&options);
            let mut prepared = Vec::with_capacity(entries.len());
            for (key, value) in entries {
                validate_key(key)?;
                let bytes = inner.encode_for_tiers(key, value, &spec)?;
                prepared.push(((*key).to_owned(), Arc::new(value.clone()), bytes));
            }
            inner.write_many(prepared, &spec).await
        };
        let first = entries.first().map(|(key, _)| *key).unwrap_or_default();
        observe::traced(call_span!("set_many", first), call, observe::no_hit).await
    }

    /// get-or-compute for many keys at once. The tiers are read as in
    /// [`get_many`](Self::get_many); the keys that missed everywhere go to `loader` in one call
    /// (minus any another caller is already loading, which this call waits for instead), and
    /// what it returns is stored in every tier. A key the loader leaves out of its map is "not
    /// found": `None`, cached as negative when the options set a
    /// [`negative_ttl`](EntryOptions::negative_ttl).
    ///
    /// `loader` is called at most once per round; a second round happens only for keys whose
    /// loading caller was cancelled meanwhile.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> tiercache::Result<()> {
    /// use std::collections::HashMap;
    /// use tiercache::{Cache, CacheStrategy, MemoryTier};
    ///
    /// let cache = Cache::builder().memory(MemoryTier::new(1_000)).build().await?;
    /// cache.set("user:1", &"ada".to_owned(), CacheStrategy::ShortTerm).await?;
    /// let names = cache
    ///     .get_or_compute_many(&["user:1", "user:2", "user:3"], CacheStrategy::ShortTerm, |missing| async move {
    ///         // One query for every key that missed: here "user:2" and "user:3".
    ///         assert_eq!(missing, ["user:2", "user:3"]);
    ///         Ok::<_, std::io::Error>(HashMap::from([("user:2".to_owned(), "grace".to_owned())]))
    ///     })
    ///     .await?;
    /// assert_eq!(names, [Some("ada".to_owned()), Some("grace".to_owned()), None]);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidKey`]; [`Error::Loader`] when the loader fails (nothing is cached, and
    /// callers waiting for these keys get the same error); [`Error::Encode`] for a loaded value
    /// that does not encode. A loader panic goes on in this caller; waiters get
    /// [`Error::LoaderPanicked`].
    pub async fn get_or_compute_many<T, F, Fut, E>(
        &self,
        keys: &[&str],
        options: impl Into<EntryOptions>,
        loader: F,
    ) -> Result<Vec<Option<T>>>
    where
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        F: Fn(Vec<String>) -> Fut,
        Fut: Future<Output = std::result::Result<HashMap<String, T>, E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let options = options.into();
        let call = async {
            let found = self.inner.compute_many(keys, &options, loader).await?;
            Ok(found
                .into_iter()
                .map(|v| v.map(Arc::unwrap_or_clone))
                .collect())
        };
        let first = keys.first().copied().unwrap_or_default();
        observe::traced(
            call_span!("get_or_compute_many", first),
            call,
            observe::no_hit,
        )
        .await
    }
}
