//! `cargo xtask fuzz [--seconds N] [--target NAME]`: runs each coverage-guided fuzz target in
//! `fuzz/` (its own workspace, nightly Rust and `cargo-fuzz`) for N seconds, growing and then
//! minimising its corpus in `fuzz/corpus/<target>/`, which the test suite replays
//! (`crates/tiercache/tests/fuzz_corpus.rs`). An input that made a target fail goes to
//! `fuzz/regressions/<target>/` once fixed (replayed too; `cmin` never drops it). The executions
//! and executions per second of each run go to `target/tiercache-fuzz/report.md`.

use std::process::{Command, Stdio};

use crate::run;

/// The fuzz targets, one per decoder of bytes from outside.
pub(crate) const TARGETS: &[&str] = &["bus_wire", "value_header", "redis_frame", "stream_replies"];

/// Seconds per target unless `--seconds` says otherwise.
const DEFAULT_SECONDS: u64 = 600;

pub(crate) fn fuzz(args: &[String]) -> Result<(), String> {
    let seconds = run::seconds_arg(args, DEFAULT_SECONDS)?;
    let targets: Vec<&str> = match args.iter().position(|arg| arg == "--target") {
        Some(i) => {
            let name = args.get(i + 1).ok_or("--target needs a name")?;
            let target = TARGETS
                .iter()
                .find(|target| **target == name.as_str())
                .ok_or_else(|| format!("no fuzz target {name:?}; there are {TARGETS:?}"))?;
            vec![*target]
        }
        None => TARGETS.to_vec(),
    };
    ensure_cargo_fuzz()?;
    let mut rows = Vec::new();
    for target in targets {
        println!("== fuzz {target}: {seconds} s");
        let stats = run_target(target, seconds)?;
        println!("== fuzz {target}: minimising the corpus");
        nightly_fuzz(&["cmin", target])?;
        rows.push(format!(
            "| {target} | {seconds} | {} | {} | {} |",
            stats.executions, stats.per_second, stats.corpus
        ));
    }
    let dir = run::root().join("target").join("tiercache-fuzz");
    std::fs::create_dir_all(&dir)
        .map_err(|err| format!("cannot create {}: {err}", dir.display()))?;
    let report = format!(
        "| target | seconds | executions | executions/s | corpus files (before cmin) |\n|---|---|---|---|---|\n{}\n",
        rows.join("\n")
    );
    std::fs::write(dir.join("report.md"), &report)
        .map_err(|err| format!("cannot write the report: {err}"))?;
    println!("{report}");
    Ok(())
}

/// What libFuzzer said at the end of one run.
struct Stats {
    executions: String,
    per_second: String,
    corpus: String,
}

/// Runs `target` for `seconds`; its output goes to the terminal and its final stats are read.
/// A crash fails the task (libFuzzer leaves the input in `fuzz/artifacts/<target>/`).
fn run_target(target: &str, seconds: u64) -> Result<Stats, String> {
    let time = format!("-max_total_time={seconds}");
    // Without -O, cargo fuzz builds optimised with debug assertions and overflow checks on, so
    // an arithmetic overflow is a crash too.
    let output = nightly_command(&[
        "run",
        target,
        "--",
        &time,
        "-print_final_stats=1",
        "-max_len=4096",
    ])
    .stderr(Stdio::piped())
    .output()
    .map_err(|err| format!("cannot run cargo fuzz: {err}"))?;
    let log = String::from_utf8_lossy(&output.stderr);
    let tail: Vec<&str> = log.lines().rev().take(30).collect();
    for line in tail.iter().rev() {
        println!("{line}");
    }
    if !output.status.success() {
        return Err(format!(
            "fuzz target {target} failed ({}): the input is in fuzz/artifacts/{target}/; once \
             fixed, keep it in fuzz/regressions/{target}/",
            output.status
        ));
    }
    let stat = |name: &str| {
        log.lines()
            .find_map(|line| line.strip_prefix(name))
            .map_or_else(|| "?".to_owned(), |value| value.trim().to_owned())
    };
    let corpus = std::fs::read_dir(run::root().join("fuzz").join("corpus").join(target))
        .map_or(0, Iterator::count);
    Ok(Stats {
        executions: stat("stat::number_of_executed_units:"),
        per_second: stat("stat::average_exec_per_sec:"),
        corpus: corpus.to_string(),
    })
}

fn nightly_fuzz(args: &[&str]) -> Result<(), String> {
    let status = nightly_command(args)
        .status()
        .map_err(|err| format!("cannot run cargo fuzz: {err}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("cargo fuzz {} failed ({status})", args.join(" ")))
    }
}

/// `cargo +nightly fuzz <args>` in the workspace root (the rustup proxy picks the toolchain, so
/// the toolchain this task runs on must not be forced through the environment).
fn nightly_command(args: &[&str]) -> Command {
    let mut command = Command::new("cargo");
    command
        .arg("+nightly")
        .arg("fuzz")
        .args(args)
        .current_dir(run::root())
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO");
    command
}

fn ensure_cargo_fuzz() -> Result<(), String> {
    let works = nightly_command(&["--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if works {
        Ok(())
    } else {
        Err("fuzzing needs nightly Rust and cargo-fuzz: \
             `rustup toolchain install nightly && cargo install cargo-fuzz`"
            .into())
    }
}
