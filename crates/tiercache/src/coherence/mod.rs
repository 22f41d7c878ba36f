//! Coherence: this instance's end of the invalidation bus.
//!
//! - Publishing: `set`, `invalidate`, `invalidate_prefix`, `invalidate_tag` and `clear` publish
//!   only after the tiers below L1 were written and L1 was invalidated again: [`Coherence::publish`]
//!   takes the [`Settled`] that only [`Front::settle`](crate::front::Front::settle) gives, and
//!   that only a finished write of the stack ([`Written`](crate::stack::Written)) buys. So an
//!   instance that drops its L1 copy and reads again finds the new value. A fill after a miss
//!   publishes nothing: nothing changed, and publishing fills is how caches cause invalidation
//!   storms.
//! - Receiving: [`Coherence::admit`] says what a bus event means for this instance (its own
//!   messages come back on Pub/Sub and are ignored; with a shared key, a message seen before is
//!   a replay and is dropped; a message whose sender lost one is a gap too). Flushes of L1 the
//!   bus asks for go through one [`FlushGate`], so they happen at most once per interval. The engine applies it to L1 and to the in-process tiers below it, then reports it
//!   applied, so a reader of the stats that sees the count sees the effect.
//! - A publish that fails is kept in a small de-duplicated queue and sent again, ahead of the next
//!   message, so one lost publish costs the other instances that key, not their whole L1. Only
//!   when the queue overflows does the next message say that messages were lost (a gap: every
//!   other L1 is emptied).

mod flush_gate;
mod options;
mod replay;

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use flush_gate::FlushGate;
pub(crate) use flush_gate::FlushTurn;
pub use options::{BusOptions, DEFAULT_FLUSH_INTERVAL};
use replay::{ReplayGuard, Verdict};
use tiercache_core::{
    Bus, BusCounters, BusEvent, BusKey, BusMessage, BusStats, GapReason, InstanceId, Invalidation,
    Result, unix_millis,
};

use crate::front::Settled;

/// What a bus event means for this instance.
#[derive(Debug)]
pub(crate) enum Received {
    /// Messages may have been lost: any L1 entry may be stale.
    Gap(GapReason),
    /// Another instance changed something.
    Change {
        invalidation: Invalidation,
        /// The sender failed to publish an earlier message: a gap first.
        sender_lost: bool,
        sent_at_ms: u64,
    },
}

/// This instance's link to the bus, when it has one.
#[derive(Debug)]
pub(crate) struct Coherence {
    link: Option<Link>,
}

#[derive(Debug)]
struct Link {
    bus: Arc<dyn Bus>,
    origin: InstanceId,
    sequence: AtomicU64,
    /// Messages were lost beyond what `pending` could keep: the next message says so.
    lost: AtomicBool,
    /// Invalidations whose publish failed, to send again before the next message.
    pending: Mutex<VecDeque<Invalidation>>,
    counters: BusCounters,
    /// With a shared key: which messages were seen, so a replay is dropped.
    replay: Option<ReplayGuard>,
    flush_gate: FlushGate,
    options: BusOptions,
}

/// The most failed publishes kept to send again; past it, the next message reports a gap.
const PENDING_LIMIT: usize = 1_024;

impl Link {
    /// The next message of this instance, carrying `invalidation`.
    fn message(&self, invalidation: Invalidation) -> BusMessage {
        BusMessage {
            origin: self.origin,
            sequence: self.sequence.fetch_add(1, Ordering::Relaxed) + 1,
            sender_lost_messages: self.lost.swap(false, Ordering::SeqCst),
            sent_at_ms: unix_millis(),
            invalidation,
        }
    }

    /// Publishes `message`, counting the outcome; a failed one that carried the "lost" mark
    /// hands it on to the next.
    async fn try_send(&self, message: &BusMessage) -> Result<()> {
        let result = self.bus.publish(message).await;
        match &result {
            Ok(()) => self.counters.published(),
            Err(_) => {
                if message.sender_lost_messages {
                    self.lost.store(true, Ordering::SeqCst);
                }
                self.counters.publish_error();
            }
        }
        result
    }

