//! [`FieldGroup`]: one consumer of a consumer group, on field/value lists: create, read new
//! entries, ack, pending summary, claim entries a crashed consumer left, dead letters.

use std::{
    collections::VecDeque,
    fmt,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use fred::{
    interfaces::StreamsInterface,
    types::{Value, streams::XID},
};
use futures_util::Stream;

use crate::{EntryId, FieldStream, RawEntry, StreamError, connection::Dedicated, reply};

/// Where a new group starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupStart {
    /// Only entries added after the group is created.
    New,
    /// Every entry already in the stream.
    Beginning,
    /// Entries after this id.
    After(EntryId),
}

/// What `XPENDING` says about a group: entries delivered and not yet acked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PendingSummary {
    /// Entries pending in the group.
    pub count: u64,
    /// The oldest pending entry.
    pub smallest: Option<EntryId>,
    /// The newest pending entry.
    pub largest: Option<EntryId>,
    /// Pending entries per consumer.
    pub consumers: Vec<(String, u64)>,
}

/// Where entries go that failed too often.
#[derive(Debug, Clone)]
struct DeadLetters {
    stream: Arc<str>,
    max_deliveries: u64,
}

/// One consumer of a consumer group, on a connection of its own (its reads may block). Clones
/// share that connection and are the same consumer: keep one to [`ack`](Self::ack) while another
/// is turned into [`events`](Self::events).
///
/// Delivery is at least once: an entry read and not acked stays pending, and after the claim
/// threshold another consumer takes it over ([`claim_idle`](Self::claim_idle), or
/// automatically in [`events`](Self::events)).
#[derive(Clone)]
pub struct FieldGroup {
    stream: FieldStream,
    group: Arc<str>,
    consumer: Arc<str>,
    connection: Arc<Dedicated>,
    batch: u64,
    block: Duration,
    claim_after: Option<Duration>,
    dead_letters: Option<DeadLetters>,
}

impl fmt::Debug for FieldGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FieldGroup")
            .field("stream", &self.stream.key())
            .field("group", &self.group)
            .field("consumer", &self.consumer)
            .finish_non_exhaustive()
    }
}

impl FieldGroup {
    pub(crate) fn new(
        stream: FieldStream,
        group: &str,
        consumer: &str,
        connection: Dedicated,
    ) -> Self {
        Self {
            stream,
            group: Arc::from(group),
            consumer: Arc::from(consumer),
            connection: Arc::new(connection),
            batch: 100,
            block: Duration::from_secs(2),
            claim_after: None,
            dead_letters: None,
        }
    }

    /// Entries read per call. Default: 100.
    #[must_use]
    pub fn batch(mut self, entries: u64) -> Self {
        self.batch = entries.max(1);
        self
    }

    /// How long [`events`](Self::events) waits for new entries per read. Default: 2 s.
    #[must_use]
    pub fn block(mut self, wait: Duration) -> Self {
        self.block = wait;
        self
    }

    /// Lets [`events`](Self::events) take over entries other consumers left unacked for longer
    /// than `idle` (a consumer that crashed). Default: off.
    #[must_use]
    pub fn claim_after(mut self, idle: Duration) -> Self {
        self.claim_after = Some(idle);
        self
    }

    /// When claiming, moves an entry delivered more than `max_deliveries` times to the stream
    /// `stream` (with its fields and where it came from) and acks it, instead of delivering it
    /// again. Default: off.
    #[must_use]
    pub fn dead_letter(mut self, stream: &str, max_deliveries: u64) -> Self {
        self.dead_letters = Some(DeadLetters {
            stream: Arc::from(stream),
            max_deliveries,
        });
        self
    }

    /// The stream's key.
    pub fn stream_key(&self) -> &str {
        self.stream.key()
    }

