//! [`Streams`]: the adapter's connections to Redis.

use std::{fmt, marker::PhantomData, sync::Arc, time::Duration};

use fred::{
    clients::{Client, Pool, WithOptions},
    interfaces::ClientLike,
    prelude::Options,
};
use tiercache_core::JsonCodec;
use tiercache_redis::{RedisOptions, RedisTier};

use crate::{EventStream, FieldStream, StreamError};

/// The streams adapter's handle on Redis: a connection pool for publishing and plain reads,
/// and the options to open the connections blocking reads hold on their own (a connection
/// blocked in `XREAD BLOCK` can do nothing else).
///
/// A cheap `Clone`.
#[derive(Clone)]
pub struct Streams {
    shared: Arc<Shared>,
}

struct Shared {
    /// The pool, each command bounded by the command timeout: set per command because a Redis
    /// tier's pool, which [`Streams::from_tier`] shares, has no timeout of its own (the tier
    /// times its reads itself).
    pool: WithOptions<Pool>,
    options: RedisOptions,
    /// Whether the pool was opened here (and is closed here), or borrowed from a Redis tier.
    owns_pool: bool,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Stop the reconnect loops of a pool nobody holds any more; a tier's pool is the tier's.
        if self.owns_pool
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let pool = self.pool.clone();
            runtime.spawn(async move { pool.quit().await });
        }
    }
}

impl fmt::Debug for Streams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Streams")
            .field("redis", &self.shared.options.name_value())
            .finish_non_exhaustive()
    }
}

impl Streams {
    /// Connects to `url` with default [`RedisOptions`].
    ///
    /// # Errors
    ///
    /// [`StreamError::Connect`] for a bad URL or an unreachable server.
    pub async fn connect(url: &str) -> Result<Self, StreamError> {
        Self::connect_with(RedisOptions::from_url(url)?).await
    }

    /// Connects as `options` say: the same options type as the Redis tier and the bus.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect).
    pub async fn connect_with(options: RedisOptions) -> Result<Self, StreamError> {
        let pool = options.connect_pool().await?;
        Ok(Self {
            shared: Arc::new(Shared {
                pool: pool.with_options(&options.command_options()),
                options,
                owns_pool: true,
            }),
        })
    }

    /// Shares the Redis tier's connection pool and options: no new connections for publishing
    /// and plain reads. Stream keys are used as given (the tier's key prefix does not apply).
    pub fn from_tier(tier: &RedisTier) -> Self {
        Self {
            shared: Arc::new(Shared {
                pool: tier.pool().with_options(&tier.options().command_options()),
                options: tier.options().clone(),
                owns_pool: false,
            }),
        }
    }

    /// The stream at `key`, carrying events of type `T` encoded as JSON in the field `data`.
    pub fn typed<T>(&self, key: &str) -> EventStream<T, JsonCodec> {
        EventStream::new(self.fields(key), JsonCodec)
    }

    /// The stream at `key` with a codec of your choice.
    pub fn typed_with<T, C>(&self, key: &str, codec: C) -> EventStream<T, C> {
        EventStream::new(self.fields(key), codec)
    }

    /// The stream at `key` as plain field/value lists, in the order they were given.
    pub fn fields(&self, key: &str) -> FieldStream {
        FieldStream::new(self.clone(), key)
    }

    pub(crate) fn pool(&self) -> &WithOptions<Pool> {
        &self.shared.pool
    }

    /// A connection of its own, for blocking reads.
    pub(crate) async fn dedicated(&self) -> Result<Dedicated, StreamError> {
        let client = self.shared.options.connect_client().await?;
        Ok(Dedicated {
            client,
            command_timeout: self.shared.options.command_timeout_value(),
        })
    }
}

/// A connection one reader or consumer holds alone; closed when dropped.
pub(crate) struct Dedicated {
    client: Client,
    command_timeout: Duration,
}

impl Dedicated {
    /// Notifications of this connection coming back after a drop.
    pub(crate) fn reconnections(
        &self,
    ) -> tokio::sync::broadcast::Receiver<fred::types::config::Server> {
        use fred::interfaces::EventInterface;
        self.client.reconnect_rx()
    }

    /// Whether the connection is up right now.
    pub(crate) fn is_connected(&self) -> bool {
        self.client.is_connected()
    }

    /// The client, with a timeout that lets a command block for `block` and still answer.
    pub(crate) fn blocking_for(&self, block: Duration) -> fred::clients::WithOptions<Client> {
        self.client.with_options(&Options {
            timeout: Some(block + self.command_timeout),
            ..Options::default()
        })
    }
}

impl Drop for Dedicated {
    fn drop(&mut self) {
        // Stop the reconnect loop of a connection nobody holds any more.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let client = self.client.clone();
            runtime.spawn(async move { client.quit().await });
        }
    }
}

/// Marks a type parameter that is only produced and consumed, never stored.
pub(crate) type Produces<T> = PhantomData<fn() -> T>;
