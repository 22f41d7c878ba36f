//! At most one L1 flush per interval for what the bus asks (a clear, a gap): requests that come
//! sooner are folded into one flush at the end of the interval, never dropped, so a flood of
//! them costs one flush per interval and each is carried out at most one interval late.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

/// When to carry out a flush the bus asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlushTurn {
    /// Now.
    Now,
    /// After this wait, by a task the caller starts (then [`FlushGate::deferred_starts`]).
    After(Duration),
    /// A flush is already due: it covers this request too.
    Folded,
}

#[derive(Debug)]
pub(crate) struct FlushGate {
    interval: Duration,
    state: Mutex<State>,
}

/// How long past its time a deferred flush may be late before the gate stops folding requests
/// into it (its task never ran: the runtime is shutting down).
const STUCK_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct State {
    last: Option<Instant>,
    /// When the deferred flush is due, while there is one.
    due_at: Option<Instant>,
}

impl FlushGate {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            interval,
            state: Mutex::new(State::default()),
        }
    }

    /// When the flush asked for now is to be carried out.
    pub(crate) fn ask(&self) -> FlushTurn {
        let now = Instant::now();
        let Ok(mut state) = self.state.lock() else {
            return FlushTurn::Now;
        };
        if let Some(due_at) = state.due_at {
            if now < due_at + STUCK_AFTER {
                return FlushTurn::Folded;
            }
            state.due_at = None;
        }
        let since = state.last.map(|last| now.saturating_duration_since(last));
        match since {
            Some(since) if since < self.interval => {
                let wait = self.interval - since;
                state.due_at = Some(now + wait);
                FlushTurn::After(wait)
            }
            _ => {
                state.last = Some(now);
                FlushTurn::Now
            }
        }
    }

    /// The deferred flush starts: requests from now on are after it.
    pub(crate) fn deferred_starts(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.due_at = None;
            state.last = Some(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_within_the_interval_are_folded_into_one_deferred_flush() {
        let gate = FlushGate::new(Duration::from_secs(60));
        assert_eq!(gate.ask(), FlushTurn::Now);
        let FlushTurn::After(wait) = gate.ask() else {
            panic!("the second request within the interval waits");
        };
        assert!(wait <= Duration::from_secs(60) && wait > Duration::from_secs(59));
        assert_eq!(gate.ask(), FlushTurn::Folded);
        assert_eq!(gate.ask(), FlushTurn::Folded);
        gate.deferred_starts();
        assert!(matches!(gate.ask(), FlushTurn::After(_)));
    }

    #[test]
    fn a_deferred_flush_that_never_started_holds_nothing_back() {
        let gate = FlushGate::new(Duration::from_millis(10));
        assert_eq!(gate.ask(), FlushTurn::Now);
        assert!(matches!(gate.ask(), FlushTurn::After(_)));
        std::thread::sleep(STUCK_AFTER + Duration::from_millis(50));
        assert_eq!(gate.ask(), FlushTurn::Now);
    }

    #[test]
    fn without_an_interval_every_request_flushes_now() {
        let gate = FlushGate::new(Duration::ZERO);
        for _ in 0..3 {
            assert_eq!(gate.ask(), FlushTurn::Now);
        }
    }
}
