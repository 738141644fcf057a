//! The tensor maps of the Hopper forward, as the plan describes them: a pure function from a
//! validated shape (and the row's tile) to the fields each backend hands its encoder (the
//! driver's `cuTensorMapEncodeTiled` on a GPU, `emulator::TensorMap::encode_tiled` in the
//! emulator), all but the base address, which `bind` supplies. The layout follows the comment
//! above `FlashFwdTmaParams` in kernels/params.h:
//! - rank 4, dimensions innermost first: (head_dim, heads, rows, batch);
//! - padded: rows = seqlen (q: seqlen_q, k / v: seqlen_k), batch = batch; varlen: rows = the
//!   packed total, batch = 1 (each item's rows start at its cu_seqlens entry);
//! - byte strides of dims 1..3 (head, row, batch stride x element size);
//! - box (64, 1, block_m for q / block_n for k and v, 1), 16-bit elements, 128-byte swizzle,
//!   zero out-of-bounds fill.
//!
//! Dimension 0 is the problem's head dim, not the compiled one: the kernel's boxes past it
//! (d48 on the d64 kernel, say) arrive as zeros, and nothing past a row's last column is read.

use crate::common::abi;
use crate::common::geometry::Strides;
use crate::ops::forward::problem::FwdShape;

/// Rank of every map (params.h: FLASHMHA_TMA_RANK).
pub const TMA_RANK: usize = abi::FLASHMHA_TMA_RANK as usize;
/// Columns per box: one 128-byte swizzle row of 16-bit elements (FLASHMHA_TMA_BOX_COLS).
pub const TMA_BOX_COLS: u32 = abi::FLASHMHA_TMA_BOX_COLS;
/// Byte strides must be multiples of 16 (CUDA Driver API, cuTensorMapEncodeTiled).
pub const TMA_STRIDE_ALIGN: u64 = 16;
/// ... and below 2^40 (same source).
pub const TMA_MAX_STRIDE_BYTES: u64 = 1 << 40;
/// Elements per dimension: the emulator's encoder takes up to 2^31 (the driver documents 2^32);
/// the stricter bound is checked so both backends accept every validated plan.
pub const TMA_MAX_DIM: u64 = 1 << 31;

/// Element type of the maps: `CU_TENSOR_MAP_DATA_TYPE_UINT16`, the bits of f16 or bf16 (the
/// kernel reinterprets them; TMA only moves bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TmaElement {
    U16,
}

impl TmaElement {
    pub fn bytes(self) -> u64 {
        2
    }
}

/// Swizzle of the maps' shared-memory boxes (`CUtensorMapSwizzle`): the 128-byte mode, whose
/// span is one 64-column box row of 16-bit elements (PTX ISA "Tensors: Tensor Swizzling Modes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TmaSwizzleMode {
    B128,
}

impl TmaSwizzleMode {
    pub fn bytes(self) -> u32 {
        128
    }
}

/// One tensor map without its base address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TmaMapDesc {
    /// Elements per dimension, innermost first: (head_dim, heads, rows, batch).
    pub global_dim: [u64; TMA_RANK],
    /// Byte strides of dimensions 1..=3 (dimension 0 is contiguous).
    pub global_strides: [u64; TMA_RANK - 1],
    /// Box (tile) size per dimension: (64, 1, block rows, 1).
    pub box_dim: [u32; TMA_RANK],
    pub element: TmaElement,
    pub swizzle: TmaSwizzleMode,
    // Out-of-bounds elements read as zero: the one fill the kernel relies on (rows past the
    // tensor and columns past head_dim contribute nothing), so it is not a field.
}

/// The three maps of one Hopper forward launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FwdTmaMaps {
    pub q: TmaMapDesc,
    pub k: TmaMapDesc,
    pub v: TmaMapDesc,
}

/// Which params struct a forward kernel takes.
// The maps stay inline (216 bytes, next to the 256-byte params of the same launch): a launch is
// a plain Copy value that `bind` returns without touching the heap on the per-layer path.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FwdParamsAbi {
    /// `FlashFwdParams` by value (the Ampere and Turing kernels).
    Fwd,
    /// `FlashFwdTmaParams` (the sm_90a kernels): these three maps, encoded per launch over the
    /// bound q / k / v addresses, then the `FlashFwdParams`.
    FwdTma(FwdTmaMaps),
}

