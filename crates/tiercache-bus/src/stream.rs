//! [`RedisStreamBus`]: the invalidation bus on a Redis Stream, so a reconnect replays what was
//! missed instead of emptying L1.

use std::{
    fmt,
    sync::{
        Arc, Mutex, OnceLock, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use tiercache_core::{
    Bus, BusEvent, BusHealth, BusMessage, BusScope, BusSink, Error, GapReason, Result, reserved_key,
};
use tiercache_streams::{EntryId, FieldReader, FieldStream, RawEntry, StreamError, Streams};
use tokio::{sync::broadcast::error::TryRecvError, task::JoinHandle};

use crate::{RedisBusOptions, options::timed_out, wire};

/// The entry field that holds a wire message.
const MESSAGE_FIELD: &str = "m";
/// Entries applied per read.
const BATCH: u64 = 512;
/// How long one blocking read waits before it asks again.
const BLOCK: Duration = Duration::from_secs(2);

/// The invalidation bus on a Redis Stream (one per namespace and channel).
///
/// The stream is an internal key of the cache's namespace, `<namespace>:\u{1}bus:<channel>`
/// (after the tier's key prefix, if any): no user key can produce it, `clear` on the namespace
/// removes it with the rest, and a Redis ACL of `~<namespace>:*` covers it.
///
/// Every message is appended with `XADD MAXLEN ~ N`; each instance tails the stream with a
/// blocking `XREAD` from the last id it applied, on a connection of its own. After that connection
/// drops and comes back, the instance reads on from the same id and applies what it missed: no
/// L1 flush. Only if that id was trimmed away meanwhile (the instance was away for more than
/// about N messages, or Redis lost the stream) does it report a gap and empty L1. The stream id is
/// the order: messages are applied once each, in id order, and no wall clock is involved.
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> tiercache_core::Result<()> {
/// use tiercache_bus::{RedisBusOptions, RedisStreamBus};
///
/// let bus = RedisStreamBus::connect_with(
///     RedisBusOptions::from_url("redis://127.0.0.1:6379")?.stream_max_len(50_000),
/// )
/// .await?;
/// // Cache::builder().bus(bus)
/// # let _ = bus;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStreamBus {
    shared: Arc<Shared>,
}

struct Shared {
    name: String,
    streams: Streams,
    max_len: u64,
    tier_key_prefix: String,
    stream: OnceLock<FieldStream>,
    signing: OnceLock<wire::Signing>,
    reader: OnceLock<FieldReader>,
    tail: Mutex<Option<JoinHandle<()>>>,
    reading: AtomicBool,
    bad_messages: AtomicU64,
    unauthenticated: AtomicU64,
    reconnects: AtomicU64,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Ok(mut tail) = self.tail.lock()
            && let Some(task) = tail.take()
        {
            task.abort();
        }
    }
}

impl fmt::Debug for RedisStreamBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStreamBus")
            .field("name", &self.shared.name)
            .field("stream", &self.shared.stream.get().map(FieldStream::key))
            .finish_non_exhaustive()
    }
}

/// The stream's key: an internal key of the namespace, after the tier's own key prefix.
fn stream_key(tier_key_prefix: &str, scope: BusScope<'_>) -> String {
    let namespaced = reserved_key(scope.key_prefix, &format!("bus:{}", scope.channel));
    format!("{tier_key_prefix}{namespaced}")
}

fn to_error(name: &str, err: StreamError) -> Error {
    match err {
        StreamError::Connect(err) => err,
        StreamError::Timeout { .. } => timed_out(name),
        other => Error::backend(name, None, other),
    }
}

impl RedisStreamBus {
    /// Connects to `url` with default options.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a bad URL; [`Error::Backend`] or [`Error::Timeout`] when the server
    /// cannot be reached.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(RedisBusOptions::from_url(url)?).await
    }

    /// Connects as `options` say.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect).
    pub async fn connect_with(options: RedisBusOptions) -> Result<Self> {
        let name = options.name_or("redis-stream");
        let streams = Streams::connect_with(options.redis)
            .await
            .map_err(|err| to_error(&name, err))?;
        Ok(Self {
            shared: Arc::new(Shared {
                name,
                streams,
                max_len: options.stream_max_len,
                tier_key_prefix: options.tier_key_prefix,
                stream: OnceLock::new(),
                signing: OnceLock::new(),
                reader: OnceLock::new(),
                tail: Mutex::new(None),
                reading: AtomicBool::new(false),
                bad_messages: AtomicU64::new(0),
                unauthenticated: AtomicU64::new(0),
                reconnects: AtomicU64::new(0),
            }),
        })
    }
}

#[async_trait]
impl Bus for RedisStreamBus {
    fn name(&self) -> &str {
        &self.shared.name
    }

    async fn start(&self, scope: BusScope<'_>, sink: Arc<dyn BusSink>) -> Result<()> {
        let shared = &self.shared;
        let name = shared.name.as_str();
        let key = stream_key(&shared.tier_key_prefix, scope);
        let stream = shared.streams.fields(&key).max_len(shared.max_len);
        if shared.stream.set(stream.clone()).is_err() {
            return Err(Error::Config(format!(
                "bus {name:?} was already started; give each cache its own bus"
            )));
        }
        let signing = wire::Signing::new(scope.key, scope.channel, scope.key_prefix);
        let _ = shared.signing.set(signing.clone());
        let reader = stream.reader().await.map_err(|err| to_error(name, err))?;
        // Messages before now concern entries this (new, empty) L1 cannot hold.
        let start = stream
            .newest_id()
            .await
            .map_err(|err| to_error(name, err))?;
        let _ = shared.reader.set(reader.clone());
        shared.reading.store(true, Ordering::SeqCst);
        let tail = Tail {
            shared: Arc::downgrade(shared),
            max_len: shared.max_len,
            stream,
            reader,
            signing,
            sink,
        };
        let task = tokio::spawn(tail.run(start));
        if let Ok(mut slot) = shared.tail.lock() {
            *slot = Some(task);
        }
        Ok(())
    }

