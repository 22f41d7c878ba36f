//! Loads that outlive the call that started them: eager refreshes, and loads that passed their
//! soft timeout. They are bounded (a caller that finds no room loads inline or not at all) and
//! they die with the cache: the set of tasks is owned by the cache's shared state, and dropping
//! it aborts every task still running. Tasks reach the cache through a weak handle, so a task
//! never keeps a dropped cache alive.

use std::{
    future::Future,
    sync::{Arc, Mutex, PoisonError},
};

use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    task::JoinSet,
};

/// The default bound on loads running in the background at once.
pub const DEFAULT_BACKGROUND_LOADS: usize = 64;

/// The cache's background loads.
#[derive(Debug)]
pub(crate) struct BackgroundLoads {
    tasks: Mutex<JoinSet<()>>,
    slots: Arc<Semaphore>,
    limit: usize,
}

/// Room for one background load, taken before the work is handed over.
pub(crate) struct BackgroundPermit {
    /// Held, not read: dropping it frees the room.
    _permit: OwnedSemaphorePermit,
}

impl BackgroundLoads {
    pub(crate) fn new(limit: usize) -> Self {
        // More permits than a semaphore can count would panic; that many is "no limit" anyway.
        let limit = limit.min(Semaphore::MAX_PERMITS);
        Self {
            tasks: Mutex::new(JoinSet::new()),
            slots: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }

    /// Room for one more background load, or `None` when the limit is reached or there is no
    /// Tokio runtime to run it on.
    pub(crate) fn reserve(&self) -> Option<BackgroundPermit> {
        tokio::runtime::Handle::try_current().ok()?;
        Arc::clone(&self.slots)
            .try_acquire_owned()
            .ok()
            .map(|permit| BackgroundPermit { _permit: permit })
    }

    /// Runs `work` in the background, holding `permit` until it ends.
    pub(crate) fn spawn(
        &self,
        permit: BackgroundPermit,
        work: impl Future<Output = ()> + Send + 'static,
    ) {
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        // Reap finished tasks, so the set holds only running ones.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(async move {
            work.await;
            drop(permit);
        });
    }

    /// Runs a service of the cache (not a load: it takes no slot) until the cache is dropped.
    #[cfg(feature = "metrics")]
    pub(crate) fn spawn_service(&self, work: impl Future<Output = ()> + Send + 'static) {
        if tokio::runtime::Handle::try_current().is_err() {
            tracing::warn!("no Tokio runtime: the cache's background service does not run");
            return;
        }
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        tasks.spawn(work);
    }

    /// Background loads running now.
    pub(crate) fn running(&self) -> usize {
        self.limit - self.slots.available_permits()
    }
}
