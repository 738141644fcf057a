//! Autograd through the candle op (`flashmha::candle`, src/candle_op/grad.rs) on CPU tensors,
//! whose backward runs the backward kernels on the emulator:
//! - random padded and varlen problems (GQA, causal, empty items): `loss.backward()` gives the
//!   dQ, dK, dV of candle's f64 autograd reference (`flashmha::reference::attention_backward`)
//!   within its derived per-element tolerances (`BwdErrorModel`);
//! - sinks: d(sink) = -sum_i P_sink_i D_i per head (grad.rs derives it) against candle's autograd
//!   of the naive attention with the sink column, in f64;
//! - a tiny model (Q/K/V/O projections, 384 parameters) trained by SGD twice, through flashmha's
//!   attention and through candle's naive attention, whose losses track at every step.
//!
//! FLASHMHA_PROPTEST_CASES runs more random cases.

use crate::candle_op::candle_dtype;
use crate::varlen_case::{cu_seqlens, max_seqlens, reference_layout};
use candle_core::{DType as CDType, Device, Tensor, Var};
use flashmha::candle::{attention, attention_varlen, attention_with_sinks};
use flashmha::common::dtype::DType;
use flashmha::common::options::AttnOptions;
use flashmha::reference::{
    attention_backward, check_each, score_bound, BackwardOutputs, BwdErrorModel, Layout,
    ReferenceInputs,
};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn cases() -> u32 {
    crate::varlen_case::proptest_cases(6)
}

/// Values uniform in `[-amp, amp)` rounded to `dtype`, as f32, and as a `dims` tensor of `dtype`.
fn draw(rng: &mut StdRng, dtype: DType, dims: &[usize], amp: f32) -> (Vec<f32>, Tensor) {
    let n: usize = dims.iter().product();
    let x: Vec<f32> = (0..n)
        .map(|_| dtype.round(rng.random_range(-amp..amp)))
        .collect();
    let t = Tensor::from_vec(x.clone(), dims, &Device::Cpu)
        .and_then(|t| t.to_dtype(candle_dtype(dtype)))
        .unwrap();
    (x, t)
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all()
        .and_then(|t| t.to_dtype(CDType::F32))
        .and_then(|t| t.to_vec1::<f32>())
        .unwrap()
}

fn max_abs(xs: &[f32]) -> f64 {
    xs.iter().fold(0f64, |a, &x| a.max(f64::from(x).abs()))
}

// q, k, v (rounded values), the layout and heads of one problem without ALiBi or gates (the
// candle op test's comparison inputs); its `sinks` are always `None` here.
use crate::candle_op::Case as Inputs;

