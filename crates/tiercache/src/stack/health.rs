//! The tiers' part of [`Cache::health`](crate::Cache::health): each tier probed with one read of
//! a reserved key, straight to the tier (a probe is neither a hit nor a miss in the stats, and a
//! breaker that is open does not stop it: the point is to see whether the tier answers).

use std::time::Instant;

use tiercache_core::CircuitState;

use super::{Level, Stack};
use crate::health::{HEALTH_PROBE_TIMEOUT, PartHealth, PartKind, PartStatus};

impl Stack {
    /// Every tier's health, top-down, probed concurrently.
    pub(crate) async fn health(&self) -> Vec<PartHealth> {
        let probe_key = self.namespace().reserved("health");
        let probes = self.levels().iter().map(|level| probe(level, &probe_key));
        futures_util::future::join_all(probes).await
    }
}

async fn probe(level: &Level, probe_key: &str) -> PartHealth {
    let circuit = level.stats().circuit;
    let tier = level.raw();
    let started = Instant::now();
    let answer = tokio::time::timeout(HEALTH_PROBE_TIMEOUT, tier.get(probe_key)).await;
    let latency = started.elapsed();
    let (status, detail) = match answer {
        Err(_) => (
            PartStatus::Down,
            format!("no answer within {HEALTH_PROBE_TIMEOUT:?}"),
        ),
        Ok(Err(err)) => (PartStatus::Down, err.to_string()),
        Ok(Ok(_)) if circuit != CircuitState::Closed => (
            PartStatus::Degraded,
            format!("answers, but its circuit breaker is {circuit:?}"),
        ),
        Ok(Ok(_)) => (PartStatus::Up, String::new()),
    };
    PartHealth {
        name: level.name().to_owned(),
        kind: PartKind::Tier,
        status,
        latency: Some(latency),
        circuit: Some(circuit),
        detail,
    }
}
