//! The moka store under the front. Private to `front`: its inserts take no stamp, so only
//! `Front`, which checks one around every insert, may call them. Without the `moka` feature there
//! is no store: the type is uninhabited, so `Option<Store>` is always `None`.

use std::{any::Any, sync::Arc};

use tiercache_core::TierStats;

use super::{Encoded, Kept, Placement};
use crate::TierOptions;

/// What the store holds for a key, before the front interprets it.
#[cfg_attr(
    not(feature = "moka"),
    expect(
        dead_code,
        reason = "without moka there is no store to find anything in"
    )
)]
pub(super) enum Peeked<T> {
    /// A live value of type `T`.
    Value(Arc<T>),
    /// A live cached "not found".
    Negative,
    /// Nothing, or a value of another type.
    Nothing,
    /// An entry past its serving deadline (in its refresh or stale window): look behind it.
    PastDeadline,
    /// Bytes a bus update left, not decoded yet.
    Encoded(Arc<Encoded>),
}

#[cfg(feature = "moka")]
mod imp {
    use std::time::Instant;

    use tiercache_core::TierCounters;
    use tiercache_moka::{MemoryEntry, MemoryTier};

    use super::*;
    use crate::policy::Gate;

    /// The typed L1 with its options, counters and promotion gate.
    #[derive(Debug)]
    pub(in crate::front) struct Store {
        tier: MemoryTier,
        options: TierOptions,
        counters: TierCounters,
        promotion: Gate,
    }

    impl Store {
        pub(in crate::front) fn new(tier: MemoryTier, options: TierOptions) -> Self {
            Self {
                tier,
                promotion: Gate::new(options.promotion_value()),
                options,
                counters: TierCounters::default(),
            }
        }

        pub(in crate::front) fn name(&self) -> &str {
            self.tier.name()
        }

        pub(in crate::front) fn options(&self) -> &TierOptions {
            &self.options
        }

        pub(in crate::front) fn admits(&self, key: &str) -> bool {
            self.promotion.admit(key)
        }

        pub(in crate::front) fn counters(&self) -> &TierCounters {
            &self.counters
        }

        /// The hot path: one moka lookup and a type check; no allocation, no key copy. Only
        /// entries with a refresh point or a stale window pay for a clock read.
        pub(in crate::front) async fn peek<T: Any + Send + Sync>(&self, key: &str) -> Peeked<T> {
            let Some(entry) = self.tier.get(key).await else {
                return Peeked::Nothing;
            };
            if entry.has_deadlines() && !entry.is_served_at(Instant::now()) {
                return Peeked::PastDeadline;
            }
            if entry.is_negative() {
                return Peeked::Negative;
            }
            match entry.downcast::<T>() {
                Ok(value) => Peeked::Value(value),
                Err(entry) => entry
                    .into_typed::<Encoded>()
                    .map_or(Peeked::Nothing, Peeked::Encoded),
            }
        }

        /// The entry under `key` when it holds a `T`, whatever its deadlines.
        pub(in crate::front) async fn kept<T: Any + Send + Sync>(
            &self,
            key: &str,
        ) -> Option<Kept<T>> {
            let entry = self.tier.get(key).await?;
            let now = Instant::now();
            let fresh_until = entry.fresh_for(now).map(|fresh| now + fresh);
            let keep_until = entry.expires_at();
            let tags = entry.tags().cloned();
            let value = entry.downcast::<T>().ok()?;
            Some(Kept {
                value,
                fresh_until,
                keep_until,
                tags,
            })
        }

        pub(in crate::front) async fn insert_encoded(
            &self,
            key: &str,
            encoded: Arc<Encoded>,
            tags: Option<Arc<[String]>>,
        ) {
            let weight = encoded.bytes.len();
            let expires_at = encoded.expires_at;
            let mut entry = MemoryEntry::new(encoded, expires_at).with_weight(weight);
            if let Some(tags) = tags {
                entry = entry.with_tags(tags);
            }
            self.tier.insert(key, entry).await;
            self.counters.write();
        }

        /// Stores a value (or a negative entry for `None`) as `placement` says: served as it
        /// is until the refresh point or the end of its fresh life, and kept (for a refresh or
        /// as a fail-safe fallback) until the end of its life.
        pub(in crate::front) async fn insert<T: Any + Send + Sync>(
            &self,
            key: &str,
            value: Option<Arc<T>>,
            placement: &Placement,
        ) {
            let life = &placement.life;
            let entry = match value {
                Some(value) if life.needs_kept() => {
                    let keep_until = life
                        .keep_until
                        .min(life.front_until() + tiercache_moka::MAX_DEADLINE_LEAD);
                    MemoryEntry::new(value, keep_until)
                        .with_deadlines(life.front_until(), life.fresh_until)
                }
                Some(value) => MemoryEntry::new(value, life.front_until()),
                None => MemoryEntry::negative(life.front_until()),
            };
            let entry = match placement.weight {
                Some(bytes) => entry.with_weight(bytes),
                None => entry,
            };
            let entry = match &placement.tags {
                Some(tags) => entry.with_tags(Arc::clone(tags)),
                None => entry,
            };
            self.tier.insert(key, entry).await;
            self.counters.write();
        }

        pub(in crate::front) async fn remove(&self, key: &str) {
            self.tier.remove(key).await;
        }

        pub(in crate::front) async fn remove_prefix(&self, prefix: &str) {
            self.tier.remove_prefix(prefix).await;
        }

        pub(in crate::front) async fn remove_tagged(&self, tag: &str) {
            self.tier.remove_tagged(tag).await;
        }

        pub(in crate::front) fn clear(&self) {
            self.tier.clear();
        }

        pub(in crate::front) fn stats(&self) -> TierStats {
            self.counters.snapshot(self.tier.name())
        }
    }
}

#[cfg(not(feature = "moka"))]
mod imp {
    use tiercache_core::TierCounters;

    use super::*;

    /// No L1 without the `moka` feature: this type has no values.
    #[derive(Debug)]
    pub(in crate::front) enum Store {}

    impl Store {
        pub(in crate::front) fn name(&self) -> &str {
            match *self {}
        }
        pub(in crate::front) fn options(&self) -> &TierOptions {
            match *self {}
        }
        pub(in crate::front) fn admits(&self, _key: &str) -> bool {
            match *self {}
        }
        pub(in crate::front) fn counters(&self) -> &TierCounters {
            match *self {}
        }
        pub(in crate::front) async fn peek<T: Any + Send + Sync>(&self, _key: &str) -> Peeked<T> {
            match *self {}
        }
        pub(in crate::front) async fn kept<T: Any + Send + Sync>(
            &self,
            _key: &str,
        ) -> Option<Kept<T>> {
            match *self {}
        }
        pub(in crate::front) async fn insert_encoded(
            &self,
            _key: &str,
            _encoded: Arc<Encoded>,
            _tags: Option<Arc<[String]>>,
        ) {
            match *self {}
        }
        pub(in crate::front) async fn insert<T: Any + Send + Sync>(
            &self,
            _key: &str,
            _value: Option<Arc<T>>,
            _placement: &Placement,
        ) {
            match *self {}
        }
        pub(in crate::front) async fn remove(&self, _key: &str) {
            match *self {}
        }
        pub(in crate::front) async fn remove_prefix(&self, _prefix: &str) {
            match *self {}
        }
        pub(in crate::front) async fn remove_tagged(&self, _tag: &str) {
            match *self {}
        }
        pub(in crate::front) fn clear(&self) {
            match *self {}
        }
        pub(in crate::front) fn stats(&self) -> TierStats {
            match *self {}
        }
    }
}

pub(super) use imp::Store;