impl<'a> Inputs<'a> {
    /// The inputs of one problem without sinks: rounded q, k, v values, (hq, hkv), the longest
    /// items (max_q, max_k).
    fn without_sinks(
        dtype: DType,
        [q, k, v]: [&'a [f32]; 3],
        layout: Layout<'a>,
        heads: (usize, usize),
        head_dim: usize,
        max_seqlens: (usize, usize),
        options: AttnOptions,
    ) -> Self {
        Inputs {
            dtype,
            q,
            k,
            v,
            layout,
            heads,
            head_dim,
            max_seqlens,
            options,
            sinks: None,
        }
    }

    /// The f64 autograd reference's dQ, dK, dV of `loss = sum(O * g)` without sinks, with their
    /// tolerances (`BwdErrorModel`), and the model.
    fn reference(&self, g: &[f32]) -> (BackwardOutputs, BwdErrorModel) {
        let ((hq, hkv), d, (max_q, max_k)) = (self.heads, self.head_dim, self.max_seqlens);
        let inp = ReferenceInputs {
            q: self.q,
            k: self.k,
            v: self.v,
            layout: self.layout,
            num_heads_q: hq,
            num_heads_kv: hkv,
            head_dim: d,
            options: &self.options,
            alibi_slopes: None,
            head_gates: None,
            sinks: None,
        };
        let scale = self.options.scale_for(d);
        let model = BwdErrorModel {
            dtype: self.dtype,
            value_bound: max_abs(self.v),
            head_dim: d,
            seqlen_q: max_q,
            seqlen_k: max_k,
            score_bound: score_bound(self.q, self.k, d, scale, None, max_q, max_k),
            softcap: None,
        };
        (attention_backward(&inp, g, &model).unwrap(), model)
    }
}

/// One random problem: padded `[1, sq, h, d]` or varlen `[total, h, d]` tensors.
#[derive(Debug, Clone)]
struct Case {
    dtype: DType,
    head_dim: usize,
    hkv: usize,
    group: usize,
    /// (sq, sk) per item; a padded case has one item.
    seqlens: Vec<(usize, usize)>,
    varlen: bool,
    causal: bool,
    seed: u64,
}

prop_compose! {
    fn case()(
        dtype in prop::sample::select(vec![DType::F16, DType::Bf16]),
        head_dim in prop::sample::select(vec![8usize, 32, 40, 64]),
        hkv in 1usize..=2,
        group in 1usize..=4,
        varlen in any::<bool>(),
        seqlens in prop::collection::vec((0usize..=40, 0usize..=40), 1..=3),
        causal in any::<bool>(),
        seed in any::<u64>(),
    ) -> Case {
        // A padded case has one item with at least one row each side.
        let seqlens = if varlen {
            seqlens
        } else {
            vec![(seqlens[0].0.max(1), seqlens[0].1.max(1))]
        };
        Case { dtype, head_dim, hkv, group, seqlens, varlen, causal, seed }
    }
}

/// `loss.backward()` for `loss = sum(O * G)` through the candle op, against the reference.
fn check_case(c: &Case) -> Result<(), String> {
    let mut rng = StdRng::seed_from_u64(c.seed);
    let (hq, hkv, d) = (c.hkv * c.group, c.hkv, c.head_dim);
    let tq: usize = c.seqlens.iter().map(|s| s.0).sum();
    let tk: usize = c.seqlens.iter().map(|s| s.1).sum();
    let (qd, kd): (Vec<usize>, Vec<usize>) = if c.varlen {
        (vec![tq, hq, d], vec![tk, hkv, d])
    } else {
        (vec![1, tq, hq, d], vec![1, tk, hkv, d])
    };
    let (q, q_t) = draw(&mut rng, c.dtype, &qd, 1.0);
    let (k, k_t) = draw(&mut rng, c.dtype, &kd, 1.0);
    let (v, v_t) = draw(&mut rng, c.dtype, &kd, 1.0);
    let (g, g_t) = draw(&mut rng, c.dtype, &qd, 1.0);
    let e = |e: candle_core::Error| e.to_string();
    let [qv, kv, vv] = [&q_t, &k_t, &v_t].map(|t| Var::from_tensor(t).unwrap());
    let opts = AttnOptions {
        causal: c.causal,
        ..AttnOptions::default()
    };
    let (cu_q, cu_k) = cu_seqlens(&c.seqlens);
    let (max_q, max_k) = max_seqlens(&c.seqlens);
    let (o, _lse) = if c.varlen {
        let cq = Tensor::new(cu_q.as_slice(), &Device::Cpu).map_err(e)?;
        let ck = Tensor::new(cu_k.as_slice(), &Device::Cpu).map_err(e)?;
        attention_varlen(&qv, &kv, &vv, &cq, &ck, max_q, max_k, &opts).map_err(e)?
    } else {
        attention(&qv, &kv, &vv, &opts).map_err(e)?
    };
    let loss = (o.to_dtype(CDType::F32).map_err(e)? * g_t.to_dtype(CDType::F32).map_err(e)?)
        .and_then(|t| t.sum_all())
        .map_err(e)?;
    let grads = loss.backward().map_err(e)?;
    let grad = |x: &Var| grads.get(x.as_tensor()).map(values).ok_or("no gradient");
    let (dq, dk, dv) = (grad(&qv)?, grad(&kv)?, grad(&vv)?);

    let layout = reference_layout(c.varlen, &cu_q, &cu_k, (max_q, max_k));
    let inputs = Inputs::without_sinks(
        c.dtype,
        [&q, &k, &v],
        layout,
        (hq, hkv),
        d,
        (max_q, max_k),
        opts,
    );
    let (r, _) = inputs.reference(&g);
    check_each(&dq, &r.dq, &r.dq_tol).map_err(|e| format!("dq: {e}"))?;
    check_each(&dk, &r.dk, &r.dk_tol).map_err(|e| format!("dk: {e}"))?;
    check_each(&dv, &r.dv, &r.dv_tol).map_err(|e| format!("dv: {e}"))?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn candle_autograd_through_the_op_matches_the_reference(c in case()) {
        check_case(&c).map_err(|e| TestCaseError::fail(format!("{c:?}: {e}")))?;
    }
}

/// An untracked call returns the op's O as before (no graph), and a tracked one the same values.
#[test]
fn tracking_changes_no_value() {
    let mut rng = StdRng::seed_from_u64(11);
    let (_, q) = draw(&mut rng, DType::F16, &[1, 9, 2, 32], 1.0);
    let (_, k) = draw(&mut rng, DType::F16, &[1, 13, 1, 32], 1.0);
    let (_, v) = draw(&mut rng, DType::F16, &[1, 13, 1, 32], 1.0);
    let opts = AttnOptions::default();
    let (o, lse) = attention(&q, &k, &v, &opts).unwrap();
    assert!(!o.track_op());
    let qv = Var::from_tensor(&q).unwrap();
    let (o_t, lse_t) = attention(&qv, &k, &v, &opts).unwrap();
    assert!(o_t.track_op());
    assert_eq!(values(&o), values(&o_t));
    assert_eq!(values(&lse), values(&lse_t));
}

/// `x: [b, s, h, d]` as `[b, h, s, d]` f64 with each kv head repeated `group` times.
fn heads_f64(x: &Tensor, group: usize) -> candle_core::Result<Tensor> {
    let x = x.to_dtype(CDType::F64)?.transpose(1, 2)?.contiguous()?;
    let (b, h, s, d) = x.dims4()?;
    x.unsqueeze(2)?
        .broadcast_as((b, h, group, s, d))?
        .reshape((b, h * group, s, d))
}

/// Naive attention with sinks in f64 (candle ops, so autograd differentiates it): q
/// `[b, sq, hq, d]`, k, v `[b, sk, hkv, d]`, sinks `[hq]`; causal bottom-right aligned.
/// Returns O `[b, sq, hq, d]` f64.
fn naive_with_sinks(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    sinks: &Tensor,
    causal: bool,
) -> candle_core::Result<Tensor> {
    let (b, sq, hq, d) = q.dims4()?;
    let (_, sk, hkv, _) = k.dims4()?;
    let qh = heads_f64(q, 1)?;
    let (kh, vh) = (heads_f64(k, hq / hkv)?, heads_f64(v, hq / hkv)?);
    let scale = 1.0 / (d as f64).sqrt();
    let mut s = (qh.matmul(&kh.t()?)? * scale)?;
    if causal {
        // Key j is visible to query i when j <= i + sk - sq.
        let mask: Vec<f64> = (0..sq * sk)
            .map(|x| {
                let (i, j) = (x / sk, x % sk);
                if j as i64 <= i as i64 + sk as i64 - sq as i64 {
                    0.0
                } else {
                    f64::NEG_INFINITY
                }
            })
            .collect();
        s = s.broadcast_add(&Tensor::from_vec(mask, (sq, sk), &Device::Cpu)?)?;
    }
    let z = sinks
        .to_dtype(CDType::F64)?
        .reshape((1, hq, 1, 1))?
        .broadcast_as((b, hq, sq, 1))?;
    let s = Tensor::cat(&[&s, &z], 3)?;
    let m = s.max_keepdim(3)?.detach();
    let e = s.broadcast_sub(&m)?.exp()?;
    let p = e.broadcast_div(&e.sum_keepdim(3)?)?;
    p.narrow(3, 0, sk)?.matmul(&vh)?.transpose(1, 2)
}

/// Sinks tracked by autograd: d(sink) per head (grad.rs) and dQ, dK, dV match candle's f64
/// autograd of the naive attention with the sink column.
#[test]
fn sink_gradients_match_naive_autograd() {
    for (seed, dtype, (sq, sk, hq, hkv, d), causal) in [
        (
            1u64,
            DType::F16,
            (13usize, 21usize, 4usize, 2usize, 32usize),
            false,
        ),
        (2, DType::Bf16, (30, 17, 3, 1, 64), true),
        (3, DType::F16, (8, 40, 2, 2, 8), true),
    ] {
        let mut rng = StdRng::seed_from_u64(seed);
        let (q, q_t) = draw(&mut rng, dtype, &[1, sq, hq, d], 1.0);
        let (k, k_t) = draw(&mut rng, dtype, &[1, sk, hkv, d], 1.0);
        let (v, v_t) = draw(&mut rng, dtype, &[1, sk, hkv, d], 1.0);
        let (g, g_t) = draw(&mut rng, dtype, &[1, sq, hq, d], 1.0);
        // Sinks around the rows' log-sum-exp scale, so P_sink is neither 0 nor 1.
        let z: Vec<f32> = (0..hq).map(|_| rng.random_range(0.0f32..3.0)).collect();
        let z_t = Tensor::new(z.as_slice(), &Device::Cpu).unwrap();
        let opts = AttnOptions {
            causal,
            ..AttnOptions::default()
        };
        let g32 = g_t.to_dtype(CDType::F32).unwrap();
        let vars = [&q_t, &k_t, &v_t, &z_t].map(|t| Var::from_tensor(t).unwrap());
        let (o, _) = attention_with_sinks(&vars[0], &vars[1], &vars[2], &vars[3], &opts).unwrap();
        let loss = (o.to_dtype(CDType::F32).unwrap() * &g32)
            .and_then(|t| t.sum_all())
            .unwrap();
        let grads = loss.backward().unwrap();
        let ours: Vec<Vec<f32>> = vars
            .iter()
            .map(|x| values(grads.get(x.as_tensor()).expect("a gradient")))
            .collect();

        let vars64 = [&q_t, &k_t, &v_t, &z_t].map(|t| Var::from_tensor(t).unwrap());
        let o64 = naive_with_sinks(&vars64[0], &vars64[1], &vars64[2], &vars64[3], causal).unwrap();
        let g64 = g_t.to_dtype(CDType::F64).unwrap();
        let grads64 = (&o64 * &g64)
            .and_then(|t| t.sum_all())
            .unwrap()
            .backward()
            .unwrap();
        let naive: Vec<Vec<f32>> = vars64
            .iter()
            .map(|x| values(grads64.get(x.as_tensor()).expect("a gradient")))
            .collect();

        // dQ, dK, dV: the reference's tolerances for the same problem without sinks bound these
        // (a sink scales every P_ij by 1 - P_sink_i <= 1, and every term of BwdErrorModel's
        // bounds is a sum of |P|-weighted magnitudes, which can only shrink).
        let layout = Layout::Padded {
            batch: 1,
            seqlen_q: sq,
            seqlen_k: sk,
        };
        let inputs =
            Inputs::without_sinks(dtype, [&q, &k, &v], layout, (hq, hkv), d, (sq, sk), opts);
        let (r, model) = inputs.reference(&g);
        for (name, i, tol) in [
            ("dq", 0, &r.dq_tol),
            ("dk", 1, &r.dk_tol),
            ("dv", 2, &r.dv_tol),
        ] {
            check_each(&ours[i], &naive[i], tol)
                .unwrap_or_else(|e| panic!("seed {seed}: {name}: {e}"));
        }

        // d(sink_h) = -sum_i P_sink_i D_i. Its error: D_i = dO_i . O_i from the kernel's O, off by
        // at most o_error per element (so sum_d |dO_id| o_error) plus the f32 dot's d·eps relative
        // error; P_sink_i = exp(z_h - L_i) inherits the LSE's error e_L relatively
        // (|exp(x + e) - exp(x)| <= exp(x)(e^e - 1)); the f32 sum over sq rows adds (sq + 2) eps.
        let p_sink: Vec<f64> = {
            let lse64 = naive_lse(&q_t, &k_t, &z_t, causal).unwrap();
            lse64
                .iter()
                .enumerate()
                .map(|(x, &l)| (f64::from(z[(x / sq) % hq]) - l).exp())
                .collect()
        };
        let eps = f64::from(f32::EPSILON) / 2.0;
        let e_l = flashmha::reference::ErrorModel {
            dtype,
            value_bound: max_abs(&v),
            head_dim: d,
            seqlen_k: sk,
            score_bound: model.score_bound + max_abs(&z),
            softcap: None,
        }
        .lse()
        .max_abs;
        let o_naive = values(&o64);
        let tol: Vec<f64> = (0..hq)
            .map(|h| {
                (0..sq)
                    .map(|i| {
                        let row = (i * hq + h) * d..(i * hq + h + 1) * d;
                        let (do_abs, dot_abs) = row.clone().fold((0f64, 0f64), |(a, b), x| {
                            let gx = f64::from(g[x]).abs();
                            (a + gx, b + gx * f64::from(o_naive[x]).abs())
                        });
                        let d_row: f64 = row.map(|x| f64::from(g[x]) * f64::from(o_naive[x])).sum();
                        let ps = p_sink[h * sq + i];
                        ps * (do_abs * model.o_error() + d as f64 * eps * dot_abs)
                            + ps * e_l.exp_m1() * (d_row.abs() + do_abs * model.o_error())
                            + (sq as f64 + 2.0) * eps * ps * dot_abs
                    })
                    .sum()
            })
            .collect();
        let worst = check_each(&ours[3], &naive[3], &tol)
            .unwrap_or_else(|e| panic!("seed {seed}: d(sink): {e}"));
        println!("d(sink) seed {seed} {dtype:?}: worst |err|/tol {worst:.3}");
        // The sink gradient is not trivially zero here.
        assert!(naive[3].iter().all(|&x| x.abs() > 1e-4), "{:?}", naive[3]);
    }
}

/// The f64 LSE `[hq, sq]` (natural log, the sink included) of batch item 0 of the naive
/// attention with sinks.
fn naive_lse(q: &Tensor, k: &Tensor, z: &Tensor, causal: bool) -> candle_core::Result<Vec<f64>> {
    let (_, sq, hq, d) = q.dims4()?;
    let (_, sk, hkv, _) = k.dims4()?;
    let qh = heads_f64(q, 1)?;
    let kh = heads_f64(k, hq / hkv)?;
    let s = (qh.matmul(&kh.t()?)? * (1.0 / (d as f64).sqrt()))?
        .squeeze(0)?
        .to_vec3::<f64>()?;
    let z = z.to_vec1::<f32>()?;
    let mut out = Vec::with_capacity(hq * sq);
    for (h, rows) in s.iter().enumerate() {
        for (i, row) in rows.iter().enumerate() {
            let visible = |j: usize| !causal || j as i64 <= i as i64 + sk as i64 - sq as i64;
            let sum: f64 = f64::from(z[h]).exp()
                + (0..sk)
                    .filter(|&j| visible(j))
                    .map(|j| row[j].exp())
                    .sum::<f64>();
            out.push(sum.ln());
        }
    }
    Ok(out)
}

/// The tiny model's parameters: `x [s, 8] -> q = x Wq [s, 2 heads, 8], k = x Wk, v = x Wv
/// [s, 1 head, 8] (GQA 2:1), causal attention, y = o Wo [s, 8]`: 128 + 64 + 64 + 128 = 384.
struct Model {
    wq: Var,
    wk: Var,
    wv: Var,
    wo: Var,
}

const MODEL_DIM: usize = 8;
const HEAD_DIM: usize = 8;
const HEADS_Q: usize = 2;
const HEADS_KV: usize = 1;

impl Model {
    fn new(rng: &mut StdRng) -> Model {
        let mut w = |r: usize, c: usize| {
            let x: Vec<f32> = (0..r * c).map(|_| rng.random_range(-0.5f32..0.5)).collect();
            Var::from_vec(x, (r, c), &Device::Cpu).unwrap()
        };
        Model {
            wq: w(MODEL_DIM, HEADS_Q * HEAD_DIM),
            wk: w(MODEL_DIM, HEADS_KV * HEAD_DIM),
            wv: w(MODEL_DIM, HEADS_KV * HEAD_DIM),
            wo: w(HEADS_Q * HEAD_DIM, MODEL_DIM),
        }
    }

