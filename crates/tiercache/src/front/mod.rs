//! The front: the typed L1 and the invalidation clock that guards it.
//!
//! One rule lives here: **every value that goes into L1 carries the [`Stamp`] its writer took
//! before it read the value**. [`Front::insert`] (and the update and re-front forms) enters the
//! clock with the stamp and stores while it holds the pass, then checks again and undoes the
//! store if an invalidation came in between. The moka store's own inserts are private to this
//! module, so an unguarded insert does not compile anywhere else. Every invalidation goes
//! through [`Front::invalidate`] (or [`Front::bump`]): the clock moves first, the stores already
//! let in end, entries go last. Whichever way an insert and an invalidation interleave, the older
//! value does not survive, and nothing lands after the invalidation returned (see `clock.rs`).
//!
//! The L1 max age is applied here too: no entry lives longer than it, whatever its TTL.

mod clock;
mod memory;

use std::{
    any::Any,
    sync::Arc,
    time::{Duration, Instant},
};

use clock::InvalidationClock;
pub(crate) use clock::Stamp;
use memory::{Peeked, Store};
use tiercache_core::{Bytes, Result, TierStats, expiry_after, scale_ttl};

use crate::{
    TierOptions,
    common::{FillPass, Scope, StaleCopy},
    policy::Placement,
    stack::Written,
};

/// What the front holds for a key, as the read paths see it.
pub(crate) enum FrontRead<T> {
    /// A live value of type `T` (counted as a hit).
    Hit(Arc<T>),
    /// A live cached "not found" (not counted: the caller knows whether it answers).
    Negative,
    /// Nothing (counted as a miss).
    Miss,
    /// An entry past its serving deadline; [`Front::behind`] says what it still holds.
    PastDeadline,
    /// Bytes a bus update left, to be decoded by the caller as its `T` (counted as a hit).
    Encoded(Arc<Encoded>),
}

/// A value that arrived over the bus as bytes and is decoded on its first typed read.
#[derive(Debug)]
pub(crate) struct Encoded {
    pub(crate) bytes: Bytes,
    pub(crate) expires_at: Instant,
}

/// What L1 holds behind an entry past its serving deadline.
pub(crate) enum Behind<T> {
    /// A copy still fresh (the entry reached its refresh point): answered, and put back in
    /// front.
    Fresh(Arc<T>),
    /// A copy past its fresh life, kept as a fail-safe fallback, with the stamp taken before it
    /// was read.
    Stale(StaleCopy<T>, Stamp),
    /// Nothing.
    Nothing,
}

/// An L1 entry whatever its deadlines.
struct Kept<T> {
    value: Arc<T>,
    /// Until when it is fresh, when it still is.
    fresh_until: Option<Instant>,
    keep_until: Instant,
    tags: Option<Arc<[String]>>,
}

/// A change written below L1 and invalidated again in L1: what may be published. Only
/// [`Front::settle`] makes one.
#[must_use = "a settled change must be published (or its outcome returned)"]
#[derive(Debug)]
pub(crate) struct Settled {
    result: Result<()>,
}

impl Settled {
    /// The first failure of the write below L1, if any.
    pub(crate) fn into_result(self) -> Result<()> {
        self.result
    }
}

/// The typed L1 (when the cache has one) and the invalidation clock.
#[derive(Debug)]
pub(crate) struct Front {
    store: Option<Store>,
    clock: InvalidationClock,
    max_age: Option<Duration>,
}

impl Front {
    /// A front over the moka `tier` with its options.
    #[cfg(feature = "moka")]
    pub(crate) fn new(
        tier: Option<(tiercache_moka::MemoryTier, TierOptions)>,
        max_age: Option<Duration>,
    ) -> Self {
        Self {
            store: tier.map(|(tier, options)| Store::new(tier, options)),
            clock: InvalidationClock::new(),
            max_age,
        }
    }

    /// A front without L1 (no `moka` feature): only the clock.
    #[cfg(not(feature = "moka"))]
    pub(crate) fn new(_tier: Option<std::convert::Infallible>, max_age: Option<Duration>) -> Self {
        Self {
            store: None,
            clock: InvalidationClock::new(),
            max_age,
        }
    }

