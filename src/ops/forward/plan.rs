//! The launch plan: a pure function from a validated [`FwdShape`] to the kernel entry, grid,
//! block, dynamic shared memory and the params struct without addresses. A server makes one plan
//! per batch shape and binds new buffers to it for every layer ([`FwdPlan::bind`], O(1) checks,
//! no allocation). Both backends (cuda and emulator) execute exactly what `bind` returns, with the
//! same params bytes.

use super::tma::{FwdParamsAbi, FwdTmaMaps, TmaMapDesc};
use crate::common::abi::{self, FlashFwdParams};
use crate::common::build_info::{FwdKernelRow, FWD_KERNELS};
use crate::common::dtype::DType;
use crate::common::error::{Result, TensorName};
use crate::common::launch::Launch;
use crate::common::target::KernelTarget;
use crate::ops::forward::bind::{check_bufs, FwdBufs};
use crate::ops::forward::problem::FwdShape;
use crate::ops::forward::tile::{self, TileChoice};
use crate::ops::forward::validate::{validate_shape, FwdExtents};

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

impl FwdLaunch {
    /// The op-agnostic launch (entry, geometry, params bytes). For the sm_90a kernels the Q / K
    /// / V tensor maps are encoded over the bound addresses by `encode` (the backend's encoder:
    /// the driver's on a GPU, the emulator's in the emulator); other kernels ignore it.
    pub fn to_launch(
        &self,
        encode: impl FnMut(TensorName, &TmaMapDesc, u64) -> Result<[u8; abi::TENSOR_MAP_BYTES]>,
    ) -> Result<Launch> {
        let geometry = Launch::geometry(
            self.kernel.entry,
            self.grid,
            self.block,
            self.dynamic_smem_bytes,
        );
        Ok(match &self.abi {
            FwdParamsAbi::Fwd => geometry.with_params(&self.params),
            FwdParamsAbi::FwdTma(maps) => geometry.with_params(&maps.params(&self.params, encode)?),
        })
    }
}

/// A validated forward plan for elements of `dtype`: everything but the buffers. Pure data,
/// `Send + Sync`, cheap to copy; cache it per batch shape. The element type is checked where
/// typed buffers are bound ([`crate::api::Attention::run`]), as for every other op's plan.
#[derive(Debug, Clone, Copy)]
pub struct FwdPlan {
    dtype: DType,
    /// Params with every pointer null; `bind` fills them.
    launch: FwdLaunch,
    extents: FwdExtents,
}

// SAFETY: the only non-Send/Sync fields are the raw pointers inside the params template, which
// are always null in a plan (addresses enter only through `bind`, which returns a copy); a plan
// owns and references no memory.
unsafe impl Send for FwdPlan {}
// SAFETY: as above; a plan is never mutated after construction.
unsafe impl Sync for FwdPlan {}

impl FwdPlan {
    /// Validates `shape` for `dtype` and plans it with the compiled Ampere-and-newer (sm_80+)
    /// kernels.
    pub fn new(dtype: DType, shape: &FwdShape) -> Result<FwdPlan> {
        Self::new_for(KernelTarget::Ampere, dtype, shape)
    }

    /// Validates `shape` for `dtype` and plans it with the kernels of `target` (e.g.
    /// [`CudaBackend::target`](crate::cuda::CudaBackend::target) of the device it will run on).
    pub fn new_for(target: KernelTarget, dtype: DType, shape: &FwdShape) -> Result<FwdPlan> {
        Self::new_in(FWD_KERNELS, target, dtype, shape)
    }

    /// [`FwdPlan::new_for`] with the tile `tile` picks among the head dim's compiled rows
    /// (e.g. [`TileChoice::ForSm`] with the device's compute capability: the tile that fits
    /// most warps on its SMs; src/ops/forward/tile.rs).
    pub fn new_tiled(
        target: KernelTarget,
        tile: TileChoice,
        dtype: DType,
        shape: &FwdShape,
    ) -> Result<FwdPlan> {
        Self::new_in_tiled(FWD_KERNELS, target, tile, dtype, shape)
    }

    /// [`FwdPlan::new_for`] against an explicit kernel table (unit tests use synthetic tables).
    pub fn new_in(
        table: &[FwdKernelRow],
        target: KernelTarget,
        dtype: DType,
        shape: &FwdShape,
    ) -> Result<FwdPlan> {
        Self::new_in_tiled(table, target, TileChoice::Primary, dtype, shape)
    }

