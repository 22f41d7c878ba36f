//! What a loader tells its flight besides the value, and what the flight hands the loader:
//! the entry options to store the value with (`get_or_compute_with`, adaptive caching) and the
//! copy the cache still holds (`get_or_refresh`, conditional refresh). Each call that needs one
//! has its own; the loader's wrapper writes the options, the flight reads them when it fills.
//!
//! A held copy is handed to the loader only when storing it again cannot undo a write or an
//! invalidation: the flight *considers* copies as it reads them (an L1 copy only when no shared
//! level is leased, a copy from below only when no lease was taken after it was read), drops
//! them all when it takes new leases (`withdraw`), and right before the loader starts *offers*
//! the first whose stamp is still current (no invalidation of the key since it was read).

use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use tiercache_core::EntryOptions;

use crate::{common::StaleCopy, front::Stamp};

/// A copy the cache holds for the key, with its tags and the stamp taken before it was read.
struct Held<T> {
    value: Arc<T>,
    tags: Option<Arc<[String]>>,
    read_at: Stamp,
}

/// One call's exchange with its loader.
pub(crate) struct Adaptive<T> {
    /// The options the loader chose for its value; the call's options when it chose none.
    options: OnceLock<EntryOptions>,
    /// Copies the flight read that may be offered, in the order read.
    candidates: Mutex<Vec<Held<T>>>,
    /// The copy offered to the loader, once the flight offered one.
    offered: OnceLock<Held<T>>,
}

impl<T> Adaptive<T> {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            options: OnceLock::new(),
            candidates: Mutex::new(Vec::new()),
            offered: OnceLock::new(),
        })
    }

    /// The loader's choice of options for the value it returns.
    pub(crate) fn store_with(&self, options: EntryOptions) {
        // A flight runs its loader once; a second choice cannot happen.
        let _first = self.options.set(options);
    }

    pub(crate) fn options(&self) -> Option<&EntryOptions> {
        self.options.get()
    }

    fn candidates(&self) -> std::sync::MutexGuard<'_, Vec<Held<T>>> {
        self.candidates
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A copy the flight read under `read_at` that may be offered (the caller checked the
    /// leases' side).
    pub(crate) fn consider(&self, copy: &StaleCopy<T>, read_at: Stamp) {
        self.candidates().push(Held {
            value: Arc::clone(&copy.value),
            tags: copy.tags.clone(),
            read_at,
        });
    }

    /// Forgets every copy considered so far: the flight took leases after reading them.
    pub(crate) fn withdraw(&self) {
        self.candidates().clear();
    }

    /// Before the loader starts: offers it the first copy whose stamp `is_current` still
    /// accepts.
    pub(crate) fn offer(&self, is_current: impl Fn(Stamp) -> bool) {
        let mut candidates = self.candidates();
        if let Some(at) = candidates.iter().position(|held| is_current(held.read_at)) {
            let held = candidates.swap_remove(at);
            // A flight offers once; a second offer cannot happen.
            let _first = self.offered.set(held);
        }
        candidates.clear();
    }

    /// The copy offered to the loader, if any.
    pub(crate) fn current(&self) -> Option<Arc<T>> {
        self.offered.get().map(|held| Arc::clone(&held.value))
    }

    /// The tags the offered copy was stored with.
    pub(crate) fn current_tags(&self) -> Vec<String> {
        self.offered
            .get()
            .and_then(|held| held.tags.as_deref())
            .map(<[String]>::to_vec)
            .unwrap_or_default()
    }
}
