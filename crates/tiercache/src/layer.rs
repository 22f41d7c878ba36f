//! A tier below L1 as the cache holds it: the tier, its options and its counters.

use std::sync::Arc;

use tiercache_core::{Tier, TierCounters, TierStats};

use crate::TierOptions;

/// One lower tier (L2, L3, ...).
#[derive(Debug)]
pub(crate) struct Layer {
    pub(crate) tier: Arc<dyn Tier>,
    pub(crate) options: TierOptions,
    pub(crate) counters: TierCounters,
}

impl Layer {
    pub(crate) fn new(tier: Arc<dyn Tier>, options: TierOptions) -> Self {
        Self {
            tier,
            options,
            counters: TierCounters::default(),
        }
    }

    pub(crate) fn name(&self) -> &str {
        self.tier.name()
    }

    pub(crate) fn stats(&self) -> TierStats {
        self.counters.snapshot(self.tier.name())
    }

    /// Records a failed call, with the tier and key in the event.
    pub(crate) fn failed(&self, operation: &'static str, key: &str, err: &tiercache_core::Error) {
        self.counters.error();
        tracing::warn!(tier = self.name(), key, operation, ?err, "tier call failed");
    }
}
