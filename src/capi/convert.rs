//! From the C structs of `include/flashmha.h` to the Rust API's types: a `flashmha_shape`
//! becomes a dtype and a [`FwdShape`], a `flashmha_bufs` [`FwdBufs`], a
//! `flashmha_decode_shape` a [`DecodeProblem`] and its [`SplitPolicy`], a
//! `flashmha_mla_decode_shape` an [`MlaDecodeProblem`], a `flashmha_merge_shape`
//! a [`MergeProblem`], a `flashmha_head_similarity_shape` a [`HeadSimProblem`], and the run
//! buffers of each op its `*Buffers`. Pure; reads only the structs it is given, and leaves
//! every check of values to the Rust API's validation.

use super::ffi;
use super::status::CallError;
use crate::common::binding::DevBuf;
use crate::common::dtype::DType;
use crate::common::geometry::PageStrides;
use crate::common::geometry::Strides;
use crate::common::options::{AttnOptions, SlidingWindow};
use crate::ops::backward::{BwdBufs, BwdShape, GradStrides};
use crate::ops::decode::{
    DecodeBuffers, DecodeProblem, KvCacheDType, KvScaleGranularity, QueryLayout, SplitPolicy,
};
use crate::ops::forward::bind::FwdBufs;
use crate::ops::forward::problem::{FwdShape, Heads, QkvoStrides, SeqShape};
use crate::ops::head_similarity::HeadSimProblem;
use crate::ops::kv_append::{AppendIndex, KvAppendBuffers};
use crate::ops::merge::{MergeBuffers, MergeProblem, MergeStates, StatsLayout};
use crate::ops::mla_decode::{MlaDecodeProblem, MLA_D_QK, MLA_D_V};

fn invalid(msg: impl Into<String>) -> CallError {
    CallError::InvalidArgument(msg.into())
}

/// The Rust value of the C enum value `v` of field `field` (C type `ty`), from `table`; any
/// other value is an invalid argument naming both.
fn pick<T: Copy>(
    field: &str,
    ty: &str,
    v: std::ffi::c_uint,
    table: &[(std::ffi::c_uint, T)],
) -> Result<T, CallError> {
    table
        .iter()
        .find(|(c, _)| *c == v)
        .map(|&(_, t)| t)
        .ok_or_else(|| invalid(format!("{field} {v} is not a {ty}")))
}

pub fn dtype(d: ffi::flashmha_dtype) -> Result<DType, CallError> {
    use ffi::{FLASHMHA_DTYPE_BF16 as BF16, FLASHMHA_DTYPE_F16 as F16};
    pick(
        "dtype",
        "flashmha_dtype",
        d,
        &[(F16, DType::F16), (BF16, DType::Bf16)],
    )
}

fn strides(s: ffi::flashmha_strides) -> Strides {
    Strides {
        batch: s.batch,
        row: s.row,
        head: s.head,
    }
}

fn window_bound(name: &str, v: i64) -> Result<Option<u32>, CallError> {
    if v < 0 {
        return Ok(None);
    }
    u32::try_from(v)
        .map(Some)
        .map_err(|_| invalid(format!("{name} = {v} does not fit in 32 bits")))
}

pub fn options(o: &ffi::flashmha_options) -> Result<AttnOptions, CallError> {
    // 0 selects the default; any other value goes to validation as given (so a negative or
    // NaN scale is a typed FLASHMHA_ERR_INVALID_OPTION, not silently the default).
    let optional = |v: f32| (v != 0.0).then_some(v);
    let window = if o.window != 0 {
        Some(SlidingWindow {
            left: window_bound("window_left", o.window_left)?,
            right: window_bound("window_right", o.window_right)?,
        })
    } else {
        None
    };
    Ok(AttnOptions {
        softmax_scale: optional(o.softmax_scale),
        causal: o.causal != 0,
        window,
        softcap: optional(o.softcap),
    })
}

