//! A `HashMap` tier for tests: it can be told to fail, and its raw contents can be read and
//! written, so a test can break a tier on purpose or plant bad bytes.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use tiercache_core::{Entry, Error, Filled, Lease, LeaseRead, Result, Tier, async_trait};

/// An in-memory [`Tier`] over a `HashMap`, with switches for tests.
///
/// A cheap `Clone` handle: clones share the same map and switches, so a test keeps one clone
/// while the cache owns another.
#[derive(Debug, Clone)]
pub struct MapTier {
    name: Arc<str>,
    state: Arc<State>,
}

#[derive(Debug, Default)]
struct State {
    entries: Mutex<Store>,
    failing: AtomicBool,
    gets: AtomicU64,
    batch_gets: AtomicU64,
}

/// What the map holds: entries, the version of each (bumped by every write of the key), and
/// the leases granted on absent keys.
#[derive(Debug, Default)]
struct Store {
    entries: HashMap<String, Entry>,
    versions: HashMap<String, u64>,
    leases: HashMap<String, (u64, Instant)>,
    next_version: u64,
}

/// A lease token on an absent key: `L` + the lease's number.
const GRANTED: u8 = b'L';
/// A lease token on a key that held an entry: `V` + that entry's version.
const VERSION: u8 = b'V';

fn token(kind: u8, number: u64) -> Lease {
    let mut token = Vec::with_capacity(9);
    token.push(kind);
    token.extend_from_slice(&number.to_le_bytes());
    Lease::new(token)
}

fn read_token(lease: &Lease) -> Option<(u8, u64)> {
    let (kind, number) = lease.token().split_first()?;
    let number: [u8; 8] = number.try_into().ok()?;
    Some((*kind, u64::from_le_bytes(number)))
}

impl Store {
    fn next(&mut self) -> u64 {
        self.next_version += 1;
        self.next_version
    }

    /// Stores `entry` (removes the key when it has expired); revokes any lease on the key.
    fn put(&mut self, key: &str, entry: Entry) {
        self.leases.remove(key);
        if entry.is_expired() {
            self.entries.remove(key);
            self.versions.remove(key);
        } else {
            let version = self.next();
            self.entries.insert(key.to_owned(), entry);
            self.versions.insert(key.to_owned(), version);
        }
    }

    fn remove(&mut self, key: &str) {
        self.entries.remove(key);
        self.versions.remove(key);
        self.leases.remove(key);
    }

    fn live(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key).filter(|entry| !entry.is_expired())
    }
}

/// The error a failing [`MapTier`] reports.
#[derive(Debug, thiserror::Error)]
#[error("MapTier was told to fail")]
pub struct InjectedFailure;

impl MapTier {
    /// An empty tier named `name`.
    pub fn new(name: &str) -> Self {
        Self {
            name: Arc::from(name),
            state: Arc::default(),
        }
    }

    /// While `failing` is true, every call returns [`Error::Backend`].
    pub fn set_failing(&self, failing: bool) {
        self.state.failing.store(failing, Ordering::SeqCst);
    }

    /// Stores `value` as it is under the exact `key` (no namespace added), bypassing any cache.
    pub fn put_raw(&self, key: &str, value: impl Into<Bytes>, expires_at: Instant) {
        self.map().put(key, Entry::expiring_at(value, expires_at));
    }

    /// The entry under the exact `key`, expired or not.
    pub fn raw(&self, key: &str) -> Option<Entry> {
        self.map().entries.get(key).cloned()
    }

