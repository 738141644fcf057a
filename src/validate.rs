//! Validation of a forward call: shapes, strides, alignment, buffer bounds, options, cu_seqlens,
//! aliasing and the 32-bit index limits of the kernel. Pure: reads the problem description and
//! the buffer addresses, returns a typed error, launches and writes nothing.

use crate::buffers::FwdBuffers;
use crate::build_info::{FwdKernelRow, FWD_KERNELS};
use crate::error::{Error, Result};
use crate::problem::{FwdProblem, Operand, SeqLayout};

/// cp.async moves 16 bytes; q/k/v/o bases and strides must keep every row chunk 16-byte aligned.
pub const COPY_ALIGN_BYTES: usize = 16;
/// Grid y (heads) and z (batch) are limited to 65535 by CUDA.
pub const MAX_GRID_YZ: usize = 65_535;
/// Lengths, cu_seqlens and window bounds are int32 in the params struct.
pub const MAX_INDEX_32: u64 = i32::MAX as u64;
/// The kernel's mask and ALiBi arithmetic forms `i + shift +- window + 1` and `|i + shift - j|`
/// in 32-bit signed math (kernels/common/mask.cuh), so `sq + sk` of every item must stay below
/// 2^31 minus a tile's worth of headroom.
pub const MAX_SEQLEN_SUM: u64 = (1 << 31) - 256;
/// For head dims whose tiles are copied with per-thread 32-bit byte offsets (d80, d96:
/// `(row * row_stride + col) * 2` with row < 64), a q/k/v row stride of at most 2^24 elements
/// keeps those offsets in range; we apply the bound to every head dim so it does not depend on
/// which instantiation serves a call.
pub const MAX_ROW_STRIDE: i64 = 1 << 24;

/// The compiled forward kernel that serves `problem`, after checking everything about it.
pub fn validate_forward(problem: &FwdProblem, bufs: &FwdBuffers) -> Result<&'static FwdKernelRow> {
    validate_forward_in(FWD_KERNELS, problem, bufs)
}

/// [`validate_forward`] against an explicit kernel table (unit tests use synthetic tables).
pub fn validate_forward_in<'t>(
    table: &'t [FwdKernelRow],
    problem: &FwdProblem,
    bufs: &FwdBuffers,
) -> Result<&'t FwdKernelRow> {
    let p = problem;
    // A head dim that is a multiple of 8 (whole 16-byte chunks) runs on the smallest compiled
    // kernel at least as wide, its extra columns predicated off in the kernel.
    let kernel = table
        .iter()
        .filter(|r| {
            r.dtype == p.dtype
                && p.head_dim > 0
                && p.head_dim.is_multiple_of(8)
                && r.head_dim as usize >= p.head_dim
        })
        .min_by_key(|r| r.head_dim)
        .ok_or_else(|| Error::UnsupportedHeadDim {
            dtype: p.dtype,
            head_dim: p.head_dim,
            supported: table
                .iter()
                .filter(|r| r.dtype == p.dtype)
                .map(|r| r.head_dim)
                .collect(),
        })?;
    check_heads(p)?;
    check_layout(p)?;
    check_options(p)?;
    let (sq, sk) = p.layout.max_seqlens();
    let (tq, tk) = p.layout.total_rows();
    let batch = p.layout.batch();
    let varlen = p.layout.is_varlen();
    // Rows each operand must cover: padded tensors are addressed per item, varlen globally.
    let (rows_q, items_q) = if varlen { (tq, 1) } else { (sq, batch) };
    let (rows_k, items_k) = if varlen { (tk, 1) } else { (sk, batch) };
    let d = p.head_dim;
    check_operand("q", &p.q, items_q, rows_q, p.num_heads_q, d, false)?;
    check_operand("k", &p.k, items_k, rows_k, p.num_heads_kv, d, false)?;
    check_operand("v", &p.v, items_k, rows_k, p.num_heads_kv, d, false)?;
    check_operand("o", &p.o, items_q, rows_q, p.num_heads_q, d, true)?;
    check_row_stats(p)?;
    check_alignment(p, bufs)?;
    check_aliasing(p, bufs)?;
    check_required_buffers(p, bufs)?;
    Ok(kernel)
}

