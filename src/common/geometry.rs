//! Geometry every op shares: the strides of a row-major `[.., rows, heads, d]` tensor and of a
//! K/V page pool, and the CUDA limits that every plan checks its grid against.

use crate::common::abi;

/// CUDA's limit on grid y and z.
pub const MAX_GRID_YZ: u64 = 65_535;
/// Lengths, strides products and window bounds are int32 in the params structs.
pub const MAX_INDEX_32: u64 = i32::MAX as u64;
/// 16-byte vector accesses (cp.async, Q loads, TMA): bases and row strides of q/k/v/o and of
/// 16-bit pages keep every row chunk 16-byte aligned.
pub const COPY_ALIGN_BYTES: usize = abi::FLASHMHA_COPY_ALIGN_BYTES as usize;

/// Strides of a q/k/v/o tensor in elements. The head dim is always contiguous (stride 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Strides {
    /// Between batch items (padded layout only; ignored for varlen).
    pub batch: i64,
    /// Between sequence positions (rows).
    pub row: i64,
    /// Between heads.
    pub head: i64,
}

impl Strides {
    /// Contiguous `[b, s, h, d]` strides (for varlen, `[total, h, d]`: `seqlen` is ignored).
    pub fn contiguous(seqlen: usize, heads: usize, head_dim: usize) -> Strides {
        let row = (heads * head_dim) as i64;
        Strides {
            batch: seqlen as i64 * row,
            row,
            head: head_dim as i64,
        }
    }

    /// Head-major `[b, h, s, d]` strides.
    pub fn head_major(seqlen: usize, heads: usize, head_dim: usize) -> Strides {
        Strides {
            batch: (heads * seqlen * head_dim) as i64,
            row: head_dim as i64,
            head: (seqlen * head_dim) as i64,
        }
    }
}

/// Strides (elements) of a K or V page pool; element `(page, slot, kv_head, c)` lives at
/// `page * page + slot * slot + kv_head * head + c`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PageStrides {
    pub page: i64,
    pub slot: i64,
    pub head: i64,
}

impl PageStrides {
    /// `[num_pages, page_size, hkv, d]` contiguous (NHD).
    pub fn nhd(page_size: usize, num_heads_kv: usize, head_dim: usize) -> PageStrides {
        let slot = (num_heads_kv * head_dim) as i64;
        PageStrides {
            page: page_size as i64 * slot,
            slot,
            head: head_dim as i64,
        }
    }
    /// `[num_pages, hkv, page_size, d]` contiguous (HND).
    pub fn hnd(page_size: usize, num_heads_kv: usize, head_dim: usize) -> PageStrides {
        let head = (page_size * head_dim) as i64;
        PageStrides {
            page: num_heads_kv as i64 * head,
            slot: head_dim as i64,
            head,
        }
    }
    /// Elements a pool of `num_pages` pages spans (last element + 1).
    pub fn span(&self, num_pages: usize, page_size: usize, heads: usize, d: usize) -> u64 {
        if num_pages == 0 {
            return 0;
        }
        (num_pages as u64 - 1) * self.page as u64
            + (page_size as u64 - 1) * self.slot as u64
            + (heads as u64 - 1) * self.head as u64
            + d as u64
    }
}
