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

/// An L1 entry past its serving deadline but not expired: in its refresh window (still fresh)
/// or its fail-safe window (stale). One entry holds it all: the value is served as it is until
/// the deadline, which the hit path checks only for entries that have one.
#[derive(Debug)]
pub(crate) struct Kept<T> {
    pub(crate) value: Arc<T>,
    /// Until when it is fresh, when it still is.
    pub(crate) fresh_until: Option<Instant>,
    pub(crate) keep_until: Instant,
    pub(crate) tags: Option<Arc<[String]>>,
}

/// What goes into L1 with a value besides the value: its life, its weight and its tags.
#[derive(Debug, Clone)]
pub(crate) struct Placement {
    pub(crate) life: crate::policy::Life,
    /// The encoded size, when known.
    #[cfg_attr(
        not(feature = "moka"),
        expect(dead_code, reason = "without moka there is no L1 to weigh entries in")
    )]
    pub(crate) weight: Option<usize>,
    #[cfg_attr(
        not(feature = "moka"),
        expect(dead_code, reason = "without moka there is no L1 to tag entries in")
    )]
    pub(crate) tags: Option<Arc<[String]>>,
}

#[cfg(feature = "moka")]
mod imp {
    use std::sync::atomic::{AtomicBool, Ordering};

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
        /// Whether an entry with deadlines (a refresh point or a stale window) was ever
        /// stored: until then an L1 miss needs no second look, so caches that use neither
        /// feature pay nothing for them.
        deadlines_used: AtomicBool,
    }

    impl MemoryLayer {
        pub(crate) fn new(tier: MemoryTier, options: TierOptions) -> Self {
            Self {
                tier,
                promotion: Gate::new(options.promotion_value()),
                options,
                counters: TierCounters::default(),
                deadlines_used: AtomicBool::new(false),
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
        /// A value found is counted as a hit here; a cached "not found" is counted by the caller
        /// (a hit where it answers, a miss where it is loaded over), and a miss once the caller
        /// has looked behind the front entry ([`count_miss`](Self::count_miss)).
        pub(crate) async fn lookup<T: Any + Send + Sync>(&self, key: &str) -> Slot<T> {
            let found = self.peek(key).await;
            if !matches!(found, Slot::Ready(Lookup::Miss | Lookup::Negative)) {
                self.counters.hit();
            }
            found
        }

        /// Whether an entry with deadlines may be in L1 (see `deadlines_used`).
        pub(crate) fn may_keep(&self) -> bool {
            self.deadlines_used.load(Ordering::Relaxed)
        }

        pub(crate) fn count_hit(&self) {
            self.counters.hit();
        }

        pub(crate) fn count_miss(&self) {
            self.counters.miss();
        }

        /// Remembers that entries with deadlines exist (one store, the first time only).
        fn note_deadlines(&self, entry: &MemoryEntry) {
            if entry.has_deadlines() && !self.deadlines_used.load(Ordering::Relaxed) {
                self.deadlines_used.store(true, Ordering::Relaxed);
            }
        }

        /// The entry under `key` when it holds a `T`, whatever its deadlines: the second look
        /// after the hit path found it past its serving deadline.
        pub(crate) async fn kept<T: Any + Send + Sync>(&self, key: &str) -> Option<Kept<T>> {
            if !self.may_keep() {
                return None;
            }
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

        /// A lookup that is not counted: the second look a load leader takes before loading.
        pub(crate) async fn peek<T: Any + Send + Sync>(&self, key: &str) -> Slot<T> {
            let Some(entry) = self.tier.get(key).await else {
                return Slot::Ready(Lookup::Miss);
            };
            // Only entries with a refresh point or a stale window pay for the clock read.
            if entry.has_deadlines() && !entry.is_served_at(Instant::now()) {
                return Slot::Ready(Lookup::Miss);
            }
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
        pub(crate) async fn insert_encoded(
            &self,
            key: &str,
            bytes: Bytes,
            expires_at: Instant,
            tags: Option<Arc<[String]>>,
        ) {
            let weight = bytes.len();
            let encoded = Arc::new(Encoded { bytes, expires_at });
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
        pub(crate) async fn insert<T: Any + Send + Sync>(
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
            self.note_deadlines(&entry);
            self.tier.insert(key, weighed(entry, placement)).await;
            self.counters.write();
        }

        /// Serves a kept value as it is again, until `serve_until`, fresh until `fresh_until`
        /// and kept until `keep_until`, so the next hits take the fast path.
        pub(crate) async fn refront<T: Any + Send + Sync>(
            &self,
            key: &str,
            value: Arc<T>,
            (serve_until, fresh_until): (Instant, Instant),
            keep_until: Instant,
            tags: Option<Arc<[String]>>,
        ) {
            let mut entry =
                MemoryEntry::new(value, keep_until).with_deadlines(serve_until, fresh_until);
            self.note_deadlines(&entry);
            if let Some(tags) = tags {
                entry = entry.with_tags(tags);
            }
            self.tier.insert(key, entry).await;
        }

        pub(crate) fn remove_tagged(&self, tag: &str) -> Result<()> {
            self.tier.remove_tagged(tag)
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

    fn weighed(entry: MemoryEntry, placement: &Placement) -> MemoryEntry {
        let entry = match placement.weight {
            Some(bytes) => entry.with_weight(bytes),
            None => entry,
        };
        match &placement.tags {
            Some(tags) => entry.with_tags(Arc::clone(tags)),
            None => entry,
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
        pub(crate) async fn insert_encoded(
            &self,
            _key: &str,
            _bytes: Bytes,
            _at: Instant,
            _tags: Option<Arc<[String]>>,
        ) {
            match *self {}
        }
        pub(crate) fn count_hit(&self) {
            match *self {}
        }
        pub(crate) fn may_keep(&self) -> bool {
            match *self {}
        }
        pub(crate) fn count_miss(&self) {
            match *self {}
        }
        pub(crate) async fn kept<T: Any + Send + Sync>(&self, _key: &str) -> Option<Kept<T>> {
            match *self {}
        }
        pub(crate) async fn insert<T: Any + Send + Sync>(
            &self,
            _key: &str,
            _value: Option<Arc<T>>,
            _placement: &Placement,
        ) {
            match *self {}
        }
        pub(crate) async fn refront<T: Any + Send + Sync>(
            &self,
            _key: &str,
            _value: Arc<T>,
            _deadlines: (Instant, Instant),
            _keep_until: Instant,
            _tags: Option<Arc<[String]>>,
        ) {
            match *self {}
        }
        pub(crate) fn remove_tagged(&self, _tag: &str) -> Result<()> {
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
