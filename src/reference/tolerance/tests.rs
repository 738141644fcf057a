//! Tests of the comparison and of the derived tolerances: the verdicts on hand-made buffers, and
//! a simulated kernel (the rounding model the tolerances are derived for) that must pass them
//! while an error one dtype coarser must not.

use proptest::prelude::*;

use super::*;
use crate::common::options::AttnOptions;
use crate::reference::attention::{attention, Layout, ReferenceInputs};
use crate::reference::rounding::round_slice;

#[test]
fn nan_where_reference_is_finite_fails_and_names_the_index() {
    let c = compare(&[1.0, f32::NAN, 3.0], &[1.0, 2.0, 3.0]);
    assert_eq!(c.nonfinite_mismatches, 1);
    let err = c.check(&Tolerance {
        max_abs: 1.0,
        rel_l2: Some(1.0),
    });
    assert!(
        err.as_ref().is_err_and(|e| e.contains("element 1")),
        "{err:?}"
    );
}

#[test]
fn infinities_must_match_exactly() {
    let loose = Tolerance {
        max_abs: 1e9,
        rel_l2: None,
    };
    let ninf = f32::NEG_INFINITY;
    assert!(compare(&[ninf, 0.5], &[ninf, 0.5]).check(&loose).is_ok());
    for (out, reference) in [
        (0.0, ninf),
        (ninf, 0.0),
        (f32::INFINITY, ninf),
        (f32::NAN, ninf),
    ] {
        let c = compare(&[1.0, out], &[1.0, reference]);
        assert!(c.check(&loose).is_err(), "{out} vs {reference} accepted");
    }
    // A NaN reference is a reference bug, never a match.
    assert!(compare(&[f32::NAN], &[f32::NAN]).check(&loose).is_err());
}

#[test]
fn measures_and_worst_index_are_reported() {
    let c = compare(&[1.0, 2.5, 2.0, -4.0], &[1.0, 2.0, 2.0, -3.0]);
    assert_eq!(c.max_abs, 1.0);
    assert_eq!(c.worst_index, Some(3));
    // ‖(0, 0.5, 0, -1)‖ / ‖(1, 2, 2, -3)‖ = sqrt(1.25 / 18)
    assert!((c.rel_l2 - (1.25f64 / 18.0).sqrt()).abs() < 1e-15);
    let abs_fail = c.check(&Tolerance {
        max_abs: 0.9,
        rel_l2: None,
    });
    assert!(
        abs_fail.as_ref().is_err_and(|e| e.contains("element 3")),
        "{abs_fail:?}"
    );
    let rel_fail = c.check(&Tolerance {
        max_abs: 1.0,
        rel_l2: Some(0.2),
    });
    assert!(rel_fail.is_err());
    assert!(c
        .check(&Tolerance {
            max_abs: 1.0,
            rel_l2: Some(0.3)
        })
        .is_ok());
}

#[test]
fn length_mismatch_and_zero_reference() {
    let any = Tolerance {
        max_abs: f64::MAX,
        rel_l2: Some(f64::MAX),
    };
    assert!(compare(&[1.0], &[1.0, 2.0]).check(&any).is_err());
    assert_eq!(compare(&[0.0, 0.0], &[0.0, 0.0]).rel_l2, 0.0);
    let c = compare(&[0.0, 1e-3], &[0.0, 0.0]);
    assert!(c.rel_l2.is_infinite());
    assert!(c.check(&any).is_err());
}

