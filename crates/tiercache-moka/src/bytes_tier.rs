//! moka as a bytes [`Tier`]: any level of the stack can be in-process.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use moka::ops::compute::Op;
use tiercache_core::{Entry, Error, Filled, Lease, LeaseRead, Result, Tier};

use crate::{
    config::{MemoryConfig, build_cache},
    expiry::ExpiresAt,
};

/// What a key holds: a value with its version (new on every write), or a filler's lease.
#[derive(Debug, Clone)]
enum Slot {
    Value(Entry, u64),
    Lease(u64, Instant),
}

impl ExpiresAt for Slot {
    fn expires_at(&self) -> Instant {
        match self {
            Self::Value(entry, _) => entry.expires_at,
            Self::Lease(_, until) => *until,
        }
    }
}

/// A lease token: the kind (`L` on an absent key, `V` on a value), the number (the lease's or
/// the value's version) and the removal generation it was taken in.
fn token(kind: u8, number: u64, generation: u64) -> Lease {
    let mut token = Vec::with_capacity(17);
    token.push(kind);
    token.extend_from_slice(&number.to_le_bytes());
    token.extend_from_slice(&generation.to_le_bytes());
    Lease::new(token)
}

fn read_token(lease: &Lease) -> Option<(u8, u64, u64)> {
    let (kind, rest) = lease.token().split_first()?;
    let number: [u8; 8] = rest.get(..8)?.try_into().ok()?;
    let generation: [u8; 8] = rest.get(8..16)?.try_into().ok()?;
    Some((
        *kind,
        u64::from_le_bytes(number),
        u64::from_le_bytes(generation),
    ))
}

/// An in-process [`Tier`] that stores encoded bytes, for use below the typed L1 (an L2 in front
/// of a slow tier, or the lower levels of an N-tier stack in tests).
///
/// Leases ([`Tier::lease`]) live in the key, as on Redis: a lease on an absent key is a slot that
/// reads as a miss. Every write and removal of a key goes through moka's per-key compute, so a
/// fill's check and store cannot interleave with them; `remove_prefix` and `clear` revoke every
/// lease taken before them (a removal generation), not only those under the prefix. The cache
/// itself guards its in-process tiers with its invalidation clock and does not need these
/// leases; they are for code that uses the tier directly.
///
/// A cheap `Clone` handle: clones share the same entries.
#[derive(Clone)]
pub struct MokaTier {
    entries: crate::config::Entries<Slot>,
    name: Arc<str>,
    /// Version numbers for values and leases.
    versions: Arc<AtomicU64>,
    /// Moves on every `remove_prefix` and `clear`.
    generation: Arc<AtomicU64>,
}

impl MokaTier {
    /// A tier of at most `max_entries` entries, named `"moka"`.
    pub fn new(max_entries: u64) -> Self {
        Self::with_config(&MemoryConfig::new(max_entries))
    }

    /// A tier bounded and named as `config` says.
    pub fn with_config(config: &MemoryConfig) -> Self {
        Self {
            entries: build_cache(config, |slot: &Slot| match slot {
                Slot::Value(entry, _) => u32::try_from(entry.value.len()).unwrap_or(u32::MAX),
                Slot::Lease(..) => 0,
            }),
            name: Arc::from(config.name.as_deref().unwrap_or("moka")),
            versions: Arc::default(),
            generation: Arc::default(),
        }
    }

    /// Entries held, as of the last housekeeping.
    pub fn entry_count(&self) -> u64 {
        self.entries.entry_count()
    }

    fn next_version(&self) -> u64 {
        self.versions.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Runs moka's pending housekeeping now.
    pub async fn run_pending_tasks(&self) {
        self.entries.run_pending_tasks().await;
    }
}

impl fmt::Debug for MokaTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MokaTier")
            .field("name", &self.name)
            .field("entries", &self.entries.entry_count())
            .finish()
    }
}

#[async_trait]
impl Tier for MokaTier {
    /// No: this tier lives in one process, so the cache applies bus invalidations to it.
    fn is_shared(&self) -> bool {
        false
    }

