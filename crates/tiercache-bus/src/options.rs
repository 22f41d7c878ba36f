//! [`RedisBusOptions`]: how every Redis transport of the bus reaches Redis, and its settings.

use tiercache_core::{Error, Result};
use tiercache_redis::RedisOptions;

/// How a Redis bus transport reaches Redis: the same [`RedisOptions`] as the Redis tier
/// (servers, timeouts, reconnect policy; its pool size and key prefix do not apply), plus the
/// settings of each transport (each ignores the others').
///
/// ```
/// use std::time::Duration;
/// use tiercache_bus::RedisBusOptions;
/// use tiercache_redis::RedisOptions;
///
/// let redis = RedisOptions::from_url("redis://127.0.0.1:6379")?
///     .command_timeout(Duration::from_millis(250));
/// let options = RedisBusOptions::new(redis)
///     .receive_buffer(8_192)      // Pub/Sub
///     .stream_max_len(50_000);    // Stream
/// # let _ = options;
/// # Ok::<(), tiercache_core::Error>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RedisBusOptions {
    pub(crate) redis: RedisOptions,
    pub(crate) name: Option<String>,
    pub(crate) receive_buffer: usize,
    pub(crate) stream_max_len: u64,
    pub(crate) tier_key_prefix: String,
}

impl RedisBusOptions {
    /// Bus options on these connection options.
    pub fn new(redis: RedisOptions) -> Self {
        // The tier made from the same options stores its keys under its key prefix: tracking must
        // follow it, or it would watch keys nobody writes.
        let tier_key_prefix = redis.key_prefix_value().to_owned();
        Self {
            redis,
            name: None,
            receive_buffer: 4_096,
            stream_max_len: 100_000,
            tier_key_prefix,
        }
    }

    /// Bus options for the server(s) named by `url`, with default connection options.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when fred cannot parse the URL.
    pub fn from_url(url: &str) -> Result<Self> {
        RedisOptions::from_url(url).map(Self::new)
    }

    /// Pub/Sub: messages received but not yet applied that the bus holds before it falls behind;
    /// falling behind is reported as a gap (L1 is emptied). Default: 4096.
    #[must_use]
    pub fn receive_buffer(mut self, messages: usize) -> Self {
        self.receive_buffer = messages.max(1);
        self
    }

    /// Stream: about how many messages the stream keeps (`XADD MAXLEN ~`). An instance away for
    /// longer than it takes to write this many finds its position trimmed away and empties L1.
    /// Default: 100,000.
    #[must_use]
    pub fn stream_max_len(mut self, messages: u64) -> Self {
        self.stream_max_len = messages.max(1);
        self
    }

    /// The Redis tier's own key prefix ([`RedisOptions::key_prefix`]), when it has one: tracked
    /// keys are `<tier prefix><namespace>:<key>`, and the stream bus keeps its stream under it
    /// too (so one ACL key pattern covers the tier and the bus). Default: the key prefix of the
    /// connection options these bus options were made from (so a bus made from
    /// `tier.options().clone()` tracks what the tier writes).
    #[must_use]
    pub fn tier_key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.tier_key_prefix = prefix.into();
        self
    }

    /// The name in stats and errors. Default: `"redis-pubsub"`, `"redis-stream"` or
    /// `"redis-tracking"`, after the transport.
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    pub(crate) fn name_or(&self, default: &str) -> String {
        self.name.clone().unwrap_or_else(|| default.to_owned())
    }
}

/// A fred error of the transport `name`, as a tiercache error.
pub(crate) fn from_fred(name: &str, err: fred::error::Error) -> Error {
    if *err.kind() == fred::error::ErrorKind::Timeout {
        return timed_out(name);
    }
    Error::backend(name, None, err)
}

/// The transport `name` did not answer in time.
pub(crate) fn timed_out(name: &str) -> Error {
    Error::Timeout {
        what: name.to_owned(),
        key: None,
    }
}
