//! The engine: the cache's only sequencer. The handle makes one call into it; it calls the
//! components in order, and no component calls it back or names it:
//!
//! - [`Front`]: the typed L1 and the invalidation clock (every L1 insert is stamped);
//! - [`Stack`]: the tiers below L1, their layers, tags and promotion;
//! - [`load`](crate::load): flights, background loads and timed waits;
//! - [`Coherence`]: publishing what this instance changed, and what received events mean;
//! - [`policy`](crate::policy): the defaults and per-call policies, resolved once per call.
//!
//! The files here are the topics of one sequence each: reading (`read.rs`), loading one key
//! (`compute.rs`) or many (`compute_many.rs`), what a finished load stores or answers
//! (`fill.rs`), waiting for another instance's load (`fleet.rs`), loads that go on in the
//! background (`handoff.rs`), writing and invalidating
//! (`write.rs`), and applying what the bus delivers (`receive.rs`).

mod adaptive;
mod compute;
mod compute_many;
mod fill;
mod fleet;
mod handoff;
mod health;
mod read;
mod receive;
mod write;

use std::sync::Arc;

pub(crate) use adaptive::Adaptive;
pub(crate) use compute::Negatives;
pub(crate) use receive::Receiver;
use tiercache_core::{BusScope, CacheStats, Envelope, LoadCounters, Result};

use crate::{
    coherence::Coherence,
    common::StaleCopy,
    events::{EventHub, Events},
    front::{Front, Stamp},
    load::{BackgroundLoads, Flights},
    policy::Defaults,
    stack::Stack,
};

/// The state every clone of a [`Cache`](crate::Cache) shares, and the sequences over it.
#[derive(Debug)]
pub(crate) struct Engine<C> {
    front: Front,
    stack: Stack,
    flights: Flights<Stamp>,
    background: BackgroundLoads,
    coherence: Coherence,
    defaults: Defaults,
    envelope: Envelope<C>,
    counters: Arc<LoadCounters>,
    events: EventHub,
}

/// The parts an engine is made of, as the builder assembles them.
pub(crate) struct Parts<C> {
    pub(crate) front: Front,
    pub(crate) stack: Stack,
    pub(crate) coherence: Coherence,
    pub(crate) defaults: Defaults,
    pub(crate) envelope: Envelope<C>,
    pub(crate) counters: Arc<LoadCounters>,
    pub(crate) background_loads: usize,
}

/// A stale copy kept as a fail-safe fallback, with the stamp of the invalidation clock taken
/// before it was read: putting it back in L1 is refused if its key was invalidated since.
pub(crate) struct Fallback<T> {
    copy: StaleCopy<T>,
    stamp: Stamp,
    /// Whether the copy may be handed to a conditional refresh (`get_or_refresh`), as far as
    /// the shared tiers go: storing it again under the flight's leases must be refused after any
    /// write of the key since the copy was read. True when no lease is taken, or when the copy
    /// came from the last level the read leased (its lease was taken with the read of the copy,
    /// and none after it). The invalidation clock is checked when it is offered.
    offerable: bool,
}

impl<C: tiercache_core::Codec> Engine<C> {
    pub(crate) fn new(parts: Parts<C>) -> Self {
        Self {
            front: parts.front,
            stack: parts.stack,
            flights: Flights::default(),
            background: BackgroundLoads::new(parts.background_loads),
            coherence: parts.coherence,
            defaults: parts.defaults,
            envelope: parts.envelope,
            counters: parts.counters,
            events: EventHub::new(),
        }
    }

    /// Subscribes to the bus, when there is one: from then on, what other instances change
    /// reaches this engine through a weak handle (the bus never keeps a dropped cache alive).
    ///
    /// # Errors
    ///
    /// The bus's error when it cannot subscribe; [`Error::Config`](tiercache_core::Error) when
    /// the bus options set a shared key and the transport cannot authenticate messages.
    pub(crate) async fn start_bus(self: &Arc<Self>) -> Result<()> {
        let namespace = self.stack.namespace();
        let (Some(bus), Some(channel)) = (
            self.coherence.bus(),
            self.coherence.channel(namespace.name()),
        ) else {
            return Ok(());
        };
        let receiver = Arc::new(Receiver::new(Arc::downgrade(self)));
        let scope = BusScope::new(&channel, namespace.prefix());
        let scope = match self.coherence.key() {
            Some(_) if !bus.authenticates() => {
                return Err(tiercache_core::Error::Config(format!(
                    "bus {:?} cannot authenticate messages, but the bus options set a shared \
                     key: use a transport that can (Pub/Sub, stream), or drop the key",
                    bus.name()
                )));
            }
            Some(key) => scope.with_key(key),
            None => scope,
        };
        bus.start(scope, receiver).await
    }

    /// Counters of every tier, top-down, of the loader, and of the bus.
    pub(crate) fn stats(&self) -> CacheStats {
        CacheStats::new(self.front.stats(), self.stack.stats(), &self.counters)
            .with_bus(self.coherence.stats())
    }

    pub(crate) fn namespace(&self) -> &str {
        self.stack.namespace().name()
    }

    /// The names of L1 (if any), the tiers below it and the bus (if any), for `Debug`.
    pub(crate) fn describe(&self) -> (Option<&str>, Vec<&str>, Option<&str>) {
        (
            self.front.describe().map(|(name, _)| name),
            self.stack
                .levels()
                .iter()
                .map(|level| level.name())
                .collect(),
            self.coherence.bus().map(|bus| bus.name()),
        )
    }

    pub(crate) fn l1_max_age(&self) -> Option<std::time::Duration> {
        self.front.max_age()
    }

    /// A new subscription to this cache's events.
    pub(crate) fn events(&self) -> Events {
        self.events.subscribe()
    }

    pub(crate) fn loads_in_flight(&self) -> usize {
        self.flights.len()
    }

    pub(crate) fn background_loads(&self) -> usize {
        self.background.running()
    }

    /// Publishes the stats through the `metrics` facade every `interval` until the cache is
    /// dropped.
    #[cfg(feature = "metrics")]
    pub(crate) fn publish_metrics_every(self: &Arc<Self>, interval: std::time::Duration) {
        let engine = Arc::downgrade(self);
        let interval = interval.max(std::time::Duration::from_millis(1));
        self.background.spawn_service(async move {
            let mut ticker = tokio::time::interval(interval);
            loop {
                ticker.tick().await;
                let Some(engine) = engine.upgrade() else {
                    return;
                };
                crate::metrics::record(&engine.stats(), engine.namespace());
            }
        });
    }
}
