//! Tests of the candle reference: against the naive f64 loops for random problems with every
//! feature, and on small cases whose results follow from the definitions by hand.

use proptest::prelude::*;

use super::*;
use crate::common::options::SlidingWindow;
use crate::reference::naive::naive_attention;
use crate::reference::tolerance::{compare, Tolerance, F32_UNIT_ROUNDOFF};

/// An owned problem, so strategies can build it and tests can borrow it as inputs.
#[derive(Debug, Clone)]
struct Case {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    /// `Some((batch, sq, sk))` for the padded layout, else varlen through `cu_q` / `cu_k`.
    padded: Option<(usize, usize, usize)>,
    cu_q: Vec<i32>,
    cu_k: Vec<i32>,
    hq: usize,
    hkv: usize,
    d: usize,
    options: AttnOptions,
    slopes: Option<Vec<f32>>,
    gates: Option<Vec<f32>>,
    sinks: Option<Vec<f32>>,
}

impl Case {
    fn inputs(&self) -> ReferenceInputs<'_> {
        ReferenceInputs {
            q: &self.q,
            k: &self.k,
            v: &self.v,
            layout: match self.padded {
                Some((batch, seqlen_q, seqlen_k)) => Layout::Padded {
                    batch,
                    seqlen_q,
                    seqlen_k,
                },
                None => Layout::Varlen {
                    cu_seqlens_q: &self.cu_q,
                    cu_seqlens_k: &self.cu_k,
                },
            },
            num_heads_q: self.hq,
            num_heads_kv: self.hkv,
            head_dim: self.d,
            options: &self.options,
            alibi_slopes: self.slopes.as_deref(),
            head_gates: self.gates.as_deref(),
            sinks: self.sinks.as_deref(),
        }
    }

    /// A single-item padded problem with one head, defaults otherwise.
    fn single(q: Vec<f32>, k: Vec<f32>, v: Vec<f32>, sq: usize, sk: usize, d: usize) -> Self {
        Case {
            q,
            k,
            v,
            padded: Some((1, sq, sk)),
            cu_q: vec![],
            cu_k: vec![],
            hq: 1,
            hkv: 1,
            d,
            options: AttnOptions::default(),
            slopes: None,
            gates: None,
            sinks: None,
        }
    }

    fn run(&self) -> ReferenceOutputs {
        attention(&self.inputs()).expect("valid case")
    }
}

fn cumulative(lens: impl Iterator<Item = usize>) -> Vec<i32> {
    let mut cu = vec![0i32];
    for n in lens {
        cu.push(cu.last().unwrap() + n as i32);
    }
    cu
}

fn options_strategy() -> impl Strategy<Value = AttnOptions> {
    (
        prop::option::of(0.05f32..1.0),
        any::<bool>(),
        prop::option::of((prop::option::of(0u32..4), prop::option::of(0u32..4))),
        prop::option::of(0.5f32..4.0),
    )
        .prop_map(|(softmax_scale, causal, window, softcap)| AttnOptions {
            softmax_scale,
            causal,
            window: window.map(|(left, right)| SlidingWindow { left, right }),
            softcap,
        })
}

