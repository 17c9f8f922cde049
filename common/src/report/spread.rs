//! Step-time spread per point: quantiles of the per-step GPU time, with throttled steps marked.

use plotters::style::RGBColor;

use super::plots::{self, Marker, Scale, XyPlot, XySeries};
use super::{Ctx, figure, quantile};
use crate::html::{Cell, Page, Table};

const THROTTLED: RGBColor = RGBColor(214, 39, 40);
const WHISKER: RGBColor = RGBColor(150, 150, 150);

/// Writes the "Step-time spread" section.
pub(super) fn section(page: &mut Page, ctx: &Ctx<'_>) {
    page.section("spread", "Step-time spread");
    page.paragraph(
        "Per point, the distribution of the steps' GPU time (sum of the step's kernel, copy and set \
         durations, µs): min, p50, p90, p99, max, with quantiles interpolated linearly between the steps \
         (with 3 steps a point, p99 is nearly the max). The plots show each step's deviation from its \
         point's median, %: the grey bar spans min to max, rings are p90, crosses p99; throttled steps \
         (the GPU reported a throttle reason while the step ran) are red.",
    );
    let all: Vec<_> = ctx.points.values().flat_map(|b| b.values().flatten()).collect();
    let with_telemetry = all.iter().filter(|s| s.throttled.is_some()).count();
    let throttled_n = all.iter().filter(|s| s.throttled == Some(true)).count();
    if with_telemetry == 0 {
        page.note(
            "No GPU telemetry in these results (no throttled column): whether any step was throttled is unknown.",
        );
    } else {
        if with_telemetry < all.len() {
            page.note(&format!(
                "{} of {} steps have no telemetry: their throttling is unknown.",
                all.len() - with_telemetry,
                all.len()
            ));
        }
        page.note(&format!("{throttled_n} of {with_telemetry} steps with telemetry were throttled."));
    }

    let mut figs = Vec::new();
    let mut t = Table::new([
        "curve",
        "x",
        "steps",
        "min (µs)",
        "p50 (µs)",
        "p90 (µs)",
        "p99 (µs)",
        "max (µs)",
        "max − min (% of p50)",
        "throttled steps",
        "SM clock (MHz)",
        "throttle reasons",
    ]);
    let mut steps_t =
        Table::new(["curve", "x", "trace", "step", "GPU time (µs)", "vs p50 (%)", "SM clock (MHz)", "reasons"]);
    for (curve, by_x) in &ctx.points {
        let color = ctx.color(curve);
        let (mut normal, mut hot, mut p90s, mut p99s, mut whiskers) = (vec![], vec![], vec![], vec![], vec![]);
        for (x, steps) in by_x {
            let mut v: Vec<f64> = steps.iter().map(|s| s.gpu_time_us).collect();
            v.sort_by(f64::total_cmp);
            let q = |p| quantile(&v, p).unwrap_or(0.0);
            let (lo, p50, p90, p99, hi) = (q(0.0), q(0.5), q(0.9), q(0.99), q(1.0));
            let rel = |y: f64| if p50 > 0.0 { (y / p50 - 1.0) * 100.0 } else { 0.0 };
            let xf = *x as f64;
            whiskers.push([(xf, rel(lo)), (xf, rel(hi))]);
            p90s.push((xf, rel(p90)));
            p99s.push((xf, rel(p99)));
            for s in steps {
                if s.throttled == Some(true) {
                    hot.push((xf, rel(s.gpu_time_us)));
                    steps_t.row(vec![
                        Cell::text(curve.label()),
                        Cell::int(*x),
                        Cell::text(s.trace.clone()),
                        Cell::int(u64::from(s.step)),
                        Cell::num(s.gpu_time_us, 1),
                        Cell::num(rel(s.gpu_time_us), 2),
                        Cell::text(clock(s.sm_clock_mhz)),
                        Cell::text(s.throttle_reasons.clone()).with_class("hi"),
                    ]);
                } else {
                    normal.push((xf, rel(s.gpu_time_us)));
                }
            }
            let known = steps.iter().filter(|s| s.throttled.is_some()).count();
            let n_hot = steps.iter().filter(|s| s.throttled == Some(true)).count();
            let th = if known == 0 {
                Cell::text("not recorded")
            } else {
                let c = Cell { text: format!("{n_hot} of {known}"), value: Some(n_hot as f64), class: None };
                if n_hot > 0 { c.with_class("hi") } else { c }
            };
            let clocks = {
                let lo = steps.iter().filter_map(|s| s.sm_clock_mhz.map(|c| c.0)).min();
                let hi = steps.iter().filter_map(|s| s.sm_clock_mhz.map(|c| c.1)).max();
                clock(lo.zip(hi))
            };
            let mut reasons: Vec<&str> = steps
                .iter()
                .flat_map(|s| s.throttle_reasons.split(['|', ';', ',']))
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .collect();
            reasons.sort_unstable();
            reasons.dedup();
            let x_cell = if n_hot > 0 { Cell::int(*x).with_class("hi") } else { Cell::int(*x) };
            t.row(vec![
                Cell::text(curve.label()),
                x_cell,
                Cell::int(steps.len() as u64),
                Cell::num(lo, 1),
                Cell::num(p50, 1),
                Cell::num(p90, 1),
                Cell::num(p99, 1),
                Cell::num(hi, 1),
                Cell::num(if p50 > 0.0 { (hi - lo) / p50 * 100.0 } else { 0.0 }, 2),
                th,
                Cell::text(clocks),
                Cell::text(reasons.join(", ")),
            ]);
        }
        let mut w = XySeries::points(Some("min–max".into()), WHISKER, vec![], Marker::None);
        w.segments = whiskers;
        w.width = 3;
        let mut steps_s = XySeries::points(Some("step".into()), color, normal, Marker::Dot);
        steps_s.size = 2;
        let mut hot_s = XySeries::points(Some("throttled step".into()), THROTTLED, hot, Marker::Dot);
        hot_s.size = 4;
        let mut series = vec![
            w,
            steps_s,
            XySeries::points(Some("p90".into()), color, p90s, Marker::Ring),
            XySeries::points(Some("p99".into()), color, p99s, Marker::Cross),
        ];
        if with_telemetry > 0 {
            series.push(hot_s);
        }
        let plot = XyPlot {
            title: curve.label(),
            x_desc: format!("{} (log2)", curve.x_name()),
            y_desc: "step GPU time vs p50 (%)".to_string(),
            x_scale: Scale::Log2,
            y_scale: Scale::LinearFit,
            size: (560, 300),
            series,
        };
        let n_hot = by_x.values().flatten().filter(|s| s.throttled == Some(true)).count();
        figs.push(figure(
            format!(
                "{}: per-step GPU time relative to its point's median, against {}; {}",
                curve.label(),
                curve.x_name(),
                if with_telemetry == 0 {
                    "throttling not recorded".to_string()
                } else {
                    format!("{n_hot} throttled step(s) in red")
                }
            ),
            plots::xy(&plot),
        ));
    }
    page.figures(&figs);
    page.table(&t);
    if !steps_t.rows.is_empty() {
        page.heading("Throttled steps");
        page.table(&steps_t);
    }
}

fn clock(c: Option<(u32, u32)>) -> String {
    match c {
        Some((a, b)) if a == b => a.to_string(),
        Some((a, b)) => format!("{a}–{b}"),
        None => "not recorded".to_string(),
    }
}
