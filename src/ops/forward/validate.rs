//! Validation, in two steps that mirror plan once / run per layer:
//! - [`validate_shape`] (here): everything about a [`FwdShape`] alone (heads, sizes, strides,
//!   options, 32-bit index limits, output self-overlap, the compiled kernel that serves it).
//!   Runs once per plan; returns the kernel and the extents each buffer must cover.
//! - [`crate::ops::forward::bind`]: what depends on the buffers of one run (length, alignment, aliasing,
//!   presence), in O(1), before every launch.
//!
//! Pure: reads descriptions and addresses, returns typed errors, launches and writes nothing.
//! Device-resident indices (`cu_seqlens`) are not read here: the kernel checks them against the
//! bounds in its params and traps, which on a GPU leaves the CUDA context unusable (recreate it:
//! see [`crate::backend::cuda`]).

use crate::common::abi;
use crate::common::build_info::FwdKernelRow;
use crate::common::dtype::DType;
use crate::common::error::{AlignWhat, Dim, Error, Limit, Result, TensorName};
use crate::common::geometry::Strides;
use crate::common::target::KernelTarget;
use crate::ops::forward::problem::{FwdShape, SeqShape};
use crate::ops::forward::tma::{FwdTmaMaps, TMA_MAX_DIM, TMA_MAX_STRIDE_BYTES, TMA_STRIDE_ALIGN};
use crate::ops::kernel_rows::{distinct_head_dims, narrowest_serving};

use crate::common::geometry::{
    check_no_overlap, check_span, span, COPY_ALIGN_BYTES, MAX_GRID_YZ, MAX_INDEX_32,
};
/// `sq + sk` of every item must stay below 2^31 minus the kernels' headroom (params.h).
pub const MAX_SEQLEN_SUM: u64 = (1 << 31) - abi::FLASHMHA_SEQLEN_HEADROOM as u64;
/// For head dims whose tiles are copied with per-thread 32-bit byte offsets (d80, d96:
/// `(row * row_stride + col) * 2` with row < 64), a q/k/v row stride of at most 2^24 elements
/// keeps those offsets in range; we apply the bound to every head dim so it does not depend on
/// which instantiation serves a call.
pub const MAX_ROW_STRIDE: i64 = 1 << 24;

/// Elements each buffer must hold from its base address, for a validated shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FwdExtents {
    pub q: usize,
    pub k: usize,
    pub v: usize,
    pub o: usize,
    /// LSE and entropy (f32), when given.
    pub row_stats: usize,
    /// ALiBi slopes, head gates and sinks (f32), when given: one per query head.
    pub per_head: usize,
    /// Each `cu_seqlens` (i32), varlen only: batch + 1.
    pub cu_seqlens: usize,
}

/// The compiled kernel that serves `shape` of element type `dtype`, and the extents of its
/// buffers, after checking everything that does not depend on the buffers.
pub fn validate_shape<'t>(
    table: &'t [FwdKernelRow],
    target: KernelTarget,
    dtype: DType,
    shape: &FwdShape,
) -> Result<(&'t FwdKernelRow, FwdExtents)> {
    let s = shape;
    if !target.supports(dtype) {
        return Err(Error::UnsupportedDType { dtype, target });
    }
    let kernel = if s.head_dim_v == s.head_dim {
        forward_kernel_for(table, target, dtype, s.head_dim).ok_or_else(|| {
            Error::UnsupportedHeadDim {
                dtype,
                head_dim: s.head_dim,
                target,
                supported: compiled_head_dims(table, target, dtype),
            }
        })?
    } else {
        forward_kernel_for_pair(table, target, dtype, s.head_dim, s.head_dim_v).ok_or_else(
            || Error::UnsupportedHeadDimPair {
                dtype,
                head_dim: s.head_dim,
                head_dim_v: s.head_dim_v,
                target,
                supported: compiled_head_dim_pairs(table, target, dtype),
            },
        )?
    };
    check_heads(s)?;
    check_seq(s)?;
    s.options.validate()?;
    let batch = s.seq.batch();
    let st = &s.strides;
    let q = Geometry::q_side(s, TensorName::Q, st.q);
    let k = Geometry::k_side(s, TensorName::K, st.k);
    let v = Geometry::k_side(s, TensorName::V, st.v).with_head_dim(s.head_dim_v);
    let o = Geometry::q_side(s, TensorName::O, st.o).with_head_dim(s.head_dim_v);
    for g in [&q, &k, &v] {
        g.check_input(dtype)?;
    }
    o.check_output(dtype)?;
    for g in [&q, &k, &v, &o] {
        g.check_alignment(dtype)?;
    }
    // (d_qk of q / k; a d_v != d_qk pair is compiled, so its d_v is a whole number of chunks)
    for (tensor, d) in [(TensorName::Q, s.head_dim), (TensorName::V, s.head_dim_v)] {
        if !(d * dtype.size()).is_multiple_of(COPY_ALIGN_BYTES) {
            return Err(Error::Misaligned {
                tensor,
                what: AlignWhat::HeadDim,
                required: COPY_ALIGN_BYTES,
                value: (d * dtype.size()) as u64,
            });
        }
    }
    if kernel.takes_tma_params() {
        check_tma(s, kernel)?;
    }
    let row_stats = s.row_stats_len();
    if row_stats as u64 > MAX_INDEX_32 {
        return Err(Error::Overflow32 {
            limit: Limit::RowStats,
            value: row_stats as u64,
            max: MAX_INDEX_32,
        });
    }
    Ok((
        kernel,
        FwdExtents {
            q: q.extent(),
            k: k.extent(),
            v: v.extent(),
            o: o.extent(),
            row_stats,
            per_head: s.heads.q,
            cu_seqlens: if s.seq.is_varlen() { batch + 1 } else { 0 },
        },
    ))
}