fn check_heads(p: &FwdProblem) -> Result<()> {
    if p.num_heads_q == 0 || p.num_heads_kv == 0 {
        return Err(Error::Shape(
            "num_heads_q and num_heads_kv must be >= 1".into(),
        ));
    }
    if !p.num_heads_q.is_multiple_of(p.num_heads_kv) {
        return Err(Error::Shape(format!(
            "num_heads_q ({}) must be a multiple of num_heads_kv ({}) for GQA/MQA",
            p.num_heads_q, p.num_heads_kv
        )));
    }
    if p.num_heads_q > MAX_GRID_YZ {
        return Err(Error::Overflow32 {
            what: "num_heads_q (grid y)".into(),
            value: p.num_heads_q as u64,
            limit: MAX_GRID_YZ as u64,
        });
    }
    Ok(())
}

fn check_layout(p: &FwdProblem) -> Result<()> {
    match &p.layout {
        SeqLayout::Padded {
            seqlen_q, seqlen_k, ..
        } => {
            if *seqlen_q == 0 || *seqlen_k == 0 {
                return Err(Error::Shape(format!(
                    "seqlen_q ({seqlen_q}) and seqlen_k ({seqlen_k}) must be >= 1"
                )));
            }
        }
        SeqLayout::Varlen {
            cu_seqlens_q,
            cu_seqlens_k,
        } => {
            check_cu_seqlens("cu_seqlens_q", cu_seqlens_q)?;
            check_cu_seqlens("cu_seqlens_k", cu_seqlens_k)?;
            if cu_seqlens_q.len() != cu_seqlens_k.len() {
                return Err(Error::CuSeqlens(format!(
                    "cu_seqlens_q has {} entries but cu_seqlens_k has {}",
                    cu_seqlens_q.len(),
                    cu_seqlens_k.len()
                )));
            }
        }
    }
    let batch = p.layout.batch();
    if batch == 0 {
        return Err(Error::Shape("batch must be >= 1".into()));
    }
    if batch > MAX_GRID_YZ {
        return Err(Error::Overflow32 {
            what: "batch (grid z)".into(),
            value: batch as u64,
            limit: MAX_GRID_YZ as u64,
        });
    }
    for i in 0..batch {
        let (sq, sk) = p.layout.seqlens_of(i);
        if (sq + sk) as u64 > MAX_SEQLEN_SUM {
            return Err(Error::Overflow32 {
                what: format!("seqlen_q + seqlen_k of batch item {i}"),
                value: (sq + sk) as u64,
                limit: MAX_SEQLEN_SUM,
            });
        }
    }
    let (tq, tk) = p.layout.total_rows();
    for (what, value) in [("total q rows", tq), ("total k rows", tk)] {
        if value as u64 > MAX_INDEX_32 {
            return Err(Error::Overflow32 {
                what: what.into(),
                value: value as u64,
                limit: MAX_INDEX_32,
            });
        }
    }
    Ok(())
}

fn check_cu_seqlens(name: &str, cu: &[i32]) -> Result<()> {
    if cu.len() < 2 {
        return Err(Error::CuSeqlens(format!(
            "{name} needs batch + 1 >= 2 entries, has {}",
            cu.len()
        )));
    }
    if cu[0] != 0 {
        return Err(Error::CuSeqlens(format!(
            "{name}[0] is {}, must be 0",
            cu[0]
        )));
    }
    if let Some(i) = cu.windows(2).position(|w| w[1] < w[0]) {
        return Err(Error::CuSeqlens(format!(
            "{name} is not monotonic: [{}] = {} > [{}] = {}",
            i,
            cu[i],
            i + 1,
            cu[i + 1]
        )));
    }
    Ok(())
}

