//! The `Cache` handle and its public operations.

use std::{future::Future, sync::Arc, time::Duration};

use serde::{Serialize, de::DeserializeOwned};
use tiercache_core::{
    Bytes, CacheStats, Codec, Decoded, EntryOptions, Envelope, Error, JsonCodec, LoadCounters,
    Namespace, Result, validate_key,
};

use crate::{
    CacheBuilder,
    bus::BusLink,
    flight::Flights,
    guard::InvalidationClock,
    layer::Layer,
    load::Negatives,
    memory::{Lookup, MemoryLayer, Slot},
};

/// A multi-tier cache: a typed in-process L1 in front of any number of byte tiers.
///
/// A cheap `Clone` handle around shared state: clone it into every task and handler.
///
/// Values are typed at each call. L1 keeps them decoded (`Arc<T>`), so an L1 hit costs a lookup
/// and, for [`get`](Self::get), one `T::clone`; [`get_arc`](Self::get_arc) hands back the shared
/// `Arc<T>` itself. The tiers below hold bytes written by the codec `C` ([`JsonCodec`] unless the
/// builder picked another), behind a header that makes a value of another codec or schema
/// version read as a miss.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> tiercache::Result<()> {
/// use tiercache::{Cache, CacheStrategy, MemoryTier};
///
/// let cache = Cache::builder().memory(MemoryTier::new(10_000)).build().await?;
/// let n: u64 = cache
///     .get_or_compute("answer", CacheStrategy::ShortTerm, || async { Ok::<_, std::io::Error>(42) })
///     .await?;
/// assert_eq!(n, 42);
/// assert_eq!(cache.get::<u64>("answer").await?, Some(42));
/// # Ok(()) }
/// ```
pub struct Cache<C: Codec = JsonCodec> {
    pub(crate) inner: Arc<Inner<C>>,
}

impl<C: Codec> Clone for Cache<C> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<C: Codec> std::fmt::Debug for Cache<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("namespace", &self.inner.namespace.name())
            .field("memory", &self.inner.memory.as_ref().map(MemoryLayer::name))
            .field(
                "tiers",
                &self.inner.tiers.iter().map(Layer::name).collect::<Vec<_>>(),
            )
            .field("codec", &C::NAME)
            .field(
                "bus",
                &self.inner.bus.as_ref().map(|link| link.bus().name()),
            )
            .finish()
    }
}

/// The state every clone of a [`Cache`] shares.
#[derive(Debug)]
pub(crate) struct Inner<C> {
    pub(crate) namespace: Namespace,
    pub(crate) memory: Option<MemoryLayer>,
    pub(crate) tiers: Vec<Layer>,
    pub(crate) envelope: Envelope<C>,
    pub(crate) default_ttl: Duration,
    pub(crate) flights: Flights,
    pub(crate) clock: InvalidationClock,
    pub(crate) loads: LoadCounters,
    pub(crate) bus: Option<BusLink>,
    pub(crate) l1_max_age: Option<Duration>,
}

impl Cache<JsonCodec> {
    /// Starts building a cache (JSON codec, 5-minute default TTL, no namespace).
    pub fn builder() -> CacheBuilder<JsonCodec> {
        CacheBuilder::new()
    }
}

impl<C: Codec> Cache<C> {
    /// The value under `key`, cloned out of the cache.
    ///
    /// Reads L1, then each lower tier in order; a lower-tier hit is promoted to the tiers above.
    /// A tier that fails or holds bytes that do not decode as `T` is counted in [`stats`](Self::stats)
    /// and read as a miss, so this answers `Ok(None)` rather than fail when a tier is down.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidKey`] for a key that breaks the key rules.
    pub async fn get<T>(&self, key: &str) -> Result<Option<T>>
    where
        T: DeserializeOwned + Clone + Send + Sync + 'static,
    {
        // Unique when the value did not go into L1 (no L1, or promotion off): then no clone.
        Ok(self.get_arc::<T>(key).await?.map(Arc::unwrap_or_clone))
    }

