//! The roofline: achieved TFLOP/s against arithmetic intensity per detailed category (`roofline.csv`)
//! and per op (the FLOP model columns of `ops.csv`), under the GPU's roof.

use std::collections::{BTreeMap, HashMap};

use plotters::style::RGBColor;

use super::plots::{self, Marker, Scale, XyPlot, XySeries};
use super::{Ctx, figure, short_name};
use crate::classify::Detail;
use crate::html::{Cell, Page, Table};
use crate::results::{Curve, OpRecord, RooflineRecord, Series};

/// Roofline plots per curve: one per batch size (or token count) up to this many; beyond, this many
/// spread over the range (smallest, largest and evenly between, by position).
const REPRESENTATIVE: usize = 16;
/// Ops listed per point and among those without a model.
const TOP_OPS: usize = 15;
const OP_COLOR: RGBColor = RGBColor(110, 110, 110);
const ROOF_COLOR: RGBColor = RGBColor(40, 40, 40);

/// The roof at intensity `i` (FLOP/byte): min(peak TFLOP/s, i × peak GB/s / 1000), TFLOP/s.
fn roof(i: f64, peak_tflops: f64, peak_gbps: f64) -> f64 {
    peak_tflops.min(i * peak_gbps / 1000.0)
}

/// An op's modelled values, when it has them: (intensity FLOP/byte, achieved TFLOP/s).
fn op_point(o: &OpRecord) -> Option<(f64, f64)> {
    let (f, b, t) = (o.flops_per_call?, o.bytes_per_call?, o.achieved_tflops?);
    (f > 0.0 && b > 0.0 && t > 0.0).then_some((f / b, t))
}

/// Up to `n` of the sorted `xs`: the first, the last and evenly spaced ones between.
fn representative(xs: &[u64], n: usize) -> Vec<u64> {
    if xs.len() <= n {
        return xs.to_vec();
    }
    let mut out: Vec<u64> = (0..n).filter_map(|i| xs.get(i * (xs.len() - 1) / (n - 1)).copied()).collect();
    out.dedup();
    out
}

