//! The read path below L1: tiers top-down, decode once, promote upwards.

use std::{any::Any, sync::Arc, time::Instant};

use tiercache_core::{Bytes, Codec, DecodeError, Decoded, Entry, Result, validate_key};

use crate::{
    cache::Inner,
    guard::Stamp,
    layer::Layer,
    memory::{Encoded, Lookup, MemoryLayer, Slot},
};

impl<C: Codec> Inner<C> {
    /// The read path of `get`: L1, then, after an L1 miss, the tiers below. A cached "not
    /// found" from either is counted as a negative hit.
    ///
    /// # Errors
    ///
    /// [`tiercache_core::Error::InvalidKey`] for a key that breaks the key rules.
    pub(crate) async fn read_through<T, D>(&self, key: &str, decode: D) -> Result<Lookup<T>>
    where
        T: Any + Send + Sync,
        D: Fn(&Bytes) -> Result<Decoded<T>, DecodeError>,
    {
        let found = self.lookup_memory::<T, _>(key, &decode).await;
        if !matches!(found, Lookup::Miss) {
            return Ok(found);
        }
        // Invalid keys are never stored, so checking after the L1 miss keeps the hit path free of it.
        validate_key(key)?;
        let stamp = self.clock.stamp(key);
        let found = self.read_below(key, stamp, decode).await;
        if matches!(found, Lookup::Negative) {
            self.loads.negative_hit();
        }
        Ok(found)
    }

    /// The L1 lookup: a miss when there is no L1; a cached "not found" is counted. Bytes a bus
    /// update left in L1 are decoded with `decode`.
    pub(crate) async fn lookup_memory<T, D>(&self, key: &str, decode: D) -> Lookup<T>
    where
        T: Any + Send + Sync,
        D: Fn(&Bytes) -> Result<Decoded<T>, DecodeError>,
    {
        let Some(memory) = &self.memory else {
            return Lookup::Miss;
        };
        let found = match memory.lookup::<T>(key).await {
            Slot::Ready(found) => found,
            // Boxed: the rare path must not grow the hot path's future.
            Slot::Encoded(encoded) => {
                Box::pin(self.type_update(memory, key, &encoded, decode)).await
            }
        };
        if matches!(found, Lookup::Negative) {
            self.loads.negative_hit();
        }
        found
    }

    /// An L1 lookup that is not counted: the second look a load leader takes before loading.
    pub(crate) async fn peek_memory<T, D>(&self, key: &str, decode: D) -> Lookup<T>
    where
        T: Any + Send + Sync,
        D: Fn(&Bytes) -> Result<Decoded<T>, DecodeError>,
    {
        let Some(memory) = &self.memory else {
            return Lookup::Miss;
        };
        match memory.peek::<T>(key).await {
            Slot::Ready(found) => found,
            Slot::Encoded(encoded) => {
                Box::pin(self.type_update(memory, key, &encoded, decode)).await
            }
        }
    }

    /// Decodes the bytes a bus update left in L1 and puts the typed value in their place, so
    /// later reads are plain hits. Bytes that do not decode as `T` read as a miss and stay (a
    /// read with the right type may still use them). The typed value replaces the bytes only if
    /// they are still there and no invalidation of the key arrived meanwhile (see `guard.rs`).
    pub(crate) async fn type_update<T, D>(
        &self,
        memory: &MemoryLayer,
        key: &str,
        encoded: &Arc<Encoded>,
        decode: D,
    ) -> Lookup<T>
    where
        T: Any + Send + Sync,
        D: Fn(&Bytes) -> Result<Decoded<T>, DecodeError>,
    {
        let stamp = self.clock.stamp(key);
        let value = match decode(&encoded.bytes) {
            Ok(Decoded::Value(value)) => Some(Arc::new(value)),
            Ok(Decoded::Negative) => None,
            Err(err) => {
                tracing::debug!(key, %err, "value from a bus update does not decode; read as a miss");
                return Lookup::Miss;
            }
        };
        let still_there =
            matches!(memory.peek::<T>(key).await, Slot::Encoded(now) if Arc::ptr_eq(&now, encoded));
        if still_there {
            let weight = Some(encoded.bytes.len());
            self.store_in_memory(key, value.clone(), encoded.expires_at, weight, Some(stamp))
                .await;
        }
        value.map_or(Lookup::Negative, Lookup::Hit)
    }

