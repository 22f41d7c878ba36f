//! The one routine every read below L1 goes through, single or batch: an entry a level returned
//! is examined (its tags, its value, its freshness) and, when fresh, promoted into the levels
//! above it.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tiercache_core::{
    Bytes, DEFAULT_TTL, DecodeError, Decoded, EagerRefresh, Entry, Filled, StoredMeta, Tier,
    expiry_after, scale_ttl,
};

use super::{Leases, Level, Stack, tags::marker_key, tags::marker_time};
use crate::{
    common::{FillGate, Lookup, StaleCopy},
    observe,
    policy::{Placement, tags_of},
};

/// A key as the caller named it and as the levels store it (namespaced).
#[derive(Debug, Clone, Copy)]
pub(super) struct Keys<'a> {
    pub(super) key: &'a str,
    pub(super) stored: &'a str,
}

/// A fresh entry found below L1, with what copying it into L1 needs.
pub(crate) struct Found<T> {
    /// The value; `None` for a cached "not found".
    pub(crate) value: Option<Arc<T>>,
    meta: StoredMeta,
    expires_at: Instant,
    /// How long it stays fresh from `read_at`, in its level's time.
    fresh: Duration,
    read_at: Instant,
    source_scale: f64,
    weight: usize,
    /// A copy of it made into a level above raced an invalidation and was undone: a read on
    /// this instance may have copied it from there meanwhile, so the key must go from L1 too.
    pub(crate) raced: bool,
}

impl<T> Found<T> {
    /// Where a copy goes in an L1 with TTL scale `scale`: its remaining fresh life times (that
    /// scale / its level's scale), never more than it has left, plus its stale window; promotion
    /// never extends an entry's life.
    pub(crate) fn placement(&self, scale: f64, eager: EagerRefresh) -> Placement {
        let fresh = self.fresh.mul_f64((scale / self.source_scale).min(1.0));
        Placement::of_copy(
            &self.meta,
            self.read_at,
            fresh,
            self.expires_at,
            scale,
            self.weight,
            eager,
        )
    }

    /// The answer it gives (moves the value out: no reference count is touched).
    pub(crate) fn into_lookup(self) -> Lookup<T> {
        Lookup::found(self.value)
    }
}

/// What the levels below L1 hold for one key.
pub(crate) struct Below<T> {
    /// The first fresh entry (already promoted into the levels above it).
    pub(crate) found: Option<Found<T>>,
    /// The first stale entry met on the way down: a fail-safe fallback.
    pub(crate) stale: Option<StaleCopy<T>>,
    /// The leases this read took on shared levels (for a read a load follows), and whether
    /// another filler holds one.
    pub(crate) leases: Leases,
    /// Whether no lease of this read was taken after the stale copy was read (see
    /// `Fallback::offerable`).
    pub(crate) stale_after_leases: bool,
}

impl<T> Default for Below<T> {
    fn default() -> Self {
        Self {
            found: None,
            stale: None,
            stale_after_leases: false,
            leases: Leases::default(),
        }
    }
}

/// How a fill's store into one level went.
pub(super) enum FillStore {
    /// Not made: an invalidation of the key came before it.
    Refused,
    /// Made, with the level's answer.
    Stored(Result<(), tiercache_core::Error>),
    /// Made while an invalidation came, and removed again.
    Undone,
}

/// What [`Stack::accept_at_once`] made of an entry.
pub(super) enum AtOnce<T> {
    /// Examined: nothing had to be awaited.
    Done(Accepted<T>),
    /// Needs [`Stack::accept`] (tags to check, or levels above to copy into): the entry, with
    /// its header.
    Later(Entry, StoredMeta),
}

/// One entry a level returned, examined.
pub(super) enum Accepted<T> {
    Fresh(Found<T>),
    Stale(StaleCopy<T>),
    /// Does not decode, a tag of it was invalidated, or a stale "not found".
    Unusable,
}

impl Stack {
    /// [`accept`](Self::accept) without a future, for the common entry that needs nothing
    /// awaited: no tags to check and no level above its own to copy it into. Any other entry
    /// comes back ([`AtOnce::Later`]), with its header, for `accept`. (The stack's read is
    /// boxed on every L1 miss; kept free of `accept`'s future, it stays small enough for the
    /// allocator's per-thread cache.)
    pub(super) fn accept_at_once<T, D>(
        &self,
        index: usize,
        key: &str,
        entry: Entry,
        decode: &D,
    ) -> AtOnce<T>
    where
        D: Fn(&Bytes) -> Result<Decoded<T>, DecodeError>,
    {
        let meta = StoredMeta::read(&entry.value);
        if index > 0 || !meta.tags.is_empty() {
            return AtOnce::Later(entry, meta);
        }
        AtOnce::Done(self.judge(index, key, entry, meta, decode).0)
    }