/// Writes the "Roofline" section.
pub(super) fn section(page: &mut Page, ctx: &Ctx<'_>) {
    page.section("roofline", "Roofline");
    let r = ctx.results;
    let modelled_ops = r.ops.iter().filter(|o| op_point(o).is_some()).count();
    if r.roofline.is_empty() && modelled_ops == 0 {
        page.note("no roofline data (no shapes recorded)");
        return;
    }
    page.paragraph(
        "Achieved TFLOP/s against arithmetic intensity (FLOP per byte moved), log-log, from the ops' shape \
         models: per detailed category (roofline.csv, filled dots) and per op (ops.csv, grey rings). The roof \
         is min(peak TFLOP/s, intensity × peak GB/s / 1000) for the GPU's dense peak of the ops' data type; \
         left of its ridge an op is memory-bound. % of roof is achieved TFLOP/s over the roof at the point's \
         intensity.",
    );
    // The roof drawn per series: its BF16/FP16 peaks (the tensor-core roof most modelled work runs
    // under), else the first row's. Each row's "% of roof" uses the peaks of its own data type.
    let mut peaks: HashMap<&Series, (f64, f64)> = HashMap::new();
    for c in r.roofline.iter().filter(|c| c.peak_tflops > 0.0 && c.peak_gbps > 0.0) {
        if c.dtype == "bf16" || c.dtype.is_empty() {
            peaks.insert(&c.series, (c.peak_tflops, c.peak_gbps));
        } else {
            peaks.entry(&c.series).or_insert((c.peak_tflops, c.peak_gbps));
        }
    }
    for o in &r.ops {
        if let (Some(t), Some(g)) = (o.peak_tflops, o.peak_gbps)
            && o.dtype == "bf16"
        {
            peaks.entry(&o.series).or_insert((t, g));
        }
    }
    let pct = |peak: Option<(f64, f64)>, i: f64, t: f64| -> Cell {
        match peak {
            Some((pt, pg)) if roof(i, pt, pg) > 0.0 => Cell::num(t / roof(i, pt, pg) * 100.0, 1),
            _ => Cell::text(""),
        }
    };
    type ByX<'a> = BTreeMap<u64, (Vec<&'a RooflineRecord>, Vec<&'a OpRecord>)>;
    let mut by_curve: BTreeMap<Curve, ByX<'_>> = BTreeMap::new();
    for c in &r.roofline {
        by_curve.entry(c.series.curve()).or_default().entry(c.series.tokens()).or_default().0.push(c);
    }
    for o in r.ops.iter().filter(|o| op_point(o).is_some()) {
        by_curve.entry(o.series.curve()).or_default().entry(o.series.tokens()).or_default().1.push(o);
    }

    let mut figs = Vec::new();
    let mut ops_t =
        Table::new(["curve", "x", "op", "calls/step", "µs/step", "FLOP/byte", "TFLOP/s", "GB/s", "% of roof", "bound"]);
    let mut ops_left = 0usize;
    for (curve, by_x) in &by_curve {
        let xs: Vec<u64> = by_x.keys().copied().collect();
        for x in representative(&xs, REPRESENTATIVE) {
            let Some((cats, ops)) = by_x.get(&x) else { continue };
            let mut series = Vec::new();
            let mut pts_i: Vec<f64> = Vec::new();
            for c in cats {
                if c.flops <= 0.0 || c.bytes <= 0.0 || c.achieved_tflops <= 0.0 {
                    continue;
                }
                let i = c.flops / c.bytes;
                pts_i.push(i);
                let color = Detail::ALL
                    .iter()
                    .find(|d| d.name() == c.category)
                    .map_or(OP_COLOR, |d| super::latency::detail_color(*d));
                let mut s =
                    XySeries::points(Some(c.category.clone()), color, vec![(i, c.achieved_tflops)], Marker::Dot);
                s.size = 5;
                series.push(s);
            }
            let op_pts: Vec<(f64, f64)> = ops.iter().filter_map(|o| op_point(o)).collect();
            pts_i.extend(op_pts.iter().map(|p| p.0));
            if !op_pts.is_empty() {
                series.insert(0, XySeries::points(Some("ops".into()), OP_COLOR, op_pts, Marker::Ring));
            }
            let peak = cats
                .first()
                .and_then(|c| peaks.get(&c.series))
                .or_else(|| ops.first().and_then(|o| peaks.get(&o.series)));
            let mut caption = format!("{}, {} {x}: achieved TFLOP/s against FLOP/byte", curve.label(), curve.x_name());
            if let Some(&(pt, pg)) = peak {
                if pt > 0.0 && pg > 0.0 {
                    let ridge = pt * 1000.0 / pg;
                    let lo = pts_i.iter().copied().fold(ridge, f64::min) / 4.0;
                    let hi = pts_i.iter().copied().fold(ridge, f64::max) * 4.0;
                    let line = vec![(lo, roof(lo, pt, pg)), (ridge, pt), (hi, pt)];
                    series.insert(
                        0,
                        XySeries::line(Some(format!("roof ({pt:.0} TFLOP/s, {pg:.0} GB/s)")), ROOF_COLOR, line, 2),
                    );
                    caption.push_str(&format!("; ridge at {ridge:.0} FLOP/byte"));
                }
            } else {
                caption.push_str("; no peaks recorded (no roofline.csv): no roof");
            }
            let plot = XyPlot {
                title: format!("{} · {} {x}", curve.label(), curve.x_name()),
                x_desc: "FLOP per byte (log10)".to_string(),
                y_desc: "TFLOP/s (log10)".to_string(),
                x_scale: Scale::Log10,
                y_scale: Scale::Log10,
                size: (440, 340),
                series,
            };
            figs.push(figure(caption, plots::xy(&plot)));

            let mut sorted: Vec<&&OpRecord> = ops.iter().collect();
            sorted.sort_by(|a, b| b.mean_us.total_cmp(&a.mean_us));
            ops_left += sorted.len().saturating_sub(TOP_OPS);
            for o in sorted.into_iter().take(TOP_OPS) {
                let Some((i, t)) = op_point(o) else { continue };
                ops_t.row(vec![
                    Cell::text(curve.label()),
                    Cell::int(x),
                    Cell::text(short_name(&o.name, 70)),
                    Cell::num(o.calls as f64 / o.steps.max(1) as f64, 1),
                    Cell::num(o.mean_us, 1),
                    Cell::num(i, 1),
                    Cell::num(t, 2),
                    o.achieved_gbps.map(|g| Cell::num(g, 0)).unwrap_or_else(|| Cell::text("")),
                    pct(o.peak_tflops.zip(o.peak_gbps), i, t),
                    Cell::text(o.bound.clone()),
                ]);
            }
        }
    }
    page.figures(&figs);

    if !r.roofline.is_empty() {
        page.heading("Per category");
        let mut t = Table::new([
            "curve",
            "x",
            "category",
            "dtype",
            "GFLOP/step",
            "MB/step",
            "µs/step",
            "FLOP/byte",
            "TFLOP/s",
            "GB/s",
            "% of roof",
            "bound",
        ]);
        for c in &r.roofline {
            let i = if c.bytes > 0.0 { c.flops / c.bytes } else { 0.0 };
            t.row(vec![
                Cell::text(c.series.curve().label()),
                Cell::int(c.series.tokens()),
                Cell::text(c.category.clone()),
                Cell::text(c.dtype.clone()),
                Cell::num(c.flops / 1e9, 3),
                Cell::num(c.bytes / 1e6, 2),
                Cell::num(c.time_us, 1),
                Cell::num(i, 1),
                Cell::num(c.achieved_tflops, 2),
                Cell::num(c.achieved_gbps, 0),
                pct((c.peak_tflops > 0.0).then_some((c.peak_tflops, c.peak_gbps)), i, c.achieved_tflops),
                Cell::text(c.bound.clone()),
            ]);
        }
        page.table(&t);
    }
    if !ops_t.rows.is_empty() {
        page.heading("Ops with a FLOP model");
        page.note(&format!(
            "At the plotted points, the {TOP_OPS} modelled ops with the most device time each{}.",
            if ops_left > 0 { format!("; {ops_left} more left out") } else { String::new() }
        ));
        page.table(&ops_t);
    }
    unmodelled(page, ctx);
}