/// The kernel model of the module docs, in f32, for one head of one padded item:
/// f32 dot products, the softcap's tanh off by the documented `tanh.approx` bound (alternating
/// sign, full size), `p̃ = exp(s − m)` in f32, `l` summed from the unrounded `p̃`, `p̃` rounded
/// to `ty` for `P·V`, O accumulated in f32 and rounded to `ty`; LSE and entropy in f32 as
/// `m + ln l` and `ln l + m − E_p[s]`. Returns `(o [sq, d], lse [sq], entropy [sq])`.
fn simulated_kernel(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    (sq, sk, d): (usize, usize, usize),
    causal: bool,
    softcap: Option<f32>,
    ty: DType,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let tanh_err = TANH_APPROX_REL_ERROR as f32;
    let scale = 1.0 / (d as f32).sqrt();
    let (mut o, mut lse, mut ent) = (vec![0f32; sq * d], vec![0f32; sq], vec![0f32; sq]);
    for i in 0..sq {
        let last = if causal { i + sk - sq } else { sk - 1 };
        let s: Vec<f32> = (0..=last)
            .map(|j| {
                let s = (0..d).map(|c| q[i * d + c] * k[j * d + c]).sum::<f32>() * scale;
                match softcap {
                    Some(cap) => {
                        let sign = if j % 2 == 0 { 1.0 } else { -1.0 };
                        cap * (s / cap).tanh() * (1.0 + sign * tanh_err)
                    }
                    None => s,
                }
            })
            .collect();
        let m = s.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x));
        let p: Vec<f32> = s.iter().map(|&x| (x - m).exp()).collect();
        let l: f32 = p.iter().sum();
        for c in 0..d {
            let acc: f32 = p
                .iter()
                .enumerate()
                .map(|(j, &pj)| ty.round(pj) * v[j * d + c])
                .sum();
            o[i * d + c] = ty.round(acc / l);
        }
        let e_s = p.iter().zip(&s).map(|(&pj, &sj)| pj * sj).sum::<f32>() / l;
        lse[i] = m + l.ln();
        ent[i] = l.ln() + m - e_s;
    }
    (o, lse, ent)
}

