//! Reference backward attention: dQ, dK, dV of `loss = Σ O ∘ dO`, by candle's autograd
//! (`Var`, `backward`) through the naive attention (scores, mask, softmax, `P V`) in f64 on the
//! CPU, from the same rounded inputs the kernel reads; plus, per gradient element, the tolerance
//! [`BwdErrorModel`] derives (computed from the explicit `P`, `dP`, `D`, `dS` of the same
//! problem). Semantics as [`mod@super::attention`]: masks bottom-right aligned, GQA, varlen, softcap,
//! ALiBi, head gates and attention sinks (the sink a key column of score `sinks[h]` and value 0;
//! autograd gives the gates' and the sinks' gradients too).

use candle_core::{DType as CDType, Device, Tensor, Var};

use super::attention::{alibi_bias, to_f64, validate, visibility, Item, ReferenceInputs};
use super::tolerance::BwdErrorModel;
use super::ReferenceError;

/// Gradients (f32, laid out like q, k, v) and each element's tolerance.
#[derive(Debug, Clone, PartialEq)]
pub struct BackwardOutputs {
    pub dq: Vec<f32>,
    pub dk: Vec<f32>,
    pub dv: Vec<f32>,
    pub dq_tol: Vec<f64>,
    pub dk_tol: Vec<f64>,
    pub dv_tol: Vec<f64>,
    /// `[hq]` d(loss) / d(gate) and its tolerance, with head gates (else empty).
    pub d_gates: Vec<f32>,
    pub d_gates_tol: Vec<f64>,
    /// `[hq]` d(loss) / d(sink) and its tolerance, with sinks (else empty).
    pub d_sinks: Vec<f32>,
    pub d_sinks_tol: Vec<f64>,
}

/// The reference backward of `inp` for the output gradient `d_o` (laid out like q), with
/// tolerances from `model`.
pub fn attention_backward(
    inp: &ReferenceInputs,
    d_o: &[f32],
    model: &BwdErrorModel,
) -> Result<BackwardOutputs, ReferenceError> {
    let problem = validate(inp)?;
    if d_o.len() != inp.q.len() {
        return Err(ReferenceError::Invalid(format!(
            "d_o has {} elements, q {}",
            d_o.len(),
            inp.q.len()
        )));
    }
    let (hq, hkv, d) = (inp.num_heads_q, inp.num_heads_kv, inp.head_dim);
    let zeros = |n: usize| vec![0f32; n];
    let mut out = BackwardOutputs {
        dq: zeros(problem.total_q * hq * d),
        dk: zeros(problem.total_k * hkv * d),
        dv: zeros(problem.total_k * hkv * d),
        dq_tol: vec![0.0; problem.total_q * hq * d],
        dk_tol: vec![0.0; problem.total_k * hkv * d],
        dv_tol: vec![0.0; problem.total_k * hkv * d],
        d_gates: Vec::new(),
        d_gates_tol: Vec::new(),
        d_sinks: Vec::new(),
        d_sinks_tol: Vec::new(),
    };
    let sinked = inp.sinks.is_some();
    // d(sink): the sum over items, and the two magnitudes its tolerance needs, per head.
    let mut d_sinks = vec![0f64; if sinked { hq } else { 0 }];
    let mut sink_terms = vec![(0f64, 0f64); d_sinks.len()];
    let gated = inp.head_gates.is_some();
    let mut d_gates = vec![0f64; if gated { hq } else { 0 }];
    if gated {
        out.d_gates_tol = vec![0.0; hq];
    }
    let dev = Device::Cpu;
    for &item in &problem.items {
        // No queries or no keys: every gradient of the item is 0 (already).
        if item.q_len == 0 || item.k_len == 0 {
            continue;
        }
        let g = item_backward(inp, d_o, item, model, &dev)?;
        let (qa, qb) = (item.q_start * hq * d, (item.q_start + item.q_len) * hq * d);
        let (ka, kb) = (
            item.k_start * hkv * d,
            (item.k_start + item.k_len) * hkv * d,
        );
        let put = |dst: &mut [f32], src: &[f64]| {
            for (o, &x) in dst.iter_mut().zip(src) {
                *o = x as f32;
            }
        };
        put(&mut out.dq[qa..qb], &g.dq);
        put(&mut out.dk[ka..kb], &g.dk);
        put(&mut out.dv[ka..kb], &g.dv);
        out.dq_tol[qa..qb].copy_from_slice(&g.dq_tol);
        out.dk_tol[ka..kb].copy_from_slice(&g.dk_tol);
        out.dv_tol[ka..kb].copy_from_slice(&g.dv_tol);
        for (acc, x) in d_gates.iter_mut().zip(&g.d_gates) {
            *acc += x;
        }
        for (acc, x) in out.d_gates_tol.iter_mut().zip(&g.d_gates_tol) {
            *acc += x;
        }
        for (acc, x) in d_sinks.iter_mut().zip(&g.d_sinks) {
            *acc += x;
        }
        for (acc, x) in sink_terms.iter_mut().zip(&g.sink_terms) {
            *acc = (acc.0 + x.0, acc.1 + x.1);
        }
    }
    out.d_gates = d_gates.iter().map(|&x| x as f32).collect();
    out.d_sinks = d_sinks.iter().map(|&x| x as f32).collect();
    // d(sink_h) = -sum_i P_sink_i D_i over the head's rows of every item. Its error:
    // P_sink_i = exp(z_h - L_i) inherits L's error relatively (within δP); D_i = dO_i . O_i is
    // formed from the kernel's O (off by o_error per element: o_error |dO_i|_1) in an f32 dot
    // (d ε); the f32 sum over all total_q rows (serial per lane, then the shuffle tree) and the
    // exp add (total_q + 64) ε. With S1 = sum_i P_sink_i sum_c |dO_ic O_ic| and
    // S2 = sum_i P_sink_i |dO_i|_1: (δP + (d + total_q + 64) ε) S1 + o_error S2.
    let terms = (problem.total_q + d + 64) as f64;
    out.d_sinks_tol = sink_terms
        .iter()
        .map(|&(s1, s2)| {
            (model.p_rel_error() + super::tolerance::F32_UNIT_ROUNDOFF * terms) * s1
                + model.o_error() * s2
        })
        .collect();
    Ok(out)
}