    /// Examines an entry `key` read from level `index` (with its header, `meta`) and promotes
    /// it when it is fresh. Counts the level's hit or miss (a stale entry is a miss), decode
    /// errors and tag rejections.
    #[expect(
        clippy::too_many_arguments,
        reason = "one entry with its header, its key in both forms, and what a promotion needs"
    )]
    pub(super) async fn accept<T, D>(
        &self,
        index: usize,
        keys: Keys<'_>,
        entry: Entry,
        meta: StoredMeta,
        decode: &D,
        gate: FillGate<'_>,
        leases: &mut Leases,
    ) -> Accepted<T>
    where
        D: Fn(&Bytes) -> Result<Decoded<T>, DecodeError>,
    {
        let level = &self.levels[index];
        if !meta.tags.is_empty() && self.tag_invalidated(level, &meta).await {
            self.counters.tag_rejected();
            level.counters.miss();
            tracing::debug!(tier = level.name(), key = keys.key, tags = ?meta.tags, "a tag of the stored value was invalidated after it was written; read as a miss");
            return Accepted::Unusable;
        }
        let (mut accepted, bytes) = self.judge(index, keys.key, entry, meta, decode);
        if let Accepted::Fresh(found) = &mut accepted
            && index > 0
        {
            found.raced = self.promote(index, keys, &bytes, found, gate, leases).await;
        }
        accepted
    }

    /// The part of [`accept`](Self::accept) after the tag check: decodes the entry and tells
    /// whether it is fresh, stale or unusable, counting the level's hit or miss. Also returns
    /// the stored bytes (a promotion copies them).
    fn judge<T, D>(
        &self,
        index: usize,
        key: &str,
        entry: Entry,
        meta: StoredMeta,
        decode: &D,
    ) -> (Accepted<T>, Bytes)
    where
        D: Fn(&Bytes) -> Result<Decoded<T>, DecodeError>,
    {
        let level = &self.levels[index];
        let now = Instant::now();
        let entry = within_its_header(entry, &meta, level.scale(), now);
        let value = match decode(&entry.value) {
            Ok(Decoded::Value(value)) => Some(Arc::new(value)),
            Ok(Decoded::Negative) => None,
            Err(err) => {
                level.counters.decode_error();
                level.counters.miss();
                tracing::debug!(tier = level.name(), key, %err, "stored value does not decode; read as a miss");
                return (Accepted::Unusable, entry.value);
            }
        };
        let Some(fresh) = fresh_for(&entry, &meta, now) else {
            level.counters.miss();
            let accepted = match value {
                Some(value) => Accepted::Stale(StaleCopy {
                    value,
                    keep_until: entry.expires_at,
                    tags: tags_of(&meta),
                }),
                None => Accepted::Unusable,
            };
            return (accepted, entry.value);
        };
        level.counters.hit();
        observe::answered_by(level.name());
        let found = Found {
            value,
            weight: entry.value.len(),
            expires_at: entry.expires_at,
            meta,
            fresh,
            read_at: now,
            source_scale: level.scale(),
            raced: false,
        };
        (Accepted::Fresh(found), entry.value)
    }

    /// Copies an entry found at level `index` into the levels above it that take promotions,
    /// each fresh for the entry's remaining fresh life times (its scale / the source's scale),
    /// never longer than the entry has left. Once an invalidation of the key came, no more
    /// copies are made (see [`store_for_fill`](Self::store_for_fill)). A shared level that
    /// supports leases gets a copy only under this read's lease on it (the copy is older than
    /// any write after that lease). Returns whether a copy was undone or refused by its lease.
    async fn promote<T>(
        &self,
        index: usize,
        keys: Keys<'_>,
        bytes: &Bytes,
        found: &Found<T>,
        gate: FillGate<'_>,
        leases: &mut Leases,
    ) -> bool {
        let now = found.read_at;
        for (above, level) in self.levels[..index].iter().enumerate() {
            let leased = level.leases_fills() && leases.in_use();
            if leased && !leases.has(above) {
                continue;
            }
            if !level.promotion.admit(keys.key) {
                continue;
            }
            let fresh = found
                .fresh
                .mul_f64((level.scale() / found.source_scale).min(1.0));
            let expires_at = (now + fresh + found.meta.stale_window).min(found.expires_at);
            let copy = Entry::expiring_at(bytes.clone(), expires_at);
            if leased {
                // The lease guards this level (see `Stack::write`).
                let Some(lease) = leases.lease(above) else {
                    continue;
                };
                let filled = level.tier.fill(keys.stored, copy, &lease).await;
                if filled.is_ok() {
                    leases.used(above);
                }
                match filled {
                    Ok(Filled::Stored) => {
                        level.counters.promotion();
                        level.counters.write();
                    }
                    Ok(Filled::Revoked) => {
                        self.counters.fill_revoked();
                        return true;
                    }
                    // Counted and logged by the level's layers.
                    Err(_) => {}
                }
                continue;
            }
            match self.store_for_fill(level, keys.stored, copy, gate).await {
                FillStore::Refused => return false,
                FillStore::Undone => return true,
                FillStore::Stored(Ok(())) => {
                    level.counters.promotion();
                    level.counters.write();
                }
                // Counted and logged by the level's layers.
                FillStore::Stored(Err(_)) => {}
            }
        }
        false
    }

    /// Stores `entry` under `stored` at `level` for a fill that `gate` lets through. A level
    /// inside this process is written while the fill holds its pass, so an invalidation of the
    /// key waits for the store before it removes anything. A shared level is not held across its
    /// I/O (an invalidation would wait for a network round trip). Either way the fill asks again
    /// after the store and removes it when an invalidation came meanwhile (a write by another
    /// instance that lands in between is what leases are for).
    pub(super) async fn store_for_fill(
        &self,
        level: &Level,
        stored: &str,
        entry: Entry,
        gate: FillGate<'_>,
    ) -> FillStore {
        let Some(pass) = gate() else {
            return FillStore::Refused;
        };
        let held = if level.tier.is_shared() {
            drop(pass);
            None
        } else {
            Some(pass)
        };
        let result = level.tier.set(stored, entry).await;
        drop(held);
        if gate().is_some() {
            return FillStore::Stored(result);
        }
        // NOTE: a failure is counted and logged by the level's layers; the next read of the key
        // then misses here, which is the safe outcome.
        let _removed = level.tier.remove(stored).await;
        FillStore::Undone
    }

    /// Whether a value with `meta`, read from `level`, was written at or before the last
    /// invalidation of one of its tags. When a tag's time cannot be read, the answer is yes: a
    /// miss is the safe reading.
    async fn tag_invalidated(&self, level: &Level, meta: &StoredMeta) -> bool {
        if self.tags.known_invalidated(meta) {
            return true;
        }
        let unknown: Vec<&String> = meta
            .tags
            .iter()
            .filter(|tag| self.tags.trusted(tag).is_none())
            .collect();
        if unknown.is_empty() {
            return false;
        }
        let keys: Vec<String> = unknown
            .iter()
            .map(|tag| marker_key(&self.namespace, tag))
            .collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let epoch = self.tags.epoch();
        let Ok(markers) = level.get_many(&keys).await else {
            return true;
        };
        let mut invalidated = false;
        for (tag, marker) in unknown.iter().zip(markers) {
            let at = marker.map_or(0, |entry| marker_time(&entry.value));
            self.tags.record_read(tag, at, epoch);
            invalidated |= meta.written_at_ms <= at;
        }
        invalidated
    }
}