    /// Sends one invalidation; a failure keeps it to send again.
    async fn send(&self, invalidation: Invalidation) -> Result<()> {
        let message = self.message(invalidation);
        let sent = self.try_send(&message).await;
        if let Err(err) = &sent {
            tracing::warn!(bus = self.bus.name(), sequence = message.sequence, %err, "bus publish failed; it is sent again before the next message");
            self.keep(message.invalidation);
        }
        sent
    }

    /// Keeps an invalidation whose publish failed. A value it carried is not kept: sent late,
    /// it could land after a newer write of the key, so the key is named instead.
    fn keep(&self, invalidation: Invalidation) {
        let invalidation = match invalidation {
            Invalidation::Update { key, .. } => Invalidation::Keys(vec![key]),
            other => other,
        };
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.contains(&invalidation) {
            return;
        }
        if pending.len() >= PENDING_LIMIT {
            // Too much was lost to send again: the next message tells the others to empty L1.
            pending.clear();
            self.lost.store(true, Ordering::SeqCst);
            return;
        }
        pending.push_back(invalidation);
    }

    /// Sends again what failed before, oldest first, until one fails again (it and the rest
    /// stay queued, in order).
    async fn send_pending(&self) {
        loop {
            let next = self
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop_front();
            let Some(invalidation) = next else {
                return;
            };
            let message = self.message(invalidation);
            if let Err(err) = self.try_send(&message).await {
                tracing::debug!(bus = self.bus.name(), %err, "resending a failed publish failed again");
                self.pending
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push_front(message.invalidation);
                return;
            }
            tracing::info!(bus = self.bus.name(), "a failed publish was sent again");
        }
    }
}

impl Coherence {
    /// Coherence over `bus` with `options`; without a bus, publishing does nothing.
    pub(crate) fn new(bus: Option<(Arc<dyn Bus>, BusOptions)>) -> Self {
        Self {
            link: bus.map(|(bus, options)| Link {
                bus,
                origin: InstanceId::random(),
                sequence: AtomicU64::new(0),
                lost: AtomicBool::new(false),
                pending: Mutex::new(VecDeque::new()),
                counters: BusCounters::default(),
                replay: options.key().map(|_| ReplayGuard::new()),
                flush_gate: FlushGate::new(options.flush_interval()),
                options,
            }),
        }
    }

    /// The bus, when there is one.
    pub(crate) fn bus(&self) -> Option<&Arc<dyn Bus>> {
        self.link.as_ref().map(|link| &link.bus)
    }

    /// The largest value sent along with a `set`, if values are sent at all.
    pub(crate) fn updates_up_to(&self) -> Option<usize> {
        self.link
            .as_ref()
            .and_then(|link| link.options.updates_up_to_value())
    }

    /// The shared key that authenticates messages, if any.
    pub(crate) fn key(&self) -> Option<&BusKey> {
        self.link.as_ref().and_then(|link| link.options.key())
    }

    /// The longest a value sent along with another instance's `set` may live here, if the bus
    /// options cap it below the cache's default TTL.
    pub(crate) fn max_update_ttl(&self) -> Option<std::time::Duration> {
        self.link
            .as_ref()
            .and_then(|link| link.options.max_update_ttl_value())
    }

    /// When to empty L1 for a flush the bus asks for now (see [`FlushGate`]); counts a request
    /// folded into another.
    pub(crate) fn flush_turn(&self) -> FlushTurn {
        let Some(link) = &self.link else {
            return FlushTurn::Now;
        };
        let turn = link.flush_gate.ask();
        if turn == FlushTurn::Folded {
            link.counters.flush_coalesced();
        }
        turn
    }

    /// A deferred flush starts (see [`FlushTurn::After`]).
    pub(crate) fn deferred_flush_starts(&self) {
        if let Some(link) = &self.link {
            link.flush_gate.deferred_starts();
        }
    }

    /// The channel for a cache in `namespace`, when there is a bus.
    pub(crate) fn channel(&self, namespace: &str) -> Option<String> {
        self.link
            .as_ref()
            .map(|link| link.options.channel_for(namespace))
    }

    /// Tells the other instances what changed, once the write is settled here; returns the
    /// write's own outcome, or else the bus's error.
    ///
    /// # Errors
    ///
    /// The write's first tier failure; otherwise the transport's error (the next message then
    /// tells receivers they missed one).
    pub(crate) async fn publish(
        &self,
        settled: Settled,
        invalidation: impl FnOnce() -> Invalidation,
    ) -> Result<()> {
        self.publish_all(settled, || vec![invalidation()]).await
    }

