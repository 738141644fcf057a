//! An MLA decode call described without any device: shapes, strides, page geometry, host-side
//! upper bounds and options. Plain data; touches nothing.

use crate::common::abi;
use crate::common::dtype::DType;
use crate::common::geometry::{PageStrides, Strides};
use crate::common::options::AttnOptions;
use crate::ops::decode::{DecodeProblem, KvCacheDType, KvScaleGranularity, QueryLayout};

/// Elements of a cached latent row and of a query row: 512 latent + 64 rope.
pub const MLA_D_QK: usize = abi::FLASHMHA_MLA_D_QK as usize;
/// Elements of an output row: the first 512 of the cached row are the value.
pub const MLA_D_V: usize = abi::FLASHMHA_MLA_D_V as usize;

/// One MLA decode call. Tensors: `q: [batch, sq_new, hq, 576]` (padded) or `[total_q, hq,
/// 576]` (varlen), `o` the same with 512; `kv_cache`: element (page, slot, c) at
/// `page * cache_strides.page + slot * cache_strides.slot + c` (one latent head:
/// `cache_strides.head` is unused); `block_table [batch, max_pages_per_seq]` and
/// `cache_seqlens [batch]` (i32, device-resident, checked by the kernel).
#[derive(Debug, Clone, PartialEq)]
pub struct MlaDecodeProblem {
    pub dtype: DType,
    pub batch: usize,
    /// Query heads, all sharing the one latent KV head (16-128 in the common models).
    pub num_heads_q: usize,
    pub queries: QueryLayout,
    pub q_strides: Strides,
    pub o_strides: Strides,
    pub num_pages: usize,
    /// Keys per page, 1..=1024 (64 in the common deployments).
    pub page_size: usize,
    pub cache_strides: PageStrides,
    /// 16-bit pages of `dtype`, or FP8 codes (e4m3 / e5m2) with ONE f32 scale for the pool
    /// (the `kv_scale` buffer: K and V are the same rows), finite and > 0.
    pub kv_dtype: KvCacheDType,
    pub max_pages_per_seq: usize,
    pub block_table_stride: usize,
    /// Host-side upper bound of every `cache_seqlens[i]` (drives the split heuristic only).
    pub max_cache_len: usize,
    /// Masks and modifiers; the default softmax scale is 1 / sqrt(576).
    pub options: AttnOptions,
    pub alibi: bool,
    pub gates: bool,
    /// Attention-sink logits `[hq]` (f32), joined once per row (split 0's state when split).
    pub sinks: bool,
    pub lse: bool,
    pub entropy: bool,
}

impl MlaDecodeProblem {
    /// Contiguous padded q / o, pages `[num_pages, page_size, 576]`, no optional tensors.
    pub fn contiguous(
        dtype: DType,
        batch: usize,
        sq_new: usize,
        num_heads_q: usize,
        num_pages: usize,
        page_size: usize,
        max_pages_per_seq: usize,
    ) -> MlaDecodeProblem {
        MlaDecodeProblem {
            dtype,
            batch,
            num_heads_q,
            queries: QueryLayout::Padded { sq_new },
            q_strides: Strides::contiguous(sq_new, num_heads_q, MLA_D_QK),
            o_strides: Strides::contiguous(sq_new, num_heads_q, MLA_D_V),
            num_pages,
            page_size,
            cache_strides: PageStrides::nhd(page_size, 1, MLA_D_QK),
            kv_dtype: KvCacheDType::Same,
            max_pages_per_seq,
            block_table_stride: max_pages_per_seq,
            max_cache_len: max_pages_per_seq.saturating_mul(page_size),
            options: AttnOptions::default(),
            alibi: false,
            gates: false,
            sinks: false,
            lse: false,
            entropy: false,
        }
    }

    /// The paged-decode view of the call (one KV head of 576 dims, the latent pool as both K
    /// and V): what the shared validation helpers, buffer table and params fill of
    /// src/ops/decode/ read. Its o is addressed with 512 dims by the MLA plan.
    pub fn as_decode(&self) -> DecodeProblem {
        DecodeProblem {
            dtype: self.dtype,
            batch: self.batch,
            num_heads_q: self.num_heads_q,
            num_heads_kv: 1,
            head_dim: MLA_D_QK,
            // The latent pool is the V pool too, its rows MLA_D_QK wide (the kernel reads the
            // first MLA_D_V of each); o's width is the MLA plan's.
            head_dim_v: MLA_D_QK,
            queries: self.queries.clone(),
            q_strides: self.q_strides,
            o_strides: self.o_strides,
            num_pages: self.num_pages,
            page_size: self.page_size,
            k_strides: self.cache_strides,
            v_strides: self.cache_strides,
            kv_dtype: self.kv_dtype,
            kv_scales: KvScaleGranularity::PerTensor,
            max_pages_per_seq: self.max_pages_per_seq,
            block_table_stride: self.block_table_stride,
            max_cache_len: self.max_cache_len,
            options: self.options,
            alibi: self.alibi,
            gates: self.gates,
            sinks: self.sinks,
            lse: self.lse,
            entropy: self.entropy,
        }
    }
}
