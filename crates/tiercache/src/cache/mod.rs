//! The `Cache` handle: each public operation opens its span and makes one call into the engine.
//! Single-key operations are here, batch ones in `batch.rs`.

mod adaptive;
mod batch;

pub use adaptive::Refresh;

use std::{future::Future, sync::Arc};

use serde::{Serialize, de::DeserializeOwned};
use tiercache_core::{Bytes, CacheStats, Codec, Decoded, EntryOptions, Error, JsonCodec, Result};

use crate::{
    CacheBuilder,
    engine::{Engine, Negatives},
    observe::{self, call_span},
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
    engine: Arc<Engine<C>>,
}

impl<C: Codec> Clone for Cache<C> {
    fn clone(&self) -> Self {
        Self {
            engine: Arc::clone(&self.engine),
        }
    }
}

impl<C: Codec> std::fmt::Debug for Cache<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (memory, tiers, bus) = self.engine.describe();
        f.debug_struct("Cache")
            .field("namespace", &self.engine.namespace())
            .field("memory", &memory)
            .field("tiers", &tiers)
            .field("codec", &C::NAME)
            .field("bus", &bus)
            .finish()
    }
}

impl Cache<JsonCodec> {
    /// Starts building a cache (JSON codec, 5-minute default TTL, no namespace).
    pub fn builder() -> CacheBuilder<JsonCodec> {
        CacheBuilder::new()
    }
}

