//! The comparison as an aligned text table: a header saying what A and B are and the rule, one block
//! per curve and metric (sorted by effect), one line per batch size, and a summary line.

use std::fmt::Write as _;

use super::{Diff, Group, Presence, Row};

/// A time in µs: two decimals below 10 µs (small kernels), one above.
fn us(v: f64) -> String {
    if v.abs() < 10.0 { format!("{v:.2}") } else { format!("{v:.1}") }
}

/// A signed change in µs.
fn signed_us(v: f64) -> String {
    let s = us(v);
    if v >= 0.0 { format!("+{s}") } else { s }
}

/// `mean ± std (n)`, or `absent`.
fn side(mean: Option<f64>, std: Option<f64>, n: u64) -> String {
    match mean {
        Some(m) => format!("{} ± {} ({n})", us(m), us(std.unwrap_or(0.0))),
        None => "absent".to_string(),
    }
}

/// The change in percent, or what stands for it when A has nothing to compare with.
pub fn pct(r: &Row) -> String {
    match (r.change_pct, r.presence) {
        (_, Presence::Appeared) => "new".to_string(),
        (Some(p), _) => format!("{p:+.1}%"),
        (None, _) => "from 0".to_string(),
    }
}

/// A p-value in short scientific notation (`-`: not tested).
pub fn p_value(p: Option<f64>) -> String {
    match p {
        Some(p) if p >= 0.01 => format!("{p:.2}"),
        Some(p) => format!("{p:.2e}"),
        None => "-".to_string(),
    }
}

/// The cells of one row: x, A, B, change µs, change %, p, adjusted p, mark.
fn cells(r: &Row) -> [String; 8] {
    [
        r.x.to_string(),
        side(r.mean_a, r.std_a, r.n_a),
        side(r.mean_b, r.std_b, r.n_b),
        signed_us(r.change_us),
        pct(r),
        p_value(r.p),
        p_value(r.p_adjusted),
        if r.significant { "*".to_string() } else { String::new() },
    ]
}

/// The group's heading: metric, curve, effect and how many rows are significant.
pub fn heading(d: &Diff, g: &Group) -> String {
    let curve = d.curves.get(g.curve).map(|c| c.label.as_str()).unwrap_or("?");
    format!(
        "{} · {curve}: effect {} µs over {} points, {} significant",
        g.metric.label(),
        us(g.effect_us),
        g.rows.len(),
        g.significant_rows
    )
}

/// Which groups the text shows: every category and the whole step, and the kernels with a significant
/// row (the rest are counted; `diff.html` and `--json` have them all).
fn shown(g: &Group) -> bool {
    !matches!(g.metric, super::Metric::Kernel { .. }) || g.significant_rows > 0
}

/// Renders the comparison as text.
pub fn render(d: &Diff) -> String {
    let mut out = String::new();
    let who = |r: &super::RunInfo| format!("{} ({})", r.dir.display(), r.machines.join("; "));
    let _ = writeln!(out, "A: {}", who(&d.a));
    let _ = writeln!(out, "B: {}", who(&d.b));
    if let Some(m) = &d.machines_compared {
        let _ = writeln!(out, "note: {m}");
    }
    for n in &d.notes {
        let _ = writeln!(out, "note: {n}");
    }
    let _ = writeln!(out, "B − A in µs of GPU time per step; ± is the standard deviation over the steps (n)");
    let _ = writeln!(out, "{}", d.rule());

    let groups: Vec<&Group> = d.groups.iter().filter(|g| shown(g)).collect();
    let x_name = d.curves.first().map(|c| c.x_name.as_str()).unwrap_or("x");
    let head = [x_name, "A", "B", "change µs", "change", "p", "p (Holm)", ""].map(str::to_string);
    let all: Vec<[String; 8]> = groups.iter().flat_map(|g| g.rows.iter().map(cells)).collect();
    let mut width = [0usize; 8];
    for c in all.iter().chain(std::iter::once(&head)) {
        for (w, s) in width.iter_mut().zip(c) {
            *w = (*w).max(s.chars().count());
        }
    }
    let line = |out: &mut String, c: &[String; 8]| {
        let mut l = String::from("  ");
        for (i, (s, w)) in c.iter().zip(width).enumerate() {
            let pad = w.saturating_sub(s.chars().count());
            if i > 0 {
                l.push_str("  ");
            }
            // Numbers right-aligned, the mark left.
            if i == 7 {
                l.push_str(s);
            } else {
                l.push_str(&" ".repeat(pad));
                l.push_str(s);
            }
        }
        let _ = writeln!(out, "{}", l.trim_end());
    };
    for g in &groups {
        let _ = writeln!(out, "\n{}", heading(d, g));
        line(&mut out, &head);
        for r in &g.rows {
            line(&mut out, &cells(r));
        }
    }
    let hidden = d.groups.len() - groups.len();
    if hidden > 0 {
        let _ = writeln!(out, "\n{hidden} more kernels (per curve) without a significant row: in diff.html and --json");
    }
    for (side, points) in [("A", &d.only_in_a), ("B", &d.only_in_b)] {
        if !points.is_empty() {
            let _ = writeln!(out, "\npoints only in {side}:");
            for p in points {
                let _ = writeln!(out, "  {} {} {} ({} steps)", p.curve, p.x_name, p.x, p.steps);
            }
        }
    }
    let _ = writeln!(out, "\n{}", d.summary_line());
    out
}
