//! A `HashMap` tier for tests: it can be told to fail, and its raw contents can be read and
//! written, so a test can break a tier on purpose or plant bad bytes.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Instant,
};

use bytes::Bytes;
use tiercache_core::{Entry, Error, Result, Tier, async_trait};

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
    entries: Mutex<HashMap<String, Entry>>,
    failing: AtomicBool,
    gets: AtomicU64,
    batch_gets: AtomicU64,
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
        self.map()
            .insert(key.to_owned(), Entry::expiring_at(value, expires_at));
    }

    /// The entry under the exact `key`, expired or not.
    pub fn raw(&self, key: &str) -> Option<Entry> {
        self.map().get(key).cloned()
    }

    /// Every stored key, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.map().keys().cloned().collect();
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

    fn map(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
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
        Ok(self
            .map()
            .get(key)
            .filter(|entry| !entry.is_expired())
            .cloned())
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        self.state.batch_gets.fetch_add(1, Ordering::SeqCst);
        self.check(None)?;
        let map = self.map();
        Ok(keys
            .iter()
            .map(|key| map.get(*key).filter(|entry| !entry.is_expired()).cloned())
            .collect())
    }

    async fn set(&self, key: &str, entry: Entry) -> Result<()> {
        self.check(Some(key))?;
        let mut map = self.map();
        if entry.is_expired() {
            map.remove(key);
        } else {
            map.insert(key.to_owned(), entry);
        }
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
        let before = map.len();
        map.retain(|key, _| !key.starts_with(prefix));
        Ok((before - map.len()) as u64)
    }

    async fn clear(&self) -> Result<()> {
        self.check(None)?;
        self.map().clear();
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
