//! Classification of GPU activity into the categories of the original tables, by attribution (the op that
//! launched each kernel and its place in the decoder layer), not by kernel-name order.

pub mod graphs;
mod layers;
mod rules;

pub use layers::{Activity, Classified, RuleMemo, classify_step, classify_step_with};
pub use rules::{Rules, RulesError};

use serde::{Deserialize, Serialize};

/// Detailed categories (columns of `op_times_detailed.tsv`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Detail {
    /// q, k, v projections (separate or fused).
    KqvProj,
    /// Rotary position embedding.
    Rope,
    /// Attention.
    PagedAttention,
    /// Output projection.
    OProj,
    /// Gate and up projections (separate or fused).
    GatedUpProj,
    /// Down projection.
    DownProj,
    /// Everything else.
    Others,
}

impl Detail {
    /// All, in column order.
    pub const ALL: [Detail; 7] = [
        Detail::KqvProj,
        Detail::Rope,
        Detail::PagedAttention,
        Detail::OProj,
        Detail::GatedUpProj,
        Detail::DownProj,
        Detail::Others,
    ];

    /// Position in [`Detail::ALL`] (the column order; the enum is declared in that order).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The coarse category: attention = paged_attention; linear = the four projections; others = the
    /// rest, rope included (as the original op_times.tsv had it).
    pub fn coarse(self) -> Coarse {
        match self {
            Detail::PagedAttention => Coarse::Attention,
            Detail::KqvProj | Detail::OProj | Detail::GatedUpProj | Detail::DownProj => Coarse::Linear,
            Detail::Rope | Detail::Others => Coarse::Others,
        }
    }

    /// Column name.
    pub fn name(self) -> &'static str {
        match self {
            Detail::KqvProj => "kqv_proj",
            Detail::Rope => "rope",
            Detail::PagedAttention => "paged_attention",
            Detail::OProj => "o_proj",
            Detail::GatedUpProj => "gated_up_proj",
            Detail::DownProj => "down_proj",
            Detail::Others => "others",
        }
    }
}

/// Coarse categories (columns of `op_times.tsv`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Coarse {
    /// Attention kernels.
    Attention,
    /// GEMMs of linear ops.
    Linear,
    /// The rest.
    Others,
}

impl Coarse {
    /// All, in column order.
    pub const ALL: [Coarse; 3] = [Coarse::Attention, Coarse::Linear, Coarse::Others];

    /// Position in [`Coarse::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Column name.
    pub fn name(self) -> &'static str {
        match self {
            Coarse::Attention => "attention",
            Coarse::Linear => "linear",
            Coarse::Others => "others",
        }
    }
}
