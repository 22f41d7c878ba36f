//! The leases one load holds on the shared levels of the stack: taken by the read before the
//! loader runs, used by the fill (or a promotion) after it, and given back when dropped unused,
//! so another instance need not wait for them to expire.

use std::{sync::Arc, time::Duration};

use tiercache_core::{Lease, Tier};

/// One lease on one level.
struct Held {
    /// The tier itself, without its layers: a release is not a call a breaker should count.
    tier: Arc<dyn Tier>,
    stored: String,
    lease: Lease,
    /// Taken on an absent key (so exclusive, and worth releasing), not on a value.
    granted: bool,
}

/// The leases of one load, one slot per level of the stack. Only the stack makes and uses them.
#[derive(Default)]
pub(crate) struct Leases {
    /// Empty when leases are not used (off): then fills and promotions store as they did
    /// without them.
    slots: Vec<Option<Held>>,
    in_use: bool,
    /// The longest time left on a lease another filler holds on a level this read asked.
    held_by_other: Option<Duration>,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases")
            .field(
                "held",
                &self.slots.iter().filter(|slot| slot.is_some()).count(),
            )
            .field("held_by_other", &self.held_by_other)
            .finish()
    }
}

impl Leases {
    /// The leases of a load that uses them; none taken yet. Allocates nothing until a lease is
    /// taken: a plain read below L1 makes one of these on every call.
    pub(super) fn in_use_empty() -> Self {
        Self {
            slots: Vec::new(),
            in_use: true,
            held_by_other: None,
        }
    }

    /// Whether this load uses leases: then a shared level that supports them is written only
    /// under one of them.
    pub(crate) fn in_use(&self) -> bool {
        self.in_use
    }

    pub(super) fn put(
        &mut self,
        index: usize,
        tier: Arc<dyn Tier>,
        stored: &str,
        lease: Lease,
        granted: bool,
    ) {
        if self.slots.len() <= index {
            self.slots.resize_with(index + 1, || None);
        }
        self.slots[index] = Some(Held {
            tier,
            stored: stored.to_owned(),
            lease,
            granted,
        });
    }

    /// Notes that another filler holds the lease of a level for `left`.
    pub(super) fn held_elsewhere(&mut self, left: Duration) {
        self.held_by_other = Some(self.held_by_other.map_or(left, |other| other.max(left)));
    }

    /// How long another filler's lease has left, when one was met: this load should wait for
    /// that filler's value instead of loading.
    pub(crate) fn held_by_other(&self) -> Option<Duration> {
        self.held_by_other
    }

    /// The lease on level `index`, for a fill. It stays here until [`used`](Self::used) says
    /// the tier answered: a fill that failed or never ran leaves it to be released on drop.
    pub(super) fn lease(&self, index: usize) -> Option<Lease> {
        self.slots
            .get(index)
            .and_then(Option::as_ref)
            .map(|held| held.lease.clone())
    }

    /// The lease on level `index` was used up by a fill the tier answered (stored or refused).
    pub(super) fn used(&mut self, index: usize) {
        if let Some(slot) = self.slots.get_mut(index) {
            *slot = None;
        }
    }

    /// Whether level `index` has a lease in this load.
    pub(super) fn has(&self, index: usize) -> bool {
        self.slots.get(index).is_some_and(Option::is_some)
    }
}

impl Drop for Leases {
    fn drop(&mut self) {
        if self.slots.is_empty() {
            // Every read that took no lease (leases off, or no level to lease) ends here.
            return;
        }
        let unused: Vec<Held> = self
            .slots
            .iter_mut()
            .filter_map(Option::take)
            .filter(|held| held.granted)
            .collect();
        if unused.is_empty() {
            return;
        }
        // NOTE: a lease left behind would make other instances wait until it expires; giving it
        // back is one round trip, done off the caller's path. Without a runtime it simply
        // expires.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            for held in unused {
                if let Err(err) = held.tier.release(&held.stored, &held.lease).await {
                    tracing::debug!(
                        tier = held.tier.name(),
                        key = held.stored,
                        ?err,
                        "could not release a lease; it expires by itself"
                    );
                }
            }
        });
    }
}