/// d_v of a shape whose `head_dim_v` field is 0 ("same as head_dim") or d_v itself.
fn head_dim_v(head_dim: usize, head_dim_v: usize) -> usize {
    match head_dim_v {
        0 => head_dim,
        d_v => d_v,
    }
}

/// The dtype and the shape a `flashmha_shape` describes.
pub fn shape(s: &ffi::flashmha_shape) -> Result<(DType, FwdShape), CallError> {
    let dtype = dtype(s.dtype)?;
    let d_v = head_dim_v(s.head_dim, s.head_dim_v);
    let heads = Heads {
        q: s.heads_q,
        kv: s.heads_kv,
    };
    let seq = if s.varlen != 0 {
        SeqShape::Varlen {
            batch: s.batch,
            max_seqlen_q: s.seqlen_q,
            max_seqlen_k: s.seqlen_k,
            total_q: s.total_q,
            total_k: s.total_k,
        }
    } else {
        SeqShape::Padded {
            batch: s.batch,
            seqlen_q: s.seqlen_q,
            seqlen_k: s.seqlen_k,
        }
    };
    let mut shape =
        FwdShape::contiguous(seq, heads, s.head_dim, d_v).with_options(options(&s.options)?);
    let given = [s.q_strides, s.k_strides, s.v_strides, s.o_strides];
    let all_zero = given
        .iter()
        .all(|t| t.batch == 0 && t.row == 0 && t.head == 0);
    if !all_zero {
        shape = shape.with_strides(QkvoStrides {
            q: strides(s.q_strides),
            k: strides(s.k_strides),
            v: strides(s.v_strides),
            o: strides(s.o_strides),
        });
    }
    Ok((dtype, shape))
}

/// NULL is the absent buffer (address 0).
fn buf(b: ffi::flashmha_buf) -> DevBuf {
    DevBuf::new(b.data as u64, b.len)
}

/// The buffers as the plan's `bind` checks them. Required buffers are passed on even when NULL
/// (bind reports a NULL q/k/v/o as a missing buffer); the cu_seqlens must come as a pair.
pub fn bufs(b: &ffi::flashmha_bufs) -> Result<FwdBufs, CallError> {
    if b.cu_seqlens_q.data.is_null() != b.cu_seqlens_k.data.is_null() {
        return Err(invalid(
            "cu_seqlens_q and cu_seqlens_k must both be given or both be NULL",
        ));
    }
    Ok(FwdBufs {
        q: buf(b.q),
        k: buf(b.k),
        v: buf(b.v),
        o: buf(b.o),
        lse: buf(b.lse),
        entropy: buf(b.entropy),
        alibi_slopes: buf(b.alibi_slopes),
        head_gates: buf(b.head_gates),
        sinks: buf(b.sinks),
        cu_seqlens_q: buf(b.cu_seqlens_q),
        cu_seqlens_k: buf(b.cu_seqlens_k),
    })
}

/// The dtype and the backward shape a `flashmha_bwd_shape` describes: the forward's (as
/// [`shape`] reads it) and the gradients' strides (all four zero: each like its tensor).
pub fn bwd_shape(s: &ffi::flashmha_bwd_shape) -> Result<(DType, BwdShape), CallError> {
    let (dtype, fwd) = shape(&s.fwd)?;
    let given = [s.d_o_strides, s.dq_strides, s.dk_strides, s.dv_strides];
    let mut bwd = BwdShape::new(fwd).with_deterministic(s.deterministic != 0);
    if !given.iter().all(is_zero) {
        bwd = bwd.with_grad_strides(GradStrides {
            d_o: strides(s.d_o_strides),
            dq: strides(s.dq_strides),
            dk: strides(s.dk_strides),
            dv: strides(s.dv_strides),
        });
    }
    Ok((dtype, bwd))
}

