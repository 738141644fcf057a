//! Validation of a paged-decode problem: kernel availability, heads, page geometry, host-side
//! bounds, strides and options. Pure: reads the description, returns a typed [`DecodeError`].
//! Per-run buffer checks (sizes, alignment) live in [`super::plan::DecodePlan::params`].

use super::error::DecodeError;
use super::kernels::{DecodeKernelRow, DECODE_KERNELS};
use super::problem::{DecodeProblem, PageStrides, QueryLayout, RowStrides};
use crate::abi;

/// 16-byte vectors (cp.async, Q loads): strides in elements must keep rows 16-byte aligned.
pub const STRIDE_ALIGN_BYTES: i64 = abi::FLASHMHA_COPY_ALIGN_BYTES as i64;
/// The same in 16-bit elements (q, o and 16-bit pages).
pub const STRIDE_ALIGN_ELEMS: i64 = STRIDE_ALIGN_BYTES / 2;
/// CUDA's limit on grid y and z.
pub const MAX_GRID_YZ: u64 = 65_535;
/// Rows x heads of q (and of each split in the workspace) are indexed with int32 in the kernel.
pub const MAX_ROWS_X_HEADS: u64 = i32::MAX as u64;

fn range(what: &'static str, min: u64, max: u64, found: u64) -> Result<(), DecodeError> {
    if found < min || found > max {
        return Err(DecodeError::OutOfRange {
            what,
            min,
            max,
            found,
        });
    }
    Ok(())
}

fn row_strides(tensor: &'static str, s: &RowStrides, padded: bool) -> Result<(), DecodeError> {
    aligned_strides(tensor, &[("row", s.row), ("head", s.head)], 2)?;
    if padded {
        aligned_strides(tensor, &[("batch", s.batch)], 2)?;
    }
    Ok(())
}

/// Page strides are in elements of the cache type (`element_bytes` 2 or 1).
pub(crate) fn page_strides(
    tensor: &'static str,
    s: &PageStrides,
    element_bytes: usize,
) -> Result<(), DecodeError> {
    aligned_strides(
        tensor,
        &[("page", s.page), ("slot", s.slot), ("head", s.head)],
        element_bytes,
    )
}