impl<C: Codec> Cache<C> {
    pub(crate) fn new(engine: Arc<Engine<C>>) -> Self {
        Self { engine }
    }

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
        let found =
            observe::traced_inline!(call_span!("get", key), self.read::<T>(key), observe::found)?;
        Ok(found.map(Arc::unwrap_or_clone))
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
        observe::traced_inline!(call_span!("get", key), self.read::<T>(key), observe::found)
    }

    async fn read<T>(&self, key: &str) -> Result<Option<Arc<T>>>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        let engine = &*self.engine;
        let decode = |bytes: &Bytes| engine.decode::<T>(bytes);
        engine.read(key, &decode).await
    }

    /// Stores `value` under `key` in every tier, top-down; then, with a bus, tells the other
    /// instances to drop their L1 copy (or hands them the value, see
    /// [`BusOptions::updates_up_to`](crate::BusOptions::updates_up_to)).
    ///
    /// The options' [tags](EntryOptions::tags) go with the value (see
    /// [`invalidate_tag`](Self::invalidate_tag)); with [fail-safe](EntryOptions::fail_safe)
    /// (here or as the cache's default) the value is kept past its TTL as a fallback.
    ///
    /// Every tier is written even when one fails; the L1 write is kept whatever happens below.
    /// The message goes out after the shared tiers are written, so an instance that drops its copy
    /// and reads again finds the new value.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidKey`] or [`Error::InvalidTag`] (nothing written); [`Error::Encode`] naming
    /// the type when the codec refuses the value (nothing written); otherwise the first tier failure, after all tiers were
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
        let options = options.into();
        let write = self.engine.set(key, value, &options);
        observe::traced(call_span!("set", key), write, observe::no_hit).await
    }

    /// The value under `key`, or the loader's value, stored in every tier on the way back.
    ///
    /// At most one loader runs per key in this process: callers that arrive while it runs wait
    /// for its outcome. A loader error reaches every waiter and nothing is cached. If the loader
    /// panics, the panic continues in the caller that ran it and the waiters get
    /// [`Error::LoaderPanicked`]. If that caller's future is dropped mid-load, a waiter takes over.
    ///
    /// The loader is `Send + 'static` (capture clones, not borrows) because it may run in the
    /// background, where the options (or the cache's defaults) ask for it:
    ///
    /// - [fail-safe](EntryOptions::fail_safe): when the loader fails or times out and a stale
    ///   copy is kept, the call answers with it (counted in `stats().stale_served`) and keeps
    ///   answering with it for the throttle, without calling the loader;
    /// - [soft timeout](EntryOptions::soft_timeout): past it, a call with a stale copy answers
    ///   with it while the load goes on in the background and updates the cache;
    /// - [hard timeout](EntryOptions::hard_timeout): past it, the loader's future is dropped and
    ///   the call answers with the stale copy, or fails with [`Error::Timeout`];
    /// - [eager refresh](EntryOptions::eager_refresh): a hit near the end of the entry's life
    ///   answers at once and starts one background load of the key.
    ///
    /// Background loads are bounded ([`CacheBuilder::background_loads`]) and are aborted when
    /// the last clone of the cache is dropped.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidKey`]; [`Error::Loader`] with the loader's error; [`Error::LoaderPanicked`];
    /// [`Error::Timeout`] at the hard timeout without a stale copy; [`Error::Encode`] when the
    /// loaded value cannot be encoded for the lower tiers.
    pub async fn get_or_compute<T, F, Fut, E>(
        &self,
        key: &str,
        options: impl Into<EntryOptions>,
        loader: F,
    ) -> Result<T>
    where
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<T, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
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
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<T, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        // The loader wrapped here, and the engine's `compute` awaited right inside the span: no
        // layer of futures between the handle and the engine on the hit path.
        let loader = || async move { loader().await.map(Some) };
        let loaded = observe::traced_inline!(
            call_span!("get_or_compute", key),
            self.engine
                .compute(key, options, Negatives::LoadOver, None, loader),
            observe::no_hit
        )?;
        Self::always_loaded(key, loaded)
    }

    /// get-or-compute of a value that is always there (the loader yields `Some`), with or
    /// without an exchange with the loader (`adaptive.rs`).
    pub(super) async fn compute_value<T, O, F, Fut, E>(
        &self,
        key: &str,
        options: O,
        adaptive: Option<Arc<crate::engine::Adaptive<T>>>,
        loader: F,
    ) -> Result<Arc<T>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        O: Into<EntryOptions>,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<Option<T>, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        let loaded = self
            .engine
            .compute(key, options, Negatives::LoadOver, adaptive, loader)
            .await?;
        Self::always_loaded(key, loaded)
    }

    /// The value of a get-or-compute whose loader always yields `Some`.
    fn always_loaded<T>(key: &str, loaded: Option<Arc<T>>) -> Result<Arc<T>> {
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
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<Option<T>, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        let call = async {
            let loaded = self
                .engine
                .compute(key, options, Negatives::Answer, None, loader)
                .await?;
            Ok(loaded.map(Arc::unwrap_or_clone))
        };
        observe::traced(call_span!("get_or_compute", key), call, observe::found).await
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
        let call = self.engine.invalidate(key);
        observe::traced(call_span!("invalidate", key), call, observe::no_hit).await
    }

    /// Removes each of `keys` from every tier, and with a bus from every other instance's L1, as
    /// [`invalidate`](Self::invalidate) does for one key: the tiers are written concurrently and
    /// one bus message carries up to 4,096 keys (a longer list goes in several).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> tiercache::Result<()> {
    /// use tiercache::{Cache, CacheStrategy, MemoryTier};
    ///
    /// let cache = Cache::builder().memory(MemoryTier::new(1_000)).build().await?;
    /// for id in 1..=3u32 {
    ///     cache.set(&format!("order:{id}"), &id, CacheStrategy::ShortTerm).await?;
    /// }
    /// cache.invalidate_many(&["order:1", "order:2"]).await?;
    /// assert_eq!(cache.get::<u32>("order:1").await?, None);
    /// assert_eq!(cache.get::<u32>("order:3").await?, Some(3));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidKey`] for the first key that breaks the key rules (then nothing is
    /// removed); otherwise the first tier failure, after all tiers were tried, or the bus's
    /// error.
    pub async fn invalidate_many(&self, keys: &[&str]) -> Result<()> {
        let first = keys.first().copied().unwrap_or_default();
        let call = self.engine.invalidate_many(keys);
        observe::traced(call_span!("invalidate_many", first), call, observe::no_hit).await
    }

    /// Drops every entry [tagged](EntryOptions::tags) `tag` from every tier, and with a bus from
    /// every other instance's L1. Entries written after this call are not affected.
    ///
    /// No key lists are kept: this writes one small marker per tier holding the time, and a
    /// tagged value read below L1 is a miss when it was written before a tag's marker. See the
    /// README's "Tags" section for the costs and the clock assumption.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> tiercache::Result<()> {
    /// use tiercache::{Cache, CacheStrategy, EntryOptions, MemoryTier, MokaTier};
    ///
    /// let cache = Cache::builder().memory(MemoryTier::new(1_000)).tier(MokaTier::new(10_000)).build().await?;
    /// let tagged = EntryOptions::new(CacheStrategy::ShortTerm).tags(["tenant:7"]);
    /// cache.set("invoice:1", &100u32, tagged.clone()).await?;
    /// cache.set("invoice:2", &200u32, tagged).await?;
    /// cache.set("invoice:3", &300u32, CacheStrategy::ShortTerm).await?;
    ///
    /// cache.invalidate_tag("tenant:7").await?;
    /// assert_eq!(cache.get::<u32>("invoice:1").await?, None);
    /// assert_eq!(cache.get::<u32>("invoice:2").await?, None);
    /// assert_eq!(cache.get::<u32>("invoice:3").await?, Some(300));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTag`]; otherwise the first tier failure, after all tiers were tried, or
    /// the bus's error.
    pub async fn invalidate_tag(&self, tag: &str) -> Result<()> {
        let call = self.engine.invalidate_tag(tag);
        observe::traced(call_span!("invalidate_tag", tag), call, observe::no_hit).await
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
        let call = self.engine.invalidate_prefix(prefix);
        observe::traced(
            call_span!("invalidate_prefix", prefix),
            call,
            observe::no_hit,
        )
        .await
    }

    /// Removes every entry of this cache: all of L1, and this cache's namespace in the tiers
    /// below (never more: the unnamed namespace is `:<key>`, so other caches' keys stay; the
    /// namespace's tag markers and stream bus go too); with a bus, every other instance's L1.
    ///
    /// # Errors
    ///
    /// The first tier failure, after all tiers were tried, or the bus's error.
    pub async fn clear(&self) -> Result<()> {
        let call = self.engine.clear();
        observe::traced(call_span!("clear", ""), call, observe::no_hit).await
    }

    /// Publishes the cache's stats now through the `metrics` crate facade (counters named
    /// `tiercache_*_total`, labelled `cache` with the namespace and, per tier, `tier`). Call it
    /// from your own scrape hook, or let [`CacheBuilder::metrics_every`](crate::CacheBuilder::metrics_every)
    /// do it on a timer.
    #[cfg(feature = "metrics")]
    pub fn record_metrics(&self) {
        crate::metrics::record(&self.stats(), self.namespace());
    }

    /// The engine behind the handle, for the handle's other files.
    pub(crate) fn engine(&self) -> &Arc<Engine<C>> {
        &self.engine
    }

    /// The raw bytes under `key`, for untyped use. Bytes are stored as given, without the codec
    /// header, so this API and the typed one should not share keys.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    pub async fn get_bytes(&self, key: &str) -> Result<Option<Bytes>> {
        let call = async {
            let raw = |bytes: &Bytes| Ok(Decoded::Value(bytes.clone()));
            let found = self.engine.read(key, &raw).await?;
            Ok(found.map(|value| Bytes::clone(&value)))
        };
        observe::traced(call_span!("get_bytes", key), call, observe::found).await
    }

    /// Stores raw bytes under `key` in every tier, as they are. Raw bytes have no header, so
    /// the options' tags and fail-safe window do not apply to them.
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
        let options = options.into();
        let call = self.engine.set_bytes(key, value.into(), &options);
        observe::traced(call_span!("set_bytes", key), call, observe::no_hit).await
    }

    /// Counters of every tier, top-down, of the loader, and of the bus (connected, messages,
    /// gaps, L1 flushes, time since the last message).
    pub fn stats(&self) -> CacheStats {
        self.engine.stats()
    }

    /// The state of every part of the cache: L1, each tier below it (probed now with one read
    /// of a reserved key, at most [`HEALTH_PROBE_TIMEOUT`](crate::HEALTH_PROBE_TIMEOUT) each,
    /// concurrently) and the bus. For a `/healthz` handler: [`Health::status`](crate::Health::status)
    /// is the worst part's.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> tiercache::Result<()> {
    /// use tiercache::{Cache, MemoryTier, MokaTier, PartStatus};
    ///
    /// let cache = Cache::builder()
    ///     .memory(MemoryTier::new(1_000))
    ///     .tier(MokaTier::new(10_000))
    ///     .build()
    ///     .await?;
    /// let health = cache.health().await;
    /// assert_eq!(health.status(), PartStatus::Up);
    /// assert_eq!(health.parts.len(), 2);
    /// # Ok(()) }
    /// ```
    pub async fn health(&self) -> crate::Health {
        self.engine.health().await
    }

    /// A subscription to what this cache does from now on: hits, misses, loads, fail-safe
    /// answers, fills kept out because of an invalidation, bus gaps. A bounded broadcast: the
    /// cache never waits for a subscriber; one that falls more than
    /// [`EVENT_BUFFER`](crate::EVENT_BUFFER) events behind loses the oldest and counts them
    /// ([`Events::missed`](crate::Events::missed)). Events are built only while someone is
    /// subscribed.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> tiercache::Result<()> {
    /// use tiercache::{Cache, CacheEvent, CacheStrategy, MemoryTier};
    ///
    /// let cache = Cache::builder().memory(MemoryTier::new(1_000)).build().await?;
    /// let mut events = cache.events();
    /// let _n: u32 = cache
    ///     .get_or_compute("n", CacheStrategy::ShortTerm, || async { Ok::<_, std::io::Error>(1) })
    ///     .await?;
    /// assert_eq!(events.recv().await, Some(CacheEvent::Miss { key: "n".into() }));
    /// assert!(matches!(events.recv().await, Some(CacheEvent::Loaded { key, .. }) if key == "n"));
    /// # Ok(()) }
    /// ```
    pub fn events(&self) -> crate::Events {
        self.engine.events()
    }

    /// The namespace (empty for none).
    pub fn namespace(&self) -> &str {
        self.engine.namespace()
    }

    /// The longest an L1 entry lives whatever its TTL, when there is such a bound (see
    /// [`CacheBuilder::l1_max_age`](crate::CacheBuilder::l1_max_age); with a bus it defaults to
    /// [`DEFAULT_L1_MAX_AGE_WITH_BUS`](crate::DEFAULT_L1_MAX_AGE_WITH_BUS)).
    pub fn l1_max_age(&self) -> Option<std::time::Duration> {
        self.engine.l1_max_age()
    }

    /// Loads in flight right now (one per key being loaded), the background ones included.
    /// Zero whenever no call is running and nothing runs in the background: a load that ends in
    /// any way — value, error, panic, timeout or cancellation — leaves nothing behind.
    pub fn loads_in_flight(&self) -> usize {
        self.engine.loads_in_flight()
    }

    /// Loads running in the background right now (eager refreshes, and loads that passed
    /// their soft timeout). They are aborted when the last clone of the cache is dropped.
    pub fn background_loads(&self) -> usize {
        self.engine.background_loads()
    }
}
