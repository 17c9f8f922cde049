//! The report's plots, drawn with `plotters` into SVG strings: scatter/line plots on linear or
//! logarithmic axes, and stacked bars. Every plot carries its legend below the chart (never over the
//! data), and text uses the generic `sans-serif` family, so the page needs no font files.
//!
//! Logarithmic axes are drawn as linear axes over log2 or log10 of the values, with ticks chosen here
//! and labelled with the values themselves: powers of two for batch sizes and tokens (1, 2, 4 … 256),
//! 1, 2 and 5 times the powers of ten for the roofline, where plotters' own log scale would label
//! powers of ten only (and a range within one decade not at all).

use plotters::coord::Shift;
use plotters::coord::ranged1d::Ranged;
use plotters::prelude::*;

/// A plot that could not be drawn (the plotting backend's message).
#[derive(Debug, thiserror::Error)]
#[error("plot failed: {0}")]
pub struct PlotError(pub String);

fn err<E: std::fmt::Display>(e: E) -> PlotError {
    PlotError(e.to_string())
}

/// How an axis maps values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Linear, from 0 (or the smallest value when negative) to the largest value.
    Linear,
    /// Linear around the values (not from 0): for deviations.
    LinearFit,
    /// Logarithmic, ticks at powers of two.
    Log2,
    /// Logarithmic, ticks at powers of ten.
    Log10,
}

impl Scale {
    /// The value on the drawn (linear) axis; None where a log axis cannot show it (≤ 0, not finite).
    fn to_axis(self, v: f64) -> Option<f64> {
        let t = match self {
            Scale::Linear | Scale::LinearFit => v,
            Scale::Log2 if v > 0.0 => v.log2(),
            Scale::Log10 if v > 0.0 => v.log10(),
            _ => return None,
        };
        t.is_finite().then_some(t)
    }

    /// A tick label for a position on the drawn axis: the value it stands for.
    fn label(self, t: f64) -> String {
        match self {
            Scale::Linear | Scale::LinearFit => short_number(t),
            Scale::Log2 => short_number(2f64.powf(t)),
            Scale::Log10 => short_number(10f64.powf(t)),
        }
    }

    /// Tick positions on the drawn axis over `lo..hi`: round values for linear axes; whole powers of two,
    /// or 1, 2 and 5 times the powers of ten, for log axes (thinned when there are many), and round
    /// values in between where the range is too narrow to hold two of those.
    fn ticks(self, lo: f64, hi: f64) -> Vec<f64> {
        let inside = |v: &f64| *v >= lo - 1e-9 && *v <= hi + 1e-9;
        let thin = |v: Vec<f64>, most: usize| -> Vec<f64> {
            let step = v.len().div_ceil(most.max(1)).max(1);
            v.into_iter().step_by(step).collect()
        };
        let ticks = match self {
            Scale::Linear | Scale::LinearFit => return linear_ticks(lo, hi, 6),
            Scale::Log2 => {
                let v: Vec<f64> = (lo.ceil() as i64..=hi.floor() as i64).map(|k| k as f64).collect();
                thin(v, 10)
            }
            Scale::Log10 => {
                let mut v: Vec<f64> = Vec::new();
                for k in lo.floor() as i64..=hi.ceil() as i64 {
                    for m in [1.0f64, 2.0, 5.0] {
                        v.push(k as f64 + m.log10());
                    }
                }
                v.retain(inside);
                if v.len() > 10 {
                    v.retain(|t| (t - t.round()).abs() < 1e-9);
                    v = thin(v, 10);
                }
                v
            }
        };
        if ticks.len() >= 2 {
            return ticks;
        }
        // A narrow range: round values of the data themselves, placed on the log axis.
        let (base, a, b) = match self {
            Scale::Log2 => (2f64, 2f64.powf(lo), 2f64.powf(hi)),
            _ => (10f64, 10f64.powf(lo), 10f64.powf(hi)),
        };
        linear_ticks(a, b, 5).into_iter().filter(|v| *v > 0.0).map(|v| v.log(base)).filter(inside).collect()
    }
}

/// A linear axis over `lo..hi` whose ticks are given (plotters' `with_key_points` on an `f64` range
/// cannot take label formatters in 0.3).
struct TickAxis {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
}

