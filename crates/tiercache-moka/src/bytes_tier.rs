//! moka as a bytes [`Tier`]: any level of the stack can be in-process.

use std::{fmt, sync::Arc};

use async_trait::async_trait;
use tiercache_core::{Entry, Error, Result, Tier};

use crate::config::{MemoryConfig, build_cache};

/// An in-process [`Tier`] that stores encoded bytes, for use below the typed L1 (an L2 in front
/// of a slow tier, or the lower levels of an N-tier stack in tests).
///
/// A cheap `Clone` handle: clones share the same entries.
#[derive(Clone)]
pub struct MokaTier {
    entries: moka::future::Cache<String, Entry>,
    name: Arc<str>,
}

impl MokaTier {
    /// A tier of at most `max_entries` entries, named `"moka"`.
    pub fn new(max_entries: u64) -> Self {
        Self::with_config(&MemoryConfig::new(max_entries))
    }

    /// A tier bounded and named as `config` says.
    pub fn with_config(config: &MemoryConfig) -> Self {
        Self {
            entries: build_cache(config, |entry: &Entry| {
                u32::try_from(entry.value.len()).unwrap_or(u32::MAX)
            }),
            name: Arc::from(config.name.as_deref().unwrap_or("moka")),
        }
    }

    /// Entries held, as of the last housekeeping.
    pub fn entry_count(&self) -> u64 {
        self.entries.entry_count()
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
        Ok(self.entries.get(key).await)
    }

    async fn set(&self, key: &str, entry: Entry) -> Result<()> {
        if entry.is_expired() {
            self.entries.invalidate(key).await;
        } else {
            self.entries.insert(key.to_owned(), entry).await;
        }
        Ok(())
    }

    async fn remove(&self, key: &str) -> Result<()> {
        self.entries.invalidate(key).await;
        Ok(())
    }

    async fn remove_prefix(&self, prefix: &str) -> Result<u64> {
        let owned = prefix.to_owned();
        self.entries
            .invalidate_entries_if(move |key, _| key.starts_with(&owned))
            .map_err(|err| Error::backend(self.name.as_ref(), Some(prefix), err))?;
        // NOTE: moka removes lazily, so the count of removed entries is not known here.
        Ok(0)
    }

    async fn clear(&self) -> Result<()> {
        self.entries.invalidate_all();
        Ok(())
    }
}
