//! `diff.html`: the comparison as a self-contained page: what A and B are, a bar chart of the largest
//! effects, A and B against batch size per category, and the sortable tables of every row.

use plotters::prelude::*;

use super::text::{p_value, pct};
use super::{Diff, DiffError, Group, Metric, Row};
use crate::html::{Cell, Page, Table};

/// Most bars in the chart of the largest effects.
const TOP_EFFECTS: usize = 20;
/// Most characters of a bar's label (kernel names run to hundreds).
const LABEL_CHARS: usize = 60;

fn plot_error<E: std::fmt::Display>(plot: &str) -> impl Fn(E) -> DiffError + '_ {
    move |e| DiffError::Plot { plot: plot.to_string(), message: e.to_string() }
}

/// A's and B's mean against x (log scale), one line each.
fn latency_plot(title: &str, x_name: &str, a: &[(f64, f64)], b: &[(f64, f64)]) -> Result<String, DiffError> {
    let err = plot_error(title);
    let xs = || a.iter().chain(b).map(|p| p.0).filter(|x| *x > 0.0);
    let x_min = xs().fold(f64::INFINITY, f64::min);
    let x_max = xs().fold(0f64, f64::max);
    let (x_min, x_max) =
        if x_min.is_finite() && x_max.is_finite() && x_max > x_min { (x_min, x_max) } else { (1.0, 2.0) };
    // Finite values only: plotters never ends computing ticks over an infinite range.
    let y_max = a.iter().chain(b).map(|p| p.1).filter(|v| v.is_finite()).fold(0f64, f64::max).max(1e-3) * 1.1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (400, 270)).into_drawing_area();
        root.fill(&WHITE).map_err(&err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 14))
            .margin(8)
            .x_label_area_size(34)
            .y_label_area_size(52)
            .build_cartesian_2d((x_min..x_max).log_scale(), 0f64..y_max)
            .map_err(&err)?;
        chart
            .configure_mesh()
            .x_desc(x_name)
            .y_desc("µs per step")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .label_style(("sans-serif", 11))
            .draw()
            .map_err(&err)?;
        for (points, color, name) in [(a, BLUE, "A"), (b, RED, "B")] {
            let points: Vec<(f64, f64)> = points.iter().copied().filter(|p| p.0 > 0.0).collect();
            chart
                .draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))
                .map_err(&err)?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(&err)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(&err)?;
        root.present().map_err(&err)?;
    }
    Ok(svg)
}

/// Horizontal bars of the largest effects: red where B is slower overall, green where faster, grey where
/// no row is significant.
fn effects_chart(d: &Diff, top: &[&Group]) -> Result<String, DiffError> {
    let title = "largest effects";
    let err = plot_error(title);
    let n = top.len() as i32;
    let x_max = top.iter().map(|g| g.effect_us).filter(|v| v.is_finite()).fold(0f64, f64::max).max(1e-3) * 1.05;
    let labels: Vec<String> = top
        .iter()
        .map(|g| {
            let curve = d.curves.get(g.curve).map(|c| c.label.as_str()).unwrap_or("?");
            let l = format!("{} · {curve}", g.metric.label());
            if l.chars().count() > LABEL_CHARS {
                l.chars().take(LABEL_CHARS - 1).chain(std::iter::once('…')).collect()
            } else {
                l
            }
        })
        .collect();
    let height = 60 + 22 * top.len().max(1) as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1000, height)).into_drawing_area();
        root.fill(&WHITE).map_err(&err)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(8)
            .x_label_area_size(34)
            .y_label_area_size(440)
            .build_cartesian_2d(0f64..x_max, (0..n.max(1)).into_segmented())
            .map_err(&err)?;
        // The largest bar on top: bar i sits at n - 1 - i.
        let formatter = |v: &SegmentValue<i32>| match v {
            SegmentValue::CenterOf(pos) => {
                usize::try_from(n - 1 - pos).ok().and_then(|i| labels.get(i)).cloned().unwrap_or_default()
            }
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(top.len().max(1))
            .y_label_formatter(&formatter)
            .x_desc("sum over points of |B − A|, µs per step")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .label_style(("sans-serif", 12))
            .draw()
            .map_err(&err)?;
        chart
            .draw_series(top.iter().enumerate().map(|(i, g)| {
                let pos = n - 1 - i as i32;
                let net: f64 = g.rows.iter().map(|r| r.change_us).sum();
                let color = match (g.significant_rows > 0, net > 0.0) {
                    (false, _) => RGBColor(170, 170, 170),
                    (true, true) => RGBColor(214, 39, 40),
                    (true, false) => RGBColor(44, 160, 44),
                };
                let mut bar = Rectangle::new(
                    [(0.0, SegmentValue::Exact(pos)), (g.effect_us, SegmentValue::Exact(pos + 1))],
                    color.filled(),
                );
                bar.set_margin(3, 3, 0, 0);
                bar
            }))
            .map_err(&err)?;
        root.present().map_err(&err)?;
    }
    Ok(svg)
}

fn opt_num(v: Option<f64>, decimals: usize) -> Cell {
    v.map_or_else(|| Cell::text("absent"), |v| Cell::num(v, decimals))
}

