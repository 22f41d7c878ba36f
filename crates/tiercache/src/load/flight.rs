//! Stampede protection: at most one load per key per process, its result shared with every
//! caller that asked for the key meanwhile.
//!
//! The first caller for a key becomes the leader and registers a watch channel, with a ticket
//! (the caller's stamp of the invalidation clock, which this module does not interpret); later
//! callers wait on it while its ticket is still current. A caller whose key was invalidated after
//! the flight started does not join it: it starts a flight of its own, so a load that began
//! before an invalidation never answers a caller that began after it. The leader's [`Leader`] guard removes the registration when it is dropped — after
//! success, error, a panic unwinding through it, or cancellation of the leader's future — so no
//! key stays stuck. A waiter whose leader went away without a result joins again, and one of them
//! becomes the next leader.

use std::{
    any::Any,
    collections::{HashMap, hash_map::Entry as MapEntry},
    sync::{Arc, Mutex, PoisonError},
};

use tiercache_core::Error;
use tokio::sync::watch;

/// What a finished load hands to its waiters: the value (type-erased, since waiters name the
/// type), `None` for "the source has nothing", or the error every waiter receives.
pub(crate) type Outcome = Result<Option<Arc<dyn Any + Send + Sync>>, Error>;

type OutcomeReceiver = watch::Receiver<Option<Outcome>>;

/// One flight as the map holds it.
#[derive(Debug)]
struct Registration<Ticket> {
    outcome: OutcomeReceiver,
    ticket: Ticket,
}

/// The registrations, behind a plain mutex held for a lookup or an insert only, never across an
/// `.await`: a leader's `Drop` removes its registration synchronously, and a lock that async
/// tasks can hold while parked (as scc's async entries can) would let a dropping leader block a
/// worker thread on a task that needs that thread to run.
type InFlight<Ticket> = Arc<Mutex<HashMap<String, Registration<Ticket>>>>;

/// The loads in flight, by key. Shared, so a leader can move into a background task.
#[derive(Debug)]
pub(crate) struct Flights<Ticket> {
    in_flight: InFlight<Ticket>,
}

impl<Ticket> Default for Flights<Ticket> {
    fn default() -> Self {
        Self {
            in_flight: Arc::default(),
        }
    }
}

/// A caller's part in a load: lead it, or wait for it.
pub(crate) enum Join<Ticket> {
    Lead(Leader<Ticket>),
    Wait(Waiter),
}

impl<Ticket: Send + Sync + 'static> Flights<Ticket> {
    /// Joins the load of `key`, starting one if none is in flight or if the one in flight has a
    /// ticket that `is_current` says is no longer current (it then goes on for the callers it
    /// has, and this caller leads a new flight that takes its place).
    pub(crate) async fn join(
        &self,
        key: &str,
        ticket: Ticket,
        is_current: impl Fn(&Ticket) -> bool,
    ) -> Join<Ticket> {
        let mut in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (sender, receiver) = match in_flight.entry(key.to_owned()) {
            MapEntry::Occupied(entry) if is_current(&entry.get().ticket) => {
                return Join::Wait(Waiter(entry.get().outcome.clone()));
            }
            MapEntry::Occupied(mut entry) => {
                let (sender, receiver) = watch::channel(None);
                *entry.get_mut() = Registration {
                    outcome: receiver.clone(),
                    ticket,
                };
                (sender, receiver)
            }
            MapEntry::Vacant(entry) => {
                let (sender, receiver) = watch::channel(None);
                entry.insert(Registration {
                    outcome: receiver.clone(),
                    ticket,
                });
                (sender, receiver)
            }
        };
        drop(in_flight);
        Join::Lead(Leader {
            in_flight: Arc::clone(&self.in_flight),
            key: key.to_owned(),
            sender,
            registered: receiver,
        })
    }

    /// Loads in flight now.
    pub(crate) fn len(&self) -> usize {
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// The caller that runs the load (or the background task it handed the load to). Dropping it
/// ends the flight.
pub(crate) struct Leader<Ticket> {
    in_flight: InFlight<Ticket>,
    key: String,
    sender: watch::Sender<Option<Outcome>>,
    registered: OutcomeReceiver,
}

impl<Ticket> Leader<Ticket> {
    /// Hands `outcome` to every waiter and ends the flight.
    pub(crate) fn finish(self, outcome: Outcome) {
        self.sender.send_replace(Some(outcome));
    }
}

impl<Ticket> Drop for Leader<Ticket> {
    fn drop(&mut self) {
        // Remove only our own registration: a later flight for the same key may already exist.
        let mut in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if in_flight
            .get(&self.key)
            .is_some_and(|registration| registration.outcome.same_channel(&self.registered))
        {
            in_flight.remove(&self.key);
        }
    }
}

/// A caller waiting for another caller's load.
pub(crate) struct Waiter(OutcomeReceiver);

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

    fn current(_: &u32) -> bool {
        true
    }

    #[tokio::test]
    async fn waiters_get_the_leaders_outcome_and_the_flight_ends() {
        let flights = Flights::default();
        let Join::Lead(leader) = flights.join("k", 0_u32, current).await else {
            panic!("first caller must lead");
        };
        let Join::Wait(waiter) = flights.join("k", 0, current).await else {
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
        let Join::Lead(leader) = flights.join("k", 0_u32, current).await else {
            panic!("first caller must lead");
        };
        let Join::Wait(waiter) = flights.join("k", 0, current).await else {
            panic!("second caller must wait");
        };
        drop(leader);
        assert!(waiter.outcome().await.is_none());
        assert_eq!(flights.len(), 0);
        assert!(matches!(flights.join("k", 0, current).await, Join::Lead(_)));
    }

    #[tokio::test]
    async fn a_flight_whose_ticket_is_no_longer_current_takes_no_new_callers() {
        let flights = Flights::default();
        let is_current = |ticket: &u32| *ticket >= 1;
        let Join::Lead(old) = flights.join("k", 0_u32, |_| true).await else {
            panic!("first caller must lead");
        };
        let Join::Wait(old_waiter) = flights.join("k", 0, |_| true).await else {
            panic!("a caller before the invalidation joins");
        };
        // The key was invalidated: the flight's ticket (0) is no longer current.
        let Join::Lead(new) = flights.join("k", 1, is_current).await else {
            panic!("a caller after the invalidation must lead a new flight");
        };
        let Join::Wait(new_waiter) = flights.join("k", 1, is_current).await else {
            panic!("later callers join the new flight");
        };
        old.finish(Ok(Some(Arc::new(1_u8))));
        new.finish(Ok(Some(Arc::new(2_u8))));
        let value = |outcome: Option<Outcome>| {
            outcome
                .and_then(Result::ok)
                .flatten()
                .and_then(|v| v.downcast::<u8>().ok())
                .map(|v| *v)
        };
        assert_eq!(value(old_waiter.outcome().await), Some(1));
        assert_eq!(value(new_waiter.outcome().await), Some(2));
        assert_eq!(flights.len(), 0, "each leader removed only its own flight");
    }
}
