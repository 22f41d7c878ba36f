//! Making sure `redis-server` is there for the tests that start their own.

use std::process::{Command, Stdio};

const INSTRUCTION: &str = "redis-server is not installed: run `sudo apt-get install -y redis-server` (Debian/Ubuntu) or install Redis 7 from your package manager, then run again";

fn installed() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

pub(crate) fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

pub(crate) fn apt_get(args: &[&str]) -> bool {
    Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .is_ok_and(|status| status.success())
}

/// Installs `redis-server` with apt-get when it is missing and we are root; otherwise fails with
/// a one-line instruction.
pub(crate) fn ensure_installed() -> Result<(), String> {
    if installed() {
        return Ok(());
    }
    if is_root() {
        println!("== redis-server is missing: installing it with apt-get");
        if apt_get(&["update", "-qq"])
            && apt_get(&["install", "-y", "-qq", "redis-server"])
            && installed()
        {
            return Ok(());
        }
    }
    Err(INSTRUCTION.to_owned())
}
