//! [`RedisTrackingBus`]: Redis itself reports every write to a cached key (client-side caching,
//! `CLIENT TRACKING ... BCAST PREFIX`), including writes by programs that do not use tiercache.

use std::{
    fmt,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use fred::{
    clients::Client,
    interfaces::{ClientLike, ClusterInterface, EventInterface, TrackingInterface},
    types::{
        RespVersion,
        config::{Server, ServerConfig},
    },
};
use tiercache_core::{
    Bus, BusEvent, BusHealth, BusMessage, BusScope, BusSink, Error, GapReason, InstanceId,
    Invalidation, Result,
};
use tokio::{sync::broadcast::error::RecvError, task::JoinHandle};

use crate::{RedisBusOptions, options::from_fred};

/// The invalidation bus on Redis server-assisted client-side caching.
///
/// One RESP3 connection per primary asks Redis to report every write under the cache's key
/// prefix (`CLIENT TRACKING ON BCAST PREFIX <prefix>`); a reported key is dropped from L1. Writes
/// by any client are seen, tiercache or not, so `publish` sends nothing: the write to the shared
/// tier is the message. Three consequences:
///
/// - It needs the shared tier to be this Redis (or cluster), written through the same key names.
/// - An instance's own writes come back too, so after a `set` its next read of the key goes to
///   Redis once; fills (which write Redis) are reported to the other instances as well.
/// - The protocol keeps nothing for a connection that was away: after a reconnect, tracking is
///   turned on again and L1 is emptied (a gap).
///
/// On a cluster each primary tracks only its own keys, so the bus opens one connection per
/// primary known when it starts (a primary added later is not tracked until restart).
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> tiercache_core::Result<()> {
/// use tiercache_bus::RedisTrackingBus;
///
/// let bus = RedisTrackingBus::connect("redis://127.0.0.1:6379").await?;
/// // Cache::builder().namespace("shop").tier(redis_tier).bus(bus)
/// # let _ = bus;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisTrackingBus {
    shared: Arc<Shared>,
}

struct Shared {
    name: String,
    tier_key_prefix: String,
    clients: Mutex<Vec<Client>>,
    listeners: Mutex<Vec<JoinHandle<()>>>,
    tracking: AtomicBool,
    reconnects: AtomicU64,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Ok(mut listeners) = self.listeners.lock() {
            listeners.drain(..).for_each(|task| task.abort());
        }
        if let (Ok(runtime), Ok(mut clients)) =
            (tokio::runtime::Handle::try_current(), self.clients.lock())
        {
            for client in clients.drain(..) {
                runtime.spawn(async move { client.quit().await });
            }
        }
    }
}

impl fmt::Debug for RedisTrackingBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTrackingBus")
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl RedisTrackingBus {
    /// Connects to `url` with default options.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a bad URL; [`Error::Backend`] or [`Error::Timeout`] when the server
    /// cannot be reached.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(RedisBusOptions::from_url(url)?).await
    }

    /// Connects one RESP3 connection per primary, as `options` say.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect).
    pub async fn connect_with(options: RedisBusOptions) -> Result<Self> {
        let name = options.name_or("redis-tracking");
        let servers = primaries(&options, &name).await?;
        let mut clients = Vec::with_capacity(servers.len());
        for server in servers {
            clients.push(resp3_client(&options, &name, server).await?);
        }
        Ok(Self {
            shared: Arc::new(Shared {
                name,
                tier_key_prefix: options.tier_key_prefix,
                clients: Mutex::new(clients),
                listeners: Mutex::new(Vec::new()),
                tracking: AtomicBool::new(false),
                reconnects: AtomicU64::new(0),
            }),
        })
    }
}

/// The servers to track: the one server, or every primary of the cluster.
async fn primaries(options: &RedisBusOptions, name: &str) -> Result<Vec<Option<Server>>> {
    if !options.redis.is_clustered() {
        return Ok(vec![None]);
    }
    let probe = options.redis.clone().name(name).connect_client().await?;
    let primaries = probe
        .cached_cluster_state()
        .map(|state| state.unique_primary_nodes())
        .unwrap_or_default();
    let _ = probe.quit().await;
    if primaries.is_empty() {
        return Err(Error::Config(format!(
            "bus {name:?}: the cluster reported no primaries"
        )));
    }
    Ok(primaries.into_iter().map(Some).collect())
}

/// A RESP3 client of the configured server, or of one cluster node on its own.
async fn resp3_client(
    options: &RedisBusOptions,
    name: &str,
    node: Option<Server>,
) -> Result<Client> {
    let redis = options.redis.clone().name(name);
    redis
        .connect_client_with(|builder| {
            builder.with_config(|config| {
                config.version = RespVersion::RESP3;
                if let Some(server) = node {
                    config.server = ServerConfig::Centralized { server };
                }
            });
        })
        .await
}

