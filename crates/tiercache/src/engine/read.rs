//! Reading: L1, then (after an L1 miss) the stack, promoting what is found into L1 under the
//! stamp taken before the stack was read. Single and batch reads share the stack's routine and
//! the promotion into L1.

use std::{any::Any, sync::Arc};

use serde::de::DeserializeOwned;

use tiercache_core::{
    Bytes, Codec, DecodeError, Decoded, EagerRefresh, Result, StoredMeta, scale_ttl, validate_key,
};

use super::{Engine, Fallback};
use crate::events::CacheEvent;
use crate::{
    common::{Lookup, Scope},
    front::{Behind, Encoded, FrontRead, Stamp},
    policy::{Life, Placement, tags_of},
    stack::{Found, Leases, Leasing},
};

/// What a batch read found for one key, and the fallback met on the way.
pub(crate) struct ReadOne<T> {
    pub(crate) found: Lookup<T>,
    pub(crate) fallback: Option<Fallback<T>>,
}

impl<C: Codec> Engine<C> {
    /// Decodes stored bytes as a `T` with the cache's codec.
    ///
    /// # Errors
    ///
    /// When the bytes are not a value of this codec and schema version.
    pub(crate) fn decode<T: DeserializeOwned>(
        &self,
        bytes: &[u8],
    ) -> std::result::Result<Decoded<T>, DecodeError> {
        self.envelope.decode(bytes)
    }

    /// The read of `get_many`: [`read_many`](Self::read_many), the values only.
    ///
    /// # Errors
    ///
    /// As [`read_many`](Self::read_many).
    pub(crate) async fn read_values<T, D>(
        &self,
        keys: &[&str],
        decode: &D,
    ) -> Result<Vec<Option<Arc<T>>>>
    where
        T: Any + Send + Sync,
        D: Fn(&Bytes) -> Result<Decoded<T>, DecodeError> + Sync,
    {
        let found = self
            .read_many(keys, decode, self.defaults.eager_refresh)
            .await?;
        Ok(found
            .into_iter()
            .map(|one| one.found.into_value())
            .collect())
    }

    /// The read of `get`, `get_arc` and `get_bytes`: L1, then the stack. A cached "not found"
    /// reads as `None` (counted as a negative hit).
    ///
    /// # Errors
    ///
    /// [`tiercache_core::Error::InvalidKey`] for a key that breaks the key rules.
    pub(crate) async fn read<T, D>(&self, key: &str, decode: &D) -> Result<Option<Arc<T>>>
    where
        T: Any + Send + Sync,
        D: Fn(&Bytes) -> Result<Decoded<T>, DecodeError> + Sync,
    {
        match self.front.lookup::<T>(key).await {
            FrontRead::Hit(value) => {
                self.events.emit(|| CacheEvent::Hit {
                    key: key.to_owned(),
                });
                Ok(Some(value))
            }
            FrontRead::Negative => {
                self.answer_negative();
                self.events.emit(|| CacheEvent::Hit {
                    key: key.to_owned(),
                });
                Ok(None)
            }
            other => {
                // Boxed: the miss path must not grow the hit path's future.
                let found = Box::pin(self.read_after_front(key, other, decode)).await?;
                self.events.emit(|| match found {
                    Lookup::Miss => CacheEvent::Miss {
                        key: key.to_owned(),
                    },
                    Lookup::Hit(_) | Lookup::Negative => CacheEvent::Hit {
                        key: key.to_owned(),
                    },
                });
                Ok(found.into_value())
            }
        }
    }

    async fn read_after_front<T, D>(
        &self,
        key: &str,
        front: FrontRead<T>,
        decode: &D,
    ) -> Result<Lookup<T>>
    where
        T: Any + Send + Sync,
        D: Fn(&Bytes) -> Result<Decoded<T>, DecodeError> + Sync,
    {
        // The two rare cases are boxed where they happen, so their futures are not part of
        // this one: it is boxed on every L1 miss, and one under about 1 KB comes from the
        // allocator's per-thread cache instead of its slower general path.
        match front {
            FrontRead::Encoded(encoded) => {
                match Box::pin(self.type_update(key, &encoded, decode)).await {
                    Lookup::Miss => {}
                    found => return Ok(self.counted(found)),
                }
            }
            FrontRead::PastDeadline => {
                if let Behind::Fresh(value) = Box::pin(self.front.behind::<T>(key)).await {
                    return Ok(Lookup::Hit(value));
                }
            }
            FrontRead::Hit(_) | FrontRead::Negative | FrontRead::Miss => {}
        }
        // Invalid keys are never stored, so checking after the L1 miss keeps the hit path free
        // of it.
        validate_key(key)?;
        let stamp = self.front.stamp(key);
        let (found, _, _) = self
            .read_below(
                key,
                stamp,
                decode,
                self.defaults.eager_refresh,
                self.promotion_leasing(),
            )
            .await;
        Ok(self.counted(found))
    }