fn check_options(p: &FwdProblem) -> Result<()> {
    let o = &p.options;
    if let Some(s) = o.softmax_scale {
        // The kernel's running max assumes scores grow with q.k (scale > 0).
        if !s.is_finite() || s <= 0.0 {
            return Err(Error::Option(format!(
                "softmax_scale must be finite and > 0, got {s}"
            )));
        }
    }
    if let Some(c) = o.softcap {
        if !c.is_finite() || c <= 0.0 {
            return Err(Error::Option(format!(
                "softcap must be finite and > 0, got {c}"
            )));
        }
    }
    if let Some(w) = o.window {
        for (side, v) in [("left", w.left), ("right", w.right)] {
            if v.is_some_and(|v| v as u64 > MAX_INDEX_32) {
                return Err(Error::Option(format!(
                    "window {side} exceeds {MAX_INDEX_32}"
                )));
            }
        }
    }
    let hq = p.num_heads_q;
    for (name, len) in [("alibi_slopes", p.alibi_len), ("head_gates", p.gates_len)] {
        if let Some(len) = len {
            if len < hq {
                return Err(Error::BufferTooSmall {
                    tensor: if name == "alibi_slopes" {
                        "alibi_slopes"
                    } else {
                        "head_gates"
                    },
                    needed: hq as u64,
                    available: len as u64,
                });
            }
        }
    }
    Ok(())
}

/// Strides must be non-negative, the operand must fit its buffer, input row strides must fit
/// the kernel's 32-bit tile offsets, and outputs must not overlap themselves. (Batch, head and
/// row bases are 64-bit in the kernel, so long sequences are not limited here.)
fn check_operand(
    name: &'static str,
    op: &Operand,
    items: usize,
    rows: usize,
    heads: usize,
    d: usize,
    is_output: bool,
) -> Result<()> {
    let s = op.strides;
    if s.batch < 0 || s.row < 0 || s.head < 0 {
        return Err(Error::Stride {
            tensor: name,
            reason: format!("negative stride {s:?}"),
        });
    }
    let (sb, sr, sh) = (s.batch as u64, s.row as u64, s.head as u64);
    let (items, rows, heads, d) = (items as u64, rows as u64, heads as u64, d as u64);
    if rows == 0 {
        return Ok(());
    }
    // Largest element offset the kernel touches, in 128-bit so the check itself cannot wrap.
    let max = |n: u64, stride: u64| (n.saturating_sub(1) as u128) * stride as u128;
    let last = max(items, sb) + max(rows, sr) + max(heads, sh) + (d as u128 - 1);
    if last >= op.len as u128 {
        return Err(Error::BufferTooSmall {
            tensor: name,
            needed: (last + 1).min(u64::MAX as u128) as u64,
            available: op.len as u64,
        });
    }
    if !is_output && s.row > MAX_ROW_STRIDE {
        return Err(Error::Overflow32 {
            what: format!("{name} row stride"),
            value: s.row as u64,
            limit: MAX_ROW_STRIDE as u64,
        });
    }
    if is_output {
        // Distinct (item, row, head, col) must map to distinct elements, or CTAs race: sort the
        // used dimensions by stride; each stride must step past everything the smaller ones span.
        // (stride, extent) of the dimensions that vary; extent-1 ones cannot collide.
        let mut dims = [(sb, items), (sr, rows), (sh, heads)].map(|(stride, extent)| {
            if extent > 1 {
                (stride, extent)
            } else {
                (u64::MAX, 1)
            }
        });
        dims.sort_unstable();
        // Largest offset reachable by the dimensions seen so far (the contiguous head dim first).
        let mut reach = d as u128 - 1;
        for (stride, extent) in dims.into_iter().filter(|&(_, extent)| extent > 1) {
            if stride as u128 <= reach {
                return Err(Error::Stride {
                    tensor: name,
                    reason: format!("output dimensions overlap (strides {s:?}, head_dim {d})"),
                });
            }
            reach += stride as u128 * (extent as u128 - 1);
        }
    }
    Ok(())
}

fn check_row_stats(p: &FwdProblem) -> Result<()> {
    let needed = p.row_stats_len() as u64;
    for (name, len) in [("lse", p.lse_len), ("entropy", p.entropy_len)] {
        if let Some(len) = len {
            if (len as u64) < needed {
                return Err(Error::BufferTooSmall {
                    tensor: if name == "lse" { "lse" } else { "entropy" },
                    needed,
                    available: len as u64,
                });
            }
        }
    }
    if needed > MAX_INDEX_32 && (p.lse_len.is_some() || p.entropy_len.is_some()) {
        return Err(Error::Overflow32 {
            what: "lse/entropy elements".into(),
            value: needed,
            limit: MAX_INDEX_32,
        });
    }
    Ok(())
}

