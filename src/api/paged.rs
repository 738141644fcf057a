//! The paged-cache wrapper for servers: [`PagedAttention`] plans append and decode once, from
//! one description of the page pools ([`PagedKv`]) and the host-side upper bounds of a batch
//! ([`BatchBounds`]), with the SM count taken from the backend; then every layer of every step
//! runs with that layer's pools and the step's device tensors. Real lengths, block tables and
//! slots are device data the kernels check (a bad entry traps), so one wrapper, and one CUDA
//! graph captured over it, serves every step; a step with fewer tokens than the bound marks the
//! unused slots `-1` (skipped), and a wrapper planned for zero new tokens appends nothing.
//!
//! ```
//! use flashmha::api::{BatchBounds, DecodeArgs, KvAppendArgs, PagedAttention, PagedKv, RowStats};
//! use flashmha::backend::{emulator::EmulatorBackend, Backend};
//! use flashmha::ops::decode::KvCacheDType;
//! use flashmha::{AttnOptions, DType, KernelTarget};
//! use half::f16;
//!
//! # fn main() -> flashmha::Result<()> {
//! let be = EmulatorBackend::new(KernelTarget::Ampere); // CudaBackend in production
//! let stream = be.stream()?;
//! let pools = PagedKv { dtype: DType::F16, kv_dtype: KvCacheDType::Same, num_heads_q: 4,
//!                       num_heads_kv: 2, head_dim: 64, num_pages: 8, page_size: 16,
//!                       head_major: false };
//! let bounds = BatchBounds { batch: 2, new_tokens: 1, max_pages_per_seq: 4 };
//! let paged = PagedAttention::new(&be, &pools, &bounds, &AttnOptions::default(),
//!                                 RowStats::default())?;
//! // One layer's pools, and a workspace for every layer (sized by the plan).
//! let (mut k, mut v) = (be.alloc_zeros::<f16>(&stream, 8 * 16 * 2 * 64)?,
//!                       be.alloc_zeros::<f16>(&stream, 8 * 16 * 2 * 64)?);
//! let mut ws = be.alloc_zeros::<f32>(&stream, paged.workspace_elems().max(1) as usize)?;
//! // A step: each sequence's new token goes to slot 0 of its first page, then decode.
//! let table = be.upload(&stream, &[3i32, 4, 5, 6, 0, 1, 2, 7])?;
//! let slots = be.upload(&stream, &[3i32 * 16, 0])?;
//! let lens = be.upload(&stream, &[1i32, 1])?;
//! let kv_new = be.upload(&stream, &vec![f16::from_f32(0.5); 2 * 2 * 64])?;
//! paged.append(&be, &stream, KvAppendArgs::new(&kv_new, &kv_new, &mut k, &mut v).slots(&slots))?;
//! let q = be.upload(&stream, &vec![f16::from_f32(1.0); 2 * 4 * 64])?;
//! let mut o = be.alloc_zeros::<f16>(&stream, 2 * 4 * 64)?;
//! let args = DecodeArgs::new(&q, &k, &v, &mut o, &table, &lens).workspace(&mut ws);
//! paged.decode(&be, &stream, args)?;
//! // One key per sequence: O is its value row.
//! assert!(be.download(&stream, &o)?.iter().all(|x| x.to_f32() == 0.5));
//! # Ok(()) }
//! ```

use super::{Attention, DecodeArgs, KvAppendArgs};
use crate::backend::Backend;
use crate::common::dtype::DType;
use crate::common::element::Element;
use crate::common::error::{Error, Result};
use crate::common::options::AttnOptions;
use crate::ops::decode::{DecodePlan, DecodeProblem, KvCacheDType, SplitPolicy};
use crate::ops::kv_append::{AppendIndex, KvAppendPlan};

