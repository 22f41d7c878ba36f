//! PostgreSQL for tests (feature `postgres`): the server at `DATABASE_URL`, else the one on
//! 127.0.0.1:5432 when it lets user `postgres` into database `test` without a password (a
//! freshly installed Debian cluster asks for one, and has no `test`), else a private server
//! started here — `initdb` into a
//! scratch directory (as the `postgres` user when run as root, since PostgreSQL refuses to run
//! as root), on a free loopback port, trust authentication. Never a silent skip: when no server
//! answers and none can be started, the error says how to install one.
//!
//! A private server is shared by every test of the process and stopped when the process ends
//! (a watcher stops it once the test process is gone). Each test should work in a schema or
//! database of its own and drop it.

use std::{
    io::{self, Read, Write},
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
    time::Duration,
};

/// The one-line instruction when no PostgreSQL answers and none can be started.
pub const POSTGRES_HINT: &str = "no PostgreSQL answers at DATABASE_URL or 127.0.0.1:5432 and none could be started: run `apt-get install -y postgresql` (or `cargo xtask test`, which installs it when run as root), or set DATABASE_URL";

/// Set to `private` to use a private server even when 127.0.0.1:5432 answers (how the private
/// path is tested on a machine that has one).
pub const FORCE_PRIVATE_ENV: &str = "TIERCACHE_TEST_POSTGRES";

/// The local server's `test` database, trust authentication.
const LOCAL_URL: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";

/// Where a test finds PostgreSQL.
#[derive(Debug)]
pub struct Postgres {
    url: String,
    private: Option<PrivateServer>,
}

impl Postgres {
    /// The server every test of this process uses (found or started on first use).
    ///
    /// # Errors
    ///
    /// [`POSTGRES_HINT`] when no server answers and none can be started, with the reason.
    pub fn shared() -> io::Result<&'static Postgres> {
        static SHARED: OnceLock<Result<Postgres, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| Self::find_or_start().map_err(|err| err.to_string()))
            .as_ref()
            .map_err(|err| io::Error::other(err.clone()))
    }

    fn find_or_start() -> io::Result<Self> {
        let force_private = std::env::var(FORCE_PRIVATE_ENV).is_ok_and(|value| value == "private");
        if !force_private {
            if let Ok(url) = std::env::var("DATABASE_URL") {
                return Ok(Self { url, private: None });
            }
            if lets_in(5432, "postgres", "test") {
                return Ok(Self {
                    url: LOCAL_URL.to_owned(),
                    private: None,
                });
            }
        }
        let private = PrivateServer::start()
            .map_err(|err| io::Error::other(format!("{POSTGRES_HINT} ({err})")))?;
        Ok(Self {
            url: format!(
                "host=127.0.0.1 port={} user=postgres dbname=postgres",
                private.port
            ),
            private: Some(private),
        })
    }

    /// A libpq-style connection string (`host=… port=… user=… dbname=…` or a URL).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether this is a private server started by this process.
    pub fn is_private(&self) -> bool {
        self.private.is_some()
    }
}

/// Whether the server on 127.0.0.1:`port` lets `user` into `database` without a password: the
/// protocol's startup message, answered by "authentication ok" (then the session is ended).
pub fn lets_in(port: u16, user: &str, database: &str) -> bool {
    let address = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
    let Ok(mut stream) = TcpStream::connect_timeout(&address.into(), Duration::from_secs(1)) else {
        return false;
    };
    let _timeouts = stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .and_then(|()| stream.set_write_timeout(Some(Duration::from_secs(2))));
    let mut body = 196_608_u32.to_be_bytes().to_vec(); // protocol 3.0
    for part in ["user", user, "database", database, ""] {
        body.extend_from_slice(part.as_bytes());
        body.push(0);
    }
    let Ok(len) = u32::try_from(body.len() + 4) else {
        return false;
    };
    let mut startup = len.to_be_bytes().to_vec();
    startup.extend_from_slice(&body);
    if stream.write_all(&startup).is_err() {
        return false;
    }
    let ok = session_starts(&mut stream);
    // Terminate.
    let _bye = stream.write_all(&[b'X', 0, 0, 0, 4]);
    ok
}

