//! The forward's binding table: which buffers a run takes, how many elements each must hold
//! (from the validated [`FwdExtents`]), and their alignment, checked by the one checker of
//! `src/common/binding.rs`.

use crate::common::binding::{check, BufSpec, DevBuf, Use};
use crate::common::error::{Result, TensorName};
use crate::common::geometry::COPY_ALIGN_BYTES;
use crate::ops::forward::validate::FwdExtents;

/// The buffers of one forward run (absent ones are [`DevBuf::ABSENT`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FwdBufs {
    /// Element type of the plan.
    pub q: DevBuf,
    pub k: DevBuf,
    pub v: DevBuf,
    pub o: DevBuf,
    /// f32 outputs, optional.
    pub lse: DevBuf,
    pub entropy: DevBuf,
    /// f32 inputs, optional: `[hq]` each.
    pub alibi_slopes: DevBuf,
    pub head_gates: DevBuf,
    /// f32 input, optional: `[hq]` attention-sink logits.
    pub sinks: DevBuf,
    /// i32 `[batch + 1]` each; required exactly when the plan is varlen.
    pub cu_seqlens_q: DevBuf,
    pub cu_seqlens_k: DevBuf,
}

/// The binding table of `b` against the extents of a validated shape with elements of
/// `elem_bytes` bytes. Fixed array: no allocation.
pub fn specs(x: &FwdExtents, elem_bytes: usize, b: &FwdBufs) -> [BufSpec; 11] {
    use TensorName as T;
    let (e, a) = (elem_bytes as u64, COPY_ALIGN_BYTES as u64);
    let n = |v: usize| v as u64;
    let varlen = if x.cu_seqlens > 0 {
        Use::Required
    } else {
        Use::Forbidden
    };
    [
        BufSpec::input(T::O, b.o, Use::Required, n(x.o), e, a).written(),
        BufSpec::input(T::Lse, b.lse, Use::IfPresent, n(x.row_stats), 4, 4).written(),
        BufSpec::input(T::Entropy, b.entropy, Use::IfPresent, n(x.row_stats), 4, 4).written(),
        BufSpec::input(T::Q, b.q, Use::Required, n(x.q), e, a),
        BufSpec::input(T::K, b.k, Use::Required, n(x.k), e, a),
        BufSpec::input(T::V, b.v, Use::Required, n(x.v), e, a),
        BufSpec::input(
            T::AlibiSlopes,
            b.alibi_slopes,
            Use::IfPresent,
            n(x.per_head),
            4,
            4,
        ),
        BufSpec::input(
            T::HeadGates,
            b.head_gates,
            Use::IfPresent,
            n(x.per_head),
            4,
            4,
        ),
        BufSpec::input(T::Sinks, b.sinks, Use::IfPresent, n(x.per_head), 4, 4),
        BufSpec::input(T::CuSeqlensQ, b.cu_seqlens_q, varlen, n(x.cu_seqlens), 4, 4),
        BufSpec::input(T::CuSeqlensK, b.cu_seqlens_k, varlen, n(x.cu_seqlens), 4, 4),
    ]
}

/// Checks `b` against the extents of a validated shape (O(1): presence, extent, alignment,
/// overlap).
pub fn check_bufs(x: &FwdExtents, elem_bytes: usize, b: &FwdBufs) -> Result<()> {
    check(&specs(x, elem_bytes, b))
}