    /// [`FwdPlan::new_tiled`] against an explicit kernel table.
    pub fn new_in_tiled(
        table: &[FwdKernelRow],
        target: KernelTarget,
        tile: TileChoice,
        dtype: DType,
        shape: &FwdShape,
    ) -> Result<FwdPlan> {
        let (primary, extents) = validate_shape(table, target, dtype, shape)?;
        let kernel = tile::choose(table, primary, tile, tile::registers_on)?;
        Ok(FwdPlan {
            dtype,
            launch: launch_without_buffers(*kernel, shape),
            extents,
        })
    }

    /// The element type of q, k, v and o.
    pub fn dtype(&self) -> DType {
        self.dtype
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
        check_bufs(&self.extents, self.dtype.size(), bufs)?;
        let mut l = self.launch;
        fill_addrs(&mut l.params, bufs);
        Ok(l)
    }
}

/// Writes the addresses of checked `bufs` into `p` (the forward's params, also the JVP's
/// `base`); absent buffers give null pointers.
pub(crate) fn fill_addrs(p: &mut FlashFwdParams, bufs: &FwdBufs) {
    p.q = bufs.q.addr as *const _;
    p.k = bufs.k.addr as *const _;
    p.v = bufs.v.addr as *const _;
    p.o = bufs.o.addr as *mut _;
    p.opt.lse = bufs.lse.addr as *mut f32;
    p.opt.entropy = bufs.entropy.addr as *mut f32;
    p.opt.alibi_slopes = bufs.alibi_slopes.addr as *const f32;
    p.opt.head_gates = bufs.head_gates.addr as *const f32;
    p.opt.sinks = bufs.sinks.addr as *const f32;
    p.cu_seqlens_q = bufs.cu_seqlens_q.addr as *const i32;
    p.cu_seqlens_k = bufs.cu_seqlens_k.addr as *const i32;
}

/// A params struct (`FlashFwdParams`, `FlashBwdParams`: bindgen structs from kernels/params.h
/// that share these field names) with the q, k, v, o strides, packed options and sizes of the
/// validated forward shape `s` (`&FwdShape`), then the `extra` fields; every pointer null.
/// Validation bounded every size by 2^31 - 1, so the `as i32` casts are exact.
macro_rules! attn_params {
    ($ty:ident, $s:expr, { $($field:ident: $value:expr),* $(,)? }) => {{
        let s: &$crate::ops::forward::problem::FwdShape = $s;
        let (max_sq, max_sk) = s.seq.max_seqlens();
        let (total_q, total_k) = s.seq.total_rows();
        // lse / entropy: [b, hq, sq] padded, [hq, total_q] varlen (row stride 1).
        let rows = $crate::common::options_abi::StatRows {
            varlen: s.seq.is_varlen(),
            heads_q: s.heads.q,
            seqlen_q: max_sq,
            total_q,
        };
        let st = &s.strides;
        $ty {
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
            opt: $crate::common::options_abi::pack_attn_options(&s.options, s.head_dim, rows),
            batch: s.seq.batch() as i32,
            num_heads_q: s.heads.q as i32,
            num_heads_kv: s.heads.kv as i32,
            head_dim: s.head_dim as i32,
            seqlen_q: max_sq as i32,
            seqlen_k: max_sk as i32,
            total_q: total_q as i32,
            total_k: total_k as i32,
            $($field: $value,)*
            // Addresses are bound per run.
            ..Default::default()
        }
    }};
}
pub(crate) use attn_params;

fn launch_without_buffers(kernel: FwdKernelRow, s: &FwdShape) -> FwdLaunch {
    let (max_sq, _) = s.seq.max_seqlens();
    let q_tiles = max_sq.div_ceil(kernel.block_m as usize).max(1) as u32;
    let params = attn_params!(FlashFwdParams, s, {});
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

/// The plan of a host problem (its dtype and shape) for `target` against a test kernel table.
#[cfg(test)]
fn plan_in(
    table: &[FwdKernelRow],
    target: KernelTarget,
    p: &crate::host::problem::FwdProblem,
) -> Result<FwdPlan> {
    FwdPlan::new_in(table, target, p.dtype, &p.shape()?)
}

#[cfg(test)]
#[path = "hopper_tests.rs"]
mod hopper_tests;
#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
