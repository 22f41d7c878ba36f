//! [`FieldStream`]: a stream as plain field/value lists (XADD, XREVRANGE, XREAD), and
//! [`FieldReader`], a reader with a connection of its own for blocking reads.

use std::{collections::VecDeque, fmt, sync::Arc, time::Duration};

use bytes::Bytes;
use fred::{
    interfaces::{KeysInterface, StreamsInterface},
    types::{
        Value,
        streams::{XCap, XID},
    },
};
use futures_util::Stream;

use crate::{EntryId, FieldGroup, StreamError, Streams, connection::Dedicated, reply};

/// One stream entry as stored: its id and its field/value pairs, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry {
    /// The entry's id.
    pub id: EntryId,
    /// Field/value pairs.
    pub fields: Vec<(Bytes, Bytes)>,
}

impl RawEntry {
    /// The value of the first field called `name`.
    pub fn field(&self, name: impl AsRef<[u8]>) -> Option<&Bytes> {
        let name = name.as_ref();
        self.fields
            .iter()
            .find(|(field, _)| field.as_ref() == name)
            .map(|(_, value)| value)
    }
}

/// A stream of field/value lists: the untyped form. Cheap to clone.
#[derive(Clone)]
pub struct FieldStream {
    streams: Streams,
    key: Arc<str>,
    max_len: Option<u64>,
}

impl fmt::Debug for FieldStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FieldStream")
            .field("key", &self.key)
            .field("max_len", &self.max_len)
            .finish()
    }
}

impl FieldStream {
    pub(crate) fn new(streams: Streams, key: &str) -> Self {
        Self {
            streams,
            key: Arc::from(key),
            max_len: None,
        }
    }

    /// The stream's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Trims the stream to about `entries` on every publish (`XADD MAXLEN ~ entries`): Redis
    /// trims whole internal nodes, so the stream may hold somewhat more, never fewer.
    #[must_use]
    pub fn max_len(mut self, entries: u64) -> Self {
        self.max_len = Some(entries);
        self
    }

    pub(crate) fn streams(&self) -> &Streams {
        &self.streams
    }

    pub(crate) fn fred_error(&self, command: &'static str, err: fred::error::Error) -> StreamError {
        StreamError::from_fred(&self.key, None, command, err)
    }

    pub(crate) fn bad_reply(&self, command: &'static str, detail: String) -> StreamError {
        StreamError::bad_reply(&self.key, command, detail)
    }