impl Ranged for TickAxis {
    type FormatOption = plotters::coord::ranged1d::DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        if self.hi <= self.lo {
            return (limit.0 + limit.1) / 2;
        }
        let f = (v - self.lo) / (self.hi - self.lo);
        limit.0 + (f64::from(limit.1 - limit.0) * f).round() as i32
    }

    fn key_points<H: plotters::coord::ranged1d::KeyPointHint>(&self, hint: H) -> Vec<f64> {
        // Bold grid lines at the ticks, no light ones.
        if hint.weight().allow_light_points() { Vec::new() } else { self.ticks.clone() }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

/// Round ticks (1, 2, 2.5 or 5 times a power of ten apart) over `lo..hi`, about `n` of them.
fn linear_ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if hi <= lo || !lo.is_finite() || !hi.is_finite() {
        return vec![lo];
    }
    let raw = (hi - lo) / n.max(1) as f64;
    let p = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * p).find(|s| *s >= raw).unwrap_or(10.0 * p);
    let mut v = Vec::new();
    let mut t = (lo / step).ceil() * step;
    while t <= hi + step * 1e-9 && v.len() < 100 {
        // Snap to the step so labels print round (0.30000000000000004 → 0.3).
        v.push((t / step).round() * step);
        t += step;
    }
    v
}

/// A number for a tick or legend: few digits, no trailing zeros.
pub fn short_number(v: f64) -> String {
    let a = v.abs();
    let s = if a == 0.0 {
        return "0".to_string();
    } else if a >= 100_000.0 {
        format!("{v:.2e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else if a >= 0.001 {
        format!("{v:.3}")
    } else {
        format!("{v:.1e}")
    };
    if s.contains('.') && !s.contains('e') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s }
}

/// How a series' points are marked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    /// No marker (a line only).
    None,
    /// Filled circle.
    Dot,
    /// Hollow circle.
    Ring,
    /// Cross.
    Cross,
    /// Filled triangle.
    Triangle,
}

/// One series of an [`XyPlot`]: points in data units (before any log mapping).
#[derive(Debug, Clone)]
pub struct XySeries {
    /// Legend text (None: not in the legend).
    pub label: Option<String>,
    /// Colour.
    pub color: RGBColor,
    /// The points.
    pub points: Vec<(f64, f64)>,
    /// Joins the points in order with a line.
    pub line: bool,
    /// Line width, px.
    pub width: u32,
    /// Marker of each point.
    pub marker: Marker,
    /// Marker size, px.
    pub size: u32,
    /// Vertical or free segments (e.g. min–max whiskers), data units.
    pub segments: Vec<[(f64, f64); 2]>,
}

impl XySeries {
    /// Points marked with `marker`, not joined.
    pub fn points(label: Option<String>, color: RGBColor, points: Vec<(f64, f64)>, marker: Marker) -> Self {
        XySeries { label, color, points, line: false, width: 1, marker, size: 3, segments: Vec::new() }
    }

    /// A line through the points, without markers.
    pub fn line(label: Option<String>, color: RGBColor, points: Vec<(f64, f64)>, width: u32) -> Self {
        XySeries { label, color, points, line: true, width, marker: Marker::None, size: 0, segments: Vec::new() }
    }
}

/// A plot of series against x.
#[derive(Debug, Clone)]
pub struct XyPlot {
    /// Title drawn above the chart.
    pub title: String,
    /// X axis description.
    pub x_desc: String,
    /// Y axis description.
    pub y_desc: String,
    /// X mapping.
    pub x_scale: Scale,
    /// Y mapping.
    pub y_scale: Scale,
    /// Size of the chart without its legend, px.
    pub size: (u32, u32),
    /// The series, drawn in order.
    pub series: Vec<XySeries>,
}

/// Colours that stay apart from each other (Tableau 10).
pub const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// The `i`-th palette colour (cycling).
pub fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

const FONT: &str = "sans-serif";
/// plotters writes `font-size` as the size over 1.24: 14 shows as about 11 px.
const LABEL_SIZE: u32 = 14;
const LEGEND_ROW: u32 = 16;

/// One legend entry: text, colour and whether it is drawn as a line (else a box).
struct LegendEntry {
    text: String,
    color: RGBColor,
    line: bool,
    marker: Marker,
}

