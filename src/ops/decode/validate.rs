//! Validation of a paged-decode problem: kernel availability, heads, page geometry, host-side
//! bounds, strides and options. Pure: reads the description, returns a typed [`Error`].
//! Per-run buffer checks (sizes, alignment) live in [`super::plan::DecodePlan::params`].

use super::kernels::{DecodeKernelRow, DECODE_KERNELS};
use super::problem::{DecodeProblem, QueryLayout};
use crate::common::abi;
use crate::common::dtype::DType;
use crate::common::error::{AlignWhat, Dim, Error, Limit, Result, TensorName};
use crate::common::geometry::{check_no_overlap, check_span};
use crate::common::geometry::{PageStrides, Strides};
use crate::common::target::KernelTarget;

/// 16-byte vectors (cp.async, Q loads): strides in elements must keep rows 16-byte aligned.
pub const STRIDE_ALIGN_BYTES: i64 = abi::FLASHMHA_COPY_ALIGN_BYTES as i64;
/// The same in 16-bit elements (q, o and 16-bit pages).
pub const STRIDE_ALIGN_ELEMS: i64 = STRIDE_ALIGN_BYTES / 2;
use crate::common::geometry::MAX_GRID_YZ;
/// Rows x heads of q (and of each split in the workspace) are indexed with int32 in the kernel.
pub const MAX_ROWS_X_HEADS: u64 = i32::MAX as u64;

/// `found` must be >= 1 ([`Error::EmptyDim`]) and <= `max` ([`Error::DimTooLarge`]).
pub(crate) fn dim_in(tensor: TensorName, dim: Dim, max: u64, found: usize) -> Result<()> {
    if found == 0 {
        return Err(Error::EmptyDim { tensor, dim });
    }
    if found as u64 > max {
        return Err(Error::DimTooLarge {
            tensor,
            dim,
            max: max as usize,
            found,
        });
    }
    Ok(())
}

/// `value` must be <= `max` ([`Error::Overflow32`]).
pub(crate) fn fits(limit: Limit, max: u64, value: u64) -> Result<()> {
    if value > max {
        return Err(Error::Overflow32 { limit, value, max });
    }
    Ok(())
}

pub(crate) fn row_strides(tensor: TensorName, s: &Strides, padded: bool) -> Result<()> {
    aligned_strides(tensor, &[(Dim::Seq, s.row), (Dim::Heads, s.head)], 2)?;
    if padded {
        aligned_strides(tensor, &[(Dim::Batch, s.batch)], 2)?;
    }
    Ok(())
}

/// Page strides are in elements of the cache type (`element_bytes` 2, or 1 for FP8).
pub(crate) fn page_strides(
    tensor: TensorName,
    s: &PageStrides,
    element_bytes: usize,
) -> Result<()> {
    aligned_strides(
        tensor,
        &[
            (Dim::Page, s.page),
            (Dim::Slot, s.slot),
            (Dim::Heads, s.head),
        ],
        element_bytes,
    )
}

/// Every stride of `tensor` must be a non-negative multiple of the 16-byte copy in elements
/// of `element_bytes` bytes.
fn aligned_strides(tensor: TensorName, strides: &[(Dim, i64)], element_bytes: usize) -> Result<()> {
    let align = STRIDE_ALIGN_BYTES / element_bytes as i64;
    for &(dim, stride) in strides {
        if stride < 0 {
            return Err(Error::NegativeStride {
                tensor,
                dim,
                stride,
            });
        }
        if stride % align != 0 {
            return Err(Error::Misaligned {
                tensor,
                what: AlignWhat::Stride(dim),
                required: abi::FLASHMHA_COPY_ALIGN_BYTES as usize,
                value: element_bytes as u64 * stride as u64,
            });
        }
    }
    Ok(())
}