    /// The value under `key` as the shared `Arc<T>` L1 holds: no clone of `T` on an L1 hit.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    pub async fn get_arc<T>(&self, key: &str) -> Result<Option<Arc<T>>>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        let inner = &*self.inner;
        let decode = |bytes: &Bytes| inner.envelope.decode::<T>(bytes);
        match inner.read_through(key, decode).await? {
            Lookup::Hit(value) => Ok(Some(value)),
            Lookup::Negative | Lookup::Miss => Ok(None),
        }
    }

    /// Stores `value` under `key` in every tier, top-down; then, with a bus, tells the other
    /// instances to drop their L1 copy (or hands them the value, see
    /// [`BusOptions::updates_up_to`](crate::BusOptions::updates_up_to)).
    ///
    /// Every tier is written even when one fails; the L1 write is kept whatever happens below.
    /// The message goes out after the shared tiers are written, so an instance that drops its copy
    /// and reads again finds the new value.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidKey`] (nothing written); [`Error::Encode`] naming the type when the codec
    /// refuses the value (nothing written); otherwise the first tier failure, after all tiers were
    /// tried, or the bus's error when the message could not be sent (the other instances then
    /// empty their L1 when this instance's next message arrives).
    pub async fn set<T>(&self, key: &str, value: &T, options: impl Into<EntryOptions>) -> Result<()>
    where
        T: Serialize + Clone + Send + Sync + 'static,
    {
        self.set_arc(key, Arc::new(value.clone()), options).await
    }

    /// Like [`set`](Self::set), keeping the given `Arc<T>` in L1 as it is.
    ///
    /// # Errors
    ///
    /// As [`set`](Self::set).
    pub async fn set_arc<T>(
        &self,
        key: &str,
        value: Arc<T>,
        options: impl Into<EntryOptions>,
    ) -> Result<()>
    where
        T: Serialize + Send + Sync + 'static,
    {
        validate_key(key)?;
        let inner = &*self.inner;
        let bytes = inner.encode_for_set(key, value.as_ref())?;
        let ttl = options.into().effective_ttl(inner.default_ttl);
        inner.store_and_publish(key, value, bytes, ttl).await
    }

    /// The value under `key`, or the loader's value, stored in every tier on the way back.
    ///
    /// At most one loader runs per key in this process: callers that arrive while it runs wait
    /// for its outcome. A loader error reaches every waiter and nothing is cached. If the loader
    /// panics, the panic continues in the caller that ran it and the waiters get
    /// [`Error::LoaderPanicked`]. If that caller's future is dropped mid-load, a waiter takes over.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidKey`]; [`Error::Loader`] with the loader's error; [`Error::LoaderPanicked`];
    /// [`Error::Encode`] when the loaded value cannot be encoded for the lower tiers.
    pub async fn get_or_compute<T, F, Fut, E>(
        &self,
        key: &str,
        options: impl Into<EntryOptions>,
        loader: F,
    ) -> Result<T>
    where
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let value = self.get_or_compute_arc(key, options, loader).await?;
        Ok(Arc::unwrap_or_clone(value))
    }

    /// Like [`get_or_compute`](Self::get_or_compute), handing back the shared `Arc<T>`.
    ///
    /// # Errors
    ///
    /// As [`get_or_compute`](Self::get_or_compute).
    pub async fn get_or_compute_arc<T, F, Fut, E>(
        &self,
        key: &str,
        options: impl Into<EntryOptions>,
        loader: F,
    ) -> Result<Arc<T>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if let Some(memory) = &self.inner.memory {
            match memory.lookup::<T>(key).await {
                Slot::Ready(Lookup::Hit(value)) => return Ok(value),
                Slot::Encoded(encoded) => {
                    let decode = |bytes: &Bytes| self.inner.envelope.decode::<T>(bytes);
                    // Boxed: the rare path must not grow the hot path's future.
                    let typed =
                        Box::pin(self.inner.type_update(memory, key, &encoded, decode)).await;
                    if let Lookup::Hit(value) = typed {
                        return Ok(value);
                    }
                }
                Slot::Ready(Lookup::Negative | Lookup::Miss) => {}
            }
        }
        let loader = || async move { loader().await.map(Some) };
        let loaded = self
            .inner
            .compute(key, options.into(), Negatives::LoadOver, loader)
            .await?;
        // NOTE: with `LoadOver` and a loader that always yields `Some`, `compute` has no path
        // that returns `None`; the error is here so that a future change cannot turn into a panic.
        loaded.ok_or_else(|| Error::loader(key, "the load produced no value"))
    }

    /// get-or-compute for sources that can say "not found": the loader yields `Option<T>`.
    ///
    /// A `None` is cached as a negative entry for the options'
    /// [`negative_ttl`](EntryOptions::negative_ttl) when one is set (and not cached otherwise),
    /// so repeated lookups of a missing item do not reach the source.
    ///
    /// # Errors
    ///
    /// As [`get_or_compute`](Self::get_or_compute).
    pub async fn get_or_compute_optional<T, F, Fut, E>(
        &self,
        key: &str,
        options: impl Into<EntryOptions>,
        loader: F,
    ) -> Result<Option<T>>
    where
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<Option<T>, E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let inner = &*self.inner;
        let decode = |bytes: &Bytes| inner.envelope.decode::<T>(bytes);
        match inner.lookup_memory::<T, _>(key, decode).await {
            Lookup::Hit(value) => return Ok(Some(T::clone(&value))),
            Lookup::Negative => return Ok(None),
            Lookup::Miss => {}
        }
        let loaded = inner
            .compute(key, options.into(), Negatives::Answer, loader)
            .await?;
        Ok(loaded.map(Arc::unwrap_or_clone))
    }

    /// Removes `key` from every tier, and with a bus from every other instance's L1. A load of
    /// the key in flight meanwhile, here or on another instance, does not put its (older) value
    /// back into L1.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidKey`]; otherwise the first tier failure, after all tiers were tried, or
    /// the bus's error.
    pub async fn invalidate(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        self.inner.remove_everywhere(key).await
    }

    /// Removes every key that starts with `prefix` (taken literally) from every tier, and with a
    /// bus from every other instance's L1.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidKey`] for an empty prefix (use [`clear`](Self::clear)) or one that breaks
    /// the key rules; otherwise the first tier failure, after all tiers were tried, or the bus's
    /// error.
    pub async fn invalidate_prefix(&self, prefix: &str) -> Result<()> {
        validate_key(prefix)?;
        self.inner.remove_prefix_everywhere(prefix).await
    }

    /// Removes every entry of this cache: all of L1, and this cache's namespace in the tiers
    /// below (the whole tier when the cache has no namespace); with a bus, every other
    /// instance's L1 too.
    ///
    /// # Errors
    ///
    /// The first tier failure, after all tiers were tried, or the bus's error.
    pub async fn clear(&self) -> Result<()> {
        self.inner.clear_everywhere().await
    }

    /// The raw bytes under `key`, for untyped use. Bytes are stored as given, without the codec
    /// header, so this API and the typed one should not share keys.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    pub async fn get_bytes(&self, key: &str) -> Result<Option<Bytes>> {
        let raw = |bytes: &Bytes| Ok(Decoded::Value(bytes.clone()));
        match self.inner.read_through(key, raw).await? {
            Lookup::Hit(value) => Ok(Some(Bytes::clone(&value))),
            Lookup::Negative | Lookup::Miss => Ok(None),
        }
    }

    /// Stores raw bytes under `key` in every tier, as they are.
    ///
    /// # Errors
    ///
    /// As [`set`](Self::set).
    pub async fn set_bytes(
        &self,
        key: &str,
        value: impl Into<Bytes>,
        options: impl Into<EntryOptions>,
    ) -> Result<()> {
        validate_key(key)?;
        let inner = &*self.inner;
        let value: Bytes = value.into();
        let ttl = options.into().effective_ttl(inner.default_ttl);
        let bytes = Some(value.clone());
        inner
            .store_and_publish(key, Arc::new(value), bytes, ttl)
            .await
    }

    /// Counters of every tier, top-down, of the loader, and of the bus (connected, messages,
    /// gaps, L1 flushes, time since the last message).
    pub fn stats(&self) -> CacheStats {
        let inner = &*self.inner;
        CacheStats::new(
            inner.memory.as_ref().map(MemoryLayer::stats),
            inner.tiers.iter().map(Layer::stats).collect(),
            &inner.loads,
        )
        .with_bus(inner.bus.as_ref().map(BusLink::stats))
    }

    /// The namespace (empty for none).
    pub fn namespace(&self) -> &str {
        self.inner.namespace.name()
    }

    /// Loads in flight right now (one per key being loaded). Zero whenever no call is running:
    /// a load that ends in any way — value, error, panic or cancellation — leaves nothing behind.
    pub fn loads_in_flight(&self) -> usize {
        self.inner.flights.len()
    }
}
