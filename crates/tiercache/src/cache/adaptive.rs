//! The loaders that say more than "here is the value": one that chooses how its value is stored
//! (adaptive caching), and one that is handed the copy the cache holds and may answer that it is
//! still good (conditional refresh). Both run under the same flights, stamps and leases as
//! [`get_or_compute`](crate::Cache::get_or_compute).

use std::{future::Future, sync::Arc};

use serde::{Serialize, de::DeserializeOwned};
use tiercache_core::{Codec, EntryOptions, Result};
// Named by the docs' error links.
#[cfg(doc)]
use tiercache_core::Error;

use crate::{
    Cache,
    engine::Adaptive,
    observe::{self, call_span},
};

/// A loader's error, erased (as every loader's is).
type LoaderError = Box<dyn std::error::Error + Send + Sync>;

/// What the loader of [`Cache::get_or_refresh`] answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refresh<T> {
    /// The source has a new value: it replaces the cached one.
    Modified(T),
    /// The copy the loader was handed is still the source's value (an HTTP `304`, an unchanged
    /// row version): it is stored again with the options' TTL, as if it had just been loaded.
    NotModified,
}

impl<C: Codec> Cache<C> {
    /// Like [`get_or_compute`](Self::get_or_compute), but the loader returns the entry options
    /// its value is stored with, chosen once it knows the value (FusionCache calls this adaptive
    /// caching): a TTL by how volatile the row is, the tags of the category it turned out to be
    /// in. The options given to the call decide everything before the load (timeouts,
    /// fail-safe, leases); the loader's options decide how its value is stored (TTL, stale
    /// window, tags, jitter, negative TTL). Both are validated (an invalid tag from the loader is
    /// [`Error::InvalidTag`] and nothing is stored).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> tiercache::Result<()> {
    /// use std::time::Duration;
    /// use tiercache::{Cache, CacheStrategy, EntryOptions, MemoryTier};
    ///
    /// let cache = Cache::builder().memory(MemoryTier::new(1_000)).build().await?;
    /// let price: u32 = cache
    ///     .get_or_compute_with("product:7", CacheStrategy::ShortTerm, || async {
    ///         let (price, category) = (1_299_u32, "garden"); // from the database
    ///         let stored = EntryOptions::new(CacheStrategy::Custom(Duration::from_secs(30)))
    ///             .tags([format!("category:{category}")]);
    ///         Ok::<_, std::io::Error>((price, stored))
    ///     })
    ///     .await?;
    /// assert_eq!(price, 1_299);
    /// cache.invalidate_tag("category:garden").await?;
    /// assert_eq!(cache.get::<u32>("product:7").await?, None);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`get_or_compute`](Self::get_or_compute), and [`Error::InvalidTag`] for the loader's
    /// tags.
    pub async fn get_or_compute_with<T, F, Fut, E>(
        &self,
        key: &str,
        options: impl Into<EntryOptions>,
        loader: F,
    ) -> Result<T>
    where
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<(T, EntryOptions), E>> + Send + 'static,
        E: Into<LoaderError> + 'static,
    {
        let adaptive = Adaptive::new();
        let chosen = Arc::clone(&adaptive);
        let loader = move || async move {
            let (value, options) = loader().await.map_err(Into::into)?;
            chosen.store_with(options);
            Ok::<_, LoaderError>(Some(value))
        };
        let call = self.compute_value(key, options, Some(adaptive), loader);
        let value =
            observe::traced(call_span!("get_or_compute", key), call, observe::no_hit).await?;
        Ok(Arc::unwrap_or_clone(value))
    }

    /// get-or-compute with a conditional refresh: the loader is handed the copy the cache still
    /// holds — the value kept past its TTL by a [fail-safe](EntryOptions::fail_safe) stale window;
    /// `None` when there is none — and may answer [`Refresh::NotModified`] (after asking the
    /// source with the copy's ETag or version) to keep it for another TTL without transferring
    /// it again. It keeps the tags it was stored with, plus the call's.
    ///
    /// The kept copy is stored again like a loaded value: under the flight's stamp and leases,
    /// so an invalidation or write of the key during the refresh wins over it. A copy is handed
    /// over only when storing it again cannot undo a write or invalidation that came after it was
    /// read: not after an invalidation of the key since, not an L1 copy while Redis is leased (a
    /// copy from Redis is, read together with its lease), not after the call waited for another
    /// instance's lease, and not in an eager refresh. Then the loader gets `None` and loads.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> tiercache::Result<()> {
    /// use std::time::Duration;
    /// use tiercache::{Cache, CacheStrategy, EntryOptions, FailSafe, MemoryTier, Refresh};
    ///
    /// #[derive(Clone, serde::Serialize, serde::Deserialize)]
    /// struct Page { etag: String, body: String }
    ///
    /// let cache = Cache::builder().memory(MemoryTier::new(1_000)).build().await?;
    /// let options = EntryOptions::new(CacheStrategy::Custom(Duration::from_millis(20)))
    ///     .fail_safe(FailSafe::new(Duration::from_secs(60)));
    /// let page = Page { etag: "v1".into(), body: "hello".into() };
    /// cache.set("page:/", &page, options.clone()).await?;
    /// tokio::time::sleep(Duration::from_millis(30)).await;
    ///
    /// let page: Page = cache
    ///     .get_or_refresh("page:/", options, |held: Option<std::sync::Arc<Page>>| async move {
    ///         // Ask the origin with `If-None-Match: <held etag>`; it answers 304.
    ///         assert_eq!(held.map(|page| page.etag.clone()).as_deref(), Some("v1"));
    ///         Ok::<_, std::io::Error>(Refresh::NotModified)
    ///     })
    ///     .await?;
    /// assert_eq!(page.body, "hello");
    /// assert_eq!(cache.get::<Page>("page:/").await?.map(|p| p.etag).as_deref(), Some("v1"));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`get_or_compute`](Self::get_or_compute); [`Error::Loader`] when the loader answers
    /// `NotModified` although it was handed no copy.
    pub async fn get_or_refresh<T, F, Fut, E>(
        &self,
        key: &str,
        options: impl Into<EntryOptions>,
        loader: F,
    ) -> Result<T>
    where
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        F: FnOnce(Option<Arc<T>>) -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<Refresh<T>, E>> + Send + 'static,
        E: Into<LoaderError> + 'static,
    {
        let options = options.into();
        let adaptive = Adaptive::new();
        let offered = Arc::clone(&adaptive);
        let call_options = options.clone();
        let loader = move || async move {
            let held = offered.current();
            match loader(held.clone()).await.map_err(Into::into)? {
                Refresh::Modified(value) => Ok(Some(value)),
                Refresh::NotModified => match held {
                    Some(held) => {
                        // The copy keeps the tags it was stored with (with the call's own), so
                        // a tag invalidation still finds it.
                        let mut tags = offered.current_tags();
                        for tag in call_options.tags_value() {
                            if !tags.contains(tag) {
                                tags.push(tag.clone());
                            }
                        }
                        offered.store_with(call_options.tags(tags));
                        Ok(Some(Arc::unwrap_or_clone(held)))
                    }
                    None => Err(LoaderError::from(
                        "the loader answered NotModified, but it was handed no cached copy",
                    )),
                },
            }
        };
        let call = self.compute_value(key, options, Some(adaptive), loader);
        let value =
            observe::traced(call_span!("get_or_compute", key), call, observe::no_hit).await?;
        Ok(Arc::unwrap_or_clone(value))
    }
}