/// The compiled decode head dim of `target` that serves `head_dim` for `dtype` over pages of
/// `kv_bytes` per element, if any. 16-bit pages: a multiple of 8 runs on the narrowest compiled
/// head dim at least as wide (the forward's rule, [`crate::ops::forward::validate::forward_kernel_for`]):
/// the kernel zero-fills the columns past it and issues only the mma steps it needs. FP8
/// pages: the compiled head dims only. Used by validation and by callers (the CLI, the tests)
/// that draw head dims.
pub fn decode_width_for(
    target: KernelTarget,
    dtype: DType,
    kv_bytes: u32,
    head_dim: usize,
) -> Option<u32> {
    let target = target.shared_kernels();
    DECODE_KERNELS
        .iter()
        .filter(|r| {
            r.target == target
                && r.head_dim_v == r.head_dim
                && r.dtype == dtype
                && r.kv_bytes == kv_bytes
                && head_dim > 0
                && head_dim.is_multiple_of(8)
                && if kv_bytes == 2 {
                    r.head_dim as usize >= head_dim
                } else {
                    r.head_dim as usize == head_dim
                }
        })
        .map(|r| r.head_dim)
        .min()
}

/// The compiled kernel of `target` serving `p`, after checking everything about `p`. Turing
/// has f16 decode over 16-bit pages only: bf16 is [`Error::UnsupportedDType`], FP8 pages
/// [`Error::UnsupportedOnTarget`]. Hopper decodes with the Ampere rows.
pub fn validate_decode_for(
    target: KernelTarget,
    p: &DecodeProblem,
) -> Result<&'static DecodeKernelRow> {
    let target = target.shared_kernels();
    if !target.supports(p.dtype) {
        return Err(Error::UnsupportedDType {
            dtype: p.dtype,
            target,
        });
    }
    // FP8 pages have their own (fewer) entries: the error lists the head dims compiled for
    // this dtype and this kind of page. Among the entries of (dtype, pages, d), a 32-row tile
    // when an item has more than 16 packed rows per KV head (K/V then pass through each CTA
    // for up to 32 rows instead of 16), else the 16-row tile.
    let kv_bytes = p.kv_element_bytes() as u32;
    if target == KernelTarget::Turing && kv_bytes != 2 {
        return Err(Error::UnsupportedOnTarget {
            what: "decode over FP8 KV pages",
            target,
        });
    }
    // Saturating: absurd sizes are refused below, after the kernel lookup.
    let rows = p.group().saturating_mul(p.max_seqlen_q());
    let wanted_tile = if rows > DECODE_TILE_ROWS {
        DECODE_TILE_ROWS_WIDE
    } else {
        DECODE_TILE_ROWS
    };
    let width = decode_width_for(target, p.dtype, kv_bytes, p.head_dim);
    // d_v != d_qk (issue 23): the row compiled for exactly the pair, else the widths' rule.
    let split_dims = p.head_dim_v != p.head_dim;
    let serves = |r: &&DecodeKernelRow| {
        r.target == target
            && r.dtype == p.dtype
            && r.kv_bytes == kv_bytes
            && if split_dims {
                (r.head_dim as usize, r.head_dim_v as usize) == (p.head_dim, p.head_dim_v)
            } else {
                r.head_dim_v == r.head_dim && Some(r.head_dim) == width
            }
    };
    let kernel = DECODE_KERNELS
        .iter()
        .filter(serves)
        .find(|r| r.tile_rows as usize == wanted_tile)
        .or_else(|| {
            DECODE_KERNELS
                .iter()
                .filter(serves)
                .find(|r| r.tile_rows as usize == DECODE_TILE_ROWS)
        });
    let kernel = match kernel {
        Some(k) => k,
        None if split_dims => {
            return Err(Error::UnsupportedHeadDimPair {
                dtype: p.dtype,
                head_dim: p.head_dim,
                head_dim_v: p.head_dim_v,
                target,
                supported: decode_head_dim_pairs(target, p.dtype, kv_bytes),
            })
        }
        None => Err(Error::UnsupportedHeadDim {
            dtype: p.dtype,
            head_dim: p.head_dim,
            target,
            supported: {
                // Sorted and distinct: a head dim with a 16- and a 32-row tile is listed once.
                let mut dims: Vec<u32> = DECODE_KERNELS
                    .iter()
                    .filter(|r| r.target == target && r.dtype == p.dtype && r.kv_bytes == kv_bytes)
                    .filter(|r| r.head_dim_v == r.head_dim)
                    .map(|r| r.head_dim)
                    .collect();
                dims.sort_unstable();
                dims.dedup();
                dims
            },
        })?,
    };
    if p.num_heads_q == 0 {
        return Err(Error::EmptyDim {
            tensor: TensorName::Q,
            dim: Dim::Heads,
        });
    }
    if p.num_heads_kv == 0 {
        return Err(Error::EmptyDim {
            tensor: TensorName::KCache,
            dim: Dim::Heads,
        });
    }
    if !p.num_heads_q.is_multiple_of(p.num_heads_kv) {
        return Err(Error::HeadsNotDivisible {
            heads_q: p.num_heads_q,
            heads_kv: p.num_heads_kv,
        });
    }
    if p.batch == 0 {
        return Err(Error::EmptyDim {
            tensor: TensorName::Q,
            dim: Dim::Batch,
        });
    }
    fits(Limit::GridYz, MAX_GRID_YZ, p.batch as u64)?;
    let padded = lengths(p)?;
    let row_tiles = rows.div_ceil(kernel.tile_rows as usize);
    fits(
        Limit::GridYz,
        MAX_GRID_YZ,
        (p.num_heads_kv as u64).saturating_mul(row_tiles as u64),
    )?;
    row_strides(TensorName::Q, &p.q_strides, padded)?;
    row_strides(TensorName::O, &p.o_strides, padded)?;
    page_strides(TensorName::KCache, &p.k_strides, p.kv_element_bytes())?;
    page_strides(TensorName::VCache, &p.v_strides, p.kv_element_bytes())?;
    let e = p.dtype.size();
    // q rows of d_qk elements, o rows of d_v.
    check_span(&p.q_dims(&p.q_strides), p.head_dim, e)?;
    check_span(&p.q_dims(&p.o_strides), p.head_dim_v, e)?;
    pool_spans(p)?;
    // The forward's rule: distinct (item, row, head, col) of O are distinct elements.
    check_no_overlap(TensorName::O, p.q_dims(&p.o_strides), p.head_dim_v)?;
    p.options.validate()?;
    Ok(kernel)
}

