//! Leases: how a fill after a load avoids overwriting a newer write in a shared tier.
//!
//! A loader reads the source of truth *before* it fills the cache. If another instance writes
//! (or invalidates) the key in between, a plain store of the loaded value would put the older
//! value back over the newer one, and every instance would serve it for its whole TTL (the "stale
//! set" of memcache; Nishtala et al., NSDI 2013, §3.2.1). So a filler first takes a [`Lease`] on
//! the key ([`Tier::lease`](crate::Tier::lease)), *then* runs the loader, and stores with
//! [`Tier::fill`](crate::Tier::fill), which stores only while the lease is valid. Every write
//! and removal of the key revokes it. A lease on an absent key is also exclusive for its TTL:
//! another filler that asks is told the lease is [held](LeaseRead::Held), and waits for the
//! holder's value instead of loading too.

use std::time::Duration;

use bytes::Bytes;

use crate::Entry;

/// A lease on one key, as a tier gave it out. The token's meaning is the tier's: a tier makes
/// one with [`Lease::new`] and reads it back with [`Lease::token`]; the cache only hands it
/// back to the tier that made it.
#[derive(Clone, PartialEq, Eq)]
pub struct Lease {
    token: Bytes,
}

impl Lease {
    /// A lease carrying `token`, the tier's own proof of what it granted.
    pub fn new(token: impl Into<Bytes>) -> Self {
        Self {
            token: token.into(),
        }
    }

    /// A lease that proves nothing: what a tier without lease support hands out. A fill with it
    /// is a plain store.
    pub fn unguarded() -> Self {
        Self {
            token: Bytes::new(),
        }
    }

    /// The token the tier put in.
    pub fn token(&self) -> &Bytes {
        &self.token
    }

    /// Whether this is the [unguarded](Self::unguarded) lease.
    pub fn is_unguarded(&self) -> bool {
        self.token.is_empty()
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is an opaque nonce: its length says enough in logs.
        f.debug_struct("Lease")
            .field("token_len", &self.token.len())
            .finish()
    }
}

/// What [`Tier::lease`](crate::Tier::lease) found.
#[derive(Debug, Clone)]
pub enum LeaseRead {
    /// The key holds an entry (fresh, stale or unreadable: the cache decides). The lease lets a
    /// fill replace exactly this entry: a write or removal of the key after this read revokes it.
    Found(Entry, Lease),
    /// The key was absent, and this caller now holds the lease: no other filler gets one until
    /// it expires, is released, or is revoked by a write or removal of the key.
    Granted(Lease),
    /// Another filler holds the lease, for about this much longer.
    Held(Duration),
}

/// What [`Tier::fill`](crate::Tier::fill) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filled {
    /// The lease was valid: the entry is stored.
    Stored,
    /// The lease was revoked (a write or removal of the key came after it) or expired: nothing
    /// was stored.
    Revoked,
}
