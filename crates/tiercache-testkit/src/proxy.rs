//! A TCP proxy on loopback between one cache instance and Redis, so a test can cut that instance
//! off (a partition) while the others go on: it can stop carrying bytes (a blackhole: the
//! connections stay open and nothing arrives, as when a network path dies), carry them late, or
//! reset every connection.

use std::{
    io,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinSet,
};

/// A proxy from a free loopback port to `target`. Dropping it closes every connection.
#[derive(Debug)]
pub struct Proxy {
    port: u16,
    /// True while bytes are held back.
    held: watch::Sender<bool>,
    /// Moves on every reset: connections opened before it close.
    resets: watch::Sender<u64>,
    delay_ms: Arc<AtomicU64>,
    accepting: Arc<AtomicBool>,
    tasks: JoinSet<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards every connection to `target`.
    ///
    /// # Errors
    ///
    /// When no port can be bound.
    pub async fn start(target: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (held, held_rx) = watch::channel(false);
        let (resets, resets_rx) = watch::channel(0_u64);
        let delay_ms = Arc::new(AtomicU64::new(0));
        let accepting = Arc::new(AtomicBool::new(true));
        let mut tasks = JoinSet::new();
        let (delay, open) = (Arc::clone(&delay_ms), Arc::clone(&accepting));
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                if !open.load(Ordering::SeqCst) {
                    continue;
                }
                let Ok(server) = TcpStream::connect(target).await else {
                    continue;
                };
                let link = Link {
                    held: held_rx.clone(),
                    resets: resets_rx.clone(),
                    delay: Arc::clone(&delay),
                };
                connections.spawn(link.carry(client, server));
                while connections.try_join_next().is_some() {}
            }
        });
        Ok(Self {
            port,
            held,
            resets,
            delay_ms,
            accepting,
            tasks,
        })
    }

    /// The `redis://` URL that reaches the target through this proxy.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops carrying bytes: connections stay open, nothing arrives either way (new ones are
    /// refused meanwhile).
    pub fn blackhole(&self) {
        self.accepting.store(false, Ordering::SeqCst);
        self.held.send_replace(true);
    }

    /// Carries bytes again (what was held back arrives now), and takes new connections.
    pub fn heal(&self) {
        self.held.send_replace(false);
        self.accepting.store(true, Ordering::SeqCst);
    }

    /// Carries every chunk `delay` late (zero: at once).
    pub fn delay(&self, delay: Duration) {
        let millis = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.delay_ms.store(millis, Ordering::SeqCst);
    }

    /// Closes every connection open now (clients see a reset and reconnect).
    pub fn reset(&self) {
        self.resets.send_modify(|resets| *resets += 1);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.tasks.abort_all();
        self.reset();
    }
}

/// What every carried connection watches.
struct Link {
    held: watch::Receiver<bool>,
    resets: watch::Receiver<u64>,
    delay: Arc<AtomicU64>,
}

impl Link {
    async fn carry(self, client: TcpStream, server: TcpStream) {
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = server.into_split();
        let mut resets = self.resets.clone();
        resets.mark_unchanged();
        let up = pump(
            client_read,
            server_write,
            self.held.clone(),
            Arc::clone(&self.delay),
        );
        let down = pump(server_read, client_write, self.held, self.delay);
        tokio::select! {
            () = up => {}
            () = down => {}
            _ = resets.changed() => {}
        }
    }
}

/// Copies bytes one way until either side closes, holding them while `held` says so.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut held: watch::Receiver<bool>,
    delay: Arc<AtomicU64>,
) {
    let mut buffer = vec![0_u8; 16 * 1024];
    loop {
        // Nothing is read while held, so the bytes wait in the kernel's buffers.
        if held.wait_for(|held| !held).await.is_err() {
            return;
        }
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        let late = delay.load(Ordering::SeqCst);
        if late > 0 {
            tokio::time::sleep(Duration::from_millis(late)).await;
        }
        // A chunk read just before a blackhole is held too.
        if held.wait_for(|held| !held).await.is_err() {
            return;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}