    /// Whether the cache has an L1.
    pub(crate) fn exists(&self) -> bool {
        self.store.is_some()
    }

    /// L1's name and options, when there is an L1.
    pub(crate) fn describe(&self) -> Option<(&str, &TierOptions)> {
        self.store
            .as_ref()
            .map(|store| (store.name(), store.options()))
    }

    /// L1's TTL scale, when there is an L1.
    pub(crate) fn ttl_scale(&self) -> Option<f64> {
        self.store
            .as_ref()
            .map(|store| store.options().ttl_scale_value())
    }

    /// Whether L1 takes copies of what is read or sent below it (its promotion policy is not
    /// `Never`).
    pub(crate) fn takes_copies(&self) -> bool {
        self.store
            .as_ref()
            .is_some_and(|store| store.options().promotes())
    }

    /// Whether this lower-tier hit of `key` is copied into L1.
    pub(crate) fn admits(&self, key: &str) -> bool {
        self.store.as_ref().is_some_and(|store| store.admits(key))
    }

    /// The hot path: one lookup and a type check.
    pub(crate) async fn lookup<T: Any + Send + Sync>(&self, key: &str) -> FrontRead<T> {
        let Some(store) = &self.store else {
            return FrontRead::Miss;
        };
        match store.peek::<T>(key).await {
            Peeked::Value(value) => {
                store.counters().hit();
                crate::observe::answered_by(store.name());
                FrontRead::Hit(value)
            }
            Peeked::Negative => FrontRead::Negative,
            Peeked::Nothing => {
                store.counters().miss();
                FrontRead::Miss
            }
            Peeked::PastDeadline => FrontRead::PastDeadline,
            Peeked::Encoded(encoded) => {
                store.counters().hit();
                FrontRead::Encoded(encoded)
            }
        }
    }

    /// An uncounted lookup: the second look of a load's leader, when no tier below L1 would
    /// hold what a load that just finished stored.
    pub(crate) async fn peek<T: Any + Send + Sync>(&self, key: &str) -> FrontRead<T> {
        let Some(store) = &self.store else {
            return FrontRead::Miss;
        };
        match store.peek::<T>(key).await {
            Peeked::Value(value) => FrontRead::Hit(value),
            Peeked::Negative => FrontRead::Negative,
            Peeked::Encoded(encoded) => FrontRead::Encoded(encoded),
            Peeked::Nothing | Peeked::PastDeadline => FrontRead::Miss,
        }
    }

    /// Counts a copy of a lower tier's value put into L1.
    pub(crate) fn count_promotion(&self) {
        if let Some(store) = &self.store {
            store.counters().promotion();
        }
    }

    /// Counts a cached "not found" the caller answered with (a hit) or loads over (a miss).
    pub(crate) fn count_negative(&self, answered: bool) {
        if let Some(store) = &self.store {
            if answered {
                store.counters().hit();
                crate::observe::answered_by(store.name());
            } else {
                store.counters().miss();
            }
        }
    }

    /// After [`FrontRead::PastDeadline`]: the copy behind the entry, fresh (the caller answers
    /// with it and refreshes) or stale (a fail-safe fallback, with the stamp taken before it was
    /// read). Counts the hit or miss.
    pub(crate) async fn behind<T: Any + Send + Sync>(&self, key: &str) -> Behind<T> {
        let Some(store) = &self.store else {
            return Behind::Nothing;
        };
        let stamp = self.clock.stamp(key);
        match store.kept::<T>(key).await {
            Some(Kept {
                value,
                fresh_until: Some(_),
                ..
            }) => {
                // NOTE: not put back in front: what is read here is L1's own entry, and an
                // invalidation that moved the clock before this read's stamp may be about to
                // remove it. The refresh the caller starts replaces it under its own stamp.
                store.counters().hit();
                crate::observe::answered_by(store.name());
                Behind::Fresh(value)
            }
            Some(kept) => {
                store.counters().miss();
                let copy = StaleCopy {
                    value: kept.value,
                    keep_until: kept.keep_until,
                    tags: kept.tags,
                };
                Behind::Stale(copy, stamp)
            }
            None => {
                store.counters().miss();
                Behind::Nothing
            }
        }
    }