/// The compiled forward kernel that serves `head_dim` for `dtype` on `target`, if any: a head
/// dim that is a multiple of 8 (whole 16-byte chunks) runs on the smallest compiled kernel of
/// the target at least as wide, its extra columns predicated off in the kernel. A target with a
/// fallback (Hopper: Ampere) runs its own row when that is no wider than the fallback's bucket
/// (d48 -> the sm_90a d64), else the fallback's (d80 / d96 -> the Ampere d80 / d96 rather than
/// padding them to the sm_90a d128). Used by [`validate_shape`] and by callers (the CLI) that
/// draw or check head dims.
pub fn forward_kernel_for(
    table: &[FwdKernelRow],
    target: KernelTarget,
    dtype: DType,
    head_dim: usize,
) -> Option<&FwdKernelRow> {
    let bucket = |t: KernelTarget| {
        narrowest_serving(
            table
                .iter()
                .filter(|r| r.target == t && r.dtype == dtype && r.head_dim_v == r.head_dim),
            head_dim,
        )
    };
    let own = bucket(target);
    match (own, target.forward_fallback().and_then(bucket)) {
        (Some(own), Some(other)) if other.head_dim < own.head_dim => Some(other),
        (Some(own), _) => Some(own),
        (None, other) => other,
    }
}

/// The compiled forward kernel of `dtype` for the pair `(head_dim, head_dim_v)` with
/// d_qk != d_v (issue 23), if any: a row compiled for exactly that pair, the target's own or
/// else its fallback's (Hopper runs the Ampere rows of the pairs it has no wgmma row for).
pub fn forward_kernel_for_pair(
    table: &[FwdKernelRow],
    target: KernelTarget,
    dtype: DType,
    head_dim: usize,
    head_dim_v: usize,
) -> Option<&FwdKernelRow> {
    let exact = |t: KernelTarget| {
        table.iter().find(|r| {
            r.target == t
                && r.dtype == dtype
                && r.head_dim as usize == head_dim
                && r.head_dim_v as usize == head_dim_v
        })
    };
    exact(target).or_else(|| target.forward_fallback().and_then(exact))
}

/// For ops with no d_qk != d_v kernels (the backward, the JVP): a shape whose v / o head dim
/// differs from q / k's is [`Error::UnsupportedHeadDimPair`] with no pair to offer.
pub fn require_equal_head_dims(s: &FwdShape, target: KernelTarget, dtype: DType) -> Result<()> {
    if s.head_dim_v == s.head_dim {
        return Ok(());
    }
    Err(Error::UnsupportedHeadDimPair {
        dtype,
        head_dim: s.head_dim,
        head_dim_v: s.head_dim_v,
        target,
        supported: Vec::new(),
    })
}

/// Whether `r` runs on `target` (its own rows and its fallback's) for `dtype`.
fn serves_target(r: &FwdKernelRow, target: KernelTarget, dtype: DType) -> bool {
    (r.target == target || Some(r.target) == target.forward_fallback()) && r.dtype == dtype
}

/// The compiled forward head dims of `dtype` on `target` (its own and its fallback's), sorted
/// and distinct: what [`Error::UnsupportedHeadDim`] lists. Multiples of 8 between them run too
/// ([`forward_kernel_for`]).
pub fn compiled_head_dims(table: &[FwdKernelRow], target: KernelTarget, dtype: DType) -> Vec<u32> {
    distinct_head_dims(
        table
            .iter()
            .filter(|r| serves_target(r, target, dtype) && r.head_dim_v == r.head_dim),
    )
}