    /// Like [`publish`](Self::publish), for a write of many keys: one message per batch of keys
    /// that fits a bus message ([`key_batches`]).
    ///
    /// # Errors
    ///
    /// As [`publish`](Self::publish).
    pub(crate) async fn publish_keys(&self, settled: Settled, keys: &[&str]) -> Result<()> {
        let batches = || {
            key_batches(keys)
                .into_iter()
                .map(Invalidation::Keys)
                .collect()
        };
        self.publish_all(settled, batches).await
    }

    /// The messages `invalidations` builds (only when there is a bus), sent in order; the first
    /// failure is returned after all were tried (each failed one is kept to send again).
    async fn publish_all(
        &self,
        settled: Settled,
        invalidations: impl FnOnce() -> Vec<Invalidation>,
    ) -> Result<()> {
        let written = settled.into_result();
        let Some(link) = &self.link else {
            return written;
        };
        link.send_pending().await;
        let mut published = Ok(());
        for invalidation in invalidations() {
            published = published.and(link.send(invalidation).await);
        }
        written.and(published)
    }

    /// What `event` means for this instance; `None` when it means nothing (its own message, or
    /// an event this version does not know).
    pub(crate) fn admit(&self, event: BusEvent) -> Option<Received> {
        let link = self.link.as_ref()?;
        let message = match event {
            BusEvent::Message(message) => message,
            BusEvent::Gap { reason } => return Some(Received::Gap(reason)),
            other => {
                tracing::debug!(?other, "bus event this version does not know; ignored");
                return None;
            }
        };
        if message.origin == link.origin {
            link.counters.ignored_own();
            return None;
        }
        let verdict = link.replay.as_ref().map_or(Verdict::New, |replay| {
            replay.judge(message.origin, message.sequence, message.sent_at_ms)
        });
        match verdict {
            Verdict::New => {}
            Verdict::Seen => {
                link.counters.replayed();
                tracing::debug!(origin = %message.origin, sequence = message.sequence, "bus message seen before (a replay); dropped");
                return None;
            }
            Verdict::Late => {
                link.counters.replayed();
                tracing::debug!(origin = %message.origin, sequence = message.sequence, "bus message too old to tell from a replay; only what is safe if old is kept");
                return Some(only_what_is_safe_if_old(message));
            }
        }
        tracing::trace!(origin = %message.origin, sequence = message.sequence, "bus message");
        Some(Received::Change {
            invalidation: message.invalidation,
            sender_lost: message.sender_lost_messages,
            sent_at_ms: message.sent_at_ms,
        })
    }

    /// Counts a change applied, and its propagation lag (when the sender said when it sent it).
    pub(crate) fn applied(&self, sent_at_ms: u64) -> Option<Duration> {
        let link = self.link.as_ref()?;
        link.counters.received();
        if sent_at_ms == 0 {
            return None;
        }
        let lag = Duration::from_millis(unix_millis().saturating_sub(sent_at_ms));
        link.counters.propagation_lag(lag);
        Some(lag)
    }

    /// Counts a gap: messages may have been lost.
    pub(crate) fn count_gap(&self) {
        if let Some(link) = &self.link {
            link.counters.gap();
        }
    }

    /// Counts L1 emptied because the bus asked for it.
    pub(crate) fn count_flush(&self) {
        if let Some(link) = &self.link {
            link.counters.l1_flush();
        }
    }

    pub(crate) fn stats(&self) -> Option<BusStats> {
        self.link
            .as_ref()
            .map(|link| link.counters.snapshot(link.bus.name(), link.bus.health()))
    }
}

