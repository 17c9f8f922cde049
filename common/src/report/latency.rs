//! Latency per category against batch size (decode) or tokens (prefill), with the latency models drawn
//! over the points, and the stacked breakdown of each point into the detailed categories.

use super::plots::{self, Marker, Scale, StackedBars, XyPlot, XySeries};
use super::{Ctx, figure, mean};
use crate::classify::{Coarse, Detail};
use crate::html::{Cell, Page, Table};
use crate::latency::{Model, Target};
use crate::results::{Curve, StepRecord};

/// One plotted quantity of a step: the whole step, a detailed or a coarse category.
#[derive(Debug, Clone, Copy)]
enum Quantity {
    Total,
    Detail(Detail),
    Coarse(Coarse),
}

impl Quantity {
    fn all() -> Vec<Quantity> {
        let mut v = vec![Quantity::Total];
        v.extend(Detail::ALL.iter().map(|d| Quantity::Detail(*d)));
        v.extend(Coarse::ALL.iter().map(|c| Quantity::Coarse(*c)));
        v
    }

    fn title(self) -> String {
        match self {
            Quantity::Total => "GPU time (whole step)".to_string(),
            Quantity::Detail(d) => d.name().to_string(),
            Quantity::Coarse(c) => format!("{} (coarse)", c.name()),
        }
    }

    fn of(self, s: &StepRecord) -> f64 {
        match self {
            Quantity::Total => s.gpu_time_us,
            Quantity::Detail(d) => s.detail_us[d.index()],
            Quantity::Coarse(c) => s.coarse_us(c),
        }
    }

    /// The latency model's target and name for this quantity.
    fn target(self) -> (Target, &'static str) {
        match self {
            Quantity::Total => (Target::Total, "gpu_time"),
            Quantity::Detail(d) => (Target::Category, d.name()),
            Quantity::Coarse(c) => (Target::Coarse, c.name()),
        }
    }
}

/// The colour of a detailed category in the stacked breakdown (the same in every bar).
pub(super) fn detail_color(d: Detail) -> plotters::style::RGBColor {
    plots::color(d.index())
}

fn fit_of<'a>(ctx: &Ctx<'a>, curve: &Curve, q: Quantity) -> Option<&'a Model> {
    let (target, name) = q.target();
    ctx.models_of(curve)?.get(target, name).filter(|m| m.fit.is_some())
}

/// Writes the "Latency by category" section: one small plot per quantity, every curve in it.
pub(super) fn section(page: &mut Page, ctx: &Ctx<'_>) {
    page.section("latency", "Latency by category");
    page.paragraph(
        "Mean GPU time per step of each category (µs) against batch size for decode (one new token per \
         sequence) and against tokens (batch × prompt length) for prefill, both on log2 axes. One colour per \
         curve (machine and shape); dots are the means of the point's steps. Where a latency model is fitted, \
         its piecewise-linear fit is the line and its knee the triangle; otherwise the dots are joined.",
    );
    let axes = ctx.by_axis();
    let several = axes.len() > 1;
    for (axis, curves) in axes {
        if several {
            page.heading(&format!("Against {axis}"));
        }
        let mut figs = Vec::new();
        for q in Quantity::all() {
            let mut series = Vec::new();
            let mut notes = Vec::new();
            for curve in &curves {
                let Some(by_x) = ctx.points.get(*curve) else { continue };
                let color = ctx.color(curve);
                let pts: Vec<(f64, f64)> =
                    by_x.iter().map(|(x, steps)| (*x as f64, mean(steps.iter().map(|s| q.of(s))))).collect();
                let label = Some(curve.label());
                match fit_of(ctx, curve, q).and_then(|m| m.fit.as_ref()) {
                    Some(fit) => {
                        let (lo, hi) = (pts.first().map_or(1.0, |p| p.0), pts.last().map_or(1.0, |p| p.0));
                        // Sampled evenly on the log axis: the fit is straight in x, not in log x.
                        let n = 64;
                        let line: Vec<(f64, f64)> = (0..=n)
                            .map(|i| {
                                let x = lo * (hi / lo).powf(i as f64 / n as f64);
                                (x, fit.predict(x))
                            })
                            .collect();
                        series.push(XySeries::points(label, color, pts, Marker::Dot));
                        series.push(XySeries::line(None, color, line, 2));
                        if let Some(k) = fit.knee {
                            let mut s = XySeries::points(None, color, vec![(k, fit.predict(k))], Marker::Triangle);
                            s.size = 7;
                            series.push(s);
                            notes.push(format!("{}: R² {:.3}, knee at {:.0}", curve.label(), fit.r2, k));
                        } else {
                            notes.push(format!("{}: R² {:.3}, no knee", curve.label(), fit.r2));
                        }
                    }
                    None => {
                        let mut s = XySeries::points(label, color, pts, Marker::Dot);
                        s.line = true;
                        series.push(s);
                    }
                }
            }
            let caption = format!(
                "{}: µs per step against {axis}; {}",
                q.title(),
                if notes.is_empty() { "no latency model".to_string() } else { format!("fit {}", notes.join("; ")) }
            );
            let plot = XyPlot {
                title: q.title(),
                x_desc: format!("{axis} (log2)"),
                y_desc: "µs per step".to_string(),
                x_scale: Scale::Log2,
                y_scale: Scale::Linear,
                size: (380, 280),
                series,
            };
            figs.push(figure(caption, plots::xy(&plot)));
        }
        page.figures(&figs);
    }

    page.heading("Mean µs per step");
    let mut headers = vec!["curve".to_string(), "x".to_string(), "steps".to_string(), "GPU time".to_string()];
    headers.extend(Detail::ALL.iter().map(|d| d.name().to_string()));
    headers.extend(Coarse::ALL.iter().map(|c| format!("{} (coarse)", c.name())));
    let mut t = Table::new(headers);
    for (curve, by_x) in &ctx.points {
        for (x, steps) in by_x {
            let mut row = vec![Cell::text(curve.label()), Cell::int(*x), Cell::int(steps.len() as u64)];
            for q in Quantity::all() {
                row.push(Cell::num(mean(steps.iter().map(|s| q.of(s))), 1));
            }
            t.row(row);
        }
    }
    page.note("x is the batch size (decode) or tokens per step (prefill).");
    page.table(&t);
    models_table(page, ctx);
}