/// Lays entries out in rows across `width`: (row, x) per entry, and the number of rows.
fn legend_layout(entries: &[LegendEntry], width: u32) -> (Vec<(u32, u32)>, u32) {
    let mut out = Vec::with_capacity(entries.len());
    let (mut row, mut x) = (0u32, 8u32);
    for e in entries {
        // The text is about 6 px per character at this size; the swatch and gap take 34 px.
        let w = 34 + 6 * e.text.chars().count() as u32;
        if x > 8 && x + w > width {
            row += 1;
            x = 8;
        }
        out.push((row, x));
        x += w;
    }
    let rows = if entries.is_empty() { 0 } else { row + 1 };
    (out, rows)
}

fn legend_height(entries: &[LegendEntry], width: u32) -> u32 {
    let (_, rows) = legend_layout(entries, width);
    if rows == 0 { 0 } else { rows * LEGEND_ROW + 6 }
}

fn draw_legend<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, entries: &[LegendEntry]) -> Result<(), PlotError> {
    let (w, _) = area.dim_in_pixel();
    let (pos, _) = legend_layout(entries, w);
    for (e, (row, x)) in entries.iter().zip(pos) {
        let (x, y) = (x as i32, (row * LEGEND_ROW + 4) as i32);
        let mid = (x + 11, y + 6);
        if e.line {
            area.draw(&PathElement::new(vec![(x, y + 6), (x + 22, y + 6)], e.color.stroke_width(2))).map_err(err)?;
        }
        match e.marker {
            Marker::None if !e.line => {
                area.draw(&Rectangle::new([(x + 4, y + 1), (x + 16, y + 11)], e.color.filled())).map_err(err)?
            }
            Marker::None => {}
            Marker::Dot => area.draw(&Circle::new(mid, 4, e.color.filled())).map_err(err)?,
            Marker::Ring => area.draw(&Circle::new(mid, 4, e.color.stroke_width(2))).map_err(err)?,
            Marker::Cross => area.draw(&Cross::new(mid, 4, e.color.stroke_width(2))).map_err(err)?,
            Marker::Triangle => area.draw(&TriangleMarker::new(mid, 5, e.color.filled())).map_err(err)?,
        }
        area.draw(&Text::new(e.text.clone(), (x + 26, y), (FONT, LABEL_SIZE).into_font().color(&BLACK)))
            .map_err(err)?;
    }
    Ok(())
}

/// Draws into a fresh SVG document of `w` × `h` px.
fn svg(
    w: u32,
    h: u32,
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> Result<(), PlotError>,
) -> Result<String, PlotError> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        draw(&root)?;
        root.present().map_err(err)?;
    }
    Ok(out)
}

/// The range of the drawn axis over `values` (already mapped), padded so markers stay inside.
fn axis_range(scale: Scale, values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    match scale {
        Scale::Linear => {
            let lo = lo.min(0.0);
            let hi = if hi > lo { hi } else { lo + 1.0 };
            (lo, hi + (hi - lo) * 0.06)
        }
        Scale::LinearFit => {
            let pad = if hi > lo { (hi - lo) * 0.08 } else { lo.abs().max(1.0) * 0.1 };
            (lo - pad, hi + pad)
        }
        // Log axes: whole exponents at least a little beyond the data, so its ends carry a label.
        Scale::Log2 | Scale::Log10 => {
            let pad = ((hi - lo) * 0.04).max(0.15);
            (lo - pad, hi + pad)
        }
    }
}