/// The page pools of a model's KV cache (the same for every layer): `[num_pages, page_size,
/// num_heads_kv, head_dim]` each (or `[num_pages, num_heads_kv, page_size, head_dim]` when
/// `head_major`), of `kv_dtype` elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PagedKv {
    /// q, o and the new K/V rows (and the pages, unless `kv_dtype` is FP8).
    pub dtype: DType,
    pub kv_dtype: KvCacheDType,
    pub num_heads_q: usize,
    pub num_heads_kv: usize,
    pub head_dim: usize,
    pub num_pages: usize,
    pub page_size: usize,
    pub head_major: bool,
}

/// Host-side upper bounds of the batches one plan serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchBounds {
    /// Sequences per step (the block table's rows, `cache_seqlens`' length).
    pub batch: usize,
    /// New query tokens per sequence and step (`q, o: [batch, new_tokens, hq, d]`); 1 for
    /// plain decode, more for speculative decoding.
    pub new_tokens: usize,
    /// Pages one sequence may hold (the block table's columns).
    pub max_pages_per_seq: usize,
}

/// Which per-row statistics each decode writes besides O (each then needs its buffer in
/// [`DecodeArgs`]): the LSE for a cascade merge, the entropy for diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RowStats {
    pub lse: bool,
    pub entropy: bool,
}

/// Append and decode planned once for a cache and a batch bound (see the module docs).
#[derive(Debug, Clone)]
pub struct PagedAttention {
    decode: DecodePlan,
    append: KvAppendPlan,
}

impl PagedAttention {
    /// Plans for `backend`'s kernels and SM count. Every size is validated here (typed
    /// errors); nothing touches the device.
    pub fn new<B: Backend + ?Sized>(
        backend: &B,
        pools: &PagedKv,
        bounds: &BatchBounds,
        options: &AttnOptions,
        stats: RowStats,
    ) -> Result<PagedAttention> {
        let mut problem = DecodeProblem::contiguous(
            pools.dtype,
            bounds.batch,
            bounds.new_tokens,
            pools.num_heads_q,
            pools.num_heads_kv,
            pools.head_dim,
            pools.num_pages,
            pools.page_size,
            bounds.max_pages_per_seq,
            pools.head_major,
        );
        problem.kv_dtype = pools.kv_dtype;
        problem.options = *options;
        problem.lse = stats.lse;
        problem.entropy = stats.entropy;
        let tokens = bounds
            .batch
            .checked_mul(bounds.new_tokens)
            .ok_or(Error::SizeOverflow {
                what: "batch x new tokens",
            })?;
        let splits = SplitPolicy::Auto {
            num_sms: backend.sm_count()?,
        };
        Ok(PagedAttention {
            decode: DecodePlan::new_for(backend.target(), &problem, splits)?,
            append: KvAppendPlan::new_for(backend.target(), &problem, tokens, AppendIndex::Slots)?,
        })
    }

    /// The decode problem both plans were made from (shapes, strides, sizes).
    pub fn problem(&self) -> &DecodeProblem {
        &self.decode.problem
    }

    /// f32 elements of the split workspace the caller allocates once and passes to every
    /// decode (0: this plan needs none).
    pub fn workspace_elems(&self) -> u64 {
        self.decode.workspace.elems()
    }

    pub fn decode_plan(&self) -> &DecodePlan {
        &self.decode
    }

    pub fn append_plan(&self) -> &KvAppendPlan {
        &self.append
    }

    /// Writes the step's new K/V rows into one layer's pools (`KvAppendArgs::new(..).slots(..)`
    /// or `KvAppendArgs::fp8(..)`, as the pools' `kv_dtype` says).
    pub fn append<B: Backend + ?Sized, T: Element>(
        &self,
        backend: &B,
        stream: &B::Stream,
        args: KvAppendArgs<'_, B, T>,
    ) -> Result<()> {
        backend.kv_append(stream, &self.append, args)
    }

    /// Attends the step's queries to one layer's pools (also writes the rows' LSE when an LSE
    /// buffer is given, for a cascade merge).
    pub fn decode<B: Backend + ?Sized, T: Element>(
        &self,
        backend: &B,
        stream: &B::Stream,
        args: DecodeArgs<'_, B, T>,
    ) -> Result<()> {
        backend.decode(stream, &self.decode, args)
    }
}
