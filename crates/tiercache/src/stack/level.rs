//! One level of the stack below L1 (L2, L3, ...): the tier wrapped in its per-tier layers, its
//! options, its counters and its promotion gate.

use std::{future::Future, sync::Arc, time::Duration};

use tiercache_core::{Entry, LeaseRead, Result, Tier, TierCounters, TierStats};

use super::{
    breaker::{Breaker, WithBreaker},
    counting::WithErrorCounts,
};
use crate::{TierOptions, policy::Gate};

/// A tier inside its layers, outermost first: the circuit breaker, then the error counts. The
/// stacking order is the call order: a call the breaker skips is not a tier failure.
type Layered = WithBreaker<WithErrorCounts<Arc<dyn Tier>>>;

/// One tier below L1, as the stack calls it.
#[derive(Debug)]
pub(crate) struct Level {
    /// The tier inside its layers (a `Tier` itself).
    pub(super) tier: Layered,
    pub(super) options: TierOptions,
    pub(super) counters: Arc<TierCounters>,
    /// Decides which hits below are copied into this tier.
    pub(super) promotion: Gate,
    breaker: Arc<Breaker>,
    name: Arc<str>,
}

impl Level {
    /// `tier` with `options`, wrapped in its layers.
    pub(crate) fn new(tier: Arc<dyn Tier>, options: TierOptions) -> Self {
        let counters = Arc::new(TierCounters::default());
        let breaker = Arc::new(Breaker::new(options.circuit_breaker_value()));
        let name = Arc::from(tier.name());
        let counted = WithErrorCounts::new(tier, Arc::clone(&counters));
        let guarded = WithBreaker::new(counted, Arc::clone(&breaker), Arc::clone(&counters));
        Self {
            tier: guarded,
            promotion: Gate::new(options.promotion_value()),
            options,
            counters,
            breaker,
            name,
        }
    }

    /// The read of every lookup below L1: through the same layers, in the same order, but with
    /// their routines before and after the call inlined (see [`layered`](Self::layered)), so
    /// that only the tier's own future is boxed (each layer's `Tier::get` would box one more)
    /// and this future holds little more than that box (it is part of the boxed future of every
    /// L1 miss).
    pub(super) async fn get(&self, stored: &str) -> Result<Option<Entry>> {
        self.layered("get", stored, |tier| tier.get(stored)).await
    }

    /// The leased read (see [`Tier::lease`]), composed like [`get`](Self::get).
    pub(super) async fn lease(&self, stored: &str, ttl: Duration) -> Result<LeaseRead> {
        self.layered("lease", stored, |tier| tier.lease(stored, ttl))
            .await
    }

    /// The batch read, composed like [`get`](Self::get).
    pub(super) async fn get_many(&self, stored: &[&str]) -> Result<Vec<Option<Entry>>> {
        let first = stored.first().copied().unwrap_or_default();
        self.layered("get_many", first, |tier| tier.get_many(stored))
            .await
    }

    /// One call of the tier itself (`call` makes it, once the breaker lets it through), with
    /// what the breaker and the error counts do before and after it.
    async fn layered<'a, R, F>(
        &'a self,
        operation: &'static str,
        key: &str,
        call: impl FnOnce(&'a dyn Tier) -> F,
    ) -> Result<R>
    where
        F: Future<Output = Result<R>>,
    {
        let permit = self.tier.admit(key)?;
        let counted = self.tier.inner();
        let result = call(&**counted.inner()).await;
        counted.note(operation, key, &result);
        permit.settle(&result);
        result
    }

    /// The tier itself, without its layers.
    pub(super) fn raw(&self) -> Arc<dyn Tier> {
        Arc::clone(self.tier.inner().inner())
    }

    /// Whether invalidations that `reach` covers reach this level.
    pub(super) fn reached_by(&self, reach: super::Reach) -> bool {
        reach == super::Reach::Every || !self.tier.is_shared()
    }

    /// Whether fills into this level go under a lease: a shared level whose tier supports
    /// them. (In-process levels are guarded by the invalidation clock instead.)
    pub(super) fn leases_fills(&self) -> bool {
        self.tier.is_shared() && self.tier.supports_leases()
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn options(&self) -> &TierOptions {
        &self.options
    }

    pub(super) fn scale(&self) -> f64 {
        self.options.ttl_scale_value()
    }

    pub(crate) fn stats(&self) -> TierStats {
        let mut stats = self.counters.snapshot(&self.name);
        stats.circuit = self.breaker.state();
        stats.circuit_opens = self.breaker.opens();
        stats
    }
}
