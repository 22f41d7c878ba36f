//! The write paths: set, fill after a load, and invalidation, each top-down.

use std::{
    any::Any,
    sync::Arc,
    time::{Duration, Instant},
};

use tiercache_core::{Bytes, Codec, Entry, EntryOptions, Invalidation, Result, StoredMeta};

use crate::{
    cache::Inner,
    guard::Stamp,
    layer::Layer,
    memory::Placement,
    policy::{Life, Policy},
};

/// What a write stores besides the value: the fresh TTL, how long the load took, the call's
/// resilience policy (its stale window and eager refresh) and the tags.
#[derive(Debug, Clone)]
pub(crate) struct WriteSpec {
    pub(crate) ttl: Duration,
    pub(crate) load_time: Duration,
    pub(crate) policy: Policy,
    pub(crate) tags: Option<Arc<[String]>>,
}

impl WriteSpec {
    /// The spec of a write with `options`, loaded in `load_time` (zero for a set).
    pub(crate) fn new(
        options: &EntryOptions,
        policy: Policy,
        default_ttl: Duration,
        load_time: Duration,
    ) -> Self {
        let tags = options.tags_value();
        Self {
            ttl: options.effective_ttl(default_ttl),
            load_time,
            policy,
            tags: (!tags.is_empty()).then(|| Arc::from(tags)),
        }
    }

    /// The header metadata of the value.
    pub(crate) fn meta(&self) -> StoredMeta {
        let tags = self.tags.as_deref().unwrap_or_default();
        self.policy.meta(self.ttl, self.load_time, tags)
    }

    /// How long past its fresh life the value is kept.
    pub(crate) fn stale_window(&self) -> Duration {
        self.policy.stale_window()
    }
}

impl<C: Codec> Inner<C> {
    /// Puts `value` (or a negative entry for `None`) in L1 as `placement` says. With a `guard`,
    /// the insert is undone if an invalidation for the key arrived since the stamp (see
    /// `guard.rs`). Returns whether the entry is in place.
    pub(crate) async fn store_in_memory<T: Any + Send + Sync>(
        &self,
        key: &str,
        value: Option<Arc<T>>,
        placement: Placement,
        guard: Option<Stamp>,
    ) -> bool {
        let Some(memory) = &self.memory else {
            return false;
        };
        if guard.is_some_and(|stamp| !self.clock.unchanged_since(stamp)) {
            return false;
        }
        let placement = Placement {
            life: placement.life.capped(self.l1_deadline()),
            ..placement
        };
        memory.insert(key, value, &placement).await;
        match guard {
            Some(stamp) if !self.clock.unchanged_since(stamp) => {
                memory.remove(key).await;
                false
            }
            _ => true,
        }
    }

