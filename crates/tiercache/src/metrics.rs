//! The `metrics` feature: the cache's stats published through the `metrics` crate facade, to
//! whatever recorder the application installed (Prometheus, StatsD, ...).
//!
//! Every counter of [`CacheStats`] becomes a `metrics` counter set to its absolute value, labelled
//! `cache` (the namespace) and, per tier, `tier`. The bus's propagation lag is also recorded as
//! a histogram, per message, as it is measured. Nothing is recorded on the hit path.

use std::time::Duration;

use tiercache_core::{CacheStats, TierStats};

/// Publishes `stats` for the cache named `cache`.
pub(crate) fn record(stats: &CacheStats, cache: &str) {
    let counter = |name: &'static str, value: u64| {
        metrics::counter!(name, "cache" => cache.to_owned()).absolute(value);
    };
    counter("tiercache_loads_total", stats.loads);
    counter("tiercache_load_errors_total", stats.load_errors);
    counter("tiercache_coalesced_total", stats.coalesced);
    counter("tiercache_negative_hits_total", stats.negative_hits);
    counter("tiercache_fills_rejected_total", stats.fills_rejected);
    counter("tiercache_fills_revoked_total", stats.fills_revoked);
    counter("tiercache_lease_waits_total", stats.lease_waits);
    counter("tiercache_lease_takeovers_total", stats.lease_takeovers);
    counter("tiercache_stale_served_total", stats.stale_served);
    counter("tiercache_soft_timeouts_total", stats.soft_timeouts);
    counter("tiercache_hard_timeouts_total", stats.hard_timeouts);
    counter("tiercache_eager_refreshes_total", stats.eager_refreshes);
    counter("tiercache_background_loads_total", stats.background_loads);
    counter(
        "tiercache_background_refused_total",
        stats.background_refused,
    );
    counter("tiercache_tag_rejected_total", stats.tag_rejected);
    counter("tiercache_tag_times_evicted_total", stats.tag_times_evicted);
    for tier in stats.memory.iter().chain(&stats.tiers) {
        record_tier(tier, cache);
    }
    if let Some(bus) = &stats.bus {
        counter("tiercache_bus_published_total", bus.published);
        counter("tiercache_bus_publish_errors_total", bus.publish_errors);
        counter("tiercache_bus_received_total", bus.received);
        counter("tiercache_bus_bad_messages_total", bus.bad_messages);
        counter("tiercache_bus_gaps_total", bus.gaps);
        counter("tiercache_bus_l1_flushes_total", bus.l1_flushes);
        counter("tiercache_bus_reconnects_total", bus.reconnects);
        let connected = if bus.connected { 1.0 } else { 0.0 };
        metrics::gauge!("tiercache_bus_connected", "cache" => cache.to_owned()).set(connected);
        metrics::gauge!("tiercache_bus_propagation_lag_max_seconds", "cache" => cache.to_owned())
            .set(bus.lag_max.as_secs_f64());
    }
}

fn record_tier(tier: &TierStats, cache: &str) {
    let counter = |name: &'static str, value: u64| {
        metrics::counter!(name, "cache" => cache.to_owned(), "tier" => tier.name.clone())
            .absolute(value);
    };
    counter("tiercache_tier_hits_total", tier.hits);
    counter("tiercache_tier_misses_total", tier.misses);
    counter("tiercache_tier_promotions_total", tier.promotions);
    counter("tiercache_tier_writes_total", tier.writes);
    counter("tiercache_tier_errors_total", tier.errors);
    counter("tiercache_tier_decode_errors_total", tier.decode_errors);
    counter("tiercache_tier_skipped_total", tier.skipped);
    counter("tiercache_tier_circuit_opens_total", tier.circuit_opens);
}

/// Records one message's propagation lag in the histogram
/// `tiercache_bus_propagation_lag_seconds`.
pub(crate) fn record_propagation_lag(cache: &str, lag: Duration) {
    metrics::histogram!("tiercache_bus_propagation_lag_seconds", "cache" => cache.to_owned())
        .record(lag.as_secs_f64());
}
