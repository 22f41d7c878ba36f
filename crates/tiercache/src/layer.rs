//! A tier below L1 as the cache holds it: the tier, its options, its counters and its circuit
//! breaker. Every call to the tier goes through [`Layer::call`].

use std::{future::Future, sync::Arc};

use tiercache_core::{Error, Result, Tier, TierCounters, TierStats};

use crate::{TierOptions, breaker::Breaker, promotion::Gate};

/// One lower tier (L2, L3, ...).
#[derive(Debug)]
pub(crate) struct Layer {
    pub(crate) tier: Arc<dyn Tier>,
    pub(crate) options: TierOptions,
    pub(crate) counters: TierCounters,
    /// Decides which hits below are copied into this tier.
    pub(crate) promotion: Gate,
    breaker: Breaker,
}

impl Layer {
    pub(crate) fn new(tier: Arc<dyn Tier>, options: TierOptions) -> Self {
        Self {
            tier,
            breaker: Breaker::new(options.circuit_breaker_value()),
            promotion: Gate::new(options.promotion_value()),
            options,
            counters: TierCounters::default(),
        }
    }

    pub(crate) fn name(&self) -> &str {
        self.tier.name()
    }

    pub(crate) fn stats(&self) -> TierStats {
        let mut stats = self.counters.snapshot(self.tier.name());
        stats.circuit = self.breaker.state();
        stats.circuit_opens = self.breaker.opens();
        stats
    }

    /// Runs one call to the tier through its circuit breaker: skipped while the breaker is open
    /// ([`Error::Unavailable`], counted as skipped), otherwise run, with a failure counted and
    /// logged with the tier, key and operation.
    pub(crate) async fn call<T>(
        &self,
        operation: &'static str,
        key: &str,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let Some(permit) = self.breaker.acquire() else {
            self.counters.skip();
            return Err(Error::Unavailable {
                tier: self.name().to_owned(),
                key: Some(key.to_owned()),
            });
        };
        let result = call.await;
        match &result {
            Ok(_) => permit.succeeded(),
            Err(err) => {
                // Only failures that say the tier is unwell count towards opening the breaker.
                if err.is_retryable() {
                    permit.failed();
                } else {
                    permit.succeeded();
                }
                self.counters.error();
                tracing::warn!(tier = self.name(), key, operation, ?err, "tier call failed");
            }
        }
        result
    }
}
