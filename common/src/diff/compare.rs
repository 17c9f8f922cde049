//! Matching the curves and points of two results and testing every metric at every common point.

use std::collections::{BTreeMap, BTreeSet};

use super::welch::{Sample, holm, welch};
use super::{CurvePair, Diff, DiffOptions, Group, Metric, OnlyPoint, Presence, Row, RunInfo, Summary};
use crate::classify::{Coarse, Detail};
use crate::results::{Curve, KernelRecord, Results, StepRecord};

/// What curves are matched by: the curve without host and GPU, plus them when matching by machine.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    mode: String,
    input_len: u32,
    tp: u32,
    rank: String,
    /// (host, GPU), or empty when each side is one machine.
    machine: Option<(String, String)>,
}

impl Key {
    fn of(c: &Curve, by_machine: bool) -> Self {
        Key {
            mode: c.mode.clone(),
            input_len: c.input_len,
            tp: c.tp,
            rank: c.rank.clone(),
            machine: by_machine.then(|| (c.host.clone(), c.gpu.clone())),
        }
    }
}

/// A curve's label without its host: `decode in128`, `decode in128 tp2 rank merged`.
fn short_label(c: &Curve) -> String {
    let mut s = c.mode.clone();
    if c.input_len > 0 {
        s.push_str(&format!(" in{}", c.input_len));
    }
    if c.tp > 1 {
        s.push_str(&format!(" tp{} rank {}", c.tp, c.rank));
    }
    s
}

/// Kernels of one point, by (name, category).
type KernelPoint<'a> = BTreeMap<(String, String), &'a KernelRecord>;

/// One side's data, by matching key.
struct Side<'a> {
    curves: BTreeMap<Key, Curve>,
    steps: BTreeMap<Key, BTreeMap<u64, Vec<&'a StepRecord>>>,
    kernels: BTreeMap<Key, BTreeMap<u64, KernelPoint<'a>>>,
    /// Step rows per (key, x) of every rank (the per-rank kernel rows of tensor-parallel jobs are
    /// matched against these, not against the merged rows).
    step_counts: BTreeMap<(Key, u64), u64>,
}

impl<'a> Side<'a> {
    fn new(r: &'a Results, by_machine: bool) -> Self {
        let mut s = Side {
            curves: BTreeMap::new(),
            steps: BTreeMap::new(),
            kernels: BTreeMap::new(),
            step_counts: BTreeMap::new(),
        };
        for (curve, by_x) in r.points() {
            let key = Key::of(&curve, by_machine);
            s.steps.entry(key.clone()).or_default().extend(by_x);
            s.curves.entry(key).or_insert(curve);
        }
        for k in &r.kernels {
            let curve = k.series.curve();
            let key = Key::of(&curve, by_machine);
            s.kernels
                .entry(key.clone())
                .or_default()
                .entry(k.series.tokens())
                .or_default()
                .insert((k.kernel.clone(), k.category.clone()), k);
            s.curves.entry(key).or_insert(curve);
        }
        for st in r.steps.iter().filter(|st| st.counted()) {
            *s.step_counts.entry((Key::of(&st.series.curve(), by_machine), st.series.tokens())).or_default() += 1;
        }
        s
    }

    /// The x values of a curve (steps and kernels).
    fn xs(&self, key: &Key) -> BTreeSet<u64> {
        let mut xs: BTreeSet<u64> = self.steps.get(key).map(|m| m.keys().copied().collect()).unwrap_or_default();
        xs.extend(self.kernels.get(key).map(|m| m.keys().copied().collect::<Vec<_>>()).unwrap_or_default());
        xs
    }

    fn point_steps(&self, key: &Key, x: u64) -> &[&'a StepRecord] {
        self.steps.get(key).and_then(|m| m.get(&x)).map(Vec::as_slice).unwrap_or(&[])
    }

    fn point_kernels(&self, key: &Key, x: u64) -> Option<&KernelPoint<'a>> {
        self.kernels.get(key).and_then(|m| m.get(&x))
    }

    fn step_count(&self, key: &Key, x: u64) -> u64 {
        self.step_counts.get(&(key.clone(), x)).copied().unwrap_or(0)
    }
}

/// The distinct (host, GPU) pairs of a results directory.
fn machines(r: &Results) -> BTreeSet<(String, String)> {
    r.steps
        .iter()
        .map(|s| &s.series)
        .chain(r.kernels.iter().map(|k| &k.series))
        .map(|s| (s.host.clone(), s.gpu.clone()))
        .collect()
}

