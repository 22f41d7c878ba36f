//! A bus that loses messages on purpose, without telling anyone: what a silently broken network
//! path does. Only the L1 max age bounds what the other instances then serve.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use tiercache_core::{Bus, BusHealth, BusMessage, BusScope, BusSink, Result, async_trait};

/// Wraps a bus and drops every `nth` message it is asked to publish (reporting success).
#[derive(Debug)]
pub struct DroppingBus {
    inner: Arc<dyn Bus>,
    nth: u64,
    published: AtomicU64,
    dropped: AtomicU64,
}

impl DroppingBus {
    /// `inner`, losing every `nth` publish (`nth` of 0 or 1 loses them all).
    pub fn new(inner: Arc<dyn Bus>, nth: u64) -> Self {
        Self {
            inner,
            nth: nth.max(1),
            published: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Messages dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl Bus for DroppingBus {
    fn name(&self) -> &str {
        "dropping"
    }

    async fn start(&self, scope: BusScope<'_>, sink: Arc<dyn BusSink>) -> Result<()> {
        self.inner.start(scope, sink).await
    }

    async fn publish(&self, message: &BusMessage) -> Result<()> {
        let count = self.published.fetch_add(1, Ordering::Relaxed) + 1;
        if count.is_multiple_of(self.nth) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        self.inner.publish(message).await
    }

    fn health(&self) -> BusHealth {
        self.inner.health()
    }

    fn authenticates(&self) -> bool {
        self.inner.authenticates()
    }
}
