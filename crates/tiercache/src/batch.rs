//! Batches: one batch read per tier for the keys that missed above it, and one batch write per
//! tier; the facade's batch calls. Loading what missed everywhere is in `batch_load.rs`.

use std::{
    any::Any,
    collections::HashMap,
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use serde::{Serialize, de::DeserializeOwned};
use tiercache_core::{
    Bytes, Codec, DecodeError, Decoded, Entry, EntryOptions, Invalidation, Result, validate_key,
    validate_tags,
};

// Named by the docs' error links.
#[cfg(doc)]
use tiercache_core::Error;

use crate::{
    Cache,
    cache::Inner,
    guard::Stamp,
    memory::{Lookup, Placement},
    observe::{self, call_span},
    policy::{Life, Stale},
    read::{Behind, Examined},
    write::WriteSpec,
};

/// What a batch read found for one key, and the first stale copy met on the way: the fallback
/// fail-safe answers with when loading the key fails.
pub(crate) struct ReadOne<T> {
    pub(crate) found: Lookup<T>,
    pub(crate) stale: Option<Stale<T>>,
}

impl<C: Codec> Inner<C> {
    /// Reads `keys` through every tier: L1 for each key, then one `get_many` per lower tier for
    /// the keys still missing (the Redis tier makes that one `MGET` per hash slot). Hits are
    /// promoted upwards like single reads. One answer per key, in order, with any stale copy
    /// met on the way.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidKey`] when any key breaks the key rules (nothing is read then).
    pub(crate) async fn read_many<T, D>(&self, keys: &[&str], decode: D) -> Result<Vec<ReadOne<T>>>
    where
        T: Any + Send + Sync,
        D: Fn(&Bytes) -> Result<Decoded<T>, DecodeError>,
    {
        for key in keys {
            validate_key(key)?;
        }
        let mut found = Vec::with_capacity(keys.len());
        for key in keys {
            let mut one = ReadOne {
                found: self.lookup_memory::<T, _>(key, &decode).await,
                stale: None,
            };
            if matches!(one.found, Lookup::Miss) {
                match self.behind_front::<T>(key).await {
                    Behind::Fresh(value) => one.found = Lookup::Hit(value),
                    Behind::Stale(stale) => one.stale = Some(stale),
                    Behind::Nothing => {}
                }
            }
            found.push(one);
        }
        // Stamped before the tiers below are read, so an invalidation meanwhile wins (guard.rs).
        let mut missing: Vec<(usize, Stamp)> = found
            .iter()
            .enumerate()
            .filter(|(_, one)| matches!(one.found, Lookup::Miss))
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
                let (value, meta) = match self.examine(layer, key, &entry, &decode).await {
                    Examined::Fresh(value, meta) => (value, meta),
                    Examined::Stale(stale) => {
                        found[index].stale.get_or_insert(stale);
                        still_missing.push((index, stamp));
                        continue;
                    }
                    Examined::Unusable => {
                        still_missing.push((index, stamp));
                        continue;
                    }
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
                found[index].found = value.map_or(Lookup::Negative, Lookup::Hit);
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
                .map(|one| match one.found {
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
    /// The options' (or the cache's) hard timeout bounds the loader call and the waits for other
    /// callers' loads together. With [fail-safe](EntryOptions::fail_safe), a key whose load fails
    /// or passes the hard timeout answers with the stale value met in any tier, served again for
    /// the throttle like a single load's; the call fails only when some such key has none. The
    /// soft timeout and eager refresh do not apply: they would need a loader that outlives the
    /// call.
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
    /// [`Error::InvalidKey`]; [`Error::Loader`] when the loader fails, or [`Error::Timeout`]
    /// when it passes the hard timeout, for a key without a stale fallback (nothing is cached,
    /// and callers waiting for these keys get the same error); [`Error::Encode`] for a loaded
    /// value that does not encode. A loader panic goes on in this caller; waiters get
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