/// What a side is: its machines from the manifest's agents (host, GPU names, driver), else the tables.
pub(super) fn run_info(r: &Results) -> RunInfo {
    let mut out = Vec::new();
    let agents = r.manifest.as_ref().and_then(|m| m.get("agents")).and_then(|a| a.as_array());
    for agent in agents.into_iter().flatten() {
        let host = agent.get("host").or_else(|| agent.get("name")).and_then(|h| h.as_str()).unwrap_or("?");
        let gpus = agent.get("gpus").and_then(|g| g.as_array()).map(Vec::as_slice).unwrap_or(&[]);
        // Count GPUs of one name (a machine of 8 alike says so once).
        let mut names: BTreeMap<String, (usize, BTreeSet<String>)> = BTreeMap::new();
        for g in gpus {
            let name = g.get("name").and_then(|n| n.as_str()).unwrap_or("?").to_string();
            let e = names.entry(name).or_default();
            e.0 += 1;
            if let Some(d) = g.get("driver_version").and_then(|d| d.as_str()) {
                e.1.insert(d.to_string());
            }
        }
        let gpus: Vec<String> = names
            .into_iter()
            .map(|(name, (count, drivers))| {
                let count = if count > 1 { format!("{count}× ") } else { String::new() };
                let drivers: Vec<String> = drivers.into_iter().collect();
                if drivers.is_empty() {
                    format!("{count}{name}")
                } else {
                    format!("{count}{name} (driver {})", drivers.join(", "))
                }
            })
            .collect();
        out.push(format!("{host}: {}", if gpus.is_empty() { "no GPU listed".to_string() } else { gpus.join(", ") }));
    }
    if out.is_empty() {
        out = machines(r).into_iter().map(|(h, g)| format!("{h}: {g}")).collect();
    }
    RunInfo { dir: r.dir.clone(), machines: out }
}

