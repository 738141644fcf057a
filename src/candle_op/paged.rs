//! The candle op over a paged KV cache (decode, speculative decode, chunked prefill):
//! [`paged_attention`] returns O and the LSE of new query tokens attending to the keys a block
//! table maps into K/V page pools. CPU tensors run the decode kernels' PTX on the emulator;
//! CUDA tensors (feature `candle-cuda`) run them on the GPU through the same [`DecodePlan`].
//!
//! Reads the given tensors, returns new ones; touches nothing else.

use super::mla::MlaKvCache;
use super::{
    bits, dims, dtype_shared_by, emulated_outputs, from_bits, host_i32, same_device, wrap, Target,
};
use crate::common::error::{Dim, Error, TensorName};
use crate::common::geometry::{PageStrides, Strides};
use crate::common::options::AttnOptions;
use crate::host::emulated_decode::{self as emulated, DecodeHostInputs, DecodeRun};
use crate::ops::decode::{DecodePlan, DecodeProblem, SplitPolicy};
use crate::ops::mla_decode::MlaDecodeProblem;
use candle_core::{Device, Tensor};

/// SMs the split heuristic plans for on the emulator (an A100's 108: the emulator runs the
/// plan a GPU of that size would get, splits included).
pub(super) const EMULATED_SMS: u32 = 108;

/// A paged KV cache as candle tensors.
#[derive(Debug, Clone, Copy)]
pub struct PagedKvCache<'a> {
    /// K pages: `[num_pages, page_size, hkv, d]`, or `[num_pages, hkv, page_size, d]` with
    /// `head_major` (q's dtype, contiguous).
    pub k: &'a Tensor,
    /// V pages, laid out as `k` with their own head dim d_v (`k`'s, or a compiled
    /// (d, d_v) pair such as (192, 128): issue 23).
    pub v: &'a Tensor,
    /// Whether the pages are head-major (HND) instead of token-major (NHD).
    pub head_major: bool,
    /// `[b, max_pages_per_seq]` integer: page of each sequence's `j`-th block of keys.
    pub block_table: &'a Tensor,
    /// `[b]` integer: keys of each sequence, the new tokens' included.
    pub cache_seqlens: &'a Tensor,
    /// Host-side bound of every `cache_seqlens` entry (sizes the split heuristic); `None` means
    /// `max_pages_per_seq * page_size`.
    pub max_cache_len: Option<usize>,
}

/// Attention of `q: [b, sq_new, hq, d]` (f16 or bf16, contiguous) over the paged cache: row `i`
/// of sequence `s` sees key `j < cache_seqlens[s]`, with causal masks aligned to the end of the
/// cache (the new tokens are the last `sq_new` keys). Returns `o: [b, sq_new, hq, d_v]` and
/// `lse: [b, hq, sq_new]` (f32, natural log). Device-resident indices (block table, lengths)
/// are checked by the kernel, which traps (an error, never an out-of-bounds access).
pub fn paged_attention(
    q: &Tensor,
    cache: &PagedKvCache,
    opts: &AttnOptions,
) -> candle_core::Result<(Tensor, Tensor)> {
    let pools = [(TensorName::KCache, cache.k), (TensorName::VCache, cache.v)];
    let dtype = dtype_shared_by(q, pools)?;
    let [batch, sq_new, hq, d] = dims::<4>(TensorName::Q, q)?;
    let kd = dims::<4>(TensorName::KCache, cache.k)?;
    let vd = dims::<4>(TensorName::VCache, cache.v)?;
    // V pages: K's pages, slots and heads, their own head dim (the plan checks the pair).
    let d_v = vd[3];
    if let Some(i) = (0..3).find(|&i| vd[i] != kd[i]) {
        return Err(wrap(Error::DimMismatch {
            tensor: TensorName::VCache,
            dim: [Dim::Batch, Dim::Seq, Dim::Heads, Dim::HeadDim][i],
            expected: kd[i],
            found: vd[i],
        }));
    }
    let (num_pages, page_size, hkv) = if cache.head_major {
        (kd[0], kd[2], kd[1])
    } else {
        (kd[0], kd[1], kd[2])
    };
    if kd[3] != d {
        return Err(wrap(Error::DimMismatch {
            tensor: TensorName::KCache,
            dim: Dim::HeadDim,
            expected: d,
            found: kd[3],
        }));
    }
    let max_pages_per_seq = batch_rows(batch, cache.block_table, cache.cache_seqlens)?;
    let mut problem = DecodeProblem::contiguous(
        dtype,
        batch,
        sq_new,
        hq,
        hkv,
        d,
        num_pages,
        page_size,
        max_pages_per_seq,
        cache.head_major,
    );
    if d_v != d {
        // o: [b, sq_new, hq, d_v]; V pages of d_v, laid out as K's.
        problem.head_dim_v = d_v;
        problem.o_strides = Strides::contiguous(sq_new, hq, d_v);
        problem.v_strides = if cache.head_major {
            PageStrides::hnd(page_size, hkv, d_v)
        } else {
            PageStrides::nhd(page_size, hkv, d_v)
        };
    }
    problem.options = *opts;
    problem.lse = true;
    if let Some(max) = cache.max_cache_len {
        problem.max_cache_len = max;
    }
    let target = same_device(q, cache.k, cache.v)?;
    let o_dims = [batch, sq_new, hq, d_v];
    let lse_dims = [batch, hq, sq_new];
    match target {
        Target::Emulator => {
            let plan = DecodePlan::new(
                &problem,
                SplitPolicy::Auto {
                    num_sms: EMULATED_SMS,
                },
            )
            .map_err(wrap)?;
            let inputs = host_inputs(
                q,
                (cache.k, cache.v),
                cache.block_table,
                cache.cache_seqlens,
            )?;
            let (o, lse) = run_outputs(emulated::decode(&plan, &inputs))?;
            Ok((
                from_bits(o, dtype, &o_dims)?,
                Tensor::from_vec(lse, &lse_dims, &Device::Cpu)?,
            ))
        }
        Target::Cuda => on_cuda(PagedCall::Decode(&problem, cache), q, &o_dims, &lse_dims),
    }
}

