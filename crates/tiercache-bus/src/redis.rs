//! [`RedisBus`]: the invalidation bus on Redis Pub/Sub, through fred.

use std::{
    fmt,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use bytes::Bytes;
use fred::{
    clients::Client,
    interfaces::{ClientLike, EventInterface, PubsubInterface},
    types::{ClusterHash, Message, Value, config::Options},
};
use tiercache_core::{
    Bus, BusEvent, BusHealth, BusMessage, BusScope, BusSink, Error, GapReason, Result,
};
use tokio::{sync::broadcast::error::RecvError, task::JoinHandle};

use crate::{RedisBusOptions, options::from_fred, wire};

/// The invalidation bus on Redis Pub/Sub.
///
/// Two connections: one publishes, one stays subscribed to the cache's channel (a subscribed
/// RESP2 connection can do nothing else). Pub/Sub delivers in order but keeps nothing for a
/// subscriber that is away, so after the subscriber reconnects this bus subscribes again and
/// then reports a [gap](BusEvent::Gap): the cache empties L1, because it cannot know what it
/// missed. A receive buffer overrun is reported the same way. Payloads that do not decode are
/// counted and dropped; the subscription goes on.
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> tiercache_core::Result<()> {
/// use tiercache_bus::RedisBus;
///
/// let bus = RedisBus::connect("redis://127.0.0.1:6379").await?;
/// // Hand it to the cache builder: `Cache::builder().bus(bus)`.
/// # let _ = bus;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisBus {
    shared: Arc<Shared>,
}

struct Shared {
    name: String,
    publisher: Client,
    subscriber: Client,
    channel: OnceLock<String>,
    signing: OnceLock<wire::Signing>,
    listener: Mutex<Option<JoinHandle<()>>>,
    subscribed: AtomicBool,
    bad_messages: AtomicU64,
    unauthenticated: AtomicU64,
    reconnects: AtomicU64,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Ok(mut listener) = self.listener.lock()
            && let Some(task) = listener.take()
        {
            task.abort();
        }
        // Stop the reconnect loops of connections nobody holds any more.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (publisher, subscriber) = (self.publisher.clone(), self.subscriber.clone());
            runtime.spawn(async move {
                let _ = tokio::join!(publisher.quit(), subscriber.quit());
            });
        }
    }
}

impl fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBus")
            .field("name", &self.shared.name)
            .field("channel", &self.shared.channel.get())
            .finish_non_exhaustive()
    }
}

impl RedisBus {
    /// Connects to `url` with default [`RedisBusOptions`].
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a bad URL; [`Error::Backend`] or [`Error::Timeout`] when the server
    /// cannot be reached.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(RedisBusOptions::from_url(url)?).await
    }

    /// Connects both connections as `options` say.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect).
    pub async fn connect_with(options: RedisBusOptions) -> Result<Self> {
        let name = options.name_or("redis-pubsub");
        let redis = options.redis.clone().name(&name);
        let buffer = |capacity: usize| {
            move |builder: &mut fred::types::Builder| {
                builder.with_performance_config(|perf| perf.broadcast_channel_capacity = capacity);
            }
        };
        let (publisher, subscriber) = tokio::try_join!(
            redis.connect_client_with(buffer(32)),
            redis.connect_client_with(buffer(options.receive_buffer)),
        )?;
        Ok(Self {
            shared: Arc::new(Shared {
                name,
                publisher,
                subscriber,
                channel: OnceLock::new(),
                signing: OnceLock::new(),
                listener: Mutex::new(None),
                subscribed: AtomicBool::new(false),
                bad_messages: AtomicU64::new(0),
                unauthenticated: AtomicU64::new(0),
                reconnects: AtomicU64::new(0),
            }),
        })
    }
}

#[async_trait]
impl Bus for RedisBus {
    fn name(&self) -> &str {
        &self.shared.name
    }

    async fn start(&self, scope: BusScope<'_>, sink: Arc<dyn BusSink>) -> Result<()> {
        let channel = scope.channel;
        let shared = &self.shared;
        if shared.channel.set(channel.to_owned()).is_err() {
            return Err(Error::Config(format!(
                "bus {:?} was already started; give each cache its own bus",
                shared.name
            )));
        }
        let signing = wire::Signing::new(scope.key, scope.channel, scope.key_prefix);
        let _ = shared.signing.set(signing.clone());
        // Taken before subscribing, so no message or reconnect after it is missed.
        let messages = shared.subscriber.message_rx();
        let reconnects = shared.subscriber.reconnect_rx();
        subscribe_confirmed(&shared.subscriber, channel)
            .await
            .map_err(|err| from_fred(&shared.name, err))?;
        shared.subscribed.store(true, Ordering::SeqCst);
        let listener = Listener {
            shared: Arc::downgrade(shared),
            channel: channel.to_owned(),
            signing,
            sink,
        };
        let task = tokio::spawn(listener.run(messages, reconnects));
        if let Ok(mut slot) = shared.listener.lock() {
            *slot = Some(task);
        }
        Ok(())
    }