/// Draws an [`XyPlot`] as an SVG document.
pub fn xy(p: &XyPlot) -> Result<String, PlotError> {
    let legend: Vec<LegendEntry> = p
        .series
        .iter()
        .filter_map(|s| {
            s.label.as_ref().map(|t| LegendEntry {
                text: t.clone(),
                color: s.color,
                line: s.line || !s.segments.is_empty() || s.marker == Marker::None,
                marker: s.marker,
            })
        })
        .collect();
    let (w, h) = p.size;
    let lh = legend_height(&legend, w);
    svg(w, h + lh, |root| {
        let (chart_area, legend_area) = root.split_vertically(h);
        let map = |(x, y): (f64, f64)| Some((p.x_scale.to_axis(x)?, p.y_scale.to_axis(y)?));
        let all: Vec<(f64, f64)> = p
            .series
            .iter()
            .flat_map(|s| s.points.iter().copied().chain(s.segments.iter().flat_map(|seg| seg.iter().copied())))
            .filter_map(map)
            .collect();
        let (x0, x1) = axis_range(p.x_scale, all.iter().map(|v| v.0));
        let (y0, y1) = axis_range(p.y_scale, all.iter().map(|v| v.1));
        let mut chart = ChartBuilder::on(&chart_area)
            .caption(&p.title, (FONT, 16))
            .margin(8)
            .x_label_area_size(40)
            .y_label_area_size(58)
            .build_cartesian_2d(
                TickAxis { lo: x0, hi: x1, ticks: p.x_scale.ticks(x0, x1) },
                TickAxis { lo: y0, hi: y1, ticks: p.y_scale.ticks(y0, y1) },
            )
            .map_err(err)?;
        let xl = |t: &f64| p.x_scale.label(*t);
        let yl = |t: &f64| p.y_scale.label(*t);
        chart
            .configure_mesh()
            .x_desc(p.x_desc.as_str())
            .y_desc(p.y_desc.as_str())
            .x_label_formatter(&xl)
            .y_label_formatter(&yl)
            .label_style((FONT, LABEL_SIZE))
            .axis_desc_style((FONT, LABEL_SIZE))
            .bold_line_style(RGBColor(225, 225, 225))
            .draw()
            .map_err(err)?;
        for s in &p.series {
            let pts: Vec<(f64, f64)> = s.points.iter().copied().filter_map(map).collect();
            for seg in &s.segments {
                if let (Some(a), Some(b)) = (map(seg[0]), map(seg[1])) {
                    chart
                        .draw_series(std::iter::once(PathElement::new(vec![a, b], s.color.stroke_width(s.width))))
                        .map_err(err)?;
                }
            }
            if s.line && pts.len() > 1 {
                chart.draw_series(LineSeries::new(pts.iter().copied(), s.color.stroke_width(s.width))).map_err(err)?;
            }
            let (st, size) = (s.color, s.size as i32);
            match s.marker {
                Marker::None => {}
                Marker::Dot => {
                    chart.draw_series(pts.iter().map(|&q| Circle::new(q, size, st.filled()))).map_err(err)?;
                }
                Marker::Ring => {
                    chart.draw_series(pts.iter().map(|&q| Circle::new(q, size, st.stroke_width(2)))).map_err(err)?;
                }
                Marker::Cross => {
                    chart.draw_series(pts.iter().map(|&q| Cross::new(q, size, st.stroke_width(2)))).map_err(err)?;
                }
                Marker::Triangle => {
                    chart.draw_series(pts.iter().map(|&q| TriangleMarker::new(q, size, st.filled()))).map_err(err)?;
                }
            }
        }
        draw_legend(&legend_area, &legend)
    })
}

/// Bars of stacked parts at evenly spaced, labelled positions.
#[derive(Debug, Clone)]
pub struct StackedBars {
    /// Title drawn above the chart.
    pub title: String,
    /// X axis description.
    pub x_desc: String,
    /// Y axis description.
    pub y_desc: String,
    /// One label per bar.
    pub bars: Vec<String>,
    /// The parts, bottom first: (legend text, colour, one value per bar).
    pub parts: Vec<(String, RGBColor, Vec<f64>)>,
    /// Size of the chart without its legend, px.
    pub size: (u32, u32),
}

