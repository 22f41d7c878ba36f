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
mod level;
mod tags;

use std::time::Instant;

pub use breaker::CircuitBreaker;
use examine::{Accepted, Keys};
pub(crate) use examine::{Below, Found, StillCurrent};
pub(crate) use level::Level;
pub(crate) use tags::MARKER_PREFIX;
pub use tags::{DEFAULT_TAG_CHECK_INTERVAL, DEFAULT_TAG_RETENTION};
use tags::{TagClock, marker_key};
use tiercache_core::{
    Bytes, DecodeError, Decoded, Entry, LoadCounters, Namespace, Result, StoredMeta, TierStats,
};

use crate::{common::Scope, policy::WriteSpec};

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
}

impl Written {
    /// The first failure of the write, if any.
    pub(crate) fn into_result(self) -> Result<()> {
        self.result
    }
}

fn written(first_error: Option<tiercache_core::Error>) -> Written {
    Written {
        result: first_error.map_or(Ok(()), Err),
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
            tags: TagClock::new(check_interval, retention),
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
    pub(crate) async fn read<T, D>(
        &self,
        key: &str,
        decode: &D,
        still_current: StillCurrent<'_>,
    ) -> Below<T>
    where
        D: Fn(&Bytes) -> Result<Decoded<T>, DecodeError>,
    {
        let mut below = Below::default();
        if self.levels.is_empty() {
            return below;
        }
        let stored = self.namespace.apply(key);
        let keys = Keys {
            key,
            stored: &stored,
        };
        for (index, level) in self.levels.iter().enumerate() {
            let entry = match level.tier.get(&stored).await {
                Ok(Some(entry)) => entry,
                Ok(None) => {
                    level.counters.miss();
                    continue;
                }
                // Counted and logged by the level's layers; a broken level reads as a miss.
                Err(_) => continue,
            };
            match self.accept(index, keys, entry, decode, still_current).await {
                Accepted::Fresh(found) => {
                    below.found = Some(found);
                    return below;
                }
                Accepted::Stale(stale) => {
                    below.stale.get_or_insert(stale);
                }
                Accepted::Unusable => {}
            }
        }
        below
    }

    /// Reads the keys of `keys` at `wanted` (indices) top-down, with one batch read per level
    /// for the keys still missing there (on Redis, one `MGET` per hash slot). Each entry goes
    /// through the same routine as a single read. One answer per key of `keys`, in order (empty
    /// for keys not wanted); `still_current(i)` says whether the read of `keys[i]` still is.
    pub(crate) async fn read_many<T, D>(
        &self,
        keys: &[&str],
        wanted: Vec<usize>,
        decode: &D,
        still_current: &(dyn Fn(usize) -> bool + Sync),
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
            let entries = match level.tier.get_many(&asked).await {
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
                let current = || still_current(i);
                match self.accept(index, keys, entry, decode, &current).await {
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

    /// Writes `bytes` under `key` to every level, top-down, as `spec` says (`None`: there is
    /// nothing to write, because no level needed the value encoded). With
    /// `still_current` (a fill after a load), nothing more is written once an invalidation of
    /// the key has come, and a write made while one came is removed again. Every level is tried;
    /// the first failure is returned.
    pub(crate) async fn write(
        &self,
        key: &str,
        bytes: Option<&Bytes>,
        spec: &WriteSpec,
        still_current: Option<StillCurrent<'_>>,
    ) -> Written {
        let Some(bytes) = bytes else {
            return written(None);
        };
        let now = Instant::now();
        let stored = self.namespace.apply(key);
        let current = || still_current.is_none_or(|current| current());
        let mut first_error = None;
        for level in &self.levels {
            if !current() {
                break;
            }
            let entry = spec.entry(bytes.clone(), level.scale(), now);
            match level.tier.set(&stored, entry).await {
                Ok(()) => level.counters.write(),
                Err(err) => {
                    first_error.get_or_insert(err);
                }
            }
            if !current() {
                // NOTE: a failure is counted and logged by the level's layers.
                let _removed = level.tier.remove(&stored).await;
                break;
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

    /// Removes what `scope` covers from the levels `reach` names: a key, a prefix, this cache's
    /// namespace (the whole tier without one), or, for a tag, writes the tag's marker with its
    /// invalidation time. Every level is tried; the first failure is returned.
    pub(crate) async fn invalidate(&self, scope: Scope<'_>, reach: Reach) -> Written {
        if let Scope::Tag(tag, at) = scope {
            self.tags.record(tag, at);
        }
        let stored = match scope {
            Scope::Key(key) => self.namespace.apply(key),
            Scope::Prefix(prefix) => self.namespace.apply(prefix),
            Scope::Tag(tag, _) => self.namespace.apply(&marker_key(tag)),
            Scope::All => self.namespace.prefix().to_owned(),
        };
        let mut first_error = None;
        for level in &self.levels {
            if reach == Reach::InProcess && level.tier.is_shared() {
                continue;
            }
            let done = match scope {
                Scope::Key(_) => level.tier.remove(&stored).await,
                Scope::Prefix(_) => level.tier.remove_prefix(&stored).await.map(drop),
                Scope::Tag(_, at) => {
                    let marker = Entry::new(Bytes::from(at.to_string()), self.tags.retention);
                    level.tier.set(&stored, marker).await
                }
                Scope::All if stored.is_empty() => level.tier.clear().await,
                Scope::All => level.tier.remove_prefix(&stored).await.map(drop),
            };
            if let Err(err) = done {
                first_error.get_or_insert(err);
            }
        }
        written(first_error)
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

    /// Whether this instance knows (recently enough to trust) that a tag of a value with `meta`
    /// was invalidated at or after the value was written. Reads no tier.
    pub(crate) fn known_invalidated(&self, meta: &StoredMeta) -> bool {
        self.tags.known_invalidated(meta)
    }
}
