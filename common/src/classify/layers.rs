//! Finding decoder layers in one step and giving each GPU activity its category.
//!
//! Kernels are grouped into *units*: the outermost linear op above the kernel's launching op, else the
//! outermost attention op, else the outermost attention-cache op (vLLM's KV-cache write), else a rope op,
//! else the top-level op. Units are ordered by start time. In a step with layers, an attention unit before
//! the first linear unit prepares the attention backend's metadata and is not attention. A layer is anchored on its
//! attention unit; with module frames in the trace, the layer is the decoder-layer module instead. See
//! `common/rules/llama.toml` for the roles.

use std::collections::HashMap;

use super::rules::module_class;
use super::{Detail, Rules};
use crate::trace::link::{Links, NONE};
use crate::trace::model::{Category, Trace};

/// The category of one GPU activity of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Activity {
    /// Event index.
    pub event: u32,
    /// Detailed category.
    pub detail: Detail,
    /// The op the activity was attributed to (its outermost collective, linear, attention or rope op, else
    /// its top-level op); [`NONE`] when no op launched it.
    pub unit: u32,
    /// A collective communication kernel (by its op, or by its name when no op says): it is in `others`.
    pub collective: bool,
    /// Its unit is a linear op.
    pub linear: bool,
}

/// The categories of one step's GPU activities.
#[derive(Debug, Clone, Default)]
pub struct Classified {
    /// Every GPU activity of the step, unit by unit in unit start order.
    pub activities: Vec<Activity>,
    /// Number of linear ops in each detailed category (index: position in [`Detail::ALL`]).
    pub linear_ops: [u32; 7],
    /// Number of decoder layers found.
    pub layers: u32,
    /// Whether layers came from module frames (true) or from attention anchors (false).
    pub from_modules: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Collective,
    Linear,
    Attention,
    AttentionCache,
    Rope,
    Other,
}

#[derive(Debug)]
struct Unit {
    op: u32,
    kind: Kind,
    start: i64,
    acts: Vec<u32>,
    layer: u32,
    rope_module: bool,
    kv_cache: bool,
}

/// One decoder layer, as positions into the ordered units.
#[derive(Debug, Default)]
struct Layer {
    kqv: Vec<usize>,
    attention: usize,
    post: Vec<usize>,
}

/// Classifies the GPU activities among `events` (one step's events, from `Steps::events_by_step`).
pub fn classify_step(t: &Trace, links: &Links, events: &[u32], rules: &Rules) -> Classified {
    classify_step_with(t, links, events, rules, &mut RuleMemo::default())
}

/// [`classify_step`] with the rule matches of the trace's earlier steps (`memo`, used with `t` and
/// `rules` only).
pub fn classify_step_with(t: &Trace, links: &Links, events: &[u32], rules: &Rules, memo: &mut RuleMemo) -> Classified {
    let mut units = build_units(t, links, events, rules, memo);
    units.sort_by_key(|u| (u.start, u.op));
    // In a step whose layers show (an attention op after a projection), attention ops before the first
    // projection compute the backend's per-step metadata (FlashAttention 3's get_scheduler_metadata,
    // FlashInfer's plan): they anchor no layer and are not attention. A step without that shape (piecewise
    // CUDA graphs replay the projections, leaving only eager attention ops and the LM head) keeps them.
    if let Some(first_linear) = units.iter().position(|u| u.kind == Kind::Linear)
        && units[first_linear..].iter().any(|u| u.kind == Kind::Attention)
    {
        for u in &mut units[..first_linear] {
            if u.kind == Kind::Attention {
                u.kind = Kind::Other;
            }
        }
    }

    let from_modules = units.iter().any(|u| u.layer != NONE);
    let layers = if from_modules { layers_from_modules(&units) } else { layers_from_anchors(&units, rules) };

    let mut detail: Vec<Detail> = units
        .iter()
        .map(|u| match u.kind {
            Kind::Attention | Kind::AttentionCache => Detail::PagedAttention,
            Kind::Rope => Detail::Rope,
            _ if u.rope_module => Detail::Rope,
            _ => Detail::Others,
        })
        .collect();
    for l in &layers {
        for &k in &l.kqv {
            detail[k] = Detail::KqvProj;
        }
        if let Some((&o, mlp)) = l.post.split_first() {
            detail[o] = Detail::OProj;
            if let Some((&down, gate_up)) = mlp.split_last() {
                detail[down] = Detail::DownProj;
                for &g in gate_up {
                    detail[g] = Detail::GatedUpProj;
                }
            }
        }
        // Rope window: after the last kqv_proj, before attention, minus the KV-cache writes just before it.
        let from = l.kqv.last().map_or(l.attention, |&k| k + 1);
        let mut to = l.attention;
        while to > from && units[to - 1].kv_cache {
            to -= 1;
        }
        for (d, u) in detail[from..to].iter_mut().zip(&units[from..to]) {
            if u.kind == Kind::Other {
                *d = Detail::Rope;
            }
        }
    }

    let mut out = Classified { layers: layers.len() as u32, from_modules, ..Default::default() };
    for (u, d) in units.iter().zip(&detail) {
        if u.kind == Kind::Linear {
            out.linear_ops[d.index()] += 1;
        }
        for &a in &u.acts {
            let collective = u.kind == Kind::Collective
                || (u.op == NONE || u.kind == Kind::Other) && {
                    let name = t.events[a as usize].name;
                    memo.collective_kernel(t, name, rules)
                };
            out.activities.push(Activity {
                event: a,
                detail: *d,
                unit: u.op,
                collective,
                linear: u.kind == Kind::Linear,
            });
        }
    }
    out
}