/// The backward's buffers as [`BwdPlan::bind`](crate::ops::backward::BwdPlan::bind) checks them
/// (NULL = absent; the cu_seqlens must come as a pair).
pub fn bwd_bufs(b: &ffi::flashmha_bwd_bufs) -> Result<BwdBufs, CallError> {
    if b.cu_seqlens_q.data.is_null() != b.cu_seqlens_k.data.is_null() {
        return Err(invalid(
            "cu_seqlens_q and cu_seqlens_k must both be given or both be NULL",
        ));
    }
    Ok(BwdBufs {
        q: buf(b.q),
        k: buf(b.k),
        v: buf(b.v),
        o: buf(b.o),
        d_o: buf(b.d_o),
        lse: buf(b.lse),
        dq: buf(b.dq),
        dk: buf(b.dk),
        dv: buf(b.dv),
        workspace: buf(b.workspace),
        cu_seqlens_q: buf(b.cu_seqlens_q),
        cu_seqlens_k: buf(b.cu_seqlens_k),
        alibi_slopes: buf(b.alibi_slopes),
        head_gates: buf(b.head_gates),
        d_head_gates: buf(b.d_head_gates),
        sinks: buf(b.sinks),
        d_sinks: buf(b.d_sinks),
    })
}

/// A buffer as the decode, merge and append plans check it (NULL = address 0 = absent).
pub fn device_buf(b: ffi::flashmha_buf) -> DevBuf {
    DevBuf {
        addr: b.data as u64,
        len: b.len as u64,
    }
}

fn page_strides(s: ffi::flashmha_page_strides) -> PageStrides {
    PageStrides {
        page: s.page,
        slot: s.slot,
        head: s.head,
    }
}

fn is_zero(s: &ffi::flashmha_strides) -> bool {
    s.batch == 0 && s.row == 0 && s.head == 0
}

fn is_zero_pages(s: &ffi::flashmha_page_strides) -> bool {
    s.page == 0 && s.slot == 0 && s.head == 0
}

fn overflow(what: &str) -> CallError {
    invalid(format!("{what} overflows"))
}

/// `a * b` as a stride, checked (a huge shape is an error, not a wrap).
fn product(a: usize, b: usize, what: &str) -> Result<i64, CallError> {
    a.checked_mul(b)
        .and_then(|x| i64::try_from(x).ok())
        .ok_or_else(|| overflow(what))
}

/// What the K / V pages (or the MLA latent pool) hold.
fn kv_dtype(v: ffi::flashmha_kv_dtype) -> Result<KvCacheDType, CallError> {
    pick(
        "kv_dtype",
        "flashmha_kv_dtype",
        v,
        &[
            (ffi::FLASHMHA_KV_SAME, KvCacheDType::Same),
            (ffi::FLASHMHA_KV_FP8_E4M3, KvCacheDType::Fp8E4M3),
            (ffi::FLASHMHA_KV_FP8_E5M2, KvCacheDType::Fp8E5M2),
        ],
    )
}

/// The decode shapes' q / o row strides: both all-zero means contiguous `[batch, seqlen_q,
/// heads_q, d]` rows of `d_q` (q) and `d_o` (o) elements.
fn query_strides(
    q: ffi::flashmha_strides,
    o: ffi::flashmha_strides,
    (seqlen_q, heads_q): (usize, usize),
    (d_q, d_o): (usize, usize),
) -> Result<(Strides, Strides), CallError> {
    if !(is_zero(&q) && is_zero(&o)) {
        return Ok((strides(q), strides(o)));
    }
    let contiguous = |d: usize| -> Result<Strides, CallError> {
        let row = product(heads_q, d, "heads_q * head_dim")?;
        Ok(Strides {
            batch: product(seqlen_q, row as usize, "seqlen_q * heads_q * head_dim")?,
            row,
            head: product(d, 1, "head_dim")?,
        })
    };
    Ok((contiguous(d_q)?, contiguous(d_o)?))
}

