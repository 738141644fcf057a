//! The backward plan: a pure function from a validated [`BwdShape`] to its three launches (the
//! delta / dQ-zeroing row kernel, the main kernel, the dQ conversion) without addresses; per run
//! [`BwdPlan::bind`] checks the buffers (O(1), the one binding checker) and fills them in. The
//! caller owns the f32 workspace ([`BwdPlan::workspace_len`]); nothing is allocated.

use crate::common::abi::FlashBwdParams;
use crate::common::binding::{check, BufSpec, DevBuf, Use};
use crate::common::dtype::DType;
use crate::common::error::{Error, Result, TensorName};
use crate::common::geometry::COPY_ALIGN_BYTES;
use crate::common::launch::Launch;
use crate::common::target::KernelTarget;
use crate::ops::backward::kernels::{convert_dq_entry, dot_entry, BwdKernelRow, ROW_WARPS};
use crate::ops::backward::problem::BwdShape;
use crate::ops::backward::validate::{validate_shape, BwdExtents};
use crate::ops::forward::plan::{attn_params, WARP_SIZE};

/// The buffers of one backward run (absent ones are [`DevBuf::ABSENT`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BwdBufs {
    /// Element type of the plan: the forward's inputs and output, and dO.
    pub q: DevBuf,
    pub k: DevBuf,
    pub v: DevBuf,
    pub o: DevBuf,
    pub d_o: DevBuf,
    /// f32, the forward's LSE (`[b, hq, sq]` padded, `[hq, total_q]` varlen).
    pub lse: DevBuf,
    /// Element type of the plan: the gradients (written).
    pub dq: DevBuf,
    pub dk: DevBuf,
    pub dv: DevBuf,
    /// f32, [`BwdPlan::workspace_len`] elements (written; its contents need no initialisation).
    pub workspace: DevBuf,
    /// i32 `[batch + 1]` each; required exactly when the plan is varlen.
    pub cu_seqlens_q: DevBuf,
    pub cu_seqlens_k: DevBuf,
    /// f32 `[hq]`, optional: the forward's ALiBi slopes and head gates.
    pub alibi_slopes: DevBuf,
    pub head_gates: DevBuf,
    /// f32 `[hq]`, optional output (needs `head_gates`): d(loss) / d(gate).
    pub d_head_gates: DevBuf,
    /// f32 `[hq]`, optional: the forward's attention-sink logits (its LSE includes them; dQ,
    /// dK, dV need nothing more), read for `d_sinks` only.
    pub sinks: DevBuf,
    /// f32 `[hq]`, optional output (needs `sinks`): d(loss) / d(sink).
    pub d_sinks: DevBuf,
}

/// A validated backward plan for elements of `dtype`: everything but the buffers. Pure data,
/// `Send + Sync`, cheap to copy.
#[derive(Debug, Clone, Copy)]
pub struct BwdPlan {
    dtype: DType,
    kernel: &'static BwdKernelRow,
    extents: BwdExtents,
    /// Params with every pointer null; `bind` fills them.
    params: FlashBwdParams,
    main_grid: [u32; 3],
    rows_grid: [u32; 3],
}

// SAFETY: the only non-Send/Sync fields are the raw pointers of the params template, which are
// always null in a plan (addresses enter only through `bind`, which returns copies).
unsafe impl Send for BwdPlan {}
// SAFETY: as above; a plan is never mutated after construction.
unsafe impl Sync for BwdPlan {}

impl BwdPlan {
    /// Validates `shape` for `dtype` and plans it with the Ampere-and-newer kernels.
    pub fn new(dtype: DType, shape: &BwdShape) -> Result<BwdPlan> {
        Self::new_for(KernelTarget::Ampere, dtype, shape)
    }

