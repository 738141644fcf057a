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

use candle_core::{DType as CDType, Device, Tensor, Var};
use flashmha::candle::{attention, attention_varlen, attention_with_sinks};
use flashmha::common::dtype::DType;
use flashmha::common::options::AttnOptions;
use flashmha::reference::{
    attention_backward, check_each, score_bound, BwdErrorModel, Layout, ReferenceInputs,
};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn cases() -> u32 {
    std::env::var("FLASHMHA_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6)
}

fn candle_dtype(d: DType) -> CDType {
    match d {
        DType::F16 => CDType::F16,
        DType::Bf16 => CDType::BF16,
    }
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
    let mut cu_q = vec![0i32];
    let mut cu_k = vec![0i32];
    for &(sq, sk) in &c.seqlens {
        cu_q.push(cu_q.last().unwrap() + sq as i32);
        cu_k.push(cu_k.last().unwrap() + sk as i32);
    }
    let max_q = c.seqlens.iter().map(|s| s.0).max().unwrap();
    let max_k = c.seqlens.iter().map(|s| s.1).max().unwrap();
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

    let layout = if c.varlen {
        Layout::Varlen {
            cu_seqlens_q: &cu_q,
            cu_seqlens_k: &cu_k,
        }
    } else {
        Layout::Padded {
            batch: 1,
            seqlen_q: max_q,
            seqlen_k: max_k,
        }
    };
    let inp = ReferenceInputs {
        q: &q,
        k: &k,
        v: &v,
        layout,
        num_heads_q: hq,
        num_heads_kv: hkv,
        head_dim: d,
        options: &opts,
        alibi_slopes: None,
        head_gates: None,
        sinks: None,
    };
    let model = BwdErrorModel {
        dtype: c.dtype,
        value_bound: max_abs(&v),
        head_dim: d,
        seqlen_q: max_q,
        seqlen_k: max_k,
        score_bound: score_bound(&q, &k, d, opts.scale_for(d), None, max_q, max_k),
        softcap: None,
    };
    let r = attention_backward(&inp, &g, &model).map_err(|e| e.to_string())?;
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