/// The decode shapes' query layout, block-table stride and cache bound, zero fields taking the
/// header's defaults: `(queries, block_table_stride, max_cache_len)`.
fn table_and_queries(
    varlen: i32,
    (seqlen_q, total_q): (usize, usize),
    (max_pages_per_seq, block_table_stride, max_cache_len): (usize, usize, usize),
    page_size: usize,
) -> Result<(QueryLayout, usize, usize), CallError> {
    let block_table_stride = match block_table_stride {
        0 => max_pages_per_seq,
        n => n,
    };
    let max_cache_len = match max_cache_len {
        0 => max_pages_per_seq
            .checked_mul(page_size)
            .ok_or_else(|| overflow("max_pages_per_seq * page_size"))?,
        n => n,
    };
    let queries = if varlen != 0 {
        QueryLayout::Varlen {
            total_q,
            max_seqlen_q: seqlen_q,
        }
    } else {
        QueryLayout::Padded { sq_new: seqlen_q }
    };
    Ok((queries, block_table_stride, max_cache_len))
}

/// The pools' and queries' description of a `flashmha_decode_shape`. Zero fields take the
/// header's defaults (contiguous q / o strides, NHD or HND pages through the Rust API's own
/// `PageStrides` constructors, table stride, cache bound), each product checked, so a default
/// that cannot be formed is an invalid argument here; every value is then validated by the
/// plan.
pub fn decode_problem(s: &ffi::flashmha_decode_shape) -> Result<DecodeProblem, CallError> {
    let dtype = dtype(s.dtype)?;
    let kv_dtype = kv_dtype(s.kv_dtype)?;
    let kv_scales = pick(
        "kv_scales",
        "flashmha_kv_scales",
        s.kv_scales,
        &[
            (
                ffi::FLASHMHA_KV_SCALES_PER_TENSOR,
                KvScaleGranularity::PerTensor,
            ),
            (
                ffi::FLASHMHA_KV_SCALES_PER_KV_HEAD,
                KvScaleGranularity::PerKvHead,
            ),
        ],
    )?;
    let d_v = head_dim_v(s.head_dim, s.head_dim_v);
    let (q_strides, o_strides) = query_strides(
        s.q_strides,
        s.o_strides,
        (s.seqlen_q, s.heads_q),
        (s.head_dim, d_v),
    )?;
    let (k_strides, v_strides) = if is_zero_pages(&s.k_strides) && is_zero_pages(&s.v_strides) {
        // Contiguous pools, each with its own head dim (K: d_qk, V: d_v).
        let pages = |d: usize| -> Result<PageStrides, CallError> {
            let what = "page_size * heads_kv * head_dim";
            let per_page = s
                .page_size
                .checked_mul(s.heads_kv)
                .and_then(|x| x.checked_mul(d))
                .ok_or_else(|| overflow(what))?;
            i64::try_from(per_page).map_err(|_| overflow(what))?;
            Ok(if s.head_major_pages != 0 {
                PageStrides::hnd(s.page_size, s.heads_kv, d)
            } else {
                PageStrides::nhd(s.page_size, s.heads_kv, d)
            })
        };
        (pages(s.head_dim)?, pages(d_v)?)
    } else {
        (page_strides(s.k_strides), page_strides(s.v_strides))
    };
    let (queries, block_table_stride, max_cache_len) = table_and_queries(
        s.varlen,
        (s.seqlen_q, s.total_q),
        (s.max_pages_per_seq, s.block_table_stride, s.max_cache_len),
        s.page_size,
    )?;
    Ok(DecodeProblem {
        dtype,
        batch: s.batch,
        num_heads_q: s.heads_q,
        num_heads_kv: s.heads_kv,
        head_dim: s.head_dim,
        head_dim_v: d_v,
        queries,
        q_strides,
        o_strides,
        num_pages: s.num_pages,
        page_size: s.page_size,
        k_strides,
        v_strides,
        kv_dtype,
        kv_scales,
        max_pages_per_seq: s.max_pages_per_seq,
        block_table_stride,
        max_cache_len,
        options: options(&s.options)?,
        alibi: s.alibi != 0,
        gates: s.head_gates != 0,
        sinks: s.sinks != 0,
        lse: s.lse != 0,
        entropy: s.entropy != 0,
    })
}

