//! Geometry every op shares: the strides of a row-major `[.., rows, heads, d]` tensor and of a
//! K/V page pool, and the CUDA limits that every plan checks its grid against.

use crate::common::abi;
use crate::common::error::{Error, Limit, Result, TensorName};

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
        let (batch, row, head) = nested(seqlen, heads, head_dim);
        Strides { batch, row, head }
    }

    /// Head-major `[b, h, s, d]` strides.
    pub fn head_major(seqlen: usize, heads: usize, head_dim: usize) -> Strides {
        let (batch, head, row) = nested(heads, seqlen, head_dim);
        Strides { batch, row, head }
    }
}

/// Strides of a contiguous `[outer, a, b, head_dim]` tensor: (outer, a, b), saturating
/// ([`stride_of`]). Every q/k/v/o layout and page layout is one order of its axes.
fn nested(a: usize, b: usize, head_dim: usize) -> (i64, i64, i64) {
    (
        stride_of(&[a, b, head_dim]),
        stride_of(&[b, head_dim]),
        stride_of(&[head_dim]),
    )
}

/// `a * b * ...` of sizes as an i64 stride, saturating at `i64::MAX`: absurd sizes make absurd
/// strides that validation then refuses with a typed error, never a wrapped (or panicking)
/// product.
pub(crate) fn stride_of(factors: &[usize]) -> i64 {
    factors
        .iter()
        .map(|&f| i64::try_from(f).unwrap_or(i64::MAX))
        .fold(1i64, i64::saturating_mul)
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
        let (page, slot, head) = nested(page_size, num_heads_kv, head_dim);
        PageStrides { page, slot, head }
    }
    /// `[num_pages, hkv, page_size, d]` contiguous (HND).
    pub fn hnd(page_size: usize, num_heads_kv: usize, head_dim: usize) -> PageStrides {
        let (page, head, slot) = nested(num_heads_kv, page_size, head_dim);
        PageStrides { page, slot, head }
    }
    /// (stride, extent) of the page, slot and head dimensions of a pool.
    pub(crate) fn dims(
        &self,
        num_pages: usize,
        page_size: usize,
        heads: usize,
    ) -> [(i64, usize); 3] {
        [
            (self.page, num_pages),
            (self.slot, page_size),
            (self.head, heads),
        ]
    }
    /// Elements a pool of `num_pages` pages spans (last element + 1; 0 when any size is 0),
    /// saturating at `u64::MAX` (validation refuses spans past the kernels' int64 offsets).
    pub fn span(&self, num_pages: usize, page_size: usize, heads: usize, d: usize) -> u64 {
        let dims = self.dims(num_pages, page_size, heads);
        u64::try_from(span(&dims, d)).unwrap_or(u64::MAX)
    }
}

/// Largest element offset + 1 of a tensor whose dimensions are `(stride, extent)` (strides
/// non-negative) plus a contiguous head dim; 0 when any extent is 0. In 128-bit: no product of
/// host sizes can wrap.
pub(crate) fn span(dims: &[(i64, usize)], head_dim: usize) -> u128 {
    if head_dim == 0 || dims.iter().any(|&(_, n)| n == 0) {
        return 0;
    }
    dims.iter()
        .map(|&(stride, n)| (n as u128 - 1) * stride.max(0) as u128)
        .sum::<u128>()
        + head_dim as u128
}

/// The bytes a tensor spans must fit the kernels' signed 64-bit offsets
/// ([`Limit::Span64`]); every op checks its tensors with this one rule.
pub(crate) fn check_span(
    dims: &[(i64, usize)],
    head_dim: usize,
    element_bytes: usize,
) -> Result<()> {
    let bytes = span(dims, head_dim) * element_bytes as u128;
    if bytes > i64::MAX as u128 {
        return Err(Error::Overflow32 {
            limit: Limit::Span64,
            value: u64::try_from(bytes).unwrap_or(u64::MAX),
            max: i64::MAX as u64,
        });
    }
    Ok(())
}

/// An output's distinct (item, row, head, col) must map to distinct elements, or CTAs race:
/// sort the dimensions that vary (extent > 1) by stride; each stride must step past everything
/// the smaller ones span. `dims` are the (stride, extent) of batch, row and head (non-negative
/// strides). The one rule of every op that writes through strides (forward and decode O).
pub(crate) fn check_no_overlap(
    tensor: TensorName,
    dims: [(i64, usize); 3],
    head_dim: usize,
) -> Result<()> {
    if span(&dims, head_dim) == 0 {
        // No rows (e.g. a varlen batch with no queries): nothing is written.
        return Ok(());
    }
    let [(batch, _), (row, _), (head, _)] = dims;
    let mut varying = dims.map(|(stride, extent)| {
        if extent > 1 {
            (stride.max(0) as u128, extent as u128)
        } else {
            (u128::MAX, 1)
        }
    });
    varying.sort_unstable();
    // Largest offset reachable by the dimensions seen so far (the contiguous head dim first).
    let mut reach = head_dim as u128 - 1;
    for (stride, extent) in varying.into_iter().filter(|&(_, extent)| extent > 1) {
        if stride <= reach {
            return Err(Error::OverlappingOutput {
                tensor,
                batch,
                row,
                head,
                head_dim,
            });
        }
        reach += stride * (extent - 1);
    }
    Ok(())
}

