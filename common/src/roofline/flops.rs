//! FLOP and byte models of single op calls, from the shapes the profiler records (`record_shapes`:
//! `Input Dims`, `Input type`, `Concrete Inputs`).
//!
//! Conventions (the usual ones of roofline analysis, e.g. Williams, Waterman & Patterson, "Roofline: an
//! insightful visual performance model", CACM 2009; PyTorch's own `torch.utils.flop_counter` counts the
//! same 2·m·k·n for a GEMM):
//! - a multiply-add is 2 FLOPs: a GEMM of `[m, k] × [k, n]` is `2·m·k·n`; a bias adds `m·n`.
//! - bytes moved are the compulsory traffic: every input tensor read once and the output written once
//!   (`elements × element size`). Caches can only make real traffic smaller and re-reads larger, so the
//!   achieved bandwidth reported is of this minimum.
//! - attention is `2·d` FLOPs per (query, key) pair for `Q·Kᵀ` and `2·d_v` for `P·V` per head (the
//!   softmax's few FLOPs per pair are left out, as FlashAttention's papers do); a causal mask keeps, per
//!   sequence of `q` queries at the end of `k` keys, `q·k − q·(q−1)/2` pairs.
//!
//! Ops without a model here (elementwise ops, norms, vLLM's fused kernels...) are left out of the
//! roofline and listed as such.

use serde::{Deserialize, Serialize};

use crate::trace::scan::RawShapes;

/// Element type of an op's main inputs, as far as the peak to compare with goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    /// bfloat16 or float16: the tensor-core peak.
    Bf16,
    /// float32: the CUDA-core (non-tensor) peak; torch runs fp32 matmuls without TF32 by default.
    Fp32,
    /// 8-bit floats: the FP8 tensor peak.
    Fp8,
}

impl DType {
    /// Column value.
    pub fn name(self) -> &'static str {
        match self {
            DType::Bf16 => "bf16",
            DType::Fp32 => "fp32",
            DType::Fp8 => "fp8",
        }
    }
}

/// The modelled work of one op call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpWork {
    /// Floating-point operations.
    pub flops: u64,
    /// Bytes read and written (compulsory traffic).
    pub bytes: u64,
    /// Data type of the main inputs.
    pub dtype: DType,
}

/// Whether an op has a model here: checked before any shape is parsed, so other ops cost nothing.
pub fn has_model(name: &str) -> bool {
    has_model_bytes(name.as_bytes())
}

/// [`has_model`] of a name given as bytes (the trace scanner's names are bytes, checked as UTF-8 later).
pub fn has_model_bytes(name: &[u8]) -> bool {
    matches!(
        name,
        b"aten::mm"
            | b"aten::addmm"
            | b"aten::bmm"
            | b"aten::baddbmm"
            | b"aten::linear"
            | b"aten::matmul"
            | b"aten::scaled_dot_product_attention"
            | b"aten::_scaled_dot_product_flash_attention"
            | b"aten::_scaled_dot_product_efficient_attention"
            | b"aten::_scaled_dot_product_cudnn_attention"
            | b"_vllm_fa3_C::fwd"
            | b"vllm_flash_attn_c::varlen_fwd"
            | b"_vllm_fa2_C::varlen_fwd"
    )
}

/// The parsed shape arguments of one call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Shapes {
    /// Sizes per input (empty for scalars and tensor lists).
    pub dims: Vec<Vec<u64>>,
    /// dtype string per input.
    pub types: Vec<String>,
    /// Concrete value per input (`""` for tensors).
    pub concrete: Vec<String>,
}

impl Shapes {
    /// Parses the raw JSON; None when `Input Dims` is absent or malformed (the call is then not modelled:
    /// a trace is never refused for its shapes).
    ///
    /// A small parser of its own rather than `serde_json::Value`: it runs for every modelled call (a few
    /// hundred per step) on the parse path, and these arrays hold only integers, arrays and plain strings.
    pub fn parse(raw: &RawShapes<'_>) -> Option<Self> {
        Some(Shapes {
            dims: parse_dims(raw.dims)?,
            types: parse_strings(raw.types),
            concrete: parse_strings(raw.concrete),
        })
    }