    fn name(&self) -> &str {
        &self.name
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>> {
        Ok(match self.entries.get(key).await {
            Some(Slot::Value(entry, _)) => Some(entry),
            Some(Slot::Lease(..)) | None => None,
        })
    }

    async fn set(&self, key: &str, entry: Entry) -> Result<()> {
        let slot = (!entry.is_expired()).then(|| Slot::Value(entry, self.next_version()));
        self.entries
            .entry_by_ref(key)
            .and_compute_with(|_| async move { slot.map_or(Op::Remove, Op::Put) })
            .await;
        Ok(())
    }

    async fn remove(&self, key: &str) -> Result<()> {
        self.entries
            .entry_by_ref(key)
            .and_compute_with(|_| async { Op::Remove })
            .await;
        Ok(())
    }

    fn supports_leases(&self) -> bool {
        true
    }

    async fn lease(&self, key: &str, ttl: Duration) -> Result<LeaseRead> {
        let generation = self.generation.load(Ordering::SeqCst);
        let number = self.next_version();
        let now = Instant::now();
        let until = now
            .checked_add(ttl)
            .unwrap_or(now + Duration::from_secs(86_400));
        let mut read = None;
        self.entries
            .entry_by_ref(key)
            .and_compute_with(|current| {
                let (op, answer) = match current.map(moka::Entry::into_value) {
                    Some(Slot::Value(entry, version)) if !entry.is_expired() => (
                        Op::Nop,
                        LeaseRead::Found(entry, token(b'V', version, generation)),
                    ),
                    Some(Slot::Lease(_, held)) if held > now => (
                        Op::Nop,
                        LeaseRead::Held(held.saturating_duration_since(now)),
                    ),
                    _ => (
                        Op::Put(Slot::Lease(number, until)),
                        LeaseRead::Granted(token(b'L', number, generation)),
                    ),
                };
                read = Some(answer);
                async move { op }
            })
            .await;
        read.ok_or_else(|| Error::Config("moka compute did not run".to_owned()))
    }

    async fn fill(&self, key: &str, entry: Entry, lease: &Lease) -> Result<Filled> {
        if lease.is_unguarded() {
            return self.set(key, entry).await.map(|()| Filled::Stored);
        }
        let Some((kind, number, generation)) = read_token(lease) else {
            return Ok(Filled::Revoked);
        };
        let version = self.next_version();
        let mut filled = Filled::Revoked;
        self.entries
            .entry_by_ref(key)
            .and_compute_with(|current| {
                let now = Instant::now();
                let valid = self.generation.load(Ordering::SeqCst) == generation
                    && match (kind, current.map(moka::Entry::into_value)) {
                        (b'L', Some(Slot::Lease(held, until))) => held == number && until > now,
                        (b'V', Some(Slot::Value(_, stored))) => stored == number,
                        _ => false,
                    };
                let op = if !valid {
                    Op::Nop
                } else if entry.is_expired() {
                    filled = Filled::Stored;
                    Op::Remove
                } else {
                    filled = Filled::Stored;
                    Op::Put(Slot::Value(entry, version))
                };
                async move { op }
            })
            .await;
        Ok(filled)
    }

    async fn release(&self, key: &str, lease: &Lease) -> Result<()> {
        let Some((b'L', number, _)) = read_token(lease) else {
            return Ok(());
        };
        self.entries
            .entry_by_ref(key)
            .and_compute_with(|current| {
                let op = match current.map(moka::Entry::into_value) {
                    Some(Slot::Lease(held, _)) if held == number => Op::Remove,
                    _ => Op::Nop,
                };
                async move { op }
            })
            .await;
        Ok(())
    }

    async fn remove_prefix(&self, prefix: &str) -> Result<u64> {
        self.generation.fetch_add(1, Ordering::SeqCst);
        // Lease slots under the prefix go too; the generation above revokes any taken since.
        Ok(crate::sweep::remove_where(&self.entries, |key, _| key.starts_with(prefix)).await)
    }

    async fn clear(&self) -> Result<()> {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.entries.invalidate_all();
        Ok(())
    }
}
