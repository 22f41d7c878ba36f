//! Per-entry expiry: each entry lives exactly until its own absolute `expires_at`.

use std::time::{Duration, Instant};

/// A value that knows when it expires.
pub(crate) trait ExpiresAt {
    fn expires_at(&self) -> Instant;
}

impl ExpiresAt for tiercache_core::Entry {
    fn expires_at(&self) -> Instant {
        self.expires_at
    }
}

/// moka expiry policy that ends an entry at its `expires_at`. Reads leave the expiry alone, and an
/// update takes the new value's expiry, so an entry promoted from a lower tier keeps the
/// remaining life it had there instead of a fresh TTL.
pub(crate) struct UntilExpiresAt;

impl<V: ExpiresAt> moka::Expiry<String, V> for UntilExpiresAt {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &V,
        created_at: Instant,
    ) -> Option<Duration> {
        Some(value.expires_at().saturating_duration_since(created_at))
    }

    fn expire_after_update(
        &self,
        _key: &String,
        value: &V,
        updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.expires_at().saturating_duration_since(updated_at))
    }
}