    fn params(&self) -> [&Var; 4] {
        [&self.wq, &self.wk, &self.wv, &self.wo]
    }

    /// Mean squared error of the model on `x [s, 8]` against `y [s, 8]`; q, k, v are rounded to
    /// `dtype` and O is returned in `dtype` by both attentions (the same rounding points), so
    /// the two runs differ only in how attention is computed.
    fn loss(&self, x: &Tensor, y: &Tensor, dtype: DType, flash: bool) -> Tensor {
        let s = x.dim(0).unwrap();
        let proj = |w: &Var, h: usize| {
            x.matmul(w.as_tensor())
                .and_then(|t| t.reshape((1, s, h, HEAD_DIM)))
                .and_then(|t| t.to_dtype(candle_dtype(dtype)))
                .unwrap()
        };
        let (q, k, v) = (
            proj(&self.wq, HEADS_Q),
            proj(&self.wk, HEADS_KV),
            proj(&self.wv, HEADS_KV),
        );
        let o = if flash {
            let opts = AttnOptions {
                causal: true,
                ..AttnOptions::default()
            };
            attention(&q, &k, &v, &opts).unwrap().0
        } else {
            naive_causal(&q, &k, &v).unwrap()
        };
        let out = o
            .to_dtype(CDType::F32)
            .and_then(|o| o.reshape((s, HEADS_Q * HEAD_DIM)))
            .and_then(|o| o.matmul(self.wo.as_tensor()))
            .unwrap();
        (out - y)
            .and_then(|d| d.sqr())
            .and_then(|d| d.mean_all())
            .unwrap()
    }

