//! Reference forward attention: O, LSE and per-row entropy, computed with candle on the CPU.
//!
//! Semantics are exactly those of [`crate::common::options`] (module docs), per batch item with the
//! diagonal bottom-right aligned. Everything is computed in f64 (on a CPU at test sizes that
//! costs little and leaves the reference's own error far below any kernel tolerance), from f32
//! inputs the caller has already rounded to the kernel's dtype; results are returned as f32.
//!
//! Masks, the ALiBi bias and the varlen bookkeeping are built on the host as plain buffers; the
//! matmuls, softcap, softmax and reductions run as candle ops. The code favours being obviously
//! right over being fast: one batch item at a time, all query heads of the item batched.

use candle_core::{Device, Tensor};

use super::tolerance::EntropyTerms;
use super::ReferenceError;
use crate::common::geometry::SeqLayout;
use crate::common::options::AttnOptions;

/// How q, k, v (and O, LSE, entropy) are laid out: the crate's one sequence layout
/// ([`SeqLayout`]), borrowing its `cu_seqlens`. For `Varlen`, both arrays have length
/// `batch + 1`, start at 0, never decrease, and end at the total row count.
pub type Layout<'a> = SeqLayout<&'a [i32]>;

/// Everything one reference forward call reads.
#[derive(Debug, Clone, Copy)]
pub struct ReferenceInputs<'a> {
    /// Queries, shaped as [`Layout`] says, already rounded to the kernel's input dtype.
    pub q: &'a [f32],
    /// Keys, shaped as [`Layout`] says.
    pub k: &'a [f32],
    /// Values, shaped as [`Layout`] says.
    pub v: &'a [f32],
    pub layout: Layout<'a>,
    pub num_heads_q: usize,
    /// Must divide `num_heads_q`; query head `h` reads kv head `h / (num_heads_q / num_heads_kv)`.
    pub num_heads_kv: usize,
    pub head_dim: usize,
    pub options: &'a AttnOptions,
    /// `[num_heads_q]`: ALiBi slope of each query head (bias `-slope * |i + shift - j|`).
    pub alibi_slopes: Option<&'a [f32]>,
    /// `[num_heads_q]`: O of head `h` is multiplied by `gate[h]` (LSE and entropy are not).
    pub head_gates: Option<&'a [f32]>,
    /// `[num_heads_q]`: attention-sink logit of each query head, computed as what it is: one
    /// more key column of every row, always visible, with score `sinks[h]` (no scale, softcap
    /// or ALiBi) and a zero value row. So LSE and entropy include its mass, and a row with no
    /// visible key gets `O = 0`, `lse = sinks[h]`, entropy 0 (a sink of -inf is no column).
    pub sinks: Option<&'a [f32]>,
}

