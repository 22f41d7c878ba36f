//! Redis servers for tests: each test starts its own `redis-server` on a free loopback port, so
//! tests are isolated, run in parallel, and can stop, pause or restart their server.
//!
//! Nothing here touches a server it did not start: no port 6379, no FLUSHALL.

use std::{
    io::{self, BufRead, BufReader, Write},
    net::{Ipv4Addr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

/// How long a server gets to answer PING after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The one-line instruction printed when `redis-server` is missing.
pub const INSTALL_HINT: &str = "redis-server is not installed: run `apt-get install -y redis-server` (or `cargo xtask test`, which installs it when run as root)";

/// A `redis-server` process this test started, on 127.0.0.1 and a port of its own. Dropping it
/// kills the process and removes its directory.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    tls_port: Option<u16>,
    dir: PathBuf,
    extra_args: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server with persistence off, and waits until it answers PING.
    ///
    /// # Errors
    ///
    /// When `redis-server` is missing (the error says how to install it) or does not come up.
    pub fn start() -> io::Result<Self> {
        Self::start_with(&[])
    }

    /// The Redis an example should use: `REDIS_URL` when it is set (and no server of ours),
    /// otherwise a private server started here, which lives as long as the returned value.
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start), when a private server is needed.
    pub fn from_env_or_start() -> io::Result<(String, Option<Self>)> {
        match std::env::var("REDIS_URL") {
            Ok(url) => Ok((url, None)),
            Err(_) => {
                let server = Self::start()?;
                Ok((server.url(), Some(server)))
            }
        }
    }

    /// Starts a server with extra `redis-server` arguments (for example cluster mode).
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start).
    pub fn start_with(extra_args: &[&str]) -> io::Result<Self> {
        Self::start_in(&scratch_dir()?, extra_args)
    }

    /// Starts a server that also takes TLS connections on [`tls_port`](Self::tls_port), with the
    /// certificate and key given in PEM (clients are not asked for certificates). The plain port
    /// stays open for the test's own commands.
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start), or when the files cannot be written.
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> io::Result<Self> {
        let dir = scratch_dir()?;
        let cert = dir.join("server.crt");
        let key = dir.join("server.key");
        std::fs::write(&cert, cert_pem)?;
        std::fs::write(&key, key_pem)?;
        let (cert, key) = (cert.to_string_lossy(), key.to_string_lossy());
        let mut last_error = None;
        for _ in 0..5 {
            let tls_port = free_port()?.to_string();
            let args = [
                "--tls-port",
                &tls_port,
                "--tls-cert-file",
                &cert,
                "--tls-key-file",
                &key,
                "--tls-auth-clients",
                "no",
            ];
            match Self::start_in(&dir, &args) {
                Ok(mut server) => {
                    server.tls_port = tls_port.parse().ok();
                    return Ok(server);
                }
                Err(err) => last_error = Some(err),
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("redis-server did not start")))
    }

    fn start_in(dir: &Path, extra_args: &[&str]) -> io::Result<Self> {
        let mut last_error = None;
        // A port found free can be taken by another test before the server binds it: try again.
        for _ in 0..5 {
            let mut server = Self {
                port: free_port()?,
                tls_port: None,
                dir: dir.to_path_buf(),
                extra_args: extra_args.iter().map(|a| (*a).to_owned()).collect(),
                child: None,
            };
            match server.launch() {
                Ok(()) => return Ok(server),
                Err(err) => last_error = Some(err),
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("redis-server did not start")))
    }

    /// The server's URL, `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The TLS port of a server started with [`start_tls`](Self::start_tls).
    pub fn tls_port(&self) -> Option<u16> {
        self.tls_port
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server (SIGKILL) and waits for it to exit. Connections to it drop at once.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Both fail only if the process is already gone, which is the goal.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, empty, and waits for PING.
    ///
    /// # Errors
    ///
    /// When it does not come back up.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop();
        self.launch()
    }

    /// Freezes the server (SIGSTOP): its connections stay open but nothing is answered, as with
    /// a server stuck in a long command or a machine under swap.
    ///
    /// # Errors
    ///
    /// When the signal cannot be sent.
    pub fn pause(&self) -> io::Result<()> {
        self.signal("-STOP")
    }

    /// Thaws a paused server (SIGCONT).
    ///
    /// # Errors
    ///
    /// When the signal cannot be sent.
    pub fn resume(&self) -> io::Result<()> {
        self.signal("-CONT")
    }

    /// Sends one command (space-separated words, no quoting) and returns the first reply line.
    ///
    /// # Errors
    ///
    /// When the server cannot be reached.
    pub fn command(&self, words: &[&str]) -> io::Result<String> {
        command(self.port, words)
    }

    /// Sends one command whose words are any bytes (a binary `PUBLISH` payload) and returns the
    /// first reply line.
    ///
    /// # Errors
    ///
    /// When the server cannot be reached.
    pub fn command_bytes(&self, words: &[&[u8]]) -> io::Result<String> {
        command_bytes(self.port, words)
    }

    /// Sends a command whose reply is one bulk string (`CLIENT LIST`, `INFO`) and returns it.
    ///
    /// # Errors
    ///
    /// When the server cannot be reached or the reply is not a bulk string.
    pub fn bulk_command(&self, words: &[&str]) -> io::Result<String> {
        bulk_command(self.port, words)
    }

    /// Kills the client connections whose last command was `command` (for example `xread`, the
    /// blocking readers), and returns how many.
    ///
    /// # Errors
    ///
    /// When the server cannot be reached.
    pub fn kill_clients_running(&self, command_name: &str) -> io::Result<usize> {
        let list = self.bulk_command(&["CLIENT", "LIST"])?;
        let wanted = format!("cmd={command_name}");
        let ids: Vec<&str> = list
            .lines()
            .filter(|line| line.split(' ').any(|field| field == wanted))
            .filter_map(|line| line.split(' ').find_map(|field| field.strip_prefix("id=")))
            .collect();
        for id in &ids {
            command(self.port, &["CLIENT", "KILL", "ID", id])?;
        }
        Ok(ids.len())
    }

    fn signal(&self, signal: &str) -> io::Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| io::Error::other("the server is not running"))?;
        let status = Command::new("kill")
            .arg(signal)
            .arg(pid.to_string())
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!("kill {signal} {pid} failed")))
        }
    }

    fn launch(&mut self) -> io::Result<()> {
        let port = self.port.to_string();
        let dir = self.dir.to_string_lossy().into_owned();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args([
                "--dir",
                &dir,
                "--protected-mode",
                "no",
                "--loglevel",
                "warning",
            ])
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|err| match err.kind() {
                io::ErrorKind::NotFound => io::Error::new(io::ErrorKind::NotFound, INSTALL_HINT),
                _ => err,
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(reply) = command(self.port, &["PING"])
                && reply == "+PONG"
            {
                return Ok(());
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                self.stop();
                return Err(io::Error::other(format!(
                    "redis-server on port {port} did not start"
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // A paused server must be thawed, or it would not see the kill until it is.
        let _ = self.resume();
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Three Redis primaries forming a cluster, each started by this test.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three cluster-enabled servers, joins them with `redis-cli --cluster create`, and
    /// waits until every node reports `cluster_state:ok`.
    ///
    /// # Errors
    ///
    /// When a server does not start or the cluster does not form.
    pub fn start() -> io::Result<Self> {
        let mut nodes = Vec::with_capacity(3);
        for _ in 0..3 {
            nodes.push(RedisServer::start_with(&[
                "--cluster-enabled",
                "yes",
                "--cluster-node-timeout",
                "5000",
            ])?);
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let output = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()?;
        if !output.status.success() {
            return Err(io::Error::other(format!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&output.stdout)
            )));
        }
        let cluster = Self { nodes };
        cluster.wait_until_ok()?;
        Ok(cluster)
    }

    /// A URL fred reads as a cluster: `redis-cluster://host:port?node=host:port&node=...`.
    pub fn url(&self) -> String {
        let mut url = format!("redis-cluster://127.0.0.1:{}", self.nodes[0].port);
        for (i, node) in self.nodes.iter().enumerate().skip(1) {
            url.push(if i == 1 { '?' } else { '&' });
            url.push_str(&format!("node=127.0.0.1:{}", node.port));
        }
        url
    }

    /// The nodes.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// Waits until every node reports `cluster_state:ok` and sees every other node connected:
    /// before that, a PUBLISH may not yet travel the cluster bus to every node.
    fn wait_until_ok(&self) -> io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        for node in &self.nodes {
            loop {
                let info = cluster_info(node.port).unwrap_or_default();
                let nodes = bulk_command(node.port, &["CLUSTER", "NODES"]).unwrap_or_default();
                let links_up = nodes.lines().count() == self.nodes.len()
                    && nodes.lines().all(|line| line.contains(" connected"));
                if info.contains("cluster_state:ok") && links_up {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(io::Error::other(
                        "the cluster did not reach cluster_state:ok with every link up",
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }
}

/// Whether `redis-server` can be run here.
pub fn redis_server_available() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

fn scratch_dir() -> io::Result<PathBuf> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("tiercache-redis-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn connect(port: u16) -> io::Result<TcpStream> {
    let stream =
        TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    Ok(stream)
}

/// Sends a command in RESP and returns the first line of the reply.
fn command(port: u16, words: &[&str]) -> io::Result<String> {
    let words: Vec<&[u8]> = words.iter().map(|word| word.as_bytes()).collect();
    command_bytes(port, &words)
}

/// Sends a command of binary words in RESP and returns the first line of the reply.
fn command_bytes(port: u16, words: &[&[u8]]) -> io::Result<String> {
    let mut stream = connect(port)?;
    let mut request = format!("*{}\r\n", words.len()).into_bytes();
    for word in words {
        request.extend_from_slice(format!("${}\r\n", word.len()).as_bytes());
        request.extend_from_slice(word);
        request.extend_from_slice(b"\r\n");
    }
    stream.write_all(&request)?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    Ok(line.trim_end().to_owned())
}

/// Sends a command and reads its bulk-string reply (`CLUSTER INFO`, `CLIENT LIST`) as text.
fn bulk_command(port: u16, words: &[&str]) -> io::Result<String> {
    let mut stream = connect(port)?;
    let mut request = format!("*{}\r\n", words.len());
    for word in words {
        request.push_str(&format!("${}\r\n{word}\r\n", word.len()));
    }
    stream.write_all(request.as_bytes())?;
    let mut reader = BufReader::new(stream);
    let mut header = String::new();
    reader.read_line(&mut header)?;
    let len: usize = header
        .strip_prefix('$')
        .ok_or_else(|| io::Error::other(format!("not a bulk reply: {}", header.trim_end())))?
        .trim_end()
        .parse()
        .map_err(io::Error::other)?;
    let mut body = vec![0; len];
    std::io::Read::read_exact(&mut reader, &mut body)?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// `CLUSTER INFO` as text.
fn cluster_info(port: u16) -> io::Result<String> {
    bulk_command(port, &["CLUSTER", "INFO"])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_starts_stops_restarts_and_pauses() {
        let mut server = RedisServer::start().unwrap();
        assert_ne!(server.port(), 6379);
        assert_eq!(server.command(&["SET", "k", "v"]).unwrap(), "+OK");
        server.stop();
        assert!(server.command(&["PING"]).is_err());
        server.restart().unwrap();
        assert_eq!(
            server.command(&["GET", "k"]).unwrap(),
            "$-1",
            "a restarted server is empty"
        );
        server.pause().unwrap();
        assert!(
            server.command(&["PING"]).is_err(),
            "a paused server answers nothing"
        );
        server.resume().unwrap();
        assert_eq!(server.command(&["PING"]).unwrap(), "+PONG");
    }

    #[test]
    fn a_cluster_forms() {
        let cluster = RedisCluster::start().unwrap();
        assert!(cluster.url().starts_with("redis-cluster://127.0.0.1:"));
        for node in cluster.nodes() {
            assert!(
                cluster_info(node.port())
                    .unwrap()
                    .contains("cluster_state:ok")
            );
        }
    }
}