    /// Appends an entry with these fields, in this order; returns its id.
    ///
    /// # Errors
    ///
    /// [`StreamError::Redis`] or [`StreamError::Timeout`].
    pub async fn publish<N, V>(&self, fields: &[(N, V)]) -> Result<EntryId, StreamError>
    where
        N: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        let pairs: Vec<(Bytes, Bytes)> = fields
            .iter()
            .map(|(name, value)| {
                (
                    Bytes::copy_from_slice(name.as_ref()),
                    Bytes::copy_from_slice(value.as_ref()),
                )
            })
            .collect();
        self.publish_pairs(pairs).await
    }

    /// Appends an entry from owned pairs, without copying the bytes.
    pub(crate) async fn publish_pairs(
        &self,
        pairs: Vec<(Bytes, Bytes)>,
    ) -> Result<EntryId, StreamError> {
        let cap = match self.max_len {
            Some(entries) => {
                let entries = i64::try_from(entries).unwrap_or(i64::MAX);
                XCap::try_from(("MAXLEN", "~", entries))
                    .map_err(|err| self.fred_error("XADD", err))?
            }
            None => XCap::from(None::<()>),
        };
        let id: Value = self
            .streams
            .pool()
            .xadd(&*self.key, false, cap, XID::Auto, pairs)
            .await
            .map_err(|err| self.fred_error("XADD", err))?;
        let text = id
            .as_str()
            .ok_or_else(|| self.bad_reply("XADD", "an id that is not a string".into()))?;
        EntryId::parse(&text).map_err(|err| self.bad_reply("XADD", err.to_string()))
    }

    /// The newest `count` entries, newest first.
    ///
    /// # Errors
    ///
    /// [`StreamError::NoStream`] when the stream does not exist; [`StreamError::Redis`],
    /// [`StreamError::Timeout`], [`StreamError::BadReply`].
    pub async fn latest(&self, count: u64) -> Result<Vec<RawEntry>, StreamError> {
        let reply: Value = self
            .streams
            .pool()
            .xrevrange(&*self.key, "+", "-", Some(count))
            .await
            .map_err(|err| self.fred_error("XREVRANGE", err))?;
        let entries = reply::entries(reply).map_err(|err| self.bad_reply("XREVRANGE", err))?;
        self.exists_if_empty(entries).await
    }

    /// Up to `count` entries after `after`, oldest first, without waiting.
    ///
    /// # Errors
    ///
    /// As [`latest`](Self::latest).
    pub async fn read_after(
        &self,
        after: EntryId,
        count: u64,
    ) -> Result<Vec<RawEntry>, StreamError> {
        let reply: Value = self
            .streams
            .pool()
            .xread(Some(count), None, &*self.key, after.to_string())
            .await
            .map_err(|err| self.fred_error("XREAD", err))?;
        let entries = reply::read(reply, &self.key).map_err(|err| self.bad_reply("XREAD", err))?;
        self.exists_if_empty(entries).await
    }

    /// Whether the entry `id` is still in the stream (not trimmed or deleted).
    ///
    /// # Errors
    ///
    /// [`StreamError::Redis`], [`StreamError::Timeout`], [`StreamError::BadReply`].
    pub async fn contains(&self, id: EntryId) -> Result<bool, StreamError> {
        let text = id.to_string();
        let reply: Value = self
            .streams
            .pool()
            .xrange(&*self.key, &*text, &*text, Some(1))
            .await
            .map_err(|err| self.fred_error("XRANGE", err))?;
        let entries = reply::entries(reply).map_err(|err| self.bad_reply("XRANGE", err))?;
        Ok(!entries.is_empty())
    }

    /// The id of the newest entry; [`EntryId::ZERO`] for an empty or missing stream.
    ///
    /// # Errors
    ///
    /// [`StreamError::Redis`], [`StreamError::Timeout`], [`StreamError::BadReply`].
    pub async fn newest_id(&self) -> Result<EntryId, StreamError> {
        match self.latest(1).await {
            Ok(entries) => Ok(entries.first().map_or(EntryId::ZERO, |entry| entry.id)),
            Err(StreamError::NoStream { .. }) => Ok(EntryId::ZERO),
            Err(err) => Err(err),
        }
    }

    /// Entries in the stream.
    ///
    /// # Errors
    ///
    /// [`StreamError::Redis`] or [`StreamError::Timeout`].
    pub async fn entry_count(&self) -> Result<u64, StreamError> {
        self.streams
            .pool()
            .xlen(&*self.key)
            .await
            .map_err(|err| self.fred_error("XLEN", err))
    }

    /// An empty answer is either an empty stream or no stream: only the second is an error.
    async fn exists_if_empty(&self, entries: Vec<RawEntry>) -> Result<Vec<RawEntry>, StreamError> {
        if !entries.is_empty() {
            return Ok(entries);
        }
        let exists: u64 = self
            .streams
            .pool()
            .exists(&*self.key)
            .await
            .map_err(|err| self.fred_error("EXISTS", err))?;
        if exists == 0 {
            return Err(StreamError::NoStream {
                stream: self.key.to_string(),
            });
        }
        Ok(entries)
    }

    /// A reader with a connection of its own, for blocking reads and [`FieldReader::tail`].
    ///
    /// # Errors
    ///
    /// [`StreamError::Connect`] when the connection cannot be made.
    pub async fn reader(&self) -> Result<FieldReader, StreamError> {
        Ok(FieldReader {
            stream: self.clone(),
            connection: Arc::new(self.streams.dedicated().await?),
        })
    }

    /// Consumer `consumer` of group `group` on this stream, with a connection of its own.
    /// Create the group with [`FieldGroup::create`] (idempotent) before reading.
    ///
    /// # Errors
    ///
    /// [`StreamError::Connect`] when the connection cannot be made.
    pub async fn group(&self, group: &str, consumer: &str) -> Result<FieldGroup, StreamError> {
        let connection = self.streams.dedicated().await?;
        Ok(FieldGroup::new(self.clone(), group, consumer, connection))
    }
}

