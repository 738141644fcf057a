//! Test-only: a second, loop-based f64 implementation of the attention semantics, written
//! independently of the candle one (its own indexing, masking and softmax), that the candle
//! reference is checked against.

use super::attention::{Layout, ReferenceInputs};

/// Naive results in f64, same layouts as `ReferenceOutputs`.
pub struct NaiveOutputs {
    pub o: Vec<f64>,
    pub lse: Vec<f64>,
    pub entropy: Vec<f64>,
}

/// Straight from the contract in `crate::common::options`: one (item, head, row) at a time.
/// Assumes the inputs are valid (the tests build them so).
pub fn naive_attention(inp: &ReferenceInputs) -> NaiveOutputs {
    let (hq, hkv, d) = (inp.num_heads_q, inp.num_heads_kv, inp.head_dim);
    let opts = inp.options;
    // (q_start, q_len, k_start, k_len) of every item, and the total q rows.
    let (items, total_q): (Vec<(usize, usize, usize, usize)>, usize) = match inp.layout {
        Layout::Padded {
            batch,
            seqlen_q,
            seqlen_k,
        } => (
            (0..batch)
                .map(|b| (b * seqlen_q, seqlen_q, b * seqlen_k, seqlen_k))
                .collect(),
            batch * seqlen_q,
        ),
        Layout::Varlen {
            cu_seqlens_q: cq,
            cu_seqlens_k: ck,
        } => (
            (0..cq.len() - 1)
                .map(|b| {
                    (
                        cq[b] as usize,
                        (cq[b + 1] - cq[b]) as usize,
                        ck[b] as usize,
                        (ck[b + 1] - ck[b]) as usize,
                    )
                })
                .collect(),
            cq[cq.len() - 1] as usize,
        ),
    };
    let padded = matches!(inp.layout, Layout::Padded { .. });
    // The f32 scale the kernel receives (for the default, 1/sqrt(d) rounded to f32).
    let scale = f64::from(opts.softmax_scale.unwrap_or(1.0 / (d as f32).sqrt()));
    let mut o = vec![0.0; total_q * hq * d];
    let mut lse = vec![f64::NEG_INFINITY; total_q * hq];
    let mut entropy = vec![0.0; total_q * hq];

    for (b, &(q0, sq, k0, sk)) in items.iter().enumerate() {
        for h in 0..hq {
            let kvh = h / (hq / hkv);
            for i in 0..sq {
                // Query row i of the item sits on key column `diag` of the bottom-right diagonal.
                let diag = i as i64 + sk as i64 - sq as i64;
                let mut scores: Vec<(usize, f64)> = Vec::new();
                for j in 0..sk {
                    let ji = j as i64;
                    let mut masked = false;
                    if opts.causal && ji > diag {
                        masked = true;
                    }
                    if let Some(w) = opts.window {
                        if let Some(l) = w.left {
                            masked |= ji < diag - i64::from(l);
                        }
                        if let Some(r) = w.right {
                            masked |= ji > diag + i64::from(r);
                        }
                    }
                    if masked {
                        continue;
                    }
                    let mut dot = 0.0;
                    for c in 0..d {
                        let qx = inp.q[((q0 + i) * hq + h) * d + c];
                        let kx = inp.k[((k0 + j) * hkv + kvh) * d + c];
                        dot += f64::from(qx) * f64::from(kx);
                    }
                    let mut s = scale * dot;
                    if let Some(cap) = opts.softcap {
                        let cap = f64::from(cap);
                        s = cap * (s / cap).tanh();
                    }
                    if let Some(slopes) = inp.alibi_slopes {
                        s -= f64::from(slopes[h]) * (diag - ji).abs() as f64;
                    }
                    scores.push((j, s));
                }
                let stat_at = if padded {
                    (b * hq + h) * sq + i
                } else {
                    h * total_q + q0 + i
                };
                // The sink: exp(z) in the denominator, no value (-inf: none).
                let sink = inp.sinks.map_or(f64::NEG_INFINITY, |z| f64::from(z[h]));
                if scores.is_empty() && sink == f64::NEG_INFINITY {
                    continue; // O = 0, lse = -inf, entropy = 0 already
                }
                let m = scores.iter().fold(sink, |a, &(_, s)| a.max(s));
                let l: f64 =
                    scores.iter().map(|&(_, s)| (s - m).exp()).sum::<f64>() + (sink - m).exp();
                let row_lse = m + l.ln();
                lse[stat_at] = row_lse;
                let gate = inp.head_gates.map_or(1.0, |g| f64::from(g[h]));
                let p_sink = (sink - row_lse).exp();
                let mut h_row = if p_sink > 0.0 {
                    -p_sink * p_sink.ln()
                } else {
                    0.0
                };
                for &(j, s) in &scores {
                    let p = (s - row_lse).exp();
                    if p > 0.0 {
                        h_row -= p * p.ln();
                    }
                    for c in 0..d {
                        let vx = inp.v[((k0 + j) * hkv + kvh) * d + c];
                        o[((q0 + i) * hq + h) * d + c] += gate * p * f64::from(vx);
                    }
                }
                entropy[stat_at] = h_row;
            }
        }
    }
    NaiveOutputs { o, lse, entropy }
}
