//! Plain-text tables and compact figures, shared by `cargo xtask bench` and the
//! durable bench (which includes this file by path: xtask depends on no project crate
//! and the benches on no tool crate, so a shared crate would add an edge for 40 lines).

use std::fmt::Write as _;

/// Rows under a header, each column as wide as its widest cell, left-aligned.
pub fn render<R: AsRef<[String]>>(header: &[&str], rows: &[R]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row.as_ref()) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, &width)| format!("{cell}{}", " ".repeat(width.saturating_sub(cell.chars().count()))))
            .collect();
        let _ = writeln!(out, "{}", padded.join("  ").trim_end());
    };
    line(&header.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    line(&widths.iter().map(|&w| "-".repeat(w)).collect::<Vec<_>>());
    for row in rows {
        line(row.as_ref());
    }
    out
}

/// `1.23M`, `456K`, `4.9K`, `789`: a rate per second, compact.
pub fn format_rate(per_second: f64) -> String {
    if per_second >= 1e6 {
        format!("{:.2}M", per_second / 1e6)
    } else if per_second >= 1e4 {
        format!("{:.0}K", per_second / 1e3)
    } else if per_second >= 1e3 {
        format!("{:.1}K", per_second / 1e3)
    } else {
        format!("{per_second:.0}")
    }
}