/// Draws [`StackedBars`] as an SVG document.
pub fn stacked_bars(p: &StackedBars) -> Result<String, PlotError> {
    let legend: Vec<LegendEntry> = p
        .parts
        .iter()
        .map(|(t, c, _)| LegendEntry { text: t.clone(), color: *c, line: false, marker: Marker::None })
        .collect();
    let (w, h) = p.size;
    let lh = legend_height(&legend, w);
    let n = p.bars.len();
    let totals: Vec<f64> =
        (0..n).map(|i| p.parts.iter().map(|(_, _, v)| v.get(i).copied().unwrap_or(0.0).max(0.0)).sum()).collect();
    svg(w, h + lh, |root| {
        let (chart_area, legend_area) = root.split_vertically(h);
        // Non-finite values are refused when results are read; kept off the axis here too, since plotters
        // never ends computing ticks over an infinite range.
        let ymax = totals.iter().copied().filter(|v| v.is_finite()).fold(0.0, f64::max);
        let ymax = if ymax > 0.0 { ymax * 1.05 } else { 1.0 };
        let mut chart = ChartBuilder::on(&chart_area)
            .caption(&p.title, (FONT, 16))
            .margin(8)
            .x_label_area_size(40)
            .y_label_area_size(58)
            .build_cartesian_2d(-0.6f64..(n as f64 - 0.4), 0f64..ymax)
            .map_err(err)?;
        let xl = |t: &f64| {
            let i = t.round();
            if (t - i).abs() < 1e-6 && i >= 0.0 {
                p.bars.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        };
        let yl = |t: &f64| short_number(*t);
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc(p.x_desc.as_str())
            .y_desc(p.y_desc.as_str())
            .x_labels(n + 1)
            .y_labels(6)
            .x_label_formatter(&xl)
            .y_label_formatter(&yl)
            .label_style((FONT, LABEL_SIZE))
            .axis_desc_style((FONT, LABEL_SIZE))
            .max_light_lines(2)
            .light_line_style(RGBColor(242, 242, 242))
            .bold_line_style(RGBColor(215, 215, 215))
            .draw()
            .map_err(err)?;
        let mut base = vec![0.0; n];
        for (_, c, values) in &p.parts {
            let rects = (0..n).filter_map(|i| {
                let v = values.get(i).copied().unwrap_or(0.0).max(0.0);
                let b = base[i];
                base[i] += v;
                (v > 0.0).then(|| Rectangle::new([(i as f64 - 0.38, b), (i as f64 + 0.38, b + v)], c.filled()))
            });
            chart.draw_series(rects.collect::<Vec<_>>()).map_err(err)?;
        }
        draw_legend(&legend_area, &legend)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_axes_label_whole_exponents_only() {
        assert_eq!(Scale::Log2.label(8.0), "256");
        assert_eq!(Scale::Log10.label(-1.0), "0.1");
        assert_eq!(Scale::Log2.ticks(-0.2, 8.2), (0..=8).map(f64::from).collect::<Vec<_>>());
        let t: Vec<String> = Scale::Log10.ticks(2.0, 3.1).into_iter().map(|t| Scale::Log10.label(t)).collect();
        assert_eq!(t, ["100", "200", "500", "1000"]);
        // Narrower than two powers of two: round values between.
        let t = Scale::Log2.ticks(7.9, 8.3);
        assert!(t.len() >= 2 && t.iter().all(|t| (7.9..=8.3).contains(t)), "{t:?}");
        assert!(t.iter().all(|t| 2f64.powf(*t).round() % 10.0 == 0.0), "{t:?}");
        assert_eq!(linear_ticks(0.0, 2650.0, 6), [0.0, 500.0, 1000.0, 1500.0, 2000.0, 2500.0]);
        assert_eq!(Scale::Log2.to_axis(0.0), None);
        assert_eq!(short_number(1234.0), "1234");
        assert_eq!(short_number(12.5), "12.5");
        assert_eq!(short_number(0.25), "0.25");
    }

    #[test]
    fn a_plot_is_one_svg_with_its_legend_text_escaped() {
        let p = XyPlot {
            title: "t".into(),
            x_desc: "batch size".into(),
            y_desc: "µs".into(),
            x_scale: Scale::Log2,
            y_scale: Scale::Linear,
            size: (300, 200),
            series: vec![XySeries::points(Some("a<b>".into()), color(0), vec![(1.0, 2.0), (4.0, 3.0)], Marker::Dot)],
        };
        let s = xy(&p).expect("drawn");
        assert_eq!(s.matches("<svg").count(), 1);
        assert!(s.contains("a&lt;b&gt;"), "{s}");
        let b = stacked_bars(&StackedBars {
            title: "b".into(),
            x_desc: "x".into(),
            y_desc: "y".into(),
            bars: vec!["1".into(), "2".into()],
            parts: vec![("p".into(), color(1), vec![1.0, 2.0])],
            size: (300, 200),
        })
        .expect("drawn");
        assert!(b.contains("<rect"));
    }
}
