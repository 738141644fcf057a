//! Reference for paged decode: gathers each item's keys and values out of the page pools through
//! its block table into dense `[total_k, hkv, d]` tensors, lays q out densely, and calls the
//! candle [`attention_with_v_dim`] reference in its varlen layout. Nothing here knows how the
//! kernel tiles or splits; a match means the kernel computes attention over exactly the cached
//! keys.
//!
//! Canonical layouts of the results: `o: [total_q, hq, d_v]`, `lse, entropy: [hq, total_q]`
//! (padded problems: row `b * sq_new + i`). K pages hold d_qk (`head_dim`) elements per row, V
//! pages d_v (`head_dim_v`).

use super::attention::{attention_with_v_dim, ReferenceInputs, ReferenceOutputs};
use super::ReferenceError;
use crate::common::geometry::{PageStrides, Strides};
use crate::ops::decode::problem::{DecodeProblem, QueryLayout};

/// Host data of one paged call, values already as f32 (rounded to the kernel's input type).
#[derive(Debug, Clone, Copy)]
pub struct PagedReferenceInputs<'a> {
    pub problem: &'a DecodeProblem,
    /// q as stored (through `problem.q_strides`).
    pub q: &'a [f32],
    pub k_cache: &'a [f32],
    pub v_cache: &'a [f32],
    pub block_table: &'a [i32],
    pub cache_seqlens: &'a [i32],
    /// Device cu_seqlens_q of a varlen problem.
    pub cu_seqlens_q: Option<&'a [i32]>,
    pub alibi_slopes: Option<&'a [f32]>,
    pub head_gates: Option<&'a [f32]>,
    /// `[hq]` attention-sink logits (see [`ReferenceInputs::sinks`]).
    pub sinks: Option<&'a [f32]>,
}

/// Query rows `[start, end)` of every item in the canonical row space.
pub fn item_rows(p: &DecodeProblem, cu_seqlens_q: Option<&[i32]>) -> Vec<(usize, usize)> {
    match (&p.queries, cu_seqlens_q) {
        (QueryLayout::Padded { sq_new }, _) => (0..p.batch)
            .map(|b| (b * sq_new, (b + 1) * sq_new))
            .collect(),
        (QueryLayout::Varlen { .. }, Some(cu)) => cu
            .windows(2)
            .map(|w| (w[0] as usize, w[1] as usize))
            .collect(),
        (QueryLayout::Varlen { .. }, None) => Vec::new(),
    }
}

/// The rows of a q- or o-shaped tensor of head dim `d` laid out by `strides`, packed
/// canonically (`[total_q, hq, d]`): the reference's q, and a kernel's O for comparison.
pub fn pack_rows<T: Copy>(
    p: &DecodeProblem,
    (strides, d): (&Strides, usize),
    rows: &[(usize, usize)],
    data: &[T],
) -> Vec<T> {
    let total_q = rows.last().map_or(0, |r| r.1);
    let hq = p.num_heads_q;
    let mut out = Vec::with_capacity(total_q * hq * d);
    for r in 0..total_q {
        for h in 0..hq {
            let o = row_offset(p, strides, rows, r, h);
            out.extend_from_slice(&data[o..o + d]);
        }
    }
    out
}

/// Offset (elements) of row `r` (canonical), head `h` of a q/o tensor.
pub fn row_offset(
    p: &DecodeProblem,
    s: &Strides,
    rows: &[(usize, usize)],
    r: usize,
    h: usize,
) -> usize {
    let off = match p.queries {
        QueryLayout::Padded { sq_new } => {
            let (b, i) = (r / sq_new, r % sq_new);
            b as i64 * s.batch + i as i64 * s.row
        }
        QueryLayout::Varlen { .. } => {
            let _ = rows;
            r as i64 * s.row
        }
    };
    (off + h as i64 * s.head) as usize
}

/// Offset (elements) of row `r` (canonical), head `h` of the kernel's LSE / entropy output.
pub fn stat_offset(p: &DecodeProblem, r: usize, h: usize) -> usize {
    match p.queries {
        QueryLayout::Padded { sq_new } => {
            let (b, i) = (r / sq_new, r % sq_new);
            (b * p.num_heads_q + h) * sq_new + i
        }
        QueryLayout::Varlen { total_q, .. } => h * total_q + r,
    }
}

/// Element offset of (page, slot, kv head) in a pool.
fn page_offset(s: &PageStrides, page: usize, slot: usize, h: usize) -> usize {
    (page as i64 * s.page + slot as i64 * s.slot + h as i64 * s.head) as usize
}

/// Dense keys (or values) of every item: `[sum of cache_seqlens, hkv, d]`, from a pool of rows
/// of `d` elements.
pub fn gather_pages(
    p: &DecodeProblem,
    pool: &[f32],
    (strides, d): (&PageStrides, usize),
    block_table: &[i32],
    cache_seqlens: &[i32],
) -> Vec<f32> {
    let hkv = p.num_heads_kv;
    let mut out = Vec::new();
    for (b, &len) in cache_seqlens.iter().enumerate() {
        for j in 0..len as usize {
            let page = block_table[b * p.block_table_stride + j / p.page_size] as usize;
            for h in 0..hkv {
                let o = page_offset(strides, page, j % p.page_size, h);
                out.extend_from_slice(&pool[o..o + d]);
            }
        }
    }
    out
}

/// Reference O, LSE and entropy in the canonical layouts (module docs).
pub fn paged_attention(inp: &PagedReferenceInputs) -> Result<ReferenceOutputs, ReferenceError> {
    let p = inp.problem;
    let rows = item_rows(p, inp.cu_seqlens_q);
    if rows.len() != p.batch || inp.cache_seqlens.len() != p.batch {
        return Err(ReferenceError::Invalid(
            "batch, cu_seqlens_q and cache_seqlens disagree".into(),
        ));
    }
    let (hq, d) = (p.num_heads_q, p.head_dim);
    let q = pack_rows(p, (&p.q_strides, d), &rows, inp.q);
    let k = gather_pages(
        p,
        inp.k_cache,
        (&p.k_strides, d),
        inp.block_table,
        inp.cache_seqlens,
    );
    let v = gather_pages(
        p,
        inp.v_cache,
        (&p.v_strides, p.head_dim_v),
        inp.block_table,
        inp.cache_seqlens,
    );
    let cu_q: Vec<i32> = std::iter::once(0)
        .chain(rows.iter().map(|r| r.1 as i32))
        .collect();
    let mut cu_k = vec![0i32];
    for &l in inp.cache_seqlens {
        cu_k.push(cu_k.last().unwrap() + l);
    }
    let inputs = ReferenceInputs {
        alibi_slopes: inp.alibi_slopes,
        head_gates: inp.head_gates,
        sinks: inp.sinks,
        ..ReferenceInputs::varlen(
            (&q, &k, &v),
            (&cu_q, &cu_k),
            (hq, p.num_heads_kv),
            d,
            &p.options,
        )
    };
    attention_with_v_dim(&inputs, p.head_dim_v)
}
