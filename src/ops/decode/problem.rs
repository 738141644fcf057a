//! A paged-decode call described without any device: shapes, strides, page geometry, host-side
//! upper bounds and options. Plain data; touches nothing.
//!
//! The plan uses only host-side upper bounds (`max_seqlen_q`, `total_q`, `max_cache_len`); the
//! real lengths (`cache_seqlens`, `cu_seqlens_q`) are read by the kernel from device memory and
//! checked there (a bad one traps, which on a GPU leaves the context unusable: see
//! [`crate::backend::cuda`]), so one plan made for the engine's maximum batch serves every smaller step.

use super::fp8::{KvCacheDType, KvScaleGranularity};
use crate::common::dtype::DType;
use crate::common::geometry::{span, PageStrides, Strides};
use crate::common::options::AttnOptions;

/// How the new query tokens are laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryLayout {
    /// `q: [batch, sq_new, hq, d]`, `o: [batch, sq_new, hq, d_v]`.
    Padded { sq_new: usize },
    /// `q: [total_q, hq, d]`, `o: [total_q, hq, d_v]`; item `i` owns rows `cu_seqlens_q[i]..cu_seqlens_q[i + 1]` of the
    /// device array. The plan needs only the bounds: `total_q` rows and at most `max_seqlen_q`
    /// per item (both checked against the device values by the kernel).
    Varlen { total_q: usize, max_seqlen_q: usize },
}

/// One decode call.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeProblem {
    pub dtype: DType,
    pub batch: usize,
    pub num_heads_q: usize,
    pub num_heads_kv: usize,
    /// d_qk: the head dim of q and of the K pages.
    pub head_dim: usize,
    /// d_v: the head dim of the V pages and of o; `head_dim` unless a compiled d_qk != d_v
    /// pair serves the call (issue 23; 16-bit pages only). K and V pools are separate, each
    /// `[pages, page_size, hkv, its dim]` (NHD) or `[pages, hkv, page_size, its dim]` (HND)
    /// through its own strides.
    pub head_dim_v: usize,
    pub queries: QueryLayout,
    pub q_strides: Strides,
    pub o_strides: Strides,
    /// Pages in each of the K and V pools (block-table entries must be below it).
    pub num_pages: usize,
    /// Keys per page, 1..=1024.
    pub page_size: usize,
    /// In elements of the cache type (bytes for FP8).
    pub k_strides: PageStrides,
    pub v_strides: PageStrides,
    /// What the pages hold: `dtype` or FP8 codes (then `k_scales` / `v_scales` buffers of
    /// `kv_scales.len(num_heads_kv)` f32 each are required).
    pub kv_dtype: KvCacheDType,
    pub kv_scales: KvScaleGranularity,
    /// Columns of the block table `[batch, max_pages_per_seq]`.
    pub max_pages_per_seq: usize,
    /// Elements between block-table rows (usually `max_pages_per_seq`).
    pub block_table_stride: usize,
    /// Host-side upper bound of every `cache_seqlens[i]` (drives the split heuristic only).
    pub max_cache_len: usize,
    pub options: AttnOptions,
    pub alibi: bool,
    pub gates: bool,
    /// Attention-sink logits `[hq]` (f32): joined once per row, by split 0's state when the
    /// plan splits (kernels/common/state_merge.cuh).
    pub sinks: bool,
    pub lse: bool,
    pub entropy: bool,
}