/// The fitted models, one row per curve and quantity.
fn models_table(page: &mut Page, ctx: &Ctx<'_>) {
    page.heading("Latency models");
    let mut t = Table::new([
        "curve",
        "target",
        "intercept (µs)",
        "slope (µs per x)",
        "knee (x)",
        "slope after knee",
        "R²",
        "held-out error (%)",
        "points",
    ]);
    for curve in &ctx.curves {
        for q in Quantity::all() {
            let Some(m) = fit_of(ctx, curve, q) else { continue };
            let Some(f) = &m.fit else { continue };
            t.row(vec![
                Cell::text(curve.label()),
                Cell::text(q.title()),
                Cell::num(f.intercept_us, 2),
                Cell::num(f.slope_us, 3),
                f.knee.map(|k| Cell::num(k, 0)).unwrap_or_else(|| Cell::text("none")),
                Cell::num(f.slope_after_us, 3),
                Cell::num(f.r2, 4),
                f.held_out_error.map(|e| Cell::num(e * 100.0, 1)).unwrap_or_else(|| Cell::text("")),
                Cell::int(m.points as u64),
            ]);
        }
    }
    if t.rows.is_empty() {
        page.note("No latency models fitted for these results: the plots join the points instead.");
    } else {
        page.table(&t);
    }
}

/// Writes the "Breakdown" section: per curve, the detailed categories stacked per batch size.
pub(super) fn breakdown(page: &mut Page, ctx: &Ctx<'_>) {
    page.section("breakdown", "Breakdown per batch size");
    page.paragraph(
        "Mean µs per step of each detailed category, stacked: a bar's height is the step's GPU time (the \
         categories add up to it). The table gives each category's share of the GPU time, %.",
    );
    let mut figs = Vec::new();
    let mut headers = vec!["curve".to_string(), "x".to_string(), "GPU time (µs)".to_string()];
    headers.extend(Detail::ALL.iter().map(|d| format!("{} %", d.name())));
    let mut t = Table::new(headers);
    for (curve, by_x) in &ctx.points {
        let bars: Vec<String> = by_x.keys().map(|x| x.to_string()).collect();
        let parts = Detail::ALL
            .iter()
            .map(|d| {
                (
                    d.name().to_string(),
                    detail_color(*d),
                    by_x.values().map(|s| mean(s.iter().map(|r| r.detail_us[d.index()]))).collect(),
                )
            })
            .collect();
        let plot = StackedBars {
            title: curve.label(),
            x_desc: curve.x_name().to_string(),
            y_desc: "µs per step".to_string(),
            bars,
            parts,
            size: (if by_x.len() > 8 { 760 } else { 520 }, 320),
        };
        figs.push(figure(
            format!("{}: detailed categories stacked, µs per step against {}", curve.label(), curve.x_name()),
            plots::stacked_bars(&plot),
        ));
        for (x, steps) in by_x {
            let total = mean(steps.iter().map(|s| s.gpu_time_us));
            let mut row = vec![Cell::text(curve.label()), Cell::int(*x), Cell::num(total, 1)];
            for d in Detail::ALL {
                let v = mean(steps.iter().map(|s| s.detail_us[d.index()]));
                row.push(Cell::num(if total > 0.0 { v / total * 100.0 } else { 0.0 }, 1));
            }
            t.row(row);
        }
    }
    page.figures(&figs);
    page.table(&t);
}
