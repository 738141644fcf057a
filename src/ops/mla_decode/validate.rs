//! Validation of an MLA decode problem and the choice of its kernel: target, dtype and page type
//! (16-bit or FP8), heads, page geometry,
//! host-side bounds, strides and options, through the paged decode's helpers
//! (src/ops/decode/validate.rs) on the problem's decode view, with 576 dims for q and the pool
//! and 512 for o. Pure: reads the description, returns a typed [`Error`].

use super::kernels::{MlaKernelRow, MLA_DECODE_KERNELS};
use super::problem::{MlaDecodeProblem, MLA_D_QK, MLA_D_V};
use super::tma::describe_pool;
use crate::common::error::{Dim, Error, Limit, Result, TensorName};
use crate::common::geometry::{check_no_overlap, check_span, MAX_GRID_YZ};
use crate::common::target::KernelTarget;
use crate::ops::decode::validate::{dim_in, fits, lengths, page_strides, pool_spans, row_strides};

/// The compiled kernel of `target` serving `p`, after checking everything about `p`: on Hopper
/// the sm_90a `wgmma` kernel when the latent pool is a TMA map it can read
/// ([`describe_pool`]: 16-bit pages, page size a multiple of 64), else the sm_80+ `mma.sync`
/// kernel (which Hopper runs too: FP8 pages and other page sizes); Turing is a typed error.
pub fn validate_mla_decode_for(
    target: KernelTarget,
    p: &MlaDecodeProblem,
) -> Result<&'static MlaKernelRow> {
    target.require_ampere_kernels(
        "MLA decode (the kernel is mma.m16n8k16 with cp.async: sm_80 and newer)",
    )?;
    let kv_bytes = p.kv_dtype.element_bytes() as u32;
    let sm90 = target == KernelTarget::Hopper && describe_pool(p).is_some();
    let kernel = MLA_DECODE_KERNELS
        .iter()
        .find(|r| r.dtype == p.dtype && r.kv_bytes == kv_bytes && r.sm90 == sm90)
        .ok_or(Error::UnsupportedDType {
            dtype: p.dtype,
            target: target.shared_kernels(),
        })?;
    dim_in(TensorName::Q, Dim::Heads, i32::MAX as u64, p.num_heads_q)?;
    dim_in(TensorName::Q, Dim::Batch, MAX_GRID_YZ, p.batch)?;
    let d = p.as_decode();
    let padded = lengths(&d)?;
    let rows = (p.num_heads_q as u64).saturating_mul(d.max_seqlen_q() as u64);
    fits(
        Limit::GridYz,
        MAX_GRID_YZ,
        rows.div_ceil(u64::from(kernel.tile_rows)),
    )?;
    row_strides(TensorName::Q, &p.q_strides, padded)?;
    row_strides(TensorName::O, &p.o_strides, padded)?;
    page_strides(TensorName::KCache, &p.cache_strides, d.kv_element_bytes())?;
    let e = p.dtype.size();
    check_span(&d.q_dims(&p.q_strides), MLA_D_QK, e)?;
    check_span(&d.q_dims(&p.o_strides), MLA_D_V, e)?;
    pool_spans(&d)?;
    check_no_overlap(TensorName::O, d.q_dims(&p.o_strides), MLA_D_V)?;
    p.options.validate()?;
    Ok(kernel)
}
