//! Project automation, run as `cargo xtask <task>`:
//!
//! - `test`: the whole test suite (what CI and a new user run).
//! - `lint`: fmt check, clippy with `-D warnings`, the facade's feature matrix, `cargo doc` with
//!   `-D warnings`, and `cargo deny` when it is installed.
//! - `package`: `cargo package` of every publishable crate, each built from its packaged files
//!   against the others (cargo's local overlay), offline.
//! - `ci`: `lint`, `package`, then `test`.
//! - `bench [--quick] [--filter NAME]`: every bench, then one table of ratios against the raw
//!   dependencies, also written to `target/tiercache-bench/report.md`, with a bar chart of the
//!   ratios in `target/tiercache-bench/ratios.svg`. The CPU-bound rows are also counted in
//!   instructions by callgrind (`--filter instructions`), which repeat to within 1 %.
//! - `coherence [--seconds N]`: the fleet coherence checker's long runs, one per transport, and
//!   their table in `target/tiercache-coherence/report.md`.
//! - `fuzz [--seconds N] [--target NAME]`: each fuzz target in `fuzz/` for N seconds (600 by
//!   default; nightly Rust and cargo-fuzz), keeping the corpus that `test` replays.
//! - `service [--instances N] [--load] [--seconds S]`: the products service as N instances;
//!   with `--load`, wrk against them with and without the cache, and the table.
#![expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line tool reports on the terminal"
)]

mod bench;
mod coherence;
mod fuzz;
mod postgres;
mod redis;
mod run;
mod scaling;
mod service;
mod svg;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(),
        Some("lint") => lint(),
        Some("package") => package(),
        Some("ci") => lint()
            .and_then(|()| package())
            .and_then(|()| run::step("tests", test)),
        Some("bench") => bench::bench(&args[1..]),
        Some("coherence") => coherence::coherence(&args[1..]),
        Some("fuzz") => fuzz::fuzz(&args[1..]),
        Some("service") => service::service(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <test | lint | package | ci | bench [--quick] [--filter NAME] | coherence [--seconds N] | fuzz [--seconds N] [--target NAME] | service [--instances N] [--load] [--seconds S]>"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The test suite: every crate, every feature, unit, integration, example and doc tests. The
/// Redis tests start their own `redis-server`, so it must be installed; the service's tests need
/// a PostgreSQL (found, or started privately from Debian's package).
fn test() -> Result<(), String> {
    redis::ensure_installed()?;
    postgres::ensure_available()?;
    run::cargo(&["test", "--workspace", "--all-features"], &[])?;
    // What only a build without a feature can show: a `rediss://` URL refused without `tls`.
    run::cargo(&["test", "--package", "tiercache-redis", "--lib"], &[])
}

/// The crates that are never published (`publish = false`).
const UNPUBLISHED: [&str; 4] = [
    "tiercache-benches",
    "tiercache-examples",
    "tiercache-service",
    "xtask",
];

/// Packages every publishable crate and builds each from its package, the way crates.io would
/// get it: a missing file, a path outside the crate, a dependency without a version shows here.
/// Offline: the dependencies come from the local cache that the build filled. What this cannot
/// check without the network: that the names are free on crates.io, and the upload itself.
/// `--allow-dirty` so that it runs on a working tree too (CI's clone is clean anyway).
fn package() -> Result<(), String> {
    run::step("package", || {
        let mut args = vec!["package", "--workspace", "--offline", "--allow-dirty"];
        for crate_name in UNPUBLISHED {
            args.extend(["--exclude", crate_name]);
        }
        run::cargo(&args, &[])
    })
}

fn lint() -> Result<(), String> {
    run::step("format", || {
        run::cargo(&["fmt", "--all", "--", "--check"], &[])
    })?;
    run::step("clippy", || {
        run::cargo(
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--all-features",
                "--",
                "-D",
                "warnings",
            ],
            &[],
        )
    })?;
    for features in [
        &["--no-default-features"][..],
        &["--no-default-features", "--features", "moka"],
        &["--all-features"],
    ] {
        run::step(
            &format!("facade builds with {}", features.join(" ")),
            || {
                let mut args = vec!["check", "--package", "tiercache"];
                args.extend_from_slice(features);
                run::cargo(&args, &[])
            },
        )?;
    }
    run::step("no fred in a memory-only build", || {
        let tree = run::cargo_output(&[
            "tree",
            "--package",
            "tiercache",
            "--no-default-features",
            "--features",
            "moka",
            "--edges",
            "normal",
            "--prefix",
            "none",
        ])?;
        match tree.lines().find(|line| line.starts_with("fred ")) {
            Some(line) => Err(format!("fred is in the memory-only tree: {line}")),
            None => Ok(()),
        }
    })?;
    run::step("docs", || {
        run::cargo(
            &["doc", "--workspace", "--no-deps", "--all-features"],
            &[("RUSTDOCFLAGS", "-D warnings")],
        )
    })?;
    if run::cargo_output(&["deny", "--version"]).is_ok() {
        run::step("cargo deny", || {
            run::cargo(&["deny", "check", "licenses", "bans", "sources"], &[])
        })?;
    } else {
        println!("== cargo deny: not installed, skipped (cargo install cargo-deny to run it)");
    }
    println!("== lint: all steps passed");
    Ok(())
}
