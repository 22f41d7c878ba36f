//! Building a [`Cache`]: the tiers top-down, the namespace, the codec and the default TTL.

use std::{sync::Arc, time::Duration};

use tiercache_core::{
    Bus, CacheStrategy, Codec, DEFAULT_TTL, EagerRefresh, Envelope, Error, FailSafe, JsonCodec,
    LoadCounters, Namespace, Result, Tier, clamp_duration,
};

#[cfg(doc)]
use tiercache_core::EntryOptions;

use crate::{
    BusOptions, Cache, DEFAULT_BACKGROUND_LOADS, DEFAULT_TAG_CHECK_INTERVAL, DEFAULT_TAG_RETENTION,
    TierOptions,
    coherence::Coherence,
    engine::{Engine, Parts},
    front::Front,
    policy::Defaults,
    stack::{Level, Stack},
};

/// The L1 the builder was given: the moka tier and its options (nothing without `moka`).
#[cfg(feature = "moka")]
type Memory = (tiercache_moka::MemoryTier, TierOptions);
#[cfg(not(feature = "moka"))]
type Memory = std::convert::Infallible;

/// The L1 max age of a cache with a bus that sets none (see [`CacheBuilder::l1_max_age`]).
pub const DEFAULT_L1_MAX_AGE_WITH_BUS: Duration = Duration::from_secs(60);

/// Builds a [`Cache`]. Tiers are given top-down: [`memory`](Self::memory) is L1, then each
/// [`tier`](Self::tier) call adds the next level (L2, L3, ...).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> tiercache::Result<()> {
/// use tiercache::{Cache, CacheStrategy, MemoryTier, MokaTier, TierOptions};
///
/// let cache = Cache::builder()
///     .namespace("shop")
///     .memory_with(MemoryTier::new(10_000), TierOptions::new().ttl_scale(0.5))
///     .tier(MokaTier::new(100_000))
///     .default_strategy(CacheStrategy::MediumTerm)
///     .build()
///     .await?;
/// assert_eq!(cache.namespace(), "shop");
/// # Ok(()) }
/// ```
#[must_use = "a builder does nothing until .build() is awaited"]
pub struct CacheBuilder<C: Codec = JsonCodec> {
    namespace: String,
    memory: Option<Memory>,
    tiers: Vec<Level>,
    codec: C,
    schema_version: u16,
    compress_above: Option<usize>,
    default_strategy: CacheStrategy,
    bus: Option<(Arc<dyn Bus>, BusOptions)>,
    l1_max_age: Option<Duration>,
    defaults: Defaults,
    background_loads: usize,
    tag_check_interval: Duration,
    tag_retention: Duration,
    #[cfg(feature = "metrics")]
    metrics_every: Option<Duration>,
}

impl std::fmt::Debug for CacheBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheBuilder")
            .field("namespace", &self.namespace)
            .field("tiers", &self.tiers.len())
            .finish_non_exhaustive()
    }
}

impl Default for CacheBuilder<JsonCodec> {
    fn default() -> Self {
        Self::new()
    }
}

impl CacheBuilder<JsonCodec> {
    /// A builder with no tiers, no namespace, the JSON codec, schema version 0 and the
    /// [`CacheStrategy::Default`] TTL of 5 minutes.
    pub fn new() -> Self {
        Self {
            namespace: String::new(),
            memory: None,
            tiers: Vec::new(),
            codec: JsonCodec,
            schema_version: 0,
            compress_above: None,
            default_strategy: CacheStrategy::Default,
            bus: None,
            l1_max_age: None,
            defaults: Defaults::default(),
            background_loads: DEFAULT_BACKGROUND_LOADS,
            tag_check_interval: DEFAULT_TAG_CHECK_INTERVAL,
            tag_retention: DEFAULT_TAG_RETENTION,
            #[cfg(feature = "metrics")]
            metrics_every: None,
        }
    }
}

