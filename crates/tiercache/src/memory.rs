//! The typed L1 as the facade sees it. Without the `moka` feature there is no L1: the type is
//! uninhabited, so `Option<MemoryLayer>` is always `None` and no other file needs a `cfg`.

use std::{any::Any, sync::Arc, time::Instant};

use tiercache_core::{Bytes, Result, TierStats};

use crate::TierOptions;

/// What L1 holds for a key, as a `T`.
pub(crate) enum Lookup<T> {
    /// A live value of type `T`.
    Hit(Arc<T>),
    /// A live cached "not found".
    Negative,
    /// Nothing usable (absent, expired, or a value of another type).
    Miss,
}

/// What L1 holds for a key before it is typed: either a [`Lookup`], or the encoded bytes an
/// update from another instance left there, which the caller decodes as its `T`
/// (`Inner::lookup_memory`).
#[cfg_attr(
    not(feature = "moka"),
    expect(dead_code, reason = "without moka there is no L1 to find anything in")
)]
pub(crate) enum Slot<T> {
    /// A typed answer.
    Ready(Lookup<T>),
    /// Bytes from a bus update, not decoded yet.
    Encoded(Arc<Encoded>),
}

/// A value that arrived over the bus as bytes and is decoded on its first typed read.
#[derive(Debug)]
pub(crate) struct Encoded {
    pub(crate) bytes: Bytes,
    pub(crate) expires_at: Instant,
}

#[cfg(feature = "moka")]
mod imp {
    use tiercache_core::TierCounters;
    use tiercache_moka::{MemoryEntry, MemoryTier};

    use crate::promotion::Gate;

    use super::*;

    /// The typed L1 with its options and counters.
    #[derive(Debug)]
    pub(crate) struct MemoryLayer {
        tier: MemoryTier,
        options: TierOptions,
        counters: TierCounters,
        promotion: Gate,
    }

    impl MemoryLayer {
        pub(crate) fn new(tier: MemoryTier, options: TierOptions) -> Self {
            Self {
                tier,
                promotion: Gate::new(options.promotion_value()),
                options,
                counters: TierCounters::default(),
            }
        }

        /// Whether this lower-tier hit of `key` is copied into L1.
        pub(crate) fn admits(&self, key: &str) -> bool {
            self.promotion.admit(key)
        }

        pub(crate) fn name(&self) -> &str {
            self.tier.name()
        }

        pub(crate) fn options(&self) -> &TierOptions {
            &self.options
        }

        /// The hot path: one moka lookup and a type check; no allocation, no key copy.
        /// Counted in the tier's hits and misses.
        pub(crate) async fn lookup<T: Any + Send + Sync>(&self, key: &str) -> Slot<T> {
            let found = self.peek(key).await;
            match found {
                Slot::Ready(Lookup::Miss) => self.counters.miss(),
                _ => self.counters.hit(),
            }
            found
        }

        /// A lookup that is not counted: the second look a load leader takes before loading.
        pub(crate) async fn peek<T: Any + Send + Sync>(&self, key: &str) -> Slot<T> {
            let Some(entry) = self.tier.get(key).await else {
                return Slot::Ready(Lookup::Miss);
            };
            if entry.is_negative() {
                return Slot::Ready(Lookup::Negative);
            }
            match entry.downcast::<T>() {
                Ok(value) => Slot::Ready(Lookup::Hit(value)),
                Err(entry) => entry
                    .into_typed::<Encoded>()
                    .map_or(Slot::Ready(Lookup::Miss), Slot::Encoded),
            }
        }

        /// Stores bytes that arrived over the bus; the first typed read decodes them.
        pub(crate) async fn insert_encoded(&self, key: &str, bytes: Bytes, expires_at: Instant) {
            let weight = bytes.len();
            let encoded = Arc::new(Encoded { bytes, expires_at });
            let entry = MemoryEntry::new(encoded, expires_at).with_weight(weight);
            self.tier.insert(key, entry).await;
            self.counters.write();
        }

        /// Stores a value; `weight` is its encoded size when known.
        pub(crate) async fn insert<T: Any + Send + Sync>(
            &self,
            key: &str,
            value: Arc<T>,
            expires_at: Instant,
            weight: Option<usize>,
        ) {
            let entry = MemoryEntry::new(value, expires_at);
            let entry = match weight {
                Some(bytes) => entry.with_weight(bytes),
                None => entry,
            };
            self.tier.insert(key, entry).await;
            self.counters.write();
        }

        pub(crate) async fn insert_negative(&self, key: &str, expires_at: Instant) {
            self.tier
                .insert(key, MemoryEntry::negative(expires_at))
                .await;
            self.counters.write();
        }

        pub(crate) fn record_promotion(&self) {
            self.counters.promotion();
        }

        pub(crate) async fn remove(&self, key: &str) {
            self.tier.remove(key).await;
        }

        pub(crate) fn remove_prefix(&self, prefix: &str) -> Result<()> {
            self.tier.remove_prefix(prefix)
        }

        pub(crate) fn clear(&self) {
            self.tier.clear();
        }

        pub(crate) fn stats(&self) -> TierStats {
            self.counters.snapshot(self.tier.name())
        }
    }
}

#[cfg(not(feature = "moka"))]
mod imp {
    use super::*;

    /// No L1 without the `moka` feature: this type has no values.
    #[derive(Debug)]
    pub(crate) enum MemoryLayer {}

    impl MemoryLayer {
        pub(crate) fn name(&self) -> &str {
            match *self {}
        }
        pub(crate) fn options(&self) -> &TierOptions {
            match *self {}
        }
        pub(crate) fn admits(&self, _key: &str) -> bool {
            match *self {}
        }
        pub(crate) async fn lookup<T: Any + Send + Sync>(&self, _key: &str) -> Slot<T> {
            match *self {}
        }
        pub(crate) async fn peek<T: Any + Send + Sync>(&self, _key: &str) -> Slot<T> {
            match *self {}
        }
        pub(crate) async fn insert_encoded(&self, _key: &str, _bytes: Bytes, _at: Instant) {
            match *self {}
        }
        pub(crate) async fn insert<T: Any + Send + Sync>(
            &self,
            _key: &str,
            _value: Arc<T>,
            _expires_at: Instant,
            _weight: Option<usize>,
        ) {
            match *self {}
        }
        pub(crate) async fn insert_negative(&self, _key: &str, _expires_at: Instant) {
            match *self {}
        }
        pub(crate) fn record_promotion(&self) {
            match *self {}
        }
        pub(crate) async fn remove(&self, _key: &str) {
            match *self {}
        }
        pub(crate) fn remove_prefix(&self, _prefix: &str) -> Result<()> {
            match *self {}
        }
        pub(crate) fn clear(&self) {
            match *self {}
        }
        pub(crate) fn stats(&self) -> TierStats {
            match *self {}
        }
    }
}

pub(crate) use imp::MemoryLayer;