impl FwdTmaMaps {
    /// The maps of `shape` for a kernel with `block_m` query rows and `block_n` key rows per
    /// tile. Pure; the shape must have passed validation (strides non-negative).
    pub fn describe(shape: &FwdShape, block_m: u32, block_n: u32) -> FwdTmaMaps {
        let s = shape;
        let (sq, sk) = s.seq.max_seqlens();
        let (tq, tk) = s.seq.total_rows();
        let (rows_q, rows_k, batch) = if s.seq.is_varlen() {
            (tq, tk, 1)
        } else {
            (sq, sk, s.seq.batch())
        };
        // q, k: d_qk columns; v: d_v.
        let map = |d: usize, strides: Strides, heads: usize, rows: usize, box_rows: u32| {
            describe_one(d, strides, heads, rows, batch, box_rows)
        };
        let (d, dv) = (s.head_dim, s.head_dim_v);
        FwdTmaMaps {
            q: map(d, s.strides.q, s.heads.q, rows_q, block_m),
            k: map(d, s.strides.k, s.heads.kv, rows_k, block_n),
            v: map(dv, s.strides.v, s.heads.kv, rows_k, block_n),
        }
    }

    /// The sm_90a kernel's `FlashFwdTmaParams`: each map encoded by `encode` over the address
    /// of its tensor in `base` (the driver's encoder on a GPU, the emulator's in the emulator),
    /// then `base` itself. Both backends build their launch bytes through this one function.
    pub fn params(
        &self,
        base: &abi::FlashFwdParams,
        mut encode: impl FnMut(
            crate::common::error::TensorName,
            &TmaMapDesc,
            u64,
        ) -> crate::common::error::Result<[u8; abi::TENSOR_MAP_BYTES]>,
    ) -> crate::common::error::Result<abi::FlashFwdTmaParams> {
        use crate::common::error::TensorName;
        Ok(abi::fwd_tma_params(
            &encode(TensorName::Q, &self.q, base.q as u64)?,
            &encode(TensorName::K, &self.k, base.k as u64)?,
            &encode(TensorName::V, &self.v, base.v as u64)?,
            base,
        ))
    }

    pub fn iter(&self) -> impl Iterator<Item = (crate::common::error::TensorName, &TmaMapDesc)> {
        use crate::common::error::TensorName;
        [
            (TensorName::Q, &self.q),
            (TensorName::K, &self.k),
            (TensorName::V, &self.v),
        ]
        .into_iter()
    }
}

