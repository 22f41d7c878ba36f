//! `cargo xtask bench`: runs every bench, then prints one table of tiercache against the raw
//! dependency it is built on, measured in the same run, and writes it to
//! `target/tiercache-bench/report.md` with a bar chart of the ratios in `ratios.svg`; the
//! `scaling` bench's throughput by task count goes below it and into `scaling.svg`.

use std::{fmt::Write as _, path::PathBuf};

use crate::{run, svg};

/// What a scenario's ratio must be.
#[derive(Clone, Copy)]
pub(crate) enum Target {
    /// tiercache over the baseline, at most this (time, bytes).
    AtMost(f64),
    /// The baseline's time over tiercache's time, at least this (throughput: both cases time the
    /// same number of operations).
    ThroughputAtLeast(f64),
    /// tiercache's figure must equal the baseline's exactly (a count).
    Exactly,
}

impl Target {
    fn ratio(self, ours: f64, raw: f64) -> f64 {
        match self {
            Self::AtMost(_) | Self::Exactly => ours / raw,
            Self::ThroughputAtLeast(_) => raw / ours,
        }
    }

    fn met(self, ratio: f64) -> bool {
        match self {
            Self::AtMost(limit) => ratio <= limit,
            Self::ThroughputAtLeast(limit) => ratio >= limit,
            Self::Exactly => (ratio - 1.0).abs() < 1e-9,
        }
    }

    pub(crate) fn limit(self) -> f64 {
        match self {
            Self::AtMost(limit) | Self::ThroughputAtLeast(limit) => limit,
            Self::Exactly => 1.0,
        }
    }

    fn describe(self) -> String {
        match self {
            Self::AtMost(limit) => format!("<= {limit:.2}x"),
            Self::ThroughputAtLeast(limit) => format!("throughput >= {limit:.2}x"),
            Self::Exactly => "= 1 exactly".to_owned(),
        }
    }
}

/// How a figure is shown.
#[derive(Clone, Copy)]
enum Unit {
    Nanos,
    Count,
    Bytes,
}

impl Unit {
    fn show(self, value: f64) -> String {
        match self {
            Self::Count => format!("{value:.0}"),
            Self::Bytes => format!("{value:.0} B"),
            Self::Nanos if value >= 1_000_000.0 => format!("{:.2} ms", value / 1_000_000.0),
            Self::Nanos if value >= 1_000.0 => format!("{:.2} µs", value / 1_000.0),
            Self::Nanos => format!("{value:.1} ns"),
        }
    }
}