fn build_units(t: &Trace, links: &Links, events: &[u32], rules: &Rules, memo: &mut RuleMemo) -> Vec<Unit> {
    let mut units: Vec<Unit> = Vec::new();
    let mut by_op: HashMap<u32, usize> = HashMap::new();
    let mut chain: Vec<u32> = Vec::new();
    for &i in events {
        let i = i as usize;
        let e = &t.events[i];
        if !e.cat.is_gpu_activity() {
            continue;
        }
        let l = links.launcher[i];
        let (kind, op) = if l == NONE { (Kind::Other, NONE) } else { unit_of(t, links, l, rules, &mut chain, memo) };
        if op == NONE {
            units.push(Unit {
                op: NONE,
                kind,
                start: e.ts,
                acts: vec![i as u32],
                layer: NONE,
                rope_module: false,
                kv_cache: false,
            });
            continue;
        }
        if let Some(&u) = by_op.get(&op) {
            units[u].acts.push(i as u32);
            continue;
        }
        let (layer, rope_module) = module_info(t, links, op, rules);
        by_op.insert(op, units.len());
        units.push(Unit {
            op,
            kind,
            start: t.events[op as usize].ts,
            acts: vec![i as u32],
            layer,
            rope_module,
            kv_cache: kind == Kind::Other && memo.get(t, e_name(t, op), rules).kv_cache,
        });
    }
    units
}

/// The unit a launching op belongs to.
fn unit_of(
    t: &Trace,
    links: &Links,
    launcher: u32,
    rules: &Rules,
    chain: &mut Vec<u32>,
    memo: &mut RuleMemo,
) -> (Kind, u32) {
    chain.clear();
    chain.extend(links.ancestors(t, launcher).filter(|&j| t.events[j as usize].cat == Category::CpuOp));
    if chain.is_empty() {
        return (Kind::Other, launcher);
    }
    let mut flags = |j: u32| memo.get(t, e_name(t, j), rules);
    // A collective first: vLLM's row-parallel linear layers all-reduce right after their GEMM.
    if let Some(&op) = chain.iter().rev().find(|&&j| flags(j).collective) {
        return (Kind::Collective, op);
    }
    if let Some(&op) = chain.iter().rev().find(|&&j| flags(j).linear) {
        return (Kind::Linear, op);
    }
    if let Some(&op) = chain.iter().rev().find(|&&j| flags(j).attention) {
        return (Kind::Attention, op);
    }
    if let Some(&op) = chain.iter().rev().find(|&&j| flags(j).attention_cache) {
        return (Kind::AttentionCache, op);
    }
    if let Some(&op) = chain.iter().rev().find(|&&j| flags(j).rope) {
        return (Kind::Rope, op);
    }
    // Top-level op: the outermost op of the chain.
    (Kind::Other, chain[chain.len() - 1])
}

/// The name id of event `i`.
fn e_name(t: &Trace, i: u32) -> u32 {
    t.events[i as usize].name
}

/// What the op rules say of one op name.
#[derive(Debug, Clone, Copy, Default)]
struct OpFlags {
    linear: bool,
    attention: bool,
    rope: bool,
    kv_cache: bool,
    attention_cache: bool,
    collective: bool,
}

/// Rule matches by name id, kept across the steps of one trace: each distinct name is matched against
/// the globs once per trace (once per step, the kernel names of a trace of hundreds of steps were matched
/// hundreds of times: 3% of its summary). Name ids are a trace's own: a memo serves the one trace and
/// rule set it was first used with (checked in debug builds).
#[derive(Default)]
pub struct RuleMemo {
    ops: Vec<Option<OpFlags>>,
    collective_kernels: Vec<Option<bool>>,
    /// Addresses of the trace's name table and of the rules of the first use.
    used_with: Option<(usize, usize)>,
}

