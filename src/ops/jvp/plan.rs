//! The JVP plan: a pure function from a validated [`JvpShape`] to its one launch without
//! addresses; per run [`JvpPlan::bind`] checks the buffers (O(1), the one binding checker, over
//! the forward's table plus the tangents) and fills them in. The params embed the forward's
//! (`FlashJvpParams.base`), filled by the forward's own plan: one struct fill for both.

use crate::common::abi::{FlashJvpParams, ParamsBytes};
use crate::common::binding::{check, BufSpec, DevBuf, Use};
use crate::common::dtype::DType;
use crate::common::error::{Result, TensorName};
use crate::common::geometry::COPY_ALIGN_BYTES;
use crate::common::launch::Launch;
use crate::common::target::KernelTarget;
use crate::ops::forward::bind::{specs as fwd_specs, FwdBufs};
use crate::ops::forward::plan::{fill_addrs, FwdPlan, WARP_SIZE};
use crate::ops::forward::validate::FwdExtents;
use crate::ops::jvp::kernels::{JvpKernelRow, JVP_BLOCK_M, JVP_WARPS};
use crate::ops::jvp::problem::JvpShape;
use crate::ops::jvp::validate::validate_shape;

// SAFETY: #[repr(C)] plain-old-data (pointers and numbers), received by value by the kernel.
unsafe impl cudarc::driver::DeviceRepr for FlashJvpParams {}
// SAFETY: the forward's params (no padding, 8-byte multiple: tested in common/abi.rs) then four
// pointers: no padding (tested below).
unsafe impl ParamsBytes for FlashJvpParams {}

/// The buffers of one JVP run (absent ones are [`DevBuf::ABSENT`]). `fwd.lse` and
/// `fwd.entropy` must be absent (the JVP writes no row statistics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JvpBufs {
    /// The primals, the output o, and the forward's optional inputs (ALiBi slopes, head gates,
    /// sinks, cu_seqlens).
    pub fwd: FwdBufs,
    /// Element type of the plan: the tangents of q, k, v (laid out like them).
    pub dq: DevBuf,
    pub dk: DevBuf,
    pub dv: DevBuf,
    /// Element type of the plan: O' (written; laid out like o).
    pub o_tangent: DevBuf,
}

/// A validated JVP plan for elements of `dtype`. Pure data, `Send + Sync`, cheap to copy.
#[derive(Debug, Clone, Copy)]
pub struct JvpPlan {
    dtype: DType,
    kernel: &'static JvpKernelRow,
    extents: FwdExtents,
    /// Params with every pointer null; `bind` fills them.
    params: FlashJvpParams,
    grid: [u32; 3],
}

// SAFETY: the only non-Send/Sync fields are the raw pointers of the params template, which are
// always null in a plan (addresses enter only through `bind`, which returns copies).
unsafe impl Send for JvpPlan {}
// SAFETY: as above; a plan is never mutated after construction.
unsafe impl Sync for JvpPlan {}

impl JvpPlan {
    /// Validates `shape` for `dtype` and plans it with the Ampere-and-newer kernels.
    pub fn new(dtype: DType, shape: &JvpShape) -> Result<JvpPlan> {
        Self::new_for(KernelTarget::Ampere, dtype, shape)
    }

    /// Validates `shape` for `dtype` and plans it for the kernels of `target` (Hopper runs the
    /// Ampere ones; Turing has none: [`crate::Error::UnsupportedOnTarget`]).
    pub fn new_for(target: KernelTarget, dtype: DType, shape: &JvpShape) -> Result<JvpPlan> {
        let (kernel, extents) = validate_shape(target, dtype, shape)?;
        // The forward's params template (its validation already passed above).
        let fwd = FwdPlan::new_for(KernelTarget::Ampere, dtype, &shape.fwd)?;
        let params = FlashJvpParams {
            base: fwd.launch().params,
            ..Default::default()
        };
        let s = &shape.fwd;
        let (max_sq, _) = s.seq.max_seqlens();
        let q_tiles = (max_sq as u64).div_ceil(u64::from(JVP_BLOCK_M)).max(1);
        Ok(JvpPlan {
            dtype,
            kernel,
            extents,
            params,
            // Validation bounded rows, heads and batch by 2^31 - 1.
            grid: [q_tiles as u32, s.heads.q as u32, s.seq.batch() as u32],
        })
    }

