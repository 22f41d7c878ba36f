//! The scaling report of `cargo xtask bench`: the points the `scaling` bench wrote to
//! `target/tiercache-bench/scaling.json`, as a markdown table and as `scaling.svg` (one panel per
//! tier, a pair of bars per task count: tiercache and raw reads per second).

use std::{fmt::Write as _, path::Path};

/// One point of the scaling bench.
struct Point {
    tier: String,
    tasks: u64,
    tiercache: f64,
    raw: f64,
}

/// The table and the chart of `dir/scaling.json`.
///
/// # Errors
///
/// When the file is missing or is not what the bench writes.
pub(crate) fn report(dir: &Path) -> Result<(String, String), String> {
    let path = dir.join("scaling.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|err| format!("{} is not JSON: {err}", path.display()))?;
    let points = json
        .as_array()
        .ok_or_else(|| format!("{} is not a list of points", path.display()))?
        .iter()
        .map(|point| {
            Some(Point {
                tier: point.get("tier")?.as_str()?.to_owned(),
                tasks: point.get("tasks")?.as_u64()?,
                tiercache: point.get("tiercache")?.as_f64()?,
                raw: point.get("raw")?.as_f64()?,
            })
        })
        .collect::<Option<Vec<Point>>>()
        .ok_or_else(|| {
            format!(
                "{} has a point without tier, tasks, tiercache or raw",
                path.display()
            )
        })?;
    Ok((table(&points), chart(&points)))
}

fn table(points: &[Point]) -> String {
    let mut out = String::from(
        "| tier | tasks | tiercache reads/s | raw reads/s | tiercache / raw |\n|---|---|---|---|---|\n",
    );
    for p in points {
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {:.0} | {:.2}x |",
            p.tier,
            p.tasks,
            p.tiercache,
            p.raw,
            p.tiercache / p.raw
        );
    }
    out
}

const WIDTH: f64 = 900.0;
const LABEL: f64 = 130.0;
const BAR: f64 = 12.0;

fn chart(points: &[Point]) -> String {
    let mut tiers: Vec<&str> = points.iter().map(|p| p.tier.as_str()).collect();
    tiers.dedup();
    let rows = points.len() as f64;
    let height = 60.0 + rows * (2.0 * BAR + 12.0) + tiers.len() as f64 * 30.0;
    let mut svg = crate::svg::open(
        WIDTH,
        height,
        r##"reads per second by concurrent tasks (same run): <tspan fill="#2e6fb0">tiercache</tspan> / <tspan fill="#999">raw</tspan>"##,
    );
    let plot = WIDTH - LABEL - 160.0;
    let mut y = 40.0;
    for tier in tiers {
        let mine: Vec<&Point> = points.iter().filter(|p| p.tier == tier).collect();
        let max = mine
            .iter()
            .map(|p| p.tiercache.max(p.raw))
            .fold(1.0, f64::max);
        let _ = writeln!(
            svg,
            r#"<text x="10" y="{:.1}" font-weight="bold">{tier}</text>"#,
            y + 12.0
        );
        y += 22.0;
        for p in mine {
            let _ = writeln!(
                svg,
                r#"<text x="20" y="{:.1}">{} tasks</text>"#,
                y + BAR + 4.0,
                p.tasks
            );
            for (value, color) in [(p.tiercache, "#2e6fb0"), (p.raw, "#999")] {
                let width = plot * value / max;
                let _ = writeln!(
                    svg,
                    r#"<rect x="{LABEL}" y="{y:.1}" width="{width:.1}" height="{BAR}" fill="{color}"/><text x="{:.1}" y="{:.1}">{value:.0}/s</text>"#,
                    LABEL + width + 5.0,
                    y + BAR - 2.0
                );
                y += BAR;
            }
            let _ = writeln!(
                svg,
                r##"<text x="{:.1}" y="{:.1}" fill="#333">{:.2}x</text>"##,
                WIDTH - 50.0,
                y - 4.0,
                p.tiercache / p.raw
            );
            y += 12.0;
        }
        y += 8.0;
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_and_chart_show_every_point_with_its_ratio() {
        let dir = std::env::temp_dir().join(format!("xtask-scaling-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|err| panic!("{err}"));
        std::fs::write(
            dir.join("scaling.json"),
            r#"[{"tier": "L1", "tasks": 1, "tiercache": 900, "raw": 1000},
               {"tier": "L2", "tasks": 64, "tiercache": 150, "raw": 200}]"#,
        )
        .unwrap_or_else(|err| panic!("{err}"));
        let (table, svg) = report(&dir).unwrap_or_else(|err| panic!("{err}"));
        assert!(table.contains("| L1 | 1 | 900 | 1000 | 0.90x |"), "{table}");
        assert!(table.contains("| L2 | 64 | 150 | 200 | 0.75x |"), "{table}");
        assert!(svg.contains("0.75x") && svg.contains("64 tasks") && svg.ends_with("</svg>\n"));
        std::fs::write(dir.join("scaling.json"), r#"[{"tier": "L1"}]"#)
            .unwrap_or_else(|err| panic!("{err}"));
        assert!(report(&dir).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