    /// How a plain read leases: only where it may promote, and only with leases on.
    fn promotion_leasing(&self) -> Leasing {
        let leases = self.defaults.leases;
        if leases.enabled {
            Leasing::Promote(leases.ttl)
        } else {
            Leasing::Off
        }
    }

    /// Counts a cached "not found" answered.
    fn counted<T>(&self, found: Lookup<T>) -> Lookup<T> {
        if matches!(found, Lookup::Negative) {
            self.counters.negative_hit();
        }
        found
    }

    /// Counts a cached "not found" in L1 that answers the call.
    pub(super) fn answer_negative(&self) {
        self.front.count_negative(true);
        self.counters.negative_hit();
    }

    /// Reads the stack under `stamp` and promotes what it finds into L1; with the first stale
    /// copy met, as a fallback carrying the same stamp, and the leases the read took on the
    /// shared tiers (`leasing`: the lease TTL, for a read a load follows).
    pub(super) async fn read_below<T, D>(
        &self,
        key: &str,
        stamp: Stamp,
        decode: &D,
        eager: EagerRefresh,
        leasing: Leasing,
    ) -> (Lookup<T>, Option<Fallback<T>>, Leases)
    where
        T: Any + Send + Sync,
        D: Fn(&Bytes) -> Result<Decoded<T>, DecodeError> + Sync,
    {
        let gate = || self.front.enter(stamp);
        // Boxed: this future is part of the boxed future of every L1 miss (see `read`). Two
        // boxes under about 1 KB each come from the allocator's per-thread cache; one box of
        // both would take its slower general path (rustc keeps room for the stack's answer
        // beside the stack's future while it runs).
        let below = Box::pin(self.stack.read(key, decode, &gate, leasing)).await;
        let offerable = below.stale_after_leases;
        let fallback = below.stale.map(|copy| Fallback {
            copy,
            stamp,
            offerable,
        });
        let Some(found) = below.found else {
            return (Lookup::Miss, fallback, below.leases);
        };
        let leases = below.leases;
        if found.raced || self.front.takes_copies() {
            // Boxed, with the answer moved in, and only when there is a copy to make or undo:
            // this future then holds nothing across an await but the stack's read, which keeps
            // the box of every L1 miss (see `read`) well under the allocator's 1 KB per-thread
            // cache limit (about 560 bytes against 920 with the copy's state inside).
            return Box::pin(async move {
                self.promote(key, stamp, &found, eager).await;
                (found.into_lookup(), fallback, leases)
            })
            .await;
        }
        self.count_if_beaten(key, stamp);
        (found.into_lookup(), fallback, leases)
    }

    /// Copies a value found below L1 into L1 (when L1 admits it), under `stamp`. Counts a fill
    /// that an invalidation beat. When a copy the stack made of it raced an invalidation (and
    /// was undone), another read of this instance may have copied that into L1 meanwhile: the
    /// key goes from L1 again.
    async fn promote<T: Any + Send + Sync>(
        &self,
        key: &str,
        stamp: Stamp,
        found: &Found<T>,
        eager: EagerRefresh,
    ) {
        if found.raced {
            self.counters.fill_rejected();
            self.events.emit(|| CacheEvent::FillRejected {
                key: key.to_owned(),
            });
            Box::pin(self.drop_here(Scope::Key(key))).await;
            return;
        }
        if let Some(scale) = self.front.ttl_scale()
            && self.front.admits(key)
        {
            let placement = found.placement(scale, eager);
            // Boxed where it happens: moka's insert future is large, and without it here the
            // boxed futures of every L1 miss (see `read`) stay small.
            let insert = self
                .front
                .insert(stamp, key, found.value.clone(), placement);
            if Box::pin(insert).await {
                self.front.count_promotion();
            }
        }
        self.count_if_beaten(key, stamp);
    }

    /// Counts a fill of `key` under `stamp` that an invalidation beat (the stamp moved).
    fn count_if_beaten(&self, key: &str, stamp: Stamp) {
        if !self.front.is_current(stamp) {
            self.counters.fill_rejected();
            self.events.emit(|| CacheEvent::FillRejected {
                key: key.to_owned(),
            });
        }
    }

    /// A second, uncounted look at L1 by a load's leader before it runs the loader: a previous
    /// flight may have filled L1 between this caller's miss and its join.
    pub(super) async fn peek_front<T, D>(&self, key: &str, decode: &D) -> Lookup<T>
    where
        T: Any + Send + Sync,
        D: Fn(&Bytes) -> Result<Decoded<T>, DecodeError> + Sync,
    {
        match self.front.peek::<T>(key).await {
            FrontRead::Hit(value) => Lookup::Hit(value),
            FrontRead::Negative => Lookup::Negative,
            FrontRead::Encoded(encoded) => self.type_update(key, &encoded, decode).await,
            FrontRead::Miss | FrontRead::PastDeadline => Lookup::Miss,
        }
    }