/// How the sequences of a batch are laid out, with the real lengths (the sequence bounds the
/// plans take, [`crate::ops::forward::SeqShape`], are derived from it): `C` holds each
/// `cu_seqlens` (`Vec<i32>` for host problems, `&[i32]` for the reference's borrowed inputs,
/// `crate::reference::Layout`). Data is contiguous and row-major in both layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqLayout<C = Vec<i32>> {
    /// `q, o: [b, sq, hq, d]`, `k, v: [b, sk, hkv, d]`, `lse, entropy: [b, hq, sq]`.
    Padded {
        batch: usize,
        seqlen_q: usize,
        seqlen_k: usize,
    },
    /// `q, o: [total_q, hq, d]`, `k, v: [total_k, hkv, d]`, `lse, entropy: [hq, total_q]`;
    /// item `i` owns rows `cu_seqlens_q[i]..cu_seqlens_q[i + 1]` (same for k). For a host
    /// problem these are the host copies of the device `cu_seqlens` buffers, used for
    /// validation and grid sizing (no device sync).
    Varlen { cu_seqlens_q: C, cu_seqlens_k: C },
}

impl<C: AsRef<[i32]>> SeqLayout<C> {
    pub fn batch(&self) -> usize {
        match self {
            SeqLayout::Padded { batch, .. } => *batch,
            SeqLayout::Varlen { cu_seqlens_q, .. } => cu_seqlens_q.as_ref().len().saturating_sub(1),
        }
    }

    /// A per-item length of q and of k: the padded lengths, or `of` each `cu_seqlens`.
    fn lengths(&self, of: impl Fn(&[i32]) -> usize) -> (usize, usize) {
        match self {
            SeqLayout::Padded {
                seqlen_q, seqlen_k, ..
            } => (*seqlen_q, *seqlen_k),
            SeqLayout::Varlen {
                cu_seqlens_q,
                cu_seqlens_k,
            } => (of(cu_seqlens_q.as_ref()), of(cu_seqlens_k.as_ref())),
        }
    }

    /// (longest q sequence, longest k sequence).
    pub fn max_seqlens(&self) -> (usize, usize) {
        self.lengths(max_len)
    }

    /// (q rows, k rows) over the whole batch, as the tensors hold them (saturating: the plan
    /// refuses such sizes with a typed error).
    pub fn total_rows(&self) -> (usize, usize) {
        match self {
            SeqLayout::Padded {
                batch,
                seqlen_q,
                seqlen_k,
            } => (
                batch.saturating_mul(*seqlen_q),
                batch.saturating_mul(*seqlen_k),
            ),
            SeqLayout::Varlen {
                cu_seqlens_q,
                cu_seqlens_k,
            } => (
                cu_seqlens_q
                    .as_ref()
                    .last()
                    .map_or(0, |&v| v.max(0) as usize),
                cu_seqlens_k
                    .as_ref()
                    .last()
                    .map_or(0, |&v| v.max(0) as usize),
            ),
        }
    }

    /// (sq, sk) of batch item `i`.
    pub fn seqlens_of(&self, i: usize) -> (usize, usize) {
        // In i64: host copies are not validated yet, and i32 differences can overflow.
        self.lengths(|cu| (i64::from(cu[i + 1]) - i64::from(cu[i])).max(0) as usize)
    }

    pub fn is_varlen(&self) -> bool {
        matches!(self, SeqLayout::Varlen { .. })
    }

    /// The same layout borrowing its `cu_seqlens` (what the reference takes).
    pub fn as_slices(&self) -> SeqLayout<&[i32]> {
        match self {
            SeqLayout::Padded {
                batch,
                seqlen_q,
                seqlen_k,
            } => SeqLayout::Padded {
                batch: *batch,
                seqlen_q: *seqlen_q,
                seqlen_k: *seqlen_k,
            },
            SeqLayout::Varlen {
                cu_seqlens_q,
                cu_seqlens_k,
            } => SeqLayout::Varlen {
                cu_seqlens_q: cu_seqlens_q.as_ref(),
                cu_seqlens_k: cu_seqlens_k.as_ref(),
            },
        }
    }
}

fn max_len(cu: &[i32]) -> usize {
    cu.windows(2)
        .map(|w| (w[1] as i64 - w[0] as i64).max(0) as usize)
        .max()
        .unwrap_or(0)
}
