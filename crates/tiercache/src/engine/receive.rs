//! Applying what the bus delivers: another instance's change reaches L1 and every tier below it
//! that lives in this process (which the sender cannot reach); a gap empties them, because any
//! entry may be stale. Every change moves the invalidation clock before it removes anything, so
//! a load in flight at that moment does not put its older value back. Emptying L1 (a gap, a
//! clear) goes through the bus link's flush gate: at most once per interval, the rest folded
//! into one flush at its end.

use std::{sync::Weak, time::Duration};

use tiercache_core::{
    BusEvent, BusSink, Bytes, Codec, GapReason, Invalidation, StoredMeta, async_trait, unix_millis,
};

use super::Engine;
use crate::events::CacheEvent;
use crate::{
    coherence::{FlushTurn, Received},
    common::Scope,
    policy::tags_of,
    stack::{MARKER_PREFIX, Reach},
};

/// Why the bus empties L1.
#[derive(Debug, Clone, Copy)]
enum Flush {
    /// Messages may have been lost, so any entry may be stale.
    Gap(GapReason),
    /// Another instance cleared the cache.
    Clear,
}

/// What the transport delivers to: a weak handle, so the transport never keeps a dropped cache
/// alive.
pub(crate) struct Receiver<C> {
    engine: Weak<Engine<C>>,
}

impl<C> Receiver<C> {
    pub(super) fn new(engine: Weak<Engine<C>>) -> Self {
        Self { engine }
    }
}

#[async_trait]
impl<C: Codec> BusSink for Receiver<C> {
    async fn deliver(&self, event: BusEvent) {
        if let Some(engine) = self.engine.upgrade() {
            engine.receive(event, &self.engine).await;
        }
    }
}

impl<C: Codec> Engine<C> {
    /// Applies `event`; `me` is this engine's weak handle, for a flush carried out later.
    async fn receive(&self, event: BusEvent, me: &Weak<Self>) {
        let Some(received) = self.coherence.admit(event) else {
            return;
        };
        match received {
            Received::Gap(reason) => self.gap(reason, me).await,
            Received::Change {
                invalidation,
                sender_lost,
                sent_at_ms,
            } => {
                if sender_lost {
                    self.gap(GapReason::SenderLost, me).await;
                }
                self.apply(invalidation, sent_at_ms, me).await;
                // Counted once applied, so a reader of the stats that sees the count sees the
                // effect.
                #[cfg(feature = "metrics")]
                if let Some(lag) = self.coherence.applied(sent_at_ms) {
                    crate::metrics::record_propagation_lag(self.namespace(), lag);
                }
                #[cfg(not(feature = "metrics"))]
                self.coherence.applied(sent_at_ms);
            }
        }
    }

    /// Applies one change another instance sent at `sent_at_ms` (its wall clock; 0 when the
    /// sender did not say).
    async fn apply(&self, invalidation: Invalidation, sent_at_ms: u64, me: &Weak<Self>) {
        match invalidation {
            Invalidation::Keys(keys) => {
                for key in keys {
                    // Server-assisted tracking reports a tag marker's change as a key.
                    match key.strip_prefix(MARKER_PREFIX) {
                        Some(tag) => self.apply_tag(tag, None).await,
                        None => self.drop_here(Scope::Key(&key)).await,
                    }
                }
            }
            Invalidation::Tag {
                tag,
                invalidated_at_ms,
            } => self.apply_tag(&tag, Some(invalidated_at_ms)).await,
            Invalidation::Prefix(prefix) => self.drop_here(Scope::Prefix(&prefix)).await,
            Invalidation::Clear => self.flush(Flush::Clear, me).await,
            Invalidation::Update { key, value, ttl } => {
                // The sender's TTL is trusted only up to this instance's own limit.
                let cap = self.coherence.max_update_ttl().unwrap_or(self.defaults.ttl);
                let ttl = ttl.min(cap);
                // A message replayed late (a stream read after a reconnect) carries a value as old
                // as the message: it keeps only the life it had left.
                let age = match sent_at_ms {
                    0 => Duration::ZERO,
                    sent => Duration::from_millis(unix_millis().saturating_sub(sent)),
                };
                match ttl.checked_sub(age).filter(|left| !left.is_zero()) {
                    Some(left) => self.apply_update(&key, value, left).await,
                    None => self.drop_here(Scope::Key(&key)).await,
                }
            }
            other => {
                // An invalidation kind this version does not know: dropping everything is the
                // only safe reading.
                tracing::debug!(?other, "unknown invalidation kind; emptying L1");
                self.gap(GapReason::SenderLost, me).await;
            }
        }
    }