/// What a message that may be an old one replayed still means: an invalidation of keys or a
/// prefix drops entries, which is safe however old it is; an update's value may be old, so only
/// its key is dropped; a tag's time may be old, so the tag is invalidated as at a time not known
/// (its marker is read again; the form server-assisted tracking reports); a clear (or a kind
/// this version does not know) is folded into a gap, which the flush gate bounds.
fn only_what_is_safe_if_old(message: BusMessage) -> Received {
    let invalidation = match message.invalidation {
        Invalidation::Update { key, .. } => Invalidation::Keys(vec![key]),
        Invalidation::Tag { tag, .. } => {
            Invalidation::Keys(vec![format!("{}{tag}", crate::stack::MARKER_PREFIX)])
        }
        keep @ (Invalidation::Keys(_) | Invalidation::Prefix(_)) => keep,
        _ => return Received::Gap(GapReason::SenderLost),
    };
    Received::Change {
        invalidation,
        sender_lost: message.sender_lost_messages,
        sent_at_ms: message.sent_at_ms,
    }
}

/// The most keys one message names, and the most bytes of keys: well inside what the wire
/// format carries (65,535 keys, 1 MiB a message), so that a batch write or invalidation of any
/// size is always sent, never stuck at the head of the resend queue as a message that cannot be
/// encoded.
const KEYS_PER_MESSAGE: usize = 4096;
const KEY_BYTES_PER_MESSAGE: usize = 256 * 1024;

/// `keys` cut into batches that each fit one message, in order.
pub(crate) fn key_batches(keys: &[&str]) -> Vec<Vec<String>> {
    let mut batches = Vec::new();
    let mut batch: Vec<String> = Vec::new();
    let mut bytes = 0;
    for key in keys {
        let size = key.len() + 2;
        if !batch.is_empty()
            && (batch.len() == KEYS_PER_MESSAGE || bytes + size > KEY_BYTES_PER_MESSAGE)
        {
            batches.push(std::mem::take(&mut batch));
            bytes = 0;
        }
        batch.push((*key).to_owned());
        bytes += size;
    }
    if !batch.is_empty() {
        batches.push(batch);
    }
    batches
}

#[cfg(test)]
mod tests {
    #[test]
    fn key_batches_fit_a_message_and_keep_every_key_in_order() {
        let many: Vec<String> = (0..10_000).map(|i| format!("k{i}")).collect();
        let keys: Vec<&str> = many.iter().map(String::as_str).collect();
        let batches = super::key_batches(&keys);
        assert_eq!(batches.len(), 3);
        assert!(
            batches
                .iter()
                .all(|batch| batch.len() <= super::KEYS_PER_MESSAGE)
        );
        assert_eq!(batches.concat(), many);
        let long: Vec<String> = (0..300).map(|i| format!("{i:01000}")).collect();
        let keys: Vec<&str> = long.iter().map(String::as_str).collect();
        let batches = super::key_batches(&keys);
        assert!(batches.len() >= 2, "{}", batches.len());
        for batch in &batches {
            let bytes: usize = batch.iter().map(|key| key.len() + 2).sum();
            assert!(bytes <= super::KEY_BYTES_PER_MESSAGE);
        }
        assert_eq!(batches.concat(), long);
        assert!(super::key_batches(&[]).is_empty());
    }

    use std::sync::Mutex;

    use tiercache_core::{BusHealth, BusScope, BusSink, Error, Namespace, async_trait};

    use super::*;
    use crate::{
        common::Scope,
        front::Front,
        stack::{Reach, Stack},
    };

    /// A bus that keeps what is published, and can be made to fail.
    #[derive(Debug, Default)]
    struct Recording {
        sent: Mutex<Vec<BusMessage>>,
        failing: AtomicBool,
    }

    #[async_trait]
    impl Bus for Recording {
        fn name(&self) -> &str {
            "recording"
        }
        async fn start(&self, _scope: BusScope<'_>, _sink: Arc<dyn BusSink>) -> Result<()> {
            Ok(())
        }
        async fn publish(&self, message: &BusMessage) -> Result<()> {
            if self.failing.load(Ordering::SeqCst) {
                return Err(Error::Config("down".into()));
            }
            self.sent
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(message.clone());
            Ok(())
        }
        fn health(&self) -> BusHealth {
            BusHealth::new(true, 0, 0)
        }
    }

    /// What a finished write with nothing below L1 settles to.
    async fn settled() -> Settled {
        let stack = Stack::new(
            Vec::new(),
            Namespace::new("").unwrap(),
            (Duration::from_secs(1), Duration::from_secs(1)),
            Arc::default(),
        );
        let front = Front::new(None, None);
        let written = stack.invalidate(Scope::Key("k"), Reach::Every).await;
        front.settle(written, &[Scope::Key("k")]).await
    }