    /// Reads the tiers below L1 in order. The first live entry that decodes is promoted to the
    /// tiers above it (with its remaining TTL, scaled) and returned. A tier error or undecodable
    /// bytes count against that tier and read as a miss, so one broken tier never fails a read.
    pub(crate) async fn read_below<T, D>(&self, key: &str, stamp: Stamp, decode: D) -> Lookup<T>
    where
        T: Any + Send + Sync,
        D: Fn(&Bytes) -> Result<Decoded<T>, DecodeError>,
    {
        if self.tiers.is_empty() {
            return Lookup::Miss;
        }
        let stored_key = self.namespace.apply(key);
        for (level, layer) in self.tiers.iter().enumerate() {
            let entry = match layer.call("get", key, layer.tier.get(&stored_key)).await {
                Ok(Some(entry)) => entry,
                Ok(None) => {
                    layer.counters.miss();
                    continue;
                }
                // Counted and logged by `call`; a broken tier reads as a miss.
                Err(_) => continue,
            };
            let Some(value) = self.decode_hit(layer, key, &entry, &decode) else {
                continue;
            };
            self.promote(key, &stored_key, level, &entry, value.clone(), stamp)
                .await;
            return value.map_or(Lookup::Negative, Lookup::Hit);
        }
        Lookup::Miss
    }

    /// Decodes an entry a lower tier returned and counts the hit. `None` when the bytes do not
    /// decode: counted as a decode error and a miss (the caller reads on below). `Some(None)` is
    /// a cached "not found".
    pub(crate) fn decode_hit<T, D>(
        &self,
        layer: &Layer,
        key: &str,
        entry: &Entry,
        decode: D,
    ) -> Option<Option<Arc<T>>>
    where
        D: Fn(&Bytes) -> Result<Decoded<T>, DecodeError>,
    {
        let value = match decode(&entry.value) {
            Ok(Decoded::Value(value)) => Some(Arc::new(value)),
            Ok(Decoded::Negative) => None,
            Err(err) => {
                layer.counters.decode_error();
                layer.counters.miss();
                tracing::debug!(tier = layer.name(), key, %err, "stored value does not decode; read as a miss");
                return None;
            }
        };
        layer.counters.hit();
        Some(value)
    }

    /// Copies an entry found at `level` into the tiers above it that take promotions. Each copy
    /// gets the entry's remaining TTL times (its tier's scale / the source tier's scale), never
    /// more than the remaining TTL: promotion never extends an entry's life.
    pub(crate) async fn promote<T: Any + Send + Sync>(
        &self,
        key: &str,
        stored_key: &str,
        level: usize,
        entry: &Entry,
        value: Option<Arc<T>>,
        stamp: Stamp,
    ) {
        let now = Instant::now();
        let remaining = entry.expires_at.saturating_duration_since(now);
        if remaining.is_zero() {
            return;
        }
        let source_scale = self.tiers[level].options.ttl_scale_value();
        let expires_at = |scale: f64| {
            let ratio = (scale / source_scale).min(1.0);
            (now + remaining.mul_f64(ratio)).min(entry.expires_at)
        };
        for layer in self.tiers[..level]
            .iter()
            .filter(|l| l.promotion.admit(key))
        {
            if !self.clock.unchanged_since(stamp) {
                self.loads.fill_rejected();
                return;
            }
            let copy = Entry::expiring_at(
                entry.value.clone(),
                expires_at(layer.options.ttl_scale_value()),
            );
            if layer
                .call("promote", key, layer.tier.set(stored_key, copy))
                .await
                .is_ok()
            {
                layer.counters.promotion();
                layer.counters.write();
            }
        }
        if let Some(memory) = self.memory.as_ref().filter(|m| m.admits(key)) {
            let expires_at = expires_at(memory.options().ttl_scale_value());
            let weight = Some(entry.value.len());
            if self
                .store_in_memory(key, value, expires_at, weight, Some(stamp))
                .await
            {
                memory.record_promotion();
            }
        }
        if !self.clock.unchanged_since(stamp) {
            self.loads.fill_rejected();
        }
    }
}
