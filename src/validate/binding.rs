//! Per-run checks of the buffers bound to a plan: each buffer covers its extent, base
//! addresses are aligned, outputs overlap nothing, and exactly the buffers the layout needs are
//! present. O(1): a fixed number of buffers, no allocation; runs before every launch.

use super::{FwdExtents, COPY_ALIGN_BYTES};
use crate::error::{AlignWhat, Error, Result, TensorName};

/// One device buffer: its base address and how many elements are available from there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevBuf {
    pub addr: u64,
    pub len: usize,
}

/// The buffers of one forward run, as device addresses and element counts. Each backend fills
/// this from its own buffer types (cudarc slices and views, emulator allocations).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FwdBufs {
    /// Element type of the plan.
    pub q: DevBuf,
    pub k: DevBuf,
    pub v: DevBuf,
    pub o: DevBuf,
    /// f32 outputs, optional.
    pub lse: Option<DevBuf>,
    pub entropy: Option<DevBuf>,
    /// f32 inputs, optional: `[hq]` each.
    pub alibi_slopes: Option<DevBuf>,
    pub head_gates: Option<DevBuf>,
    /// i32 `[batch + 1]` each; required exactly when the plan is varlen.
    pub cu_seqlens: Option<(DevBuf, DevBuf)>,
}

/// Checks `b` against the extents of a validated shape with elements of `elem_bytes` bytes.
pub fn check_bufs(x: &FwdExtents, elem_bytes: usize, b: &FwdBufs) -> Result<()> {
    check(x, elem_bytes, b, true)
}

/// [`check_bufs`] without the alignment rule, for buffers that are not what the kernel reads
/// (the C ABI's emulator entry copies host buffers into its own device): presence, sizes, and
/// outputs overlapping nothing, so that `o` aliasing `q` in the caller's memory is refused there
/// as it is on a GPU.
pub fn check_host_bufs(x: &FwdExtents, elem_bytes: usize, b: &FwdBufs) -> Result<()> {
    check(x, elem_bytes, b, false)
}

fn check(x: &FwdExtents, elem_bytes: usize, b: &FwdBufs, alignment: bool) -> Result<()> {
    use TensorName as T;
    let (cu_q, cu_k) = match (b.cu_seqlens, x.cu_seqlens > 0) {
        (Some((q, k)), true) => (Some(q), Some(k)),
        (None, false) => (None, None),
        (None, true) => {
            return Err(Error::MissingBuffer {
                tensor: T::CuSeqlensQ,
            })
        }
        (Some(_), false) => {
            return Err(Error::UnexpectedBuffer {
                tensor: T::CuSeqlensQ,
            })
        }
    };
    // (name, buffer, elements needed, element bytes, alignment). Fixed array: no allocation.
    let all: [(T, Option<DevBuf>, usize, usize, usize); 10] = [
        (T::O, Some(b.o), x.o, elem_bytes, COPY_ALIGN_BYTES),
        (T::Lse, b.lse, x.row_stats, 4, 4),
        (T::Entropy, b.entropy, x.row_stats, 4, 4),
        (T::Q, Some(b.q), x.q, elem_bytes, COPY_ALIGN_BYTES),
        (T::K, Some(b.k), x.k, elem_bytes, COPY_ALIGN_BYTES),
        (T::V, Some(b.v), x.v, elem_bytes, COPY_ALIGN_BYTES),
        (T::AlibiSlopes, b.alibi_slopes, x.per_head, 4, 4),
        (T::HeadGates, b.head_gates, x.per_head, 4, 4),
        (T::CuSeqlensQ, cu_q, x.cu_seqlens, 4, 4),
        (T::CuSeqlensK, cu_k, x.cu_seqlens, 4, 4),
    ];
    /// The outputs come first in `all`.
    const OUTPUTS: usize = 3;
    for (tensor, buf, needed, _, align) in all {
        let Some(buf) = buf else { continue };
        if buf.addr == 0 {
            return Err(Error::MissingBuffer { tensor });
        }
        if buf.len < needed {
            return Err(Error::BufferTooSmall {
                tensor,
                needed: needed as u64,
                available: buf.len as u64,
            });
        }
        if alignment && !buf.addr.is_multiple_of(align as u64) {
            return Err(Error::Misaligned {
                tensor,
                what: AlignWhat::Base,
                required: align,
                value: buf.addr,
            });
        }
    }
    // Byte range an operand may touch: its extent, not the whole buffer, so two tensors
    // carved side by side from one arena do not count as overlapping.
    let span = |buf: DevBuf, needed: usize, elem: usize| {
        (buf.addr, buf.addr.saturating_add((needed * elem) as u64))
    };
    for (i, (a, abuf, an, ae, _)) in all.iter().enumerate().take(OUTPUTS) {
        let Some(abuf) = abuf else { continue };
        let (a0, a1) = span(*abuf, *an, *ae);
        for (bname, bbuf, bn, be, _) in all.iter().skip(i + 1) {
            let Some(bbuf) = bbuf else { continue };
            let (b0, b1) = span(*bbuf, *bn, *be);
            if a0 < b1 && b0 < a1 {
                return Err(Error::Alias { a: *a, b: *bname });
            }
        }
    }
    Ok(())
}