/// The MLA decode problem of a `flashmha_mla_decode_shape`: defaults as
/// [`decode_problem`]'s (q rows of 576 elements, o rows of 512, pages `[num_pages, page_size,
/// 576]`); every value is then validated by the plan.
pub fn mla_decode_problem(
    s: &ffi::flashmha_mla_decode_shape,
) -> Result<MlaDecodeProblem, CallError> {
    let (q_strides, o_strides) = query_strides(
        s.q_strides,
        s.o_strides,
        (s.seqlen_q, s.heads_q),
        (MLA_D_QK, MLA_D_V),
    )?;
    let cache_strides = if is_zero_pages(&s.cache_strides) {
        product(s.page_size, MLA_D_QK, "page_size * 576")?;
        PageStrides::nhd(s.page_size, 1, MLA_D_QK)
    } else {
        page_strides(s.cache_strides)
    };
    let (queries, block_table_stride, max_cache_len) = table_and_queries(
        s.varlen,
        (s.seqlen_q, s.total_q),
        (s.max_pages_per_seq, s.block_table_stride, s.max_cache_len),
        s.page_size,
    )?;
    Ok(MlaDecodeProblem {
        dtype: dtype(s.dtype)?,
        batch: s.batch,
        num_heads_q: s.heads_q,
        queries,
        q_strides,
        o_strides,
        num_pages: s.num_pages,
        page_size: s.page_size,
        cache_strides,
        kv_dtype: kv_dtype(s.kv_dtype)?,
        max_pages_per_seq: s.max_pages_per_seq,
        block_table_stride,
        max_cache_len,
        options: options(&s.options)?,
        alibi: s.alibi != 0,
        gates: s.head_gates != 0,
        sinks: s.sinks != 0,
        lse: s.lse != 0,
        entropy: s.entropy != 0,
    })
}

/// The split policy of a decode shape's `split_mode` and `split_value` (`flashmha_decode_shape`,
/// `flashmha_mla_decode_shape`); `device_sms` is the SM count of the context's device (None
/// without a context), used when `FLASHMHA_SPLIT_AUTO` gives 0.
pub fn split_policy(
    (split_mode, split_value): (ffi::flashmha_split_mode, u32),
    device_sms: Option<u32>,
) -> Result<SplitPolicy, CallError> {
    match split_mode {
        ffi::FLASHMHA_SPLIT_AUTO => match (split_value, device_sms) {
            (0, Some(n)) => Ok(SplitPolicy::Auto { num_sms: n }),
            (0, None) => Err(invalid(
                "FLASHMHA_SPLIT_AUTO needs split_value = the SM count without a context",
            )),
            (n, _) => Ok(SplitPolicy::Auto { num_sms: n }),
        },
        ffi::FLASHMHA_SPLIT_COUNT => Ok(SplitPolicy::Count(split_value)),
        ffi::FLASHMHA_SPLIT_FIXED_KEYS => Ok(SplitPolicy::FixedKeys(split_value)),
        other => Err(invalid(format!(
            "split_mode {other} is not a flashmha_split_mode"
        ))),
    }
}

/// The decode buffers of a run; the workspace is carved by the plan.
pub fn decode_bufs(b: &ffi::flashmha_decode_bufs) -> DecodeBuffers {
    DecodeBuffers {
        q: device_buf(b.q),
        k_cache: device_buf(b.k_cache),
        v_cache: device_buf(b.v_cache),
        o: device_buf(b.o),
        block_table: device_buf(b.block_table),
        cache_seqlens: device_buf(b.cache_seqlens),
        cu_seqlens_q: device_buf(b.cu_seqlens_q),
        lse: device_buf(b.lse),
        entropy: device_buf(b.entropy),
        alibi_slopes: device_buf(b.alibi_slopes),
        head_gates: device_buf(b.head_gates),
        sinks: device_buf(b.sinks),
        k_scales: device_buf(b.k_scales),
        v_scales: device_buf(b.v_scales),
        ..Default::default()
    }
}