    /// Decodes the bytes a bus update left in L1 and puts the typed value in their place, so
    /// later reads are plain hits. Bytes that do not decode as `T` read as a miss and stay (a
    /// read with the right type may still use them).
    pub(super) async fn type_update<T, D>(
        &self,
        key: &str,
        encoded: &Arc<Encoded>,
        decode: &D,
    ) -> Lookup<T>
    where
        T: Any + Send + Sync,
        D: Fn(&Bytes) -> Result<Decoded<T>, DecodeError> + Sync,
    {
        let stamp = self.front.stamp(key);
        let value = match decode(&encoded.bytes) {
            Ok(Decoded::Value(value)) => Some(Arc::new(value)),
            Ok(Decoded::Negative) => None,
            Err(err) => {
                tracing::debug!(key, %err, "value from a bus update does not decode; read as a miss");
                return Lookup::Miss;
            }
        };
        if let Some(scale) = self.front.ttl_scale() {
            // Fresh until the update's expiry; then kept for the stale window its writer gave
            // it, as a promoted copy would be.
            let meta = StoredMeta::read(&encoded.bytes);
            let life = Life::new(
                encoded.expires_at,
                scale_ttl(meta.ttl, scale),
                meta.load_time,
                meta.stale_window,
                self.defaults.eager_refresh,
            );
            let placement = Placement {
                life,
                weight: Some(encoded.bytes.len()),
                tags: tags_of(&meta),
            };
            self.front
                .replace_encoded(stamp, key, encoded, value.clone(), placement)
                .await;
        }
        Lookup::found(value)
    }

    /// Reads `keys`: L1 for each, then one batch read per tier below for the keys still missing
    /// (each promoted into L1 under the stamp its key took before the stack was read). One
    /// answer per key, in order, with the fallback met on the way.
    ///
    /// # Errors
    ///
    /// [`tiercache_core::Error::InvalidKey`] when any key breaks the key rules (nothing is read).
    pub(crate) async fn read_many<T, D>(
        &self,
        keys: &[&str],
        decode: &D,
        eager: EagerRefresh,
    ) -> Result<Vec<ReadOne<T>>>
    where
        T: Any + Send + Sync,
        D: Fn(&Bytes) -> Result<Decoded<T>, DecodeError> + Sync,
    {
        for key in keys {
            validate_key(key)?;
        }
        let mut answers = Vec::with_capacity(keys.len());
        for key in keys {
            answers.push(self.read_front_for_batch(key, decode).await);
        }
        // Stamped before the stack is read, so an invalidation meanwhile wins.
        let stamps: Vec<Stamp> = keys.iter().map(|key| self.front.stamp(key)).collect();
        let missing: Vec<usize> = answers
            .iter()
            .enumerate()
            .filter(|(_, one)| matches!(one.found, Lookup::Miss))
            .map(|(index, _)| index)
            .collect();
        if missing.is_empty() || self.stack.is_empty() {
            return Ok(answers);
        }
        let gate = |index: usize| self.front.enter(stamps[index]);
        let leasing = self.promotion_leasing();
        let below = self
            .stack
            .read_many(keys, missing, decode, &gate, leasing)
            .await;
        for (index, below) in below.into_iter().enumerate() {
            let answer = &mut answers[index];
            if let Some(found) = below.found {
                self.promote(keys[index], stamps[index], &found, eager)
                    .await;
                answer.found = self.counted(found.into_lookup());
            }
            if answer.fallback.is_none() {
                answer.fallback = below.stale.map(|copy| Fallback {
                    copy,
                    stamp: stamps[index],
                    offerable: false,
                });
            }
        }
        Ok(answers)
    }

    /// L1's answer for one key of a batch: a cached "not found" answers (a batch has no
    /// "load over" form), a kept copy still fresh answers, a stale one is the fallback.
    async fn read_front_for_batch<T, D>(&self, key: &str, decode: &D) -> ReadOne<T>
    where
        T: Any + Send + Sync,
        D: Fn(&Bytes) -> Result<Decoded<T>, DecodeError> + Sync,
    {
        let mut one = ReadOne {
            found: Lookup::Miss,
            fallback: None,
        };
        match self.front.lookup::<T>(key).await {
            FrontRead::Hit(value) => one.found = Lookup::Hit(value),
            FrontRead::Negative => {
                self.answer_negative();
                one.found = Lookup::Negative;
            }
            FrontRead::Encoded(encoded) => {
                one.found = self.counted(self.type_update(key, &encoded, decode).await);
            }
            FrontRead::PastDeadline => match self.front.behind::<T>(key).await {
                Behind::Fresh(value) => one.found = Lookup::Hit(value),
                Behind::Stale(copy, stamp) => {
                    one.fallback = Some(Fallback {
                        copy,
                        stamp,
                        offerable: false,
                    });
                }
                Behind::Nothing => {}
            },
            FrontRead::Miss => {}
        }
        one
    }
}
