//! Failures of one tier, counted and logged, as a tier around the tier: every failed call adds
//! to the tier's error count and logs the tier, the key and the operation.

use std::future::Future;
use std::sync::Arc;

use std::time::Duration;

use tiercache_core::{Entry, Filled, Lease, LeaseRead, Result, Tier, TierCounters, async_trait};

/// A tier whose failed calls are counted in `counters` and logged.
#[derive(Debug)]
pub(crate) struct WithErrorCounts<T> {
    inner: T,
    counters: Arc<TierCounters>,
}

impl<T: Tier> WithErrorCounts<T> {
    /// `inner`, counting its failures in `counters`.
    pub(crate) fn new(inner: T, counters: Arc<TierCounters>) -> Self {
        Self { inner, counters }
    }

    /// The tier inside.
    pub(super) fn inner(&self) -> &T {
        &self.inner
    }

    /// Runs one call of the tier inside, counting and logging its failure.
    pub(super) async fn call<R>(
        &self,
        operation: &'static str,
        key: &str,
        call: impl Future<Output = Result<R>>,
    ) -> Result<R> {
        let result = call.await;
        self.note(operation, key, &result);
        result
    }

    /// The part of [`call`](Self::call) after the answer, for a caller that awaits the tier
    /// itself: counts and logs a failure.
    pub(super) fn note<R>(&self, operation: &'static str, key: &str, result: &Result<R>) {
        if let Err(err) = result {
            self.counters.error();
            tracing::warn!(
                tier = self.inner.name(),
                key,
                operation,
                ?err,
                "tier call failed"
            );
        }
    }
}

#[async_trait]
impl<T: Tier> Tier for WithErrorCounts<T> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn is_shared(&self) -> bool {
        self.inner.is_shared()
    }
    async fn get(&self, key: &str) -> Result<Option<Entry>> {
        self.call("get", key, self.inner.get(key)).await
    }
    async fn set(&self, key: &str, entry: Entry) -> Result<()> {
        self.call("set", key, self.inner.set(key, entry)).await
    }
    async fn remove(&self, key: &str) -> Result<()> {
        self.call("remove", key, self.inner.remove(key)).await
    }
    async fn remove_prefix(&self, prefix: &str) -> Result<u64> {
        let call = self.inner.remove_prefix(prefix);
        self.call("remove_prefix", prefix, call).await
    }
    async fn clear(&self) -> Result<()> {
        self.call("clear", "", self.inner.clear()).await
    }
    async fn health(&self) -> Result<()> {
        self.inner.health().await
    }
    fn supports_leases(&self) -> bool {
        self.inner.supports_leases()
    }
    async fn lease(&self, key: &str, ttl: Duration) -> Result<LeaseRead> {
        self.call("lease", key, self.inner.lease(key, ttl)).await
    }
    async fn fill(&self, key: &str, entry: Entry, lease: &Lease) -> Result<Filled> {
        self.call("fill", key, self.inner.fill(key, entry, lease))
            .await
    }
    async fn release(&self, key: &str, lease: &Lease) -> Result<()> {
        self.call("release", key, self.inner.release(key, lease))
            .await
    }
    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        let first = keys.first().copied().unwrap_or_default();
        self.call("get_many", first, self.inner.get_many(keys))
            .await
    }
    async fn set_many(&self, entries: Vec<(String, Entry)>) -> Result<()> {
        let first = entries
            .first()
            .map(|(key, _)| key.clone())
            .unwrap_or_default();
        self.call("set_many", &first, self.inner.set_many(entries))
            .await
    }
    async fn remove_many(&self, keys: &[&str]) -> Result<()> {
        let first = keys.first().copied().unwrap_or_default();
        self.call("remove_many", first, self.inner.remove_many(keys))
            .await
    }
}