#[async_trait]
impl Bus for RedisTrackingBus {
    fn name(&self) -> &str {
        &self.shared.name
    }

    async fn start(&self, scope: BusScope<'_>, sink: Arc<dyn BusSink>) -> Result<()> {
        let shared = &self.shared;
        let name = shared.name.as_str();
        if shared.tracking.swap(true, Ordering::SeqCst) {
            return Err(Error::Config(format!(
                "bus {name:?} was already started; give each cache its own bus"
            )));
        }
        let prefix = format!("{}{}", shared.tier_key_prefix, scope.key_prefix);
        let clients = shared.clients.lock().map(|c| c.clone()).unwrap_or_default();
        let mut listeners = Vec::with_capacity(clients.len());
        for client in clients {
            // Taken before tracking starts, so no report after it is missed.
            let invalidations = client.invalidation_rx();
            let reconnects = client.reconnect_rx();
            track(&client, &prefix)
                .await
                .map_err(|err| from_fred(name, err))?;
            let listener = Listener {
                shared: Arc::downgrade(shared),
                client,
                prefix: prefix.clone(),
                sink: Arc::clone(&sink),
            };
            listeners.push(tokio::spawn(listener.run(invalidations, reconnects)));
        }
        if let Ok(mut slot) = shared.listeners.lock() {
            slot.extend(listeners);
        }
        Ok(())
    }

    /// Nothing to send: Redis reports the write to the shared tier itself.
    async fn publish(&self, _message: &BusMessage) -> Result<()> {
        Ok(())
    }

    fn health(&self) -> BusHealth {
        let shared = &self.shared;
        let connected = shared.tracking.load(Ordering::SeqCst)
            && shared
                .clients
                .lock()
                .is_ok_and(|clients| clients.iter().all(ClientLike::is_connected));
        BusHealth::new(connected, 0, shared.reconnects.load(Ordering::Relaxed))
    }
}

async fn track(client: &Client, prefix: &str) -> std::result::Result<(), fred::error::Error> {
    // Never empty: every namespace, the unnamed one too, has a prefix of its own.
    client
        .start_tracking(vec![prefix.to_owned()], true, false, false, false)
        .await
}

/// Turns one connection's invalidation reports into bus events.
struct Listener {
    shared: Weak<Shared>,
    client: Client,
    prefix: String,
    sink: Arc<dyn BusSink>,
}

impl Listener {
    async fn run(
        self,
        mut invalidations: tokio::sync::broadcast::Receiver<fred::types::client::Invalidation>,
        mut reconnects: tokio::sync::broadcast::Receiver<Server>,
    ) {
        loop {
            tokio::select! {
                biased;
                reconnect = reconnects.recv() => match reconnect {
                    Ok(_) | Err(RecvError::Lagged(_)) => self.track_again().await,
                    Err(RecvError::Closed) => return,
                },
                report = invalidations.recv() => match report {
                    Ok(report) => self.deliver(report).await,
                    Err(RecvError::Lagged(_)) => self.gap(GapReason::Overrun).await,
                    Err(RecvError::Closed) => return,
                },
            }
        }
    }

    async fn deliver(&self, report: fred::types::client::Invalidation) {
        // No keys: the database was flushed.
        let invalidation = if report.keys.is_empty() {
            Invalidation::Clear
        } else {
            let keys: Vec<String> = report
                .keys
                .iter()
                .filter_map(|key| key.as_str())
                .filter_map(|key| key.strip_prefix(self.prefix.as_str()))
                .filter(|key| !key.is_empty())
                .map(str::to_owned)
                .collect();
            if keys.is_empty() {
                return;
            }
            Invalidation::Keys(keys)
        };
        let message = BusMessage {
            // The server, not an instance: never this instance's own id.
            origin: InstanceId(0),
            sequence: 0,
            sender_lost_messages: false,
            // The server does not say when the write happened.
            sent_at_ms: 0,
            invalidation,
        };
        self.sink.deliver(BusEvent::Message(message)).await;
    }

    async fn track_again(&self) {
        let mut delay = Duration::from_millis(20);
        loop {
            let Some(shared) = self.shared.upgrade() else {
                return;
            };
            match track(&self.client, &self.prefix).await {
                Ok(()) => {
                    shared.reconnects.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(err) => {
                    tracing::warn!(%err, "turning tracking on again after a reconnect failed; retrying");
                }
            }
            drop(shared);
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(1));
        }
        self.gap(GapReason::Reconnected).await;
    }

    async fn gap(&self, reason: GapReason) {
        tracing::info!(
            ?reason,
            "tracking may have missed writes; L1 will be emptied"
        );
        self.sink.deliver(BusEvent::Gap { reason }).await;
    }
}
