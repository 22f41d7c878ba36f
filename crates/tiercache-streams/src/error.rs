//! [`StreamError`]: what can go wrong, naming the stream (and the entry, when there is one).

use bytes::Bytes;

use crate::EntryId;

/// An error of the streams adapter. Each names the stream it is about.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// An entry whose payload does not decode as the stream's event type. The entry stays in the
    /// stream; in a consumer group it stays pending until it is acked or dead-lettered, by `id`.
    #[error("entry {id} of stream {stream:?} does not decode as {type_name}: {reason}")]
    Decode {
        /// The stream's key.
        stream: String,
        /// The entry, to ack or dead-letter it.
        id: EntryId,
        /// The event type.
        type_name: &'static str,
        /// Why it does not decode.
        reason: String,
        /// The entry's fields as stored, for logging or a dead-letter stream.
        fields: Vec<(Bytes, Bytes)>,
    },
    /// An event that the codec cannot encode; nothing was published.
    #[error("an event of type {type_name} for stream {stream:?} does not encode: {reason}")]
    Encode {
        /// The stream's key.
        stream: String,
        /// The event type.
        type_name: &'static str,
        /// Why it does not encode.
        reason: String,
    },
    /// The stream does not exist.
    #[error("stream {stream:?} does not exist")]
    NoStream {
        /// The stream's key.
        stream: String,
    },
    /// The consumer group does not exist on the stream (or the stream does not exist).
    #[error("consumer group {group:?} does not exist on stream {stream:?}; create it first")]
    NoGroup {
        /// The stream's key.
        stream: String,
        /// The group's name.
        group: String,
    },
    /// Redis did not answer within the command timeout.
    #[error("{command} on stream {stream:?} timed out")]
    Timeout {
        /// The stream's key.
        stream: String,
        /// The command.
        command: &'static str,
    },
    /// Redis answered with an error, or the connection failed.
    #[error("{command} on stream {stream:?} failed: {source}")]
    Redis {
        /// The stream's key.
        stream: String,
        /// The command.
        command: &'static str,
        /// fred's error.
        source: fred::error::Error,
    },
    /// Redis answered with something this adapter does not understand.
    #[error("unexpected reply to {command} on stream {stream:?}: {detail}")]
    BadReply {
        /// The stream's key.
        stream: String,
        /// The command.
        command: &'static str,
        /// What was wrong with it.
        detail: String,
    },
    /// A string that is not an entry id.
    #[error("{0:?} is not a stream entry id (<milliseconds>-<sequence>)")]
    BadId(String),
    /// Connecting failed.
    #[error(transparent)]
    Connect(#[from] tiercache_core::Error),
}

impl StreamError {
    /// The entry this error is about, when it is about one (a payload that does not decode).
    pub fn entry_id(&self) -> Option<EntryId> {
        match self {
            Self::Decode { id, .. } => Some(*id),
            _ => None,
        }
    }

    /// Maps a fred error from `command` on `stream`.
    pub(crate) fn from_fred(
        stream: &str,
        group: Option<&str>,
        command: &'static str,
        source: fred::error::Error,
    ) -> Self {
        if let Some(group) = group
            && source.details().starts_with("NOGROUP")
        {
            return Self::NoGroup {
                stream: stream.to_owned(),
                group: group.to_owned(),
            };
        }
        if *source.kind() == fred::error::ErrorKind::Timeout {
            return Self::Timeout {
                stream: stream.to_owned(),
                command,
            };
        }
        Self::Redis {
            stream: stream.to_owned(),
            command,
            source,
        }
    }

    pub(crate) fn bad_reply(
        stream: &str,
        command: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self::BadReply {
            stream: stream.to_owned(),
            command,
            detail: detail.into(),
        }
    }
}
