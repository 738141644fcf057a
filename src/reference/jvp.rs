//! Reference forward-mode (JVP) attention: O' = dO/dt along tangents (dq, dk, dv), by central
//! finite differences in f64 of an f64 forward evaluated at the (rounded) inputs plus and minus
//! h times the tangents, plus per element the tolerance a 16-bit kernel earns (from the
//! explicit P and S' of the same problem). Semantics as [`mod@super::attention`]: masks
//! bottom-right aligned, GQA, varlen, softcap, ALiBi, head gates, sinks. The f64 forward is
//! checked against the candle reference and the differences against the closed form
//! O' = P dV + (P o (S' - rowsum(P o S'))) V in the unit tests below.

use super::attention::{key_visible, validate, ReferenceInputs};
use super::ReferenceError;

/// Tangents of q, k, v, laid out like them (f32, already rounded to the kernel's dtype).
#[derive(Debug, Clone, Copy)]
pub struct Tangents<'a> {
    pub dq: &'a [f32],
    pub dk: &'a [f32],
    pub dv: &'a [f32],
}

/// The reference O, O' (f64, laid out like q) and each element's tolerance.
#[derive(Debug, Clone, PartialEq)]
pub struct JvpOutputs {
    pub o: Vec<f64>,
    pub o_tangent: Vec<f64>,
    pub o_tol: Vec<f64>,
    pub o_tangent_tol: Vec<f64>,
    /// The closed-form O' (f64), for the reference's own tests.
    pub o_tangent_closed: Vec<f64>,
}

/// Finite-difference step: inputs are O(1), so the central difference's truncation error
/// (h^2 / 6 times the third derivative) and its cancellation error (1e-16 / h) both stay far
/// below the tolerances' absolute floor.
const FD_STEP: f64 = 1e-4;
/// Absolute floor of every tolerance (above the finite difference's own error).
const ABS_FLOOR: f64 = 1e-5;
/// Relative error of the kernels' softcap (`tanh.approx.f32`: max relative error 2^-10.987,
/// PTX ISA), taken as 2^-10 per unit of |score|.
const TANH_APPROX_REL: f64 = 1.0 / 1024.0;

/// One (item, head, row) of the f64 forward with everything the tolerance needs.
struct RowEval {
    /// Softmax over the visible keys `(j, p_j, s'_j)` (s' in natural units) and the sink's p.
    keys: Vec<(usize, f64, f64)>,
    max_abs_score: f64,
}

/// Problem geometry resolved once: per item `(q_start, q_len, k_start, k_len)`.
fn items(inp: &ReferenceInputs) -> Result<Vec<(usize, usize, usize, usize)>, ReferenceError> {
    Ok(validate(inp)?
        .items
        .iter()
        .map(|it| (it.q_start, it.q_len, it.k_start, it.k_len))
        .collect())
}

/// The scale the kernels receive (the default 1/sqrt(d) rounded to f32).
fn scale_of(inp: &ReferenceInputs) -> f64 {
    f64::from(
        inp.options
            .softmax_scale
            .unwrap_or(1.0 / (inp.head_dim as f32).sqrt()),
    )
}

/// Softmax of one row of one head over its visible keys, with the score tangent when `dq, dk`
/// are given: returns the row's keys, or `None` for a row with neither keys nor a sink.
#[allow(clippy::too_many_arguments)]
fn eval_row(
    inp: &ReferenceInputs,
    (q, k): (&[f64], &[f64]),
    tangent: Option<(&[f64], &[f64])>,
    (q0, sq, k0, sk): (usize, usize, usize, usize),
    h: usize,
    i: usize,
) -> Option<RowEval> {
    let (hq, hkv, d) = (inp.num_heads_q, inp.num_heads_kv, inp.head_dim);
    let kvh = h / (hq / hkv);
    let scale = scale_of(inp);
    let window = inp.options.effective_window();
    let diag = i as i64 + sk as i64 - sq as i64;
    let qi = ((q0 + i) * hq + h) * d;
    let mut scores: Vec<(usize, f64, f64)> = Vec::new();
    let mut max_abs_score: f64 = 0.0;
    for j in (0..sk).filter(|&j| key_visible(i, j, sq, sk, window)) {
        let kj = ((k0 + j) * hkv + kvh) * d;
        let raw: f64 = (0..d).map(|c| q[qi + c] * k[kj + c]).sum();
        let raw_t: f64 = tangent.map_or(0.0, |(dq, dk)| {
            (0..d)
                .map(|c| dq[qi + c] * k[kj + c] + q[qi + c] * dk[kj + c])
                .sum()
        });
        let (mut s, mut st) = (scale * raw, scale * raw_t);
        if let Some(cap) = inp.options.softcap {
            let t = (s / f64::from(cap)).tanh();
            s = f64::from(cap) * t;
            st *= 1.0 - t * t;
        }
        if let Some(slopes) = inp.alibi_slopes {
            s -= f64::from(slopes[h]) * (diag - j as i64).abs() as f64;
        }
        max_abs_score = max_abs_score.max(s.abs());
        scores.push((j, s, st));
    }
    let sink = inp.sinks.map_or(f64::NEG_INFINITY, |z| f64::from(z[h]));
    if scores.is_empty() && sink == f64::NEG_INFINITY {
        return None;
    }
    let m = scores.iter().fold(sink, |a, &(_, s, _)| a.max(s));
    let l = scores.iter().map(|&(_, s, _)| (s - m).exp()).sum::<f64>() + (sink - m).exp();
    Some(RowEval {
        keys: scores
            .into_iter()
            .map(|(j, s, st)| (j, (s - m).exp() / l, st))
            .collect(),
        max_abs_score,
    })
}