    fn keys() -> Invalidation {
        Invalidation::Keys(vec!["k".to_owned()])
    }

    fn key(name: &str) -> Invalidation {
        Invalidation::Keys(vec![name.to_owned()])
    }

    #[tokio::test]
    async fn a_failed_publish_is_sent_again_before_the_next_message() {
        let bus = Arc::new(Recording::default());
        let coherence = Coherence::new(Some((Arc::clone(&bus) as Arc<dyn Bus>, BusOptions::new())));
        bus.failing.store(true, Ordering::SeqCst);
        assert!(
            coherence
                .publish(settled().await, || key("a"))
                .await
                .is_err()
        );
        let update = || Invalidation::Update {
            key: "u".to_owned(),
            value: tiercache_core::Bytes::from_static(b"v"),
            ttl: Duration::from_secs(1),
        };
        assert!(coherence.publish(settled().await, update).await.is_err());
        assert!(
            coherence
                .publish(settled().await, || key("a"))
                .await
                .is_err()
        );
        bus.failing.store(false, Ordering::SeqCst);
        coherence
            .publish(settled().await, || key("b"))
            .await
            .unwrap();

        let sent = bus.sent.lock().unwrap().clone();
        let what: Vec<Invalidation> = sent.iter().map(|m| m.invalidation.clone()).collect();
        // Oldest first, once each; a value is not sent late, its key is.
        assert_eq!(what, [key("a"), key("u"), key("b")]);
        assert!(
            sent.iter().all(|m| !m.sender_lost_messages),
            "no gap for anyone"
        );
    }

    #[tokio::test]
    async fn too_many_failed_publishes_mark_the_next_message_as_a_gap() {
        let bus = Arc::new(Recording::default());
        let coherence = Coherence::new(Some((Arc::clone(&bus) as Arc<dyn Bus>, BusOptions::new())));
        bus.failing.store(true, Ordering::SeqCst);
        for n in 0..=PENDING_LIMIT {
            let name = n.to_string();
            let failed = coherence.publish(settled().await, || key(&name)).await;
            assert!(failed.is_err());
        }
        bus.failing.store(false, Ordering::SeqCst);
        coherence
            .publish(settled().await, || key("next"))
            .await
            .unwrap();
        coherence
            .publish(settled().await, || key("after"))
            .await
            .unwrap();

        let sent = bus.sent.lock().unwrap().clone();
        let lost: Vec<bool> = sent.iter().map(|m| m.sender_lost_messages).collect();
        assert_eq!(lost.first(), Some(&true), "the receivers empty L1 once");
        assert!(lost[1..].iter().all(|lost| !lost));
        assert_eq!(
            sent.last().map(|m| m.invalidation.clone()),
            Some(key("after"))
        );
    }

    #[tokio::test]
    async fn own_messages_are_ignored_and_others_admitted() {
        let bus: Arc<dyn Bus> = Arc::new(Recording::default());
        let coherence = Coherence::new(Some((bus, BusOptions::new())));
        let origin = coherence.link.as_ref().unwrap().origin;
        let message = |origin| BusMessage {
            origin,
            sequence: 1,
            sender_lost_messages: true,
            sent_at_ms: 0,
            invalidation: keys(),
        };

        assert!(
            coherence
                .admit(BusEvent::Message(message(origin)))
                .is_none()
        );
        let other = InstanceId::random();
        assert!(matches!(
            coherence.admit(BusEvent::Message(message(other))),
            Some(Received::Change {
                sender_lost: true,
                ..
            })
        ));
        let gap = BusEvent::Gap {
            reason: GapReason::Reconnected,
        };
        assert!(matches!(coherence.admit(gap), Some(Received::Gap(_))));
        assert_eq!(coherence.stats().unwrap().ignored_own, 1);
    }

    #[tokio::test]
    async fn without_a_bus_publishing_returns_the_writes_outcome() {
        let coherence = Coherence::new(None);
        coherence.publish(settled().await, keys).await.unwrap();
        assert!(
            coherence
                .admit(BusEvent::Gap {
                    reason: GapReason::Reconnected
                })
                .is_none()
        );
    }
}