impl DecodeProblem {
    /// Contiguous padded q/o, NHD or HND pages, `block_table_stride = max_pages_per_seq`, no
    /// optional inputs or outputs.
    #[allow(clippy::too_many_arguments)]
    pub fn contiguous(
        dtype: DType,
        batch: usize,
        sq_new: usize,
        num_heads_q: usize,
        num_heads_kv: usize,
        head_dim: usize,
        num_pages: usize,
        page_size: usize,
        max_pages_per_seq: usize,
        head_major_pages: bool,
    ) -> DecodeProblem {
        let qs = Strides::contiguous(sq_new, num_heads_q, head_dim);
        let pages = if head_major_pages {
            PageStrides::hnd(page_size, num_heads_kv, head_dim)
        } else {
            PageStrides::nhd(page_size, num_heads_kv, head_dim)
        };
        DecodeProblem {
            dtype,
            batch,
            num_heads_q,
            num_heads_kv,
            head_dim,
            head_dim_v: head_dim,
            queries: QueryLayout::Padded { sq_new },
            q_strides: qs,
            o_strides: qs,
            num_pages,
            page_size,
            k_strides: pages,
            v_strides: pages,
            kv_dtype: KvCacheDType::Same,
            kv_scales: KvScaleGranularity::PerTensor,
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

    /// Rows of q / o (padded: `batch * sq_new`, saturating).
    pub fn total_q(&self) -> usize {
        match self.queries {
            QueryLayout::Padded { sq_new } => self.batch.saturating_mul(sq_new),
            QueryLayout::Varlen { total_q, .. } => total_q,
        }
    }
    /// Upper bound of any item's query rows.
    pub fn max_seqlen_q(&self) -> usize {
        match self.queries {
            QueryLayout::Padded { sq_new } => sq_new,
            QueryLayout::Varlen { max_seqlen_q, .. } => max_seqlen_q,
        }
    }
    pub fn is_varlen(&self) -> bool {
        matches!(self.queries, QueryLayout::Varlen { .. })
    }
    /// Query heads per KV head (0 without KV heads: validation refuses that first).
    pub fn group(&self) -> usize {
        self.num_heads_q.checked_div(self.num_heads_kv).unwrap_or(0)
    }
    /// (stride, extent) of the batch, row and head dimensions of q or o: padded tensors are
    /// addressed per item, varlen ones by global row (the batch stride unused).
    pub(crate) fn q_dims(&self, s: &Strides) -> [(i64, usize); 3] {
        match self.queries {
            QueryLayout::Padded { sq_new } => [
                (s.batch, self.batch),
                (s.row, sq_new),
                (s.head, self.num_heads_q),
            ],
            QueryLayout::Varlen { total_q, .. } => {
                [(0, 1), (s.row, total_q), (s.head, self.num_heads_q)]
            }
        }
    }
    /// Elements the q (or o) tensor spans (0 without rows), saturating at `u64::MAX`.
    pub fn q_span(&self, s: &Strides) -> u64 {
        u64::try_from(span(&self.q_dims(s), self.head_dim)).unwrap_or(u64::MAX)
    }
    /// Bytes per cached K / V element.
    pub fn kv_element_bytes(&self) -> usize {
        self.kv_dtype.element_bytes()
    }
    /// Scales in each of the K and V scale buffers (0 without FP8).
    pub fn kv_scales_len(&self) -> usize {
        if self.kv_dtype.is_fp8() {
            self.kv_scales.len(self.num_heads_kv)
        } else {
            0
        }
    }
    /// Elements of the K page pool through `s` (rows of d_qk elements; and of the V pool when
    /// d_v = d_qk, see [`DecodeProblem::v_cache_span`]).
    pub fn cache_span(&self, s: &PageStrides) -> u64 {
        self.pool_span(s, self.head_dim)
    }
    /// Elements of the V page pool (rows of d_v elements).
    pub fn v_cache_span(&self) -> u64 {
        self.pool_span(&self.v_strides, self.head_dim_v)
    }
    fn pool_span(&self, s: &PageStrides, d: usize) -> u64 {
        s.span(self.num_pages, self.page_size, self.num_heads_kv, d)
    }

    /// `[batch, hq, sq_new]` (padded) or `[hq, total_q]` (varlen): f32 elements of LSE / entropy.
    pub fn row_stats_len(&self) -> usize {
        self.num_heads_q.saturating_mul(self.total_q())
    }
}