/// Per curve, at its largest x: the ops among the top by device time that have no FLOP model.
fn unmodelled(page: &mut Page, ctx: &Ctx<'_>) {
    let r = ctx.results;
    let mut largest: BTreeMap<Curve, u64> = BTreeMap::new();
    for o in &r.ops {
        let e = largest.entry(o.series.curve()).or_insert(0);
        *e = (*e).max(o.series.tokens());
    }
    let mut t = Table::new(["curve", "x", "op", "side", "µs/step", "calls/step"]);
    for (curve, x) in &largest {
        let mut top: Vec<&OpRecord> =
            // Op calls only (`cpu` rows): kernels and copies (`device` rows) never have a FLOP model.
            r.ops
                .iter()
                .filter(|o| o.series.curve() == *curve && o.series.tokens() == *x && o.mean_us > 0.0 && o.side == "cpu")
                .collect();
        top.sort_by(|a, b| b.mean_us.total_cmp(&a.mean_us));
        for o in top.into_iter().take(TOP_OPS).filter(|o| o.flops_per_call.is_none()) {
            t.row(vec![
                Cell::text(curve.label()),
                Cell::int(*x),
                Cell::text(short_name(&o.name, 70)),
                Cell::text(o.side.clone()),
                Cell::num(o.mean_us, 1),
                Cell::num(o.calls as f64 / o.steps.max(1) as f64, 1),
            ]);
        }
    }
    if !t.rows.is_empty() {
        page.heading("Top ops without a FLOP model");
        page.note(&format!(
            "Among the {TOP_OPS} ops with the most device time at each curve's largest point, those whose \
             shapes have no FLOP model: their work is not on the roofline. Ops nest (times include their \
             children), so wrappers around modelled ops appear here too."
        ));
        page.table(&t);
    }
}
