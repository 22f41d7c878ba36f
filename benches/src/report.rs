//! Results of the benches that criterion does not time (counts, percentiles, bytes): each writes
//! one small JSON file that `cargo xtask bench` puts in its table.

use std::{io, path::PathBuf};

/// `target/tiercache-bench`, where results and the report go.
pub fn results_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target")
        });
    target.join("tiercache-bench")
}

/// Whether the run was asked to be quick (`-- --quick`).
pub fn quick() -> bool {
    std::env::args().any(|arg| arg == "--quick")
}

/// Whether this bench (or part of one) was selected: cargo passes a filter when
/// `cargo bench -- NAME` is used; `cargo xtask bench` passes `^(a|b|c)/`, any of whose names
/// selects.
pub fn selected(name: &str) -> bool {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with("--"))
        .collect();
    filters.is_empty()
        || filters.iter().any(|f| {
            f.trim_matches(['^', '/', '(', ')'])
                .split('|')
                .any(|part| name.contains(part))
        })
}

/// Writes `{"tiercache": .., "baseline": .., "baseline_name": ..}` for `scenario`.
///
/// # Errors
///
/// When the file cannot be written.
pub fn write(scenario: &str, tiercache: f64, baseline: f64, baseline_name: &str) -> io::Result<()> {
    let dir = results_dir();
    std::fs::create_dir_all(&dir)?;
    let json = format!(
        "{{\"tiercache\": {tiercache}, \"baseline\": {baseline}, \"baseline_name\": \"{baseline_name}\"}}\n"
    );
    std::fs::write(dir.join(format!("{scenario}.json")), json)
}