fn check_alignment(p: &FwdProblem, b: &FwdBuffers) -> Result<()> {
    let e = p.dtype.size() as u64;
    let chunk = COPY_ALIGN_BYTES as u64;
    for (name, addr, op) in [
        ("q", b.q, &p.q),
        ("k", b.k, &p.k),
        ("v", b.v, &p.v),
        ("o", b.o, &p.o),
    ] {
        if addr % chunk != 0 {
            return Err(Error::Alignment {
                tensor: name,
                required: COPY_ALIGN_BYTES,
                reason: format!("base address {addr:#x}"),
            });
        }
        let s = op.strides;
        for (dim, stride) in [("batch", s.batch), ("row", s.row), ("head", s.head)] {
            if !(stride as u64 * e).is_multiple_of(chunk) {
                return Err(Error::Alignment {
                    tensor: name,
                    required: COPY_ALIGN_BYTES,
                    reason: format!(
                        "{dim} stride {stride} elements is not a multiple of {}",
                        chunk / e
                    ),
                });
            }
        }
    }
    if !(p.head_dim as u64 * e).is_multiple_of(chunk) {
        return Err(Error::Alignment {
            tensor: "head_dim",
            required: COPY_ALIGN_BYTES,
            reason: format!("head_dim {} is not a multiple of {}", p.head_dim, chunk / e),
        });
    }
    for (name, addr) in [
        ("lse", b.lse),
        ("entropy", b.entropy),
        ("alibi_slopes", b.alibi_slopes),
        ("head_gates", b.head_gates),
        ("cu_seqlens_q", b.cu_seqlens_q),
        ("cu_seqlens_k", b.cu_seqlens_k),
    ] {
        if addr % 4 != 0 {
            return Err(Error::Alignment {
                tensor: name,
                required: 4,
                reason: format!("base address {addr:#x}"),
            });
        }
    }
    Ok(())
}

/// Byte range [start, end) an operand's buffer spans.
fn span(addr: u64, len_elems: usize, elem: usize) -> (u64, u64) {
    (addr, addr + (len_elems * elem) as u64)
}

fn check_aliasing(p: &FwdProblem, b: &FwdBuffers) -> Result<()> {
    let e = p.dtype.size();
    // Outputs first, then inputs; absent buffers span nothing. Fixed arrays: validation runs on
    // every launch and must not allocate.
    let spans = [
        ("o", span(b.o, p.o.len, e)),
        ("lse", span(b.lse, p.lse_len.unwrap_or(0), 4)),
        ("entropy", span(b.entropy, p.entropy_len.unwrap_or(0), 4)),
        ("q", span(b.q, p.q.len, e)),
        ("k", span(b.k, p.k.len, e)),
        ("v", span(b.v, p.v.len, e)),
    ];
    const OUTPUTS: usize = 3;
    for (i, (na, (a0, a1))) in spans.iter().enumerate().take(OUTPUTS) {
        for (nb, (b0, b1)) in spans.iter().skip(i + 1) {
            if a0 < b1 && b0 < a1 {
                return Err(Error::Alias { a: na, b: nb });
            }
        }
    }
    Ok(())
}

fn check_required_buffers(p: &FwdProblem, b: &FwdBuffers) -> Result<()> {
    let missing =
        |name: &'static str| Error::Shape(format!("{name} is required but its buffer is null"));
    for (name, addr) in [("q", b.q), ("k", b.k), ("v", b.v), ("o", b.o)] {
        if addr == 0 {
            return Err(missing(name));
        }
    }
    let optional = [
        ("lse", p.lse_len, b.lse),
        ("entropy", p.entropy_len, b.entropy),
        ("alibi_slopes", p.alibi_len, b.alibi_slopes),
        ("head_gates", p.gates_len, b.head_gates),
    ];
    for (name, len, addr) in optional {
        if len.is_some() != (addr != 0) {
            return Err(Error::Shape(format!(
                "{name}: a length is given iff a buffer is given (len {len:?}, address {addr:#x})"
            )));
        }
    }
    if p.layout.is_varlen() && (b.cu_seqlens_q == 0 || b.cu_seqlens_k == 0) {
        return Err(missing("cu_seqlens (varlen layout)"));
    }
    Ok(())
}