/// One item's gradients and tolerances, `[rows, heads, d]` each.
struct ItemGrads {
    dq: Vec<f64>,
    dk: Vec<f64>,
    dv: Vec<f64>,
    dq_tol: Vec<f64>,
    dk_tol: Vec<f64>,
    dv_tol: Vec<f64>,
    /// `[hq]`, with gates.
    d_gates: Vec<f64>,
    d_gates_tol: Vec<f64>,
    /// `[hq]`, with sinks: d(sink), and (S1, S2) of its tolerance (`attention_backward`).
    d_sinks: Vec<f64>,
    sink_terms: Vec<(f64, f64)>,
}

fn item_backward(
    inp: &ReferenceInputs,
    d_o: &[f32],
    item: Item,
    model: &BwdErrorModel,
    dev: &Device,
) -> Result<ItemGrads, ReferenceError> {
    let (hq, hkv, d) = (inp.num_heads_q, inp.num_heads_kv, inp.head_dim);
    let (sq, sk) = (item.q_len, item.k_len);
    let group = hq / hkv;
    let q_range = item.q_start * hq * d..(item.q_start + sq) * hq * d;
    let k_range = item.k_start * hkv * d..(item.k_start + sk) * hkv * d;
    // [rows, heads, d] -> [heads, rows, d]
    let heads_first = |rows: &[f32], n: usize, h: usize| -> Result<Tensor, ReferenceError> {
        Ok(Tensor::from_vec(to_f64(rows), (n, h, d), dev)?
            .permute((1, 0, 2))?
            .contiguous()?)
    };
    let q = Var::from_tensor(&heads_first(&inp.q[q_range.clone()], sq, hq)?)?; // [hq, sq, d]
    let k = Var::from_tensor(&heads_first(&inp.k[k_range.clone()], sk, hkv)?)?; // [hkv, sk, d]
    let v = Var::from_tensor(&heads_first(&inp.v[k_range], sk, hkv)?)?; // [hkv, sk, d]
    let d_out = heads_first(&d_o[q_range], sq, hq)?; // [hq, sq, d]

    // GQA: query head h reads kv head h / group. [hq]
    let kv_of_head = Tensor::from_vec((0..hq).map(|h| (h / group) as u32).collect(), hq, dev)?;
    let kx = k.as_tensor().index_select(&kv_of_head, 0)?; // [hq, sk, d]
    let vx = v.as_tensor().index_select(&kv_of_head, 0)?; // [hq, sk, d]
    let scale = f64::from(inp.options.scale_for(d));

    // visible [hq, sq, sk], row_alive [hq, sq, 1], as the forward reference.
    let (visible, row_alive) = visibility(inp.options, hq, sq, sk, dev)?;
    let full = |x: f64, shape: (usize, usize, usize)| Tensor::full(x, shape, dev);

    // The naive forward, on the autograd tape: s = scale q k^T, softcap, ALiBi, masked,
    // softmax, O = P V, gated.
    let mut s = q
        .as_tensor()
        .matmul(&kx.t()?.contiguous()?)?
        .affine(scale, 0.0)?; // [hq, sq, sk]
                              // The softcap's tanh t (off the tape; the modelled derivative is 1 - t^2). [hq, sq, sk]
    let mut tanh = None;
    if let Some(c) = inp.options.softcap {
        let c = f64::from(c);
        let t = s.affine(1.0 / c, 0.0)?.tanh()?;
        s = t.affine(c, 0.0)?;
        tanh = Some(t.detach());
    }
    if let Some(slopes) = inp.alibi_slopes {
        s = (s + alibi_bias(slopes, sq, sk, dev)?)?;
    }
    let s = visible.where_cond(&s, &full(f64::NEG_INFINITY, (hq, sq, sk))?)?;
    // Sinks: one more key column of score sinks[h] (on the tape: autograd gives d(sink)) and no
    // value, visible unless -inf (then it is no column), as the forward reference.
    let sink = match inp.sinks {
        Some(z) => Some(Var::from_tensor(&Tensor::from_vec(
            to_f64(z),
            (hq, 1, 1),
            dev,
        )?)?),
        None => None,
    };
    let (s, row_alive, columns) = match (&sink, inp.sinks) {
        (Some(z), Some(zs)) => {
            let seen: Vec<u8> = zs
                .iter()
                .flat_map(|&x| std::iter::repeat_n(u8::from(x != f32::NEG_INFINITY), sq))
                .collect();
            let seen = Tensor::from_vec(seen, (hq, sq, 1), dev)?;
            let column = z.as_tensor().broadcast_as((hq, sq, 1))?;
            (
                Tensor::cat(&[&s, &column], 2)?, // [hq, sq, sk + 1]
                row_alive.maximum(&seen)?,
                sk + 1,
            )
        }
        _ => (s, row_alive, sk),
    };
    // The row max only shifts the exponent (softmax does not depend on it): off the tape; a
    // dead row uses 0 (its scores are all -inf, so its P is 0, never NaN).
    let m = row_alive.where_cond(&s.max_keepdim(2)?.detach(), &full(0.0, (hq, sq, 1))?)?;
    let e = s.broadcast_sub(&m)?.exp()?; // [hq, sq, columns]
    let l = row_alive.where_cond(&e.sum_keepdim(2)?, &full(1.0, (hq, sq, 1))?)?; // [hq, sq, 1]
    let p_all = e.broadcast_div(&l)?; // [hq, sq, columns]
    let p = p_all.narrow(2, 0, sk)?; // [hq, sq, sk]: the keys' P
    let o_u = p.matmul(&vx)?; // [hq, sq, d], ungated
    let gates = match inp.head_gates {
        Some(g) => Some(Var::from_tensor(&Tensor::from_vec(
            to_f64(g),
            (hq, 1, 1),
            dev,
        )?)?),
        None => None,
    };
    let o = match &gates {
        Some(g) => o_u.broadcast_mul(g.as_tensor())?,
        None => o_u.clone(),
    }; // [hq, sq, d]
    let loss = (&o * &d_out)?.sum_all()?;
    let grads = loss.backward()?;
    let grad = |x: &Var| -> Result<Tensor, ReferenceError> {
        Ok(grads
            .get(x.as_tensor())
            .cloned()
            .unwrap_or(x.as_tensor().zeros_like()?))
    };
    let (dq, dk, dv) = (grad(&q)?, grad(&k)?, grad(&v)?);
    let d_gates: Vec<f64> = match &gates {
        Some(g) => grad(g)?.flatten_all()?.to_vec1()?,
        None => Vec::new(),
    };
    let d_sinks: Vec<f64> = match &sink {
        Some(z) => grad(z)?.flatten_all()?.to_vec1()?,
        None => Vec::new(),
    };
    // P_sink [hq, sq, 1], for the d(sink) tolerance's S1 and S2 (attention_backward).
    let p_sink = (sink.is_some() && columns > sk)
        .then(|| p_all.narrow(2, sk, 1).map(|t| t.detach()))
        .transpose()?;

    // The explicit terms of the error model (BwdErrorModel), off the tape.
    let p = p.detach(); // [hq, sq, sk]
    let o = o.detach(); // [hq, sq, d]
    let (kx, vx, qt) = (kx.detach(), vx.detach(), q.as_tensor().detach());
    // Gates g as [hq, 1, 1] (1 without).
    let g = match inp.head_gates {
        Some(g) => Tensor::from_vec(to_f64(g), (hq, 1, 1), dev)?,
        None => Tensor::ones((hq, 1, 1), CDType::F64, dev)?,
    };
    let g_abs = g.abs()?;
    let dp_u = d_out.matmul(&vx.t()?.contiguous()?)?; // [hq, sq, sk], ungated
    let dp = dp_u.broadcast_mul(&g)?; // [hq, sq, sk]
    let delta = (&o * &d_out)?.sum_keepdim(2)?; // [hq, sq, 1]
    let dp_minus_d = dp.broadcast_sub(&delta)?; // [hq, sq, sk]
    let ds_x = (&p * &dp_minus_d)?; // [hq, sq, sk]: w.r.t. the modified score
    let slope = match &tanh {
        Some(t) => t.sqr()?.affine(-1.0, 1.0)?, // 1 - t^2
        None => Tensor::ones((hq, sq, sk), CDType::F64, dev)?,
    }; // [hq, sq, sk]
    let ds = (&ds_x * &slope)?; // [hq, sq, sk]: w.r.t. scale q.k
    let (u, eps) = (model.u(), super::tolerance::F32_UNIT_ROUNDOFF);
    let (dp_rel, gamma) = (model.p_rel_error(), model.accumulation());
    let do_abs = d_out.abs()?; // [hq, sq, d]
    let do_l1 = do_abs.sum_keepdim(2)?; // [hq, sq, 1]
                                        // |dO_i|·|V_j|: [hq, sq, sk]
    let dov_abs = do_abs.matmul(&vx.abs()?.t()?.contiguous()?)?;
    // E_ij = P_ij (ΔD_i + δP |dP_ij - D_i| + d ε |g| |dO_i||V_j|) (1 - t²)
    //        + 2^-10 |P (dP - D)| (softcap) + u |dS_ij|: [hq, sq, sk]
    let per_row = do_l1.affine(model.o_error(), 0.0)?; // [hq, sq, 1]
    let inner = (dp_minus_d.abs()?.affine(dp_rel, 0.0)?
        + dov_abs.broadcast_mul(&g_abs)?.affine(d as f64 * eps, 0.0)?)?
    .broadcast_add(&per_row)?;
    // η: the 16-bit roundings' absolute floor (BwdErrorModel::underflow), for dS here.
    let eta = model.underflow();
    let err_ds = ((((&p * &inner)? * &slope.abs()?)?
        + ds_x.abs()?.affine(model.softcap_grad_error(), 0.0)?
        + ds.abs()?.affine(u, 0.0)?)?
        + eta)?;
    let ds_abs = ds.abs()?;
    let (q_abs, k_abs) = (qt.abs()?, kx.abs()?);
    // dK: scale (E^T |Q| + (u + γ) |dS|^T |Q|), dQ: scale (E |K| + (u + γ) |dS| |K|).
    let err_ds_t = err_ds.t()?.contiguous()?; // [hq, sk, sq]
    let ds_abs_t = ds_abs.t()?.contiguous()?; // [hq, sk, sq]
                                              // (+ η for the output's own rounding; GQA sums it per query head: looser by the group.)
    let dk_tol = ((err_ds_t.matmul(&q_abs)?
        + ds_abs_t.matmul(&q_abs)?.affine(u + gamma, 0.0)?)?
    .affine(scale, 0.0)?
        + eta)?; // [hq, sk, d]
    let dq_tol = ((err_ds.matmul(&k_abs)? + ds_abs.matmul(&k_abs)?.affine(u + gamma, 0.0)?)?
        .affine(scale, 0.0)?
        + eta)?; // [hq, sq, d]
                 // dV: (2u + δP + γ) |g| P^T |dO| + η |g| Σ_i |dO_i| (P's rounding floor) + η: [hq, sk, d]
    let p_floor = do_abs
        .sum_keepdim(1)?
        .broadcast_mul(&g_abs)?
        .affine(eta, eta)?; // [hq, 1, d]
    let dv_tol = p
        .t()?
        .contiguous()?
        .matmul(&do_abs)?
        .broadcast_mul(&g_abs)?
        .affine(2.0 * u + dp_rel + gamma, 0.0)?
        .broadcast_add(&p_floor)?;
    // d(gate): (δP + d ε + γ_N) Σ_ij P_ij |dP_u,ij|, N = sq sk terms. [hq]
    let terms = (sq * sk) as f64 + 64.0;
    let d_gates_tol: Vec<f64> = if gates.is_some() {
        (&p * dp_u.abs()?)?
            .sum_keepdim(2)?
            .sum_keepdim(1)?
            .affine(dp_rel + eps * (d as f64 + terms), 0.0)?
            .flatten_all()?
            .to_vec1()?
    } else {
        Vec::new()
    };
    let sink_terms: Vec<(f64, f64)> = match &p_sink {
        Some(ps) => {
            let s1 = (&o * &d_out)?.abs()?.sum_keepdim(2)?; // [hq, sq, 1]
            let per_head = |t: Tensor| -> Result<Vec<f64>, ReferenceError> {
                Ok((ps * t)?.sum_keepdim(1)?.flatten_all()?.to_vec1()?)
            };
            let (a, b) = (per_head(s1)?, per_head(do_l1.clone())?);
            a.into_iter().zip(b).collect()
        }
        None => Vec::new(),
    };
    // GQA: each kv head's tolerance is the sum over its query heads. [hq, sk, d] -> [hkv, sk, d]
    let per_kv_head = |t: Tensor| -> Result<Tensor, ReferenceError> {
        Ok(t.reshape((hkv, group, sk, d))?.sum(1)?)
    };
    let (dk_tol, dv_tol) = (per_kv_head(dk_tol)?, per_kv_head(dv_tol)?);

    // [heads, rows, d] -> [rows, heads, d], flat.
    let rows_first = |t: &Tensor| -> Result<Vec<f64>, ReferenceError> {
        Ok(t.to_dtype(CDType::F64)?
            .permute((1, 0, 2))?
            .contiguous()?
            .flatten_all()?
            .to_vec1()?)
    };
    Ok(ItemGrads {
        dq: rows_first(&dq)?,
        dk: rows_first(&dk)?,
        dv: rows_first(&dv)?,
        dq_tol: rows_first(&dq_tol)?,
        dk_tol: rows_first(&dk_tol)?,
        dv_tol: rows_first(&dv_tol)?,
        d_gates,
        d_gates_tol,
        d_sinks,
        sink_terms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::dtype::DType;
    use crate::common::options::AttnOptions;
    use crate::reference::attention::Layout;

    /// Autograd against the closed form dV = P^T dO, dS = P (dP - D), dQ = scale dS K,
    /// dK = scale dS^T Q, computed here by loops in f64 (one padded item, GQA 2, causal with
    /// sq < sk).
    #[test]
    fn autograd_matches_the_closed_form() {
        let (sq, sk, hq, hkv, d) = (3usize, 5usize, 2usize, 1usize, 4usize);
        let val = |i: usize| ((i * 37 % 17) as f32 - 8.0) / 8.0;
        let q: Vec<f32> = (0..sq * hq * d).map(val).collect();
        let k: Vec<f32> = (0..sk * hkv * d).map(|i| val(i + 3)).collect();
        let v: Vec<f32> = (0..sk * hkv * d).map(|i| val(i + 7)).collect();
        let g: Vec<f32> = (0..sq * hq * d).map(|i| val(i + 11)).collect();
        let options = AttnOptions {
            causal: true,
            ..Default::default()
        };
        let inp = ReferenceInputs {
            q: &q,
            k: &k,
            v: &v,
            layout: Layout::Padded {
                batch: 1,
                seqlen_q: sq,
                seqlen_k: sk,
            },
            num_heads_q: hq,
            num_heads_kv: hkv,
            head_dim: d,
            options: &options,
            alibi_slopes: None,
            head_gates: None,
            sinks: None,
        };
        let model = BwdErrorModel {
            dtype: DType::F16,
            value_bound: 1.0,
            head_dim: d,
            seqlen_q: sq,
            seqlen_k: sk,
            score_bound: 4.0,
            softcap: None,
        };
        let r = attention_backward(&inp, &g, &model).unwrap();
        let scale = f64::from(options.scale_for(d));
        let (mut dq, mut dk, mut dv) = (
            vec![0f64; q.len()],
            vec![0f64; k.len()],
            vec![0f64; v.len()],
        );
        for h in 0..hq {
            let kvh = h / (hq / hkv);
            let at_q = |i: usize, c: usize| (i * hq + h) * d + c;
            let at_k = |j: usize, c: usize| (j * hkv + kvh) * d + c;
            for i in 0..sq {
                let seen: Vec<usize> = (0..sk).filter(|&j| j <= i + sk - sq).collect();
                let s: Vec<f64> = seen
                    .iter()
                    .map(|&j| {
                        scale
                            * (0..d)
                                .map(|c| f64::from(q[at_q(i, c)]) * f64::from(k[at_k(j, c)]))
                                .sum::<f64>()
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let l: f64 = s.iter().map(|x| (x - m).exp()).sum();
                let p: Vec<f64> = s.iter().map(|x| (x - m).exp() / l).collect();
                let o: Vec<f64> = (0..d)
                    .map(|c| {
                        seen.iter()
                            .zip(&p)
                            .map(|(&j, pj)| pj * f64::from(v[at_k(j, c)]))
                            .sum()
                    })
                    .collect();
                let delta: f64 = (0..d).map(|c| o[c] * f64::from(g[at_q(i, c)])).sum();
                for (&j, &pj) in seen.iter().zip(&p) {
                    let dpij: f64 = (0..d)
                        .map(|c| f64::from(g[at_q(i, c)]) * f64::from(v[at_k(j, c)]))
                        .sum();
                    let dsij = pj * (dpij - delta);
                    for c in 0..d {
                        dv[at_k(j, c)] += pj * f64::from(g[at_q(i, c)]);
                        dq[at_q(i, c)] += scale * dsij * f64::from(k[at_k(j, c)]);
                        dk[at_k(j, c)] += scale * dsij * f64::from(q[at_q(i, c)]);
                    }
                }
            }
        }
        for (name, got, want) in [("dq", &r.dq, &dq), ("dk", &r.dk, &dk), ("dv", &r.dv, &dv)] {
            for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
                assert!((f64::from(a) - b).abs() < 1e-6, "{name}[{i}]: {a} vs {b}");
            }
        }
        // Every tolerance is finite and non-negative, and positive where the gradient is not 0.
        for (t, x) in r.dq_tol.iter().zip(&r.dq).chain(r.dk_tol.iter().zip(&r.dk)) {
            assert!(t.is_finite() && *t >= 0.0 && (*x == 0.0 || *t > 0.0));
        }
    }
}