impl RuleMemo {
    /// Checks (debug builds) that the memo is used with one trace and one rule set.
    fn check(&mut self, t: &Trace, rules: &Rules) {
        let now = (t.names.as_ptr() as usize, std::ptr::from_ref(rules) as usize);
        let first = *self.used_with.get_or_insert(now);
        debug_assert_eq!(first, now, "a RuleMemo serves one trace and one rule set");
    }

    fn get(&mut self, t: &Trace, name: u32, rules: &Rules) -> OpFlags {
        self.check(t, rules);
        if self.ops.len() < t.names.len() {
            self.ops.resize(t.names.len(), None);
        }
        *self.ops[name as usize].get_or_insert_with(|| {
            let n = t.name(name);
            OpFlags {
                linear: rules.is_linear(n),
                attention: rules.is_attention(n),
                rope: rules.is_rope(n),
                kv_cache: rules.is_kv_cache(n),
                attention_cache: rules.is_attention_cache(n),
                collective: rules.is_collective(n),
            }
        })
    }

    fn collective_kernel(&mut self, t: &Trace, name: u32, rules: &Rules) -> bool {
        self.check(t, rules);
        if self.collective_kernels.len() < t.names.len() {
            self.collective_kernels.resize(t.names.len(), None);
        }
        *self.collective_kernels[name as usize].get_or_insert_with(|| rules.is_collective_kernel(t.name(name)))
    }
}

/// The decoder-layer frame enclosing `op` and whether a rope module encloses it.
fn module_info(t: &Trace, links: &Links, op: u32, rules: &Rules) -> (u32, bool) {
    let path = links.module_path(op);
    let mut layer = NONE;
    let mut rope = false;
    for &m in &path {
        let class = module_class(t.name(t.events[m as usize].name));
        if rules.is_decoder_layer(class) {
            layer = m;
        }
        rope |= rules.is_rope_module(class);
    }
    (layer, rope)
}

fn layers_from_modules(units: &[Unit]) -> Vec<Layer> {
    let mut order: Vec<u32> = Vec::new();
    let mut members: HashMap<u32, Vec<usize>> = HashMap::new();
    for (p, u) in units.iter().enumerate() {
        if u.layer == NONE {
            continue;
        }
        members.entry(u.layer).or_insert_with(|| {
            order.push(u.layer);
            Vec::new()
        });
        if let Some(m) = members.get_mut(&u.layer) {
            m.push(p);
        }
    }
    let mut layers = Vec::new();
    for l in order {
        let m = &members[&l];
        let Some(&attention) = m.iter().find(|&&p| units[p].kind == Kind::Attention) else {
            continue;
        };
        let linears = m.iter().copied().filter(|&p| units[p].kind == Kind::Linear);
        let kqv = linears.clone().filter(|&p| p < attention).collect();
        let post = linears.filter(|&p| p > attention).collect();
        layers.push(Layer { kqv, attention, post });
    }
    layers
}

fn layers_from_anchors(units: &[Unit], _rules: &Rules) -> Vec<Layer> {
    let attn: Vec<usize> = (0..units.len()).filter(|&p| units[p].kind == Kind::Attention).collect();
    let lin: Vec<usize> = (0..units.len()).filter(|&p| units[p].kind == Kind::Linear).collect();
    let Some(&first) = attn.first() else {
        return Vec::new();
    };
    // Linear ops before the first attention are the first layer's q/k/v: their number holds for every layer.
    let k = lin.iter().filter(|&&p| p < first).count();
    let mut layers: Vec<Layer> = Vec::new();
    let mut prev_attention: Option<usize> = None;
    for &a in &attn {
        let between: Vec<usize> =
            lin.iter().copied().filter(|&p| p < a && prev_attention.is_none_or(|q| p > q)).collect();
        // The last k linears before this attention are its q/k/v; the rest belong to the previous layer.
        let split = between.len().saturating_sub(k);
        let (prev_post, kqv) = between.split_at(if prev_attention.is_some() { split } else { 0 });
        if let Some(prev) = layers.last_mut() {
            prev.post = prev_post.to_vec();
        }
        layers.push(Layer { kqv: kqv.to_vec(), attention: a, post: Vec::new() });
        prev_attention = Some(a);
    }
    // The last layer: o_proj plus as many MLP linears as the layer before had; the rest (lm_head) is not.
    let last_a = attn[attn.len() - 1];
    let after: Vec<usize> = lin.iter().copied().filter(|&p| p > last_a).collect();
    let want = if layers.len() >= 2 { layers[layers.len() - 2].post.len() } else { after.len() };
    if let Some(last) = layers.last_mut() {
        last.post = after.into_iter().take(want).collect();
    }
    layers
}
