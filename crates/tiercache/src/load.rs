//! get-or-compute below L1: coalesce by key, read the lower tiers, run the loader once, fill.

use std::{any::Any, future::Future, panic::AssertUnwindSafe, sync::Arc};

use futures_util::FutureExt;
use serde::{Serialize, de::DeserializeOwned};
use tiercache_core::{Codec, EntryOptions, Error, Result, validate_key};

use crate::{
    cache::Inner,
    flight::{Join, Leader, Outcome},
    memory::Lookup,
};

/// Whether a cached "not found" answers the call (the optional form) or is loaded over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Negatives {
    Answer,
    LoadOver,
}

impl<C: Codec> Inner<C> {
    /// The part of get-or-compute after an L1 miss. At most one caller per key runs the lower-tier
    /// reads and the loader; the others wait for its outcome.
    pub(crate) async fn compute<T, F, Fut, E>(
        &self,
        key: &str,
        options: EntryOptions,
        negatives: Negatives,
        loader: F,
    ) -> Result<Option<Arc<T>>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<Option<T>, E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        validate_key(key)?;
        let mut counted = false;
        loop {
            let waiter = match self.flights.join(key).await {
                Join::Lead(leader) => {
                    return self
                        .load(Some(leader), key, &options, negatives, loader)
                        .await;
                }
                Join::Wait(waiter) => waiter,
            };
            if !counted {
                self.loads.coalesced();
                counted = true;
            }
            let value = match waiter.outcome().await {
                // The leader was cancelled or unwound without an outcome: join again.
                None => continue,
                Some(Err(err)) => return Err(err),
                Some(Ok(value)) => value,
            };
            match value.map(<Arc<dyn Any + Send + Sync>>::downcast::<T>) {
                Some(Ok(value)) => return Ok(Some(value)),
                None if negatives == Negatives::Answer => return Ok(None),
                // The leader loaded another type under this key, or a "not found" this caller
                // does not accept: load for this caller alone.
                Some(Err(_)) | None => {
                    return self.load(None, key, &options, negatives, loader).await;
                }
            }
        }
    }

    /// Runs one load: a second look at L1, the lower tiers, then the loader; fills the tiers and
    /// hands the outcome to the leader's waiters.
    async fn load<T, F, Fut, E>(
        &self,
        leader: Option<Leader<'_>>,
        key: &str,
        options: &EntryOptions,
        negatives: Negatives,
        loader: F,
    ) -> Result<Option<Arc<T>>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<Option<T>, E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let finish = |leader: Option<Leader<'_>>, outcome: Outcome| {
            if let Some(leader) = leader {
                leader.finish(outcome);
            }
        };
        let stamp = self.clock.stamp(key);

        // A previous leader may have filled L1 between this caller's miss and its join.
        let decode = |bytes: &tiercache_core::Bytes| self.envelope.decode::<T>(bytes);
        let cached = match self.peek_memory::<T, _>(key, decode).await {
            Lookup::Miss => self.read_below(key, stamp, decode).await,
            found => found,
        };
        match cached {
            Lookup::Hit(value) => {
                finish(leader, Ok(Some(value.clone())));
                return Ok(Some(value));
            }
            Lookup::Negative if negatives == Negatives::Answer => {
                self.loads.negative_hit();
                finish(leader, Ok(None));
                return Ok(None);
            }
            Lookup::Negative | Lookup::Miss => {}
        }

        self.loads.load();
        let loaded = match AssertUnwindSafe(loader()).catch_unwind().await {
            Ok(Ok(loaded)) => loaded.map(Arc::new),
            Ok(Err(source)) => {
                self.loads.load_error();
                let err = Error::loader(key, source);
                tracing::debug!(key, %err, "loader failed; nothing cached");
                finish(leader, Err(err.clone()));
                return Err(err);
            }
            Err(panic) => {
                self.loads.load_error();
                tracing::warn!(
                    key,
                    "loader panicked; waiters get an error, the panic goes on"
                );
                finish(
                    leader,
                    Err(Error::LoaderPanicked {
                        key: key.to_owned(),
                    }),
                );
                std::panic::resume_unwind(panic);
            }
        };
        if let Err(err) = self.fill(key, loaded.clone(), options, stamp).await {
            finish(leader, Err(err.clone()));
            return Err(err);
        }
        finish(
            leader,
            Ok(loaded
                .clone()
                .map(|value| value as Arc<dyn Any + Send + Sync>)),
        );
        Ok(loaded)
    }
}
