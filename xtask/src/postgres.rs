//! Making sure the service's tests find a PostgreSQL: `DATABASE_URL`, the server on
//! 127.0.0.1:5432, or Debian's `postgresql` package, from which the tests start a private one
//! (tiercache-testkit's `Postgres`).

use std::{
    net::{Ipv4Addr, SocketAddrV4, TcpStream},
    path::Path,
    time::Duration,
};

use crate::redis::{apt_get, is_root};

const INSTRUCTION: &str = "no PostgreSQL answers on 127.0.0.1:5432, DATABASE_URL is not set, and initdb is missing: run `sudo apt-get install -y postgresql` (Debian/Ubuntu) or set DATABASE_URL, then run again";

fn initdb_installed() -> bool {
    std::fs::read_dir("/usr/lib/postgresql").is_ok_and(|versions| {
        versions
            .filter_map(Result::ok)
            .any(|version| Path::new(&version.path()).join("bin/initdb").exists())
    })
}

/// Says which PostgreSQL the tests will use; installs the server package with apt-get when
/// none answers and we are root; otherwise fails with a one-line instruction.
pub(crate) fn ensure_available() -> Result<(), String> {
    if std::env::var("DATABASE_URL").is_ok() {
        println!("== PostgreSQL: DATABASE_URL");
        return Ok(());
    }
    let local = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5432);
    if TcpStream::connect_timeout(&local.into(), Duration::from_secs(1)).is_ok() {
        println!("== PostgreSQL: 127.0.0.1:5432 (each test in a schema of its own)");
        return Ok(());
    }
    if !initdb_installed() && is_root() {
        println!("== PostgreSQL is missing: installing it with apt-get");
        let _updated = apt_get(&["update", "-qq"]);
        let _installed = apt_get(&["install", "-y", "-qq", "postgresql"]);
    }
    if initdb_installed() {
        println!("== PostgreSQL: none answers; the tests start a private server (initdb)");
        Ok(())
    } else {
        Err(INSTRUCTION.to_owned())
    }
}
