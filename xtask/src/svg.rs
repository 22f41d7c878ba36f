//! A bar chart of the bench ratios, as a self-contained SVG file.

use std::fmt::Write as _;

use crate::bench::{Row, Target};

const WIDTH: f64 = 900.0;
const LABEL: f64 = 430.0;
const BAR_HEIGHT: f64 = 22.0;
const GAP: f64 = 10.0;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A white SVG canvas of `width` x `height` with `title` (SVG markup) at the top left; the
/// caller adds the rest and closes it with `</svg>`.
pub(crate) fn open(width: f64, height: f64, title: &str) -> String {
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="10" y="20" font-size="14" font-weight="bold">{title}</text>"#
    );
    svg
}

/// One bar per row: its ratio, a tick at the target, green when met, red when missed, and a
/// grey "n/a" for rows without a figure.
pub(crate) fn chart(rows: &[Row]) -> String {
    let scale_max = rows
        .iter()
        .filter_map(|r| r.ratio)
        .chain(rows.iter().map(|r| r.target.limit()))
        .fold(1.5_f64, f64::max)
        * 1.1;
    let plot = WIDTH - LABEL - 70.0;
    let x = |ratio: f64| LABEL + plot * (ratio / scale_max);
    let height = 50.0 + rows.len() as f64 * (BAR_HEIGHT + GAP);
    let mut svg = open(
        WIDTH,
        height,
        "tiercache / raw dependency (same run); tick = target",
    );
    let one = x(1.0);
    let _ = writeln!(
        svg,
        r##"<line x1="{one}" y1="30" x2="{one}" y2="{}" stroke="#999" stroke-dasharray="4 3"/><text x="{one}" y="{}" text-anchor="middle" fill="#666">1.0x</text>"##,
        height - 12.0,
        height - 2.0
    );
    for (i, row) in rows.iter().enumerate() {
        let y = 35.0 + i as f64 * (BAR_HEIGHT + GAP);
        let mid = y + BAR_HEIGHT * 0.7;
        let _ = writeln!(svg, r#"<text x="10" y="{mid}">{}</text>"#, escape(row.name));
        match (row.ratio, row.met) {
            (Some(ratio), Some(met)) => {
                let color = if met { "#2e8b57" } else { "#c0392b" };
                let _ = writeln!(
                    svg,
                    r#"<rect x="{LABEL}" y="{y}" width="{:.1}" height="{BAR_HEIGHT}" fill="{color}"/><text x="{:.1}" y="{mid}">{ratio:.2}x</text>"#,
                    x(ratio) - LABEL,
                    x(ratio) + 5.0
                );
            }
            _ => {
                let _ = writeln!(
                    svg,
                    r##"<text x="{LABEL}" y="{mid}" fill="#999">n/a</text>"##
                );
            }
        }
        let tick = x(row.target.limit());
        if !matches!(row.target, Target::Exactly) || row.ratio.is_some() {
            let _ = writeln!(
                svg,
                r#"<line x1="{tick:.1}" y1="{}" x2="{tick:.1}" y2="{}" stroke="black" stroke-width="2"/>"#,
                y - 3.0,
                y + BAR_HEIGHT + 3.0
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}
