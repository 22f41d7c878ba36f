//! `cargo xtask bench`: runs the criterion benches and prints each scenario next to its raw
//! baseline, measured in the same run.

use std::{fmt::Write as _, path::Path};

use crate::run;

/// What a scenario's ratio must be.
#[derive(Clone, Copy)]
enum Target {
    /// tiercache's time over the baseline's time, at most this (latency).
    AtMost(f64),
    /// The baseline's time over tiercache's time, at least this (throughput: both cases time
    /// the same number of operations).
    ThroughputAtLeast(f64),
}

impl Target {
    /// The ratio shown for this target, from the two median times.
    fn ratio(self, ours_ns: f64, raw_ns: f64) -> f64 {
        match self {
            Self::AtMost(_) => ours_ns / raw_ns,
            Self::ThroughputAtLeast(_) => raw_ns / ours_ns,
        }
    }

    fn met(self, ratio: f64) -> bool {
        match self {
            Self::AtMost(limit) => ratio <= limit,
            Self::ThroughputAtLeast(limit) => ratio >= limit,
        }
    }

    fn describe(self) -> String {
        match self {
            Self::AtMost(limit) => format!("time <= {limit:.2}x"),
            Self::ThroughputAtLeast(limit) => format!("throughput >= {limit:.2}x"),
        }
    }
}

/// One row of the table: a criterion group holding a `tiercache` case and one raw baseline.
struct Scenario {
    name: &'static str,
    bench: &'static str,
    group: &'static str,
    target: Target,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "typed L1 hit (get, 1 KiB struct, 100k keys)",
        bench: "l1_hit",
        group: "l1_hit",
        target: Target::AtMost(1.3),
    },
    Scenario {
        name: "get_or_compute on an L1 hit",
        bench: "l1_hit",
        group: "get_or_compute_hit",
        target: Target::AtMost(1.3),
    },
    Scenario {
        name: "typed L1 hit, shared Arc (get_arc)",
        bench: "l1_hit",
        group: "l1_hit_arc",
        target: Target::AtMost(1.3),
    },
    Scenario {
        name: "L2 hit (L1 miss, Redis GET + decode)",
        bench: "l2",
        group: "l2_hit",
        target: Target::AtMost(1.1),
    },
    Scenario {
        name: "L2 hits, 64 concurrent tasks",
        bench: "l2",
        group: "l2_throughput",
        target: Target::ThroughputAtLeast(0.9),
    },
];

pub(crate) fn bench(args: &[String]) -> Result<(), String> {
    // The L2 benches start their own redis-server.
    crate::redis::ensure_installed()?;
    let quick = args.iter().any(|a| a == "--quick");
    let filter = args
        .iter()
        .position(|a| a == "--filter")
        .map(|i| {
            args.get(i + 1)
                .cloned()
                .ok_or("--filter needs a scenario name")
        })
        .transpose()?;
    let chosen: Vec<&Scenario> = SCENARIOS
        .iter()
        .filter(|s| {
            filter
                .as_deref()
                .is_none_or(|f| s.group.contains(f) || s.bench.contains(f))
        })
        .collect();
    if chosen.is_empty() {
        let groups: Vec<&str> = SCENARIOS.iter().map(|s| s.group).collect();
        return Err(format!(
            "no scenario matches; scenarios: {}",
            groups.join(", ")
        ));
    }

    let mut benches: Vec<&str> = chosen.iter().map(|s| s.bench).collect();
    benches.dedup();
    for bench in benches {
        let groups: Vec<&str> = chosen
            .iter()
            .filter(|s| s.bench == bench)
            .map(|s| s.group)
            .collect();
        let filter_regex = format!("^({})/", groups.join("|"));
        let mut cargo_args = vec![
            "bench",
            "--package",
            "tiercache-benches",
            "--bench",
            bench,
            "--",
        ];
        cargo_args.push(&filter_regex);
        if quick {
            cargo_args.push("--quick");
        }
        println!("== bench {bench}{}", if quick { " (quick)" } else { "" });
        run::cargo(&cargo_args, &[])?;
    }

    let table = report(&chosen);
    println!("\n{table}");
    let dir = run::root().join("target").join("tiercache-bench");
    std::fs::create_dir_all(&dir)
        .map_err(|err| format!("cannot create {}: {err}", dir.display()))?;
    let path = dir.join("report.md");
    std::fs::write(&path, &table)
        .map_err(|err| format!("cannot write {}: {err}", path.display()))?;
    println!("written to {}", path.display());
    Ok(())
}

fn report(scenarios: &[&Scenario]) -> String {
    let criterion = run::root().join("target").join("criterion");
    let mut table = String::from(
        "| scenario | tiercache (median) | raw baseline (median) | ratio | target | result |\n|---|---|---|---|---|---|\n",
    );
    for scenario in scenarios {
        let group = criterion.join(scenario.group);
        let ours = median_ns(&group.join("tiercache"));
        let raw = baseline_dir(&group).and_then(|dir| median_ns(&dir).map(|ns| (dir, ns)));
        let row = match (ours, raw) {
            (Some(ours), Some((dir, raw))) if raw > 0.0 => {
                let ratio = scenario.target.ratio(ours, raw);
                let name = dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let verdict = if scenario.target.met(ratio) {
                    "met"
                } else {
                    "missed"
                };
                format!(
                    "| {} | {} | {} ({name}) | {ratio:.2}x | {} | {verdict} |",
                    scenario.name,
                    human(ours),
                    human(raw),
                    scenario.target.describe()
                )
            }
            _ => format!(
                "| {} | n/a | n/a | n/a | {} | n/a |",
                scenario.name,
                scenario.target.describe()
            ),
        };
        let _ = writeln!(table, "{row}");
    }
    table
}

/// The group's baseline: its one case whose name starts with `raw`.
fn baseline_dir(group: &Path) -> Option<std::path::PathBuf> {
    std::fs::read_dir(group)
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("raw"))
        })
}

/// The median time per iteration, in nanoseconds, of criterion's latest run of a case.
fn median_ns(case: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(case.join("new").join("estimates.json")).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json.get("median")?.get("point_estimate")?.as_f64()
}

fn human(ns: f64) -> String {
    if ns >= 1_000_000.0 {
        format!("{:.2} ms", ns / 1_000_000.0)
    } else if ns >= 1_000.0 {
        format!("{:.2} µs", ns / 1_000.0)
    } else {
        format!("{ns:.1} ns")
    }
}