/// Where a scenario's two figures come from.
enum Source {
    /// A criterion group with a `tiercache` case and one case named `raw…`; medians.
    Criterion { group: &'static str },
    /// A JSON file a custom bench writes into `target/tiercache-bench`.
    Json { file: &'static str },
}

struct Scenario {
    name: &'static str,
    /// The bench binary under `benches/benches/`.
    bench: &'static str,
    source: Source,
    unit: Unit,
    target: Target,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "typed L1 hit (get, 1 KiB struct, 100k keys)",
        bench: "l1_hit",
        source: Source::Criterion { group: "l1_hit" },
        unit: Unit::Nanos,
        target: Target::AtMost(1.15),
    },
    Scenario {
        name: "get_or_compute on an L1 hit",
        bench: "l1_hit",
        source: Source::Criterion {
            group: "get_or_compute_hit",
        },
        unit: Unit::Nanos,
        target: Target::AtMost(1.15),
    },
    Scenario {
        name: "typed L1 hit, shared Arc (get_arc)",
        bench: "l1_hit",
        source: Source::Criterion {
            group: "l1_hit_arc",
        },
        unit: Unit::Nanos,
        target: Target::AtMost(1.1),
    },
    Scenario {
        name: "get_or_compute L1 hit with fail-safe + eager refresh + timeouts vs without",
        bench: "resilience",
        source: Source::Criterion {
            group: "resilient_l1_hit",
        },
        unit: Unit::Nanos,
        target: Target::AtMost(1.05),
    },
    Scenario {
        name: "get_arc L1 hit (no clone) with the same features vs without",
        bench: "resilience",
        source: Source::Criterion {
            group: "resilient_l1_hit_arc",
        },
        unit: Unit::Nanos,
        target: Target::AtMost(1.1),
    },
    Scenario {
        name: "the same resilient L1 hit vs raw moka get + clone",
        bench: "resilience",
        source: Source::Criterion {
            group: "resilient_l1_hit_moka",
        },
        unit: Unit::Nanos,
        target: Target::AtMost(1.3),
    },
    Scenario {
        name: "L2 hit (L1 miss, Redis GET + decode)",
        bench: "l2",
        source: Source::Criterion { group: "l2_hit" },
        unit: Unit::Nanos,
        target: Target::AtMost(1.1),
    },
    Scenario {
        name: "L2 hit p99 with promotion into L1 vs raw GET + decode p99",
        bench: "l2",
        source: Source::Json {
            file: "l2_p99_promotion",
        },
        unit: Unit::Nanos,
        target: Target::AtMost(1.2),
    },
    Scenario {
        name: "L2 hits, 64 concurrent tasks (per read)",
        bench: "l2",
        source: Source::Criterion {
            group: "l2_throughput",
        },
        unit: Unit::Nanos,
        target: Target::ThroughputAtLeast(0.9),
    },
    Scenario {
        name: "L2 hits, 256 concurrent tasks (per read)",
        bench: "l2",
        source: Source::Criterion {
            group: "l2_throughput_256",
        },
        unit: Unit::Nanos,
        target: Target::ThroughputAtLeast(0.9),
    },
    Scenario {
        name: "cold miss + 1 ms loader (L1 + Redis) vs loader alone",
        bench: "cold_miss",
        source: Source::Criterion { group: "cold_miss" },
        unit: Unit::Nanos,
        target: Target::AtMost(1.2),
    },
    Scenario {
        name: "stampede: loader calls per 1000 concurrent callers",
        bench: "stampede",
        source: Source::Json {
            file: "stampede_loader_calls",
        },
        unit: Unit::Count,
        target: Target::Exactly,
    },
    Scenario {
        name: "stampede: waiters' p99 vs the loader's own time",
        bench: "stampede",
        source: Source::Json {
            file: "stampede_p99",
        },
        unit: Unit::Nanos,
        target: Target::AtMost(1.5),
    },
    Scenario {
        name: "cold miss + 1 ms loader, leases vs leases off (L1 + Redis)",
        bench: "leases",
        source: Source::Criterion {
            group: "cold_miss_leases",
        },
        unit: Unit::Nanos,
        target: Target::AtMost(1.15),
    },
    Scenario {
        name: "set (L1 + Redis), leases vs leases off",
        bench: "leases",
        source: Source::Criterion {
            group: "set_leases",
        },
        unit: Unit::Nanos,
        target: Target::AtMost(1.1),
    },
    Scenario {
        name: "fleet stampede: loader calls, 3 instances x 100 callers",
        bench: "fleet_stampede",
        source: Source::Json {
            file: "fleet_stampede_loader_calls",
        },
        unit: Unit::Count,
        target: Target::Exactly,
    },
    Scenario {
        name: "fleet stampede: waiters' p99 vs the loader's own time",
        bench: "fleet_stampede",
        source: Source::Json {
            file: "fleet_stampede_p99",
        },
        unit: Unit::Nanos,
        target: Target::AtMost(1.5),
    },
    Scenario {
        name: "invalidation: set on A until gone from B's L1 vs raw PUBLISH to receive",
        bench: "invalidation",
        source: Source::Criterion {
            group: "invalidation",
        },
        unit: Unit::Nanos,
        target: Target::AtMost(1.2),
    },
    Scenario {
        name: "invalidation with Redis L2: set until gone vs raw SET + PUBLISH to receive",
        bench: "invalidation",
        source: Source::Criterion {
            group: "invalidation_with_redis",
        },
        unit: Unit::Nanos,
        target: Target::AtMost(1.2),
    },
    Scenario {
        name: "bus authentication: signed set until gone vs the same unsigned",
        bench: "invalidation",
        source: Source::Criterion {
            group: "invalidation_authenticated",
        },
        unit: Unit::Nanos,
        target: Target::AtMost(1.05),
    },
    Scenario {
        name: "stream bus: set on A until gone from B's L1 vs raw XADD to blocked XREAD, p50",
        bench: "invalidation",
        source: Source::Json {
            file: "stream_bus_p50",
        },
        unit: Unit::Nanos,
        target: Target::AtMost(1.5),
    },
    Scenario {
        name: "stream bus: set on A until gone from B's L1 vs raw XADD to blocked XREAD, p99",
        bench: "invalidation",
        source: Source::Json {
            file: "stream_bus_p99",
        },
        unit: Unit::Nanos,
        target: Target::AtMost(1.5),
    },
    Scenario {
        name: "tracking bus (Redis L2): set until gone vs raw SET to tracking push, p50",
        bench: "invalidation",
        source: Source::Json {
            file: "tracking_bus_p50",
        },
        unit: Unit::Nanos,
        target: Target::AtMost(1.5),
    },
    Scenario {
        name: "tracking bus (Redis L2): set until gone vs raw SET to tracking push, p99",
        bench: "invalidation",
        source: Source::Json {
            file: "tracking_bus_p99",
        },
        unit: Unit::Nanos,
        target: Target::AtMost(1.5),
    },
    Scenario {
        name: "stream publish, 64 concurrent tasks (per publish) vs raw XADD",
        bench: "streams",
        source: Source::Criterion {
            group: "streams_publish",
        },
        unit: Unit::Nanos,
        target: Target::ThroughputAtLeast(0.9),
    },
    Scenario {
        name: "stream publish to blocked reader, decoded, vs raw XADD/XREAD",
        bench: "streams",
        source: Source::Criterion {
            group: "streams_latency",
        },
        unit: Unit::Nanos,
        target: Target::AtMost(1.2),
    },
    Scenario {
        name: "L2 hit decode, JSON (1 KiB struct)",
        bench: "codecs",
        source: Source::Criterion {
            group: "decode_json",
        },
        unit: Unit::Nanos,
        target: Target::AtMost(1.1),
    },
    Scenario {
        name: "L2 hit decode, postcard (1 KiB struct)",
        bench: "codecs",
        source: Source::Criterion {
            group: "decode_postcard",
        },
        unit: Unit::Nanos,
        target: Target::AtMost(1.1),
    },
    Scenario {
        name: "L2 hit decode, MessagePack (1 KiB struct)",
        bench: "codecs",
        source: Source::Criterion {
            group: "decode_msgpack",
        },
        unit: Unit::Nanos,
        target: Target::AtMost(1.1),
    },
    Scenario {
        name: "L2 hit decode, JSON, LZ4-compressed (1 KiB struct)",
        bench: "codecs",
        source: Source::Criterion {
            group: "decode_json_lz4",
        },
        unit: Unit::Nanos,
        target: Target::AtMost(1.1),
    },
    Scenario {
        name: "bytes stored for the 1 KiB struct, JSON",
        bench: "codecs",
        source: Source::Json {
            file: "stored_bytes_json",
        },
        unit: Unit::Bytes,
        target: Target::AtMost(1.05),
    },
    Scenario {
        name: "bytes stored for the 1 KiB struct, postcard",
        bench: "codecs",
        source: Source::Json {
            file: "stored_bytes_postcard",
        },
        unit: Unit::Bytes,
        target: Target::AtMost(1.05),
    },
    Scenario {
        name: "bytes stored for the 1 KiB struct, MessagePack",
        bench: "codecs",
        source: Source::Json {
            file: "stored_bytes_msgpack",
        },
        unit: Unit::Bytes,
        target: Target::AtMost(1.05),
    },
    Scenario {
        name: "bytes stored for the 1 KiB struct, JSON + LZ4 vs uncompressed JSON",
        bench: "codecs",
        source: Source::Json {
            file: "stored_bytes_json_lz4",
        },
        unit: Unit::Bytes,
        target: Target::AtMost(1.05),
    },
    Scenario {
        name: "instructions: typed L1 hit (get), 2k keys",
        bench: "instructions",
        source: Source::Json {
            file: "icount_l1_get",
        },
        unit: Unit::Count,
        target: Target::AtMost(1.15),
    },
    Scenario {
        name: "instructions: typed L1 hit, shared Arc (get_arc)",
        bench: "instructions",
        source: Source::Json {
            file: "icount_l1_get_arc",
        },
        unit: Unit::Count,
        target: Target::AtMost(1.1),
    },
    Scenario {
        name: "instructions: get_or_compute on an L1 hit",
        bench: "instructions",
        source: Source::Json {
            file: "icount_get_or_compute_hit",
        },
        unit: Unit::Count,
        target: Target::AtMost(1.15),
    },
    Scenario {
        name: "instructions: read from an in-process tier, decoded (L2 CPU part)",
        bench: "instructions",
        source: Source::Json {
            file: "icount_l2_cpu",
        },
        unit: Unit::Count,
        target: Target::AtMost(1.3),
    },
    Scenario {
        name: "instructions: decode JSON (1 KiB struct)",
        bench: "instructions",
        source: Source::Json {
            file: "icount_decode_json",
        },
        unit: Unit::Count,
        target: Target::AtMost(1.1),
    },
    Scenario {
        name: "instructions: decode postcard (1 KiB struct)",
        bench: "instructions",
        source: Source::Json {
            file: "icount_decode_postcard",
        },
        unit: Unit::Count,
        target: Target::AtMost(1.1),
    },
    Scenario {
        name: "L1 memory per entry (100k entries) vs raw moka",
        bench: "memory",
        source: Source::Json {
            file: "memory_per_entry",
        },
        unit: Unit::Bytes,
        target: Target::AtMost(1.2),
    },
];

/// One measured (or not) row of the report.
pub(crate) struct Row {
    pub(crate) name: &'static str,
    pub(crate) ratio: Option<f64>,
    pub(crate) met: Option<bool>,
    pub(crate) target: Target,
    cells: [String; 6],
}

pub(crate) fn bench(args: &[String]) -> Result<(), String> {
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
            filter.as_deref().is_none_or(|f| {
                s.bench.contains(f) || s.name.contains(f) || group_of(s).contains(f)
            })
        })
        .collect();
    // The scaling bench has no target of its own: it runs with everything, or with
    // `--filter scaling`.
    let scaling = filter.as_deref().is_none_or(|f| f == SCALING);
    if chosen.is_empty() && !scaling {
        let names: Vec<&str> = SCENARIOS
            .iter()
            .map(|s| s.bench)
            .filter(|b| !b.is_empty())
            .collect();
        return Err(format!(
            "no scenario matches; benches: {}",
            names.join(", ")
        ));
    }
    // The L2, cold-miss and stampede benches start their own redis-server.
    crate::redis::ensure_installed()?;

    let mut benches: Vec<&str> = chosen
        .iter()
        .map(|s| s.bench)
        .filter(|b| !b.is_empty())
        .collect();
    benches.dedup();
    if scaling {
        benches.push(SCALING);
        let _ = std::fs::remove_file(results_dir().join("scaling.json"));
    }
    for (index, bench) in benches.iter().enumerate() {
        // Criterion groups by name; a JSON result of a criterion bench (such as the L2 p99) is
        // selected by its file name in the same filter. A bench of JSON results only gets no
        // filter: it decides what runs itself.
        let here: Vec<&Scenario> = chosen
            .iter()
            .copied()
            .filter(|s| s.bench == *bench)
            .collect();
        let timed_by_criterion = here
            .iter()
            .any(|s| matches!(s.source, Source::Criterion { .. }));
        let groups: Vec<&str> = if timed_by_criterion {
            here.iter().map(|s| group_of(s)).collect()
        } else {
            Vec::new()
        };
        forget_old_results(&chosen, bench);
        let filter_regex = format!("^({})/", groups.join("|"));
        let mut cargo_args = vec![
            "bench",
            "--package",
            "tiercache-benches",
            "--bench",
            bench,
            "--",
        ];
        if !groups.is_empty() {
            cargo_args.push(&filter_regex);
        }
        if quick {
            cargo_args.push("--quick");
        }
        println!(
            "== bench {}/{}: {bench}{}",
            index + 1,
            benches.len(),
            if quick { " (quick)" } else { "" }
        );
        run::cargo(&cargo_args, &[])?;
    }

    let rows: Vec<Row> = chosen.iter().map(|s| measure(s)).collect();
    let mut table = if rows.is_empty() {
        String::new()
    } else {
        markdown(&rows)
    };
    let dir = results_dir();
    std::fs::create_dir_all(&dir)
        .map_err(|err| format!("cannot create {}: {err}", dir.display()))?;
    let mut files = vec![("ratios.svg", svg::chart(&rows))];
    if scaling {
        let (scaling_table, chart) = crate::scaling::report(&dir)?;
        table.push_str("\nThroughput by concurrent tasks (`scaling` bench):\n\n");
        table.push_str(&scaling_table);
        files.push(("scaling.svg", chart));
    }
    println!("\n{table}");
    files.push(("report.md", table));
    for (file, text) in files {
        let path = dir.join(file);
        std::fs::write(&path, text)
            .map_err(|err| format!("cannot write {}: {err}", path.display()))?;
        println!("written to {}", path.display());
    }
    Ok(())
}