impl<C: Codec> CacheBuilder<C> {
    /// Prefixes every key in the tiers below L1 with `namespace:` (and, with a bus, names its
    /// channel), so caches that share a Redis never see each other's keys. A name may not hold
    /// `:` (so no two (namespace, key) pairs store the same key; [`build`](Self::build) says so);
    /// without one, keys are stored as `:<key>`. Default: none.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Sets the typed in-process L1, with default [`TierOptions`]. Default: no L1.
    #[cfg(feature = "moka")]
    pub fn memory(self, tier: tiercache_moka::MemoryTier) -> Self {
        self.memory_with(tier, TierOptions::new())
    }

    /// Sets the typed in-process L1 with its options (TTL scale, whether lower-tier hits are
    /// promoted into it).
    #[cfg(feature = "moka")]
    pub fn memory_with(mut self, tier: tiercache_moka::MemoryTier, options: TierOptions) -> Self {
        self.memory = Some((tier, options));
        self
    }

    /// Adds the next tier below the ones already given, with default [`TierOptions`].
    /// An `Arc<dyn Tier>` is a tier too.
    pub fn tier(self, tier: impl Tier + 'static) -> Self {
        self.tier_with(tier, TierOptions::new())
    }

    /// Adds the next tier below the ones already given, with its options.
    pub fn tier_with(mut self, tier: impl Tier + 'static, options: TierOptions) -> Self {
        let tier: Arc<dyn Tier> = Arc::new(tier);
        self.tiers.push(Level::new(tier, options));
        self
    }

    /// Replaces the codec of the bytes written below L1. Default: [`JsonCodec`].
    pub fn codec<C2: Codec>(self, codec: C2) -> CacheBuilder<C2> {
        CacheBuilder {
            namespace: self.namespace,
            memory: self.memory,
            tiers: self.tiers,
            codec,
            schema_version: self.schema_version,
            compress_above: self.compress_above,
            default_strategy: self.default_strategy,
            bus: self.bus,
            l1_max_age: self.l1_max_age,
            defaults: self.defaults,
            background_loads: self.background_loads,
            tag_check_interval: self.tag_check_interval,
            tag_retention: self.tag_retention,
            #[cfg(feature = "metrics")]
            metrics_every: self.metrics_every,
        }
    }

    /// The schema version written into every stored value's header. Bump it when a cached type
    /// changes shape: values written under another version then read as misses. Default: 0.
    pub fn schema_version(mut self, version: u16) -> Self {
        self.schema_version = version;
        self
    }

    /// Compresses values whose encoding is longer than `bytes` before they go below L1 (LZ4,
    /// feature `lz4`; only when that makes them shorter). L1 holds decoded values, so its hits
    /// never pay for it. Every cache built with the `lz4` feature reads compressed values
    /// whatever its own setting, so the threshold can change in a rolling deploy; a build
    /// without the feature reads them as misses. Default: off.
    #[cfg(feature = "lz4")]
    pub fn compress_above(mut self, bytes: usize) -> Self {
        self.compress_above = Some(bytes);
        self
    }

    /// What [`CacheStrategy::Default`] means for this cache. Default: 5 minutes.
    pub fn default_strategy(mut self, strategy: CacheStrategy) -> Self {
        self.default_strategy = strategy;
        self
    }

    /// Keeps this instance's L1 coherent with other instances through `bus`, with default
    /// [`BusOptions`]: every `set`, `invalidate`, `invalidate_prefix` and `clear` is published,
    /// and what other instances publish is dropped from this L1. Default: no bus.
    pub fn bus(self, bus: impl Bus + 'static) -> Self {
        self.bus_with(bus, BusOptions::new())
    }

    /// Like [`bus`](Self::bus), with options (channel name, values sent along with `set`).
    pub fn bus_with(mut self, bus: impl Bus + 'static, options: BusOptions) -> Self {
        self.bus = Some((Arc::new(bus), options));
        self
    }

    /// No L1 entry lives longer than `max_age`, whatever its TTL: a bound on staleness that holds
    /// even when the bus is silently dead (or there is none). Default: with a bus,
    /// [`DEFAULT_L1_MAX_AGE_WITH_BUS`] (60 s: a bus that died without a word is then noticed
    /// within a minute, for one read of the tier below per hot key per minute); without one, no
    /// bound. `Duration::MAX` means no bound; any other age past [`MAX_TTL`](crate::MAX_TTL) is
    /// cut to it.
    pub fn l1_max_age(mut self, max_age: Duration) -> Self {
        self.l1_max_age = Some(max_age);
        self
    }