    /// Drops what `scope` covers from L1 and from the in-process tiers below it (what another
    /// instance changed, or what a fill of this one stored while an invalidation came): L1 first (the
    /// clock moves, so fills in flight stop), those tiers, then L1 again: a read that took its
    /// stamp after the first move but read L1 itself (a kept copy put back in front) or an
    /// in-process tier before they were cleaned cannot keep what it read.
    pub(super) async fn drop_here(&self, scope: Scope<'_>) {
        self.front.invalidate(scope).await;
        let written = self.stack.invalidate(scope, Reach::InProcess).await;
        let settled = self.front.settle(written, &[scope]).await;
        if let Err(err) = settled.into_result() {
            tracing::warn!(%err, ?scope, "an in-process tier below L1 could not apply a bus invalidation");
        }
    }

    /// A tag another instance invalidated at `at_ms` (or, through server-assisted tracking, a
    /// change of its marker at a time not known: the marker is read again on the next check,
    /// and in-process tiers get a marker of now, which hides at most a little more).
    async fn apply_tag(&self, tag: &str, at_ms: Option<u64>) {
        self.stack.note_tag(tag, at_ms);
        let at = at_ms.unwrap_or_else(unix_millis);
        self.drop_here(Scope::Tag(tag, at)).await;
        if at_ms.is_none() {
            self.stack.note_tag(tag, None);
        }
    }

    /// Puts a value another instance just wrote into L1, as bytes decoded on first read, with
    /// its tags, so a tag invalidation finds it before it is ever read. A value one of whose
    /// tags this instance already knows to be invalidated after the write is dropped instead
    /// (messages from different instances can arrive in either order). In-process tiers below
    /// L1 drop the key: they are filled again from the shared tier on the next read.
    async fn apply_update(&self, key: &str, value: Bytes, ttl: Duration) {
        let meta = StoredMeta::read(&value);
        if !self.front.takes_copies() || self.stack.known_invalidated(&meta) {
            self.drop_here(Scope::Key(key)).await;
            return;
        }
        if self.stack.has_in_process_levels() {
            self.drop_here(Scope::Key(key)).await;
        }
        self.front
            .apply_update(key, value, ttl, tags_of(&meta))
            .await;
        // A tag invalidation here may have cleared L1 between the check above and the insert.
        // It records the tag's time before it clears, so one of the two checks sees it.
        if self.stack.known_invalidated(&meta) {
            self.drop_here(Scope::Key(key)).await;
        }
    }

    /// The bus may have lost messages: any entry here may be stale, and any tag time too.
    async fn gap(&self, reason: GapReason, me: &Weak<Self>) {
        self.coherence.count_gap();
        self.events.emit(|| CacheEvent::BusGap);
        // Forgotten now, not when a deferred flush runs: a tag time learned meanwhile stays.
        self.stack.forget_tags();
        self.flush(Flush::Gap(reason), me).await;
    }

    /// Empties L1 as the bus asked, now or (through the flush gate) at the end of the interval
    /// since the last flush, by a task that holds only `me`. A peer's `clear` on an
    /// authenticated bus is carried out at once: only that peer can have sent it.
    async fn flush(&self, why: Flush, me: &Weak<Self>) {
        if matches!(why, Flush::Clear) && self.coherence.key().is_some() {
            return self.flush_now(why).await;
        }
        match self.coherence.flush_turn() {
            FlushTurn::Now => self.flush_now(why).await,
            FlushTurn::Folded => {}
            FlushTurn::After(wait) => {
                let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                    self.coherence.deferred_flush_starts();
                    return self.flush_now(why).await;
                };
                let me = Weak::clone(me);
                runtime.spawn(async move {
                    tokio::time::sleep(wait).await;
                    if let Some(engine) = me.upgrade() {
                        engine.coherence.deferred_flush_starts();
                        engine.flush_now(why).await;
                    }
                });
            }
        }
    }

    /// Empties L1 and the in-process tiers below it. After a gap, then also forgets the tag
    /// times read from markers since the gap came (once the in-process tiers, whose markers may
    /// predate a lost tag message, are empty): the flush may have waited for its interval.
    async fn flush_now(&self, why: Flush) {
        self.drop_here(Scope::All).await;
        if matches!(why, Flush::Gap(_)) {
            self.stack.forget_tag_reads();
        }
        if self.front.exists() {
            self.coherence.count_flush();
        }
        match why {
            Flush::Gap(reason) => tracing::info!(
                ?reason,
                "bus gap: L1 emptied, because any entry may be stale"
            ),
            Flush::Clear => tracing::debug!("another instance cleared the cache: L1 emptied"),
        }
    }
}
