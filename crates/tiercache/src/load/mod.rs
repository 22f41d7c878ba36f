//! Loads: one flight per key (stampede protection), loads that go on in the background, and
//! timed waits. Knows no tiers and no values' types: the engine hands it futures and tickets.

mod background;
mod flight;
mod timed;

pub use background::DEFAULT_BACKGROUND_LOADS;
pub(crate) use background::{BackgroundLoads, BackgroundPermit};
pub(crate) use flight::{Flights, Join, Leader, Outcome, Waiter};
pub(crate) use timed::{Deadlines, Timed, run_timed};
