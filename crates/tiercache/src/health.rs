//! What [`Cache::health`](crate::Cache::health) reports: one line per part (L1, each tier, the
//! bus), each probed or read when asked.

use std::time::Duration;

use tiercache_core::CircuitState;

/// How long a tier's health probe may take before the tier is reported down.
pub const HEALTH_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// What kind of part a [`PartHealth`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PartKind {
    /// The typed in-process L1.
    Memory,
    /// A tier below L1 (L2, L3, ...).
    Tier,
    /// The invalidation bus.
    Bus,
}

/// One part's state, from best to worst (so the worst of several is their `max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PartStatus {
    /// Working.
    Up,
    /// Working, but not as configured: a tier that answers while its circuit breaker is still
    /// open or probing, or a bus that has lost messages recently (the cache emptied L1 for it).
    Degraded,
    /// Not working: a tier that failed or did not answer its probe within
    /// [`HEALTH_PROBE_TIMEOUT`], or a bus that is not connected. The cache goes on without it
    /// (reads fall through to the next tier and the loader; see the README's failure table).
    Down,
}

/// The state of one part of the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartHealth {
    /// `memory`, the tier's name, or the bus transport's name.
    pub name: String,
    /// What the part is.
    pub kind: PartKind,
    /// Its state.
    pub status: PartStatus,
    /// How long the probe took (tiers only).
    pub latency: Option<Duration>,
    /// The tier's circuit breaker (tiers only).
    pub circuit: Option<CircuitState>,
    /// Why the status is what it is, in words (empty when up).
    pub detail: String,
}

/// The health of every part of a cache, top-down, then the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Health {
    /// One entry per part.
    pub parts: Vec<PartHealth>,
}

impl Health {
    /// The worst status of any part ([`PartStatus::Up`] for a cache with no parts).
    pub fn status(&self) -> PartStatus {
        self.parts
            .iter()
            .map(|part| part.status)
            .max()
            .unwrap_or(PartStatus::Up)
    }

    /// Whether every part is up.
    pub fn is_up(&self) -> bool {
        self.status() == PartStatus::Up
    }

    /// The part named `name`.
    pub fn part(&self, name: &str) -> Option<&PartHealth> {
        self.parts.iter().find(|part| part.name == name)
    }
}