    /// One SGD step; returns the loss before it and the L2 norm of the gradient.
    fn step(&self, x: &Tensor, y: &Tensor, dtype: DType, flash: bool, lr: f64) -> (f64, f64) {
        let loss = self.loss(x, y, dtype, flash);
        let grads = loss.backward().unwrap();
        let mut norm2 = 0f64;
        for p in self.params() {
            let g = grads
                .get(p.as_tensor())
                .expect("every parameter has a gradient");
            norm2 += f64::from(
                g.sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap(),
            );
            p.set(&(p.as_tensor() - (g * lr).unwrap()).unwrap())
                .unwrap();
        }
        (f64::from(loss.to_scalar::<f32>().unwrap()), norm2.sqrt())
    }
}

/// candle's naive causal attention in f32 on the (rounded) `[1, s, h, d]` inputs, O rounded back
/// to their dtype: `softmax(q k^T / sqrt(d) + mask) v`, kv heads repeated for GQA.
fn naive_causal(q: &Tensor, k: &Tensor, v: &Tensor) -> candle_core::Result<Tensor> {
    let dtype = q.dtype();
    let (_, s, hq, d) = q.dims4()?;
    let hkv = k.dim(2)?;
    let f32_heads = |t: &Tensor, group: usize| -> candle_core::Result<Tensor> {
        let t = t.to_dtype(CDType::F32)?.transpose(1, 2)?.contiguous()?;
        let (b, h, s, d) = t.dims4()?;
        t.unsqueeze(2)?
            .broadcast_as((b, h, group, s, d))?
            .reshape((b, h * group, s, d))
    };
    let (qh, kh, vh) = (
        f32_heads(q, 1)?,
        f32_heads(k, hq / hkv)?,
        f32_heads(v, hq / hkv)?,
    );
    let mask: Vec<f32> = (0..s * s)
        .map(|x| {
            if x % s <= x / s {
                0.0
            } else {
                f32::NEG_INFINITY
            }
        })
        .collect();
    let scores = (qh.matmul(&kh.t()?)? * (1.0 / (d as f64).sqrt()))?
        .broadcast_add(&Tensor::from_vec(mask, (s, s), &Device::Cpu)?)?;
    let m = scores.max_keepdim(3)?.detach();
    let e = scores.broadcast_sub(&m)?.exp()?;
    let p = e.broadcast_div(&e.sum_keepdim(3)?)?;
    p.matmul(&vh)?.transpose(1, 2)?.to_dtype(dtype)
}

/// Trains the tiny model twice from the same initial weights on a fixed task (each position
/// predicts the previous position's input, a task causal attention can learn), once through
/// flashmha's attention and once through the naive attention, and requires the losses to track
/// at every step.
///
/// Tolerance, per step t, derived from the dtype's unit roundoff u: both runs round at the same
/// points, so they differ by the kernels' own errors, which the reference's derivation bounds by
/// a few u relative (O: `O_MAX_ABS_UNITS` u; each gradient: P and dS rounded to the dtype, about
/// 2u more). A relative error `r = 4u` in O moves the loss by at most `2 r sqrt(L) |y|` in first
/// order, and `r` relative in the gradient moves each SGD step by `lr r |g|`, which moves later
/// losses by `|g_t| |delta theta|` (first order): with `delta_t = sum_{s<t} lr r |g_s|`,
/// `|L_flash(t) - L_naive(t)| <= 2 r L(t) + |g_t| delta_t + 2 r sqrt(L(t)) Y`, with `Y` the rms of
/// the targets. The test reports the measured ratio to it.
#[test]
fn tiny_model_trains_the_same_with_flash_and_naive_attention() {
    const SEQ: usize = 20;
    const STEPS: usize = 40;
    const LR: f64 = 0.5;
    for dtype in [DType::F16, DType::Bf16] {
        let mut rng = StdRng::seed_from_u64(21);
        let xs: Vec<f32> = (0..SEQ * MODEL_DIM)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        // y_t = x_{t-1} (y_0 = 0).
        let ys: Vec<f32> = (0..SEQ * MODEL_DIM)
            .map(|i| {
                if i < MODEL_DIM {
                    0.0
                } else {
                    xs[i - MODEL_DIM]
                }
            })
            .collect();
        let x = Tensor::from_vec(xs, (SEQ, MODEL_DIM), &Device::Cpu).unwrap();
        let y_rms = f64::from(ys.iter().map(|v| v * v).sum::<f32>() / ys.len() as f32).sqrt();
        let y = Tensor::from_vec(ys, (SEQ, MODEL_DIM), &Device::Cpu).unwrap();
        let flash = Model::new(&mut StdRng::seed_from_u64(5));
        let naive = Model::new(&mut StdRng::seed_from_u64(5));
        let r = 4.0 * dtype.unit_roundoff();
        let (mut delta, mut worst) = (0f64, 0f64);
        let (mut first, mut last) = (0f64, 0f64);
        for step in 0..STEPS {
            let (lf, _) = flash.step(&x, &y, dtype, true, LR);
            let (ln, gn) = naive.step(&x, &y, dtype, false, LR);
            let tol = 2.0 * r * ln + gn * delta + 2.0 * r * ln.sqrt() * y_rms;
            let ratio = (lf - ln).abs() / tol;
            assert!(
                ratio <= 1.0,
                "{dtype:?} step {step}: loss flash {lf} naive {ln}, |diff| {} > tolerance {tol}",
                (lf - ln).abs()
            );
            worst = worst.max(ratio);
            delta += LR * r * gn;
            if step == 0 {
                first = ln;
            }
            last = ln;
        }
        println!("{dtype:?}: loss {first:.4} -> {last:.4}, worst |diff|/tol {worst:.3}");
        // The task is learned (the comparison is not between two flat curves).
        assert!(last < 0.8 * first, "{dtype:?}: {first} -> {last}");
    }
}