/// The compiled (d_qk, d_v) pairs with d_qk != d_v of `dtype` on `target` (its own and its
/// fallback's), sorted and distinct: what [`Error::UnsupportedHeadDimPair`] lists.
pub fn compiled_head_dim_pairs(
    table: &[FwdKernelRow],
    target: KernelTarget,
    dtype: DType,
) -> Vec<(u32, u32)> {
    let mut pairs: Vec<(u32, u32)> = table
        .iter()
        .filter(|r| serves_target(r, target, dtype) && r.head_dim_v != r.head_dim)
        .map(|r| (r.head_dim, r.head_dim_v))
        .collect();
    pairs.sort_unstable();
    pairs.dedup();
    pairs
}

/// What the sm_90a kernels' tensor maps need beyond the checks every kernel has: the encoder
/// takes byte strides that are multiples of 16 (already required of every kernel, for 16-byte
/// copies) and below 2^40, and dimensions of at most 2^31 elements (rows are already int32);
/// checked on the maps the plan will encode, so a launch never meets an encoder error.
fn check_tma(s: &FwdShape, kernel: &FwdKernelRow) -> Result<()> {
    let maps = FwdTmaMaps::describe(s, kernel.block_m, kernel.block_n);
    for (tensor, map) in maps.iter() {
        for (stride, dim) in map
            .global_strides
            .iter()
            .zip([Dim::Heads, Dim::Seq, Dim::Batch])
        {
            if !stride.is_multiple_of(TMA_STRIDE_ALIGN) {
                return Err(Error::Misaligned {
                    tensor,
                    what: AlignWhat::Stride(dim),
                    required: TMA_STRIDE_ALIGN as usize,
                    value: *stride,
                });
            }
            if *stride >= TMA_MAX_STRIDE_BYTES {
                return Err(Error::Overflow32 {
                    limit: Limit::TmaStride,
                    value: *stride,
                    max: TMA_MAX_STRIDE_BYTES - 1,
                });
            }
        }
        if let Some(&rows) = map.global_dim.iter().find(|&&n| n > TMA_MAX_DIM) {
            return Err(Error::Overflow32 {
                limit: Limit::Rows32,
                value: rows,
                max: TMA_MAX_DIM,
            });
        }
    }
    Ok(())
}

fn check_heads(s: &FwdShape) -> Result<()> {
    let h = s.heads;
    for (tensor, n) in [(TensorName::Q, h.q), (TensorName::K, h.kv)] {
        if n == 0 {
            return Err(Error::EmptyDim {
                tensor,
                dim: Dim::Heads,
            });
        }
    }
    if !h.q.is_multiple_of(h.kv) {
        return Err(Error::HeadsNotDivisible {
            heads_q: h.q,
            heads_kv: h.kv,
        });
    }
    if h.q as u64 > MAX_GRID_YZ {
        return Err(Error::Overflow32 {
            limit: Limit::GridYz,
            value: h.q as u64,
            max: MAX_GRID_YZ,
        });
    }
    if s.head_dim == 0 {
        return Err(Error::EmptyDim {
            tensor: TensorName::Q,
            dim: Dim::HeadDim,
        });
    }
    Ok(())
}

fn check_seq(s: &FwdShape) -> Result<()> {
    let batch = s.seq.batch();
    if batch == 0 {
        return Err(Error::EmptyDim {
            tensor: TensorName::Q,
            dim: Dim::Batch,
        });
    }
    if batch as u64 > MAX_GRID_YZ {
        return Err(Error::Overflow32 {
            limit: Limit::GridYz,
            value: batch as u64,
            max: MAX_GRID_YZ,
        });
    }
    let (sq, sk) = s.seq.max_seqlens();
    if let SeqShape::Padded { .. } = s.seq {
        // A padded item with no queries or no keys is a caller mistake; varlen items may be
        // empty (their rows are simply absent).
        for (tensor, n) in [(TensorName::Q, sq), (TensorName::K, sk)] {
            if n == 0 {
                return Err(Error::EmptyDim {
                    tensor,
                    dim: Dim::Seq,
                });
            }
        }
    }
    // Checked: `usize::MAX` lengths must be refused, not wrapped (or panic) in the sum.
    let sum = (sq as u64).saturating_add(sk as u64);
    if sum > MAX_SEQLEN_SUM {
        return Err(Error::Overflow32 {
            limit: Limit::SeqlenSum,
            value: sum,
            max: MAX_SEQLEN_SUM,
        });
    }
    let (tq, tk) = s.seq.total_rows();
    for value in [tq, tk] {
        if value as u64 > MAX_INDEX_32 {
            return Err(Error::Overflow32 {
                limit: Limit::Rows32,
                value: value as u64,
                max: MAX_INDEX_32,
            });
        }
    }
    Ok(())
}