/// The MLA decode buffers of a run as the paged decode's (the latent pool is `k_cache`, its
/// scale `k_scales`; the MLA plan reads them as V too); the workspace is carved by the plan.
pub fn mla_decode_bufs(b: &ffi::flashmha_mla_decode_bufs) -> DecodeBuffers {
    DecodeBuffers {
        q: device_buf(b.q),
        k_cache: device_buf(b.kv_cache),
        o: device_buf(b.o),
        block_table: device_buf(b.block_table),
        cache_seqlens: device_buf(b.cache_seqlens),
        cu_seqlens_q: device_buf(b.cu_seqlens_q),
        lse: device_buf(b.lse),
        entropy: device_buf(b.entropy),
        alibi_slopes: device_buf(b.alibi_slopes),
        head_gates: device_buf(b.head_gates),
        sinks: device_buf(b.sinks),
        k_scales: device_buf(b.kv_scale),
        ..Default::default()
    }
}

pub fn merge_problem(s: &ffi::flashmha_merge_shape) -> Result<MergeProblem, CallError> {
    let stacked = MergeStates::Stacked {
        num_states: s.num_states,
    };
    let states = pick(
        "form",
        "flashmha_merge_form",
        s.form,
        &[
            (ffi::FLASHMHA_MERGE_STACKED, stacked),
            (ffi::FLASHMHA_MERGE_PAIR, MergeStates::Pair),
        ],
    )?;
    let lse_layout = pick(
        "lse_layout",
        "flashmha_stats_layout",
        s.lse_layout,
        &[
            (ffi::FLASHMHA_STATS_ROWS_HEADS, StatsLayout::RowsHeads),
            (ffi::FLASHMHA_STATS_HEADS_ROWS, StatsLayout::HeadsRows),
        ],
    )?;
    Ok(MergeProblem {
        dtype: dtype(s.dtype)?,
        states,
        rows: s.rows,
        heads: s.heads,
        head_dim: s.head_dim,
        lse_layout,
    })
}

pub fn merge_bufs(b: &ffi::flashmha_merge_bufs) -> MergeBuffers {
    MergeBuffers {
        o_states: device_buf(b.o_states),
        lse_states: device_buf(b.lse_states),
        o_b: device_buf(b.o_b),
        lse_b: device_buf(b.lse_b),
        o: device_buf(b.o),
        lse: device_buf(b.lse),
    }
}

pub fn append_index(i: ffi::flashmha_append_index) -> Result<AppendIndex, CallError> {
    pick(
        "index",
        "flashmha_append_index",
        i,
        &[
            (ffi::FLASHMHA_APPEND_SLOTS, AppendIndex::Slots),
            (ffi::FLASHMHA_APPEND_POSITIONS, AppendIndex::Positions),
        ],
    )
}

pub fn append_bufs(b: &ffi::flashmha_kv_append_bufs) -> KvAppendBuffers {
    KvAppendBuffers {
        k_new: device_buf(b.k_new),
        v_new: device_buf(b.v_new),
        k_cache: device_buf(b.k_cache),
        v_cache: device_buf(b.v_cache),
        slot_mapping: device_buf(b.slot_mapping),
        block_table: device_buf(b.block_table),
        token_batch: device_buf(b.token_batch),
        token_pos: device_buf(b.token_pos),
        k_scales: device_buf(b.k_scales),
        v_scales: device_buf(b.v_scales),
    }
}