fn dtype_strategy() -> impl Strategy<Value = DType> {
    prop_oneof![Just(DType::F16), Just(DType::Bf16)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Outputs with the rounding the tolerances are derived for pass them. Sizes give at least
    /// 128 outputs mixing at least 8 keys, as the statistical rel-L2 argument needs.
    #[test]
    fn simulated_kernel_passes_the_derived_tolerances(
        ty in dtype_strategy(),
        causal in any::<bool>(),
        softcap in prop::option::of(0.25f32..4.0),
        (sq, sk, d) in (8usize..17, 8usize..48, 16usize..33),
        seed in prop::collection::vec(-1f32..1.0, 3 * 64 * 48),
    ) {
        let sq = sq.min(sk); // causal with sq <= sk keeps every row live
        let q = round_slice(&seed[..sq * d], ty);
        let k = round_slice(&seed[64 * 48..64 * 48 + sk * d], ty);
        let v = round_slice(&seed[2 * 64 * 48..2 * 64 * 48 + sk * d], ty);
        let options = AttnOptions { causal, softcap, ..Default::default() };
        let reference = attention(&ReferenceInputs {
            q: &q,
            k: &k,
            v: &v,
            layout: Layout::Padded { batch: 1, seqlen_q: sq, seqlen_k: sk },
            num_heads_q: 1,
            num_heads_kv: 1,
            head_dim: d,
            options: &options,
            alibi_slopes: None,
            head_gates: None,
            sinks: None,
        }).unwrap();
        let (o, lse, ent) = simulated_kernel(&q, &k, &v, (sq, sk, d), causal, softcap, ty);
        let model = ErrorModel {
            dtype: ty,
            value_bound: v.iter().fold(0f64, |a, &x| a.max(f64::from(x).abs())),
            head_dim: d,
            seqlen_k: sk,
            score_bound: score_bound(&q, &k, d, options.scale_for(d), None, sq, sk),
            softcap,
        };
        if softcap.is_none() {
            // Without a softcap the model adds nothing to the plain constructors.
            prop_assert_eq!(model.output(), Tolerance::attention_output(ty, model.value_bound));
            prop_assert_eq!(model.lse(), Tolerance::lse(d, sk, model.score_bound));
        }
        let entropy_tol = model.entropy_rows(&reference.entropy_terms);
        let checks = [
            ("o", compare(&o, &reference.o).check(&model.output())),
            ("lse", compare(&lse, &reference.lse).check(&model.lse())),
            ("entropy", check_each(&ent, &reference.entropy, &entropy_tol).map(|_| ())),
        ];
        for (name, verdict) in checks {
            prop_assert!(verdict.is_ok(), "{ty:?} {name}: {verdict:?}");
        }
        // The data-derived entropy tolerance is tight: every row's is at most 1e-2 nats (the
        // worst-case bound it replaced reached 1.1 nats with a softcap), so an entropy 2e-2
        // away from the reference in any one row fails.
        let loosest = entropy_tol.iter().fold(0f64, |a, &t| a.max(t));
        prop_assert!(loosest <= 1e-2, "entropy tolerance {loosest:e} > 1e-2");
        for row in [0, sq / 2, sq - 1] {
            let mut wrong = ent.clone();
            wrong[row] = reference.entropy[row] + 2e-2;
            prop_assert!(check_each(&wrong, &reference.entropy, &entropy_tol).is_err());
        }
    }
}

/// The reference's entropy terms of a hand-computed row: one query (q = 1, d = 1, scale 1) and
/// keys 2 and -1, so scores s = (2, -1), p = (e^3, 1) / (e^3 + 1).
#[test]
fn entropy_terms_are_the_moments_of_the_row() {
    let options = AttnOptions {
        softmax_scale: Some(1.0),
        softcap: Some(1.5),
        ..Default::default()
    };
    let reference = attention(&ReferenceInputs {
        q: &[1.0],
        k: &[2.0, -1.0],
        v: &[0.5, 0.25],
        layout: Layout::Padded {
            batch: 1,
            seqlen_q: 1,
            seqlen_k: 2,
        },
        num_heads_q: 1,
        num_heads_kv: 1,
        head_dim: 1,
        options: &options,
        alibi_slopes: None,
        head_gates: None,
        sinks: None,
    })
    .unwrap();
    // Softcapped scores 1.5 tanh(2 / 1.5), 1.5 tanh(-1 / 1.5).
    let s = [1.5 * (2f64 / 1.5).tanh(), 1.5 * (-1f64 / 1.5).tanh()];
    let w0 = 1.0 / (1.0 + (s[1] - s[0]).exp());
    let p = [w0, 1.0 - w0];
    let mean = p[0] * s[0] + p[1] * s[1];
    let dev = [(s[0] - mean).abs(), (s[1] - mean).abs()];
    let t = reference.entropy_terms[0];
    let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
    assert!(close(t.spread, p[0] * dev[0] + p[1] * dev[1]), "{t:?}");
    // Magnitudes A = |q k| = (2, 1); the softcapped scores' sizes are |s|.
    assert!(
        close(t.weighted_spread, p[0] * dev[0] * 2.0 + p[1] * dev[1]),
        "{t:?}"
    );
    let capped = p[0] * dev[0] * s[0].abs() + p[1] * dev[1] * s[1].abs();
    assert!(close(t.softcap_spread, capped), "{t:?}");
    assert!(close(t.gap, p[1] * (s[0] - s[1])), "{t:?}");
    assert_eq!((t.max_score_magnitude, t.keys), (2.0, 2));
}

/// The f16 tolerance is tight enough to see bf16-sized errors: writing O (here O = v, one key)
/// through bf16 instead of f16 fails it, while writing it through f16 passes.
#[test]
fn bf16_sized_error_fails_the_f16_tolerance() {
    let n = 256;
    // Deterministic values spread over [-1, 1], already f16 (the kernel's input dtype).
    let v = round_slice(
        &(0..n)
            .map(|i| (i as f32 * 0.618_034).fract() * 2.0 - 1.0)
            .collect::<Vec<_>>(),
        DType::F16,
    );
    let zeros = vec![0.0f32; n];
    let options = AttnOptions::default();
    // One query, one key, head_dim n: O is exactly v.
    let reference = attention(&ReferenceInputs {
        q: &zeros,
        k: &zeros,
        v: &v,
        layout: Layout::Padded {
            batch: 1,
            seqlen_q: 1,
            seqlen_k: 1,
        },
        num_heads_q: 1,
        num_heads_kv: 1,
        head_dim: n,
        options: &options,
        alibi_slopes: None,
        head_gates: None,
        sinks: None,
    })
    .unwrap();
    assert_eq!(reference.o, v);
    let value_bound = 1.0;
    let tol = Tolerance::attention_output(DType::F16, value_bound);
    let as_bf16 = round_slice(&v, DType::Bf16);
    assert!(compare(&as_bf16, &reference.o).check(&tol).is_err());
    let as_f16 = round_slice(&v, DType::F16);
    assert!(compare(&as_f16, &reference.o).check(&tol).is_ok());
}

#[test]
fn score_bound_covers_dot_products_and_alibi() {
    let q = [0.5f32, -2.0];
    let k = [1.5f32, 0.25, -1.0, 0.0];
    // 0.5 * 2 (d) * 2 (max|q|) * 1.5 (max|k|) + 0.25 (max slope) * (3 + 4)
    let s = score_bound(&q, &k, 2, 0.5, Some(&[0.1, -0.25]), 3, 4);
    assert!((s - (3.0 + 1.75)).abs() < 1e-12);
}
