//! The stack: the tiers below L1 (L2, L3, ...) in order, with the namespace their keys are
//! stored under and the tag clock their tagged values are checked against.
//!
//! Reads go top-down and stop at the first fresh entry, which is promoted into the levels above
//! it ([`examine.rs`](examine) holds the one routine single and batch reads share). Writes and
//! invalidations go to every level, going on after a failure and returning the first. Per-tier
//! concerns (the circuit breaker, error counts) are layers around each tier (`level.rs`). The
//! stack knows nothing of L1: promotions into L1 are the caller's, with what [`Found`] says.

mod breaker;
mod counting;
mod examine;
mod health;
mod leases;
mod level;
mod tags;

use std::time::Instant;

pub use breaker::CircuitBreaker;
use examine::{Accepted, AtOnce, FillStore, Keys};
pub(crate) use examine::{Below, Found};
pub(crate) use leases::Leases;
pub(crate) use level::Level;
pub(crate) use tags::MARKER_PREFIX;
pub use tags::{DEFAULT_TAG_CHECK_INTERVAL, DEFAULT_TAG_RETENTION, TAG_CLOCK_CAPACITY};
use tags::{TagClock, marker_key};
use tiercache_core::{
    Bytes, DecodeError, Decoded, Entry, Filled, LeaseRead, LoadCounters, Namespace, Result,
    StoredMeta, Tier, TierStats,
};

use crate::{
    common::{FillGate, FillPass, Scope},
    policy::WriteSpec,
};

/// Which levels a read leases, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Leasing {
    /// No leases (they are off): plain reads, no promotion into shared levels that lease.
    Off,
    /// A plain read: the shared levels with levels below them, which a hit below is copied into.
    Promote(std::time::Duration),
    /// A read a load follows: every shared level, so the fill stores under a lease.
    Load(std::time::Duration),
}

impl Leasing {
    /// The leases of a read with this leasing, none taken yet: in use unless leases are off.
    fn empty_leases(self) -> Leases {
        match self {
            Leasing::Off => Leases::default(),
            Leasing::Promote(_) | Leasing::Load(_) => Leases::in_use_empty(),
        }
    }
}

/// Which levels an invalidation reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reach {
    /// Every level: this instance's own write or invalidation.
    Every,
    /// Only the levels inside this process, which other instances cannot reach: an invalidation
    /// another instance made.
    InProcess,
}

/// A write or invalidation of the stack that has finished, with its outcome. Only the stack
/// makes one, and [`Front::settle`](crate::front::Front::settle) takes it: that is how the
/// order "tiers below L1 first, then L1 again, then the bus" is kept by the types.
#[must_use = "a write's outcome must be settled in front (and published) or returned"]
#[derive(Debug)]
pub(crate) struct Written {
    result: Result<()>,
    /// A store of a fill was made while an invalidation came, and undone.
    raced: bool,
    /// A fill's lease on a shared level was revoked: a newer write of the key is there.
    revoked: bool,
}

impl Written {
    /// Both writes' outcome: the first failure of either, this one's first.
    pub(crate) fn and(self, later: Written) -> Written {
        Written {
            result: self.result.and(later.result),
            raced: self.raced || later.raced,
            revoked: self.revoked || later.revoked,
        }
    }

    /// Whether a store of the fill raced an invalidation and was undone: a read on this
    /// instance may have copied it meanwhile, so the key must go from L1 too.
    pub(crate) fn raced(&self) -> bool {
        self.raced || self.revoked
    }

    /// The first failure of the write, if any.
    pub(crate) fn into_result(self) -> Result<()> {
        self.result
    }
}

/// The outcome of a write that wrote nothing.
pub(crate) fn nothing_written() -> Written {
    written(None)
}

fn written(first_error: Option<tiercache_core::Error>) -> Written {
    Written {
        result: first_error.map_or(Ok(()), Err),
        raced: false,
        revoked: false,
    }
}

/// The tiers below L1.
#[derive(Debug)]
pub(crate) struct Stack {
    levels: Vec<Level>,
    namespace: Namespace,
    tags: TagClock,
    counters: std::sync::Arc<LoadCounters>,
}

