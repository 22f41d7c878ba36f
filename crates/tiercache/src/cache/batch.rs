//! The batch operations of the `Cache` handle: each opens its span and makes one call into the
//! engine.

use std::{collections::HashMap, future::Future, sync::Arc};

use serde::{Serialize, de::DeserializeOwned};
use tiercache_core::{Bytes, Codec, EntryOptions, Result};

// Named by the docs' error links.
#[cfg(doc)]
use tiercache_core::Error;

use crate::{
    Cache,
    observe::{self, call_span},
};

impl<C: Codec> Cache<C> {
    /// The values under `keys`, in order, cloned out of the cache: L1 for each key, then one
    /// batch read per lower tier for the keys that missed above it (on Redis, one `MGET` per hash
    /// slot). Hits below L1 are promoted, as with [`get`](Self::get).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidKey`] when any key breaks the key rules (nothing is read).
    pub async fn get_many<T>(&self, keys: &[&str]) -> Result<Vec<Option<T>>>
    where
        T: DeserializeOwned + Clone + Send + Sync + 'static,
    {
        let found = self.get_many_arc::<T>(keys).await?;
        Ok(found
            .into_iter()
            .map(|v| v.map(Arc::unwrap_or_clone))
            .collect())
    }

    /// Like [`get_many`](Self::get_many), handing back the shared `Arc<T>`s.
    ///
    /// # Errors
    ///
    /// As [`get_many`](Self::get_many).
    pub async fn get_many_arc<T>(&self, keys: &[&str]) -> Result<Vec<Option<Arc<T>>>>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        let call = async {
            let engine = self.engine();
            let decode = |bytes: &Bytes| engine.decode::<T>(bytes);
            engine.read_values(keys, &decode).await
        };
        let first = keys.first().copied().unwrap_or_default();
        observe::traced(call_span!("get_many", first), call, observe::all_found).await
    }

    /// Stores every `(key, value)` in every tier, with one batch write per tier below L1 (on
    /// Redis, grouped by hash slot), then publishes the keys, up to 4,096 a message (values never
    /// travel with it, whatever [`BusOptions::updates_up_to`](crate::BusOptions::updates_up_to)
    /// says).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidKey`] or [`Error::Encode`] for any entry (nothing is written); otherwise
    /// the first tier failure, after all tiers were tried, or the bus's error.
    pub async fn set_many<T>(
        &self,
        entries: &[(&str, T)],
        options: impl Into<EntryOptions>,
    ) -> Result<()>
    where
        T: Serialize + Clone + Send + Sync + 'static,
    {
        let options = options.into();
        let call = self.engine().set_many(entries, &options);
        let first = entries.first().map(|(key, _)| *key).unwrap_or_default();
        observe::traced(call_span!("set_many", first), call, observe::no_hit).await
    }

    /// get-or-compute for many keys at once. The tiers are read as in
    /// [`get_many`](Self::get_many); the keys that missed everywhere go to `loader` in one call
    /// (minus any another caller is already loading, which this call waits for instead), and
    /// what it returns is stored in every tier. A key the loader leaves out of its map is "not
    /// found": `None`, cached as negative when the options set a
    /// [`negative_ttl`](EntryOptions::negative_ttl).
    ///
    /// `loader` is called at most once per round; a second round happens only for keys whose
    /// loading caller was cancelled meanwhile.
    ///
    /// The options' (or the cache's) hard timeout bounds the loader call and the waits for other
    /// callers' loads together. With [fail-safe](EntryOptions::fail_safe), a key whose load fails
    /// or passes the hard timeout answers with the stale value met in any tier, served again for
    /// the throttle like a single load's; the call fails only when some such key has none. The
    /// soft timeout and eager refresh do not apply: they would need a loader that outlives the
    /// call.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> tiercache::Result<()> {
    /// use std::collections::HashMap;
    /// use tiercache::{Cache, CacheStrategy, MemoryTier};
    ///
    /// let cache = Cache::builder().memory(MemoryTier::new(1_000)).build().await?;
    /// cache.set("user:1", &"ada".to_owned(), CacheStrategy::ShortTerm).await?;
    /// let names = cache
    ///     .get_or_compute_many(&["user:1", "user:2", "user:3"], CacheStrategy::ShortTerm, |missing| async move {
    ///         // One query for every key that missed: here "user:2" and "user:3".
    ///         assert_eq!(missing, ["user:2", "user:3"]);
    ///         Ok::<_, std::io::Error>(HashMap::from([("user:2".to_owned(), "grace".to_owned())]))
    ///     })
    ///     .await?;
    /// assert_eq!(names, [Some("ada".to_owned()), Some("grace".to_owned()), None]);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidKey`]; [`Error::Loader`] when the loader fails, or [`Error::Timeout`]
    /// when it passes the hard timeout, for a key without a stale fallback (nothing is cached,
    /// and callers waiting for these keys get the same error); [`Error::Encode`] for a loaded
    /// value that does not encode. A loader panic goes on in this caller; waiters get
    /// [`Error::LoaderPanicked`].
    pub async fn get_or_compute_many<T, F, Fut, E>(
        &self,
        keys: &[&str],
        options: impl Into<EntryOptions>,
        loader: F,
    ) -> Result<Vec<Option<T>>>
    where
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        F: Fn(Vec<String>) -> Fut,
        Fut: Future<Output = std::result::Result<HashMap<String, T>, E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let options = options.into();
        let call = async {
            let found = self.engine().compute_many(keys, &options, loader).await?;
            Ok(found
                .into_iter()
                .map(|v| v.map(Arc::unwrap_or_clone))
                .collect())
        };
        let first = keys.first().copied().unwrap_or_default();
        observe::traced(
            call_span!("get_or_compute_many", first),
            call,
            observe::all_found,
        )
        .await
    }
}
