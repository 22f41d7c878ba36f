//! Replay protection for authenticated bus messages.
//!
//! A MAC proves who wrote a message, not that it is new: someone who recorded a valid message
//! could publish it again (an old `Update` would plant an old value in every L1). Each sender
//! numbers its messages, so a receiver keeps, per sender, the highest number seen and which of
//! the [`WINDOW`] numbers below it it has seen (messages of one sender can arrive a little out
//! of order when it publishes from several tasks at once). A number seen before is a replay and
//! is dropped. One older than the window, or, from a sender not heard of yet, a message sent more
//! than [`START_SKEW_MS`] before this instance started, cannot be told apart from a replay but may
//! be a real message held up: it is [`Verdict::Late`], and the receiver keeps only what cannot do
//! harm if it is old (an invalidation; an update becomes one, a clear a gap).

use std::{collections::HashMap, sync::Mutex};

use tiercache_core::{InstanceId, unix_millis};

/// How many sequence numbers below the highest seen are told apart, per sender.
pub(crate) const WINDOW: u64 = 1_024;
/// The most senders remembered; past it, the one heard from longest ago is forgotten.
pub(crate) const MAX_SENDERS: usize = 4_096;
/// How far before this instance's start a new sender's first message may have been sent (the
/// clocks of two machines differ; a message may wait in a stream).
pub(crate) const START_SKEW_MS: u64 = 60_000;

const WORDS: usize = (WINDOW / 64) as usize;

/// What a message's number says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Not seen before.
    New,
    /// Seen before: a replay.
    Seen,
    /// Too old to tell.
    Late,
}

/// What one sender's messages have been seen.
#[derive(Debug)]
struct Seen {
    highest: u64,
    /// Bit `i` is set when sequence `highest - i` was seen.
    bits: [u64; WORDS],
    /// When it was last heard from, in admissions (for forgetting the quietest sender).
    heard_at: u64,
}

impl Seen {
    fn first(sequence: u64, heard_at: u64) -> Self {
        let mut bits = [0; WORDS];
        bits[0] = 1;
        Self {
            highest: sequence,
            bits,
            heard_at,
        }
    }

    /// Notes `sequence` and judges it.
    fn judge(&mut self, sequence: u64) -> Verdict {
        if sequence > self.highest {
            self.shift(sequence - self.highest);
            self.highest = sequence;
            self.bits[0] |= 1;
            return Verdict::New;
        }
        let behind = self.highest - sequence;
        if behind >= WINDOW {
            return Verdict::Late;
        }
        let (word, bit) = ((behind / 64) as usize, behind % 64);
        let mask = 1 << bit;
        if self.bits[word] & mask != 0 {
            return Verdict::Seen;
        }
        self.bits[word] |= mask;
        Verdict::New
    }

    /// Moves every bit `by` places up (older), dropping those that leave the window.
    fn shift(&mut self, by: u64) {
        if by >= WINDOW {
            self.bits = [0; WORDS];
            return;
        }
        let (words, bits) = ((by / 64) as usize, (by % 64) as u32);
        for index in (0..WORDS).rev() {
            let from = index.checked_sub(words);
            let high = from.map_or(0, |from| self.bits[from] << bits);
            let low = match from.and_then(|from| from.checked_sub(1)) {
                Some(below) if bits > 0 => self.bits[below] >> (64 - bits),
                _ => 0,
            };
            self.bits[index] = high | low;
        }
    }
}

/// Which authenticated messages this instance has seen.
#[derive(Debug)]
pub(crate) struct ReplayGuard {
    started_ms: u64,
    senders: Mutex<(HashMap<InstanceId, Seen>, u64)>,
}

impl ReplayGuard {
    pub(crate) fn new() -> Self {
        Self {
            started_ms: unix_millis(),
            senders: Mutex::new((HashMap::new(), 0)),
        }
    }

    /// What the message `sequence` of `origin`, sent at `sent_at_ms` (0: not said), is.
    pub(crate) fn judge(&self, origin: InstanceId, sequence: u64, sent_at_ms: u64) -> Verdict {
        let Ok(mut guard) = self.senders.lock() else {
            return Verdict::Late;
        };
        let (senders, clock) = &mut *guard;
        *clock += 1;
        let now = *clock;
        if let Some(seen) = senders.get_mut(&origin) {
            seen.heard_at = now;
            return seen.judge(sequence);
        }
        if sent_at_ms != 0 && sent_at_ms.saturating_add(START_SKEW_MS) < self.started_ms {
            return Verdict::Late;
        }
        if senders.len() >= MAX_SENDERS
            && let Some(quietest) = senders
                .iter()
                .min_by_key(|(_, seen)| seen.heard_at)
                .map(|(id, _)| *id)
        {
            senders.remove(&quietest);
        }
        senders.insert(origin, Seen::first(sequence, now));
        Verdict::New
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_sequence_is_new_once_in_any_order_within_the_window() {
        let guard = ReplayGuard::new();
        let origin = InstanceId(1);
        let now = unix_millis();
        // Evens from 3000 down, then odds from 1 up: after 3000 came, exactly the numbers less
        // than WINDOW behind it are new, each once; the older ones are late.
        let order = (1..=3_000_u64)
            .rev()
            .step_by(2)
            .chain((1..=3_000_u64).step_by(2));
        let mut new = std::collections::BTreeSet::new();
        for sequence in order {
            match guard.judge(origin, sequence, now) {
                Verdict::New => assert!(new.insert(sequence), "{sequence} new twice"),
                Verdict::Late => assert!(3_000 - sequence >= WINDOW, "{sequence} late"),
                Verdict::Seen => panic!("{sequence} seen before it came"),
            }
        }
        let expected: std::collections::BTreeSet<u64> = (3_001 - WINDOW..=3_000).collect();
        assert_eq!(new, expected);
        for sequence in [2_999, 2_000, 3_001 - WINDOW] {
            assert_eq!(
                guard.judge(origin, sequence, now),
                Verdict::Seen,
                "{sequence}"
            );
        }
        assert_eq!(guard.judge(origin, 1, now), Verdict::Late);
        assert_eq!(guard.judge(origin, 3_001, now), Verdict::New);
        assert_eq!(guard.judge(origin, 3_001 + WINDOW, now), Verdict::New);
        assert_eq!(guard.judge(origin, 3_001, now), Verdict::Late);
        assert_eq!(guard.judge(InstanceId(2), 2_999, now), Verdict::New);
    }

    #[test]
    fn a_new_sender_s_message_from_before_this_instance_started_is_late() {
        let guard = ReplayGuard::new();
        let long_ago = unix_millis() - START_SKEW_MS - 1_000;
        assert_eq!(guard.judge(InstanceId(1), 5, long_ago), Verdict::Late);
        assert_eq!(
            guard.judge(InstanceId(1), 5, unix_millis() - 1_000),
            Verdict::New
        );
        assert_eq!(
            guard.judge(InstanceId(2), 1, 0),
            Verdict::New,
            "no send time"
        );
    }

    #[test]
    fn the_quietest_sender_is_forgotten_past_the_limit() {
        let guard = ReplayGuard::new();
        let now = unix_millis();
        for id in 0..=MAX_SENDERS as u128 {
            assert_eq!(guard.judge(InstanceId(id), 1, now), Verdict::New);
        }
        let senders = guard.senders.lock().unwrap();
        assert_eq!(senders.0.len(), MAX_SENDERS);
        assert!(!senders.0.contains_key(&InstanceId(0)));
    }
}