/// The f64 forward O (laid out like q) at inputs q, k, v.
fn forward(
    inp: &ReferenceInputs,
    items: &[(usize, usize, usize, usize)],
    (q, k, v): (&[f64], &[f64], &[f64]),
) -> Vec<f64> {
    let (hq, hkv, d) = (inp.num_heads_q, inp.num_heads_kv, inp.head_dim);
    let mut o = vec![0.0; q.len()];
    for &it @ (q0, sq, k0, _) in items {
        for h in 0..hq {
            let gate = inp.head_gates.map_or(1.0, |g| f64::from(g[h]));
            for i in 0..sq {
                let Some(row) = eval_row(inp, (q, k), None, it, h, i) else {
                    continue;
                };
                let oi = ((q0 + i) * hq + h) * d;
                for &(j, p, _) in &row.keys {
                    let vj = ((k0 + j) * hkv + h / (hq / hkv)) * d;
                    for c in 0..d {
                        o[oi + c] += gate * p * v[vj + c];
                    }
                }
            }
        }
    }
    o
}

fn widen(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| f64::from(v)).collect()
}

/// The reference JVP of `inp` along `t`; `unit_roundoff`: the kernel dtype's (2^-11 for f16,
/// 2^-8 for bf16), which bounds the rounding of P, P o S' and the outputs to 16 bits.
pub fn attention_jvp(
    inp: &ReferenceInputs,
    t: Tangents,
    unit_roundoff: f64,
) -> Result<JvpOutputs, ReferenceError> {
    let items = items(inp)?;
    for (name, got, want) in [
        ("dq", t.dq.len(), inp.q.len()),
        ("dk", t.dk.len(), inp.k.len()),
        ("dv", t.dv.len(), inp.v.len()),
    ] {
        if got != want {
            return Err(ReferenceError::Invalid(format!(
                "{name} has {got} elements, its primal {want}"
            )));
        }
    }
    let (q, k, v) = (widen(inp.q), widen(inp.k), widen(inp.v));
    let (dq, dk, dv) = (widen(t.dq), widen(t.dk), widen(t.dv));
    let shifted = |sign: f64| {
        let at = |x: &[f64], dx: &[f64]| -> Vec<f64> {
            x.iter()
                .zip(dx)
                .map(|(a, b)| a + sign * FD_STEP * b)
                .collect()
        };
        forward(inp, &items, (&at(&q, &dq), &at(&k, &dk), &at(&v, &dv)))
    };
    let (plus, minus) = (shifted(1.0), shifted(-1.0));
    let o_tangent: Vec<f64> = plus
        .iter()
        .zip(&minus)
        .map(|(a, b)| (a - b) / (2.0 * FD_STEP))
        .collect();
    let o = forward(inp, &items, (&q, &k, &v));

    // Closed form and tolerances from the explicit P and S'.
    let (hq, hkv, d) = (inp.num_heads_q, inp.num_heads_kv, inp.head_dim);
    let mut closed = vec![0.0; q.len()];
    let mut o_tol = vec![ABS_FLOOR; q.len()];
    let mut t_tol = vec![ABS_FLOOR; q.len()];
    for &it @ (q0, sq, k0, _) in &items {
        for h in 0..hq {
            let gate = inp.head_gates.map_or(1.0, |g| f64::from(g[h]));
            let kvh = h / (hq / hkv);
            for i in 0..sq {
                let Some(row) = eval_row(inp, (&q, &k), Some((&dq, &dk)), it, h, i) else {
                    continue;
                };
                let r: f64 = row.keys.iter().map(|&(_, p, st)| p * st).sum();
                // Relative error of each p (and of p s'): its 16-bit rounding, ex2.approx, and
                // under a softcap the approximate tanh (in the score and its derivative).
                let softcap_err = if inp.options.softcap.is_some() {
                    2.0 * TANH_APPROX_REL * (1.0 + row.max_abs_score)
                } else {
                    0.0
                };
                let rel = 2.0 * unit_roundoff + softcap_err;
                let oi = ((q0 + i) * hq + h) * d;
                for c in 0..d {
                    let (mut val, mut mag_o, mut mag_t) = (0.0, 0.0, 0.0);
                    for &(j, p, st) in &row.keys {
                        let vj = ((k0 + j) * hkv + kvh) * d + c;
                        val += p * (dv[vj] + (st - r) * v[vj]);
                        mag_o += p * v[vj].abs();
                        mag_t += p * (dv[vj].abs() + (st.abs() + r.abs()) * v[vj].abs());
                    }
                    closed[oi + c] = gate * val;
                    let g = gate.abs();
                    o_tol[oi + c] += 4.0 * g * (rel * mag_o + unit_roundoff * o[oi + c].abs());
                    t_tol[oi + c] +=
                        4.0 * g * (rel * mag_t + unit_roundoff * (val.abs() + r.abs() * mag_o));
                }
            }
        }
    }
    Ok(JvpOutputs {
        o,
        o_tangent,
        o_tol,
        o_tangent_tol: t_tol,
        o_tangent_closed: closed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::options::{AttnOptions, SlidingWindow};
    use crate::reference::{attention, Layout};
    use rand::{Rng, SeedableRng};

    fn draw(rng: &mut rand::rngs::StdRng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    /// Random varlen problems with every option: the f64 forward equals candle's reference,
    /// the finite differences equal the closed form, and the JVP is linear in the tangent.
    #[test]
    fn finite_differences_match_the_closed_form_and_the_forward_matches_candle() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(rand::random());
        for case in 0..6 {
            let (hq, hkv, d) = (4, 2, 8);
            let cu_q = [0i32, 5, 5, 12];
            let cu_k = [0i32, 9, 13, 13 + rng.random_range(1..9)];
            let (tq, tk) = (12usize, cu_k[3] as usize);
            let options = AttnOptions {
                softmax_scale: None,
                causal: case % 2 == 0,
                window: (case % 3 == 0).then_some(SlidingWindow {
                    left: Some(3),
                    right: None,
                }),
                softcap: (case >= 3).then_some(4.0),
            };
            let (nq, nk) = (tq * hq * d, tk * hkv * d);
            let [q, k, v, dq, dk, dv] = [nq, nk, nk, nq, nk, nk].map(|n| draw(&mut rng, n));
            let slopes = draw(&mut rng, hq);
            let gates = draw(&mut rng, hq);
            let sinks = draw(&mut rng, hq);
            let mut inp =
                ReferenceInputs::varlen((&q, &k, &v), (&cu_q, &cu_k), (hq, hkv), d, &options);
            inp.alibi_slopes = (case % 2 == 1).then_some(&slopes[..]);
            inp.head_gates = Some(&gates);
            inp.sinks = (case >= 2).then_some(&sinks[..]);
            assert!(matches!(inp.layout, Layout::Varlen { .. }));
            let t = Tangents {
                dq: &dq,
                dk: &dk,
                dv: &dv,
            };
            let r = attention_jvp(&inp, t, 2f64.powi(-11)).unwrap();
            let candle = attention(&inp).unwrap();
            for (a, b) in r.o.iter().zip(&candle.o) {
                assert!((a - f64::from(*b)).abs() < 1e-6, "{a} vs candle {b}");
            }
            let scale = r.o_tangent.iter().fold(0f64, |m, x| m.max(x.abs()));
            assert!(scale > 1e-3, "a tangent that moves nothing tests nothing");
            for (a, b) in r.o_tangent.iter().zip(&r.o_tangent_closed) {
                assert!((a - b).abs() < 1e-7 * (1.0 + scale), "fd {a} vs closed {b}");
            }
            let twice = |x: &[f32]| -> Vec<f32> { x.iter().map(|v| 2.0 * v).collect() };
            let (dq2, dk2, dv2) = (twice(&dq), twice(&dk), twice(&dv));
            let t2 = Tangents {
                dq: &dq2,
                dk: &dk2,
                dv: &dv2,
            };
            let r2 = attention_jvp(&inp, t2, 2f64.powi(-11)).unwrap();
            for (a, b) in r2.o_tangent.iter().zip(&r.o_tangent) {
                assert!((a - 2.0 * b).abs() < 1e-7 * (1.0 + scale));
            }
        }
    }

    #[test]
    fn mismatched_tangents_are_errors() {
        let o = AttnOptions::default();
        let x = vec![0.5f32; 16];
        let inp = ReferenceInputs::varlen((&x, &x, &x), (&[0, 2], &[0, 2]), (1, 1), 8, &o);
        let short = vec![0.5f32; 8];
        let t = Tangents {
            dq: &x,
            dk: &short,
            dv: &x,
        };
        assert!(attention_jvp(&inp, t, 1e-3).is_err());
    }
}
