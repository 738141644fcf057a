//! Validation of a [`BwdShape`] (once per plan): everything the forward's validation checks of
//! its shape (heads, sizes, strides of q, k, v, o, options, 32-bit index limits), the gradients'
//! strides, the compiled backward kernel that serves it, and the workspace it needs. Pure:
//! reads descriptions, returns typed errors, launches and writes nothing. Device-resident
//! `cu_seqlens` are checked by the kernels (a violation traps).

use crate::common::build_info::FWD_KERNELS;
use crate::common::dtype::DType;
use crate::common::error::{Error, Limit, Result, TensorName};
use crate::common::geometry::MAX_INDEX_32;
use crate::common::target::KernelTarget;
use crate::ops::backward::kernels::{backward_kernel_for, compiled_head_dims, BwdKernelRow};
use crate::ops::backward::problem::BwdShape;
use crate::ops::forward::validate::{
    require_equal_head_dims, validate_shape as validate_forward, FwdExtents, Geometry,
};

/// Elements each buffer must hold from its base address, for a validated shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BwdExtents {
    /// q, k, v, o; `row_stats`: the forward's LSE (f32); `per_head`: ALiBi slopes, head gates
    /// and their gradient (f32); `cu_seqlens` as in the forward.
    pub fwd: FwdExtents,
    pub d_o: usize,
    pub dq: usize,
    pub dk: usize,
    pub dv: usize,
    /// f32 dQ accumulator, `dq_slices` x `[total_q, hq, head_dim]`, at the start of the
    /// workspace.
    pub dq_accum: usize,
    /// 1 (atomics into one accumulator), or one slice per key block (deterministic mode).
    pub dq_slices: usize,
    /// f32 delta = rowsum(dO * O) in the LSE's layout, after the accumulator.
    pub delta: usize,
    /// Deterministic mode: f32 per-warp d(gate) partials `[hq, gate_partials_per_head]` after
    /// delta (summed in order instead of f32 atomics); 0 otherwise.
    pub gate_partials: usize,
    /// `batch x key blocks x main-kernel warps` in deterministic mode, else 0.
    pub gate_partials_per_head: usize,
    /// f32 elements of the caller's workspace: `dq_accum + delta + gate_partials`.
    pub workspace: usize,
}

/// The compiled backward kernel that serves `shape` of element type `dtype` on `target`, and
/// the extents of its buffers.
pub fn validate_shape(
    target: KernelTarget,
    dtype: DType,
    shape: &BwdShape,
) -> Result<(&'static BwdKernelRow, BwdExtents)> {
    // Hopper runs the Ampere kernels; Turing has no backward kernel (yet).
    target.require_ampere_kernels("the backward")?;
    let s = &shape.fwd;
    require_equal_head_dims(s, target, dtype)?;
    // Everything about the forward's own tensors and options (as the Ampere forward sees them).
    let (_, fwd) = validate_forward(FWD_KERNELS, KernelTarget::Ampere, dtype, s)?;
    let d = s.head_dim;
    let kernel = backward_kernel_for(dtype, d).ok_or_else(|| Error::UnsupportedHeadDim {
        dtype,
        head_dim: d,
        target,
        supported: compiled_head_dims(dtype),
    })?;
    let (tq, _) = s.seq.total_rows();
    let (_, sk) = s.seq.max_seqlens();
    let g = &shape.grads;
    let d_o = Geometry::q_side(s, TensorName::DOut, g.d_o);
    let dq = Geometry::q_side(s, TensorName::DQ, g.dq);
    let dk = Geometry::k_side(s, TensorName::DK, g.dk);
    let dv = Geometry::k_side(s, TensorName::DV, g.dv);
    d_o.check_input(dtype)?;
    for out in [&dq, &dk, &dv] {
        out.check_output(dtype)?;
    }
    for t in [&d_o, &dq, &dk, &dv] {
        t.check_alignment(dtype)?;
    }
    // f32 workspace: dq_accum [total_q, hq, d] then delta [hq, total_q] (the LSE's layout);
    // d is a multiple of 8 (the forward's 16-byte rule), so accumulator rows keep the row
    // kernels' 32-byte accesses aligned.
    let dq_slices = if shape.deterministic {
        sk.div_ceil(kernel.block_n() as usize).max(1)
    } else {
        1
    };
    let dq_accum = tq
        .checked_mul(s.heads.q)
        .and_then(|n| n.checked_mul(d))
        .and_then(|n| n.checked_mul(dq_slices))
        .ok_or(Error::SizeOverflow {
            what: "the backward's dQ accumulator",
        })?;
    let delta = fwd.row_stats;
    // Deterministic d(gate): one slot per (head, batch item, key block, warp) of the main grid
    // (dq_slices is its key-block count there). The kernels index a head's slots in 32 bits.
    let gate_partials_per_head = if shape.deterministic {
        s.seq
            .batch()
            .checked_mul(dq_slices)
            .and_then(|n| n.checked_mul(kernel.num_warps as usize))
            .filter(|&n| n as u64 <= MAX_INDEX_32)
            .ok_or(Error::Overflow32 {
                limit: Limit::Rows32,
                value: (s.seq.batch() as u64)
                    .saturating_mul(dq_slices as u64)
                    .saturating_mul(u64::from(kernel.num_warps)),
                max: MAX_INDEX_32,
            })?
    } else {
        0
    };
    let gate_partials =
        gate_partials_per_head
            .checked_mul(s.heads.q)
            .ok_or(Error::SizeOverflow {
                what: "the backward's d(gate) partials",
            })?;
    let workspace = dq_accum
        .checked_add(delta)
        .and_then(|n| n.checked_add(gate_partials))
        .ok_or(Error::SizeOverflow {
            what: "the backward's workspace",
        })?;
    // The row kernels run one warp per (q row, head) over grid.x: total_q * hq <= 2^31 - 1
    // (the forward bounded the LSE the same way).
    if (tq as u64).saturating_mul(s.heads.q as u64) > MAX_INDEX_32 {
        return Err(Error::Overflow32 {
            limit: Limit::RowStats,
            value: (tq as u64).saturating_mul(s.heads.q as u64),
            max: MAX_INDEX_32,
        });
    }
    Ok((
        kernel,
        BwdExtents {
            fwd,
            d_o: d_o.extent(),
            dq: dq.extent(),
            dk: dk.extent(),
            dv: dv.extent(),
            dq_accum,
            dq_slices,
            delta,
            gate_partials,
            gate_partials_per_head,
            workspace,
        },
    ))
}
