//! Counters of the invalidation bus, and the snapshot a user reads.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use crate::BusHealth;

/// Live counters of one cache's bus link. Bumped on the rare write and receive paths only.
#[derive(Debug)]
pub struct BusCounters {
    started: Instant,
    published: AtomicU64,
    publish_errors: AtomicU64,
    received: AtomicU64,
    ignored_own: AtomicU64,
    gaps: AtomicU64,
    l1_flushes: AtomicU64,
    replayed: AtomicU64,
    flushes_coalesced: AtomicU64,
    /// Microseconds after `started` when the last message arrived, plus one (0: none yet).
    last_message_micros: AtomicU64,
    lag_samples: AtomicU64,
    lag_total_ms: AtomicU64,
    lag_max_ms: AtomicU64,
    lag_last_ms: AtomicU64,
}

impl Default for BusCounters {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            published: AtomicU64::new(0),
            publish_errors: AtomicU64::new(0),
            received: AtomicU64::new(0),
            ignored_own: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
            l1_flushes: AtomicU64::new(0),
            replayed: AtomicU64::new(0),
            flushes_coalesced: AtomicU64::new(0),
            last_message_micros: AtomicU64::new(0),
            lag_samples: AtomicU64::new(0),
            lag_total_ms: AtomicU64::new(0),
            lag_max_ms: AtomicU64::new(0),
            lag_last_ms: AtomicU64::new(0),
        }
    }
}

impl BusCounters {
    /// Counts a message sent.
    pub fn published(&self) {
        self.published.fetch_add(1, Ordering::Relaxed);
    }
    /// Counts a message that could not be sent.
    pub fn publish_error(&self) {
        self.publish_errors.fetch_add(1, Ordering::Relaxed);
    }
    /// Counts a message from another instance, applied to L1, and notes when it arrived.
    pub fn received(&self) {
        self.received.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX - 1);
        self.last_message_micros
            .store(micros + 1, Ordering::Relaxed);
    }
    /// Counts one of this instance's own messages coming back (ignored).
    pub fn ignored_own(&self) {
        self.ignored_own.fetch_add(1, Ordering::Relaxed);
    }
    /// Counts a gap: messages may have been lost.
    pub fn gap(&self) {
        self.gaps.fetch_add(1, Ordering::Relaxed);
    }
    /// Records how long a message took from its sender's `publish` to being applied here (by
    /// the two machines' clocks, so it includes their skew).
    pub fn propagation_lag(&self, lag: Duration) {
        let ms = u64::try_from(lag.as_millis()).unwrap_or(u64::MAX);
        self.lag_samples.fetch_add(1, Ordering::Relaxed);
        self.lag_total_ms.fetch_add(ms, Ordering::Relaxed);
        self.lag_max_ms.fetch_max(ms, Ordering::Relaxed);
        self.lag_last_ms.store(ms, Ordering::Relaxed);
    }
    /// Counts L1 being emptied because of a gap.
    pub fn l1_flush(&self) {
        self.l1_flushes.fetch_add(1, Ordering::Relaxed);
    }
    /// Counts an authenticated message that may be a replay (see [`BusStats::replayed`]).
    pub fn replayed(&self) {
        self.replayed.fetch_add(1, Ordering::Relaxed);
    }
    /// Counts a flush request (a gap, a clear) folded into one already made or due.
    pub fn flush_coalesced(&self) {
        self.flushes_coalesced.fetch_add(1, Ordering::Relaxed);
    }

    /// A snapshot, with the transport's `name` and `health`.
    pub fn snapshot(&self, name: &str, health: BusHealth) -> BusStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let last = load(&self.last_message_micros);
        BusStats {
            transport: name.to_owned(),
            connected: health.connected,
            published: load(&self.published),
            publish_errors: load(&self.publish_errors),
            received: load(&self.received),
            ignored_own: load(&self.ignored_own),
            bad_messages: health.bad_messages,
            gaps: load(&self.gaps),
            l1_flushes: load(&self.l1_flushes),
            unauthenticated: health.unauthenticated,
            replayed: load(&self.replayed),
            flushes_coalesced: load(&self.flushes_coalesced),
            reconnects: health.reconnects,
            lag_samples: load(&self.lag_samples),
            lag_mean: Duration::from_millis(
                load(&self.lag_total_ms)
                    .checked_div(load(&self.lag_samples))
                    .unwrap_or(0),
            ),
            lag_max: Duration::from_millis(load(&self.lag_max_ms)),
            lag_last: Duration::from_millis(load(&self.lag_last_ms)),
            since_last_message: (last > 0).then(|| {
                let at = self.started + Duration::from_micros(last - 1);
                at.elapsed()
            }),
        }
    }
}

/// What a cache's bus link has seen since the cache was built.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BusStats {
    /// The transport's name.
    pub transport: String,
    /// Whether the transport is connected and subscribed right now.
    pub connected: bool,
    /// Messages this instance sent.
    pub published: u64,
    /// Messages this instance failed to send (the write itself returned the error).
    pub publish_errors: u64,
    /// Messages from other instances, applied to L1.
    pub received: u64,
    /// This instance's own messages, received back and ignored.
    pub ignored_own: u64,
    /// Received payloads that did not decode, dropped.
    pub bad_messages: u64,
    /// Times messages may have been lost (reconnects, overruns, senders that lost one).
    pub gaps: u64,
    /// Times L1 was emptied because of a gap (or a clear from another instance).
    pub l1_flushes: u64,
    /// Messages dropped because they carried no valid MAC for the shared key.
    pub unauthenticated: u64,
    /// Authenticated messages that may be replays: seen before (dropped), or too old to tell
    /// (more than 1,024 behind their sender's newest, or sent long before this instance
    /// started: only their invalidation is kept, an update dropping its key, a clear a gap).
    pub replayed: u64,
    /// Requests to empty L1 (gaps, clears) that came within the flush interval of the previous
    /// flush and were folded into one flush at the end of it.
    pub flushes_coalesced: u64,
    /// Times the transport reconnected.
    pub reconnects: u64,
    /// Messages whose propagation lag was measured (those whose transport carries the send time).
    pub lag_samples: u64,
    /// Mean propagation lag (sender's publish to applied here, in whole milliseconds by the two
    /// machines' clocks).
    pub lag_mean: Duration,
    /// Largest propagation lag seen.
    pub lag_max: Duration,
    /// Propagation lag of the last measured message.
    pub lag_last: Duration,
    /// How long ago the last message from another instance arrived; `None` before the first.
    pub since_last_message: Option<Duration>,
}