/// The bench of the scaling table (`benches/benches/scaling.rs`).
const SCALING: &str = "scaling";

fn group_of(scenario: &Scenario) -> &'static str {
    match scenario.source {
        Source::Criterion { group } => group,
        Source::Json { file } => file,
    }
}

fn results_dir() -> PathBuf {
    run::root().join("target").join("tiercache-bench")
}

/// Removes what an earlier run left for these scenarios, so a bench that fails to produce a
/// figure shows "n/a" instead of an old number.
fn forget_old_results(scenarios: &[&Scenario], bench: &str) {
    for scenario in scenarios.iter().filter(|s| s.bench == bench) {
        let stale = match scenario.source {
            Source::Criterion { group } => run::root().join("target").join("criterion").join(group),
            Source::Json { file } => results_dir().join(format!("{file}.json")),
        };
        // Nothing to remove on a first run.
        let _ = if stale.is_dir() {
            std::fs::remove_dir_all(&stale)
        } else {
            std::fs::remove_file(&stale)
        };
    }
}

/// The two figures of a scenario: (tiercache, baseline, baseline's name).
fn figures(scenario: &Scenario) -> Result<(f64, f64, String), &'static str> {
    match scenario.source {
        Source::Criterion { group } => criterion_figures(scenario.target, group),
        Source::Json { file } => {
            let text = std::fs::read_to_string(results_dir().join(format!("{file}.json")))
                .map_err(|_| "no result: the bench did not run")?;
            let json: serde_json::Value =
                serde_json::from_str(&text).map_err(|_| "unreadable result")?;
            let number = |key: &str| json.get(key).and_then(serde_json::Value::as_f64);
            let name = json
                .get("baseline_name")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("baseline");
            match (number("tiercache"), number("baseline")) {
                (Some(ours), Some(raw)) => Ok((ours, raw, name.to_owned())),
                _ => Err("unreadable result"),
            }
        }
    }
}