    /// The element type of every tensor of the run.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The kernel this plan launches.
    pub fn kernel(&self) -> &'static JvpKernelRow {
        self.kernel
    }

    /// Elements each buffer must hold (a tangent as its primal, O' as o).
    pub fn extents(&self) -> &FwdExtents {
        &self.extents
    }

    /// The binding table of `b`: the forward's, then the tangents (fixed array: no allocation).
    pub fn specs(&self, b: &JvpBufs) -> [BufSpec; 15] {
        use TensorName as T;
        let x = &self.extents;
        let (e, a) = (self.dtype.size() as u64, COPY_ALIGN_BYTES as u64);
        let n = |v: usize| v as u64;
        let [f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10] = fwd_specs(x, self.dtype.size(), &b.fwd);
        [
            BufSpec::input(T::OTangent, b.o_tangent, Use::Required, n(x.o), e, a).written(),
            BufSpec::input(T::DQ, b.dq, Use::Required, n(x.q), e, a),
            BufSpec::input(T::DK, b.dk, Use::Required, n(x.k), e, a),
            BufSpec::input(T::DV, b.dv, Use::Required, n(x.v), e, a),
            f0,
            // The JVP writes no row statistics.
            BufSpec {
                usage: Use::Forbidden,
                ..f1
            },
            BufSpec {
                usage: Use::Forbidden,
                ..f2
            },
            f3,
            f4,
            f5,
            f6,
            f7,
            f8,
            f9,
            f10,
        ]
    }

    /// Checks `bufs` against the plan (O(1): presence, extent, alignment, no output overlapping
    /// another buffer) and returns the launch.
    pub fn bind(&self, bufs: &JvpBufs) -> Result<Launch> {
        check(&self.specs(bufs))?;
        let mut p = self.params;
        // lse and entropy were checked absent: their pointers stay null.
        fill_addrs(&mut p.base, &bufs.fwd);
        p.dq = bufs.dq.addr as *const _;
        p.dk = bufs.dk.addr as *const _;
        p.dv = bufs.dv.addr as *const _;
        p.o_tangent = bufs.o_tangent.addr as *mut _;
        let k = self.kernel;
        Ok(Launch::geometry(
            k.entry,
            self.grid,
            [JVP_WARPS * WARP_SIZE, 1, 1],
            k.smem_bytes,
        )
        .with_params(&p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::abi::FlashFwdParams;
    use crate::common::error::Error;
    use crate::ops::forward::problem::{FwdShape, Heads, SeqShape};
    use proptest::prelude::*;

    #[test]
    fn jvp_abi_has_no_padding() {
        assert_eq!(
            std::mem::size_of::<FlashJvpParams>(),
            std::mem::size_of::<FlashFwdParams>() + 4 * 8
        );
    }

    /// Far-apart fake device addresses, 16-byte aligned.
    fn bufs(plan: &JvpPlan) -> JvpBufs {
        let x = plan.extents();
        let at = |i: u64, len: usize| DevBuf::new((i + 1) << 40, len);
        JvpBufs {
            fwd: FwdBufs {
                q: at(0, x.q),
                k: at(1, x.k),
                v: at(2, x.v),
                o: at(3, x.o),
                ..Default::default()
            },
            dq: at(4, x.q),
            dk: at(5, x.k),
            dv: at(6, x.v),
            o_tangent: at(7, x.o),
        }
    }

    #[test]
    fn plans_one_launch_over_the_forward_params() {
        // b 2, sq 70, sk 100, GQA 6 / 2, d 56 (runs on the d64 kernel).
        let fwd = FwdShape::padded(2, 70, 100, Heads::gqa(6, 2), 56);
        let plan = JvpPlan::new(DType::Bf16, &JvpShape::new(fwd)).unwrap();
        assert_eq!(plan.kernel().entry, "flashmha_jvp_bf16_d64");
        let b = bufs(&plan);
        let l = plan.bind(&b).unwrap();
        assert_eq!(l.grid, [2, 6, 2]); // ceil(70 / 64) row tiles, query heads, batch
        assert_eq!(l.block, [128, 1, 1]);
        assert_eq!(l.dynamic_smem_bytes, plan.kernel().smem_bytes);
        // The base is the forward's params with the same addresses.
        let fwd_plan = FwdPlan::new(DType::Bf16, &fwd).unwrap();
        let fl = fwd_plan.bind(&b.fwd).unwrap();
        let n = std::mem::size_of::<FlashFwdParams>();
        assert_eq!(&l.params()[..n], fl.params.as_bytes());
        let tail = &l.params()[n..];
        for (i, t) in [b.dq, b.dk, b.dv, b.o_tangent].iter().enumerate() {
            let word = u64::from_le_bytes(tail[8 * i..8 * i + 8].try_into().unwrap());
            assert_eq!(word, t.addr);
        }
    }

    #[test]
    fn refuses_what_it_cannot_run_and_bad_buffers() {
        let ok = JvpShape::new(FwdShape::padded(1, 8, 8, Heads::mha(2), 64));
        assert!(matches!(
            JvpPlan::new_for(KernelTarget::Turing, DType::F16, &ok),
            Err(Error::UnsupportedOnTarget { .. })
        ));
        assert!(JvpPlan::new_for(KernelTarget::Hopper, DType::F16, &ok).is_ok());
        let d256 = JvpShape::new(FwdShape::padded(1, 8, 8, Heads::mha(2), 256));
        assert!(matches!(
            JvpPlan::new(DType::F16, &d256),
            Err(Error::UnsupportedHeadDim { head_dim: 256, .. })
        ));
        let plan = JvpPlan::new(DType::F16, &ok).unwrap();
        let b = bufs(&plan);
        assert!(plan.bind(&b).is_ok());
        let short = JvpBufs {
            dk: DevBuf::new(b.dk.addr, plan.extents().k - 1),
            ..b
        };
        assert!(plan.bind(&short).unwrap_err().to_string().contains("dk"));
        let missing = JvpBufs {
            o_tangent: DevBuf::ABSENT,
            ..b
        };
        assert!(matches!(
            plan.bind(&missing),
            Err(Error::MissingBuffer {
                tensor: TensorName::OTangent
            })
        ));
        // O' over a tangent: an output may alias nothing.
        let alias = JvpBufs {
            o_tangent: DevBuf {
                addr: b.dq.addr,
                ..b.o_tangent
            },
            ..b
        };
        assert!(plan.bind(&alias).is_err());
        // No row statistics.
        let lse = JvpBufs {
            fwd: FwdBufs {
                lse: DevBuf::new(1 << 50, 64),
                ..b.fwd
            },
            ..b
        };
        assert!(matches!(
            plan.bind(&lse),
            Err(Error::UnexpectedBuffer {
                tensor: TensorName::Lse
            })
        ));
    }

    proptest! {
        /// No size panics the planner: absurd lengths, heads and head dims are typed errors.
        #[test]
        fn absurd_sizes_are_errors(
            batch in prop_oneof![Just(0usize), Just(1), Just(usize::MAX)],
            sq in prop_oneof![Just(0usize), Just(1), Just(1 << 31), Just(usize::MAX)],
            sk in prop_oneof![Just(0usize), Just(1), Just(1 << 31), Just(usize::MAX)],
            hq in prop_oneof![Just(0usize), Just(1), Just(8), Just(usize::MAX)],
            d in prop_oneof![Just(0usize), Just(8), Just(64), Just(usize::MAX)],
            varlen in any::<bool>(),
        ) {
            let seq = if varlen {
                SeqShape::Varlen { batch, max_seqlen_q: sq, max_seqlen_k: sk, total_q: sq, total_k: sk }
            } else {
                SeqShape::Padded { batch, seqlen_q: sq, seqlen_k: sk }
            };
            let heads = Heads { q: hq, kv: 1 };
            let shape = if varlen { FwdShape::varlen(seq, heads, d) } else { FwdShape::padded(batch, sq, sk, heads, d) };
            let _ = JvpPlan::new(DType::F16, &JvpShape::new(shape));
        }
    }
}
