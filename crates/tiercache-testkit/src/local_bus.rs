//! [`LocalBus`]: an in-process bus transport for tests, with the faults a real one has.

use std::sync::{
    Arc, Mutex, MutexGuard, OnceLock,
    atomic::{AtomicBool, AtomicU64, Ordering},
};

use tiercache_core::{
    Bus, BusEvent, BusHealth, BusMessage, BusScope, BusSink, Error, GapReason, Result, async_trait,
};
use tokio::sync::mpsc;

/// Connects [`LocalBus`]es: every bus made from one network hears the others on its channel.
#[derive(Debug, Clone, Default)]
pub struct LocalNetwork {
    members: Arc<Mutex<Vec<Arc<Member>>>>,
}

#[derive(Debug)]
struct Member {
    channel: String,
    queue: mpsc::UnboundedSender<BusEvent>,
    connected: AtomicBool,
    /// A message was dropped while disconnected.
    missed: AtomicBool,
}

impl LocalNetwork {
    /// A network with no buses yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new bus on this network, for one cache.
    pub fn bus(&self) -> LocalBus {
        LocalBus {
            network: self.clone(),
            member: OnceLock::new(),
            failing: AtomicBool::new(false),
            reconnects: AtomicU64::new(0),
        }
    }

    fn members(&self) -> MutexGuard<'_, Vec<Arc<Member>>> {
        self.members
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// An in-process [`Bus`]: messages go through a queue and a task per receiving bus, so they
/// arrive asynchronously and in order, as over Redis. It can be made to fail publishes and to
/// drop off the network and come back (a gap).
#[derive(Debug)]
pub struct LocalBus {
    network: LocalNetwork,
    member: OnceLock<Arc<Member>>,
    failing: AtomicBool,
    reconnects: AtomicU64,
}

impl LocalBus {
    /// Makes every publish fail (or work again).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Drops off the network: messages meant for this bus are lost until
    /// [`reconnect`](Self::reconnect).
    pub fn disconnect(&self) {
        if let Some(member) = self.member.get() {
            member.connected.store(false, Ordering::SeqCst);
        }
    }

    /// Comes back, and reports the gap to the cache as a real transport would.
    pub fn reconnect(&self) {
        if let Some(member) = self.member.get() {
            member.connected.store(true, Ordering::SeqCst);
            self.reconnects.fetch_add(1, Ordering::Relaxed);
            let gap = BusEvent::Gap {
                reason: GapReason::Reconnected,
            };
            // The receiving task ends only when the member is dropped, so this cannot fail
            // while `self` holds it.
            let _ = member.queue.send(gap);
        }
    }
}

#[async_trait]
impl Bus for LocalBus {
    fn name(&self) -> &str {
        "local"
    }

    async fn start(&self, scope: BusScope<'_>, sink: Arc<dyn BusSink>) -> Result<()> {
        let (queue, mut received) = mpsc::unbounded_channel();
        let member = Arc::new(Member {
            channel: scope.channel.to_owned(),
            queue,
            connected: AtomicBool::new(true),
            missed: AtomicBool::new(false),
        });
        if self.member.set(Arc::clone(&member)).is_err() {
            return Err(Error::Config("the local bus was already started".into()));
        }
        self.network.members().push(member);
        tokio::spawn(async move {
            while let Some(event) = received.recv().await {
                sink.deliver(event).await;
            }
        });
        Ok(())
    }

    async fn publish(&self, message: &BusMessage) -> Result<()> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(Error::backend(
                "local",
                None,
                std::io::Error::other("injected publish failure"),
            ));
        }
        let Some(me) = self.member.get() else {
            return Err(Error::Config("publish before start".into()));
        };
        let members: Vec<Arc<Member>> = self.network.members().clone();
        for member in members.iter().filter(|m| m.channel == me.channel) {
            if member.connected.load(Ordering::SeqCst) {
                let _ = member.queue.send(BusEvent::Message(message.clone()));
            } else {
                member.missed.store(true, Ordering::SeqCst);
            }
        }
        Ok(())
    }

    fn health(&self) -> BusHealth {
        let connected = self
            .member
            .get()
            .is_some_and(|m| m.connected.load(Ordering::SeqCst));
        BusHealth::new(connected, 0, self.reconnects.load(Ordering::Relaxed))
    }
}

impl Drop for LocalBus {
    fn drop(&mut self) {
        if let Some(me) = self.member.get() {
            self.network.members().retain(|m| !Arc::ptr_eq(m, me));
        }
    }
}
