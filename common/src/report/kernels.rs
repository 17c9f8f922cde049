//! Top kernels per curve: their time per step and share of the GPU time, and the top few against
//! batch size.

use std::collections::{BTreeMap, HashMap};

use super::plots::{self, Marker, Scale, XyPlot, XySeries};
use super::{Ctx, figure, short_name};
use crate::html::{Cell, Page, Table};
use crate::results::{Curve, KernelRecord, Series};

/// Kernels listed per curve.
const TOP_TABLE: usize = 15;
/// Kernels drawn per curve (more lines are not told apart).
const TOP_PLOT: usize = 8;

/// One kernel of a curve: time per step (µs, averaged over all the point's steps) per x.
struct KernelLine<'a> {
    name: &'a str,
    category: &'a str,
    /// x → (µs per step, share of the point's GPU time, calls per step).
    by_x: BTreeMap<u64, (f64, f64, f64)>,
    total: f64,
}

/// Writes the "Top kernels" section.
pub(super) fn section(page: &mut Page, ctx: &Ctx<'_>) {
    page.section("kernels", "Top kernels");
    if ctx.results.kernels.is_empty() {
        page.note("No kernels.csv in these results: no per-kernel times.");
        return;
    }
    page.paragraph(&format!(
        "Per curve, the {TOP_TABLE} kernels with the most GPU time summed over the points. A kernel's time \
         per step is its mean over the steps it ran in times the share of the point's steps it ran in; its \
         share is that time over the point's mean GPU time per step (kernels, copies and sets). Names are \
         shortened (no parameter list); kernels.csv has them in full. The plot draws the top {TOP_PLOT}."
    ));
    // Steps and GPU time per series, from the steps.csv rows that count in the series' GPU statistics
    // (per rank for tensor-parallel jobs, as the kernel rows are).
    let mut gpu: HashMap<&Series, (usize, f64)> = HashMap::new();
    for s in ctx.results.steps.iter().filter(|s| s.counted()) {
        let e = gpu.entry(&s.series).or_default();
        e.0 += 1;
        e.1 += s.gpu_time_us;
    }
    let mut by_curve: BTreeMap<Curve, Vec<&KernelRecord>> = BTreeMap::new();
    for k in &ctx.results.kernels {
        by_curve.entry(k.series.curve()).or_default().push(k);
    }
    let mut figs = Vec::new();
    let mut tables = Vec::new();
    for (curve, records) in &by_curve {
        let mut lines: BTreeMap<(&str, &str), KernelLine<'_>> = BTreeMap::new();
        for k in records {
            let (n, sum) = gpu.get(&k.series).copied().unwrap_or((0, 0.0));
            let steps = if n > 0 { n as f64 } else { k.steps.max(1) as f64 };
            let per_step = k.mean_us * k.steps as f64 / steps;
            let share = if sum > 0.0 { per_step / (sum / n as f64) } else { 0.0 };
            let line = lines.entry((&k.kernel, &k.category)).or_insert_with(|| KernelLine {
                name: &k.kernel,
                category: &k.category,
                by_x: BTreeMap::new(),
                total: 0.0,
            });
            let e = line.by_x.entry(k.series.tokens()).or_insert((0.0, 0.0, 0.0));
            e.0 += per_step;
            e.1 += share;
            e.2 += k.calls as f64 / steps;
            line.total += per_step;
        }
        let mut lines: Vec<KernelLine<'_>> = lines.into_values().collect();
        lines.sort_by(|a, b| b.total.total_cmp(&a.total).then_with(|| a.name.cmp(b.name)));
        let all_total: f64 = lines.iter().map(|l| l.total).sum();
        let xs: Vec<u64> = {
            let mut v: Vec<u64> = lines.iter().flat_map(|l| l.by_x.keys().copied()).collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        let (x_lo, x_hi) = (xs.first().copied().unwrap_or(0), xs.last().copied().unwrap_or(0));

        let series = lines
            .iter()
            .take(TOP_PLOT)
            .enumerate()
            .map(|(i, l)| {
                let mut s = XySeries::points(
                    Some(short_name(l.name, 44)),
                    plots::color(i),
                    l.by_x.iter().map(|(x, v)| (*x as f64, v.0)).collect(),
                    Marker::Dot,
                );
                s.line = true;
                s.size = 2;
                s
            })
            .collect();
        let plot = XyPlot {
            title: curve.label(),
            x_desc: format!("{} (log2)", curve.x_name()),
            y_desc: "µs per step".to_string(),
            x_scale: Scale::Log2,
            y_scale: Scale::Linear,
            size: (760, 340),
            series,
        };
        figs.push(figure(
            format!(
                "{}: the top {} kernels' µs per step against {}",
                curve.label(),
                TOP_PLOT.min(lines.len()),
                curve.x_name()
            ),
            plots::xy(&plot),
        ));

        let mut t = Table::new([
            "#".to_string(),
            "kernel".to_string(),
            "category".to_string(),
            "mean share of GPU time (%)".to_string(),
            format!("µs/step at {x_lo}"),
            format!("µs/step at {x_hi}"),
            format!("share at {x_lo} (%)"),
            format!("share at {x_hi} (%)"),
            format!("calls/step at {x_hi}"),
        ]);
        for (i, l) in lines.iter().take(TOP_TABLE).enumerate() {
            let at = |x: u64| l.by_x.get(&x).copied();
            let num = |v: Option<f64>, d: usize| v.map(|v| Cell::num(v, d)).unwrap_or_else(|| Cell::text("—"));
            t.row(vec![
                Cell::int(i as u64 + 1),
                Cell::text(short_name(l.name, 90)),
                Cell::text(l.category),
                Cell::num(super::mean(l.by_x.values().map(|v| v.1 * 100.0)), 2),
                num(at(x_lo).map(|v| v.0), 1),
                num(at(x_hi).map(|v| v.0), 1),
                num(at(x_lo).map(|v| v.1 * 100.0), 2),
                num(at(x_hi).map(|v| v.1 * 100.0), 2),
                num(at(x_hi).map(|v| v.2), 1),
            ]);
        }
        let left = lines.len().saturating_sub(TOP_TABLE);
        let note = if left > 0 {
            let rest: f64 = lines.iter().skip(TOP_TABLE).map(|l| l.total).sum();
            format!(
                "{}: {} kernels; {left} more left out, together {:.1}% of the kernel time.",
                curve.label(),
                lines.len(),
                if all_total > 0.0 { rest / all_total * 100.0 } else { 0.0 }
            )
        } else {
            format!("{}: {} kernels.", curve.label(), lines.len())
        };
        tables.push((curve.label(), note, t));
    }
    page.figures(&figs);
    for (label, note, t) in tables {
        if by_curve.len() > 1 {
            page.heading(&label);
        }
        page.note(&note);
        page.table(&t);
    }
}
