//! A stored value with its absolute expiry.

use std::time::{Duration, Instant};

use bytes::Bytes;

/// What a [`Tier`](crate::Tier) stores: bytes and the instant they stop being valid.
///
/// The expiry is absolute so that moving an entry between tiers (promotion) can never extend its
/// life: a tier hands back the same `expires_at` it was given, minus nothing and plus nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The stored bytes, as the codec wrote them (header included).
    pub value: Bytes,
    /// When the entry expires. A tier never returns an entry past this instant.
    pub expires_at: Instant,
}

/// `at` plus `ttl` cut to [`MAX_TTL`](crate::MAX_TTL): never overflows the clock.
pub fn expiry_after(at: Instant, ttl: Duration) -> Instant {
    let ttl = crate::clamp_duration(ttl);
    at.checked_add(ttl).unwrap_or(at)
}

impl Entry {
    /// An entry that expires `ttl` from now (at most [`MAX_TTL`](crate::MAX_TTL)).
    pub fn new(value: impl Into<Bytes>, ttl: Duration) -> Self {
        Self {
            value: value.into(),
            expires_at: expiry_after(Instant::now(), ttl),
        }
    }

    /// An entry that expires at `expires_at`.
    pub fn expiring_at(value: impl Into<Bytes>, expires_at: Instant) -> Self {
        Self {
            value: value.into(),
            expires_at,
        }
    }

    /// Time left before expiry; zero once expired.
    pub fn remaining_ttl(&self) -> Duration {
        self.expires_at.saturating_duration_since(Instant::now())
    }

    /// Whether the entry has expired.
    pub fn is_expired(&self) -> bool {
        self.expires_at <= Instant::now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_ttl_counts_down_and_stops_at_zero() {
        let live = Entry::new(&b"v"[..], Duration::from_secs(60));
        assert!(live.remaining_ttl() > Duration::from_secs(59));
        assert!(!live.is_expired());

        let dead = Entry::expiring_at(&b"v"[..], Instant::now() - Duration::from_secs(1));
        assert_eq!(dead.remaining_ttl(), Duration::ZERO);
        assert!(dead.is_expired());
    }
}
