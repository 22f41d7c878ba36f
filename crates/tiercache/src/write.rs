//! The write paths: set, fill after a load, and invalidation, each top-down.

use std::{
    any::Any,
    sync::Arc,
    time::{Duration, Instant},
};

use tiercache_core::{Bytes, Codec, Entry, EntryOptions, Invalidation, Result};

use crate::{cache::Inner, guard::Stamp, layer::Layer};

impl<C: Codec> Inner<C> {
    /// Puts `value` (or a negative entry for `None`) in L1 until `expires_at`. With a `guard`, the
    /// insert is undone if an invalidation for the key arrived since the stamp (see `guard.rs`).
    /// Returns whether the entry is in place.
    pub(crate) async fn store_in_memory<T: Any + Send + Sync>(
        &self,
        key: &str,
        value: Option<Arc<T>>,
        expires_at: Instant,
        weight: Option<usize>,
        guard: Option<Stamp>,
    ) -> bool {
        let Some(memory) = &self.memory else {
            return false;
        };
        if guard.is_some_and(|stamp| !self.clock.unchanged_since(stamp)) {
            return false;
        }
        let expires_at = self.cap_l1_expiry(expires_at);
        match value {
            Some(value) => memory.insert(key, value, expires_at, weight).await,
            None => memory.insert_negative(key, expires_at).await,
        }
        match guard {
            Some(stamp) if !self.clock.unchanged_since(stamp) => {
                memory.remove(key).await;
                false
            }
            _ => true,
        }
    }

    /// Writes a value to every tier, top-down: L1 with `value`, the tiers below with `bytes`,
    /// each for `ttl` times its scale. Every tier is tried; the first failure is returned, and
    /// what was written stays written (L1 included).
    ///
    /// With a `guard` (a fill after a load), nothing more is written once an invalidation for the
    /// key has arrived since the stamp: the newer write or invalidation wins.
    pub(crate) async fn write_all<T: Any + Send + Sync>(
        &self,
        key: &str,
        value: Option<Arc<T>>,
        bytes: Option<Bytes>,
        ttl: Duration,
        guard: Option<Stamp>,
    ) -> Result<()> {
        let now = Instant::now();
        if let Some(memory) = &self.memory {
            let expires_at = now + ttl.mul_f64(memory.options().ttl_scale_value());
            let weight = bytes.as_ref().map(Bytes::len);
            self.store_in_memory(key, value, expires_at, weight, guard)
                .await;
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
            let entry = Entry::expiring_at(
                bytes.clone(),
                now + ttl.mul_f64(layer.options.ttl_scale_value()),
            );
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

    /// Caps an L1 expiry at the configured L1 max age, which bounds how long L1 can serve a
    /// value even if the bus is silently dead.
    pub(crate) fn cap_l1_expiry(&self, expires_at: Instant) -> Instant {
        match self.l1_max_age {
            Some(max_age) => expires_at.min(Instant::now() + max_age),
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
        ttl: Duration,
    ) -> Result<()> {
        // A load of this key already in flight must not overwrite this newer value.
        self.clock.invalidate_key(key);
        let update = match (self.bus.as_ref().and_then(|b| b.updates_up_to()), &bytes) {
            (Some(limit), Some(bytes)) if bytes.len() <= limit => Some(bytes.clone()),
            _ => None,
        };
        let written = self.write_all(key, Some(value), bytes, ttl, None).await;
        let published = self
            .publish(|| match update {
                Some(value) => Invalidation::Update {
                    key: key.to_owned(),
                    value,
                    ttl,
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
    ) -> Result<Option<Bytes>> {
        if self.tiers.is_empty() && self.bus.as_ref().and_then(|b| b.updates_up_to()).is_some() {
            return self.envelope.encode(key, value).map(Some);
        }
        self.encode_for_tiers(key, value)
    }

    /// Encodes `value` for the tiers below L1; `None` when there are none, so a memory-only
    /// cache never pays for encoding.
    pub(crate) fn encode_for_tiers<T: serde::Serialize>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<Option<Bytes>> {
        if self.tiers.is_empty() {
            return Ok(None);
        }
        self.envelope.encode(key, value).map(Some)
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
        stamp: Stamp,
    ) -> Result<()> {
        let (ttl, bytes) = match &loaded {
            Some(value) => (
                options.effective_ttl(self.default_ttl),
                self.encode_for_tiers(key, value.as_ref())?,
            ),
            None => match options.effective_negative_ttl() {
                Some(ttl) => (
                    ttl,
                    (!self.tiers.is_empty()).then(|| self.envelope.encode_negative()),
                ),
                None => return Ok(()),
            },
        };
        // NOTE: failures were already counted and logged per tier inside write_all.
        let _tier_failure = self.write_all(key, loaded, bytes, ttl, Some(stamp)).await;
        if !self.clock.unchanged_since(stamp) {
            self.loads.fill_rejected();
        }
        Ok(())
    }

    /// Runs `call` on every tier below L1 in order, going on after a failure, and returns the
    /// first failure.
    async fn on_every_tier(
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