/// The table of rows of these groups.
fn rows_table(d: &Diff, groups: &[&Group], kernels: bool) -> Table {
    let mut headers = vec!["curve"];
    headers.extend(if kernels { vec!["kernel", "category"] } else { vec!["metric"] });
    headers.extend([
        "x",
        "A µs",
        "± A",
        "n A",
        "B µs",
        "± B",
        "n B",
        "change µs",
        "change %",
        "p",
        "p (Holm)",
        "significant",
    ]);
    let mut t = Table::new(headers);
    for g in groups {
        let curve = d.curves.get(g.curve).map(|c| c.label.clone()).unwrap_or_default();
        for r in &g.rows {
            let mut cells = vec![Cell::text(curve.clone())];
            match &g.metric {
                Metric::Kernel { name, category } => {
                    cells.push(Cell::text(name.clone()));
                    cells.push(Cell::text(category.clone()));
                }
                m => cells.push(Cell::text(m.label())),
            }
            cells.extend(row_cells(r));
            t.row(cells);
        }
    }
    t
}

fn row_cells(r: &Row) -> Vec<Cell> {
    let mark = |c: Cell| if r.significant { c.with_class("hi") } else { c };
    vec![
        Cell::int(r.x),
        opt_num(r.mean_a, 3),
        opt_num(r.std_a, 3),
        Cell::int(r.n_a),
        opt_num(r.mean_b, 3),
        opt_num(r.std_b, 3),
        Cell::int(r.n_b),
        mark(Cell::num(r.change_us, 3)),
        mark(Cell { text: pct(r), value: r.change_pct, class: None }),
        Cell { text: p_value(r.p), value: r.p, class: None },
        Cell { text: p_value(r.p_adjusted), value: r.p_adjusted, class: None },
        mark(Cell::text(if r.significant { "*" } else { "" })),
    ]
}

/// Renders `diff.html`.
pub fn render(d: &Diff) -> Result<String, DiffError> {
    let mut page = Page::new(&format!("coord diff: {} → {}", d.a.dir.display(), d.b.dir.display()));
    page.section("runs", "What is compared");
    page.paragraph(&format!("A: {} ({})", d.a.dir.display(), d.a.machines.join("; ")));
    page.paragraph(&format!("B: {} ({})", d.b.dir.display(), d.b.machines.join("; ")));
    if let Some(m) = &d.machines_compared {
        page.note(m);
    }
    for n in &d.notes {
        page.note(n);
    }
    page.note("B − A in µs of GPU time per step; ± is the standard deviation over the steps of the point.");
    page.note(&d.rule());
    page.paragraph(&d.summary_line());
    if !d.only_in_a.is_empty() || !d.only_in_b.is_empty() {
        page.heading("Points on one side only");
        let mut t = Table::new(["side", "curve", "x", "steps"]);
        for (side, points) in [("A", &d.only_in_a), ("B", &d.only_in_b)] {
            for p in points {
                t.row(vec![
                    Cell::text(side),
                    Cell::text(p.curve.clone()),
                    Cell::text(format!("{} {}", p.x_name, p.x)),
                    Cell::int(p.steps as u64),
                ]);
            }
        }
        page.table(&t);
    }

    page.section("effects", "Largest effects");
    let mut by_effect: Vec<&Group> = d.groups.iter().collect();
    by_effect.sort_by(|x, y| y.effect_us.total_cmp(&x.effect_us));
    by_effect.truncate(TOP_EFFECTS);
    page.figures(&[(
        format!("the {} largest effects (red: B slower, green: B faster, grey: not significant)", by_effect.len()),
        effects_chart(d, &by_effect)?,
    )]);
    let mut t = Table::new(["curve", "metric", "effect µs", "significant points", "points"]);
    for g in &d.groups {
        t.row(vec![
            Cell::text(d.curves.get(g.curve).map(|c| c.label.clone()).unwrap_or_default()),
            Cell::text(g.metric.label()),
            Cell::num(g.effect_us, 3),
            if g.significant_rows > 0 { Cell::int(g.significant_rows as u64).with_class("hi") } else { Cell::int(0) },
            Cell::int(g.rows.len() as u64),
        ]);
    }
    page.table(&t);

    page.section("plots", "A and B per category");
    for (ci, c) in d.curves.iter().enumerate() {
        page.heading(&format!("{} (A: {} {}, B: {} {})", c.label, c.host_a, c.gpu_a, c.host_b, c.gpu_b));
        let mut figures = Vec::new();
        for g in d.groups.iter().filter(|g| g.curve == ci && !matches!(g.metric, Metric::Kernel { .. })) {
            let series = |f: fn(&Row) -> Option<f64>| -> Vec<(f64, f64)> {
                g.rows.iter().filter_map(|r| f(r).map(|v| (r.x as f64, v))).collect()
            };
            let title = g.metric.label();
            let caption = format!(
                "{}: effect {:.1} µs, {} of {} points significant",
                g.metric.label(),
                g.effect_us,
                g.significant_rows,
                g.rows.len()
            );
            figures.push((caption, latency_plot(&title, &c.x_name, &series(|r| r.mean_a), &series(|r| r.mean_b))?));
        }
        // Categories in a fixed order (the whole step first) rather than by effect, so pages compare.
        figures.sort_by_key(|(caption, _)| {
            ["gpu_time", "attention (", "linear (", "others (coarse"]
                .iter()
                .position(|p| caption.starts_with(p))
                .unwrap_or(9)
        });
        page.figures(&figures);
    }

    let categories: Vec<&Group> = d.groups.iter().filter(|g| !matches!(g.metric, Metric::Kernel { .. })).collect();
    page.section("categories", "Categories and whole step");
    page.table(&rows_table(d, &categories, false));
    let kernels: Vec<&Group> = d.groups.iter().filter(|g| matches!(g.metric, Metric::Kernel { .. })).collect();
    page.section("kernels", "Kernels");
    page.note("Kernel statistics are over the steps each kernel ran in (kernels.csv); a kernel absent on one side is tested against 0 µs in each of that side's steps.");
    page.table(&rows_table(d, &kernels, true));
    Ok(page.finish())
}