    /// Reads the clock for `key`, before reading or loading a value that may go into L1.
    pub(crate) fn stamp(&self, key: &str) -> Stamp {
        self.clock.stamp(key)
    }

    /// Whether no invalidation that concerns the stamped key came since the stamp.
    pub(crate) fn is_current(&self, stamp: Stamp) -> bool {
        self.clock.unchanged_since(stamp)
    }

    /// Puts `value` (a negative entry for `None`) in L1 as `placement` says, capped by the L1
    /// max age, unless an invalidation of the key came since `stamp`; undone if one comes while
    /// storing. Returns whether the entry is in place.
    pub(crate) async fn insert<T: Any + Send + Sync>(
        &self,
        stamp: Stamp,
        key: &str,
        value: Option<Arc<T>>,
        placement: Placement,
    ) -> bool {
        let Some(store) = &self.store else {
            return false;
        };
        let Some(pass) = self.clock.enter(stamp) else {
            return false;
        };
        let placement = Placement {
            life: placement.life.capped(self.deadline()),
            ..placement
        };
        store.insert(key, value, &placement).await;
        drop(pass);
        self.undo_if_moved(store, stamp, key).await
    }

    /// Leave to store for a fill that took `stamp` (into a tier below L1 that lives in this
    /// process, say), or `None` once an invalidation of its key came since. Invalidations of the
    /// key wait while the pass is held (see `clock.rs`).
    pub(crate) fn enter(&self, stamp: Stamp) -> Option<FillPass<'_>> {
        self.clock.enter(stamp)
    }

    /// Removes what a fill just stored under `key` when its stamp moved meanwhile. Returns
    /// whether the store stands.
    async fn undo_if_moved(&self, store: &Store, stamp: Stamp, key: &str) -> bool {
        if self.is_current(stamp) {
            return true;
        }
        store.remove(key).await;
        false
    }

    /// Replaces the bytes of a bus update with their typed value, if they are still what L1
    /// holds for `key` (and the stamp is current, as for [`insert`](Self::insert)).
    pub(crate) async fn replace_encoded<T: Any + Send + Sync>(
        &self,
        stamp: Stamp,
        key: &str,
        encoded: &Arc<Encoded>,
        value: Option<Arc<T>>,
        placement: Placement,
    ) {
        let Some(store) = &self.store else {
            return;
        };
        let still_there = matches!(store.peek::<T>(key).await, Peeked::Encoded(now) if Arc::ptr_eq(&now, encoded));
        if still_there {
            self.insert(stamp, key, value, placement).await;
        }
    }

    /// Applies a value another instance wrote: the key's clock moves (a load in flight must not
    /// put an older value back), then the bytes go into L1, to be decoded on first read, for
    /// `ttl` times L1's scale (capped by the max age). The clock moves once more after that, and
    /// anything but these bytes that a read put there meanwhile (it read L1 before the update
    /// came) goes.
    pub(crate) async fn apply_update(
        &self,
        key: &str,
        bytes: Bytes,
        ttl: Duration,
        tags: Option<Arc<[String]>>,
    ) {
        let Some(store) = &self.store else {
            return;
        };
        self.clock.invalidate_key(key);
        self.clock.drain(Some(key)).await;
        let fresh = scale_ttl(ttl, store.options().ttl_scale_value());
        let expires_at = expiry_after(Instant::now(), fresh);
        let expires_at = self
            .deadline()
            .map_or(expires_at, |cap| expires_at.min(cap));
        let encoded = Arc::new(Encoded { bytes, expires_at });
        store.insert_encoded(key, Arc::clone(&encoded), tags).await;
        // A read that took its stamp after the first move but read L1 before these bytes came
        // may be putting what it read there: it stores nothing after this second move, and what
        // it stored before is not these bytes, so it goes.
        self.clock.invalidate_key(key);
        self.clock.drain(Some(key)).await;
        let still_ours = matches!(
            store.peek::<()>(key).await,
            Peeked::Encoded(now) if Arc::ptr_eq(&now, &encoded)
        );
        if !still_ours {
            store.remove(key).await;
            // As after any removal: a read that read L1 before it cannot put that back.
            self.clock.invalidate_key(key);
        }
    }

    /// Invalidates what `scope` covers: the clock first, so that no fill that read before this
    /// call can store afterwards, then the entries.
    pub(crate) async fn invalidate(&self, scope: Scope<'_>) {
        self.bump(&[scope]).await;
        let Some(store) = &self.store else {
            return;
        };
        match scope {
            Scope::Key(key) => store.remove(key).await,
            Scope::Prefix(prefix) => store.remove_prefix(prefix).await,
            Scope::Tag(tag, _) => store.remove_tagged(tag).await,
            Scope::All => store.clear(),
        }
        // The clock moves once more after the removal: a read that took its stamp after the
        // first move but read L1 itself before the removal (a fail-safe fallback, say) cannot
        // put what it read back.
        self.move_clock(scope);
    }

    fn move_clock(&self, scope: Scope<'_>) {
        match scope {
            Scope::Key(key) => self.clock.invalidate_key(key),
            Scope::Prefix(_) | Scope::Tag(..) | Scope::All => self.clock.invalidate_everything(),
        }
    }

    /// Moves the clock for what `scopes` cover, removing nothing: every read or fill that
    /// stamped before stores nothing from now on, and those storing now have finished when this
    /// returns (see `clock.rs`).
    pub(crate) async fn bump(&self, scopes: &[Scope<'_>]) {
        for scope in scopes {
            self.move_clock(*scope);
            let shard = match scope {
                Scope::Key(key) => Some(*key),
                Scope::Prefix(_) | Scope::Tag(..) | Scope::All => None,
            };
            self.clock.drain(shard).await;
        }
    }

    /// After a write or invalidation of the tiers below L1 has finished: invalidates what
    /// `scopes` cover again, clock first. A read on this instance that stamped after the first
    /// invalidation but read a lower tier before the write landed would otherwise keep the old
    /// value in L1 (its own bus message never comes back to it). Only then may the change go out.
    pub(crate) async fn settle(&self, written: Written, scopes: &[Scope<'_>]) -> Settled {
        for scope in scopes {
            self.invalidate(*scope).await;
        }
        Settled {
            result: written.into_result(),
        }
    }

    /// After a `set` of the tiers below L1 has finished: the keys' clocks move again, and
    /// whatever L1 holds for a key that is not the value this `set` put there (`ours`) goes. A
    /// read on this instance that read a lower tier before the write landed, and put that older
    /// value in L1 meanwhile, loses it; one still on its way in undoes itself. The set's own
    /// value stays, unless an invalidation from elsewhere already removed it (it may be newer).
    pub(crate) async fn settle_set<T: Any + Send + Sync>(
        &self,
        written: Written,
        ours: &[(&str, &Arc<T>)],
    ) -> Settled {
        for (key, value) in ours {
            self.clock.invalidate_key(key);
            self.clock.drain(Some(key)).await;
            let Some(store) = &self.store else {
                continue;
            };
            let still_ours = matches!(store.peek::<T>(key).await, Peeked::Value(now) if Arc::ptr_eq(&now, value));
            if !still_ours {
                store.remove(key).await;
                // As after any removal: a read that read L1 before it cannot put that back.
                self.clock.invalidate_key(key);
            }
        }
        Settled {
            result: written.into_result(),
        }
    }

    /// The instant the L1 max age allows an entry written now to live until, if there is one.
    /// The L1 max age, when there is one.
    pub(crate) fn max_age(&self) -> Option<Duration> {
        self.max_age
    }

    fn deadline(&self) -> Option<Instant> {
        // A max age past what an Instant can hold is no bound at all.
        self.max_age
            .and_then(|max_age| Instant::now().checked_add(max_age))
    }

    /// L1's counters, when there is an L1.
    pub(crate) fn stats(&self) -> Option<TierStats> {
        self.store.as_ref().map(Store::stats)
    }
}

#[cfg(all(test, feature = "moka"))]
mod tests {
    use tiercache_moka::MemoryTier;

    use super::*;
    use crate::policy::Life;

    fn front() -> Front {
        Front::new(Some((MemoryTier::new(100), TierOptions::new())), None)
    }

    fn placement() -> Placement {
        let until = Instant::now() + Duration::from_secs(60);
        Placement {
            life: Life::serving_until(until, until),
            weight: None,
            tags: None,
        }
    }

    async fn value(front: &Front, key: &str) -> Option<u32> {
        match front.lookup::<u32>(key).await {
            FrontRead::Hit(value) => Some(*value),
            _ => None,
        }
    }

    #[tokio::test]
    async fn an_insert_with_a_stamp_older_than_an_invalidation_is_refused() {
        let front = front();
        let stamp = front.stamp("k");
        front.invalidate(Scope::Key("k")).await;
        assert!(
            !front
                .insert(stamp, "k", Some(Arc::new(1_u32)), placement())
                .await
        );
        assert_eq!(value(&front, "k").await, None);

        let stamp = front.stamp("k");
        assert!(
            front
                .insert(stamp, "k", Some(Arc::new(2_u32)), placement())
                .await
        );
        assert_eq!(value(&front, "k").await, Some(2));
    }

    #[tokio::test]
    async fn prefix_tag_and_clear_invalidations_move_every_stamp() {
        let front = front();
        for scope in [Scope::Prefix("x"), Scope::Tag("t", 1), Scope::All] {
            let stamp = front.stamp("unrelated");
            front.invalidate(scope).await;
            assert!(!front.is_current(stamp), "{scope:?}");
        }
    }

    #[tokio::test]
    async fn an_update_is_undone_when_an_invalidation_races_it() {
        let front = front();
        front
            .apply_update("k", Bytes::from_static(b"v"), Duration::from_secs(60), None)
            .await;
        assert!(matches!(
            front.lookup::<u32>("k").await,
            FrontRead::Encoded(_)
        ));
        front.invalidate(Scope::Key("k")).await;
        assert!(matches!(front.lookup::<u32>("k").await, FrontRead::Miss));
    }

    #[tokio::test]
    async fn the_max_age_caps_every_entry() {
        let front = Front::new(
            Some((MemoryTier::new(100), TierOptions::new())),
            Some(Duration::from_millis(20)),
        );
        let stamp = front.stamp("k");
        assert!(
            front
                .insert(stamp, "k", Some(Arc::new(1_u32)), placement())
                .await
        );
        assert_eq!(value(&front, "k").await, Some(1));
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(value(&front, "k").await, None);
    }

    #[tokio::test]
    async fn a_stale_copy_behind_the_front_carries_the_stamp_taken_before_it_was_read() {
        let front = front();
        let now = Instant::now();
        let stale = Placement {
            life: Life::serving_until(now, now + Duration::from_secs(60)),
            weight: None,
            tags: None,
        };
        assert!(
            front
                .insert(front.stamp("k"), "k", Some(Arc::new(7_u32)), stale)
                .await
        );
        assert!(matches!(
            front.lookup::<u32>("k").await,
            FrontRead::PastDeadline
        ));
        let Behind::Stale(copy, stamp) = front.behind::<u32>("k").await else {
            panic!("the stale copy is kept behind the front");
        };
        assert_eq!(*copy.value, 7);
        front.invalidate(Scope::Key("k")).await;
        let until = Instant::now() + Duration::from_secs(1);
        let refront = Placement {
            life: Life::serving_until(until, copy.keep_until),
            weight: None,
            tags: None,
        };
        assert!(!front.insert(stamp, "k", Some(copy.value), refront).await);
        assert_eq!(value(&front, "k").await, None);
    }
}
