//! `report.html`: one self-contained page about a results directory, for people to look at after a
//! sweep (`coord report DIR`).
//!
//! Sections, in page order: the run (manifest: GPUs, driver, CUDA, versions, clocks, hosts, jobs,
//! warnings), latency per category against batch size or tokens with the latency models drawn over the
//! points, the stacked breakdown per batch size, top kernels, step-time spread with throttled steps
//! marked, and the roofline. Everything is computed from the [`Results`] read back from the files, so
//! a report of copied results shows what the sweep showed. Plots are inline SVG from `plotters`
//! ([`plots`]); a plot that fails is replaced by a note naming the failure, never by a panic.

mod kernels;
mod latency;
mod manifest;
pub mod plots;
mod roofline;
mod spread;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::html::{Page, escape};
use crate::latency::{CurveModels, Models};
use crate::results::{Curve, Results, StepRecord};

/// Why the report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Writing `report.html` failed.
    #[error("writing {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// The report of `results` as one HTML document (inline CSS and SVG, nothing fetched).
pub fn render(results: &Results, models: &Models) -> String {
    let ctx = Ctx::new(results, models);
    let name = results
        .manifest
        .as_ref()
        .and_then(|m| m.pointer("/sweep/name"))
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .or_else(|| results.dir.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let mut page = Page::new(&format!("tracefleet report: {name}"));
    manifest::section(&mut page, &ctx);
    latency::section(&mut page, &ctx);
    latency::breakdown(&mut page, &ctx);
    kernels::section(&mut page, &ctx);
    spread::section(&mut page, &ctx);
    roofline::section(&mut page, &ctx);
    page.finish()
}

/// Writes the report of `results` to `dir/report.html` and returns that path.
///
/// Errors: [`ReportError::Io`] naming the file.
pub fn write(dir: &Path, results: &Results, models: &Models) -> Result<PathBuf, ReportError> {
    let path = dir.join("report.html");
    std::fs::write(&path, render(results, models)).map_err(|source| ReportError::Io { path: path.clone(), source })?;
    Ok(path)
}

/// What every section needs: the results, their points per curve, and a colour per curve that stays
/// the same in every plot.
struct Ctx<'a> {
    results: &'a Results,
    models: &'a Models,
    points: BTreeMap<Curve, BTreeMap<u64, Vec<&'a StepRecord>>>,
    curves: Vec<Curve>,
}

impl<'a> Ctx<'a> {
    fn new(results: &'a Results, models: &'a Models) -> Self {
        let points = results.points();
        let curves = points.keys().cloned().collect();
        Ctx { results, models, points, curves }
    }

    /// The colour of a curve in every plot.
    fn color(&self, curve: &Curve) -> plotters::style::RGBColor {
        plots::color(self.curves.iter().position(|c| c == curve).unwrap_or(0))
    }

    /// The curves grouped by what their x axis is (`batch size`, `tokens`): one set of plots each.
    fn by_axis(&self) -> Vec<(&'static str, Vec<&Curve>)> {
        let mut out: Vec<(&'static str, Vec<&Curve>)> = Vec::new();
        for c in &self.curves {
            match out.iter_mut().find(|(x, _)| *x == c.x_name()) {
                Some((_, v)) => v.push(c),
                None => out.push((c.x_name(), vec![c])),
            }
        }
        out
    }

    /// The fitted models of a curve, when any.
    fn models_of(&self, curve: &Curve) -> Option<&'a CurveModels> {
        self.models.curves.iter().find(|m| m.curve() == *curve)
    }
}

/// A figure: its caption and either the SVG or, when drawing failed, a note saying so.
fn figure(caption: String, svg: Result<String, plots::PlotError>) -> (String, String) {
    match svg {
        Ok(s) => (caption, s),
        Err(e) => (caption, format!("<p class=\"note\">{}</p>", escape(&e.to_string()))),
    }
}

/// Mean of the values (0 for none).
fn mean(v: impl IntoIterator<Item = f64>) -> f64 {
    let (mut s, mut n) = (0.0, 0usize);
    for x in v {
        s += x;
        n += 1;
    }
    if n == 0 { 0.0 } else { s / n as f64 }
}

/// The `q` quantile (0..1) of sorted values, linear interpolation between closest ranks (as numpy's
/// default and the tables' quantiles); None for no values.
fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let pos = q.clamp(0.0, 1.0) * last as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    let (a, b) = (*sorted.get(lo)?, *sorted.get(hi)?);
    Some(a + (b - a) * (pos - lo as f64))
}

/// A kernel name short enough for a table cell or a legend: for C++ names no return type and no
/// parameter list, and at most `max` characters (the tables' CSV files keep the full names).
fn short_name(name: &str, max: usize) -> String {
    let s = name.trim();
    let cpp = s.contains("::") || s.starts_with("void ");
    let s = if cpp && s.ends_with(')') { strip_cpp(s) } else { s };
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// `ret ns::f<T>(args)` → `ns::f<T>`. Template arguments may hold parentheses and comparisons
/// (`enable_if<(((8)>(0)))...>`), so angle brackets count only outside parentheses.
fn strip_cpp(s: &str) -> &str {
    // The parameter list: the parenthesis matching the final one.
    let mut depth = 0i32;
    let mut open = None;
    for (i, ch) in s.char_indices().rev() {
        match ch {
            ')' => depth += 1,
            '(' => {
                depth -= 1;
                if depth == 0 {
                    open = Some(i);
                    break;
                }
            }
            _ => {}
        }
    }
    let Some(open) = open.filter(|&i| i > 0) else { return s };
    let head = s[..open].trim_end();
    // The return type ends at the last space outside every bracket.
    let (mut paren, mut angle, mut start) = (0i32, 0i32, 0usize);
    for (i, ch) in head.char_indices() {
        match ch {
            '(' => paren += 1,
            ')' => paren -= 1,
            '<' if paren == 0 => angle += 1,
            '>' if paren == 0 => angle -= 1,
            ' ' if paren == 0 && angle == 0 => start = i + 1,
            _ => {}
        }
    }
    head.get(start..).filter(|t| !t.is_empty()).unwrap_or(head)
}
