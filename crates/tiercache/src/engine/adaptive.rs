//! What a loader tells its flight besides the value, and what the flight hands the loader:
//! the entry options to store the value with (`get_or_compute_with`, adaptive caching) and the
//! copy the cache still holds (`get_or_refresh`, conditional refresh). Each flight that needs
//! one has its own; the loader's wrapper writes it, the flight reads it when it fills.

use std::sync::{Arc, OnceLock};

use tiercache_core::EntryOptions;

/// One flight's exchange with its loader.
pub(crate) struct Adaptive<T> {
    /// The options the loader chose for its value; the call's options when it chose none.
    options: OnceLock<EntryOptions>,
    /// The value the cache holds for the key (a stale copy kept by fail-safe, or, in an eager
    /// refresh, the still-fresh one), offered before the loader starts.
    current: OnceLock<Arc<T>>,
}

impl<T> Adaptive<T> {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            options: OnceLock::new(),
            current: OnceLock::new(),
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

    /// Offers the loader the value the cache holds (before the loader starts).
    pub(crate) fn offer(&self, value: &Arc<T>) {
        let _first = self.current.set(Arc::clone(value));
    }

    /// What was offered, if anything.
    pub(crate) fn current(&self) -> Option<Arc<T>> {
        self.current.get().cloned()
    }
}
