//! Making sure the service's tests (and `cargo xtask service`) find a PostgreSQL:
//! `DATABASE_URL`, the server on 127.0.0.1:5432 when it lets `postgres` into `test` without a
//! password, or Debian's `postgresql` package, from which tiercache-testkit's `Postgres` starts a
//! private server. (A freshly installed Debian cluster asks for a password on 127.0.0.1 and has
//! no `test` database: then the private server is used.)

use std::path::Path;

use crate::redis::{apt_get, is_root};

const INSTRUCTION: &str = "no PostgreSQL lets user postgres into database test on 127.0.0.1:5432, DATABASE_URL is not set, and initdb is missing: run `sudo apt-get install -y postgresql` (Debian/Ubuntu) or set DATABASE_URL, then run again";

fn initdb_installed() -> bool {
    std::fs::read_dir("/usr/lib/postgresql").is_ok_and(|versions| {
        versions
            .filter_map(Result::ok)
            .any(|version| Path::new(&version.path()).join("bin/initdb").exists())
    })
}

/// Says which PostgreSQL will be used; installs the server package with apt-get when none can be
/// and we are root; otherwise fails with a one-line instruction.
pub(crate) fn ensure_available() -> Result<(), String> {
    if std::env::var("DATABASE_URL").is_ok() {
        println!("== PostgreSQL: DATABASE_URL");
        return Ok(());
    }
    if tiercache_testkit::lets_in(5432, "postgres", "test") {
        println!("== PostgreSQL: 127.0.0.1:5432, database test (each test in a schema of its own)");
        return Ok(());
    }
    if !initdb_installed() && is_root() {
        println!("== PostgreSQL is missing: installing it with apt-get");
        let _updated = apt_get(&["update", "-qq"]);
        let _installed = apt_get(&["install", "-y", "-qq", "postgresql"]);
    }
    if initdb_installed() {
        println!(
            "== PostgreSQL: none lets us in on 127.0.0.1:5432; a private server is started (initdb)"
        );
        Ok(())
    } else {
        Err(INSTRUCTION.to_owned())
    }
}
