//! Typed events over the field form: each event is one entry whose field `data` holds the
//! event encoded by the codec (JSON by default, readable by any other program).

use std::{fmt, sync::Arc, time::Duration};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::{Serialize, de::DeserializeOwned};
use tiercache_core::Codec;

use crate::{
    EntryId, FieldGroup, FieldReader, FieldStream, GroupStart, PendingSummary, RawEntry,
    StreamError, TailFrom, connection::Produces,
};

/// The field that holds a typed event.
pub const DATA_FIELD: &str = "data";

/// A typed event and the id of its entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event<T> {
    /// The entry's id: ack it with this.
    pub id: EntryId,
    /// The event.
    pub value: T,
}

/// What a read yields per entry: the event, or a [`StreamError::Decode`] carrying the entry's id,
/// so a bad entry can be acked or dead-lettered while reading goes on.
pub type Item<T> = Result<Event<T>, StreamError>;

fn decode<T: DeserializeOwned, C: Codec>(key: &str, codec: &C, entry: RawEntry) -> Item<T> {
    let failed = |reason: String, entry: RawEntry| StreamError::Decode {
        stream: key.to_owned(),
        id: entry.id,
        type_name: std::any::type_name::<T>(),
        reason,
        fields: entry.fields,
    };
    let Some(data) = entry.field(DATA_FIELD) else {
        return Err(failed(format!("no {DATA_FIELD:?} field"), entry));
    };
    match codec.decode::<T>(data) {
        Ok(value) => Ok(Event {
            id: entry.id,
            value,
        }),
        Err(err) => Err(failed(err.to_string(), entry)),
    }
}

/// A stream of typed events. Cheap to clone.
pub struct EventStream<T, C> {
    fields: FieldStream,
    codec: Arc<C>,
    _events: Produces<T>,
}

impl<T, C> Clone for EventStream<T, C> {
    fn clone(&self) -> Self {
        Self {
            fields: self.fields.clone(),
            codec: Arc::clone(&self.codec),
            _events: Produces::default(),
        }
    }
}

impl<T, C> fmt::Debug for EventStream<T, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream")
            .field("key", &self.fields.key())
            .field("event", &std::any::type_name::<T>())
            .finish()
    }
}

impl<T, C> EventStream<T, C> {
    pub(crate) fn new(fields: FieldStream, codec: C) -> Self {
        Self {
            fields,
            codec: Arc::new(codec),
            _events: Produces::default(),
        }
    }

    /// The stream's key.
    pub fn key(&self) -> &str {
        self.fields.key()
    }
}

impl<T, C> EventStream<T, C>
where
    T: Serialize + DeserializeOwned + Send + 'static,
    C: Codec,
{
    /// Trims the stream to about `entries` on every publish (`XADD MAXLEN ~ entries`).
    #[must_use]
    pub fn max_len(mut self, entries: u64) -> Self {
        self.fields = self.fields.max_len(entries);
        self
    }

    /// The untyped view of the same stream.
    pub fn fields(&self) -> &FieldStream {
        &self.fields
    }

    /// Appends `event`; returns its entry id.
    ///
    /// # Errors
    ///
    /// [`StreamError::Encode`] when the codec refuses the event (nothing published);
    /// [`StreamError::Redis`] or [`StreamError::Timeout`].
    pub async fn publish(&self, event: &T) -> Result<EntryId, StreamError> {
        let mut data = Vec::with_capacity(128);
        self.codec
            .encode(event, &mut data)
            .map_err(|err| StreamError::Encode {
                stream: self.key().to_owned(),
                type_name: std::any::type_name::<T>(),
                reason: err.to_string(),
            })?;
        let pairs = vec![(Bytes::from_static(DATA_FIELD.as_bytes()), Bytes::from(data))];
        self.fields.publish_pairs(pairs).await
    }

    fn typed(&self, entries: Vec<RawEntry>) -> Vec<Item<T>> {
        let key = self.key();
        entries
            .into_iter()
            .map(|entry| decode(key, &*self.codec, entry))
            .collect()
    }

    /// The newest `count` events, newest first.
    ///
    /// # Errors
    ///
    /// As [`FieldStream::latest`]; an entry that does not decode is an error item in the list.
    pub async fn latest(&self, count: u64) -> Result<Vec<Item<T>>, StreamError> {
        Ok(self.typed(self.fields.latest(count).await?))
    }

    /// Up to `count` events after `after`, oldest first, without waiting.
    ///
    /// # Errors
    ///
    /// As [`latest`](Self::latest).
    pub async fn read_after(
        &self,
        after: EntryId,
        count: u64,
    ) -> Result<Vec<Item<T>>, StreamError> {
        Ok(self.typed(self.fields.read_after(after, count).await?))
    }

    /// A reader with a connection of its own, for blocking reads and tails.
    ///
    /// # Errors
    ///
    /// [`StreamError::Connect`].
    pub async fn reader(&self) -> Result<EventReader<T, C>, StreamError> {
        Ok(EventReader {
            stream: self.clone(),
            reader: self.fields.reader().await?,
        })
    }

    /// Consumer `consumer` of group `group`, with a connection of its own. Call
    /// [`ConsumerGroup::create`] (idempotent) before reading.
    ///
    /// # Errors
    ///
    /// [`StreamError::Connect`].
    pub async fn group(
        &self,
        group: &str,
        consumer: &str,
    ) -> Result<ConsumerGroup<T, C>, StreamError> {
        Ok(ConsumerGroup {
            stream: self.clone(),
            group: self.fields.group(group, consumer).await?,
        })
    }
}

