//! The launch plan: a pure function from a validated [`FwdShape`] to the kernel entry, grid,
//! block, dynamic shared memory and the params struct without addresses. A server makes one plan
//! per batch shape and binds new buffers to it for every layer ([`FwdPlan::bind`], O(1) checks,
//! no allocation). Both backends (cuda and emulator) execute exactly what `bind` returns, with the
//! same params bytes.

pub mod head_similarity;
pub(crate) mod options;
pub mod tma;

use crate::abi::FlashFwdParams;
use crate::build_info::{FwdKernelRow, FWD_KERNELS};
use crate::element::Element;
use crate::error::Result;
use crate::shape::FwdShape;
use crate::target::KernelTarget;
use crate::validate::binding::{check_bufs, FwdBufs};
use crate::validate::{validate_shape, FwdExtents};
use std::marker::PhantomData;
pub use tma::{FwdParamsAbi, FwdTmaMaps, TmaMapDesc};

/// Threads per warp (PTX ISA: warp size 32).
pub const WARP_SIZE: u32 = 32;

/// One launch, ready for a backend: entry, geometry and the filled params.
#[derive(Debug, Clone, Copy)]
pub struct FwdLaunch {
    pub kernel: FwdKernelRow,
    /// (Q tiles, query heads, batch items).
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub dynamic_smem_bytes: u32,
    pub params: FlashFwdParams,
    /// The params struct the kernel takes; for the sm_90a kernels, the tensor maps to encode
    /// over the bound q / k / v addresses (in `params`) before the launch.
    pub abi: FwdParamsAbi,
}

/// A validated forward plan for elements of type `T`: everything but the buffers. Pure data,
/// `Send + Sync`, cheap to copy; cache it per batch shape.
#[derive(Debug, Clone, Copy)]
pub struct FwdPlan<T> {
    /// Params with every pointer null; `bind` fills them.
    launch: FwdLaunch,
    extents: FwdExtents,
    _elem: PhantomData<fn() -> T>,
}

// SAFETY: the only non-Send/Sync fields are the raw pointers inside the params template, which
// are always null in a plan (addresses enter only through `bind`, which returns a copy); a plan
// owns and references no memory.
unsafe impl<T> Send for FwdPlan<T> {}
// SAFETY: as above; a plan is never mutated after construction.
unsafe impl<T> Sync for FwdPlan<T> {}

impl<T: Element> FwdPlan<T> {
    /// Validates `shape` and plans it with the compiled Ampere-and-newer (sm_80+) kernels.
    pub fn new(shape: &FwdShape) -> Result<FwdPlan<T>> {
        Self::new_for(KernelTarget::Ampere, shape)
    }

    /// Validates `shape` and plans it with the kernels of `target` (e.g.
    /// [`CudaBackend::target`](crate::cuda::CudaBackend::target) of the device it will run on).
    pub fn new_for(target: KernelTarget, shape: &FwdShape) -> Result<FwdPlan<T>> {
        Self::new_in(FWD_KERNELS, target, shape)
    }

    /// [`FwdPlan::new_for`] against an explicit kernel table (unit tests use synthetic tables).
    pub fn new_in(
        table: &[FwdKernelRow],
        target: KernelTarget,
        shape: &FwdShape,
    ) -> Result<FwdPlan<T>> {
        let (kernel, extents) = validate_shape(table, target, T::DTYPE, shape)?;
        Ok(FwdPlan {
            launch: launch_without_buffers(*kernel, shape),
            extents,
            _elem: PhantomData,
        })
    }

    /// The kernel, grid, block and shared memory this plan launches (params without addresses).
    pub fn launch(&self) -> &FwdLaunch {
        &self.launch
    }

    /// Elements each buffer must hold.
    pub fn extents(&self) -> &FwdExtents {
        &self.extents
    }

    /// Checks `bufs` against the plan (O(1): lengths, alignment, aliasing, presence) and returns
    /// the launch with their addresses filled in.
    pub fn bind(&self, bufs: &FwdBufs) -> Result<FwdLaunch> {
        check_bufs(&self.extents, std::mem::size_of::<T>(), bufs)?;
        let mut l = self.launch;
        let p = &mut l.params;
        let addr = |b: Option<crate::validate::binding::DevBuf>| b.map_or(0, |b| b.addr);
        p.q = bufs.q.addr as *const _;
        p.k = bufs.k.addr as *const _;
        p.v = bufs.v.addr as *const _;
        p.o = bufs.o.addr as *mut _;
        p.opt.lse = addr(bufs.lse) as *mut f32;
        p.opt.entropy = addr(bufs.entropy) as *mut f32;
        p.opt.alibi_slopes = addr(bufs.alibi_slopes) as *const f32;
        p.opt.head_gates = addr(bufs.head_gates) as *const f32;
        p.cu_seqlens_q = addr(bufs.cu_seqlens.map(|c| c.0)) as *const i32;
        p.cu_seqlens_k = addr(bufs.cu_seqlens.map(|c| c.1)) as *const i32;
        Ok(l)
    }
}

fn launch_without_buffers(kernel: FwdKernelRow, s: &FwdShape) -> FwdLaunch {
    let (max_sq, max_sk) = s.seq.max_seqlens();
    let q_tiles = max_sq.div_ceil(kernel.block_m as usize).max(1) as u32;
    let (total_q, total_k) = s.seq.total_rows();
    // lse / entropy: [b, hq, sq] padded, [hq, total_q] varlen (row stride 1).
    let rows = options::StatRows {
        varlen: s.seq.is_varlen(),
        heads_q: s.heads.q,
        seqlen_q: max_sq,
        total_q,
    };
    let st = &s.strides;
    let params = FlashFwdParams {
        q_batch_stride: st.q.batch,
        q_row_stride: st.q.row,
        q_head_stride: st.q.head,
        k_batch_stride: st.k.batch,
        k_row_stride: st.k.row,
        k_head_stride: st.k.head,
        v_batch_stride: st.v.batch,
        v_row_stride: st.v.row,
        v_head_stride: st.v.head,
        o_batch_stride: st.o.batch,
        o_row_stride: st.o.row,
        o_head_stride: st.o.head,
        opt: options::pack_attn_options(&s.options, s.head_dim, rows),
        batch: s.seq.batch() as i32,
        num_heads_q: s.heads.q as i32,
        num_heads_kv: s.heads.kv as i32,
        head_dim: s.head_dim as i32,
        seqlen_q: max_sq as i32,
        seqlen_k: max_sk as i32,
        total_q: total_q as i32,
        total_k: total_k as i32,
        // Addresses are bound per run.
        ..Default::default()
    };
    FwdLaunch {
        kernel,
        grid: [q_tiles, s.heads.q as u32, s.seq.batch() as u32],
        block: [kernel.num_warps * WARP_SIZE, 1, 1],
        dynamic_smem_bytes: kernel.smem_bytes,
        params,
        abi: if kernel.takes_tma_params() {
            FwdParamsAbi::FwdTma(FwdTmaMaps::describe(s, kernel.block_m, kernel.block_n))
        } else {
            FwdParamsAbi::Fwd
        },
    }
}

#[cfg(test)]
mod hopper_tests;
#[cfg(test)]
mod tests;