/// One q/k/v/o operand: the index space the kernel walks over it (the backward checks its
/// gradients with it too).
pub(crate) struct Geometry {
    pub(crate) tensor: TensorName,
    pub(crate) strides: Strides,
    pub(crate) items: usize,
    pub(crate) rows: usize,
    pub(crate) heads: usize,
    pub(crate) head_dim: usize,
}

impl Geometry {
    /// A query-side operand of `s` (q, o, dO, dQ: `heads.q` heads over the query rows).
    pub(crate) fn q_side(s: &FwdShape, tensor: TensorName, strides: Strides) -> Geometry {
        Self::operand(s, tensor, strides, false)
    }

    /// A key-side operand of `s` (k, v, dK, dV: `heads.kv` heads over the key rows).
    pub(crate) fn k_side(s: &FwdShape, tensor: TensorName, strides: Strides) -> Geometry {
        Self::operand(s, tensor, strides, true)
    }

    fn operand(s: &FwdShape, tensor: TensorName, strides: Strides, keys: bool) -> Geometry {
        let pick = |(q, k): (usize, usize)| if keys { k } else { q };
        // Rows each operand must cover: padded tensors are addressed per item, varlen globally.
        let (items, rows) = if s.seq.is_varlen() {
            (1, pick(s.seq.total_rows()))
        } else {
            (s.seq.batch(), pick(s.seq.max_seqlens()))
        };
        Geometry {
            tensor,
            strides,
            items,
            rows,
            heads: pick((s.heads.q, s.heads.kv)),
            head_dim: s.head_dim,
        }
    }

    /// The same operand with its own head dim (v and o: d_v).
    pub(crate) fn with_head_dim(mut self, head_dim: usize) -> Geometry {
        self.head_dim = head_dim;
        self
    }

    /// (stride, extent) of the batch, row and head dimensions.
    fn dims(&self) -> [(i64, usize); 3] {
        let s = self.strides;
        [
            (s.batch, self.items),
            (s.row, self.rows),
            (s.head, self.heads),
        ]
    }

    /// Elements from the base that the kernel may touch (largest offset + 1; 0 without rows),
    /// saturating at `usize::MAX` (a span that large is refused by [`check_span`]).
    pub(crate) fn extent(&self) -> usize {
        usize::try_from(span(&self.dims(), self.head_dim)).unwrap_or(usize::MAX)
    }

    fn check_strides(&self) -> Result<()> {
        let s = self.strides;
        for (dim, stride) in [
            (Dim::Batch, s.batch),
            (Dim::Seq, s.row),
            (Dim::Heads, s.head),
        ] {
            if stride < 0 {
                return Err(Error::NegativeStride {
                    tensor: self.tensor,
                    dim,
                    stride,
                });
            }
        }
        Ok(())
    }

    pub(crate) fn check_input(&self, dtype: DType) -> Result<()> {
        self.check_strides()?;
        if self.strides.row > MAX_ROW_STRIDE {
            return Err(Error::Overflow32 {
                limit: Limit::RowStride,
                value: self.strides.row as u64,
                max: MAX_ROW_STRIDE as u64,
            });
        }
        check_span(&self.dims(), self.head_dim, dtype.size())
    }

    pub(crate) fn check_output(&self, dtype: DType) -> Result<()> {
        self.check_strides()?;
        check_span(&self.dims(), self.head_dim, dtype.size())?;
        check_no_overlap(self.tensor, self.dims(), self.head_dim)
    }

    /// Every stride the kernel steps by must keep 16-byte row chunks aligned.
    pub(crate) fn check_alignment(&self, dtype: DType) -> Result<()> {
        let e = dtype.size() as u64;
        let s = self.strides;
        for (dim, stride) in [
            (Dim::Batch, s.batch),
            (Dim::Seq, s.row),
            (Dim::Heads, s.head),
        ] {
            // Strides are non-negative here (checked first), so the product fits u64.
            let bytes = (stride as u64).saturating_mul(e);
            if !bytes.is_multiple_of(COPY_ALIGN_BYTES as u64) {
                return Err(Error::Misaligned {
                    tensor: self.tensor,
                    what: AlignWhat::Stride(dim),
                    required: COPY_ALIGN_BYTES,
                    value: bytes,
                });
            }
        }
        Ok(())
    }
}