/// Reads a stream on a connection of its own, so it may block waiting for entries.
#[derive(Clone)]
pub struct FieldReader {
    stream: FieldStream,
    connection: Arc<Dedicated>,
}

impl fmt::Debug for FieldReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FieldReader")
            .field("key", &self.stream.key)
            .finish_non_exhaustive()
    }
}

/// Where a tail starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TailFrom {
    /// Only entries added after the tail starts.
    Now,
    /// Entries after this id (`EntryId::ZERO`: the whole stream).
    After(EntryId),
}

impl FieldReader {
    /// Up to `count` entries after `after`; when there are none yet, waits up to `block` for one
    /// (`XREAD BLOCK`). Waiting for a stream that does not exist yet is allowed: it answers once
    /// the first entry is added. Empty after `block` with nothing new.
    ///
    /// # Errors
    ///
    /// [`StreamError::Redis`], [`StreamError::Timeout`], [`StreamError::BadReply`].
    pub async fn read_after(
        &self,
        after: EntryId,
        count: u64,
        block: Duration,
    ) -> Result<Vec<RawEntry>, StreamError> {
        let stream = &self.stream;
        let from = XID::Manual(after.to_string().into());
        let block_ms = u64::try_from(block.as_millis()).unwrap_or(u64::MAX).max(1);
        let reply: Value = self
            .connection
            .blocking_for(block)
            .xread(Some(count), Some(block_ms), &*stream.key, from)
            .await
            .map_err(|err| stream.fred_error("XREAD", err))?;
        reply::read(reply, &stream.key).map_err(|err| stream.bad_reply("XREAD", err))
    }

    /// Notifications that this reader's connection came back after a drop (fred reconnects by
    /// itself): a reader that must not miss entries checks what it may have missed meanwhile.
    pub fn reconnections(&self) -> tokio::sync::broadcast::Receiver<fred::types::config::Server> {
        self.connection.reconnections()
    }

    /// Whether this reader's connection is up right now.
    pub fn is_connected(&self) -> bool {
        self.connection.is_connected()
    }

    /// Every entry from `from` on, as a `Stream` that waits for new ones and never ends by
    /// itself. An error is yielded as an item and reading goes on after a short pause.
    pub fn tail(
        self,
        from: TailFrom,
    ) -> impl Stream<Item = Result<RawEntry, StreamError>> + Send + 'static {
        const BLOCK: Duration = Duration::from_secs(5);
        const BATCH: u64 = 100;
        let state = (self, from, VecDeque::new());
        futures_util::stream::unfold(state, |(reader, mut from, mut buffered)| async move {
            loop {
                if let Some(entry) = buffered.pop_front() {
                    return Some((Ok(entry), (reader, from, buffered)));
                }
                // "Now" becomes the newest id once, so nothing added between two reads is missed.
                let after = match from {
                    TailFrom::After(id) => id,
                    TailFrom::Now => match reader.stream.newest_id().await {
                        Ok(newest) => {
                            from = TailFrom::After(newest);
                            newest
                        }
                        Err(err) => {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            return Some((Err(err), (reader, from, buffered)));
                        }
                    },
                };
                match reader.read_after(after, BATCH, BLOCK).await {
                    Ok(entries) => {
                        if let Some(last) = entries.last() {
                            from = TailFrom::After(last.id);
                        }
                        buffered.extend(entries);
                    }
                    Err(err) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        return Some((Err(err), (reader, from, buffered)));
                    }
                }
            }
        })
    }
}