    async fn publish(&self, message: &BusMessage) -> Result<()> {
        let shared = &self.shared;
        let Some(channel) = shared.channel.get() else {
            return Err(Error::Config(format!(
                "bus {:?} publishes only after the cache started it",
                shared.name
            )));
        };
        let payload = wire::Signing::encode_as(shared.signing.get(), message)
            .map_err(|err| Error::backend(&shared.name, None, err))?;
        shared
            .publisher
            .publish::<i64, _, _>(channel.as_str(), payload)
            .await
            .map_err(|err| from_fred(&shared.name, err))?;
        Ok(())
    }

    fn health(&self) -> BusHealth {
        let shared = &self.shared;
        BusHealth::new(
            shared.subscribed.load(Ordering::SeqCst) && shared.subscriber.is_connected(),
            shared.bad_messages.load(Ordering::Relaxed),
            shared.reconnects.load(Ordering::Relaxed),
        )
        .with_unauthenticated(shared.unauthenticated.load(Ordering::Relaxed))
    }

    fn authenticates(&self) -> bool {
        true
    }
}

/// Subscribes, and returns once the server has made the subscription. fred answers `subscribe`
/// as soon as the command is written (the server's confirmation comes out of band), so a message
/// published just after could still miss this subscriber: on a cluster, where the SUBSCRIBE and
/// the PUBLISH go to different nodes, that happens. A PING sent after it on the same connection
/// is answered only once the SUBSCRIBE has taken effect, since a connection's commands run in
/// order; fred routes a non-sharded SUBSCRIBE by the slot of the client's id, and so is the PING.
async fn subscribe_confirmed(subscriber: &Client, channel: &str) -> Result<(), fred::error::Error> {
    subscriber.subscribe(channel).await?;
    let same_connection = Options {
        cluster_hash: Some(ClusterHash::Custom(fred::util::redis_keyslot(
            subscriber.id().as_bytes(),
        ))),
        ..Options::default()
    };
    subscriber
        .with_options(&same_connection)
        .ping::<Value>(None)
        .await?;
    Ok(())
}

/// The receiving task: decodes what arrives on the channel and hands it to the cache, and
/// subscribes again after every reconnect.
struct Listener {
    /// Weak, so the task ends when the last `RedisBus` handle is dropped.
    shared: std::sync::Weak<Shared>,
    channel: String,
    signing: wire::Signing,
    sink: Arc<dyn BusSink>,
}

impl Listener {
    async fn run(
        self,
        mut messages: tokio::sync::broadcast::Receiver<Message>,
        mut reconnects: tokio::sync::broadcast::Receiver<fred::types::config::Server>,
    ) {
        loop {
            tokio::select! {
                // A reconnect is handled before messages queued behind it.
                biased;
                reconnect = reconnects.recv() => match reconnect {
                    Ok(_) | Err(RecvError::Lagged(_)) => self.resubscribe().await,
                    Err(RecvError::Closed) => return,
                },
                message = messages.recv() => match message {
                    Ok(message) => self.receive(message).await,
                    Err(RecvError::Lagged(skipped)) => {
                        tracing::warn!(channel = %self.channel, skipped, "bus receive buffer overrun; L1 will be emptied");
                        self.sink.deliver(BusEvent::Gap { reason: GapReason::Overrun }).await;
                    }
                    Err(RecvError::Closed) => return,
                },
            }
        }
    }

    async fn receive(&self, message: Message) {
        if *message.channel != *self.channel {
            return;
        }
        let payload = match message.value {
            Value::Bytes(bytes) => bytes,
            Value::String(text) => Bytes::clone(text.inner()),
            other => {
                self.bad_message(&format!("a {:?} instead of bytes", other.kind()));
                return;
            }
        };
        match self.signing.decode(&payload) {
            Ok(decoded) => self.sink.deliver(BusEvent::Message(decoded)).await,
            Err(wire::WireError::Unauthenticated) => self.unauthenticated(),
            Err(err) => self.bad_message(&err.to_string()),
        }
    }

    fn unauthenticated(&self) {
        if let Some(shared) = self.shared.upgrade() {
            shared.unauthenticated.fetch_add(1, Ordering::Relaxed);
        }
        tracing::debug!(channel = %self.channel, "dropped a bus message without a valid MAC for the shared key");
    }

    fn bad_message(&self, why: &str) {
        if let Some(shared) = self.shared.upgrade() {
            shared.bad_messages.fetch_add(1, Ordering::Relaxed);
        }
        tracing::debug!(channel = %self.channel, why, "dropped a bus message that does not decode");
    }

    /// Subscribes again (retrying until it works or the bus is dropped), then reports the gap:
    /// in that order, so no message falls between the flush and the new subscription.
    async fn resubscribe(&self) {
        let mut delay = Duration::from_millis(20);
        loop {
            let Some(shared) = self.shared.upgrade() else {
                return;
            };
            shared.subscribed.store(false, Ordering::SeqCst);
            match subscribe_confirmed(&shared.subscriber, &self.channel).await {
                Ok(()) => {
                    shared.subscribed.store(true, Ordering::SeqCst);
                    shared.reconnects.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(err) => {
                    tracing::warn!(channel = %self.channel, %err, "bus subscribe after reconnect failed; retrying");
                }
            }
            drop(shared);
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(1));
        }
        tracing::info!(channel = %self.channel, "bus subscribed again after a reconnect; L1 will be emptied");
        self.sink
            .deliver(BusEvent::Gap {
                reason: GapReason::Reconnected,
            })
            .await;
    }
}