fn describe_one(
    head_dim: usize,
    strides: Strides,
    heads: usize,
    rows: usize,
    batch: usize,
    box_rows: u32,
) -> TmaMapDesc {
    let element = TmaElement::U16;
    let e = element.bytes();
    // A varlen tensor with no rows at all (every item empty) is still described with one row:
    // the driver needs non-zero dims, and the kernel loads no row of an empty item.
    let dims = [head_dim, heads, rows.max(1), batch].map(|n| n as u64);
    let given = [strides.head, strides.row, strides.batch].map(|st| st.max(0) as u64 * e);
    // A dimension of extent 1 never steps, so its stride only has to satisfy the encoder
    // (multiple of 16, below 2^40; a caller's 0 or the meaningless varlen batch stride might
    // not): it gets the byte span of the dimensions inside it, rounded up to 16 and at least
    // 16, as a dense tensor would have.
    let mut out = [0u64; TMA_RANK - 1];
    let mut span = dims[0] * e;
    for k in 1..TMA_RANK {
        out[k - 1] = if dims[k] == 1 {
            span.max(1).next_multiple_of(TMA_STRIDE_ALIGN)
        } else {
            given[k - 1]
        };
        span = span.max(out[k - 1].saturating_mul(dims[k]));
    }
    TmaMapDesc {
        global_dim: dims,
        global_strides: out,
        box_dim: [TMA_BOX_COLS, 1, box_rows, 1],
        element,
        swizzle: TmaSwizzleMode::B128,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::dtype::DType;
    use crate::common::options::AttnOptions;
    use crate::host::problem::{FwdProblem, SeqLayout};

    fn padded(b: usize, sq: usize, sk: usize, hq: usize, hkv: usize, d: usize) -> FwdProblem {
        FwdProblem::contiguous(
            DType::F16,
            SeqLayout::Padded {
                batch: b,
                seqlen_q: sq,
                seqlen_k: sk,
            },
            hq,
            hkv,
            d,
            AttnOptions::default(),
        )
    }

    fn maps(p: &FwdProblem) -> FwdTmaMaps {
        FwdTmaMaps::describe(&p.shape().unwrap(), 128, 64)
    }

    #[test]
    fn padded_contiguous_maps_follow_params_h() {
        // q [2, 100, 8, 128], k / v [2, 300, 8, 128] (BSHD, f16).
        let m = maps(&padded(2, 100, 300, 8, 8, 128));
        assert_eq!(m.q.global_dim, [128, 8, 100, 2]);
        // Byte strides: head 128 x 2, row 8 x 128 x 2, batch 100 x 8 x 128 x 2.
        assert_eq!(m.q.global_strides, [256, 2048, 204_800]);
        assert_eq!(m.q.box_dim, [64, 1, 128, 1]);
        assert_eq!(m.k.global_dim, [128, 8, 300, 2]);
        assert_eq!(m.k.global_strides, [256, 2048, 614_400]);
        assert_eq!(m.k.box_dim, [64, 1, 64, 1]);
        assert_eq!(m.v, m.k);
        assert_eq!(m.q.element, TmaElement::U16);
        assert_eq!(m.q.swizzle, TmaSwizzleMode::B128);
        // The swizzle span holds exactly one box row.
        assert_eq!(
            m.q.swizzle.bytes() as u64,
            m.q.box_dim[0] as u64 * m.q.element.bytes()
        );
    }

    #[test]
    fn gqa_maps_k_and_v_with_the_kv_heads() {
        let m = maps(&padded(1, 10, 20, 12, 4, 64));
        assert_eq!(m.q.global_dim, [64, 12, 10, 1]);
        assert_eq!(m.k.global_dim, [64, 4, 20, 1]);
        assert_eq!(m.q.global_strides[..2], [128, 12 * 128]);
        assert_eq!(m.k.global_strides[..2], [128, 4 * 128]);
        // batch = 1: the stride is the span of a whole item (rows x row stride), not used.
        assert_eq!(m.q.global_strides[2], 10 * 12 * 128);
        assert_eq!(m.k.global_strides[2], 20 * 4 * 128);
    }

    #[test]
    fn varlen_maps_span_the_packed_rows_with_one_batch_item() {
        let p = FwdProblem::varlen(
            DType::Bf16,
            (vec![0, 3, 10, 10], vec![0, 30, 31, 90]),
            (4, 2),
            64,
        );
        let m = maps(&p);
        assert_eq!(m.q.global_dim, [64, 4, 10, 1]);
        assert_eq!(m.k.global_dim, [64, 2, 90, 1]);
        assert_eq!(m.q.global_strides[..2], [128, 512]);
        assert_eq!(m.k.global_strides[..2], [128, 256]);
        // Varlen has no batch stride (Strides::contiguous gives 0 there): a valid one is picked,
        // the byte span of the packed rows.
        assert_eq!(m.q.global_strides[2], 10 * 512);
        assert_eq!(m.k.global_strides[2], 90 * 256);
        for d in [m.q, m.k, m.v] {
            assert!(d
                .global_strides
                .iter()
                .all(|&s| s > 0 && s % 16 == 0 && s < TMA_MAX_STRIDE_BYTES));
        }
    }

    #[test]
    fn varlen_without_any_rows_is_described_with_one() {
        let p = FwdProblem::varlen(DType::F16, (vec![0, 0], vec![0, 5]), (2, 2), 64);
        let m = maps(&p);
        assert_eq!(m.q.global_dim, [64, 2, 1, 1]);
        assert_eq!(m.k.global_dim, [64, 2, 5, 1]);
    }

    #[test]
    fn a_head_dim_below_the_compiled_one_is_the_global_inner_dim() {
        // d48 runs on the d64 kernel: the global dim is 48, so the box's columns 48..64 are
        // out of bounds and arrive as zeros; the row stride stays the caller's.
        let m = maps(&padded(1, 7, 9, 2, 2, 48));
        assert_eq!(m.q.global_dim[0], 48);
        assert_eq!(m.q.box_dim[0], 64);
        assert_eq!(m.q.global_strides[..2], [96, 192]);
        // d200 on the d256 kernel: four boxes per row, the last one half out of bounds.
        let m = maps(&padded(1, 7, 9, 1, 1, 200));
        assert_eq!(m.k.global_dim, [200, 1, 9, 1]);
        // One head: its stride is the span of one 200-element row (400 bytes).
        assert_eq!(m.k.global_strides[0], 400);
    }

    #[test]
    fn bhsd_strides_map_directly() {
        // q: [b=2, hq=4, sq=33, d=64] head-major with 8 elements of row padding.
        let mut p = padded(2, 33, 40, 4, 4, 64);
        p.q.strides = Strides {
            batch: 4 * 33 * 72,
            head: 33 * 72,
            row: 72,
        };
        p.q.len = 2 * 4 * 33 * 72;
        p.o = p.q;
        let m = maps(&p);
        assert_eq!(m.q.global_dim, [64, 4, 33, 2]);
        assert_eq!(m.q.global_strides, [33 * 72 * 2, 72 * 2, 4 * 33 * 72 * 2]);
    }

    #[test]
    fn a_zero_stride_of_an_extent_one_dim_is_replaced() {
        let mut p = padded(1, 5, 5, 1, 1, 64);
        p.q.strides = Strides {
            batch: 0,
            head: 0,
            row: 64,
        };
        let m = maps(&p);
        // head (extent 1): the 128 bytes of a row; batch (extent 1): the 5 rows.
        assert_eq!(m.q.global_strides, [128, 128, 640]);
    }
}