    /// Validates `shape` for `dtype` and plans it for the kernels of `target` (Hopper runs the
    /// Ampere ones; Turing has none: [`crate::Error::UnsupportedOnTarget`]).
    pub fn new_for(target: KernelTarget, dtype: DType, shape: &BwdShape) -> Result<BwdPlan> {
        let (kernel, extents) = validate_shape(target, dtype, shape)?;
        let s = &shape.fwd;
        let (_, max_sk) = s.seq.max_seqlens();
        let (total_q, _) = s.seq.total_rows();
        let g = &shape.grads;
        let params = attn_params!(FlashBwdParams, s, {
            do_batch_stride: g.d_o.batch,
            do_row_stride: g.d_o.row,
            do_head_stride: g.d_o.head,
            dq_batch_stride: g.dq.batch,
            dq_row_stride: g.dq.row,
            dq_head_stride: g.dq.head,
            dk_batch_stride: g.dk.batch,
            dk_row_stride: g.dk.row,
            dk_head_stride: g.dk.head,
            dv_batch_stride: g.dv.batch,
            dv_row_stride: g.dv.row,
            dv_head_stride: g.dv.head,
            // At most ceil(sk / 16) < 2^31 slices (validated sk).
            dq_slices: extents.dq_slices as i32,
        });
        // One warp per (q row, head); at least one CTA (a varlen batch of empty items).
        let pairs = (total_q as u64) * (s.heads.q as u64);
        let rows_grid = [pairs.div_ceil(u64::from(ROW_WARPS)).max(1) as u32, 1, 1];
        let key_blocks = (max_sk as u64).div_ceil(u64::from(kernel.block_n())).max(1) as u32;
        Ok(BwdPlan {
            dtype,
            kernel,
            extents,
            params,
            main_grid: [key_blocks, s.heads.kv as u32, s.seq.batch() as u32],
            rows_grid,
        })
    }

