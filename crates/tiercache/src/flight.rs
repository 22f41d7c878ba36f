//! Stampede protection: at most one load per key per process, its result shared with every
//! caller that asked for the key meanwhile.
//!
//! The first caller for a key becomes the leader and registers a watch channel; later callers
//! wait on it. The leader's [`Leader`] guard removes the registration when it is dropped — after
//! success, error, a panic unwinding through it, or cancellation of the leader's future — so no
//! key stays stuck. A waiter whose leader went away without a result joins again, and one of them
//! becomes the next leader.

use std::{any::Any, sync::Arc};

use scc::hash_map::Entry as MapEntry;
use tiercache_core::Error;
use tokio::sync::watch;

/// What a finished load hands to its waiters: the value (type-erased, since waiters name the
/// type), `None` for "the source has nothing", or the error every waiter receives.
pub(crate) type Outcome = Result<Option<Arc<dyn Any + Send + Sync>>, Error>;

type Slot = watch::Receiver<Option<Outcome>>;

/// The loads in flight, by key. Shared, so a leader can move into a background task.
#[derive(Debug, Default)]
pub(crate) struct Flights {
    in_flight: Arc<scc::HashMap<String, Slot>>,
}

/// A caller's part in a load: lead it, or wait for it.
pub(crate) enum Join {
    Lead(Leader),
    Wait(Waiter),
}

impl Flights {
    /// Joins the load of `key`, starting it if none is in flight.
    pub(crate) async fn join(&self, key: &str) -> Join {
        match self.in_flight.entry_async(key.to_owned()).await {
            MapEntry::Occupied(entry) => Join::Wait(Waiter(entry.get().clone())),
            MapEntry::Vacant(entry) => {
                let (sender, receiver) = watch::channel(None);
                entry.insert_entry(receiver.clone());
                Join::Lead(Leader {
                    in_flight: Arc::clone(&self.in_flight),
                    key: key.to_owned(),
                    sender,
                    registered: receiver,
                })
            }
        }
    }

    /// Loads in flight now.
    pub(crate) fn len(&self) -> usize {
        self.in_flight.len()
    }
}

/// The caller that runs the load (or the background task it handed the load to). Dropping it
/// ends the flight.
pub(crate) struct Leader {
    in_flight: Arc<scc::HashMap<String, Slot>>,
    key: String,
    sender: watch::Sender<Option<Outcome>>,
    registered: Slot,
}

impl Leader {
    /// Hands `outcome` to every waiter and ends the flight.
    pub(crate) fn finish(self, outcome: Outcome) {
        self.sender.send_replace(Some(outcome));
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        // Remove only our own registration: a later flight for the same key may already exist.
        let registered = &self.registered;
        self.in_flight
            .remove_if_sync(&self.key, |slot| slot.same_channel(registered));
    }
}

/// A caller waiting for another caller's load.
pub(crate) struct Waiter(Slot);

impl Waiter {
    /// The leader's outcome, or `None` if the leader went away without one (cancelled, or
    /// dropped while unwinding), in which case the caller should join again.
    pub(crate) async fn outcome(mut self) -> Option<Outcome> {
        match self.0.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.clone(),
            Err(_closed) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_get_the_leaders_outcome_and_the_flight_ends() {
        let flights = Flights::default();
        let Join::Lead(leader) = flights.join("k").await else {
            panic!("first caller must lead");
        };
        let Join::Wait(waiter) = flights.join("k").await else {
            panic!("second caller must wait");
        };
        leader.finish(Ok(Some(Arc::new(5u8))));
        let outcome = waiter.outcome().await;
        let value = outcome
            .and_then(Result::ok)
            .flatten()
            .and_then(|v| v.downcast::<u8>().ok());
        assert_eq!(value.as_deref(), Some(&5));
        assert_eq!(flights.len(), 0);
    }

    #[tokio::test]
    async fn a_dropped_leader_releases_waiters_and_the_key() {
        let flights = Flights::default();
        let Join::Lead(leader) = flights.join("k").await else {
            panic!("first caller must lead");
        };
        let Join::Wait(waiter) = flights.join("k").await else {
            panic!("second caller must wait");
        };
        drop(leader);
        assert!(waiter.outcome().await.is_none());
        assert_eq!(flights.len(), 0);
        assert!(matches!(flights.join("k").await, Join::Lead(_)));
    }
}