    fn dim(&self, i: usize) -> Option<&[u64]> {
        self.dims.get(i).map(Vec::as_slice).filter(|d| !d.is_empty())
    }

    fn elem_size(&self, i: usize) -> Option<(u64, DType)> {
        elem(self.types.get(i)?)
    }

    fn flag(&self, i: usize) -> bool {
        self.concrete.get(i).is_some_and(|v| v == "True")
    }

    fn int(&self, i: usize) -> Option<u64> {
        self.concrete.get(i)?.parse().ok()
    }
}

/// `[[1, 2048], [], [[1, 2], [3]], ...]`: each element's sizes; a scalar (`[]`), a tensor list (nested
/// arrays) or anything else gives no sizes. None when the text is not such an array.
fn parse_dims(b: &[u8]) -> Option<Vec<Vec<u64>>> {
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'[') {
        return None;
    }
    i += 1;
    let mut out = Vec::new();
    loop {
        i = skip_ws(b, i);
        match b.get(i)? {
            b']' => return Some(out),
            b',' => i += 1,
            b'[' => {
                let (sizes, next) = parse_sizes(b, i)?;
                out.push(sizes);
                i = next;
            }
            _ => {
                // Not an array (a null, a number): no sizes; skip to the next element.
                out.push(Vec::new());
                while !matches!(b.get(i)?, b',' | b']') {
                    i += 1;
                }
            }
        }
    }
}

/// One element of `Input Dims` starting at `b[i] == '['`: its integers, or nothing for a nested array or
/// a size that is not a non-negative integer; returns the position after its closing bracket.
fn parse_sizes(b: &[u8], mut i: usize) -> Option<(Vec<u64>, usize)> {
    i += 1;
    let mut sizes = Vec::new();
    let mut plain = true;
    let mut depth = 1;
    while depth > 0 {
        match b.get(i)? {
            b'[' => {
                plain = false;
                depth += 1;
                i += 1;
            }
            b']' => {
                depth -= 1;
                i += 1;
            }
            c if c.is_ascii_digit() && depth == 1 => {
                let start = i;
                while b.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
                match std::str::from_utf8(&b[start..i]).ok().and_then(|t| t.parse().ok()) {
                    Some(v) => sizes.push(v),
                    None => plain = false,
                }
            }
            b',' | b' ' | b'\n' | b'\r' | b'\t' => i += 1,
            _ => {
                plain = false;
                i += 1;
            }
        }
    }
    Some((if plain { sizes } else { Vec::new() }, i))
}

/// The strings of a JSON array (`["c10::BFloat16", "", "0.125"]`); an escaped string is read with
/// serde_json; any other value in the array gives an empty string. Empty when the text is no array.
fn parse_strings(b: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'[') {
        return out;
    }
    i += 1;
    while let Some(&c) = b.get(i) {
        match c {
            b']' => break,
            b'"' => {
                let start = i;
                i += 1;
                let mut escaped = false;
                while let Some(&c) = b.get(i) {
                    i += 1;
                    match c {
                        b'\\' => {
                            escaped = true;
                            i += 1;
                        }
                        b'"' => break,
                        _ => {}
                    }
                }
                let text = b.get(start..i.min(b.len())).unwrap_or_default();
                out.push(if escaped {
                    serde_json::from_slice::<String>(text).unwrap_or_default()
                } else {
                    String::from_utf8_lossy(text.get(1..text.len().saturating_sub(1)).unwrap_or_default()).into_owned()
                });
            }
            b',' | b' ' | b'\n' | b'\r' | b'\t' => i += 1,
            _ => {
                out.push(String::new());
                while b.get(i).is_some_and(|c| !matches!(c, b',' | b']')) {
                    i += 1;
                }
            }
        }
    }
    out
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    i
}