/// Reads the server's answer to a startup message: yes once it says ReadyForQuery (`Z`) after
/// AuthenticationOk; no on a password request (any other `R`), an error (`E`, such as "database
/// does not exist"), or anything unexpected.
fn session_starts(stream: &mut TcpStream) -> bool {
    let mut authenticated = false;
    // Parameter statuses and the backend key come between; a handful of messages at most.
    for _ in 0..64 {
        let mut head = [0_u8; 5];
        if stream.read_exact(&mut head).is_err() {
            return false;
        }
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
        let Some(body_len) = usize::try_from(len).ok().and_then(|len| len.checked_sub(4)) else {
            return false;
        };
        if body_len > 64 * 1024 {
            return false;
        }
        let mut body = vec![0_u8; body_len];
        if stream.read_exact(&mut body).is_err() {
            return false;
        }
        match head[0] {
            b'R' if body == [0, 0, 0, 0] => authenticated = true,
            b'Z' => return authenticated,
            b'R' | b'E' => return false,
            _ => {}
        }
    }
    false
}

/// A PostgreSQL server this process started.
#[derive(Debug)]
struct PrivateServer {
    port: u16,
    #[expect(
        dead_code,
        reason = "kept for Debug output: where the server's files are"
    )]
    dir: PathBuf,
}

fn bin_dir() -> io::Result<PathBuf> {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return Ok(dir);
        }
    }
    // Debian puts the server's programs under /usr/lib/postgresql/<version>/bin.
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")?
        .filter_map(Result::ok)
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    found.sort();
    found
        .pop()
        .ok_or_else(|| io::Error::other("initdb not found under /usr/lib/postgresql"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// `program args…`, as the `postgres` user when we are root.
fn as_server_user(program: &Path, args: &[&str]) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command
            .args(["-u", "postgres", "--"])
            .arg(program)
            .args(args);
        command
    } else {
        let mut command = Command::new(program);
        command.args(args);
        command
    }
}

fn run(mut command: Command, what: &str) -> io::Result<()> {
    let out = command.stdin(Stdio::null()).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

impl PrivateServer {
    fn start() -> io::Result<Self> {
        let bin = bin_dir()?;
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        // Under /tmp rather than TMPDIR: the `postgres` user must be able to enter it.
        let dir = Path::new("/tmp").join(format!("tiercache-pg-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let data = dir.join("data");
        let data_arg = data.to_string_lossy().into_owned();
        let dir_arg = dir.to_string_lossy().into_owned();
        // Stopped and removed once this process is gone (statics are never dropped), and if
        // starting it fails half-way: a watcher, in a session of its own so that a Ctrl-C of the
        // tests does not end it first, waits for our pid to disappear.
        let pg_ctl = bin.join("pg_ctl").to_string_lossy().into_owned();
        let stop = if is_root() {
            format!("runuser -u postgres -- {pg_ctl} -D {data_arg} -m immediate stop")
        } else {
            format!("{pg_ctl} -D {data_arg} -m immediate stop")
        };
        let watcher = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf {dir_arg}",
            pid = std::process::id()
        );
        Command::new("setsid")
            .args(["sh", "-c", &watcher])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        if is_root() {
            run(
                {
                    let mut chown = Command::new("chown");
                    chown.arg("postgres:postgres").arg(&dir);
                    chown
                },
                "chown",
            )?;
        }
        run(
            as_server_user(
                &bin.join("initdb"),
                &[
                    "-D",
                    &data_arg,
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "--no-sync",
                ],
            ),
            "initdb",
        )?;
        let options = format!(
            "-p {port} -k {dir_arg} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        );
        let log = dir.join("server.log").to_string_lossy().into_owned();
        run(
            as_server_user(
                &bin.join("pg_ctl"),
                &["-D", &data_arg, "-o", &options, "-l", &log, "-w", "start"],
            ),
            "pg_ctl start",
        )?;
        Ok(Self { port, dir })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_tells_a_usable_server_from_a_closed_port_and_a_missing_database() {
        let closed = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .unwrap_or(1);
        assert!(!lets_in(closed, "postgres", "test"));
        let local = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5432);
        if TcpStream::connect_timeout(&local.into(), Duration::from_secs(1)).is_ok() {
            assert!(!lets_in(5432, "postgres", "no_such_database_here"));
            assert!(!lets_in(5432, "no_such_role_here", "test"));
        }
    }
}