impl<'a> ReferenceInputs<'a> {
    /// Packed `[total, h, d]` q, k, v of the variable-length batch `cu_seqlens` (q's, k's)
    /// describe; no ALiBi slopes or gates (set the fields for those).
    pub fn varlen(
        (q, k, v): (&'a [f32], &'a [f32], &'a [f32]),
        (cu_seqlens_q, cu_seqlens_k): (&'a [i32], &'a [i32]),
        (num_heads_q, num_heads_kv): (usize, usize),
        head_dim: usize,
        options: &'a AttnOptions,
    ) -> Self {
        ReferenceInputs {
            q,
            k,
            v,
            layout: Layout::Varlen {
                cu_seqlens_q,
                cu_seqlens_k,
            },
            num_heads_q,
            num_heads_kv,
            head_dim,
            options,
            alibi_slopes: None,
            head_gates: None,
            sinks: None,
        }
    }
}

/// Reference results, f32, in the layouts [`Layout`] documents.
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceOutputs {
    /// q's rows and heads with v's head dim (the same shape as q when d_v = d_qk).
    pub o: Vec<f32>,
    /// Natural-log log-sum-exp of each row's unmasked scores; `-inf` for a fully masked row.
    pub lse: Vec<f32>,
    /// Shannon entropy (nats) of each row's attention distribution; 0 for a fully masked row.
    pub entropy: Vec<f32>,
    /// Per row (same layout as `entropy`): the moments of the row's distribution that bound a
    /// kernel's entropy error ([`crate::reference::ErrorModel::entropy_rows`]); all 0 for a
    /// fully masked row.
    pub entropy_terms: Vec<EntropyTerms>,
}

/// One batch item's rows in the packed `[rows, heads, d]` view of q and of k/v.
#[derive(Debug, Clone, Copy)]
pub(super) struct Item {
    pub(super) q_start: usize,
    pub(super) q_len: usize,
    pub(super) k_start: usize,
    pub(super) k_len: usize,
}

/// The problem after validation: items, totals, and where each LSE row goes.
pub(super) struct Problem {
    pub(super) items: Vec<Item>,
    pub(super) total_q: usize,
    pub(super) total_k: usize,
    padded: bool,
}

impl Problem {
    /// Index in the LSE / entropy buffer of (item `b`, head `h`, row `i` of the item).
    fn stat_index(&self, b: usize, h: usize, i: usize, num_heads: usize) -> usize {
        let item = self.items[b];
        if self.padded {
            // [batch, hq, sq]: every padded item has the same q_len.
            (b * num_heads + h) * item.q_len + i
        } else {
            // [hq, total_q]
            h * self.total_q + item.q_start + i
        }
    }
}

fn invalid(msg: String) -> ReferenceError {
    ReferenceError::Invalid(msg)
}

/// Checks one cu_seqlens array and returns its per-item (start, len).
fn split_cu_seqlens(name: &str, cu: &[i32]) -> Result<Vec<(usize, usize)>, ReferenceError> {
    if cu.is_empty() {
        return Err(invalid(format!(
            "{name} is empty (needs batch + 1 entries)"
        )));
    }
    if cu[0] != 0 {
        return Err(invalid(format!("{name}[0] = {}, expected 0", cu[0])));
    }
    cu.windows(2)
        .enumerate()
        .map(|(b, w)| {
            if w[1] < w[0] {
                Err(invalid(format!(
                    "{name} decreases at item {b}: {} -> {}",
                    w[0], w[1]
                )))
            } else {
                Ok((w[0] as usize, (w[1] - w[0]) as usize))
            }
        })
        .collect()
}

pub(super) fn validate(inp: &ReferenceInputs) -> Result<Problem, ReferenceError> {
    validate_with_v_dim(inp, inp.head_dim)
}

/// [`validate`] with v's head dim `dv` (q and k have `inp.head_dim`).
fn validate_with_v_dim(inp: &ReferenceInputs, dv: usize) -> Result<Problem, ReferenceError> {
    let (hq, hkv, d) = (inp.num_heads_q, inp.num_heads_kv, inp.head_dim);
    if hq == 0 || hkv == 0 || d == 0 || dv == 0 {
        return Err(invalid(format!(
            "heads and head dims must be positive (hq {hq}, hkv {hkv}, d {d}, d_v {dv})"
        )));
    }
    if hq % hkv != 0 {
        return Err(invalid(format!("hq {hq} is not a multiple of hkv {hkv}")));
    }
    if let Some(c) = inp.options.softcap {
        if !(c.is_finite() && c > 0.0) {
            return Err(invalid(format!("softcap must be finite and > 0, got {c}")));
        }
    }
    for (name, per_head) in [
        ("alibi_slopes", inp.alibi_slopes),
        ("head_gates", inp.head_gates),
        ("sinks", inp.sinks),
    ] {
        if let Some(xs) = per_head {
            if xs.len() != hq {
                return Err(invalid(format!(
                    "{name} has {} entries, hq is {hq}",
                    xs.len()
                )));
            }
        }
    }
    let problem = match inp.layout {
        Layout::Padded {
            batch,
            seqlen_q,
            seqlen_k,
        } => Problem {
            items: (0..batch)
                .map(|b| Item {
                    q_start: b * seqlen_q,
                    q_len: seqlen_q,
                    k_start: b * seqlen_k,
                    k_len: seqlen_k,
                })
                .collect(),
            total_q: batch * seqlen_q,
            total_k: batch * seqlen_k,
            padded: true,
        },
        Layout::Varlen {
            cu_seqlens_q,
            cu_seqlens_k,
        } => {
            if cu_seqlens_q.len() != cu_seqlens_k.len() {
                return Err(invalid(format!(
                    "cu_seqlens_q has {} entries, cu_seqlens_k {}",
                    cu_seqlens_q.len(),
                    cu_seqlens_k.len()
                )));
            }
            let qs = split_cu_seqlens("cu_seqlens_q", cu_seqlens_q)?;
            let ks = split_cu_seqlens("cu_seqlens_k", cu_seqlens_k)?;
            Problem {
                items: qs
                    .iter()
                    .zip(&ks)
                    .map(|(&(q_start, q_len), &(k_start, k_len))| Item {
                        q_start,
                        q_len,
                        k_start,
                        k_len,
                    })
                    .collect(),
                total_q: *cu_seqlens_q.last().unwrap_or(&0) as usize,
                total_k: *cu_seqlens_k.last().unwrap_or(&0) as usize,
                padded: false,
            }
        }
    };
    for (name, got, rows, heads, d) in [
        ("q", inp.q.len(), problem.total_q, hq, d),
        ("k", inp.k.len(), problem.total_k, hkv, d),
        ("v", inp.v.len(), problem.total_k, hkv, dv),
    ] {
        if got != rows * heads * d {
            return Err(invalid(format!(
                "{name} has {got} elements, expected {rows} rows x {heads} heads x {d}"
            )));
        }
    }
    Ok(problem)
}

/// Whether key `j` is visible from query row `i` of an item with `sq` queries and `sk` keys,
/// for the effective window `(left, right)` (`None` = unbounded), diagonal bottom-right aligned.
pub(super) fn key_visible(
    i: usize,
    j: usize,
    sq: usize,
    sk: usize,
    window: (Option<u32>, Option<u32>),
) -> bool {
    let diag = i as i64 + sk as i64 - sq as i64;
    let j = j as i64;
    let (left, right) = window;
    left.is_none_or(|l| j >= diag - i64::from(l)) && right.is_none_or(|r| j <= diag + i64::from(r))
}

/// Which keys each row of one item sees, identical for every head: `visible [hq, sq, sk]` and
/// `row_alive [hq, sq, 1]` (u8 0/1; a dead row sees no key).
pub(super) fn visibility(
    options: &AttnOptions,
    hq: usize,
    sq: usize,
    sk: usize,
    dev: &Device,
) -> Result<(Tensor, Tensor), ReferenceError> {
    let window = options.effective_window();
    let mut visible = Vec::with_capacity(sq * sk);
    let mut row_alive = Vec::with_capacity(sq);
    for i in 0..sq {
        let before = visible.len();
        visible.extend((0..sk).map(|j| u8::from(key_visible(i, j, sq, sk, window))));
        row_alive.push(u8::from(visible[before..].contains(&1)));
    }
    Ok((
        Tensor::from_vec(visible, (1, sq, sk), dev)?.broadcast_as((hq, sq, sk))?,
        Tensor::from_vec(row_alive, (1, sq, 1), dev)?.broadcast_as((hq, sq, 1))?,
    ))
}

/// The ALiBi bias of one item: `bias[h, i, j] = -slope[h] * |i + sk - sq - j|`, `[hq, sq, sk]`.
pub(super) fn alibi_bias(
    slopes: &[f32],
    sq: usize,
    sk: usize,
    dev: &Device,
) -> Result<Tensor, ReferenceError> {
    let shift = sk as i64 - sq as i64;
    let mut bias = Vec::with_capacity(slopes.len() * sq * sk);
    for &a in slopes {
        for i in 0..sq {
            for j in 0..sk {
                let dist = (i as i64 + shift - j as i64).abs() as f64;
                bias.push(-f64::from(a) * dist);
            }
        }
    }
    Ok(Tensor::from_vec(bias, (slopes.len(), sq, sk), dev)?)
}

pub(super) fn to_f64(xs: &[f32]) -> Vec<f64> {
    xs.iter().map(|&x| f64::from(x)).collect()
}

/// Per-item results: `o: [q_len, hq, d]`, `lse`, `entropy` and `entropy_terms: [hq, q_len]`.
struct ItemOutputs {
    o: Vec<f64>,
    lse: Vec<f64>,
    entropy: Vec<f64>,
    entropy_terms: Vec<EntropyTerms>,
}

/// Forward attention of one batch item (q_len > 0 and k_len > 0), all query heads at once.
/// `dv`: v's (and O's) head dim; q and k have `inp.head_dim`.
fn item_forward(
    inp: &ReferenceInputs,
    dv: usize,
    item: Item,
    dev: &Device,
) -> Result<ItemOutputs, ReferenceError> {
    let (hq, hkv, d) = (inp.num_heads_q, inp.num_heads_kv, inp.head_dim);
    let (sq, sk) = (item.q_len, item.k_len);
    let group = hq / hkv;

    let q_rows = &inp.q[item.q_start * hq * d..(item.q_start + sq) * hq * d];
    let k_rows = &inp.k[item.k_start * hkv * d..(item.k_start + sk) * hkv * d];
    let v_rows = &inp.v[item.k_start * hkv * dv..(item.k_start + sk) * hkv * dv];

    // [hq, sq, d]
    let q = Tensor::from_vec(to_f64(q_rows), (sq, hq, d), dev)?
        .permute((1, 0, 2))?
        .contiguous()?;
    // GQA: query head h reads kv head h / group. [hq]
    let kv_of_head = Tensor::from_vec((0..hq).map(|h| (h / group) as u32).collect(), hq, dev)?;
    let expand = |rows: &[f32], d: usize| -> Result<Tensor, ReferenceError> {
        // [sk, hkv, d] -> [hkv, sk, d] -> [hq, sk, d]
        Ok(Tensor::from_vec(to_f64(rows), (sk, hkv, d), dev)?
            .permute((1, 0, 2))?
            .contiguous()?
            .index_select(&kv_of_head, 0)?)
    };
    let k = expand(k_rows, d)?; // [hq, sk, d]
    let v = expand(v_rows, dv)?; // [hq, sk, dv]

    // Scores s = scale * q . k: [hq, sq, sk]
    let scale = f64::from(inp.options.scale_for(d));
    let mut s = q.matmul(&k.t()?.contiguous()?)?.affine(scale, 0.0)?;
    // The magnitude a kernel's rounding of each score scales with: scale * sum_c |q_c k_c|
    // (before any softcap), plus |ALiBi bias| below. [hq, sq, sk]
    let mut score_magnitude = q
        .abs()?
        .matmul(&k.abs()?.t()?.contiguous()?)?
        .affine(scale, 0.0)?;
    // |c * tanh(s / c)| with a softcap c (the size tanh.approx's relative error scales with),
    // else 0. [hq, sq, sk]
    let mut capped_magnitude = None;
    if let Some(c) = inp.options.softcap {
        let c = f64::from(c);
        // s = c * tanh(s / c): [hq, sq, sk]
        s = s.affine(1.0 / c, 0.0)?.tanh()?.affine(c, 0.0)?;
        capped_magnitude = Some(s.abs()?);
    }
    if let Some(slopes) = inp.alibi_slopes {
        let bias = alibi_bias(slopes, sq, sk, dev)?; // [hq, sq, sk]
        score_magnitude = (score_magnitude + bias.abs()?)?;
        s = (s + bias)?;
    }

    let (mut visible, mut row_alive) = visibility(inp.options, hq, sq, sk, dev)?;
    let mut v = v;
    let mut sk = sk;
    if let Some(sinks) = inp.sinks {
        // The sink: one more key column per head, score sinks[h], value 0, visible unless -inf
        // (so a -inf sink changes nothing). [hq, sq, 1] each.
        let column: Vec<f64> = sinks
            .iter()
            .flat_map(|&z| std::iter::repeat_n(f64::from(z), sq))
            .collect();
        let column = Tensor::from_vec(column, (hq, sq, 1), dev)?;
        let seen: Vec<u8> = sinks
            .iter()
            .flat_map(|&z| std::iter::repeat_n(u8::from(z != f32::NEG_INFINITY), sq))
            .collect();
        let seen = Tensor::from_vec(seen, (hq, sq, 1), dev)?;
        s = Tensor::cat(&[&s, &column], 2)?; // [hq, sq, sk + 1]
        score_magnitude = Tensor::cat(&[&score_magnitude, &column.abs()?], 2)?;
        capped_magnitude = capped_magnitude
            .map(|c| Tensor::cat(&[&c, &column.zeros_like()?], 2))
            .transpose()?;
        visible = Tensor::cat(&[&visible, &seen], 2)?; // [hq, sq, sk + 1]
        row_alive = row_alive.maximum(&seen)?; // [hq, sq, 1]
        v = Tensor::cat(
            &[
                &v,
                &Tensor::zeros((hq, 1, dv), candle_core::DType::F64, dev)?,
            ],
            1,
        )?; // [hq, sk + 1, dv]
        sk += 1;
    }

    let full = |value: f64, shape: (usize, usize, usize)| Tensor::full(value, shape, dev);
    let neg_inf_scores = full(f64::NEG_INFINITY, (hq, sq, sk))?; // [hq, sq, sk]
    let zero_scores = full(0.0, (hq, sq, sk))?; // [hq, sq, sk]
    let zero_rows = full(0.0, (hq, sq, 1))?; // [hq, sq, 1]
    let one_rows = full(1.0, (hq, sq, 1))?; // [hq, sq, 1]
    let neg_inf_rows = full(f64::NEG_INFINITY, (hq, sq, 1))?; // [hq, sq, 1]

    // Masked keys get -inf, so exp() turns them into exact zeros. [hq, sq, sk]
    let s = visible.where_cond(&s, &neg_inf_scores)?;
    // Row max; a dead row's max is -inf, replaced by 0 so that no -inf - -inf NaN appears.
    let m = s.max_keepdim(2)?; // [hq, sq, 1]
    let m = row_alive.where_cond(&m, &zero_rows)?; // [hq, sq, 1]
    let shifted = s.broadcast_sub(&m)?; // [hq, sq, sk], <= 0, -inf where masked
    let e = shifted.exp()?; // [hq, sq, sk]
    let l = e.sum_keepdim(2)?; // [hq, sq, 1], >= 1 on a live row, 0 on a dead one
    let l = row_alive.where_cond(&l, &one_rows)?; // [hq, sq, 1]
    let p = e.broadcast_div(&l)?; // [hq, sq, sk], rows sum to 1 (live) or 0 (dead)

    let mut o = p.matmul(&v)?; // [hq, sq, dv]
    if let Some(gates) = inp.head_gates {
        let gates = Tensor::from_vec(to_f64(gates), (hq, 1, 1), dev)?; // [hq, 1, 1]
        o = o.broadcast_mul(&gates)?; // [hq, sq, dv]
    }
    let o = o.permute((1, 0, 2))?.contiguous()?; // [sq, hq, dv]

    let log_l = l.log()?; // [hq, sq, 1]
    let lse = row_alive.where_cond(&(&m + &log_l)?, &neg_inf_rows)?; // [hq, sq, 1]
                                                                     // H = -sum p ln p = ln l - sum p (s - m), with (s - m) zeroed where masked (p is 0 there),
                                                                     // which also keeps a dead row at ln 1 - 0 = 0. [hq, sq, 1]
    let shifted = visible.where_cond(&shifted, &zero_scores)?; // [hq, sq, sk], finite
    let mean_shifted = (&p * &shifted)?.sum_keepdim(2)?; // [hq, sq, 1]: E_p[s] - m
    let entropy = (log_l - &mean_shifted)?;

    // What the entropy's error bound needs of each row (tolerance.rs, ErrorModel::entropy_rows):
    // the p-weighted deviation |s - E_p s| alone, times the score magnitude, and times the
    // softcapped score's size |c tanh(s / c)|; the gap E_p[m - s]; the largest score
    // magnitude and the key count. Masked keys have p = 0 and finite (zeroed) values here.
    let deviation = shifted.broadcast_sub(&mean_shifted)?.abs()?; // [hq, sq, sk]
    let weighted = (&p * &deviation)?; // [hq, sq, sk]
    let spread = weighted.sum_keepdim(2)?; // [hq, sq, 1]
    let weighted_spread = (&weighted * &score_magnitude)?.sum_keepdim(2)?; // [hq, sq, 1]
    let softcap_spread = match &capped_magnitude {
        Some(capped) => (&weighted * capped)?.sum_keepdim(2)?,
        None => zero_rows.clone(),
    }; // [hq, sq, 1]
    let gap = mean_shifted.neg()?; // [hq, sq, 1]
    let visible_f = visible.to_dtype(candle_core::DType::F64)?; // [hq, sq, sk]
    let max_magnitude = (&score_magnitude * &visible_f)?.max_keepdim(2)?; // [hq, sq, 1]
    let keys = visible_f.sum_keepdim(2)?; // [hq, sq, 1]
    let rows = |t: &Tensor| -> Result<Vec<f64>, ReferenceError> { Ok(t.flatten_all()?.to_vec1()?) };
    let (spread, weighted_spread, softcap_spread) = (
        rows(&spread)?,
        rows(&weighted_spread)?,
        rows(&softcap_spread)?,
    );
    let (gap, max_magnitude, keys) = (rows(&gap)?, rows(&max_magnitude)?, rows(&keys)?);
    let entropy_terms = (0..hq * sq)
        .map(|r| EntropyTerms {
            spread: spread[r],
            weighted_spread: weighted_spread[r],
            softcap_spread: softcap_spread[r],
            gap: gap[r],
            max_score_magnitude: max_magnitude[r],
            keys: keys[r] as usize,
        })
        .collect();

    Ok(ItemOutputs {
        o: o.flatten_all()?.to_vec1()?,
        lse: lse.flatten_all()?.to_vec1()?,
        entropy: entropy.flatten_all()?.to_vec1()?,
        entropy_terms,
    })
}

/// Reference forward attention. See [`ReferenceInputs`] for shapes and [`crate::common::options`] for the
/// semantics; a fully masked row (including every row of an item with no keys) gets `O = 0`,
/// `lse = -inf` and entropy 0.
pub fn attention(inp: &ReferenceInputs) -> Result<ReferenceOutputs, ReferenceError> {
    attention_with_v_dim(inp, inp.head_dim)
}

/// [`attention`] with d_qk != d_v: q and k have `inp.head_dim`, v is `[.., hkv, head_dim_v]`
/// and O `[.., hq, head_dim_v]` (LSE and entropy are the same rows as ever).
pub fn attention_with_v_dim(
    inp: &ReferenceInputs,
    head_dim_v: usize,
) -> Result<ReferenceOutputs, ReferenceError> {
    let problem = validate_with_v_dim(inp, head_dim_v)?;
    let (hq, d) = (inp.num_heads_q, head_dim_v);
    let dev = Device::Cpu;
    let stats_len = problem.total_q * hq;
    let mut out = ReferenceOutputs {
        o: vec![0.0; problem.total_q * hq * d],
        lse: vec![f32::NEG_INFINITY; stats_len],
        entropy: vec![0.0; stats_len],
        entropy_terms: vec![EntropyTerms::default(); stats_len],
    };
    for (b, &item) in problem.items.iter().enumerate() {
        // An item without queries has nothing to write; one without keys keeps the dead-row
        // values set above (candle is not asked to reduce over an empty axis), or, with sinks,
        // gets what the sink column alone gives.
        if item.q_len == 0 {
            continue;
        }
        if item.k_len == 0 {
            if let Some(sinks) = inp.sinks {
                sink_only_rows(&problem, b, item, sinks, d, &mut out);
            }
            continue;
        }
        let r = item_forward(inp, head_dim_v, item, &dev)?;
        let o_dst = &mut out.o[item.q_start * hq * d..(item.q_start + item.q_len) * hq * d];
        for (dst, &x) in o_dst.iter_mut().zip(&r.o) {
            *dst = x as f32;
        }
        for h in 0..hq {
            for i in 0..item.q_len {
                let at = problem.stat_index(b, h, i, hq);
                out.lse[at] = r.lse[h * item.q_len + i] as f32;
                out.entropy[at] = r.entropy[h * item.q_len + i] as f32;
                out.entropy_terms[at] = r.entropy_terms[h * item.q_len + i];
            }
        }
    }
    Ok(out)
}

/// The rows of an item without keys when the heads have sinks: the sink column alone, so
/// `P = 1` on it: O = 0, LSE = sink, entropy 0; a NaN or +inf sink makes all three NaN (as
/// `exp(z - z)` does in the general path) and a -inf sink leaves the dead-row values.
fn sink_only_rows(
    problem: &Problem,
    b: usize,
    item: Item,
    sinks: &[f32],
    d: usize,
    out: &mut ReferenceOutputs,
) {
    let hq = sinks.len();
    for (h, &z) in sinks.iter().enumerate() {
        if z == f32::NEG_INFINITY {
            continue;
        }
        let finite = z.is_finite();
        for i in 0..item.q_len {
            let at = problem.stat_index(b, h, i, hq);
            out.lse[at] = if finite { z } else { f32::NAN };
            out.entropy[at] = if finite { 0.0 } else { f32::NAN };
            let row = ((item.q_start + i) * hq + h) * d;
            out.o[row..row + d].fill(if finite { 0.0 } else { f32::NAN });
        }
    }
}

#[cfg(test)]
mod tests;
