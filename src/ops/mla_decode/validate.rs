//! Validation of an MLA decode problem: target, dtype and page type (16-bit or FP8), heads, page geometry,
//! host-side bounds, strides and options, through the paged decode's helpers
//! (src/ops/decode/validate.rs) on the problem's decode view, with 576 dims for q and the pool
//! and 512 for o. Pure: reads the description, returns a typed [`Error`].

use super::kernels::{MlaKernelRow, MLA_DECODE_KERNELS};
use super::problem::{MlaDecodeProblem, MLA_D_QK, MLA_D_V};
use crate::common::error::{Dim, Error, Limit, Result, TensorName};
use crate::common::geometry::{check_no_overlap, check_span, MAX_GRID_YZ};
use crate::common::target::KernelTarget;
use crate::ops::decode::validate::{dim_in, fits, lengths, page_strides, pool_spans, row_strides};

/// The compiled kernel of `target` serving `p`, after checking everything about `p`. The MLA
/// kernels are `mma.sync` (sm_80+; Hopper runs them too); Turing is a typed error.
pub fn validate_mla_decode_for(
    target: KernelTarget,
    p: &MlaDecodeProblem,
) -> Result<&'static MlaKernelRow> {
    let target = target.shared_kernels();
    target.require_ampere_kernels(
        "MLA decode (the kernel is mma.m16n8k16 with cp.async: sm_80 and newer)",
    )?;
    let kv_bytes = p.kv_dtype.element_bytes() as u32;
    let kernel = MLA_DECODE_KERNELS
        .iter()
        .find(|r| r.dtype == p.dtype && r.kv_bytes == kv_bytes)
        .ok_or(Error::UnsupportedDType {
            dtype: p.dtype,
            target,
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