    /// Fail-safe for every call that does not set its own (see [`FailSafe`]): entries are kept
    /// `max_stale` past their TTL and a failed or timed-out load answers with the stale value.
    /// Default: off.
    pub fn fail_safe(mut self, fail_safe: FailSafe) -> Self {
        self.defaults.fail_safe = fail_safe;
        self
    }

    /// The soft timeout of every load whose call does not set one (see
    /// [`EntryOptions::soft_timeout`]). Default: none.
    pub fn soft_timeout(mut self, timeout: Duration) -> Self {
        self.defaults.soft_timeout = Some(timeout);
        self
    }

    /// The hard timeout of every load whose call does not set one (see
    /// [`EntryOptions::hard_timeout`]). Default: none.
    pub fn hard_timeout(mut self, timeout: Duration) -> Self {
        self.defaults.hard_timeout = Some(timeout);
        self
    }

    /// How loads use leases on the shared tiers (see [`LeaseOptions`](crate::LeaseOptions)): on by default, so a
    /// fill never overwrites a newer write in Redis and one instance loads a key while the
    /// others wait for its value. `LeaseOptions::disabled()` turns them off.
    pub fn leases(mut self, leases: crate::LeaseOptions) -> Self {
        self.defaults.leases = leases;
        self
    }

    /// Eager refresh for every call that does not set its own (see [`EagerRefresh`]).
    /// Default: off.
    pub fn eager_refresh(mut self, eager_refresh: EagerRefresh) -> Self {
        self.defaults.eager_refresh = eager_refresh;
        self
    }

    /// A load running in the background (an eager refresh, a load past its soft timeout) is
    /// dropped after `timeout` when its call sets no shorter hard timeout, so a loader that never
    /// returns cannot hold its key's flight and a background slot for good. Default:
    /// [`DEFAULT_BACKGROUND_TIMEOUT`](crate::DEFAULT_BACKGROUND_TIMEOUT) (30 s).
    pub fn background_timeout(mut self, timeout: Duration) -> Self {
        self.defaults.background_timeout = timeout;
        self
    }

    /// At most `limit` loads run in the background at once (eager refreshes, and loads that
    /// passed their soft timeout). Past it, a refresh is skipped and a soft timeout keeps the
    /// caller waiting. Default: [`DEFAULT_BACKGROUND_LOADS`]. A limit past what a semaphore counts
    /// (`usize::MAX >> 3`) is cut to that.
    pub fn background_loads(mut self, limit: usize) -> Self {
        self.background_loads = limit;
        self
    }

    /// How long this instance trusts a tag's invalidation time before reading its marker again
    /// on a lower-tier read of a tagged value. With a bus, invalidations reach other instances
    /// at once anyway; this bounds how late an instance learns of one it missed. Default:
    /// [`DEFAULT_TAG_CHECK_INTERVAL`]. Cut to [`MAX_TTL`](crate::MAX_TTL).
    pub fn tag_check_interval(mut self, interval: Duration) -> Self {
        self.tag_check_interval = interval;
        self
    }

    /// How long a tag's invalidation marker stays in the tiers below L1. Entries that can live
    /// longer (TTL plus fail-safe window) could come back after it. Default:
    /// [`DEFAULT_TAG_RETENTION`] (one day). Cut to [`MAX_TTL`](crate::MAX_TTL).
    pub fn tag_retention(mut self, retention: Duration) -> Self {
        self.tag_retention = retention;
        self
    }

    /// Publishes the cache's stats through the `metrics` crate facade every `interval` (see
    /// [`Cache::record_metrics`]), from a task that ends when the cache is dropped. Needs a
    /// Tokio runtime with timers. Default: not published.
    #[cfg(feature = "metrics")]
    pub fn metrics_every(mut self, interval: Duration) -> Self {
        self.metrics_every = Some(interval);
        self
    }

