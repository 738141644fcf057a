//! The candle op of the MLA decode (DeepSeek-V2/V3 absorbed attention): [`mla_decode_attention`]
//! returns O and the LSE of new query tokens of `hq` heads attending to ONE shared latent KV
//! head in a page pool (each cached row the key of 576 dims, its first 512 the value). CPU
//! tensors run the MLA kernel's PTX on the emulator; CUDA tensors (feature `candle-cuda`) run it
//! on the GPU through the same [`MlaDecodePlan`].
//!
//! Reads the given tensors, returns new ones; touches nothing else.

use super::paged::{batch_rows, host_inputs, on_cuda, run_outputs, PagedCall, EMULATED_SMS};
use super::{dims, dtype_shared_by, from_bits, wrap, Target};
use crate::common::error::{Dim, Error, TensorName};
use crate::common::options::AttnOptions;
use crate::host::emulated_decode as emulated;
use crate::ops::decode::SplitPolicy;
use crate::ops::mla_decode::{MlaDecodePlan, MlaDecodeProblem, MLA_D_QK, MLA_D_V};
use crate::KernelTarget;
use candle_core::{Device, Tensor};

/// A paged latent cache of one MLA layer as candle tensors.
#[derive(Debug, Clone, Copy)]
pub struct MlaKvCache<'a> {
    /// Latent pages `[num_pages, page_size, 576]` (q's dtype, contiguous): each row is a key
    /// (512 latent + 64 rope dims) and its first 512 dims the value.
    pub kv: &'a Tensor,
    /// `[b, max_pages_per_seq]` integer: page of each sequence's `j`-th block of keys.
    pub block_table: &'a Tensor,
    /// `[b]` integer: keys of each sequence, the new tokens' included.
    pub cache_seqlens: &'a Tensor,
    /// Host-side bound of every `cache_seqlens` entry (sizes the split heuristic); `None` means
    /// `max_pages_per_seq * page_size`.
    pub max_cache_len: Option<usize>,
}

/// MLA decode of `q: [b, sq_new, hq, 576]` (f16 or bf16) over the latent cache: row `i` of
/// sequence `s` sees key `j < cache_seqlens[s]`, with causal masks aligned to the end of the
/// cache. Returns `o: [b, sq_new, hq, 512]` and `lse: [b, hq, sq_new]` (f32, natural log). The
/// default softmax scale is 1 / sqrt(576). Device-resident indices are checked by the kernel,
/// which traps (an error, never an out-of-bounds access).
pub fn mla_decode_attention(
    q: &Tensor,
    cache: &MlaKvCache,
    opts: &AttnOptions,
) -> candle_core::Result<(Tensor, Tensor)> {
    let dtype = dtype_shared_by(q, [(TensorName::KCache, cache.kv)])?;
    let [batch, sq_new, hq, d] = dims::<4>(TensorName::Q, q)?;
    let [num_pages, page_size, kd] = dims::<3>(TensorName::KCache, cache.kv)?;
    for (tensor, found) in [(TensorName::Q, d), (TensorName::KCache, kd)] {
        if found != MLA_D_QK {
            return Err(wrap(Error::DimMismatch {
                tensor,
                dim: Dim::HeadDim,
                expected: MLA_D_QK,
                found,
            }));
        }
    }
    let max_pages_per_seq = batch_rows(batch, cache.block_table, cache.cache_seqlens)?;
    let mut problem = MlaDecodeProblem::contiguous(
        dtype,
        batch,
        sq_new,
        hq,
        num_pages,
        page_size,
        max_pages_per_seq,
    );
    problem.options = *opts;
    problem.lse = true;
    if let Some(max) = cache.max_cache_len {
        problem.max_cache_len = max;
    }
    let o_dims = [batch, sq_new, hq, MLA_D_V];
    let lse_dims = [batch, hq, sq_new];
    match super::same_device(q, cache.kv, cache.kv)? {
        Target::Emulator => {
            let plan = MlaDecodePlan::new_for(
                KernelTarget::Ampere,
                &problem,
                SplitPolicy::Auto {
                    num_sms: EMULATED_SMS,
                },
            )
            .map_err(wrap)?;
            // The runner uploads a V pool the MLA kernel does not read (its decode view has
            // one): the latent pool again.
            let inputs = host_inputs(
                q,
                (cache.kv, cache.kv),
                cache.block_table,
                cache.cache_seqlens,
            )?;
            let (o, lse) = run_outputs(emulated::mla_decode(&plan, &inputs))?;
            Ok((
                from_bits(o, dtype, &o_dims)?,
                Tensor::from_vec(lse, &lse_dims, &Device::Cpu)?,
            ))
        }
        Target::Cuda => on_cuda(PagedCall::Mla(&problem, cache), q, &o_dims, &lse_dims),
    }
}