/// Mean, sample standard deviation and count of values.
fn sample(values: impl Iterator<Item = f64>) -> Sample {
    let v: Vec<f64> = values.collect();
    let n = v.len();
    if n == 0 {
        return Sample { mean: 0.0, std: 0.0, n: 0 };
    }
    let mean = v.iter().sum::<f64>() / n as f64;
    let std = if n > 1 { (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt() } else { 0.0 };
    Sample { mean, std, n: n as u64 }
}

/// A row before the correction: the samples (None: absent on that side) and the test.
fn row(x: u64, a: Option<Sample>, b: Option<Sample>, absent_a: u64, absent_b: u64) -> Row {
    let presence = match (a, b) {
        (Some(_), None) => Presence::Disappeared,
        (None, Some(_)) => Presence::Appeared,
        _ => Presence::Both,
    };
    // An absent kernel took 0 µs in each of that side's steps of the point.
    let zero = |n| Sample { mean: 0.0, std: 0.0, n };
    let sa = a.unwrap_or(zero(absent_a));
    let sb = b.unwrap_or(zero(absent_b));
    let test = welch(sa, sb);
    let change_us = sb.mean - sa.mean;
    Row {
        x,
        presence,
        mean_a: a.map(|s| s.mean),
        mean_b: b.map(|s| s.mean),
        std_a: a.map(|s| s.std),
        std_b: b.map(|s| s.std),
        n_a: a.map_or(0, |s| s.n),
        n_b: b.map_or(0, |s| s.n),
        change_us,
        change_pct: (sa.mean != 0.0).then(|| 100.0 * change_us / sa.mean),
        t: test.map(|w| w.t),
        p: test.map(|w| w.p),
        p_adjusted: None,
        significant: false,
    }
}

/// Whether a row's change passes the size thresholds (`min_change_pct` and `min_change_us`).
fn large_enough(r: &Row, o: &DiffOptions) -> bool {
    // No percentage (A is 0 or absent): any change is infinitely large relative to nothing.
    let pct_ok = r.change_pct.map_or(r.change_us != 0.0, |pct| pct.abs() >= o.min_change_pct);
    pct_ok && r.change_us.abs() >= o.min_change_us
}

/// Compares B against A (see the module documentation for the matching and the rule).
pub fn compare(a: &Results, b: &Results, opts: &DiffOptions) -> Diff {
    let (ma, mb) = (machines(a), machines(b));
    let by_machine = !(ma.len() <= 1 && mb.len() <= 1);
    let machines_compared = match (ma.iter().next(), mb.iter().next()) {
        (Some(x), Some(y)) if !by_machine && x != y => {
            Some(format!("A's {} ({}) compared with B's {} ({}): each side is one machine", x.0, x.1, y.0, y.1))
        }
        _ => None,
    };
    // A side without kernels.csv has no kernel data, which is not the same as no kernels.
    let mut notes = Vec::new();
    let compare_kernels = !a.kernels.is_empty() && !b.kernels.is_empty();
    for r in [a, b] {
        if r.kernels.is_empty() {
            notes.push(format!("kernels not compared: {} has no kernels.csv (or it is empty)", r.dir.display()));
        }
    }
    let sa = Side::new(a, by_machine);
    let sb = Side::new(b, by_machine);
    let keys: BTreeSet<&Key> = sa.curves.keys().chain(sb.curves.keys()).collect();

    let mut curves = Vec::new();
    let mut groups: BTreeMap<(usize, Metric), Vec<Row>> = BTreeMap::new();
    let mut only_in_a = Vec::new();
    let mut only_in_b = Vec::new();
    let mut points_compared = 0;
    for key in keys {
        let (xa, xb) = (sa.xs(key), sb.xs(key));
        let only = |side: &Side<'_>, x: u64| OnlyPoint {
            curve: side.curves.get(key).map(Curve::label).unwrap_or_default(),
            x_name: side.curves.get(key).map_or("x", Curve::x_name).to_string(),
            x,
            steps: side.point_steps(key, x).len(),
        };
        only_in_a.extend(xa.difference(&xb).map(|&x| only(&sa, x)));
        only_in_b.extend(xb.difference(&xa).map(|&x| only(&sb, x)));
        let (Some(ca), Some(cb)) = (sa.curves.get(key), sb.curves.get(key)) else { continue };
        let curve = curves.len();
        curves.push(CurvePair {
            label: if by_machine { ca.label() } else { short_label(ca) },
            x_name: ca.x_name().to_string(),
            host_a: ca.host.clone(),
            gpu_a: ca.gpu.clone(),
            host_b: cb.host.clone(),
            gpu_b: cb.gpu.clone(),
        });
        for &x in xa.intersection(&xb) {
            points_compared += 1;
            let (pa, pb) = (sa.point_steps(key, x), sb.point_steps(key, x));
            if !pa.is_empty() && !pb.is_empty() {
                let mut add = |metric: Metric, f: &dyn Fn(&StepRecord) -> f64| {
                    let r = row(x, Some(sample(pa.iter().map(|s| f(s)))), Some(sample(pb.iter().map(|s| f(s)))), 0, 0);
                    groups.entry((curve, metric)).or_default().push(r);
                };
                for d in Detail::ALL {
                    add(Metric::Detail(d), &|s| s.detail_us[d.index()]);
                }
                for c in Coarse::ALL {
                    add(Metric::Coarse(c), &|s| s.coarse_us(c));
                }
                add(Metric::GpuTime, &|s| s.gpu_time_us);
            }
            if !compare_kernels {
                continue;
            }
            let empty = KernelPoint::new();
            let ka = sa.point_kernels(key, x).unwrap_or(&empty);
            let kb = sb.point_kernels(key, x).unwrap_or(&empty);
            let names: BTreeSet<&(String, String)> = ka.keys().chain(kb.keys()).collect();
            for name in names {
                let s = |k: &&KernelRecord| Sample { mean: k.mean_us, std: k.std_us, n: k.steps };
                let r = row(x, ka.get(name).map(s), kb.get(name).map(s), sa.step_count(key, x), sb.step_count(key, x));
                let metric = Metric::Kernel { name: name.0.clone(), category: name.1.clone() };
                groups.entry((curve, metric)).or_default().push(r);
            }
        }
    }

    // Holm's correction over the tested rows whose change is large enough to count. A row below the size
    // thresholds can never be significant, so it takes no share of alpha: hundreds of unchanged kernels
    // would otherwise leave a 3-step t-test no power for the ones that did change.
    let mut rows: Vec<&mut Row> = groups.values_mut().flatten().collect();
    let candidates: Vec<Option<f64>> = rows.iter().map(|r| r.p.filter(|_| large_enough(r, opts))).collect();
    let adjusted = holm(&candidates);
    let mut summary = Summary { points_compared, ..Summary::default() };
    for (r, p) in rows.iter_mut().zip(adjusted) {
        r.p_adjusted = p;
        r.significant = r.p_adjusted.is_some_and(|p| p < opts.alpha);
        summary.rows += 1;
        summary.tested += usize::from(r.p_adjusted.is_some());
        summary.significant += usize::from(r.significant);
        summary.kernels_appeared += usize::from(r.presence == Presence::Appeared);
        summary.kernels_disappeared += usize::from(r.presence == Presence::Disappeared);
    }
    summary.points_only_in_a = only_in_a.len();
    summary.points_only_in_b = only_in_b.len();

    let mut groups: Vec<Group> = groups
        .into_iter()
        .map(|((curve, metric), rows)| Group {
            curve,
            metric,
            effect_us: rows.iter().map(|r| r.change_us.abs()).sum(),
            significant_rows: rows.iter().filter(|r| r.significant).count(),
            rows,
        })
        .collect();
    groups.sort_by(|x, y| {
        (y.significant_rows > 0)
            .cmp(&(x.significant_rows > 0))
            .then(y.effect_us.total_cmp(&x.effect_us))
            .then((x.curve, &x.metric).cmp(&(y.curve, &y.metric)))
    });

    Diff {
        a: run_info(a),
        b: run_info(b),
        options: *opts,
        correction: "holm",
        matched_by_machine: by_machine,
        machines_compared,
        notes,
        curves,
        groups,
        only_in_a,
        only_in_b,
        summary,
    }
}