/// Size in bytes and peak class of a dtype as the profiler writes it.
fn elem(t: &str) -> Option<(u64, DType)> {
    Some(match t {
        "c10::BFloat16" | "c10::Half" => (2, DType::Bf16),
        "float" => (4, DType::Fp32),
        "c10::Float8_e4m3fn" | "c10::Float8_e5m2" | "c10::Float8_e4m3fnuz" | "c10::Float8_e5m2fnuz" => (1, DType::Fp8),
        _ => return None,
    })
}

/// The product of `xs`, None on overflow: sizes come from the trace, and a corrupt or hostile one must not
/// wrap (release) or panic (debug).
fn prod(xs: &[u64]) -> Option<u64> {
    xs.iter().try_fold(1u64, |a, &x| a.checked_mul(x))
}

/// The sum of `xs`, None on overflow.
fn sum(xs: &[u64]) -> Option<u64> {
    xs.iter().try_fold(0u64, |a, &x| a.checked_add(x))
}

fn numel(d: &[u64]) -> Option<u64> {
    prod(d)
}

/// The work of one call of `name` with these shapes; None when the op has no model or its shapes do not
/// fit it (missing dims, unknown dtype, inconsistent sizes, sizes whose products overflow 64 bits).
pub fn model(name: &str, s: &Shapes) -> Option<OpWork> {
    match name {
        "aten::mm" => gemm(s, 0, 1, None),
        "aten::addmm" => gemm(s, 1, 2, Some(0)),
        "aten::bmm" => batched(s, 0, 1, None),
        "aten::baddbmm" => batched(s, 1, 2, Some(0)),
        "aten::matmul" => matmul(s),
        "aten::linear" => linear(s),
        "aten::scaled_dot_product_attention" => sdpa(s, 5),
        "aten::_scaled_dot_product_flash_attention" => sdpa(s, 4),
        "aten::_scaled_dot_product_efficient_attention" | "aten::_scaled_dot_product_cudnn_attention" => sdpa(s, 6),
        "_vllm_fa3_C::fwd" => vllm_flash(s, 7, 13, 24),
        "vllm_flash_attn_c::varlen_fwd" | "_vllm_fa2_C::varlen_fwd" => vllm_flash(s, 4, 11, 15),
        _ => None,
    }
}

/// A product of a batch of `[m, k] × [k, n]` GEMMs plus an optional bias of `bias_elems` elements.
fn gemm_work(batch: u64, m: u64, k: u64, n: u64, bias_elems: u64, size: u64, dtype: DType) -> Option<OpWork> {
    let out = prod(&[batch, m, n])?;
    let bias_flops = if bias_elems > 0 { out } else { 0 };
    let flops = prod(&[2, batch, m, k, n])?.checked_add(bias_flops)?;
    let elems = sum(&[prod(&[batch, m, k])?, prod(&[batch, k, n])?, out, bias_elems])?;
    Some(OpWork { flops, bytes: elems.checked_mul(size)?, dtype })
}

/// `[m, k] × [k, n]` (+ bias).
fn gemm(s: &Shapes, a: usize, b: usize, bias: Option<usize>) -> Option<OpWork> {
    let (x, w) = (s.dim(a)?, s.dim(b)?);
    let ([m, k], [k2, n]) = (<[u64; 2]>::try_from(x).ok()?, <[u64; 2]>::try_from(w).ok()?);
    if k != k2 {
        return None;
    }
    let (size, dtype) = s.elem_size(a)?;
    let bias_elems = match bias.and_then(|i| s.dim(i)) {
        Some(d) => numel(d)?,
        None => 0,
    };
    gemm_work(1, m, k, n, bias_elems, size, dtype)
}

/// `[b, m, k] × [b, k, n]` (+ bias).
fn batched(s: &Shapes, a: usize, b: usize, bias: Option<usize>) -> Option<OpWork> {
    let (x, w) = (s.dim(a)?, s.dim(b)?);
    let ([bt, m, k], [bt2, k2, n]) = (<[u64; 3]>::try_from(x).ok()?, <[u64; 3]>::try_from(w).ok()?);
    if k != k2 || bt != bt2 {
        return None;
    }
    let (size, dtype) = s.elem_size(a)?;
    let bias_elems = match bias.and_then(|i| s.dim(i)) {
        Some(d) => numel(d)?,
        None => 0,
    };
    gemm_work(bt, m, k, n, bias_elems, size, dtype)
}