/// The columns of `block_table: [batch, max_pages_per_seq]` after checking it and
/// `cache_seqlens: [batch]` against the batch of q.
pub(super) fn batch_rows(
    batch: usize,
    block_table: &Tensor,
    cache_seqlens: &Tensor,
) -> candle_core::Result<usize> {
    let [bt_rows, max_pages_per_seq] = dims::<2>(TensorName::BlockTable, block_table)?;
    let [lens] = dims::<1>(TensorName::CacheSeqlens, cache_seqlens)?;
    for (tensor, found) in [
        (TensorName::BlockTable, bt_rows),
        (TensorName::CacheSeqlens, lens),
    ] {
        if found != batch {
            return Err(wrap(Error::DimMismatch {
                tensor,
                dim: Dim::Batch,
                expected: batch,
                found,
            }));
        }
    }
    Ok(max_pages_per_seq)
}

/// The host inputs of a paged op on the emulator: q, the K and V pools (the MLA decode passes
/// its latent pool as both), the block table and the lengths.
pub(super) fn host_inputs(
    q: &Tensor,
    (k, v): (&Tensor, &Tensor),
    block_table: &Tensor,
    cache_seqlens: &Tensor,
) -> candle_core::Result<DecodeHostInputs> {
    Ok(DecodeHostInputs {
        q: bits(q)?,
        k_cache: bits(k)?,
        v_cache: bits(v)?,
        block_table: host_i32(TensorName::BlockTable, block_table)?,
        cache_seqlens: host_i32(TensorName::CacheSeqlens, cache_seqlens)?,
        ..DecodeHostInputs::default()
    })
}

/// O's bits and the LSE of an emulated paged run; an error for any finding.
pub(super) fn run_outputs(
    run: crate::Result<DecodeRun>,
) -> candle_core::Result<(Vec<u16>, Vec<f32>)> {
    let run = run.map_err(wrap)?;
    let findings = run.findings().iter().map(ToString::to_string).collect();
    emulated_outputs(findings, run.o, run.lse)
}

/// One paged op's call as the CUDA path takes it (src/candle_op/cuda.rs).
#[derive(Clone, Copy)]
#[cfg_attr(not(feature = "candle-cuda"), allow(dead_code))]
pub(super) enum PagedCall<'a> {
    Decode(&'a DecodeProblem, &'a PagedKvCache<'a>),
    Mla(&'a MlaDecodeProblem, &'a MlaKvCache<'a>),
}

/// A paged op on the tensors' CUDA device (feature `candle-cuda`); without the feature,
/// [`same_device`] never returns [`Target::Cuda`] and this is the `CUDA_UNAVAILABLE` error.
pub(super) fn on_cuda(
    call: PagedCall,
    q: &Tensor,
    o_dims: &[usize],
    lse_dims: &[usize],
) -> candle_core::Result<(Tensor, Tensor)> {
    #[cfg(feature = "candle-cuda")]
    return super::cuda::paged(call, q, o_dims, lse_dims);
    #[cfg(not(feature = "candle-cuda"))]
    {
        let _ = (call, q, o_dims, lse_dims);
        Err(candle_core::Error::Msg(super::CUDA_UNAVAILABLE.into()))
    }
}