/// The page geometry, the host-side cache bound against the block table, the query layout's
/// lengths and rows x heads within int32; returns whether q / o are padded (batch strides
/// used). Shared by the paged decode and the MLA decode.
pub(crate) fn lengths(p: &DecodeProblem) -> Result<bool> {
    page_geometry(p)?;
    // Both bounded by page_geometry (their product is below the kernel's key bound).
    let max_cache_len = (p.max_pages_per_seq * p.page_size) as u64;
    if p.max_cache_len as u64 > max_cache_len {
        return Err(Error::DimTooLarge {
            tensor: TensorName::CacheSeqlens,
            dim: Dim::Seq,
            max: max_cache_len as usize,
            found: p.max_cache_len,
        });
    }
    let padded = match p.queries {
        QueryLayout::Padded { sq_new } => {
            dim_in(TensorName::Q, Dim::Seq, i32::MAX as u64, sq_new)?;
            true
        }
        QueryLayout::Varlen {
            total_q,
            max_seqlen_q,
        } => {
            dim_in(TensorName::Q, Dim::Len, i32::MAX as u64, total_q)?;
            dim_in(TensorName::Q, Dim::Seq, total_q as u64, max_seqlen_q)?;
            false
        }
    };
    fits(
        Limit::Rows32,
        MAX_ROWS_X_HEADS,
        (p.total_q() as u64).saturating_mul(p.num_heads_q as u64),
    )?;
    Ok(padded)
}

/// Packed query rows (group x new tokens) per CTA tile of the default entries
/// (`kDecodeRowsPerBlock` in kernels/common/decode_traits.cuh: one m16 row block).
pub const DECODE_TILE_ROWS: usize = 16;
/// Rows of the wide (`_r32`) entries: two m16 row blocks per warp.
pub const DECODE_TILE_ROWS_WIDE: usize = 32;

/// The compiled (d_qk, d_v) pairs with d_qk != d_v of `target` for `dtype` over pages of
/// `kv_bytes` per element, sorted and distinct: what [`Error::UnsupportedHeadDimPair`] lists.
pub fn decode_head_dim_pairs(target: KernelTarget, dtype: DType, kv_bytes: u32) -> Vec<(u32, u32)> {
    let target = target.shared_kernels();
    let mut pairs: Vec<(u32, u32)> = DECODE_KERNELS
        .iter()
        .filter(|r| r.target == target && r.dtype == dtype && r.kv_bytes == kv_bytes)
        .filter(|r| r.head_dim_v != r.head_dim)
        .map(|r| (r.head_dim, r.head_dim_v))
        .collect();
    pairs.sort_unstable();
    pairs.dedup();
    pairs
}

