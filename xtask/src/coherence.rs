//! `cargo xtask coherence [--seconds N]`: the fleet coherence checker's long runs, one per
//! transport and configuration (the tests of `crates/tiercache/tests/coherence.rs`, each for N
//! seconds instead of 5), and their table in `target/tiercache-coherence/report.md`.

use crate::run;

/// Seconds per run unless `--seconds` says otherwise: enough for well over 100,000 operations
/// per transport on the project's two-core machine.
const DEFAULT_SECONDS: u64 = 60;

pub(crate) fn coherence(args: &[String]) -> Result<(), String> {
    let seconds = run::seconds_arg(args, DEFAULT_SECONDS)?;
    crate::redis::ensure_installed()?;
    let dir = run::root().join("target").join("tiercache-coherence");
    std::fs::create_dir_all(&dir)
        .map_err(|err| format!("cannot create {}: {err}", dir.display()))?;
    let rows = dir.join("rows.md");
    // NOTE: a previous run's rows would be mixed into this report.
    if rows.exists() {
        std::fs::remove_file(&rows)
            .map_err(|err| format!("cannot remove {}: {err}", rows.display()))?;
    }
    let seconds_text = seconds.to_string();
    let rows_text = rows.display().to_string();
    println!(
        "== coherence: 4 runs of {seconds} s (Pub/Sub, stream, tracking, no bus), 3 instances each"
    );
    let result = run::cargo(
        &[
            "test",
            "--release",
            "--package",
            "tiercache",
            "--all-features",
            "--test",
            "coherence",
            "--",
            "--test-threads",
            "1",
            "--nocapture",
        ],
        &[
            ("TIERCACHE_COHERENCE_SECONDS", &seconds_text),
            ("TIERCACHE_COHERENCE_REPORT", &rows_text),
        ],
    );
    let body = std::fs::read_to_string(&rows).unwrap_or_default();
    let report = format!(
        "# Fleet coherence\n\n`cargo xtask coherence --seconds {seconds}`: three instances (L1 + Redis + bus) over one \
         redis-server, cache-aside writers and readers on each. The fault cycle: every 5 s the Pub/Sub connections are \
         killed, the server is frozen for 400 ms, then killed and restarted after 300 ms (and the stream trimmed away, \
         on the stream bus); \"partitioned\": one instance's proxy carries nothing for 1 s, twice.\n\n\
         | transport | seed | ops | writes | faults | violations | max staleness away from faults | max staleness, other instances | max staleness, writer | bound healthy / faulty |\n\
         |---|---|---|---|---|---|---|---|---|---|\n{body}"
    );
    let path = dir.join("report.md");
    std::fs::write(&path, &report)
        .map_err(|err| format!("cannot write {}: {err}", path.display()))?;
    println!("{report}");
    println!("written to {}", path.display());
    result
}