/// `entry` with its expiry cut to what its own header allows in a level of TTL scale `scale`:
/// its TTL times the scale plus its stale window, from `now` (a header without a TTL, as 0.1
/// wrote them, counts as [`DEFAULT_TTL`]). The expiry comes from the tier (Redis keeps it as
/// wall-clock time in the value's frame): a far-future one, from a bad clock or a hostile
/// writer, would otherwise give every promoted copy an almost endless life in L1.
fn within_its_header(mut entry: Entry, meta: &StoredMeta, scale: f64, now: Instant) -> Entry {
    let ttl = if meta.ttl.is_zero() {
        DEFAULT_TTL
    } else {
        meta.ttl
    };
    let longest = expiry_after(expiry_after(now, scale_ttl(ttl, scale)), meta.stale_window);
    entry.expires_at = entry.expires_at.min(longest);
    entry
}

/// How long a stored entry stays fresh from `now` (its time left minus the stale window its
/// header gives); `None` once it is stale. Relative, so a stale window longer than the monotonic
/// clock has been running never makes a stale entry look fresh.
fn fresh_for(entry: &Entry, meta: &StoredMeta, now: Instant) -> Option<Duration> {
    entry
        .expires_at
        .saturating_duration_since(now)
        .checked_sub(meta.stale_window)
        .filter(|fresh| !fresh.is_zero())
}
