//! Plain types that pass between the components: what a read found, a stale copy kept as a
//! fail-safe fallback, and what an invalidation covers.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Instant,
};

/// What a read found for a key, as a `T`.
pub(crate) enum Lookup<T> {
    /// A live value of type `T`.
    Hit(Arc<T>),
    /// A live cached "not found".
    Negative,
    /// Nothing usable (absent, expired, unreadable, or a value of another type).
    Miss,
}

impl<T> Lookup<T> {
    /// A hit for a value, a negative hit for a cached "not found" (`None`).
    pub(crate) fn found(value: Option<Arc<T>>) -> Self {
        value.map_or(Self::Negative, Self::Hit)
    }

    /// The value, when there is one.
    pub(crate) fn into_value(self) -> Option<Arc<T>> {
        match self {
            Self::Hit(value) => Some(value),
            Self::Negative | Self::Miss => None,
        }
    }
}

/// A value past its fresh life but inside its stale window: what fail-safe answers with when a
/// load fails.
#[derive(Debug)]
pub(crate) struct StaleCopy<T> {
    pub(crate) value: Arc<T>,
    /// The end of its stale window.
    pub(crate) keep_until: Instant,
    pub(crate) tags: Option<Arc<[String]>>,
}

/// What an invalidation covers.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Scope<'a> {
    /// One key.
    Key(&'a str),
    /// Every key that starts with the text.
    Prefix(&'a str),
    /// Every entry with the tag, invalidated at the given wall-clock time (ms since the epoch).
    Tag(&'a str, u64),
    /// Everything of this cache.
    All,
}

/// Leave for one fill to store, from the invalidation clock (`front/clock.rs`): while it is
/// held, invalidations of the fill's key wait before they remove anything. Dropping it (after
/// the store, or when the fill's future is dropped) ends the store.
#[derive(Debug)]
#[must_use = "the store must happen while the pass is held"]
pub(crate) struct FillPass<'a> {
    storing: &'a AtomicU32,
}

impl<'a> FillPass<'a> {
    /// A pass for a fill already counted in `storing`.
    pub(crate) fn counted(storing: &'a AtomicU32) -> Self {
        Self { storing }
    }
}

impl Drop for FillPass<'_> {
    fn drop(&mut self) {
        self.storing.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How a fill asks to store: a pass while no invalidation of its key came since it stamped the
/// clock, `None` once one did. Asked before each store, and again after it: a store made while
/// an invalidation came is undone.
pub(crate) type FillGate<'a> = &'a (dyn Fn() -> Option<FillPass<'a>> + Sync);