/// The head-similarity problem of `s` (zero strides: contiguous).
pub fn head_sim_problem(
    s: &ffi::flashmha_head_similarity_shape,
) -> Result<HeadSimProblem, CallError> {
    let dtype = dtype(s.dtype)?;
    let (token_stride, head_stride) = if s.token_stride == 0 && s.head_stride == 0 {
        let row = s
            .num_heads
            .checked_mul(s.head_dim)
            .and_then(|x| i64::try_from(x).ok())
            .ok_or_else(|| invalid("num_heads * head_dim overflows"))?;
        let d = i64::try_from(s.head_dim).map_err(|_| invalid("head_dim overflows"))?;
        (row, d)
    } else {
        (s.token_stride, s.head_stride)
    };
    Ok(HeadSimProblem {
        dtype,
        num_tokens: s.num_tokens,
        num_heads: s.num_heads,
        head_dim: s.head_dim,
        token_stride,
        head_stride,
    })
}

/// `*ptr`, or an invalid-argument error naming `what` when it is NULL.
///
/// # Safety
/// A non-NULL `ptr` must point to a valid `T` for the returned lifetime.
pub unsafe fn deref<'a, T>(ptr: *const T, what: &str) -> Result<&'a T, CallError> {
    // SAFETY: the caller's contract; NULL is handled.
    unsafe { ptr.as_ref() }.ok_or_else(|| invalid(format!("{what} is NULL")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> ffi::flashmha_shape {
        ffi::flashmha_shape {
            dtype: ffi::FLASHMHA_DTYPE_BF16,
            batch: 2,
            seqlen_q: 5,
            seqlen_k: 7,
            heads_q: 4,
            heads_kv: 2,
            head_dim: 64,
            ..Default::default()
        }
    }

    #[test]
    fn a_zeroed_shape_is_contiguous_with_default_options() {
        let (dt, s) = shape(&base()).unwrap();
        assert_eq!(dt, DType::Bf16);
        assert_eq!(s, FwdShape::padded(2, 5, 7, Heads::gqa(4, 2), 64));
    }

    #[test]
    fn options_and_strides_are_taken_as_given() {
        let mut c = base();
        c.options = ffi::flashmha_options {
            softmax_scale: 0.25,
            softcap: 0.0,
            causal: 1,
            window: 1,
            window_left: 3,
            window_right: -1,
        };
        let st = ffi::flashmha_strides {
            batch: 1000,
            row: 72 * 4,
            head: 72,
        };
        c.q_strides = st;
        c.o_strides = st;
        let (_, s) = shape(&c).unwrap();
        assert_eq!(s.options.softmax_scale, Some(0.25));
        assert_eq!(s.options.softcap, None);
        assert!(s.options.causal);
        assert_eq!(
            s.options.window,
            Some(SlidingWindow {
                left: Some(3),
                right: None
            })
        );
        assert_eq!(s.strides.q.row, 288);
        // Given as all-zero: taken as given too (validation decides), not replaced.
        assert_eq!(s.strides.k, Strides::default());
        c.dtype = 7;
        assert!(matches!(shape(&c), Err(CallError::InvalidArgument(_))));
        c.dtype = ffi::FLASHMHA_DTYPE_F16;
        c.options.window_left = 1 << 40;
        assert!(matches!(shape(&c), Err(CallError::InvalidArgument(_))));
    }

    #[test]
    fn a_lone_cu_seqlens_is_rejected() {
        let mut b = ffi::flashmha_bufs::default();
        let mut x = [0i32; 3];
        b.cu_seqlens_q = ffi::flashmha_buf {
            data: x.as_mut_ptr().cast(),
            len: 3,
        };
        assert!(matches!(bufs(&b), Err(CallError::InvalidArgument(_))));
        b.cu_seqlens_k = b.cu_seqlens_q;
        let f = bufs(&b).unwrap();
        assert_eq!((f.cu_seqlens_q.len, f.cu_seqlens_k.len), (3, 3));
        assert!(!f.lse.is_present());
    }

    fn decode_base() -> ffi::flashmha_decode_shape {
        ffi::flashmha_decode_shape {
            dtype: ffi::FLASHMHA_DTYPE_F16,
            batch: 3,
            seqlen_q: 2,
            heads_q: 8,
            heads_kv: 2,
            head_dim: 128,
            num_pages: 40,
            page_size: 16,
            max_pages_per_seq: 9,
            ..Default::default()
        }
    }

    #[test]
    fn a_zeroed_decode_shape_is_the_rust_contiguous_problem() {
        let mut c = decode_base();
        for hnd in [false, true] {
            c.head_major_pages = i32::from(hnd);
            let want = DecodeProblem::contiguous(DType::F16, 3, 2, 8, 2, 128, 40, 16, 9, hnd);
            assert_eq!(decode_problem(&c).unwrap(), want);
        }
        // Given strides and bounds are taken as given.
        c.block_table_stride = 12;
        c.max_cache_len = 100;
        c.k_strides = ffi::flashmha_page_strides {
            page: 1 << 20,
            slot: 512,
            head: 128,
        };
        let p = decode_problem(&c).unwrap();
        assert_eq!((p.block_table_stride, p.max_cache_len), (12, 100));
        assert_eq!(p.k_strides.slot, 512);
        // v left all-zero is passed on as zero (validation decides), not replaced.
        assert_eq!(p.v_strides, PageStrides::default());
    }

    #[test]
    fn decode_defaults_that_overflow_and_unknown_enums_are_invalid_arguments() {
        let mut c = decode_base();
        c.heads_q = usize::MAX;
        assert!(matches!(
            decode_problem(&c),
            Err(CallError::InvalidArgument(_))
        ));
        let mut c = decode_base();
        c.page_size = usize::MAX / 2;
        assert!(matches!(
            decode_problem(&c),
            Err(CallError::InvalidArgument(_))
        ));
        let mut c = decode_base();
        c.kv_dtype = 9;
        assert!(matches!(
            decode_problem(&c),
            Err(CallError::InvalidArgument(_))
        ));
        let mut c = decode_base();
        c.split_mode = ffi::FLASHMHA_SPLIT_AUTO;
        assert!(matches!(
            split_policy((c.split_mode, c.split_value), None),
            Err(CallError::InvalidArgument(_))
        ));
        assert_eq!(
            split_policy((c.split_mode, c.split_value), Some(132)).unwrap(),
            SplitPolicy::Auto { num_sms: 132 }
        );
        c.split_value = 7;
        assert_eq!(
            split_policy((c.split_mode, c.split_value), Some(132)).unwrap(),
            SplitPolicy::Auto { num_sms: 7 }
        );
        c.split_mode = ffi::FLASHMHA_SPLIT_FIXED_KEYS;
        assert_eq!(
            split_policy((c.split_mode, c.split_value), None).unwrap(),
            SplitPolicy::FixedKeys(7)
        );
        c.split_mode = 3;
        assert!(matches!(
            split_policy((c.split_mode, c.split_value), None),
            Err(CallError::InvalidArgument(_))
        ));
    }

    #[test]
    fn head_similarity_zero_strides_are_contiguous() {
        let mut s = ffi::flashmha_head_similarity_shape {
            dtype: ffi::FLASHMHA_DTYPE_BF16,
            num_tokens: 5,
            num_heads: 3,
            head_dim: 64,
            ..Default::default()
        };
        let p = head_sim_problem(&s).unwrap();
        assert_eq!(p, HeadSimProblem::contiguous(DType::Bf16, 5, 3, 64));
        // Given strides are taken as they are.
        (s.token_stride, s.head_stride) = (1024, 128);
        let p = head_sim_problem(&s).unwrap();
        assert_eq!((p.token_stride, p.head_stride), (1024, 128));
    }
}