/// `torch.matmul` with its broadcasting: a 1-D left operand is a row, a 1-D right one a column, leading
/// dimensions broadcast.
fn matmul(s: &Shapes) -> Option<OpWork> {
    let (a, b) = (s.dim(0)?, s.dim(1)?);
    let (size, dtype) = s.elem_size(0)?;
    let (a_batch, m, k) = match a {
        [k] => (&[][..], 1, *k),
        [batch @ .., m, k] => (batch, *m, *k),
        [] => return None,
    };
    let (b_batch, k2, n) = match b {
        [k] => (&[][..], *k, 1),
        [batch @ .., k, n] => (batch, *k, *n),
        [] => return None,
    };
    if k != k2 {
        return None;
    }
    let batch = broadcast(a_batch, b_batch)?;
    let elems = sum(&[numel(a)?, numel(b)?, prod(&[batch, m, n])?])?;
    Some(OpWork { flops: prod(&[2, batch, m, k, n])?, bytes: elems.checked_mul(size)?, dtype })
}

/// The element count of two leading-dimension lists broadcast together (None if they do not broadcast).
fn broadcast(a: &[u64], b: &[u64]) -> Option<u64> {
    let n = a.len().max(b.len());
    let mut out = 1u64;
    for i in 0..n {
        let x = if i < n - a.len() { 1 } else { a[i - (n - a.len())] };
        let y = if i < n - b.len() { 1 } else { b[i - (n - b.len())] };
        let d = match (x, y) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
        out = out.checked_mul(d)?;
    }
    Some(out)
}

/// `F.linear(x[..., k], W[n, k], bias[n]?)`.
fn linear(s: &Shapes) -> Option<OpWork> {
    let (x, w) = (s.dim(0)?, s.dim(1)?);
    let (&k, lead) = x.split_last()?;
    let [n, k2] = <[u64; 2]>::try_from(w).ok()?;
    if k != k2 {
        return None;
    }
    let (size, dtype) = s.elem_size(0)?;
    let bias = match s.dim(2) {
        Some(d) => numel(d)?,
        None => 0,
    };
    gemm_work(1, numel(lead)?, k, n, bias, size, dtype)
}

/// Query/key pairs of one sequence of `q` queries over `k` keys. `bottom_right`: a causal mask aligns the
/// queries with the last keys (FlashAttention's rule: decode's one query sees every key); otherwise with
/// the first keys (torch's SDPA `is_causal`, documented as upper-left: query i sees keys 0..=i). Equal
/// for prefill (q = k).
fn pairs(q: u64, k: u64, causal: bool, bottom_right: bool) -> Option<u64> {
    if !causal {
        return q.checked_mul(k);
    }
    if bottom_right {
        let q = q.min(k);
        // Σ over the last q rows: k − q + 1 … k keys.
        q.checked_mul(k)?.checked_sub(q.checked_mul(q.saturating_sub(1))? / 2)
    } else {
        let m = q.min(k);
        // Rows 0..m see 1..=m keys; rows past k see all k.
        (m.checked_mul(m + 1)? / 2).checked_add((q - m).checked_mul(k)?)
    }
}