    /// This consumer's name.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    fn error(&self, command: &'static str, err: fred::error::Error) -> StreamError {
        StreamError::from_fred(self.stream.key(), Some(&self.group), command, err)
    }

    /// Creates the group (and the stream, when missing). Returns `false` when the group already
    /// existed, which is not an error: every consumer may call this at start-up.
    ///
    /// # Errors
    ///
    /// [`StreamError::Redis`] or [`StreamError::Timeout`].
    pub async fn create(&self, start: GroupStart) -> Result<bool, StreamError> {
        let id = match start {
            GroupStart::New => XID::Max,
            GroupStart::Beginning => XID::Manual("0".into()),
            GroupStart::After(id) => XID::Manual(id.to_string().into()),
        };
        let created: Result<Value, _> = self
            .stream
            .streams()
            .pool()
            .xgroup_create(self.stream.key(), &*self.group, id, true)
            .await;
        match created {
            Ok(_) => Ok(true),
            Err(err) if err.details().starts_with("BUSYGROUP") => Ok(false),
            Err(err) => Err(self.error("XGROUP CREATE", err)),
        }
    }

    /// Up to [`batch`](Self::batch) entries never delivered to this group, waiting up to `block`
    /// when there are none (`XREADGROUP ... >`). They stay pending until acked.
    ///
    /// # Errors
    ///
    /// [`StreamError::NoGroup`] when the group (or stream) does not exist; [`StreamError::Redis`],
    /// [`StreamError::Timeout`], [`StreamError::BadReply`].
    pub async fn read(&self, block: Option<Duration>) -> Result<Vec<RawEntry>, StreamError> {
        let wait = block.unwrap_or(Duration::ZERO);
        let block_ms = block.map(|b| u64::try_from(b.as_millis()).unwrap_or(u64::MAX).max(1));
        let reply: Value = self
            .connection
            .blocking_for(wait)
            .xreadgroup(
                &*self.group,
                &*self.consumer,
                Some(self.batch),
                block_ms,
                false,
                self.stream.key(),
                XID::NewInGroup,
            )
            .await
            .map_err(|err| self.error("XREADGROUP", err))?;
        reply::read(reply, self.stream.key())
            .map_err(|err| StreamError::bad_reply(self.stream.key(), "XREADGROUP", err))
    }

    /// Acknowledges entries: they leave the group's pending list. Returns how many were pending.
    ///
    /// # Errors
    ///
    /// [`StreamError::Redis`] or [`StreamError::Timeout`].
    pub async fn ack(&self, ids: &[EntryId]) -> Result<u64, StreamError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let ids: Vec<String> = ids.iter().map(EntryId::to_string).collect();
        self.stream
            .streams()
            .pool()
            .xack(self.stream.key(), &*self.group, ids)
            .await
            .map_err(|err| self.error("XACK", err))
    }

    /// The group's pending entries: how many, the oldest and newest, and per consumer.
    ///
    /// # Errors
    ///
    /// [`StreamError::NoGroup`]; [`StreamError::Redis`], [`StreamError::Timeout`],
    /// [`StreamError::BadReply`].
    pub async fn pending(&self) -> Result<PendingSummary, StreamError> {
        let reply: Value = self
            .stream
            .streams()
            .pool()
            .xpending(self.stream.key(), &*self.group, ())
            .await
            .map_err(|err| self.error("XPENDING", err))?;
        reply::pending_summary(reply)
            .map_err(|err| StreamError::bad_reply(self.stream.key(), "XPENDING", err))
    }

    /// Takes over up to [`batch`](Self::batch) entries that have been pending, with any consumer,
    /// for longer than `min_idle` (`XAUTOCLAIM`), and returns them: this consumer now owns them.
    /// With [dead letters](Self::dead_letter) on, entries delivered too often are moved there
    /// first and not returned.
    ///
    /// # Errors
    ///
    /// [`StreamError::NoGroup`]; [`StreamError::Redis`], [`StreamError::Timeout`],
    /// [`StreamError::BadReply`].
    pub async fn claim_idle(&self, min_idle: Duration) -> Result<Vec<RawEntry>, StreamError> {
        let idle_ms = u64::try_from(min_idle.as_millis()).unwrap_or(u64::MAX);
        if let Some(dead_letters) = &self.dead_letters {
            self.move_dead_letters(dead_letters, idle_ms).await?;
        }
        let reply: Value = self
            .stream
            .streams()
            .pool()
            .xautoclaim(
                self.stream.key(),
                &*self.group,
                &*self.consumer,
                idle_ms,
                "0-0",
                Some(self.batch),
                false,
            )
            .await
            .map_err(|err| self.error("XAUTOCLAIM", err))?;
        let (_cursor, claimed) = reply::autoclaim(reply)
            .map_err(|err| StreamError::bad_reply(self.stream.key(), "XAUTOCLAIM", err))?;
        Ok(claimed)
    }

    async fn move_dead_letters(&self, dead: &DeadLetters, idle_ms: u64) -> Result<(), StreamError> {
        let reply: Value = self
            .stream
            .streams()
            .pool()
            .xpending(
                self.stream.key(),
                &*self.group,
                (idle_ms, "-", "+", self.batch),
            )
            .await
            .map_err(|err| self.error("XPENDING", err))?;
        let pending = reply::pending_entries(reply)
            .map_err(|err| StreamError::bad_reply(self.stream.key(), "XPENDING", err))?;
        for entry in pending
            .iter()
            .filter(|p| p.deliveries > dead.max_deliveries)
        {
            self.move_to(dead, entry.id, entry.deliveries).await?;
        }
        Ok(())
    }

    /// Moves the entry `id` to the dead-letter stream given to [`dead_letter`](Self::dead_letter)
    /// (or `stream`) and acks it: for an entry that cannot be processed, such as one that does
    /// not decode.
    ///
    /// # Errors
    ///
    /// [`StreamError::Redis`], [`StreamError::Timeout`], [`StreamError::BadReply`].
    pub async fn dead_letter_entry(&self, id: EntryId, stream: &str) -> Result<(), StreamError> {
        let dead = DeadLetters {
            stream: Arc::from(stream),
            max_deliveries: 0,
        };
        self.move_to(&dead, id, 0).await
    }

    async fn move_to(
        &self,
        dead: &DeadLetters,
        id: EntryId,
        deliveries: u64,
    ) -> Result<(), StreamError> {
        let pool = self.stream.streams().pool();
        let text = id.to_string();
        let reply: Value = pool
            .xrange(self.stream.key(), &*text, &*text, Some(1))
            .await
            .map_err(|err| self.error("XRANGE", err))?;
        let entries = reply::entries(reply)
            .map_err(|err| StreamError::bad_reply(self.stream.key(), "XRANGE", err))?;
        // An entry trimmed or deleted while pending has nothing to move; acking clears it.
        if let Some(entry) = entries.into_iter().next() {
            let mut fields = entry.fields;
            fields.extend([
                (
                    Bytes::from_static(b"dead_letter_stream"),
                    Bytes::from(self.stream.key().to_owned()),
                ),
                (
                    Bytes::from_static(b"dead_letter_group"),
                    Bytes::from(self.group.to_string()),
                ),
                (
                    Bytes::from_static(b"dead_letter_id"),
                    Bytes::from(text.clone()),
                ),
                (
                    Bytes::from_static(b"dead_letter_deliveries"),
                    Bytes::from(deliveries.to_string()),
                ),
            ]);
            let target = self.stream.streams().fields(&dead.stream);
            target.publish_pairs(fields).await?;
        }
        tracing::warn!(stream = self.stream.key(), group = %self.group, id = %text, deliveries, dead_letters = %dead.stream, "entry moved to the dead-letter stream");
        self.ack(&[id]).await.map(drop)
    }

    /// The group's entries as a `Stream` that never ends by itself: entries claimed from idle
    /// consumers (when [`claim_after`](Self::claim_after) is set, checked every half of that
    /// threshold), then new entries, waiting up to [`block`](Self::block) per read. Ack each
    /// entry once processed. An error is yielded as an item and reading goes on after a short
    /// pause.
    pub fn events(self) -> impl Stream<Item = Result<RawEntry, StreamError>> + Send + 'static {
        let state = (self, VecDeque::new(), None::<Instant>);
        futures_util::stream::unfold(state, |(group, mut buffered, mut last_claim)| async move {
            loop {
                if let Some(entry) = buffered.pop_front() {
                    return Some((Ok(entry), (group, buffered, last_claim)));
                }
                let claim_due = group
                    .claim_after
                    .filter(|idle| last_claim.is_none_or(|at: Instant| at.elapsed() >= *idle / 2));
                let read = match claim_due {
                    Some(idle) => {
                        last_claim = Some(Instant::now());
                        match group.claim_idle(idle).await {
                            Ok(claimed) if !claimed.is_empty() => Ok(claimed),
                            Ok(_) => group.read(Some(group.read_wait())).await,
                            Err(err) => Err(err),
                        }
                    }
                    None => group.read(Some(group.read_wait())).await,
                };
                match read {
                    Ok(entries) => buffered.extend(entries),
                    Err(err) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        return Some((Err(err), (group, buffered, last_claim)));
                    }
                }
            }
        })
    }

    /// How long one read in [`events`](Self::events) waits: never longer than the claim interval,
    /// so claiming is not starved by a quiet stream.
    fn read_wait(&self) -> Duration {
        match self.claim_after {
            Some(idle) => self.block.min(idle / 2).max(Duration::from_millis(1)),
            None => self.block,
        }
    }
}
