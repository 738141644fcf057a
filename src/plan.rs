//! The launch plan: a pure function from a validated problem and its buffer addresses to the
//! kernel entry, grid, block, dynamic shared memory and the filled params struct. Both backends
//! (cuda and emulator) execute exactly this plan, with the same params bytes.

use crate::abi::{self, FlashFwdParams};
use crate::buffers::FwdBuffers;
use crate::build_info::{FwdKernelRow, FWD_KERNELS};
use crate::error::Result;
use crate::problem::FwdProblem;
use crate::validate::validate_forward_in;

/// Threads per warp (PTX ISA: warp size 32).
pub const WARP_SIZE: u32 = 32;

/// Everything a backend needs to launch one forward kernel.
#[derive(Debug, Clone, Copy)]
pub struct FwdPlan {
    pub kernel: FwdKernelRow,
    /// (Q tiles, query heads, batch items).
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub dynamic_smem_bytes: u32,
    pub params: FlashFwdParams,
}

/// Validates `problem` and plans its launch with the compiled kernels.
pub fn plan_forward(problem: &FwdProblem, bufs: &FwdBuffers) -> Result<FwdPlan> {
    plan_forward_in(FWD_KERNELS, problem, bufs)
}

/// [`plan_forward`] against an explicit kernel table.
pub fn plan_forward_in(
    table: &[FwdKernelRow],
    problem: &FwdProblem,
    bufs: &FwdBuffers,
) -> Result<FwdPlan> {
    let kernel = *validate_forward_in(table, problem, bufs)?;
    let p = problem;
    let (max_sq, max_sk) = p.layout.max_seqlens();
    let q_tiles = max_sq.div_ceil(kernel.block_m as usize).max(1) as u32;
    let scale = p.options.scale_for(p.head_dim);
    let (left, right) = p.options.window.map_or((None, None), |w| (w.left, w.right));
    let mut flags = 0u32;
    if p.options.causal {
        flags |= abi::FLASHMHA_FLAG_CAUSAL;
    }
    if p.options.window.is_some() {
        flags |= abi::FLASHMHA_FLAG_WINDOW;
    }
    if p.layout.is_varlen() {
        flags |= abi::FLASHMHA_FLAG_VARLEN;
    }
    let (total_q, total_k) = p.layout.total_rows();
    // lse / entropy: [b, hq, sq] padded, [hq, total_q] varlen (row stride 1).
    let (lse_batch_stride, lse_head_stride) = if p.layout.is_varlen() {
        (0, total_q as i64)
    } else {
        ((p.num_heads_q * max_sq) as i64, max_sq as i64)
    };
    let unbounded = |w: Option<u32>| w.map_or(-1, |v| v as i32);
    let params = FlashFwdParams {
        q: bufs.q as *const _,
        k: bufs.k as *const _,
        v: bufs.v as *const _,
        o: bufs.o as *mut _,
        lse: bufs.lse as *mut f32,
        entropy: bufs.entropy as *mut f32,
        alibi_slopes: bufs.alibi_slopes as *const f32,
        head_gates: bufs.head_gates as *const f32,
        cu_seqlens_q: bufs.cu_seqlens_q as *const i32,
        cu_seqlens_k: bufs.cu_seqlens_k as *const i32,
        q_batch_stride: p.q.strides.batch,
        q_row_stride: p.q.strides.row,
        q_head_stride: p.q.strides.head,
        k_batch_stride: p.k.strides.batch,
        k_row_stride: p.k.strides.row,
        k_head_stride: p.k.strides.head,
        v_batch_stride: p.v.strides.batch,
        v_row_stride: p.v.strides.row,
        v_head_stride: p.v.strides.head,
        o_batch_stride: p.o.strides.batch,
        o_row_stride: p.o.strides.row,
        o_head_stride: p.o.strides.head,
        lse_batch_stride,
        lse_head_stride,
        batch: p.layout.batch() as i32,
        num_heads_q: p.num_heads_q as i32,
        num_heads_kv: p.num_heads_kv as i32,
        head_dim: p.head_dim as i32,
        seqlen_q: max_sq as i32,
        seqlen_k: max_sk as i32,
        total_q: total_q as i32,
        total_k: total_k as i32,
        scale,
        scale_log2: scale * std::f32::consts::LOG2_E,
        softcap: p.options.softcap.unwrap_or(0.0),
        window_left: unbounded(left),
        window_right: unbounded(right),
        flags,
    };
    Ok(FwdPlan {
        kernel,
        grid: [q_tiles, p.num_heads_q as u32, p.layout.batch() as u32],
        block: [kernel.num_warps * WARP_SIZE, 1, 1],
        dynamic_smem_bytes: kernel.smem_bytes,
        params,
    })
}

#[cfg(test)]
mod tests;