/// The figures of a criterion group: a `tiercache` case and a `raw…` case (or a `baseline…` one,
/// when the comparison is with tiercache itself in another configuration). When the bench ran the
/// pair in alternating rounds (`case/1`, `case/2`, ...), the ratio is the median of the per-round
/// ratios and the figures are the round with that ratio, so drift between rounds cancels out.
fn criterion_figures(target: Target, group: &str) -> Result<(f64, f64, String), &'static str> {
    let dir = run::root().join("target").join("criterion").join(group);
    let ours_dir = dir.join("tiercache");
    let baseline = std::fs::read_dir(&dir)
        .ok()
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n.starts_with("raw") || n.starts_with("baseline")
            })
        })
        .ok_or("no result: the bench did not run")?;
    let name = baseline
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let (Some(ours), Some(raw)) = (median_ns(&ours_dir), median_ns(&baseline)) {
        return Ok((ours, raw, name));
    }
    let mut rounds: Vec<(f64, f64, f64)> = (1..)
        .map_while(|round: u32| {
            let ours = median_ns(&ours_dir.join(round.to_string()))?;
            let raw = median_ns(&baseline.join(round.to_string()))?;
            Some((target.ratio(ours, raw), ours, raw))
        })
        .collect();
    if rounds.is_empty() {
        return Err("no result: the bench did not run");
    }
    rounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (_, ours, raw) = rounds[rounds.len() / 2];
    Ok((
        ours,
        raw,
        format!("{name}, median of {} rounds", rounds.len()),
    ))
}