    /// Checks the configuration and builds the cache.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when there is no tier at all, a TTL scale is not a positive finite
    /// number, a tier's scale is larger than a tier's below it (an upper tier would outlive the
    /// copy it was filled from), or two tiers share a name; [`Error::InvalidKey`] for a namespace
    /// that breaks the key rules; with a bus, the bus's error when it cannot subscribe, and
    /// [`Error::Config`] for an L1 max age of zero.
    pub async fn build(self) -> Result<Cache<C>> {
        let namespace = Namespace::new(&self.namespace)?;
        self.check_tiers()?;
        if self.l1_max_age == Some(Duration::ZERO) {
            return Err(Error::Config(
                "an L1 max age of zero would keep nothing in L1; drop .memory(..) instead".into(),
            ));
        }
        let l1_max_age = match self.l1_max_age {
            Some(Duration::MAX) => None,
            None if self.bus.is_some() => Some(DEFAULT_L1_MAX_AGE_WITH_BUS),
            set => set.map(clamp_duration),
        };
        let defaults = Defaults {
            ttl: self.default_strategy.ttl_or(DEFAULT_TTL),
            ..self.defaults
        };
        let counters = Arc::new(LoadCounters::default());
        let tags = (
            clamp_duration(self.tag_check_interval),
            clamp_duration(self.tag_retention),
        );
        let engine = Arc::new(Engine::new(Parts {
            front: Front::new(self.memory, l1_max_age),
            stack: Stack::new(self.tiers, namespace, tags, Arc::clone(&counters)),
            coherence: Coherence::new(self.bus),
            defaults,
            envelope: Envelope::new(self.codec, self.schema_version)
                .compress_above(self.compress_above),
            counters,
            background_loads: self.background_loads,
        }));
        engine.start_bus().await?;
        #[cfg(feature = "metrics")]
        if let Some(interval) = self.metrics_every {
            engine.publish_metrics_every(interval);
        }
        Ok(Cache::new(engine))
    }

    fn check_tiers(&self) -> Result<()> {
        let levels: Vec<(&str, &TierOptions)> = memory_level(self.memory.as_ref())
            .into_iter()
            .chain(
                self.tiers
                    .iter()
                    .map(|level| (level.name(), level.options())),
            )
            .collect();
        if levels.is_empty() {
            return Err(Error::Config(
                "a cache needs at least one tier: call .memory(..) or .tier(..)".into(),
            ));
        }
        for (index, (name, options)) in levels.iter().enumerate() {
            let scale = options.ttl_scale_value();
            if !(scale.is_finite() && scale > 0.0) {
                return Err(Error::Config(format!(
                    "tier {name:?} (L{}) has TTL scale {scale}; it must be a positive finite number",
                    index + 1
                )));
            }
            if levels[..index].iter().any(|(other, _)| other == name) {
                return Err(Error::Config(format!(
                    "two tiers are named {name:?}; give each tier its own name"
                )));
            }
        }
        for (index, pair) in levels.windows(2).enumerate() {
            let [(upper, upper_options), (lower, lower_options)] = pair else {
                continue;
            };
            let (up, low) = (
                upper_options.ttl_scale_value(),
                lower_options.ttl_scale_value(),
            );
            if up > low {
                return Err(Error::Config(format!(
                    "tiers out of order: {upper:?} (L{}) has TTL scale {up}, longer-lived than \
                     {lower:?} (L{}) below it at {low}; give tiers top-down, fastest and \
                     shortest-lived first",
                    index + 1,
                    index + 2
                )));
            }
        }
        Ok(())
    }
}

/// L1's name and options, for the configuration checks.
#[cfg(feature = "moka")]
fn memory_level(memory: Option<&Memory>) -> Option<(&str, &TierOptions)> {
    memory.map(|(tier, options)| (tier.name(), options))
}

#[cfg(not(feature = "moka"))]
fn memory_level(memory: Option<&Memory>) -> Option<(&str, &TierOptions)> {
    memory.map(|never| match *never {})
}