    async fn publish(&self, message: &BusMessage) -> Result<()> {
        let shared = &self.shared;
        let Some(stream) = shared.stream.get() else {
            return Err(Error::Config(format!(
                "bus {:?} publishes only after the cache started it",
                shared.name
            )));
        };
        let payload = wire::Signing::encode_as(shared.signing.get(), message)
            .map_err(|err| Error::backend(&shared.name, None, err))?;
        stream
            .publish(&[(MESSAGE_FIELD.as_bytes(), payload.as_ref())])
            .await
            .map_err(|err| to_error(&shared.name, err))?;
        Ok(())
    }

    fn health(&self) -> BusHealth {
        let shared = &self.shared;
        let connected = shared.reading.load(Ordering::SeqCst)
            && shared.reader.get().is_some_and(FieldReader::is_connected);
        BusHealth::new(
            connected,
            shared.bad_messages.load(Ordering::Relaxed),
            shared.reconnects.load(Ordering::Relaxed),
        )
        .with_unauthenticated(shared.unauthenticated.load(Ordering::Relaxed))
    }

    fn authenticates(&self) -> bool {
        true
    }
}

/// The tailing task: reads after the last applied id, applies in order, and after a reconnect
/// checks that nothing it had not read was trimmed away.
struct Tail {
    shared: Weak<Shared>,
    max_len: u64,
    stream: FieldStream,
    reader: FieldReader,
    signing: wire::Signing,
    sink: Arc<dyn BusSink>,
}

impl Tail {
    async fn run(self, mut last: EntryId) {
        let mut reconnections = self.reader.reconnections();
        // Set when the connection may have been lost after `last` was applied: the id to find
        // still in the stream before going on without a flush.
        let mut check_from: Option<EntryId> = None;
        let mut delay = Duration::from_millis(20);
        loop {
            let read = self.reader.read_after(last, BATCH, BLOCK).await;
            // Drain every reconnect notice that arrived during the read.
            let mut reconnected = false;
            while let Ok(_) | Err(TryRecvError::Lagged(_)) = reconnections.try_recv() {
                reconnected = true;
            }
            if reconnected {
                check_from.get_or_insert(last);
            }
            let entries = match read {
                Ok(entries) => entries,
                Err(err) => {
                    check_from.get_or_insert(last);
                    self.set_reading(false);
                    tracing::warn!(stream = self.stream.key(), %err, "bus stream read failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            delay = Duration::from_millis(20);
            if let Some(from) = check_from {
                match self.missed_nothing_after(from).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(stream = self.stream.key(), %from, "bus position trimmed away while disconnected; L1 will be emptied");
                        self.sink
                            .deliver(BusEvent::Gap {
                                reason: GapReason::Reconnected,
                            })
                            .await;
                    }
                    // Checked again after the next read.
                    Err(_) => continue,
                }
                check_from = None;
                self.count_reconnect();
            }
            self.set_reading(true);
            for entry in entries {
                last = entry.id;
                self.apply(entry).await;
            }
        }
    }

    /// Whether `from` is still in the stream: trimming removes the oldest entries first, so if
    /// it is there, nothing after it was trimmed.
    async fn missed_nothing_after(&self, from: EntryId) -> std::result::Result<bool, StreamError> {
        if from == EntryId::ZERO {
            // Nothing applied yet and the stream was empty at start: the read after 0-0 sees
            // every entry unless some were trimmed, which approximate trimming does only once
            // the stream is at its cap.
            return Ok(self.stream.entry_count().await? < self.max_len);
        }
        self.stream.contains(from).await
    }

    async fn apply(&self, entry: RawEntry) {
        let decoded = entry
            .field(MESSAGE_FIELD)
            .ok_or(None)
            .and_then(|payload| self.signing.decode(payload).map_err(Some));
        match decoded {
            Ok(message) => self.sink.deliver(BusEvent::Message(message)).await,
            Err(Some(wire::WireError::Unauthenticated)) => {
                if let Some(shared) = self.shared.upgrade() {
                    shared.unauthenticated.fetch_add(1, Ordering::Relaxed);
                }
                tracing::debug!(stream = self.stream.key(), id = %entry.id, "dropped a bus entry without a valid MAC for the shared key");
            }
            Err(err) => {
                let why = err.map_or_else(|| "no message field".to_owned(), |err| err.to_string());
                if let Some(shared) = self.shared.upgrade() {
                    shared.bad_messages.fetch_add(1, Ordering::Relaxed);
                }
                tracing::debug!(stream = self.stream.key(), id = %entry.id, why, "dropped a bus entry that does not decode");
            }
        }
    }

    fn set_reading(&self, reading: bool) {
        if let Some(shared) = self.shared.upgrade() {
            shared.reading.store(reading, Ordering::SeqCst);
        }
    }

    fn count_reconnect(&self) {
        if let Some(shared) = self.shared.upgrade() {
            shared.reconnects.fetch_add(1, Ordering::Relaxed);
        }
    }
}
