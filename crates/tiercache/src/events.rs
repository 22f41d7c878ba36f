//! [`Cache::events`](crate::Cache::events): what the cache does, as a bounded broadcast. Sending
//! never waits: a subscriber that falls more than [`EVENT_BUFFER`] events behind loses the
//! oldest ones, and counts them ([`Events::missed`]). With no subscriber nothing is built; the
//! cost on every path is one atomic load.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::sync::broadcast;

/// How many events a subscriber may fall behind before it loses the oldest.
pub const EVENT_BUFFER: usize = 1024;

/// Something the cache did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CacheEvent {
    /// A read found the key (in L1 or below, or a cached "not found").
    Hit {
        /// The key, as the caller named it.
        key: String,
    },
    /// A read found nothing for the key anywhere: `get` answered `None`, or a get-or-compute
    /// is about to run its loader.
    Miss {
        /// The key.
        key: String,
    },
    /// A loader returned a value (or "not found") for the key.
    Loaded {
        /// The key.
        key: String,
        /// How long the load took.
        took: Duration,
    },
    /// A loader failed, panicked or passed its hard timeout.
    LoadFailed {
        /// The key.
        key: String,
    },
    /// Fail-safe answered with a stale value because the load failed or timed out.
    StaleServed {
        /// The key.
        key: String,
    },
    /// A fill (a loaded or promoted value) was kept out of a tier because the key was
    /// invalidated while it was read or loaded.
    FillRejected {
        /// The key.
        key: String,
    },
    /// The bus may have lost messages: L1 is emptied.
    BusGap,
}

/// The sending side, owned by the engine.
#[derive(Debug)]
pub(crate) struct EventHub {
    sender: broadcast::Sender<CacheEvent>,
    subscribers: Arc<AtomicUsize>,
}

impl EventHub {
    pub(crate) fn new() -> Self {
        Self {
            sender: broadcast::Sender::new(EVENT_BUFFER),
            subscribers: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// A new subscriber, seeing what happens from now on.
    pub(crate) fn subscribe(&self) -> Events {
        self.subscribers.fetch_add(1, Ordering::Relaxed);
        Events {
            receiver: self.sender.subscribe(),
            subscribers: Arc::clone(&self.subscribers),
            missed: 0,
        }
    }

    /// Sends the event `make` builds, when anyone listens (it is not built otherwise).
    pub(crate) fn emit(&self, make: impl FnOnce() -> CacheEvent) {
        if self.subscribers.load(Ordering::Relaxed) == 0 {
            return;
        }
        // NOTE: an error means every receiver went away since the check: nobody to tell.
        let _sent = self.sender.send(make());
    }
}

/// A subscription to a cache's events ([`Cache::events`](crate::Cache::events)).
#[derive(Debug)]
pub struct Events {
    receiver: broadcast::Receiver<CacheEvent>,
    subscribers: Arc<AtomicUsize>,
    missed: u64,
}

impl Events {
    /// The next event; `None` once the cache (every clone of it) is dropped. When this
    /// subscriber fell more than [`EVENT_BUFFER`] events behind, the oldest were dropped: they
    /// are added to [`missed`](Self::missed) and the next event still kept is returned.
    pub async fn recv(&mut self) -> Option<CacheEvent> {
        loop {
            match self.receiver.recv().await {
                Ok(event) => return Some(event),
                Err(broadcast::error::RecvError::Lagged(dropped)) => {
                    self.missed = self.missed.saturating_add(dropped);
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// The next event if one is waiting, without waiting (lagging counted as in
    /// [`recv`](Self::recv)).
    pub fn try_recv(&mut self) -> Option<CacheEvent> {
        loop {
            match self.receiver.try_recv() {
                Ok(event) => return Some(event),
                Err(broadcast::error::TryRecvError::Lagged(dropped)) => {
                    self.missed = self.missed.saturating_add(dropped);
                }
                Err(_) => return None,
            }
        }
    }

    /// Events this subscriber lost because it fell behind.
    pub fn missed(&self) -> u64 {
        self.missed
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        self.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}