/// SDPA and its backends: `q[b, hq, lq, d]`, `k[b, hkv, lk, d]`, `v[b, hkv, lk, dv]`; `is_causal` at
/// `causal_at` in the concrete inputs (upper-left, as torch defines it).
fn sdpa(s: &Shapes, causal_at: usize) -> Option<OpWork> {
    let [b, hq, lq, d] = <[u64; 4]>::try_from(s.dim(0)?).ok()?;
    let [b2, hkv, lk, d2] = <[u64; 4]>::try_from(s.dim(1)?).ok()?;
    let [b3, hkv2, lk2, dv] = <[u64; 4]>::try_from(s.dim(2)?).ok()?;
    if b != b2 || b != b3 || d != d2 || hkv != hkv2 || lk != lk2 {
        return None;
    }
    let (size, dtype) = s.elem_size(0)?;
    let p = pairs(lq, lk, s.flag(causal_at), false)?;
    let elems = sum(&[prod(&[b, hq, lq, d])?, prod(&[b, hkv, lk, d.checked_add(dv)?])?, prod(&[b, hq, lq, dv])?])?;
    Some(OpWork { flops: prod(&[2, b, hq, p, d.checked_add(dv)?])?, bytes: elems.checked_mul(size)?, dtype })
}

/// vLLM's paged FlashAttention calls: `q[total_q, hq, d]` (input 0), a paged KV cache
/// `[blocks, block_size, hkv, d]` (input 1), `cu_seqlens_q[batch + 1]` at `cu_seqlens_at`, `max_seqlen_k`
/// as the concrete input at `max_k_at`, `is_causal` at `causal_at` (FlashAttention's bottom-right mask).
/// The shapes give only the longest key length and the mean query length, so every sequence is taken
/// at `max_seqlen_k` with `total_q / batch` queries: exact under controlled batching (all sequences of a
/// step alike), an estimate otherwise (sequences of different lengths mixed, as with chunked prefill
/// beside decodes).
///
/// Positions, from vLLM's bindings: FlashAttention 3 (`_vllm_fa3_C::fwd`) 7, 13, 24; FlashAttention 2
/// (`varlen_fwd(q, k, v, out, cu_seqlens_q, cu_seqlens_k, seqused_k, leftpad_k, block_table,
/// alibi_slopes, max_seqlen_q, max_seqlen_k, p_dropout, softmax_scale, zero_tensors, is_causal, ...)`)
/// 4, 11, 15.
fn vllm_flash(s: &Shapes, cu_seqlens_at: usize, max_k_at: usize, causal_at: usize) -> Option<OpWork> {
    let [total_q, hq, d] = <[u64; 3]>::try_from(s.dim(0)?).ok()?;
    let cache = s.dim(1)?;
    let hkv = *cache.get(cache.len().checked_sub(2)?)?;
    let batch =
        s.dim(cu_seqlens_at).and_then(|c| c.first().copied()).map(|n| n.saturating_sub(1)).filter(|&b| b > 0)?;
    let lk = s.int(max_k_at)?;
    let (size, dtype) = s.elem_size(0)?;
    let p = batch.checked_mul(pairs(total_q / batch, lk, s.flag(causal_at), true)?)?;
    // q read and the output written; K and V of lk tokens per sequence read.
    let elems = sum(&[prod(&[2, total_q, hq, d])?, prod(&[2, batch, lk, hkv, d])?])?;
    Some(OpWork { flops: prod(&[2, hq, p, 2, d])?, bytes: elems.checked_mul(size)?, dtype })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shapes(dims: &str, types: &str, concrete: &str) -> Shapes {
        Shapes::parse(&RawShapes { dims: dims.as_bytes(), types: types.as_bytes(), concrete: concrete.as_bytes() })
            .expect("valid shapes")
    }

    #[test]
    fn a_decode_projection_gemm_at_batch_1() {
        // Llama-3.2-1B's q_proj at batch 1, as the H200 fixture records it.
        let s = shapes("[[1, 2048], [2048, 2048]]", "[\"c10::BFloat16\", \"c10::BFloat16\"]", "[\"\", \"\"]");
        let w = model("aten::mm", &s).expect("modelled");
        assert_eq!(w.flops, 2 * 2048 * 2048);
        // The weight dominates: 2048·2048 + 2048 + 2048 elements of 2 bytes.
        assert_eq!(w.bytes, (2048 * 2048 + 2 * 2048) * 2);
        assert_eq!(w.dtype, DType::Bf16);
        // Intensity ≈ 1 FLOP/byte: far below any GPU's ridge point, so memory-bound.
        assert!((w.flops as f64 / w.bytes as f64 - 1.0).abs() < 0.01);
    }

    #[test]
    fn linear_with_leading_dims_and_bias() {
        let s = shapes(
            "[[4, 128, 2048], [8192, 2048], [8192]]",
            "[\"c10::BFloat16\", \"c10::BFloat16\", \"c10::BFloat16\"]",
            "[\"\", \"\", \"\"]",
        );
        let w = model("aten::linear", &s).expect("modelled");
        let m = 4 * 128;
        assert_eq!(w.flops, 2 * m * 2048 * 8192 + m * 8192);
        assert_eq!(w.bytes, (m * 2048 + 8192 * 2048 + m * 8192 + 8192) * 2);
    }

    #[test]
    fn addmm_bmm_and_matmul_broadcasting() {
        let s = shapes(
            "[[3072], [32, 2048], [2048, 3072], [], []]",
            "[\"c10::Half\", \"c10::Half\", \"c10::Half\", \"Scalar\", \"Scalar\"]",
            "[]",
        );
        let w = model("aten::addmm", &s).expect("modelled");
        assert_eq!(w.flops, 2 * 32 * 2048 * 3072 + 32 * 3072);
        assert_eq!(w.bytes, (3072 + 32 * 2048 + 2048 * 3072 + 32 * 3072) * 2);

        // The rotary frequencies of the HF model: a float bmm [1, 32, 1] × [1, 1, 1].
        let s = shapes("[[1, 32, 1], [1, 1, 1]]", "[\"float\", \"float\"]", "[\"\", \"\"]");
        let w = model("aten::bmm", &s).expect("modelled");
        assert_eq!((w.flops, w.bytes, w.dtype), (2 * 32, (32 + 1 + 32) * 4, DType::Fp32));

        // [8, 1, 16, 64] × [64, 32] broadcasts to batch 8: 8·16 rows.
        let s = shapes("[[8, 1, 16, 64], [64, 32]]", "[\"c10::BFloat16\", \"c10::BFloat16\"]", "[]");
        let w = model("aten::matmul", &s).expect("modelled");
        assert_eq!(w.flops, 2 * 8 * 16 * 64 * 32);
        assert_eq!(w.bytes, (8 * 16 * 64 + 64 * 32 + 8 * 16 * 32) * 2);
        // Vector × matrix.
        let s = shapes("[[64], [64, 32]]", "[\"float\", \"float\"]", "[]");
        assert_eq!(model("aten::matmul", &s).expect("modelled").flops, 2 * 64 * 32);
        // Mismatched inner dimensions are not modelled.
        let s = shapes("[[8, 64], [32, 32]]", "[\"float\", \"float\"]", "[]");
        assert_eq!(model("aten::matmul", &s), None);
    }

    #[test]
    fn sdpa_decode_and_causal_prefill() {
        // The fixture's decode step at batch 1: one query over 134 keys, 32 query heads on 8 KV heads.
        let s = shapes(
            "[[1, 32, 1, 64], [1, 8, 134, 64], [1, 8, 134, 64], [], [], [], [], []]",
            "[\"c10::BFloat16\", \"c10::BFloat16\", \"c10::BFloat16\", \"\", \"Scalar\", \"Scalar\", \"Scalar\", \"Scalar\"]",
            "[\"\", \"\", \"\", \"\", \"0.\", \"False\", \"0.125\", \"True\"]",
        );
        let w = model("aten::scaled_dot_product_attention", &s).expect("modelled");
        assert_eq!(w.flops, 2 * 32 * 134 * (64 + 64));
        assert_eq!(w.bytes, (32 * 64 + 8 * 134 * 128 + 32 * 64) * 2);
        // Causal prefill of 128 tokens: 128·129/2 pairs per head.
        let s = shapes(
            "[[2, 32, 128, 64], [2, 8, 128, 64], [2, 8, 128, 64], [], [], [], [], []]",
            "[\"c10::BFloat16\", \"c10::BFloat16\", \"c10::BFloat16\", \"\", \"Scalar\", \"Scalar\", \"Scalar\", \"Scalar\"]",
            "[\"\", \"\", \"\", \"\", \"0.\", \"True\", \"0.125\", \"True\"]",
        );
        let w = model("aten::scaled_dot_product_attention", &s).expect("modelled");
        assert_eq!(w.flops, 2 * 2 * 32 * (128 * 129 / 2) * 128);
    }

    #[test]
    fn vllm_flash_attention_3_decode() {
        // From the vLLM fixture: 32 sequences, one query each, max_seqlen_k 260, paged cache of 16-token blocks.
        let mut dims = vec!["[]".to_string(); 37];
        dims[0] = "[32, 32, 64]".into();
        dims[1] = "[108292, 16, 8, 64]".into();
        dims[2] = "[108292, 16, 8, 64]".into();
        dims[7] = "[33]".into();
        let mut types = vec!["\"\"".to_string(); 37];
        types[0] = "\"c10::BFloat16\"".into();
        let mut concrete = vec!["\"\"".to_string(); 37];
        concrete[12] = "\"1\"".into();
        concrete[13] = "\"260\"".into();
        concrete[24] = "\"True\"".into();
        let s = shapes(
            &format!("[{}]", dims.join(",")),
            &format!("[{}]", types.join(",")),
            &format!("[{}]", concrete.join(",")),
        );
        let w = model("_vllm_fa3_C::fwd", &s).expect("modelled");
        assert_eq!(w.flops, 2 * 32 * (32 * 260) * 128);
        assert_eq!(w.bytes, (2 * 32 * 32 * 64 + 2 * 32 * 260 * 8 * 64) * 2);
    }

    /// Builds the shapes of a call with `n` inputs: dims, types and concrete values at given positions.
    fn call(n: usize, dims: &[(usize, &str)], types: &[(usize, &str)], concrete: &[(usize, &str)]) -> Shapes {
        let mut d = vec!["[]".to_string(); n];
        let mut t = vec!["\"\"".to_string(); n];
        let mut c = vec!["\"\"".to_string(); n];
        for (i, v) in dims {
            d[*i] = v.to_string();
        }
        for (i, v) in types {
            t[*i] = format!("\"{v}\"");
        }
        for (i, v) in concrete {
            c[*i] = format!("\"{v}\"");
        }
        shapes(&format!("[{}]", d.join(",")), &format!("[{}]", t.join(",")), &format!("[{}]", c.join(",")))
    }

    #[test]
    fn vllm_flash_attention_2_varlen_decode_and_prefill() {
        // varlen_fwd(q, k, v, out, cu_seqlens_q, cu_seqlens_k, seqused_k, leftpad_k, block_table,
        // alibi_slopes, max_seqlen_q, max_seqlen_k, p_dropout, softmax_scale, zero_tensors, is_causal, ...)
        let decode = call(
            20,
            &[(0, "[16, 32, 128]"), (1, "[4000, 16, 8, 128]"), (2, "[4000, 16, 8, 128]"), (4, "[17]"), (8, "[16, 64]")],
            &[(0, "c10::BFloat16")],
            &[(10, "1"), (11, "1000"), (15, "True")],
        );
        let w = model("_vllm_fa2_C::varlen_fwd", &decode).expect("modelled");
        assert_eq!(w.flops, 2 * 32 * (16 * 1000) * (128 + 128));
        assert_eq!(w.bytes, (2 * 16 * 32 * 128 + 2 * 16 * 1000 * 8 * 128) * 2);
        // Prefill: 2 sequences of 512 queries over their own 512 keys, causal: 512·513/2 pairs each.
        let prefill = call(
            20,
            &[(0, "[1024, 32, 128]"), (1, "[4000, 16, 8, 128]"), (4, "[3]")],
            &[(0, "c10::BFloat16")],
            &[(11, "512"), (15, "True")],
        );
        let w = model("vllm_flash_attn_c::varlen_fwd", &prefill).expect("modelled");
        assert_eq!(w.flops, 2 * 32 * (2 * 512 * 513 / 2) * 256);
    }

    #[test]
    fn torch_causal_masks_are_upper_left() {
        // 4 queries over 6 keys with is_causal: torch's mask lets query i see keys 0..=i: 1+2+3+4 pairs.
        assert_eq!(pairs(4, 6, true, false), Some(10));
        // FlashAttention's bottom-right mask: query i sees keys 0..=i+2: 3+4+5+6.
        assert_eq!(pairs(4, 6, true, true), Some(18));
        // Equal lengths agree; no mask is every pair.
        assert_eq!(pairs(5, 5, true, false), pairs(5, 5, true, true));
        assert_eq!(pairs(4, 6, false, false), Some(24));
    }

    #[test]
    fn sizes_whose_work_overflows_are_not_modelled() {
        let huge = u64::MAX / 2;
        let s = shapes(&format!("[[{huge}, 2048], [2048, 2048]]"), "[\"c10::BFloat16\", \"c10::BFloat16\"]", "[]");
        assert_eq!(model("aten::mm", &s), None);
        let s = shapes(&format!("[[{huge}, 4, 2048], [2048, 2048]]"), "[\"c10::BFloat16\", \"c10::BFloat16\"]", "[]");
        assert_eq!(model("aten::linear", &s), None);
        assert_eq!(model("aten::matmul", &s), None);
    }

    #[test]
    fn shapes_parse_like_json() {
        let s = shapes(
            r#"[[32, 2048], [], [[1, 2], [3]], null, [-1, 4], [2.5]]"#,
            r#"["c10::BFloat16", "Scalar", "TensorList", 7, "a\"b", ""]"#,
            r#"["", "0.125"]"#,
        );
        assert_eq!(s.dims, vec![vec![32, 2048], vec![], vec![], vec![], vec![], vec![]]);
        assert_eq!(s.types, ["c10::BFloat16", "Scalar", "TensorList", "", "a\"b", ""].map(String::from));
        assert_eq!(s.concrete, ["", "0.125"].map(String::from));
    }

    /// Shapes come from the trace: cut, mutated or random text is never a panic, and a model either
    /// fits or is left out.
    #[test]
    fn mangled_shapes_never_panic() {
        let sample = br#"[[32, 32, 64], [108292, 16, 8, 64], [], [33], ["x"], [[1, 2]], 5, null, "s\"t"]"#;
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..20_000 {
            let mut b = sample.to_vec();
            match round % 3 {
                0 => b.truncate((next() as usize) % (b.len() + 1)),
                1 => {
                    for _ in 0..4 {
                        let i = (next() as usize) % b.len();
                        b[i] = b"[]\",\\0123456789 -.en"[(next() as usize) % 20];
                    }
                }
                _ => b = (0..(next() % 64)).map(|_| next() as u8).collect(),
            }
            let raw = RawShapes { dims: &b, types: &b, concrete: &b };
            if let Some(s) = Shapes::parse(&raw) {
                for name in [
                    "aten::mm",
                    "aten::linear",
                    "aten::matmul",
                    "_vllm_fa3_C::fwd",
                    "aten::scaled_dot_product_attention",
                ] {
                    let _ = model(name, &s);
                }
            }
        }
    }

    #[test]
    fn unknown_ops_and_bad_shapes_have_no_model() {
        let s = shapes("[[1, 2048]]", "[\"c10::BFloat16\"]", "[\"\"]");
        assert!(!has_model("aten::silu"));
        assert_eq!(model("aten::silu", &s), None);
        assert_eq!(model("aten::mm", &s), None);
        assert!(Shapes::parse(&RawShapes { dims: b"not json", types: b"", concrete: b"" }).is_none());
        assert!(Shapes::parse(&RawShapes { dims: b"[[1, 2", types: b"", concrete: b"" }).is_none());
        // An unknown dtype is not modelled rather than guessed.
        let s = shapes("[[2, 2], [2, 2]]", "[\"c10::complex<float>\", \"c10::complex<float>\"]", "[]");
        assert_eq!(model("aten::mm", &s), None);
    }
}
