//! Per-tier options given to the builder.

use crate::{CircuitBreaker, Promotion};

/// How the cache treats one tier: its TTL scale, when hits below it are copied into it, and its
/// circuit breaker.
///
/// ```
/// use tiercache::TierOptions;
/// let l2 = TierOptions::new().ttl_scale(0.5).promote(false);
/// assert_eq!(l2.ttl_scale_value(), 0.5);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct TierOptions {
    ttl_scale: f64,
    promotion: Promotion,
    circuit_breaker: Option<CircuitBreaker>,
}

impl Default for TierOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl TierOptions {
    /// Scale 1.0, promotion on, the default circuit breaker.
    pub fn new() -> Self {
        Self {
            ttl_scale: 1.0,
            promotion: Promotion::Always,
            circuit_breaker: Some(CircuitBreaker::default()),
        }
    }

    /// Multiplies every TTL written to this tier (a set's TTL, or the remaining TTL of a promoted
    /// entry relative to the tier it came from). Tiers must not outlive the tiers below them: the
    /// builder rejects a scale larger than a lower tier's. Default: 1.0.
    #[must_use]
    pub fn ttl_scale(mut self, scale: f64) -> Self {
        self.ttl_scale = scale;
        self
    }

    /// Whether a hit in a lower tier is copied into this tier: `true` is [`Promotion::Always`],
    /// `false` is [`Promotion::Never`]. Default: true.
    #[must_use]
    pub fn promote(mut self, promote: bool) -> Self {
        self.promotion = if promote {
            Promotion::Always
        } else {
            Promotion::Never
        };
        self
    }

    /// When a hit in a lower tier is copied into this tier. Default: [`Promotion::Always`].
    #[must_use]
    pub fn promotion(mut self, promotion: Promotion) -> Self {
        self.promotion = promotion;
        self
    }

    /// The promotion policy.
    pub fn promotion_value(&self) -> Promotion {
        self.promotion
    }

    /// When a tier below L1 is skipped after repeated failures (`None`: never). A skipped tier
    /// reads as a miss, and a write or invalidation that skips it returns
    /// [`Error::Unavailable`](crate::Error::Unavailable). Default: [`CircuitBreaker::default`]
    /// (5 consecutive failures, 5 s cool-down).
    #[must_use]
    pub fn circuit_breaker(mut self, breaker: Option<CircuitBreaker>) -> Self {
        self.circuit_breaker = breaker;
        self
    }

    /// The circuit breaker settings, if any.
    pub fn circuit_breaker_value(&self) -> Option<CircuitBreaker> {
        self.circuit_breaker
    }

    /// The TTL scale.
    pub fn ttl_scale_value(&self) -> f64 {
        self.ttl_scale
    }

    /// Whether any promotion into this tier can happen (the policy is not
    /// [`Promotion::Never`]).
    pub fn promotes(&self) -> bool {
        !matches!(self.promotion, Promotion::Never | Promotion::OneIn(0))
    }
}