impl Stack {
    /// The levels top-down, under `namespace`, with tag times trusted for
    /// `tag_check_interval` and tag markers kept for `tag_retention`. Tag rejections are
    /// counted in `counters`.
    pub(crate) fn new(
        levels: Vec<Level>,
        namespace: Namespace,
        tags: (std::time::Duration, std::time::Duration),
        counters: std::sync::Arc<LoadCounters>,
    ) -> Self {
        let (check_interval, retention) = tags;
        Self {
            levels,
            namespace,
            tags: TagClock::new(check_interval, retention, std::sync::Arc::clone(&counters)),
            counters,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }

    pub(crate) fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    pub(crate) fn levels(&self) -> &[Level] {
        &self.levels
    }

    pub(crate) fn stats(&self) -> Vec<TierStats> {
        self.levels.iter().map(Level::stats).collect()
    }

    /// Reads `key` top-down: the first fresh entry that decodes is promoted into the levels
    /// above it and returned; the first stale one met on the way is the fallback. A failing
    /// level or undecodable bytes count against that level and read as a miss.
    ///
    /// With [`Leasing::Load`] (a read that a load will follow), each shared level is read by
    /// taking a lease on the key ([`Tier::lease`]): the fill after the load, and promotions into
    /// shared levels, store only under those leases, so a write of the key by anyone after this
    /// read wins over the older value. With [`Leasing::Promote`] (a plain read), only the shared
    /// levels a hit below could be promoted into are leased. A shared level that supports leases
    /// gets no copy without one.
    pub(crate) async fn read<T, D>(
        &self,
        key: &str,
        decode: &D,
        gate: FillGate<'_>,
        leasing: Leasing,
    ) -> Below<T>
    where
        D: Fn(&Bytes) -> Result<Decoded<T>, DecodeError>,
    {
        if self.levels.is_empty() {
            return Below::default();
        }
        // The parts of the answer kept apart until it is made, so that this future does not
        // carry room for a found entry across the levels' calls (it is part of the boxed
        // future of every L1 miss).
        let mut stale = None;
        let mut stale_after_leases = false;
        let mut leases = leasing.empty_leases();
        let stored = self.namespace.apply(key);
        let keys = Keys {
            key,
            stored: &stored,
        };
        let last = self.levels.len() - 1;
        for (index, level) in self.levels.iter().enumerate() {
            // A read a load follows leases every shared level; a plain read only those it may
            // promote into (a shared level with levels below it).
            let leased = match leasing {
                Leasing::Load(ttl) => Some(ttl).filter(|_| level.tier.is_shared()),
                Leasing::Promote(ttl) => Some(ttl).filter(|_| index < last && level.leases_fills()),
                Leasing::Off => None,
            };
            let read = match leased {
                Some(ttl) => level.lease(&stored, ttl).await,
                None => level.get(&stored).await.map(|found| match found {
                    Some(entry) => LeaseRead::Found(entry, tiercache_core::Lease::unguarded()),
                    // A plain miss: no lease was asked for.
                    None => LeaseRead::Granted(tiercache_core::Lease::unguarded()),
                }),
            };
            let entry = match read {
                Ok(LeaseRead::Found(entry, lease)) => {
                    if leased.is_some() {
                        leases.put(index, level.raw(), &stored, lease, false);
                    }
                    entry
                }
                Ok(LeaseRead::Granted(lease)) => {
                    if leased.is_some() {
                        leases.put(index, level.raw(), &stored, lease, true);
                    }
                    level.counters.miss();
                    continue;
                }
                Ok(LeaseRead::Held(left)) => {
                    leases.held_elsewhere(left);
                    level.counters.miss();
                    continue;
                }
                // Counted and logged by the level's layers; a broken level reads as a miss.
                Err(_) => continue,
            };
            // Bound first, so that no temporary of the match is kept across the await.
            let at_once = self.accept_at_once(index, key, entry, decode);
            let accepted = match at_once {
                AtOnce::Done(accepted) => accepted,
                AtOnce::Later(entry, meta) => {
                    // Boxed where it happens: see `accept_at_once`.
                    let accept = self.accept(index, keys, entry, meta, decode, gate, &mut leases);
                    Box::pin(accept).await
                }
            };
            match accepted {
                Accepted::Fresh(found) => {
                    return Below {
                        found: Some(found),
                        stale,
                        leases,
                        stale_after_leases,
                    };
                }
                Accepted::Stale(copy) => {
                    if stale.is_none() {
                        stale = Some(copy);
                        let later = self.levels.get(index + 1..).unwrap_or_default();
                        stale_after_leases =
                            !later
                                .iter()
                                .enumerate()
                                .any(|(offset, level)| match leasing {
                                    Leasing::Load(_) => level.tier.is_shared(),
                                    Leasing::Promote(_) => {
                                        index + 1 + offset < last && level.leases_fills()
                                    }
                                    Leasing::Off => false,
                                });
                    }
                }
                Accepted::Unusable => {}
            }
        }
        Below {
            found: None,
            stale,
            leases,
            stale_after_leases,
        }
    }

    /// Reads the keys of `keys` at `wanted` (indices) top-down, with one batch read per level
    /// for the keys still missing there (on Redis, one `MGET` per hash slot). Each entry goes
    /// through the same routine as a single read. One answer per key of `keys`, in order (empty
    /// for keys not wanted); `gate(i)` lets the copies of `keys[i]` through (see
    /// [`read`](Self::read)).
    ///
    /// A batch read takes no leases: with leases on (`leasing` not [`Leasing::Off`]), it copies
    /// nothing into a shared level that supports them.
    pub(crate) async fn read_many<'a, T, D>(
        &'a self,
        keys: &[&str],
        wanted: Vec<usize>,
        decode: &D,
        gate: &'a (dyn Fn(usize) -> Option<FillPass<'a>> + Sync),
        leasing: Leasing,
    ) -> Vec<Below<T>>
    where
        D: Fn(&Bytes) -> Result<Decoded<T>, DecodeError>,
    {
        let mut answers: Vec<Below<T>> = keys.iter().map(|_| Below::default()).collect();
        let stored: Vec<String> = keys.iter().map(|key| self.namespace.apply(key)).collect();
        let mut missing = wanted;
        for (index, level) in self.levels.iter().enumerate() {
            if missing.is_empty() {
                break;
            }
            let asked: Vec<&str> = missing.iter().map(|&i| stored[i].as_str()).collect();
            let entries = match level.get_many(&asked).await {
                Ok(entries) if entries.len() == asked.len() => entries,
                Ok(entries) => {
                    level.counters.error();
                    tracing::warn!(
                        tier = level.name(),
                        asked = asked.len(),
                        answered = entries.len(),
                        "get_many answered a different number of keys; read as misses"
                    );
                    continue;
                }
                // Counted and logged by the level's layers; a broken level reads as misses.
                Err(_) => continue,
            };
            let mut still_missing = Vec::new();
            for (i, entry) in missing.into_iter().zip(entries) {
                let Some(entry) = entry else {
                    level.counters.miss();
                    still_missing.push(i);
                    continue;
                };
                let keys = Keys {
                    key: keys[i],
                    stored: &stored[i],
                };
                let gate_of_key = || gate(i);
                let mut no_leases = leasing.empty_leases();
                let meta = StoredMeta::read(&entry.value);
                let accepted = self
                    .accept(
                        index,
                        keys,
                        entry,
                        meta,
                        decode,
                        &gate_of_key,
                        &mut no_leases,
                    )
                    .await;
                match accepted {
                    Accepted::Fresh(found) => answers[i].found = Some(found),
                    Accepted::Stale(stale) => {
                        answers[i].stale.get_or_insert(stale);
                        still_missing.push(i);
                    }
                    Accepted::Unusable => still_missing.push(i),
                }
            }
            missing = still_missing;
        }
        answers
    }

    /// Writes `bytes` under `key` to the levels `reach` names, top-down, as `spec` says (`None`:
    /// there is nothing to write, because no level needed the value encoded). With
    /// `still_current` (a fill after a load, or a write redone), nothing more is written once an
    /// invalidation of the key came, and a store made while one came is removed again (and the
    /// [`Written`] says so). Every level is tried; the first failure is returned.
    ///
    /// With `leases` (a fill after a leased read), each shared level that supports leases is
    /// written only under this load's lease on it ([`Tier::fill`]), and skipped when the load
    /// has none there (the read failed, or another filler holds it); a revoked lease stops the
    /// fill (the [`Written`] says so): the level holds a newer write.
    pub(crate) async fn write(
        &self,
        key: &str,
        bytes: Option<&Bytes>,
        spec: &WriteSpec,
        gate: Option<FillGate<'_>>,
        reach: Reach,
        mut leases: Option<&mut Leases>,
    ) -> Written {
        let Some(bytes) = bytes else {
            return written(None);
        };
        let now = Instant::now();
        let stored = self.namespace.apply(key);
        let mut first_error = None;
        for (index, level) in self.levels.iter().enumerate() {
            if !level.reached_by(reach) {
                continue;
            }
            let entry = spec.entry(bytes.clone(), level.scale(), now);
            if let (Some(_), Some(leases)) = (gate, leases.as_deref_mut())
                && leases.in_use()
                && level.leases_fills()
            {
                // NOTE: the lease is this level's guard, not the clock: every write or
                // invalidation of the key, here or elsewhere, revokes it in the tier itself, while
                // the clock also moves for a gap or another key's prefix, which must not cost a
                // lease that others then wait out.
                let Some(lease) = leases.lease(index) else {
                    continue;
                };
                let filled = level.tier.fill(&stored, entry, &lease).await;
                if filled.is_ok() {
                    leases.used(index);
                }
                match filled {
                    Ok(Filled::Stored) => level.counters.write(),
                    Ok(Filled::Revoked) => {
                        self.counters.fill_revoked();
                        tracing::debug!(
                            tier = level.name(),
                            key,
                            "fill refused: its lease was revoked by a newer write"
                        );
                        return Written {
                            result: first_error.map_or(Ok(()), Err),
                            raced: false,
                            revoked: true,
                        };
                    }
                    Err(err) => {
                        first_error.get_or_insert(err);
                    }
                }
                continue;
            }
            let result = match gate {
                Some(gate) => match self.store_for_fill(level, &stored, entry, gate).await {
                    FillStore::Stored(result) => result,
                    FillStore::Refused => break,
                    FillStore::Undone => {
                        return Written {
                            result: first_error.map_or(Ok(()), Err),
                            raced: true,
                            revoked: false,
                        };
                    }
                },
                None => level.tier.set(&stored, entry).await,
            };
            match result {
                Ok(()) => level.counters.write(),
                Err(err) => {
                    first_error.get_or_insert(err);
                }
            }
        }
        written(first_error)
    }

    /// Writes every `(key, bytes)` to every level with one batch write per level, as `spec`
    /// says. Every level is tried; the first failure is returned.
    pub(crate) async fn write_many(&self, entries: &[(&str, Bytes)], spec: &WriteSpec) -> Written {
        if entries.is_empty() {
            return written(None);
        }
        let now = Instant::now();
        let mut first_error = None;
        for level in &self.levels {
            let batch: Vec<(String, Entry)> = entries
                .iter()
                .map(|(key, bytes)| {
                    let entry = spec.entry(bytes.clone(), level.scale(), now);
                    (self.namespace.apply(key), entry)
                })
                .collect();
            match level.tier.set_many(batch).await {
                Ok(()) => level.counters.write(),
                Err(err) => {
                    first_error.get_or_insert(err);
                }
            }
        }
        written(first_error)
    }

    /// Removes what `scope` covers from the levels `reach` names, bottom-up: a key, a prefix,
    /// this cache's namespace (never more: every namespace, the unnamed one too, has a prefix
    /// of its own, so `clear` never empties a tier it shares), or, for a tag, writes the tag's
    /// marker with its invalidation time. Every level is tried; the failure of the lowest
    /// failing level is returned.
    pub(crate) async fn invalidate(&self, scope: Scope<'_>, reach: Reach) -> Written {
        if let Scope::Tag(tag, at) = scope {
            self.tags.record(tag, at);
        }
        let stored = match scope {
            Scope::Key(key) => self.namespace.apply(key),
            Scope::Prefix(prefix) => self.namespace.apply(prefix),
            Scope::Tag(tag, _) => marker_key(&self.namespace, tag),
            Scope::All => self.namespace.prefix().to_owned(),
        };
        let mut first_error = None;
        // NOTE: bottom-up. A read that leased an upper level before its removal could otherwise
        // find the old value still below and promote it into that level after the removal.
        for level in self.reached(reach).rev() {
            let done = match scope {
                Scope::Key(_) => level.tier.remove(&stored).await,
                Scope::Prefix(_) => level.tier.remove_prefix(&stored).await.map(drop),
                Scope::Tag(_, at) => {
                    let marker = Entry::new(Bytes::from(at.to_string()), self.tags.retention);
                    level.tier.set(&stored, marker).await
                }
                Scope::All => level.tier.remove_prefix(&stored).await.map(drop),
            };
            if let Err(err) = done {
                first_error.get_or_insert(err);
            }
        }
        written(first_error)
    }

    /// The levels `reach` names, top-down.
    fn reached(&self, reach: Reach) -> impl DoubleEndedIterator<Item = &Level> {
        self.levels
            .iter()
            .filter(move |level| level.reached_by(reach))
    }

    /// Leases on `key` in every shared level that supports them, for a load that read the stack
    /// already (a batch, an eager refresh): one round trip per such level. A level where another
    /// filler holds the lease gets none (the fill skips it); a failing level neither.
    pub(crate) async fn lease_key(&self, key: &str, ttl: std::time::Duration) -> Leases {
        let mut leases = Leases::in_use_empty();
        let stored = self.namespace.apply(key);
        for (index, level) in self.levels.iter().enumerate() {
            if !level.leases_fills() {
                continue;
            }
            match level.lease(&stored, ttl).await {
                Ok(LeaseRead::Found(_, lease)) => {
                    leases.put(index, level.raw(), &stored, lease, false);
                }
                Ok(LeaseRead::Granted(lease)) => {
                    leases.put(index, level.raw(), &stored, lease, true);
                }
                Ok(LeaseRead::Held(left)) => leases.held_elsewhere(left),
                // Counted and logged by the level's layers.
                Err(_) => {}
            }
        }
        leases
    }

    /// Whether a read that a load follows should take leases: when some shared level is there.
    pub(crate) fn has_shared_levels(&self) -> bool {
        self.levels.iter().any(|level| level.tier.is_shared())
    }

    /// Whether the stack has levels inside this process (see [`Reach::InProcess`]).
    pub(crate) fn has_in_process_levels(&self) -> bool {
        self.levels.iter().any(|level| !level.tier.is_shared())
    }

    /// Notes a tag invalidation another instance made; `None` when its time is unknown (a
    /// tracking push about the marker): the marker is read again on the next check.
    pub(crate) fn note_tag(&self, tag: &str, at_ms: Option<u64>) {
        match at_ms {
            Some(at) => self.tags.record(tag, at),
            None => self.tags.forget(tag),
        }
    }

    /// Forgets every tag time (after a bus gap: a tag message may have been lost).
    pub(crate) fn forget_tags(&self) {
        self.tags.forget_all();
    }

    /// Forgets the tag times read from tiers' markers since, keeping those from the bus.
    pub(crate) fn forget_tag_reads(&self) {
        self.tags.forget_reads();
    }

    /// Whether this instance knows (recently enough to trust) that a tag of a value with `meta`
    /// was invalidated at or after the value was written. Reads no tier.
    pub(crate) fn known_invalidated(&self, meta: &StoredMeta) -> bool {
        self.tags.known_invalidated(meta)
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
        time::{Duration, Instant},
    };

    use tiercache_core::EntryOptions;
    use tiercache_testkit::MapTier;

    use super::*;
    use crate::{TierOptions, policy::Defaults};

    /// A stack over `tiers`, top-down, in namespace "ns".
    fn stack(tiers: &[Arc<dyn Tier>]) -> Stack {
        let levels = tiers
            .iter()
            .map(|tier| Level::new(Arc::clone(tier), TierOptions::new()))
            .collect();
        let namespace = Namespace::new("ns").unwrap();
        let tags = (Duration::from_secs(1), Duration::from_secs(60));
        Stack::new(levels, namespace, tags, Arc::default())
    }

    fn raw(bytes: &Bytes) -> Result<Decoded<Bytes>, DecodeError> {
        Ok(Decoded::Value(bytes.clone()))
    }

    /// Lets the first `passes` asks through, then none.
    struct Gate {
        storing: std::sync::atomic::AtomicU32,
        asked: AtomicUsize,
        passes: usize,
    }

    impl Gate {
        fn new(passes: usize) -> Self {
            Self {
                storing: std::sync::atomic::AtomicU32::new(0),
                asked: AtomicUsize::new(0),
                passes,
            }
        }

        fn enter(&self) -> Option<FillPass<'_>> {
            self.storing.fetch_add(1, Ordering::SeqCst);
            let pass = FillPass::counted(&self.storing);
            (self.asked.fetch_add(1, Ordering::SeqCst) < self.passes).then_some(pass)
        }
    }

    #[tokio::test]
    async fn a_hit_below_is_promoted_up_without_outliving_it() {
        let (upper, lower) = (MapTier::new("upper"), MapTier::new("lower"));
        let stack = stack(&[Arc::new(upper.clone()), Arc::new(lower.clone())]);
        let expires_at = Instant::now() + Duration::from_secs(30);
        lower.put_raw("ns:k", Bytes::from_static(b"v"), expires_at);

        let gate = Gate::new(usize::MAX);
        // A read a load follows: it leases the upper shared level, so it may promote into it.
        let leasing = Leasing::Promote(Duration::from_secs(1));
        let below = stack.read("k", &raw, &|| gate.enter(), leasing).await;
        let found = below.found.expect("a fresh entry below");
        assert_eq!(found.value.as_deref(), Some(&Bytes::from_static(b"v")));
        let copy = upper.raw("ns:k").expect("promoted into the level above");
        assert!(
            copy.expires_at <= expires_at,
            "a copy never outlives its source"
        );
    }

    #[cfg(feature = "moka")]
    #[tokio::test]
    async fn a_copy_made_while_an_invalidation_came_is_removed_again() {
        let (upper, lower) = (tiercache_moka::MokaTier::new(100), MapTier::new("lower"));
        let stack = stack(&[Arc::new(upper.clone()), Arc::new(lower.clone())]);
        lower.put_raw(
            "ns:k",
            Bytes::from_static(b"old"),
            Instant::now() + Duration::from_secs(30),
        );
        // Current when the copy starts, no longer once it is written.
        let gate = Gate::new(1);
        let below = stack.read("k", &raw, &|| gate.enter(), Leasing::Off).await;
        let found = below.found.expect("the reader still gets its answer");
        assert!(found.raced, "the read says its copy raced an invalidation");
        assert!(
            upper.get("ns:k").await.unwrap().is_none(),
            "the racing copy was undone"
        );
    }

    /// A tier whose `remove` waits for the test's go before it removes anything.
    #[derive(Debug)]
    struct HeldRemove {
        inner: MapTier,
        started: tokio::sync::Notify,
        go: tokio::sync::Semaphore,
    }

    #[tiercache_core::async_trait]
    impl Tier for HeldRemove {
        fn name(&self) -> &str {
            "held"
        }
        fn supports_leases(&self) -> bool {
            true
        }
        async fn get(&self, key: &str) -> Result<Option<Entry>> {
            self.inner.get(key).await
        }
        async fn lease(&self, key: &str, ttl: Duration) -> Result<tiercache_core::LeaseRead> {
            self.inner.lease(key, ttl).await
        }
        async fn fill(
            &self,
            key: &str,
            entry: Entry,
            lease: &tiercache_core::Lease,
        ) -> Result<Filled> {
            self.inner.fill(key, entry, lease).await
        }
        async fn set(&self, key: &str, entry: Entry) -> Result<()> {
            self.inner.set(key, entry).await
        }
        async fn remove(&self, key: &str) -> Result<()> {
            self.started.notify_one();
            let _go = self.go.acquire().await;
            self.inner.remove(key).await
        }
        async fn remove_prefix(&self, prefix: &str) -> Result<u64> {
            self.inner.remove_prefix(prefix).await
        }
        async fn clear(&self) -> Result<()> {
            self.inner.clear().await
        }
    }

    /// Two shared levels: a reader that leases the upper one while an invalidation is under
    /// way, and finds the old value still in the lower one, must not leave it in the upper one
    /// once the invalidation returned. (Removing top-down let exactly that happen.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_invalidation_of_shared_levels_leaves_no_promoted_copy_behind() {
        let upper = MapTier::new("upper");
        let lower = Arc::new(HeldRemove {
            inner: MapTier::new("lower"),
            started: tokio::sync::Notify::new(),
            go: tokio::sync::Semaphore::new(0),
        });
        let tiers: [Arc<dyn Tier>; 2] = [Arc::new(upper.clone()), lower.clone()];
        let stack = Arc::new(stack(&tiers));
        let expires_at = Instant::now() + Duration::from_secs(30);
        lower
            .inner
            .put_raw("ns:k", Bytes::from_static(b"old"), expires_at);

        let invalidating = {
            let stack = Arc::clone(&stack);
            tokio::spawn(async move {
                stack
                    .invalidate(Scope::Key("k"), Reach::Every)
                    .await
                    .into_result()
            })
        };
        lower.started.notified().await;
        // The lower level's removal is under way (held); a reader that a load follows comes.
        let gate = Gate::new(usize::MAX);
        let leasing = Leasing::Load(Duration::from_secs(5));
        let below = stack.read("k", &raw, &|| gate.enter(), leasing).await;
        drop(below);
        lower.go.add_permits(1);
        invalidating.await.unwrap().unwrap();
        assert!(
            upper.raw("ns:k").is_none(),
            "the old value was copied up after the invalidation removed it there"
        );
        assert!(lower.inner.raw("ns:k").is_none());
    }

    /// A tier whose first batch read (a tag marker read) answers what it read only after the
    /// test's go.
    #[derive(Debug)]
    struct HeldBatch {
        inner: MapTier,
        held: std::sync::atomic::AtomicBool,
        started: tokio::sync::Notify,
        go: tokio::sync::Semaphore,
    }

    #[tiercache_core::async_trait]
    impl Tier for HeldBatch {
        fn name(&self) -> &str {
            "held-batch"
        }
        async fn get(&self, key: &str) -> Result<Option<Entry>> {
            self.inner.get(key).await
        }
        async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
            let read = self.inner.get_many(keys).await;
            if !self.held.swap(true, Ordering::SeqCst) {
                self.started.notify_one();
                let _go = self.go.acquire().await;
            }
            read
        }
        async fn set(&self, key: &str, entry: Entry) -> Result<()> {
            self.inner.set(key, entry).await
        }
        async fn remove(&self, key: &str) -> Result<()> {
            self.inner.remove(key).await
        }
        async fn remove_prefix(&self, prefix: &str) -> Result<u64> {
            self.inner.remove_prefix(prefix).await
        }
        async fn clear(&self) -> Result<()> {
            self.inner.clear().await
        }
    }

    /// A tag's marker read from a tier while the tag was invalidated (the marker rewritten and
    /// the tag's time forgotten, as a tracking push does) must not be recorded as the tag's
    /// time: it predates the invalidation, and trusting it would let the next read of a value
    /// written before the invalidation through.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_marker_read_across_a_forget_is_not_trusted() {
        let tier = Arc::new(HeldBatch {
            inner: MapTier::new("only"),
            held: std::sync::atomic::AtomicBool::new(false),
            started: tokio::sync::Notify::new(),
            go: tokio::sync::Semaphore::new(0),
        });
        let tiers: [Arc<dyn Tier>; 1] = [tier.clone()];
        let stack = Arc::new(stack(&tiers));
        let mut meta = StoredMeta::default();
        meta.ttl = Duration::from_secs(30);
        meta.written_at_ms = 1_000;
        meta.tags = vec!["t".to_owned()];
        let envelope = tiercache_core::Envelope::new(tiercache_core::JsonCodec, 0);
        let bytes = envelope.encode_with("k", &5_u32, &meta).unwrap();
        let expires_at = Instant::now() + Duration::from_secs(30);
        tier.inner.put_raw("ns:k", bytes, expires_at);

        let first = {
            let stack = Arc::clone(&stack);
            tokio::spawn(async move {
                let decode = |bytes: &Bytes| envelope.decode::<u32>(bytes);
                let gate = Gate::new(usize::MAX);
                let below = stack
                    .read("k", &decode, &|| gate.enter(), Leasing::Off)
                    .await;
                below.found.is_some()
            })
        };
        tier.started.notified().await;
        // The tag is invalidated while the first read has its (old) marker answer in hand.
        tier.inner
            .put_raw("ns:\u{1}tag:t", Bytes::from_static(b"2000"), expires_at);
        stack.note_tag("t", None);
        tier.go.add_permits(1);
        assert!(first.await.unwrap(), "the overlapping read may answer");

        let decode = |bytes: &Bytes| envelope.decode::<u32>(bytes);
        let gate = Gate::new(usize::MAX);
        let below = stack
            .read("k", &decode, &|| gate.enter(), Leasing::Off)
            .await;
        assert!(
            below.found.is_none(),
            "a read after the invalidation reads the marker again and rejects the value"
        );
    }

    #[tokio::test]
    async fn a_guarded_fill_stops_once_an_invalidation_came() {
        let (upper, lower) = (MapTier::new("upper"), MapTier::new("lower"));
        let stack = stack(&[Arc::new(upper.clone()), Arc::new(lower.clone())]);
        let spec = Defaults::default().write_spec(&EntryOptions::default(), Duration::ZERO);
        let gate = Gate::new(1);
        let bytes = Bytes::from_static(b"loaded");
        let written = stack
            .write(
                "k",
                Some(&bytes),
                &spec,
                Some(&|| gate.enter()),
                Reach::Every,
                None,
            )
            .await;
        written.into_result().unwrap();
        assert!(
            upper.raw("ns:k").is_none(),
            "the level written meanwhile was undone"
        );
        assert!(
            lower.raw("ns:k").is_none(),
            "no level is written after that"
        );
    }

    #[cfg(feature = "moka")]
    #[tokio::test]
    async fn an_invalidation_from_elsewhere_reaches_only_in_process_levels() {
        let local = tiercache_moka::MokaTier::new(100);
        let shared = MapTier::new("shared");
        let stack = stack(&[Arc::new(local.clone()), Arc::new(shared.clone())]);
        let spec = Defaults::default().write_spec(&EntryOptions::default(), Duration::ZERO);
        let bytes = Bytes::from_static(b"v");
        stack
            .write("k", Some(&bytes), &spec, None, Reach::Every, None)
            .await
            .into_result()
            .unwrap();

        let done = stack.invalidate(Scope::Key("k"), Reach::InProcess).await;
        done.into_result().unwrap();
        assert!(
            local.get("ns:k").await.unwrap().is_none(),
            "in-process level"
        );
        assert!(
            shared.raw("ns:k").is_some(),
            "the shared level is the sender's"
        );

        let done = stack.invalidate(Scope::Tag("t", 7), Reach::InProcess).await;
        done.into_result().unwrap();
        let marker = local.get("ns:\u{1}tag:t").await.unwrap().expect("marker");
        assert_eq!(marker.value, Bytes::from_static(b"7"));
        assert!(shared.raw("ns:\u{1}tag:t").is_none());
    }

    #[tokio::test]
    async fn a_tagged_value_written_before_its_tags_marker_reads_as_a_miss() {
        let tier = MapTier::new("only");
        let stack = stack(&[Arc::new(tier.clone())]);
        let mut meta = StoredMeta::default();
        meta.ttl = Duration::from_secs(30);
        meta.written_at_ms = 1_000;
        meta.tags = vec!["t".to_owned()];
        let envelope = tiercache_core::Envelope::new(tiercache_core::JsonCodec, 0);
        let bytes = envelope.encode_with("k", &5_u32, &meta).unwrap();
        tier.put_raw("ns:k", bytes, Instant::now() + Duration::from_secs(30));
        let decode = |bytes: &Bytes| envelope.decode::<u32>(bytes);

        let gate = Gate::new(usize::MAX);
        assert!(
            stack
                .read("k", &decode, &|| gate.enter(), Leasing::Off)
                .await
                .found
                .is_some()
        );
        stack
            .invalidate(Scope::Tag("t", 2_000), Reach::Every)
            .await
            .into_result()
            .unwrap();
        assert!(
            stack
                .read("k", &decode, &|| gate.enter(), Leasing::Off)
                .await
                .found
                .is_none()
        );
    }
}
