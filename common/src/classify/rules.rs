//! The rule file: which ops and modules mark the parts of a decoder layer.

use std::path::Path;

use serde::Deserialize;

use crate::glob::Patterns;

/// The default rules (Llama family, Hugging Face and vLLM), embedded from `common/rules/llama.toml`.
pub const DEFAULT_RULES: &str = include_str!("../../rules/llama.toml");

/// An invalid rule file.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// The file could not be read.
    #[error("{file}: {source}")]
    Io {
        /// The file.
        file: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The TOML is invalid or has unknown keys.
    #[error("{file}: {message}")]
    Parse {
        /// The file.
        file: String,
        /// The parser's message, with line and column.
        message: String,
    },
}

/// Op patterns.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpRules {
    /// Attention ops (one per decoder layer).
    pub attention: Patterns,
    /// Linear ops.
    pub linear: Patterns,
    /// Rope ops.
    #[serde(default)]
    pub rope: Patterns,
    /// Generic tensor ops that write the KV cache right before attention (not rope; `others`).
    #[serde(default)]
    pub kv_cache: Patterns,
    /// Ops that write the paged KV cache for the attention op (`paged_attention`).
    #[serde(default)]
    pub attention_cache: Patterns,
    /// Collective communication ops (all-reduce, all-gather, ...): their kernels are `others` in the seed
    /// tables and the `collective` category of the full tables, where the time spent waiting for the
    /// other ranks is reported apart from the transfer.
    #[serde(default)]
    pub collective: Patterns,
}

/// Kernel-name patterns, for kernels whose launching op says nothing (or that no op launched).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelRules {
    /// Collective communication kernels (NCCL's).
    #[serde(default)]
    pub collective: Patterns,
}

/// Module patterns.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleRules {
    /// Decoder-layer module classes.
    #[serde(default)]
    pub decoder_layer: Patterns,
    /// Rope module classes.
    #[serde(default)]
    pub rope: Patterns,
}

/// Classification rules.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// Op patterns.
    pub ops: OpRules,
    /// Module patterns.
    #[serde(default)]
    pub modules: ModuleRules,
    /// Kernel-name patterns.
    #[serde(default)]
    pub kernels: KernelRules,
}

impl Default for Rules {
    fn default() -> Self {
        // The embedded file is part of the build and covered by a test.
        #[allow(clippy::expect_used)]
        Self::parse(DEFAULT_RULES, "built-in rules").expect("built-in rules are valid")
    }
}

impl Rules {
    /// Parses rule text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, RulesError> {
        toml::from_str(text).map_err(|e| RulesError::Parse { file: file.to_string(), message: e.to_string() })
    }

    /// Reads a rule file.
    pub fn load(path: &Path) -> Result<Self, RulesError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| RulesError::Io { file: file.clone(), source })?;
        Self::parse(&text, &file)
    }

    /// Is this op an attention op?
    pub fn is_attention(&self, op: &str) -> bool {
        self.ops.attention.is_match(op)
    }

    /// Is this op a linear op?
    pub fn is_linear(&self, op: &str) -> bool {
        self.ops.linear.is_match(op)
    }

    /// Is this op a rope op?
    pub fn is_rope(&self, op: &str) -> bool {
        self.ops.rope.is_match(op)
    }

    /// Is this op a generic KV-cache write?
    pub fn is_kv_cache(&self, op: &str) -> bool {
        self.ops.kv_cache.is_match(op)
    }

    /// Is this op a paged KV-cache write that belongs to attention?
    pub fn is_attention_cache(&self, op: &str) -> bool {
        self.ops.attention_cache.is_match(op)
    }

    /// Is this op a collective communication op?
    pub fn is_collective(&self, op: &str) -> bool {
        self.ops.collective.is_match(op)
    }

    /// Is this kernel (by name) a collective communication kernel?
    pub fn is_collective_kernel(&self, kernel: &str) -> bool {
        self.kernels.collective.is_match(kernel)
    }

    /// Is this module (class name, counter stripped) a decoder layer?
    pub fn is_decoder_layer(&self, module: &str) -> bool {
        self.modules.decoder_layer.is_match(module)
    }

    /// Is this module a rope module?
    pub fn is_rope_module(&self, module: &str) -> bool {
        self.modules.rope.is_match(module)
    }
}

/// `nn.Module: LlamaDecoderLayer_3` -> `LlamaDecoderLayer`.
pub fn module_class(frame_name: &str) -> &str {
    let s = frame_name.strip_prefix("nn.Module: ").unwrap_or(frame_name);
    match s.rsplit_once('_') {
        Some((head, tail)) if !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit()) => head,
        _ => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_rules_parse() {
        let r = Rules::default();
        assert!(r.is_linear("aten::linear"));
        assert!(!r.is_linear("aten::matmul"));
        assert!(r.is_attention("aten::scaled_dot_product_attention"));
        assert!(r.is_attention("vllm::unified_attention_with_output"));
        assert!(r.is_rope("_C::rotary_embedding"));
        // vLLM V1: FA3's forward is attention, its scheduler metadata is not; the KV-cache write is.
        assert!(r.is_attention("_vllm_fa3_C::fwd"));
        assert!(!r.is_attention("_vllm_fa3_C::get_scheduler_metadata"));
        assert!(r.is_attention_cache("vllm::unified_kv_cache_update"));
        assert!(r.is_attention_cache("_C_cache_ops::reshape_and_cache_flash"));
        assert!(r.is_decoder_layer(module_class("nn.Module: LlamaDecoderLayer_12")));
        assert!(r.is_rope_module(module_class("nn.Module: LlamaRotaryEmbedding_0")));
        // vLLM's tensor-parallel all-reduce (custom or NCCL) and torch's c10d collectives.
        assert!(r.is_collective("vllm::all_reduce") && r.is_collective("_C_custom_ar::all_reduce"));
        assert!(r.is_collective("nccl:_all_gather_base") && r.is_collective("c10d::allreduce_"));
        assert!(!r.is_collective("aten::linear") && !r.is_collective("aten::sum"));
        assert!(r.is_collective_kernel("ncclDevKernel_AllReduce_Sum_bf16_RING_LL(ncclDevKernelArgsStorage<4096ul>)"));
    }

    #[test]
    fn unknown_key_is_an_error_with_location() {
        let e = Rules::parse("[ops]\nattention = []\nlinear = []\nlinaer = []\n", "x.toml").err();
        let msg = e.map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("x.toml") && msg.contains("linaer") && msg.contains("line 4"), "{msg}");
    }
}