fn measure(scenario: &Scenario) -> Row {
    let target = scenario.target;
    let (ratio, met, cells) = match figures(scenario) {
        Ok((ours, raw, name)) if raw > 0.0 && ours > 0.0 => {
            let ratio = target.ratio(ours, raw);
            let met = target.met(ratio);
            let cells = [
                scenario.name.to_owned(),
                scenario.unit.show(ours),
                format!("{} ({name})", scenario.unit.show(raw)),
                format!("{ratio:.2}x"),
                target.describe(),
                if met { "met" } else { "missed" }.to_owned(),
            ];
            (Some(ratio), Some(met), cells)
        }
        Ok(_) => (None, None, na(scenario, "zero figure")),
        Err(why) => (None, None, na(scenario, why)),
    };
    Row {
        name: scenario.name,
        ratio,
        met,
        target,
        cells,
    }
}

fn na(scenario: &Scenario, why: &str) -> [String; 6] {
    [
        scenario.name.to_owned(),
        "n/a".into(),
        "n/a".into(),
        "n/a".into(),
        scenario.target.describe(),
        format!("n/a ({why})"),
    ]
}

fn markdown(rows: &[Row]) -> String {
    let mut table = String::from(
        "| scenario | tiercache | raw baseline | ratio | target | result |\n|---|---|---|---|---|---|\n",
    );
    for row in rows {
        let _ = writeln!(table, "| {} |", row.cells.join(" | "));
    }
    table
}

/// The median time per iteration, in nanoseconds, of criterion's latest run of a case.
fn median_ns(case: &std::path::Path) -> Option<f64> {
    let text = std::fs::read_to_string(case.join("new").join("estimates.json")).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json.get("median")?.get("point_estimate")?.as_f64()
}