    /// The element type of q, k, v, o, dO and the gradients.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The main kernel this plan launches.
    pub fn kernel(&self) -> &'static BwdKernelRow {
        self.kernel
    }

    /// Elements each buffer must hold.
    pub fn extents(&self) -> &BwdExtents {
        &self.extents
    }

    /// f32 elements of the caller's workspace (dQ accumulator, delta and, in deterministic
    /// mode, the per-warp d(gate) partials).
    pub fn workspace_len(&self) -> usize {
        self.extents.workspace
    }

    /// The binding table of `b` (fixed array: no allocation).
    pub fn specs(&self, b: &BwdBufs) -> [BufSpec; 17] {
        use TensorName as T;
        let x = &self.extents;
        let (e, a) = (self.dtype.size() as u64, COPY_ALIGN_BYTES as u64);
        let n = |v: usize| v as u64;
        let varlen = if x.fwd.cu_seqlens > 0 {
            Use::Required
        } else {
            Use::Forbidden
        };
        [
            BufSpec::input(T::DQ, b.dq, Use::Required, n(x.dq), e, a).written(),
            BufSpec::input(T::DK, b.dk, Use::Required, n(x.dk), e, a).written(),
            BufSpec::input(T::DV, b.dv, Use::Required, n(x.dv), e, a).written(),
            BufSpec::input(
                T::Workspace,
                b.workspace,
                Use::Required,
                n(x.workspace),
                4,
                a,
            )
            .written(),
            BufSpec::input(T::Q, b.q, Use::Required, n(x.fwd.q), e, a),
            BufSpec::input(T::K, b.k, Use::Required, n(x.fwd.k), e, a),
            BufSpec::input(T::V, b.v, Use::Required, n(x.fwd.v), e, a),
            BufSpec::input(T::O, b.o, Use::Required, n(x.fwd.o), e, a),
            BufSpec::input(T::DOut, b.d_o, Use::Required, n(x.d_o), e, a),
            BufSpec::input(T::Lse, b.lse, Use::Required, n(x.fwd.row_stats), 4, 4),
            BufSpec::input(
                T::CuSeqlensQ,
                b.cu_seqlens_q,
                varlen,
                n(x.fwd.cu_seqlens),
                4,
                4,
            ),
            BufSpec::input(
                T::CuSeqlensK,
                b.cu_seqlens_k,
                varlen,
                n(x.fwd.cu_seqlens),
                4,
                4,
            ),
            BufSpec::input(
                T::AlibiSlopes,
                b.alibi_slopes,
                Use::IfPresent,
                n(x.fwd.per_head),
                4,
                4,
            ),
            BufSpec::input(
                T::HeadGates,
                b.head_gates,
                Use::IfPresent,
                n(x.fwd.per_head),
                4,
                4,
            ),
            BufSpec::input(
                T::DHeadGates,
                b.d_head_gates,
                Use::IfPresent,
                n(x.fwd.per_head),
                4,
                4,
            )
            .written(),
            BufSpec::input(T::Sinks, b.sinks, Use::IfPresent, n(x.fwd.per_head), 4, 4),
            BufSpec::input(
                T::DSinks,
                b.d_sinks,
                Use::IfPresent,
                n(x.fwd.per_head),
                4,
                4,
            )
            .written(),
        ]
    }

    /// Checks `bufs` against the plan (O(1): presence, extent, alignment, no output overlapping
    /// another buffer) and returns the three launches, in order: delta and the zeroed dQ
    /// accumulator, the main kernel, the dQ conversion.
    pub fn bind(&self, bufs: &BwdBufs) -> Result<[Launch; 3]> {
        check(&self.specs(bufs))?;
        // An output gradient needs the input it is the gradient of.
        for (out, input) in [
            (bufs.d_head_gates, (bufs.head_gates, TensorName::HeadGates)),
            (bufs.d_sinks, (bufs.sinks, TensorName::Sinks)),
        ] {
            if out.is_present() && !input.0.is_present() {
                return Err(Error::MissingBuffer { tensor: input.1 });
            }
        }
        let mut p = self.params;
        p.q = bufs.q.addr as *const _;
        p.k = bufs.k.addr as *const _;
        p.v = bufs.v.addr as *const _;
        p.o = bufs.o.addr as *const _;
        p.d_o = bufs.d_o.addr as *const _;
        p.dq = bufs.dq.addr as *mut _;
        p.dk = bufs.dk.addr as *mut _;
        p.dv = bufs.dv.addr as *mut _;
        p.opt.lse = bufs.lse.addr as *mut f32;
        // The workspace: dq_accum, delta, then (deterministic d(gate)) the per-warp partials.
        let x = &self.extents;
        let at = |off: usize| bufs.workspace.slice(off as u64, 0, 4).addr as *mut f32;
        p.dq_accum = bufs.workspace.addr as *mut f32;
        p.delta = at(x.dq_accum);
        if x.gate_partials > 0 && bufs.d_head_gates.is_present() {
            p.gate_partials = at(x.dq_accum + x.delta);
            p.gate_partials_per_head = x.gate_partials_per_head as i32;
        }
        p.cu_seqlens_q = bufs.cu_seqlens_q.addr as *const i32;
        p.cu_seqlens_k = bufs.cu_seqlens_k.addr as *const i32;
        p.opt.alibi_slopes = bufs.alibi_slopes.addr as *const f32;
        p.opt.head_gates = bufs.head_gates.addr as *const f32;
        p.d_head_gates = bufs.d_head_gates.addr as *mut f32;
        p.opt.sinks = bufs.sinks.addr as *const f32;
        p.d_sinks = bufs.d_sinks.addr as *mut f32;
        let row_block = [ROW_WARPS * WARP_SIZE, 1, 1];
        let k = self.kernel;
        Ok([
            Launch::geometry(dot_entry(self.dtype), self.rows_grid, row_block, 0).with_params(&p),
            Launch::geometry(
                k.entry,
                self.main_grid,
                [k.num_warps * WARP_SIZE, 1, 1],
                k.smem_bytes,
            )
            .with_params(&p),
            Launch::geometry(convert_dq_entry(self.dtype), self.rows_grid, row_block, 0)
                .with_params(&p),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::geometry::Strides;
    use crate::common::options::AttnOptions;
    use crate::ops::backward::problem::GradStrides;
    use crate::ops::forward::problem::{FwdShape, Heads, SeqShape};
    use proptest::prelude::*;

    /// Far-apart fake device addresses, 16-byte aligned.
    fn bufs(plan: &BwdPlan) -> BwdBufs {
        let x = plan.extents();
        let at = |i: u64, len: usize| DevBuf::new((i + 1) << 40, len);
        BwdBufs {
            q: at(0, x.fwd.q),
            k: at(1, x.fwd.k),
            v: at(2, x.fwd.v),
            o: at(3, x.fwd.o),
            d_o: at(4, x.d_o),
            lse: at(5, x.fwd.row_stats),
            dq: at(6, x.dq),
            dk: at(7, x.dk),
            dv: at(8, x.dv),
            workspace: at(9, x.workspace),
            cu_seqlens_q: if x.fwd.cu_seqlens > 0 {
                at(10, x.fwd.cu_seqlens)
            } else {
                DevBuf::ABSENT
            },
            cu_seqlens_k: if x.fwd.cu_seqlens > 0 {
                at(11, x.fwd.cu_seqlens)
            } else {
                DevBuf::ABSENT
            },
            ..Default::default()
        }
    }

    #[test]
    fn plans_three_launches_over_the_workspace() {
        // b 2, sq 70, sk 100, GQA 6 / 2, d 56 (runs on the d64 kernel).
        let shape = BwdShape::new(FwdShape::padded(2, 70, 100, Heads::gqa(6, 2), 56));
        let plan = BwdPlan::new(DType::Bf16, &shape).unwrap();
        assert_eq!(plan.kernel().entry, "flashmha_bwd_bf16_d64");
        let x = plan.extents();
        assert_eq!(x.dq_accum, 2 * 70 * 6 * 56);
        assert_eq!(x.delta, 6 * 2 * 70);
        assert_eq!(plan.workspace_len(), x.dq_accum + x.delta);
        let b = bufs(&plan);
        let [dot, main, convert] = plan.bind(&b).unwrap();
        assert_eq!(dot.entry, "flashmha_bwd_dot_bf16");
        assert_eq!(convert.entry, "flashmha_bwd_convert_dq_bf16");
        // One warp per (q row, head), 4 per CTA.
        assert_eq!(dot.grid, [(2 * 70 * 6u32).div_ceil(4), 1, 1]);
        assert_eq!(dot.block, [128, 1, 1]);
        // Key blocks of the kernel's block_n (128 keys at d64: 1 block), kv heads, batch.
        let block_n = plan.kernel().block_n();
        assert_eq!(main.grid, [100u32.div_ceil(block_n), 2, 2]);
        assert_eq!(main.grid[0], 1);
        assert_eq!(main.dynamic_smem_bytes, plan.kernel().smem_bytes);
        // The params carry the workspace split: delta right after the accumulator.
        let p = plan.params;
        assert!(p.dq_accum.is_null() && p.delta.is_null());
        let bytes = main.params();
        let off = std::mem::offset_of!(FlashBwdParams, delta);
        let delta = u64::from_le_bytes(bytes[off..off + 8].try_into().unwrap());
        assert_eq!(delta, b.workspace.addr + 4 * x.dq_accum as u64);
        assert_eq!(dot.params(), main.params());
        assert_eq!(convert.params(), main.params());
    }

    #[test]
    fn deterministic_mode_sizes_one_dq_slice_per_key_block() {
        // d128 (64 keys per CTA): ceil(150 / 64) = 3 key blocks.
        let fwd = FwdShape::padded(2, 30, 150, Heads::gqa(4, 2), 128);
        let atomic = BwdPlan::new(DType::F16, &BwdShape::new(fwd)).unwrap();
        let det = BwdPlan::new(DType::F16, &BwdShape::new(fwd).with_deterministic(true)).unwrap();
        assert_eq!(det.kernel().block_n(), 64);
        let (a, x) = (atomic.extents(), det.extents());
        assert_eq!((a.dq_slices, x.dq_slices), (1, 3));
        assert_eq!(x.dq_accum, 3 * a.dq_accum);
        // d(gate) slots: batch 2 x 3 key blocks x 4 warps per head, 4 heads; none with atomics.
        assert_eq!((a.gate_partials, a.gate_partials_per_head), (0, 0));
        assert_eq!((x.gate_partials, x.gate_partials_per_head), (4 * 24, 24));
        assert_eq!(atomic.workspace_len(), a.dq_accum + a.delta);
        assert_eq!(det.workspace_len(), x.dq_accum + x.delta + x.gate_partials);
        assert_eq!((atomic.params.dq_slices, det.params.dq_slices), (1, 3));
        // The slots are bound (after delta) only when d(gate) is asked for.
        let gates = |b: BwdBufs| BwdBufs {
            head_gates: DevBuf::new(1 << 52, 4),
            d_head_gates: DevBuf::new(1 << 53, 4),
            ..b
        };
        let slots = |plan: &BwdPlan, b: &BwdBufs| {
            let [dot, main, _] = plan.bind(b).unwrap();
            assert_eq!(dot.params(), main.params());
            let bytes = main.params();
            let at = |off: usize| u64::from_le_bytes(bytes[off..off + 8].try_into().unwrap());
            let per = std::mem::offset_of!(FlashBwdParams, gate_partials_per_head);
            let per = i32::from_le_bytes(bytes[per..per + 4].try_into().unwrap());
            (at(std::mem::offset_of!(FlashBwdParams, gate_partials)), per)
        };
        let b = bufs(&det);
        assert_eq!(slots(&det, &b), (0, 0));
        let start = b.workspace.addr + 4 * (x.dq_accum + x.delta) as u64;
        assert_eq!(slots(&det, &gates(b)), (start, 24));
        assert_eq!(slots(&atomic, &gates(bufs(&atomic))), (0, 0));
    }

    #[test]
    fn sink_gradients_need_the_sinks() {
        let plan = BwdPlan::new(
            DType::F16,
            &BwdShape::new(FwdShape::padded(1, 9, 12, Heads::gqa(4, 2), 64)),
        )
        .unwrap();
        let b = bufs(&plan);
        let ds = BwdBufs {
            d_sinks: DevBuf::new(1 << 51, 4),
            ..b
        };
        assert!(matches!(
            plan.bind(&ds),
            Err(Error::MissingBuffer {
                tensor: TensorName::Sinks
            })
        ));
        let with = BwdBufs {
            sinks: DevBuf::new(1 << 52, 4),
            ..ds
        };
        let [_, main, _] = plan.bind(&with).unwrap();
        let bytes = main.params();
        let off = std::mem::offset_of!(FlashBwdParams, d_sinks);
        assert_eq!(
            u64::from_le_bytes(bytes[off..off + 8].try_into().unwrap()),
            1 << 51
        );
        // [hq] each: a short one is refused.
        let short = BwdBufs {
            d_sinks: DevBuf::new(1 << 51, 3),
            ..with
        };
        assert!(plan.bind(&short).is_err());
    }

    #[test]
    fn refuses_what_it_cannot_run() {
        let ok = FwdShape::padded(1, 8, 8, Heads::mha(2), 64);
        assert!(matches!(
            BwdPlan::new_for(KernelTarget::Turing, DType::F16, &BwdShape::new(ok)),
            Err(Error::UnsupportedOnTarget { .. })
        ));
        let softcap = ok.with_options(AttnOptions {
            softcap: Some(10.0),
            ..Default::default()
        });
        assert!(BwdPlan::new(DType::F16, &BwdShape::new(softcap)).is_ok());
        assert!(BwdPlan::new_for(KernelTarget::Hopper, DType::F16, &BwdShape::new(ok)).is_ok());
        let d256 = FwdShape::padded(1, 8, 8, Heads::mha(2), 256);
        assert!(matches!(
            BwdPlan::new(DType::F16, &BwdShape::new(d256)),
            Err(Error::UnsupportedHeadDim { head_dim: 256, .. })
        ));
        // A misaligned dq row stride and a negative dv stride are typed errors.
        let s = BwdShape::new(ok);
        let bad = |g: GradStrides| BwdPlan::new(DType::F16, &s.with_grad_strides(g)).unwrap_err();
        let odd = Strides {
            row: 2 * 64 + 4,
            ..s.grads.dq
        };
        assert!(matches!(
            bad(GradStrides { dq: odd, ..s.grads }),
            Error::Misaligned {
                tensor: TensorName::DQ,
                ..
            }
        ));
        let neg = Strides {
            head: -64,
            ..s.grads.dv
        };
        assert!(matches!(
            bad(GradStrides { dv: neg, ..s.grads }),
            Error::NegativeStride {
                tensor: TensorName::DV,
                ..
            }
        ));
        // dk's heads overlapping each other (head stride 0) is refused: an output.
        let zero = Strides {
            head: 0,
            ..s.grads.dk
        };
        assert!(bad(GradStrides {
            dk: zero,
            ..s.grads
        })
        .to_string()
        .contains("dk"));
    }

    #[test]
    fn binding_checks_every_buffer() {
        let shape = BwdShape::new(FwdShape::padded(1, 33, 47, Heads::gqa(4, 1), 128));
        let plan = BwdPlan::new(DType::F16, &shape).unwrap();
        let b = bufs(&plan);
        assert!(plan.bind(&b).is_ok());
        let short_ws = BwdBufs {
            workspace: DevBuf::new(b.workspace.addr, plan.workspace_len() - 1),
            ..b
        };
        assert!(plan
            .bind(&short_ws)
            .unwrap_err()
            .to_string()
            .contains("workspace"));
        let no_lse = BwdBufs {
            lse: DevBuf::ABSENT,
            ..b
        };
        assert!(matches!(
            plan.bind(&no_lse),
            Err(Error::MissingBuffer {
                tensor: TensorName::Lse
            })
        ));
        // dq over q: an output may alias nothing.
        let alias = BwdBufs {
            dq: DevBuf {
                addr: b.q.addr,
                ..b.dq
            },
            ..b
        };
        assert!(plan.bind(&alias).is_err());
        // Gate gradients need the gates; both are [hq].
        let dg = BwdBufs {
            d_head_gates: DevBuf::new(1 << 51, 4),
            ..b
        };
        assert!(matches!(
            plan.bind(&dg),
            Err(Error::MissingBuffer {
                tensor: TensorName::HeadGates
            })
        ));
        let gated = BwdBufs {
            head_gates: DevBuf::new(1 << 52, 4),
            ..dg
        };
        assert!(plan.bind(&gated).is_ok());
        let short = BwdBufs {
            head_gates: DevBuf::new(1 << 52, 3),
            ..dg
        };
        assert!(plan.bind(&short).is_err());
        // A padded plan refuses cu_seqlens.
        let cu = BwdBufs {
            cu_seqlens_q: DevBuf::new(1 << 50, 2),
            ..b
        };
        assert!(matches!(
            plan.bind(&cu),
            Err(Error::UnexpectedBuffer { .. })
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
            let _ = BwdPlan::new(DType::F16, &BwdShape::new(shape));
        }
    }
}