    /// Writes a value to every tier, top-down: L1 with `value`, the tiers below with `bytes`
    /// (already encoded with the spec's metadata), each fresh for the spec's TTL times its scale
    /// and kept for the stale window after that. Every tier is tried; the first failure is
    /// returned, and what was written stays written (L1 included).
    ///
    /// With a `guard` (a fill after a load), nothing more is written once an invalidation for the
    /// key has arrived since the stamp: the newer write or invalidation wins.
    pub(crate) async fn write_all<T: Any + Send + Sync>(
        &self,
        key: &str,
        value: Option<Arc<T>>,
        bytes: Option<Bytes>,
        spec: &WriteSpec,
        guard: Option<Stamp>,
    ) -> Result<()> {
        let now = Instant::now();
        let stale_window = spec.stale_window();
        if let Some(memory) = &self.memory {
            let fresh = spec.ttl.mul_f64(memory.options().ttl_scale_value());
            let life = Life::new(
                now + fresh,
                fresh,
                spec.load_time,
                stale_window,
                spec.policy.eager_refresh,
            );
            let placement = Placement {
                life,
                weight: bytes.as_ref().map(Bytes::len),
                tags: spec.tags.clone(),
            };
            self.store_in_memory(key, value, placement, guard).await;
        }
        let Some(bytes) = bytes else {
            return Ok(());
        };
        let stored_key = self.namespace.apply(key);
        let mut first_error = None;
        for layer in &self.tiers {
            if guard.is_some_and(|stamp| !self.clock.unchanged_since(stamp)) {
                break;
            }
            let fresh = spec.ttl.mul_f64(layer.options.ttl_scale_value());
            let entry = Entry::expiring_at(bytes.clone(), now + fresh + stale_window);
            match layer
                .call("set", key, layer.tier.set(&stored_key, entry))
                .await
            {
                Ok(()) => layer.counters.write(),
                Err(err) => {
                    first_error.get_or_insert(err);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The instant the L1 max age allows an entry written now to live until, if there is one.
    pub(crate) fn l1_deadline(&self) -> Option<Instant> {
        self.l1_max_age.map(|max_age| Instant::now() + max_age)
    }

    /// Caps an L1 expiry at the configured L1 max age, which bounds how long L1 can serve a
    /// value even if the bus is silently dead.
    pub(crate) fn cap_l1_expiry(&self, expires_at: Instant) -> Instant {
        match self.l1_deadline() {
            Some(deadline) => expires_at.min(deadline),
            None => expires_at,
        }
    }

    /// Stores a value a caller gave (`set`): in every tier, then tells the other instances.
    /// `bytes` is what the tiers below hold; it travels with the message when it is small enough
    /// and the bus options ask for it.
    pub(crate) async fn store_and_publish<T: Any + Send + Sync>(
        &self,
        key: &str,
        value: Arc<T>,
        bytes: Option<Bytes>,
        spec: &WriteSpec,
    ) -> Result<()> {
        // A load of this key already in flight must not overwrite this newer value.
        self.clock.invalidate_key(key);
        let update = match (self.bus.as_ref().and_then(|b| b.updates_up_to()), &bytes) {
            (Some(limit), Some(bytes)) if bytes.len() <= limit => Some(bytes.clone()),
            _ => None,
        };
        let written = self.write_all(key, Some(value), bytes, spec, None).await;
        let published = self
            .publish(|| match update {
                Some(value) => Invalidation::Update {
                    key: key.to_owned(),
                    value,
                    ttl: spec.ttl,
                },
                None => Invalidation::Keys(vec![key.to_owned()]),
            })
            .await;
        written.and(published)
    }

    /// Encodes a value a caller is setting: for the tiers below L1, and for the bus when it
    /// sends values. `None` when neither needs bytes, so a memory-only cache never encodes.
    pub(crate) fn encode_for_set<T: serde::Serialize>(
        &self,
        key: &str,
        value: &T,
        spec: &WriteSpec,
    ) -> Result<Option<Bytes>> {
        if self.tiers.is_empty() && self.bus.as_ref().and_then(|b| b.updates_up_to()).is_some() {
            return self
                .envelope
                .encode_with(key, value, &spec.meta())
                .map(Some);
        }
        self.encode_for_tiers(key, value, spec)
    }

    /// Encodes `value` for the tiers below L1; `None` when there are none, so a memory-only
    /// cache never pays for encoding.
    pub(crate) fn encode_for_tiers<T: serde::Serialize>(
        &self,
        key: &str,
        value: &T,
        spec: &WriteSpec,
    ) -> Result<Option<Bytes>> {
        if self.tiers.is_empty() {
            return Ok(None);
        }
        self.envelope
            .encode_with(key, value, &spec.meta())
            .map(Some)
    }

    /// Stores what a loader returned, guarded by the stamp taken before the load. A `None` is
    /// stored as a negative entry only when the options ask for negative caching. Tier failures
    /// are counted and logged, not returned: the caller has its value.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] when the value cannot be encoded; nothing is stored then.
    pub(crate) async fn fill<T: serde::Serialize + Any + Send + Sync>(
        &self,
        key: &str,
        loaded: Option<Arc<T>>,
        options: &EntryOptions,
        spec: WriteSpec,
        stamp: Stamp,
    ) -> Result<()> {
        let (spec, bytes) = match &loaded {
            Some(value) => {
                let bytes = self.encode_for_tiers(key, value.as_ref(), &spec)?;
                (spec, bytes)
            }
            None => match options.effective_negative_ttl() {
                Some(ttl) => {
                    // A cached "not found" is neither kept as a fallback nor refreshed early.
                    let spec = WriteSpec {
                        ttl,
                        policy: spec.policy.without_keeping(),
                        ..spec
                    };
                    let bytes = (!self.tiers.is_empty())
                        .then(|| self.envelope.encode_negative_with(&spec.meta()));
                    (spec, bytes)
                }
                None => return Ok(()),
            },
        };
        // NOTE: failures were already counted and logged per tier inside write_all.
        let _tier_failure = self.write_all(key, loaded, bytes, &spec, Some(stamp)).await;
        if !self.clock.unchanged_since(stamp) {
            self.loads.fill_rejected();
        }
        Ok(())
    }

    /// Runs `call` on every tier below L1 in order, going on after a failure, and returns the
    /// first failure.
    pub(crate) async fn on_every_tier(
        &self,
        operation: &'static str,
        key: &str,
        call: impl AsyncFn(&Layer) -> Result<()>,
    ) -> Result<()> {
        let mut first_error = None;
        for layer in &self.tiers {
            if let Err(err) = layer.call(operation, key, call(layer)).await {
                first_error.get_or_insert(err);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Removes `key` from every tier, then tells the other instances. Every tier is tried; the
    /// first failure is returned.
    pub(crate) async fn remove_everywhere(&self, key: &str) -> Result<()> {
        self.clock.invalidate_key(key);
        if let Some(memory) = &self.memory {
            memory.remove(key).await;
        }
        let stored_key = self.namespace.apply(key);
        let removed = self
            .on_every_tier("remove", key, async |layer| {
                layer.tier.remove(&stored_key).await
            })
            .await;
        let published = self
            .publish(|| Invalidation::Keys(vec![key.to_owned()]))
            .await;
        removed.and(published)
    }

    /// Removes every key starting with `prefix` from every tier, then tells the other instances.
    pub(crate) async fn remove_prefix_everywhere(&self, prefix: &str) -> Result<()> {
        self.clock.invalidate_everything();
        let in_memory = match &self.memory {
            Some(memory) => memory.remove_prefix(prefix),
            None => Ok(()),
        };
        let stored_prefix = self.namespace.apply(prefix);
        let below = self
            .on_every_tier("remove_prefix", prefix, async |layer| {
                layer.tier.remove_prefix(&stored_prefix).await.map(drop)
            })
            .await;
        let published = self
            .publish(|| Invalidation::Prefix(prefix.to_owned()))
            .await;
        in_memory.and(below).and(published)
    }

    /// Removes every entry of this cache: all of L1, and this namespace in the tiers below (the
    /// whole tier when there is no namespace); then tells the other instances.
    pub(crate) async fn clear_everywhere(&self) -> Result<()> {
        self.clock.invalidate_everything();
        if let Some(memory) = &self.memory {
            memory.clear();
        }
        let namespace = self.namespace.prefix();
        let cleared = self
            .on_every_tier("clear", namespace, async |layer| {
                if namespace.is_empty() {
                    layer.tier.clear().await
                } else {
                    layer.tier.remove_prefix(namespace).await.map(drop)
                }
            })
            .await;
        let published = self.publish(|| Invalidation::Clear).await;
        cleared.and(published)
    }
}