/// Every stride of `tensor` must be a non-negative multiple of the 16-byte copy in elements.
fn aligned_strides(
    tensor: &'static str,
    strides: &[(&'static str, i64)],
    element_bytes: usize,
) -> Result<(), DecodeError> {
    let align = STRIDE_ALIGN_BYTES / element_bytes as i64;
    for &(stride, v) in strides {
        if v < 0 || v % align != 0 {
            return Err(DecodeError::Stride {
                tensor,
                stride,
                found: v,
                requirement: if element_bytes == 1 {
                    "a non-negative multiple of 16 FP8 elements"
                } else {
                    "a non-negative multiple of 8 elements"
                },
            });
        }
    }
    Ok(())
}

/// The compiled kernel serving `p`, after checking everything about `p`.
pub fn validate_decode(p: &DecodeProblem) -> Result<&'static DecodeKernelRow, DecodeError> {
    // FP8 pages have their own (fewer) entries: the error lists the head dims compiled for
    // this dtype and this kind of page.
    let kv_bytes = p.kv_element_bytes() as u32;
    let kernel = DECODE_KERNELS
        .iter()
        .find(|r| r.dtype == p.dtype && r.kv_bytes == kv_bytes && r.head_dim as usize == p.head_dim)
        .ok_or_else(|| DecodeError::UnsupportedHeadDim {
            dtype: p.dtype,
            head_dim: p.head_dim,
            supported: DECODE_KERNELS
                .iter()
                .filter(|r| r.dtype == p.dtype && r.kv_bytes == kv_bytes)
                .map(|r| r.head_dim)
                .collect(),
        })?;
    if p.num_heads_kv == 0 || p.num_heads_q == 0 || !p.num_heads_q.is_multiple_of(p.num_heads_kv) {
        return Err(DecodeError::Heads {
            num_heads_q: p.num_heads_q,
            num_heads_kv: p.num_heads_kv,
        });
    }
    range("batch", 1, MAX_GRID_YZ, p.batch as u64)?;
    range(
        "page_size",
        1,
        abi::FLASHMHA_DECODE_MAX_PAGE_SIZE as u64,
        p.page_size as u64,
    )?;
    range("num_pages", 1, i32::MAX as u64, p.num_pages as u64)?;
    let max_keys = abi::FLASHMHA_DECODE_MAX_CACHE_KEYS as u64 - 1;
    range(
        "max_pages_per_seq",
        1,
        max_keys / p.page_size as u64,
        p.max_pages_per_seq as u64,
    )?;
    range(
        "block_table_stride",
        p.max_pages_per_seq as u64,
        i32::MAX as u64,
        p.block_table_stride as u64,
    )?;
    range(
        "max_cache_len",
        0,
        (p.max_pages_per_seq * p.page_size) as u64,
        p.max_cache_len as u64,
    )?;
    let padded = match p.queries {
        QueryLayout::Padded { sq_new } => {
            range("sq_new", 1, i32::MAX as u64, sq_new as u64)?;
            true
        }
        QueryLayout::Varlen {
            total_q,
            max_seqlen_q,
        } => {
            range("total_q", 1, i32::MAX as u64, total_q as u64)?;
            range("max_seqlen_q", 1, total_q as u64, max_seqlen_q as u64)?;
            false
        }
    };
    range(
        "total_q x num_heads_q",
        1,
        MAX_ROWS_X_HEADS,
        (p.total_q() * p.num_heads_q) as u64,
    )?;
    let row_tiles = (p.group() * p.max_seqlen_q()).div_ceil(DECODE_TILE_ROWS);
    range(
        "num_heads_kv x row tiles (grid y)",
        1,
        MAX_GRID_YZ,
        (p.num_heads_kv * row_tiles) as u64,
    )?;
    row_strides("q", &p.q_strides, padded)?;
    row_strides("o", &p.o_strides, padded)?;
    page_strides("k_cache", &p.k_strides, p.kv_element_bytes())?;
    page_strides("v_cache", &p.v_strides, p.kv_element_bytes())?;
    let o = &p.options;
    if let Some(s) = o.softmax_scale {
        if !(s.is_finite() && s > 0.0) {
            return Err(DecodeError::Scale { found: s });
        }
    }
    if let Some(c) = o.softcap {
        if !(c.is_finite() && c > 0.0) {
            return Err(DecodeError::Softcap { found: c });
        }
    }
    if let Some(w) = o.window {
        for side in [w.left, w.right].into_iter().flatten() {
            range("window bound", 0, i32::MAX as u64, u64::from(side))?;
        }
    }
    Ok(kernel)
}

/// Packed query rows (group x new tokens) per CTA tile (`kDecodeRows` in
/// kernels/common/decode_traits.cuh: one m16 row block).
pub const DECODE_TILE_ROWS: usize = 16;

/// Checks a host copy of `cu_seqlens_q` against the problem's bounds (for callers that have
/// one; the kernel checks the device copy regardless).
pub fn validate_cu_seqlens_q(p: &DecodeProblem, cu: &[i32]) -> Result<(), DecodeError> {
    range(
        "cu_seqlens_q length",
        p.batch as u64 + 1,
        p.batch as u64 + 1,
        cu.len() as u64,
    )?;
    let mut prev = 0;
    for (i, &c) in cu.iter().enumerate() {
        let bad = if i == 0 {
            c != 0
        } else {
            c < prev || (c - prev) as usize > p.max_seqlen_q()
        };
        if bad || c as usize > p.total_q() {
            return Err(DecodeError::CuSeqlensQ {
                index: i,
                found: c,
                previous: prev,
            });
        }
        prev = c;
    }
    Ok(())
}

/// Checks an append of `tokens` rows into the pools of `p` (page geometry, strides of the
/// cache type, head dim in whole 16-byte source chunks, grid size). The scales, slots and
/// block-table entries are device data: the kernel checks the indices.
pub fn validate_kv_append(p: &DecodeProblem, tokens: usize) -> Result<(), DecodeError> {
    if p.num_heads_kv == 0 {
        return Err(DecodeError::Heads {
            num_heads_q: p.num_heads_q,
            num_heads_kv: p.num_heads_kv,
        });
    }
    range("num_tokens", 1, i32::MAX as u64, tokens as u64)?;
    range(
        "page_size",
        1,
        abi::FLASHMHA_DECODE_MAX_PAGE_SIZE as u64,
        p.page_size as u64,
    )?;
    range("num_pages", 1, i32::MAX as u64, p.num_pages as u64)?;
    range("batch", 1, i32::MAX as u64, p.batch as u64)?;
    let max_keys = abi::FLASHMHA_DECODE_MAX_CACHE_KEYS as u64 - 1;
    range(
        "max_pages_per_seq",
        1,
        max_keys / p.page_size as u64,
        p.max_pages_per_seq as u64,
    )?;
    range(
        "block_table_stride",
        p.max_pages_per_seq as u64,
        i32::MAX as u64,
        p.block_table_stride as u64,
    )?;
    if p.head_dim == 0 || !p.head_dim.is_multiple_of(STRIDE_ALIGN_ELEMS as usize) {
        return Err(DecodeError::OutOfRange {
            what: "head_dim (a positive multiple of 8 for append)",
            min: STRIDE_ALIGN_ELEMS as u64,
            max: i32::MAX as u64,
            found: p.head_dim as u64,
        });
    }
    // One thread per 8-element chunk of (token, head): the grid's x dimension.
    let threads = (tokens * p.num_heads_kv * p.head_dim / STRIDE_ALIGN_ELEMS as usize) as u64;
    range("append threads", 1, u64::from(u32::MAX), threads)?;
    page_strides("k_cache", &p.k_strides, p.kv_element_bytes())?;
    page_strides("v_cache", &p.v_strides, p.kv_element_bytes())?;
    Ok(())
}