/// The page pools' and block table's geometry, shared by decode and append: page size in
/// 1..=FLASHMHA_DECODE_MAX_PAGE_SIZE, page count and block-table stride within i32, and no
/// more pages per sequence than the kernel's key bound allows.
pub(crate) fn page_geometry(p: &DecodeProblem) -> Result<()> {
    dim_in(
        TensorName::KCache,
        Dim::Slot,
        u64::from(abi::FLASHMHA_DECODE_MAX_PAGE_SIZE),
        p.page_size,
    )?;
    dim_in(TensorName::KCache, Dim::Page, i32::MAX as u64, p.num_pages)?;
    let max_keys = abi::FLASHMHA_DECODE_MAX_CACHE_KEYS as u64 - 1;
    dim_in(
        TensorName::BlockTable,
        Dim::Page,
        max_keys / p.page_size as u64,
        p.max_pages_per_seq,
    )?;
    if p.block_table_stride < p.max_pages_per_seq {
        return Err(Error::StrideTooSmall {
            tensor: TensorName::BlockTable,
            dim: Dim::Batch,
            stride: p.block_table_stride as i64,
            min: p.max_pages_per_seq as i64,
        });
    }
    fits(Limit::Rows32, i32::MAX as u64, p.block_table_stride as u64)?;
    Ok(())
}

/// Checks an append of `tokens` rows into the pools of `p` (page geometry, strides of the
/// cache type, head dim in whole 16-byte source chunks, grid size). The scales, slots, positions
/// and block-table entries are device data: the kernel checks the indices.
pub fn validate_kv_append(p: &DecodeProblem, tokens: usize) -> Result<()> {
    if p.num_heads_kv == 0 {
        return Err(Error::EmptyDim {
            tensor: TensorName::KCache,
            dim: Dim::Heads,
        });
    }
    // Zero tokens is a valid, empty append (the plan binds to no launch).
    if tokens > 0 {
        dim_in(TensorName::KNew, Dim::Seq, i32::MAX as u64, tokens)?;
    }
    page_geometry(p)?;
    dim_in(TensorName::BlockTable, Dim::Batch, i32::MAX as u64, p.batch)?;
    // One head dim per append (k_new and v_new rows alike): pools of d_qk != d_v pages are
    // appended by no kernel yet.
    if p.head_dim_v != p.head_dim {
        return Err(Error::UnsupportedHeadDimPair {
            dtype: p.dtype,
            head_dim: p.head_dim,
            head_dim_v: p.head_dim_v,
            target: KernelTarget::Ampere,
            supported: Vec::new(),
        });
    }
    if p.head_dim == 0 || !p.head_dim.is_multiple_of(STRIDE_ALIGN_ELEMS as usize) {
        return Err(Error::Misaligned {
            tensor: TensorName::KNew,
            what: AlignWhat::HeadDim,
            required: abi::FLASHMHA_COPY_ALIGN_BYTES as usize,
            value: (p.head_dim as u64).saturating_mul(2),
        });
    }
    // One thread per 8-element chunk of (token, head): the grid's x dimension.
    let threads = (tokens as u64)
        .saturating_mul(p.num_heads_kv as u64)
        .saturating_mul(p.head_dim as u64)
        / STRIDE_ALIGN_ELEMS as u64;
    fits(Limit::GridX, u64::from(u32::MAX), threads)?;
    page_strides(TensorName::KCache, &p.k_strides, p.kv_element_bytes())?;
    page_strides(TensorName::VCache, &p.v_strides, p.kv_element_bytes())?;
    pool_spans(p)
}

/// Both page pools' byte spans fit the kernels' int64 offsets (K rows of d_qk elements, V rows
/// of d_v).
pub(crate) fn pool_spans(p: &DecodeProblem) -> Result<()> {
    for (s, d) in [(&p.k_strides, p.head_dim), (&p.v_strides, p.head_dim_v)] {
        check_span(
            &s.dims(p.num_pages, p.page_size, p.num_heads_kv),
            d,
            p.kv_element_bytes(),
        )?;
    }
    Ok(())
}