/// Random shapes (varlen items may have 0 queries or 0 keys), GQA groups, every option, ALiBi
/// and gates on or off, values in [-2, 2].
fn case_strategy() -> impl Strategy<Value = Case> {
    (
        any::<bool>(),
        prop::collection::vec((0usize..6, 0usize..7), 1..4),
        1usize..3,
        1usize..4,
        1usize..9,
        options_strategy(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_flat_map(
            |(varlen, lens, hkv, group, d, options, alibi, gated, sunk)| {
                let hq = hkv * group;
                let (padded, cu_q, cu_k) = if varlen {
                    (
                        None,
                        cumulative(lens.iter().map(|l| l.0)),
                        cumulative(lens.iter().map(|l| l.1)),
                    )
                } else {
                    let (sq, sk) = (lens[0].0.max(1), lens[0].1.max(1));
                    let b = lens.len();
                    (
                        Some((b, sq, sk)),
                        cumulative((0..b).map(|_| sq)),
                        cumulative((0..b).map(|_| sk)),
                    )
                };
                let total_q = *cu_q.last().unwrap() as usize;
                let total_k = *cu_k.last().unwrap() as usize;
                let vals = |n: usize| prop::collection::vec(-2f32..2.0, n);
                let per_head = |on: bool, lo: f32, hi: f32| {
                    if on {
                        prop::collection::vec(lo..hi, hq).prop_map(Some).boxed()
                    } else {
                        Just(None).boxed()
                    }
                };
                (
                    vals(total_q * hq * d),
                    vals(total_k * hkv * d),
                    vals(total_k * hkv * d),
                    per_head(alibi, 0.0, 1.0),
                    per_head(gated, -2.0, 2.0),
                    per_head(sunk, -3.0, 4.0),
                )
                    .prop_map(move |(q, k, v, slopes, gates, sinks)| Case {
                        q,
                        k,
                        v,
                        padded,
                        cu_q: cu_q.clone(),
                        cu_k: cu_k.clone(),
                        hq,
                        hkv,
                        d,
                        options,
                        slopes,
                        gates,
                        sinks,
                    })
            },
        )
}

fn max_abs_f64(xs: &[f64]) -> f64 {
    xs.iter()
        .filter(|x| x.is_finite())
        .fold(0.0, |a, &x| a.max(x.abs()))
}

/// Both implementations evaluate in f64; the candle one rounds its result to f32 and so does
/// this comparison (the naive values are converted to f32 to compare). So each element may
/// differ by two f32 roundings, `2ε·max|x|`, plus f64 evaluation-order differences, which are
/// below `1e-12` at these sizes and magnitudes.
fn f32_output_tolerance(naive: &[f64], relative: bool) -> Tolerance {
    Tolerance {
        max_abs: 2.0 * F32_UNIT_ROUNDOFF * max_abs_f64(naive) + 1e-12,
        rel_l2: relative.then_some(2.0 * F32_UNIT_ROUNDOFF + 1e-12),
    }
}

fn to_f32(xs: &[f64]) -> Vec<f32> {
    xs.iter().map(|&x| x as f32).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn candle_reference_matches_naive_loops(case in case_strategy()) {
        let got = case.run();
        let want = naive_attention(&case.inputs());
        for (name, g, w, relative) in [
            ("o", &got.o, &want.o, true),
            ("lse", &got.lse, &want.lse, false),
            ("entropy", &got.entropy, &want.entropy, false),
        ] {
            let verdict = compare(g, &to_f32(w)).check(&f32_output_tolerance(w, relative));
            prop_assert!(verdict.is_ok(), "{name}: {:?}", verdict);
        }
    }
}

#[test]
fn single_key_row_has_probability_one_and_zero_entropy() {
    let (q, k, v) = (
        vec![0.5, -1.0, 2.0, 0.25],
        vec![1.0, 3.0, -0.5, 2.0],
        vec![7.0, -3.0, 0.5, 1.5],
    );
    let out = Case::single(q.clone(), k.clone(), v.clone(), 1, 1, 4).run();
    assert_eq!(out.o, v, "P = 1 so O is the single value row");
    assert_eq!(out.entropy, vec![0.0]);
    // Default scale 1/sqrt(4): s = (0.5 - 3 - 1 + 0.5) / 2 = -1.5, and lse of one score is it.
    assert_eq!(out.lse, vec![-1.5]);
}

#[test]
fn uniform_scores_give_entropy_ln_n_and_the_mean_value() {
    let n = 5;
    let d = 3;
    // q = 0 makes every score 0, so P is uniform over the n keys.
    let k: Vec<f32> = (0..n * d).map(|x| x as f32 * 0.37 - 2.0).collect();
    let v: Vec<f32> = (0..n * d).map(|x| (x * x) as f32 * 0.1 - 1.0).collect();
    let out = Case::single(vec![0.0; d], k, v.clone(), 1, n, d).run();
    let ln_n = (n as f32).ln();
    assert!(
        (out.entropy[0] - ln_n).abs() < 1e-6,
        "{} vs {ln_n}",
        out.entropy[0]
    );
    assert!((out.lse[0] - ln_n).abs() < 1e-6);
    for c in 0..d {
        let mean = (0..n).map(|j| v[j * d + c]).sum::<f32>() / n as f32;
        assert!(
            (out.o[c] - mean).abs() < 1e-6,
            "column {c}: {} vs {mean}",
            out.o[c]
        );
    }
}

#[test]
fn softcap_bounds_scores() {
    let d = 2;
    let cap = 2.0f32;
    // Raw scaled scores 6 and -4 exceed the cap; capped they stay inside (-cap, cap).
    let mut case = Case::single(
        vec![2.0, 0.0],
        vec![3.0, 0.0, -2.0, 0.0],
        vec![1.0, 0.0, 0.0, 1.0],
        1,
        2,
        d,
    );
    case.options = AttnOptions {
        softmax_scale: Some(1.0),
        softcap: Some(cap),
        ..Default::default()
    };
    let out = case.run();
    let (s0, s1) = (cap * (6.0f32 / cap).tanh(), cap * (-4.0f32 / cap).tanh());
    assert!(s0 < cap && s1 > -cap);
    let lse = (s0.exp() + s1.exp()).ln();
    assert!((out.lse[0] - lse).abs() < 1e-6, "{} vs {lse}", out.lse[0]);
    assert!(out.lse[0] <= cap + 2f32.ln());
    // With one-hot values, O is P itself.
    let p0 = (s0 - lse).exp();
    assert!((out.o[0] - p0).abs() < 1e-6 && (out.o[1] - (1.0 - p0)).abs() < 1e-6);
}

#[test]
fn fully_masked_rows_give_zero_output_neg_inf_lse_zero_entropy() {
    // sq = 3 > sk = 1 with causal: the diagonal sits at key i - 2, so rows 0 and 1 see nothing.
    let mut case = Case::single(vec![1.0; 6], vec![0.5, 0.5], vec![3.0, -4.0], 3, 1, 2);
    case.options.causal = true;
    let out = case.run();
    assert_eq!(out.o, vec![0.0, 0.0, 0.0, 0.0, 3.0, -4.0]);
    assert_eq!(out.lse[..2], [f32::NEG_INFINITY; 2]);
    assert_eq!(out.entropy, vec![0.0; 3]);
    // Default scale 1/sqrt(2): s = (0.5 + 0.5) / sqrt(2).
    assert!((out.lse[2] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
}

/// LSE of each row when q = 0 (all scores 0): ln of the number of visible keys.
fn visible_counts_via_lse(sq: usize, sk: usize, options: AttnOptions) -> Vec<f32> {
    let mut case = Case::single(vec![0.0; sq], vec![1.0; sk], vec![1.0; sk], sq, sk, 1);
    case.options = options;
    case.run().lse.iter().map(|l| l.exp().round()).collect()
}

#[test]
fn causal_is_bottom_right_aligned() {
    let causal = AttnOptions {
        causal: true,
        ..Default::default()
    };
    // sq = 2, sk = 4: the last query sees all 4 keys, the one before it 3.
    assert_eq!(visible_counts_via_lse(2, 4, causal), vec![3.0, 4.0]);
    // Square: the usual lower triangle.
    assert_eq!(visible_counts_via_lse(3, 3, causal), vec![1.0, 2.0, 3.0]);
}

#[test]
fn sliding_window_bounds_each_side() {
    let window = |left, right| AttnOptions {
        window: Some(SlidingWindow { left, right }),
        ..Default::default()
    };
    // Row i of a square problem sees keys i - left ..= i + right, clipped to 0..4.
    assert_eq!(
        visible_counts_via_lse(4, 4, window(Some(1), Some(0))),
        vec![1.0, 2.0, 2.0, 2.0]
    );
    assert_eq!(
        visible_counts_via_lse(4, 4, window(None, Some(1))),
        vec![2.0, 3.0, 4.0, 4.0]
    );
    assert_eq!(
        visible_counts_via_lse(4, 4, window(Some(0), None)),
        vec![4.0, 3.0, 2.0, 1.0]
    );
    // Causal tightens the right side to 0 even when the window allows more.
    let both = AttnOptions {
        causal: true,
        ..window(Some(1), Some(2))
    };
    assert_eq!(visible_counts_via_lse(4, 4, both), vec![1.0, 2.0, 2.0, 2.0]);
    // sk = 6, sq = 2: the diagonal is shifted right by 4 (row 0 sits on key 4).
    assert_eq!(
        visible_counts_via_lse(2, 6, window(Some(2), Some(0))),
        vec![3.0, 3.0]
    );
}

#[test]
fn alibi_bias_follows_distance_from_the_diagonal() {
    let a = 0.5f32;
    // q = 0, one query, three keys with one-hot values: O = P. The query sits on key 2.
    let mut v = vec![0.0; 9];
    for j in 0..3 {
        v[j * 3 + j] = 1.0;
    }
    let mut case = Case::single(vec![0.0; 3], vec![1.0; 9], v, 1, 3, 3);
    case.slopes = Some(vec![a]);
    let out = case.run();
    let scores = [-2.0 * a, -a, 0.0];
    let lse = scores.iter().map(|s| s.exp()).sum::<f32>().ln();
    assert!((out.lse[0] - lse).abs() < 1e-6);
    for (j, s) in scores.iter().enumerate() {
        let p = (s - lse).exp();
        assert!((out.o[j] - p).abs() < 1e-6, "key {j}: {} vs {p}", out.o[j]);
    }
}

#[test]
fn gqa_maps_query_heads_to_kv_groups() {
    // hq = 4, hkv = 2: query heads 0, 1 read kv head 0 (values 1), heads 2, 3 kv head 1 (values 5).
    let (sq, sk, d) = (2, 3, 2);
    let q: Vec<f32> = (0..sq * 4 * d).map(|x| (x as f32 * 0.7).sin()).collect();
    let k: Vec<f32> = (0..sk * 2 * d).map(|x| (x as f32 * 1.3).cos()).collect();
    let v: Vec<f32> = (0..sk * 2 * d)
        .map(|x| if (x / d) % 2 == 0 { 1.0 } else { 5.0 })
        .collect();
    let mut case = Case::single(q, k, v, sq, sk, d);
    case.hq = 4;
    case.hkv = 2;
    let out = case.run();
    for i in 0..sq {
        for h in 0..4 {
            let want = if h < 2 { 1.0 } else { 5.0 };
            for c in 0..d {
                let o = out.o[(i * 4 + h) * d + c];
                assert!((o - want).abs() < 1e-6, "row {i} head {h}: {o}");
            }
        }
    }
}

#[test]
fn head_gates_scale_output_only() {
    let (sq, sk, d) = (3, 4, 2);
    let q: Vec<f32> = (0..sq * 2 * d).map(|x| (x as f32 * 0.9).sin()).collect();
    let k: Vec<f32> = (0..sk * 2 * d).map(|x| (x as f32 * 0.4).cos()).collect();
    let v: Vec<f32> = (0..sk * 2 * d).map(|x| x as f32 * 0.25 - 1.0).collect();
    let mut case = Case::single(q, k, v, sq, sk, d);
    case.hq = 2;
    case.hkv = 2;
    let plain = case.run();
    case.gates = Some(vec![-0.5, 3.0]);
    let gated = case.run();
    assert_eq!(gated.lse, plain.lse);
    assert_eq!(gated.entropy, plain.entropy);
    for (idx, (&g, &p)) in gated.o.iter().zip(&plain.o).enumerate() {
        let gate = if (idx / d) % 2 == 0 { -0.5 } else { 3.0 };
        assert!((g - gate * p).abs() < 1e-6, "{idx}: {g} vs {gate} * {p}");
    }
}

#[test]
fn varlen_matches_per_item_padded_runs_and_stat_layouts() {
    let (hq, d) = (2, 3);
    let lens = [(2usize, 3usize), (3, 1)];
    let cu_q = cumulative(lens.iter().map(|l| l.0));
    let cu_k = cumulative(lens.iter().map(|l| l.1));
    let (tq, tk) = (5, 4);
    let q: Vec<f32> = (0..tq * hq * d).map(|x| (x as f32 * 0.31).sin()).collect();
    let k: Vec<f32> = (0..tk * hq * d).map(|x| (x as f32 * 0.17).cos()).collect();
    let v: Vec<f32> = (0..tk * hq * d)
        .map(|x| (x as f32 * 0.53).sin() * 2.0)
        .collect();
    let mut varlen = Case::single(q.clone(), k.clone(), v.clone(), 0, 0, d);
    varlen.padded = None;
    varlen.cu_q = cu_q.clone();
    varlen.cu_k = cu_k.clone();
    varlen.hq = hq;
    varlen.hkv = hq;
    varlen.options.causal = true;
    let all = varlen.run();
    for (b, &(sq, sk)) in lens.iter().enumerate() {
        let (q0, k0) = (cu_q[b] as usize, cu_k[b] as usize);
        let mut one = varlen.clone();
        one.padded = Some((1, sq, sk));
        one.q = q[q0 * hq * d..(q0 + sq) * hq * d].to_vec();
        one.k = k[k0 * hq * d..(k0 + sk) * hq * d].to_vec();
        one.v = v[k0 * hq * d..(k0 + sk) * hq * d].to_vec();
        let item = one.run();
        assert_eq!(item.o[..], all.o[q0 * hq * d..(q0 + sq) * hq * d]);
        for h in 0..hq {
            for i in 0..sq {
                // padded [1, hq, sq] against varlen [hq, total_q]
                assert_eq!(item.lse[h * sq + i], all.lse[h * tq + q0 + i]);
                assert_eq!(item.entropy[h * sq + i], all.entropy[h * tq + q0 + i]);
            }
        }
    }
}

#[test]
fn varlen_items_without_queries_or_keys() {
    // Item 0: 2 queries, 0 keys (dead rows). Item 1: 0 queries. Item 2: 1 query, 1 key.
    let mut case = Case::single(vec![1.0; 3], vec![2.0], vec![-6.0], 0, 0, 1);
    case.padded = None;
    case.cu_q = vec![0, 2, 2, 3];
    case.cu_k = vec![0, 0, 1, 2];
    case.k = vec![2.0, 2.0];
    case.v = vec![9.0, -6.0];
    let out = case.run();
    assert_eq!(out.o, vec![0.0, 0.0, -6.0]);
    assert_eq!(out.lse, vec![f32::NEG_INFINITY, f32::NEG_INFINITY, 2.0]);
    assert_eq!(out.entropy, vec![0.0; 3]);
}

#[test]
fn a_sink_joins_the_denominator_with_no_value() {
    // One key of score s = q.k / sqrt(1) = 2 and value 3, a sink of z = 1: the row's
    // distribution is (e^s, e^z) / (e^s + e^z) over (key, sink).
    let mut case = Case::single(vec![1.0], vec![2.0], vec![3.0], 1, 1, 1);
    case.sinks = Some(vec![1.0]);
    let out = case.run();
    let (s, z) = (2.0f64, 1.0f64);
    let lse = (s.exp() + z.exp()).ln();
    let (p, p_sink) = ((s - lse).exp(), (z - lse).exp());
    assert!((f64::from(out.lse[0]) - lse).abs() < 1e-6, "{out:?}");
    assert!((f64::from(out.o[0]) - 3.0 * p).abs() < 1e-6, "{out:?}");
    let h = -(p * p.ln() + p_sink * p_sink.ln());
    assert!((f64::from(out.entropy[0]) - h).abs() < 1e-6, "{out:?}");
}

#[test]
fn sinks_of_rows_without_keys_and_special_values() {
    // Two heads, an item with 2 queries and no keys, then one with 1 query and 1 key.
    let mut case = Case::single(vec![1.0; 6], vec![2.0; 2], vec![-6.0; 2], 0, 0, 1);
    case.padded = None;
    case.hq = 2;
    case.hkv = 1;
    case.cu_q = vec![0, 2, 3];
    case.cu_k = vec![0, 0, 1];
    case.k = vec![2.0];
    case.v = vec![-6.0];
    // Head 0: sink 0.5; head 1: -inf, which is no sink at all.
    case.sinks = Some(vec![0.5, f32::NEG_INFINITY]);
    let out = case.run();
    // [hq, total_q] stats; rows 0, 1 have no keys: the sink alone (lse = z, O = 0, H = 0) on
    // head 0, the dead row on head 1.
    assert_eq!(out.lse[..2], [0.5, 0.5]);
    assert_eq!(out.lse[3..5], [f32::NEG_INFINITY; 2]);
    assert_eq!(out.entropy[..2], [0.0, 0.0]);
    assert_eq!(out.o[..4], [0.0; 4]);
    // Row 2 of head 1 has its key and no sink: the plain row.
    assert_eq!(out.lse[5], 2.0);
    assert_eq!(out.o[5], -6.0);
    // A NaN sink makes its head's rows NaN, keys or not.
    case.sinks = Some(vec![f32::NAN, 0.0]);
    let out = case.run();
    assert!(out.lse[0].is_nan() && out.o[0].is_nan() && out.entropy[0].is_nan());
    assert!(out.lse[2].is_nan() && out.o[4].is_nan());
    assert!(!out.lse[5].is_nan() && !out.o[5].is_nan());
}

#[test]
fn invalid_inputs_are_rejected() {
    let base = Case::single(vec![0.0; 4], vec![0.0; 4], vec![0.0; 4], 2, 2, 2);
    assert!(attention(&base.inputs()).is_ok());
    let mut bad = vec![];
    let mut c = base.clone();
    c.q.pop();
    bad.push(("q length", c));
    let mut c = base.clone();
    c.hq = 3;
    c.hkv = 2;
    bad.push(("hq not a multiple of hkv", c));
    let mut c = base.clone();
    c.options.softcap = Some(0.0);
    bad.push(("softcap 0", c));
    let mut c = base.clone();
    c.slopes = Some(vec![0.1, 0.2]);
    bad.push(("slopes length", c));
    let mut c = base.clone();
    c.padded = None;
    c.cu_q = vec![0, 2];
    c.cu_k = vec![0, 3, 2];
    bad.push(("cu_seqlens lengths", c));
    let mut c = base.clone();
    c.padded = None;
    c.cu_q = vec![0, 2, 1];
    c.cu_k = vec![0, 1, 2];
    bad.push(("decreasing cu_seqlens_q", c));
    let mut c = base.clone();
    c.padded = None;
    c.cu_q = vec![1, 2];
    c.cu_k = vec![0, 2];
    bad.push(("cu_seqlens_q not starting at 0", c));
    for (what, case) in bad {
        assert!(
            matches!(attention(&case.inputs()), Err(ReferenceError::Invalid(_))),
            "{what} accepted"
        );
    }
}
