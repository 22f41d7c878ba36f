//! The read path below L1's front entry: the kept copy, then the tiers top-down (decode once,
//! check freshness and tags, promote upwards).

use std::{any::Any, sync::Arc, time::Instant};

use tiercache_core::{
    Bytes, Codec, DecodeError, Decoded, EagerRefresh, Entry, Result, StoredMeta, validate_key,
};

use crate::{
    cache::Inner,
    guard::Stamp,
    layer::Layer,
    memory::{Encoded, Kept, Lookup, MemoryLayer, Placement, Slot},
    observe,
    policy::{Life, Stale},
};

/// What L1 holds for a key behind its front entry.
pub(crate) enum Behind<T> {
    /// A copy still fresh (the front entry expired at the refresh point): answered, and put
    /// back in front.
    Fresh(Arc<T>),
    /// A copy past its fresh life, kept as a fail-safe fallback.
    Stale(Stale<T>),
    /// Nothing.
    Nothing,
}

/// What the tiers below L1 hold for a key.
pub(crate) struct Below<T> {
    /// The first fresh entry, promoted; or a miss.
    pub(crate) found: Lookup<T>,
    /// The first stale entry met on the way down, as a fallback.
    pub(crate) stale: Option<Stale<T>>,
}

/// One entry a lower tier returned, examined.
pub(crate) enum Examined<T> {
    /// Fresh: the value (`None`: a cached "not found") and the header's metadata.
    Fresh(Option<Arc<T>>, StoredMeta),
    /// Past its fresh life, inside its stale window.
    Stale(Stale<T>),
    /// Not usable: does not decode, a tag of it was invalidated, or a stale "not found".
    Unusable,
}

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
        // Boxed: the miss path must not grow the hit path's future.
        Box::pin(self.read_after_front_miss(key, decode)).await
    }

    async fn read_after_front_miss<T, D>(&self, key: &str, decode: D) -> Result<Lookup<T>>
    where
        T: Any + Send + Sync,
        D: Fn(&Bytes) -> Result<Decoded<T>, DecodeError>,
    {
        if let Behind::Fresh(value) = self.behind_front::<T>(key).await {
            return Ok(Lookup::Hit(value));
        }
        let stamp = self.clock.stamp(key);
        let below = self
            .read_below(key, stamp, decode, self.defaults.eager_refresh)
            .await;
        if matches!(below.found, Lookup::Negative) {
            self.loads.negative_hit();
        }
        Ok(below.found)
    }

    /// The L1 front lookup: a miss when there is no L1; a cached "not found" is counted. Bytes
    /// a bus update left in L1 are decoded with `decode`. A miss is not counted here: the
    /// caller looks behind the front ([`behind_front`](Self::behind_front)), which counts.
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
        match found {
            Lookup::Negative => {
                memory.count_hit();
                self.loads.negative_hit();
            }
            Lookup::Hit(_) => observe::answered_by(memory.name()),
            Lookup::Miss => {}
        }
        found
    }

    /// After a miss of L1's front entry: the kept copy, put back in front when it is still
    /// fresh. Counts the L1 hit or miss.
    pub(crate) async fn behind_front<T: Any + Send + Sync>(&self, key: &str) -> Behind<T> {
        let Some(memory) = &self.memory else {
            return Behind::Nothing;
        };
        if !memory.may_keep() {
            memory.count_miss();
            return Behind::Nothing;
        }
        let stamp = self.clock.stamp(key);
        match memory.kept::<T>(key).await {
            Some(Kept {
                value,
                fresh_until: Some(fresh_until),
                keep_until,
                tags,
            }) => {
                memory.count_hit();
                observe::answered_by(memory.name());
                // Served as it is until it stops being fresh; the refresh this read may start
                // replaces it before then.
                let deadlines = (fresh_until, fresh_until);
                self.refront(key, &value, tags, deadlines, keep_until, stamp)
                    .await;
                Behind::Fresh(value)
            }
            Some(kept) => {
                memory.count_miss();
                Behind::Stale(Stale {
                    value: kept.value,
                    keep_until: kept.keep_until,
                    tags: kept.tags,
                })
            }
            None => {
                memory.count_miss();
                Behind::Nothing
            }
        }
    }

    /// Serves a kept value (in its refresh window, or a stale fallback) as it is again until the
    /// first of `deadlines` (serve until, fresh until), keeping it until `keep_until`, unless an
    /// invalidation of the key arrived since `stamp`.
    pub(crate) async fn refront<T: Any + Send + Sync>(
        &self,
        key: &str,
        value: &Arc<T>,
        tags: Option<Arc<[String]>>,
        deadlines: (Instant, Instant),
        keep_until: Instant,
        stamp: Stamp,
    ) {
        let Some(memory) = &self.memory else {
            return;
        };
        if !self.clock.unchanged_since(stamp) {
            return;
        }
        let keep_until = self.cap_l1_expiry(keep_until);
        memory
            .refront(key, Arc::clone(value), deadlines, keep_until, tags)
            .await;
        if !self.clock.unchanged_since(stamp) {
            memory.remove(key).await;
        }
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
            // Fresh until the update's expiry; then kept for the stale window its writer gave it,
            // as a promoted copy would be.
            let meta = StoredMeta::read(&encoded.bytes);
            let life = Life::new(
                encoded.expires_at,
                meta.ttl.mul_f64(memory.options().ttl_scale_value()),
                meta.load_time,
                meta.stale_window,
                self.defaults.eager_refresh,
            );
            let placement = Placement {
                life,
                weight: Some(encoded.bytes.len()),
                tags: (!meta.tags.is_empty()).then(|| Arc::from(meta.tags)),
            };
            self.store_in_memory(key, value.clone(), placement, Some(stamp))
                .await;
        }
        value.map_or(Lookup::Negative, Lookup::Hit)
    }

    /// Reads the tiers below L1 in order. The first fresh entry that decodes is promoted to the
    /// tiers above it (with its remaining fresh life, scaled) and returned; the first stale one
    /// met on the way is handed back as a fallback. A tier error or undecodable bytes count
    /// against that tier and read as a miss, so one broken tier never fails a read.
    pub(crate) async fn read_below<T, D>(
        &self,
        key: &str,
        stamp: Stamp,
        decode: D,
        eager: EagerRefresh,
    ) -> Below<T>
    where
        T: Any + Send + Sync,
        D: Fn(&Bytes) -> Result<Decoded<T>, DecodeError>,
    {
        let mut below = Below {
            found: Lookup::Miss,
            stale: None,
        };
        if self.tiers.is_empty() {
            return below;
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
            match self.examine(layer, key, &entry, &decode).await {
                Examined::Fresh(value, meta) => {
                    observe::answered_by(layer.name());
                    let found = (&entry, &meta);
                    self.promote(key, &stored_key, level, found, value.clone(), stamp, eager)
                        .await;
                    below.found = value.map_or(Lookup::Negative, Lookup::Hit);
                    return below;
                }
                Examined::Stale(stale) => {
                    below.stale.get_or_insert(stale);
                }
                Examined::Unusable => {}
            }
        }
        below
    }

    /// Examines an entry a lower tier returned: its tags, its value, its freshness. Counts the
    /// tier's hit or miss (a stale entry is a miss), decode errors and tag rejections.
    pub(crate) async fn examine<T, D>(
        &self,
        layer: &Layer,
        key: &str,
        entry: &Entry,
        decode: D,
    ) -> Examined<T>
    where
        D: Fn(&Bytes) -> Result<Decoded<T>, DecodeError>,
    {
        let meta = StoredMeta::read(&entry.value);
        if !meta.tags.is_empty() && self.tag_invalidated(layer, &meta).await {
            self.loads.tag_rejected();
            layer.counters.miss();
            tracing::debug!(tier = layer.name(), key, tags = ?meta.tags, "a tag of the stored value was invalidated after it was written; read as a miss");
            return Examined::Unusable;
        }
        let value = match decode(&entry.value) {
            Ok(Decoded::Value(value)) => Some(Arc::new(value)),
            Ok(Decoded::Negative) => None,
            Err(err) => {
                layer.counters.decode_error();
                layer.counters.miss();
                tracing::debug!(tier = layer.name(), key, %err, "stored value does not decode; read as a miss");
                return Examined::Unusable;
            }
        };
        if fresh_for(entry, &meta, Instant::now()).is_none() {
            layer.counters.miss();
            return match value {
                Some(value) => Examined::Stale(Stale {
                    value,
                    keep_until: entry.expires_at,
                    tags: (!meta.tags.is_empty()).then(|| Arc::from(meta.tags)),
                }),
                None => Examined::Unusable,
            };
        }
        layer.counters.hit();
        Examined::Fresh(value, meta)
    }

    /// Copies an entry found at `level` into the tiers above it that take promotions. Each copy
    /// gets the entry's remaining fresh life times (its tier's scale / the source tier's scale),
    /// never more than the remaining life, plus the entry's stale window: promotion never
    /// extends an entry's life.
    #[expect(
        clippy::too_many_arguments,
        reason = "the promotion needs the key in both forms, where it was found, the value, the guard stamp and the refresh policy"
    )]
    pub(crate) async fn promote<T: Any + Send + Sync>(
        &self,
        key: &str,
        stored_key: &str,
        level: usize,
        (entry, meta): (&Entry, &StoredMeta),
        value: Option<Arc<T>>,
        stamp: Stamp,
        eager: EagerRefresh,
    ) {
        let now = Instant::now();
        let Some(remaining) = fresh_for(entry, meta, now) else {
            return;
        };
        let source_scale = self.tiers[level].options.ttl_scale_value();
        let fresh_for = |scale: f64| remaining.mul_f64((scale / source_scale).min(1.0));
        for layer in self.tiers[..level]
            .iter()
            .filter(|l| l.promotion.admit(key))
        {
            if !self.clock.unchanged_since(stamp) {
                self.loads.fill_rejected();
                return;
            }
            let fresh = fresh_for(layer.options.ttl_scale_value());
            let copy = Entry::expiring_at(
                entry.value.clone(),
                (now + fresh + meta.stale_window).min(entry.expires_at),
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
            let scale = memory.options().ttl_scale_value();
            let fresh = fresh_for(scale);
            // An entry without a recorded TTL (raw bytes, an older header) refreshes by what is
            // left of it.
            let ttl = if meta.ttl.is_zero() {
                fresh
            } else {
                meta.ttl.mul_f64(scale)
            };
            let mut life = Life::new(now + fresh, ttl, meta.load_time, meta.stale_window, eager);
            life.keep_until = life.keep_until.min(entry.expires_at);
            let placement = Placement {
                life,
                weight: Some(entry.value.len()),
                tags: (!meta.tags.is_empty()).then(|| Arc::from(meta.tags.as_slice())),
            };
            if self
                .store_in_memory(key, value, placement, Some(stamp))
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

/// How long a stored entry stays fresh from `now` (its time left minus the stale window its
/// header gives); `None` once it is stale. Relative, so a stale window longer than the monotonic
/// clock has been running never makes a stale entry look fresh.
fn fresh_for(entry: &Entry, meta: &StoredMeta, now: Instant) -> Option<std::time::Duration> {
    entry
        .expires_at
        .saturating_duration_since(now)
        .checked_sub(meta.stale_window)
        .filter(|fresh| !fresh.is_zero())
}