/// Reads typed events on a connection of its own.
pub struct EventReader<T, C> {
    stream: EventStream<T, C>,
    reader: FieldReader,
}

impl<T, C> fmt::Debug for EventReader<T, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventReader")
            .field("key", &self.stream.key())
            .finish_non_exhaustive()
    }
}

impl<T, C> EventReader<T, C>
where
    T: Serialize + DeserializeOwned + Send + 'static,
    C: Codec,
{
    /// Up to `count` events after `after`, waiting up to `block` when there are none yet.
    ///
    /// # Errors
    ///
    /// As [`FieldReader::read_after`].
    pub async fn read_after(
        &self,
        after: EntryId,
        count: u64,
        block: Duration,
    ) -> Result<Vec<Item<T>>, StreamError> {
        let entries = self.reader.read_after(after, count, block).await?;
        Ok(self.stream.typed(entries))
    }

    /// Every event from `from` on, as a `Stream` that waits for new ones and never ends by
    /// itself. Undecodable entries and errors are items; reading goes on.
    pub fn tail(self, from: TailFrom) -> impl Stream<Item = Item<T>> + Send + 'static {
        let (key, codec) = (self.stream.key().to_owned(), Arc::clone(&self.stream.codec));
        self.reader
            .tail(from)
            .map(move |entry| entry.and_then(|entry| decode(&key, &*codec, entry)))
    }
}

/// One consumer of a consumer group, reading typed events. See [`FieldGroup`] for the delivery
/// rules; every method here is the typed form of the one there. Clones are the same consumer:
/// keep one to ack while another is turned into [`events`](Self::events).
pub struct ConsumerGroup<T, C> {
    stream: EventStream<T, C>,
    group: FieldGroup,
}

impl<T, C> Clone for ConsumerGroup<T, C> {
    fn clone(&self) -> Self {
        Self {
            stream: self.stream.clone(),
            group: self.group.clone(),
        }
    }
}

impl<T, C> fmt::Debug for ConsumerGroup<T, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsumerGroup")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl<T, C> ConsumerGroup<T, C>
where
    T: Serialize + DeserializeOwned + Send + 'static,
    C: Codec,
{
    /// Entries read per call. Default: 100.
    #[must_use]
    pub fn batch(mut self, entries: u64) -> Self {
        self.group = self.group.batch(entries);
        self
    }

    /// How long [`events`](Self::events) waits for new entries per read. Default: 2 s.
    #[must_use]
    pub fn block(mut self, wait: Duration) -> Self {
        self.group = self.group.block(wait);
        self
    }

    /// Takes over entries other consumers left unacked for longer than `idle`. Default: off.
    #[must_use]
    pub fn claim_after(mut self, idle: Duration) -> Self {
        self.group = self.group.claim_after(idle);
        self
    }

    /// Moves entries delivered more than `max_deliveries` times to `stream`. Default: off.
    #[must_use]
    pub fn dead_letter(mut self, stream: &str, max_deliveries: u64) -> Self {
        self.group = self.group.dead_letter(stream, max_deliveries);
        self
    }

    /// The untyped view of this consumer.
    pub fn fields(&self) -> &FieldGroup {
        &self.group
    }

    /// Creates the group (and stream) unless it exists; `false` when it existed.
    ///
    /// # Errors
    ///
    /// As [`FieldGroup::create`].
    pub async fn create(&self, start: GroupStart) -> Result<bool, StreamError> {
        self.group.create(start).await
    }

    /// New events for this consumer, waiting up to `block` when there are none.
    ///
    /// # Errors
    ///
    /// As [`FieldGroup::read`].
    pub async fn read(&self, block: Option<Duration>) -> Result<Vec<Item<T>>, StreamError> {
        Ok(self.stream.typed(self.group.read(block).await?))
    }

    /// Acknowledges events by id.
    ///
    /// # Errors
    ///
    /// As [`FieldGroup::ack`].
    pub async fn ack(&self, ids: &[EntryId]) -> Result<u64, StreamError> {
        self.group.ack(ids).await
    }

    /// The group's pending entries.
    ///
    /// # Errors
    ///
    /// As [`FieldGroup::pending`].
    pub async fn pending(&self) -> Result<PendingSummary, StreamError> {
        self.group.pending().await
    }

    /// Takes over events idle longer than `min_idle` with any consumer.
    ///
    /// # Errors
    ///
    /// As [`FieldGroup::claim_idle`].
    pub async fn claim_idle(&self, min_idle: Duration) -> Result<Vec<Item<T>>, StreamError> {
        Ok(self.stream.typed(self.group.claim_idle(min_idle).await?))
    }

    /// Moves entry `id` to the dead-letter stream `stream` and acks it.
    ///
    /// # Errors
    ///
    /// As [`FieldGroup::dead_letter_entry`].
    pub async fn dead_letter_entry(&self, id: EntryId, stream: &str) -> Result<(), StreamError> {
        self.group.dead_letter_entry(id, stream).await
    }

    /// The group's events as a `Stream`: claimed ones, then new ones; undecodable entries are
    /// [`StreamError::Decode`] items carrying their id. Never ends by itself.
    pub fn events(self) -> impl Stream<Item = Item<T>> + Send + 'static {
        let (key, codec) = (self.stream.key().to_owned(), Arc::clone(&self.stream.codec));
        self.group
            .events()
            .map(move |entry| entry.and_then(|entry| decode(&key, &*codec, entry)))
    }
}