    /// Every stored key, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.map().entries.keys().cloned().collect();
        keys.sort();
        keys
    }

    /// How many `get` calls the tier has answered.
    pub fn gets(&self) -> u64 {
        self.state.gets.load(Ordering::SeqCst)
    }

    /// Batch reads (`get_many` calls) so far, each counted once however many keys it asked for.
    pub fn batch_gets(&self) -> u64 {
        self.state.batch_gets.load(Ordering::SeqCst)
    }

    fn map(&self) -> MutexGuard<'_, Store> {
        // A test that panicked while holding the lock leaves the map usable for the next one.
        self.state
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn check(&self, key: Option<&str>) -> Result<()> {
        if self.state.failing.load(Ordering::SeqCst) {
            Err(Error::backend(self.name.as_ref(), key, InjectedFailure))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Tier for MapTier {
    fn name(&self) -> &str {
        &self.name
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>> {
        self.state.gets.fetch_add(1, Ordering::SeqCst);
        self.check(Some(key))?;
        Ok(self.map().live(key).cloned())
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        self.state.batch_gets.fetch_add(1, Ordering::SeqCst);
        self.check(None)?;
        let map = self.map();
        Ok(keys.iter().map(|key| map.live(key).cloned()).collect())
    }

    async fn set(&self, key: &str, entry: Entry) -> Result<()> {
        self.check(Some(key))?;
        self.map().put(key, entry);
        Ok(())
    }

    async fn remove(&self, key: &str) -> Result<()> {
        self.check(Some(key))?;
        self.map().remove(key);
        Ok(())
    }

    async fn remove_prefix(&self, prefix: &str) -> Result<u64> {
        self.check(Some(prefix))?;
        let mut map = self.map();
        let before = map.entries.len();
        map.entries.retain(|key, _| !key.starts_with(prefix));
        map.versions.retain(|key, _| !key.starts_with(prefix));
        map.leases.retain(|key, _| !key.starts_with(prefix));
        Ok((before - map.entries.len()) as u64)
    }

    async fn clear(&self) -> Result<()> {
        self.check(None)?;
        let mut map = self.map();
        map.entries.clear();
        map.versions.clear();
        map.leases.clear();
        Ok(())
    }

    fn supports_leases(&self) -> bool {
        true
    }

    async fn lease(&self, key: &str, ttl: Duration) -> Result<LeaseRead> {
        self.check(Some(key))?;
        let mut map = self.map();
        if let Some(entry) = map.live(key).cloned() {
            let version = map.versions.get(key).copied().unwrap_or_default();
            return Ok(LeaseRead::Found(entry, token(VERSION, version)));
        }
        let now = Instant::now();
        if let Some((_, until)) = map.leases.get(key).filter(|(_, until)| *until > now) {
            return Ok(LeaseRead::Held(until.saturating_duration_since(now)));
        }
        // NOTE: expired leases are dropped as new ones come, so the map stays small.
        map.leases.retain(|_, (_, until)| *until > now);
        let number = map.next();
        let until = now
            .checked_add(ttl)
            .unwrap_or(now + Duration::from_secs(86_400));
        map.leases.insert(key.to_owned(), (number, until));
        Ok(LeaseRead::Granted(token(GRANTED, number)))
    }

    async fn fill(&self, key: &str, entry: Entry, lease: &Lease) -> Result<Filled> {
        self.check(Some(key))?;
        let mut map = self.map();
        let valid = match read_token(lease) {
            Some((GRANTED, number)) => map
                .leases
                .get(key)
                .is_some_and(|(held, until)| *held == number && *until > Instant::now()),
            Some((VERSION, version)) => map.versions.get(key) == Some(&version),
            _ => lease.is_unguarded(),
        };
        if !valid {
            return Ok(Filled::Revoked);
        }
        map.put(key, entry);
        Ok(Filled::Stored)
    }

    async fn release(&self, key: &str, lease: &Lease) -> Result<()> {
        self.check(Some(key))?;
        let mut map = self.map();
        if let Some((GRANTED, number)) = read_token(lease)
            && map.leases.get(key).is_some_and(|(held, _)| *held == number)
        {
            map.leases.remove(key);
        }
        Ok(())
    }

    async fn health(&self) -> Result<()> {
        self.check(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn map_tier_passes_conformance() {
        crate::conformance::run(&MapTier::new("map"), "conformance:").await;
    }

    #[tokio::test]
    async fn a_failing_map_tier_names_itself_and_the_key() {
        let tier = MapTier::new("l2");
        tier.set_failing(true);
        let err = tier.get("k").await.unwrap_err();
        assert_eq!(err.tier(), Some("l2"));
        assert!(err.to_string().contains("\"k\""));
    }
}
