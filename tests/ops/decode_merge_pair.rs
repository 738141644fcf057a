//! merge_states of two separate buffers (O_a, LSE_a) + (O_b, LSE_b) and of N stacked states
//! through the plan ([rows, heads] and [heads, rows] LSE layouts) on the emulator, against an
//! f64 host merge: rows with LSE = -inf in one state or both, random shapes and values. Also:
//! each state's LSE is read once (the combine's byte budget), and bad buffers are typed errors
//! before any launch.

use flashmha::common::binding::DevBuf;
use flashmha::common::dtype::DType;
use flashmha::common::error::{Error, TensorName};
use flashmha::host::emulated_decode::{merge, MergeHostInputs};
use flashmha::ops::merge::{MergeBuffers, MergePlan, MergeProblem, MergeStates, StatsLayout};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};

/// Host merge in f64: (O [rows*heads*d], LSE [rows*heads] in (row, head) order).
fn host_merge(
    dtype: DType,
    states: &[(&[u16], Vec<f64>)],
    n: usize,
    d: usize,
) -> (Vec<f64>, Vec<f64>) {
    let mut o = vec![0f64; n * d];
    let mut lse = vec![f64::NEG_INFINITY; n];
    for i in 0..n {
        let m = states
            .iter()
            .map(|s| s.1[i])
            .fold(f64::NEG_INFINITY, f64::max);
        if m == f64::NEG_INFINITY {
            continue;
        }
        let total: f64 = states.iter().map(|s| (s.1[i] - m).exp()).sum();
        lse[i] = m + total.ln();
        for (so, sl) in states {
            let w = (sl[i] - m).exp() / total;
            if w == 0.0 {
                continue;
            }
            for c in 0..d {
                o[i * d + c] += w * f64::from(dtype.f32_from_bits(so[i * d + c]));
            }
        }
    }
    (o, lse)
}

fn random_state(
    rng: &mut impl Rng,
    dtype: DType,
    n: usize,
    d: usize,
    neg_inf_pct: u32,
) -> (Vec<u16>, Vec<f32>) {
    let o = (0..n * d)
        .map(|_| dtype.bits_from_f32(rng.random_range(-1.0..1.0)))
        .collect();
    let lse = (0..n)
        .map(|_| {
            if rng.random_range(0..100) < neg_inf_pct {
                f32::NEG_INFINITY
            } else {
                rng.random_range(-8.0f32..8.0)
            }
        })
        .collect();
    (o, lse)
}

/// Index of (row, head) in an LSE vector of `layout`.
fn at(layout: StatsLayout, rows: usize, heads: usize, r: usize, h: usize) -> usize {
    match layout {
        StatsLayout::RowsHeads => r * heads + h,
        StatsLayout::HeadsRows => h * rows + r,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn pair_and_stacked_merges_match_the_host_merge(
        bf16 in any::<bool>(),
        pair in any::<bool>(),
        num_states in 1usize..=40,
        rows in 1usize..=6,
        heads in 1usize..=4,
        d in prop_oneof![Just(64usize), Just(128), Just(8), Just(256), Just(96), Just(36)],
        heads_rows in any::<bool>(),
        neg_inf_pct in 0u32..60,
        seed in any::<u64>(),
    ) {
        let dtype = if bf16 { DType::Bf16 } else { DType::F16 };
        let layout = if heads_rows { StatsLayout::HeadsRows } else { StatsLayout::RowsHeads };
        let states = if pair { MergeStates::Pair } else { MergeStates::Stacked { num_states } };
        let problem = MergeProblem { dtype, states, rows, heads, head_dim: d, lse_layout: layout };
        let count = problem.num_states();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let n = rows * heads;
        let mut parts: Vec<(Vec<u16>, Vec<f32>)> =
            (0..count).map(|_| random_state(&mut rng, dtype, n, d, neg_inf_pct)).collect();
        // Row 0 head 0: every state empty; row 0 head heads-1 (if distinct): only the last has keys.
        for (s, p) in parts.iter_mut().enumerate() {
            p.1[at(layout, rows, heads, 0, 0)] = f32::NEG_INFINITY;
            if heads > 1 && s + 1 < count {
                p.1[at(layout, rows, heads, 0, heads - 1)] = f32::NEG_INFINITY;
            }
        }
        let (o_flat, lse_flat): (Vec<u16>, Vec<f32>) = if pair {
            (parts[0].0.clone(), parts[0].1.clone())
        } else {
            (parts.iter().flat_map(|p| p.0.clone()).collect(), parts.iter().flat_map(|p| p.1.clone()).collect())
        };
        let plan = MergePlan::new(&problem).unwrap();
        let run = merge(&plan, &MergeHostInputs {
            o_states: &o_flat,
            lse_states: &lse_flat,
            o_b: pair.then(|| parts[1].0.as_slice()),
            lse_b: pair.then(|| parts[1].1.as_slice()),
        }).unwrap();
        prop_assert!(run.report.findings.is_empty(), "{:?}", run.report.findings);
        // Host merge over (row, head)-ordered LSEs.
        let canon: Vec<(&[u16], Vec<f64>)> = parts.iter().map(|p| {
            let l = (0..n).map(|i| f64::from(p.1[at(layout, rows, heads, i / heads, i % heads)])).collect();
            (p.0.as_slice(), l)
        }).collect();
        let (want_o, want_lse) = host_merge(dtype, &canon, n, d);
        let u = dtype.unit_roundoff();
        for i in 0..n {
            let got_lse = run.lse[at(layout, rows, heads, i / heads, i % heads)];
            if want_lse[i] == f64::NEG_INFINITY {
                prop_assert_eq!(got_lse, f32::NEG_INFINITY, "row-head {} has no keys", i);
                for c in 0..d { prop_assert_eq!(run.o[i * d + c], 0, "empty row must be +0"); }
                continue;
            }
            prop_assert!((f64::from(got_lse) - want_lse[i]).abs() < 1e-5, "lse {} vs {}", got_lse, want_lse[i]);
            for c in 0..d {
                let got = f64::from(dtype.f32_from_bits(run.o[i * d + c]));
                let want = want_o[i * d + c];
                prop_assert!((got - want).abs() <= 1.5 * u + 1e-5, "o[{}][{}]: {} vs {}", i, c, got, want);
            }
        }
        // Each state's LSE is read once (<= 32 states: one lane each, no re-read) and each O row
        // of a state with keys once; empty states' O rows are never read.
        if count <= 32 {
            let finite = parts.iter().map(|p| p.1.iter().filter(|l| l.is_finite()).count()).sum::<usize>() as u64;
            let expect = (count * n) as u64 * 4 + finite * d as u64 * dtype.size() as u64;
            prop_assert_eq!(run.report.counters.global_load_bytes, expect);
        }
    }
}

/// An f16 merge of `count` stacked states of `rows x heads x d`.
fn stacked_f16(
    count: usize,
    rows: usize,
    heads: usize,
    d: usize,
    lse_layout: StatsLayout,
) -> MergeProblem {
    MergeProblem {
        dtype: DType::F16,
        states: MergeStates::Stacked { num_states: count },
        rows,
        heads,
        head_dim: d,
        lse_layout,
    }
}

#[test]
fn every_state_s_lse_is_read_once_and_o_once() {
    // Finite LSEs everywhere: every O row is read, every LSE exactly once.
    let (rows, heads, d, count) = (3, 2, 128, 10);
    let n = rows * heads;
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let problem = stacked_f16(count, rows, heads, d, StatsLayout::HeadsRows);
    let (o, lse) = random_state(&mut rng, DType::F16, count * n, d, 0);
    let run = merge(
        &MergePlan::new(&problem).unwrap(),
        &MergeHostInputs {
            o_states: &o,
            lse_states: &lse,
            o_b: None,
            lse_b: None,
        },
    )
    .unwrap();
    assert!(run.report.findings.is_empty());
    let want = (count * n) as u64 * (4 + 2 * d as u64);
    assert_eq!(run.report.counters.global_load_bytes, want);
}

#[test]
fn bad_merge_buffers_are_typed_errors() {
    let problem = MergeProblem {
        dtype: DType::Bf16,
        states: MergeStates::Pair,
        rows: 4,
        heads: 2,
        head_dim: 64,
        lse_layout: StatsLayout::RowsHeads,
    };
    let plan = MergePlan::new(&problem).unwrap();
    let buf = |addr: u64, len: u64| DevBuf { addr, len };
    let good = MergeBuffers {
        o_states: buf(0x10000, 512),
        lse_states: buf(0x20000, 8),
        o_b: buf(0x30000, 512),
        lse_b: buf(0x40000, 8),
        o: buf(0x50000, 512),
        lse: buf(0x60000, 8),
    };
    assert!(plan.params(&good).is_ok());
    let err = |b: MergeBuffers| plan.params(&b).unwrap_err();
    assert!(matches!(
        err(MergeBuffers {
            o_b: DevBuf::default(),
            ..good
        }),
        Error::MissingBuffer {
            tensor: TensorName::OB
        }
    ));
    assert!(matches!(
        err(MergeBuffers {
            lse_b: buf(0x40000, 7),
            ..good
        }),
        Error::BufferTooSmall {
            tensor: TensorName::LseB,
            needed: 8,
            available: 7
        }
    ));
    assert!(matches!(
        err(MergeBuffers {
            o_states: buf(0x10004, 512),
            ..good
        }),
        Error::Misaligned {
            tensor: TensorName::OA,
            ..
        }
    ));
    // The output overlapping an input (in place on B's second half).
    assert!(matches!(
        err(MergeBuffers {
            o: buf(0x30000 + 512, 512),
            ..good
        }),
        Error::Alias {
            a: TensorName::O,
            b: TensorName::OB
        }
    ));
    // Stacked plans take no second buffers.
    let stacked = MergePlan::new(&MergeProblem {
        states: MergeStates::Stacked { num_states: 2 },
        ..problem
    })
    .unwrap();
    assert!(matches!(
        stacked.params(&MergeBuffers {
            o_states: buf(0x10000, 1024),
            lse_states: buf(0x20000, 16),
            ..good
        }),
        Err(Error::UnexpectedBuffer {
            tensor: TensorName::OB
        })
    ));
    // Shapes: d must be a multiple of 4, no empty dims.
    assert!(matches!(
        MergePlan::new(&MergeProblem {
            head_dim: 66,
            ..problem
        }),
        Err(Error::Misaligned { .. })
    ));
    assert!(matches!(
        MergePlan::new(&MergeProblem { rows: 0, ..problem }),
        Err(Error::EmptyDim { .. })
    ));
}

#[test]
fn turing_merge_equals_the_ampere_merge_bitwise() {
    // The same warp body on compute_75 (f16 packing spelled as two scalar cvt.rn: the same
    // round-to-nearest-even): identical bits, for both LSE layouts and an empty row.
    let turing = flashmha::KernelTarget::Turing;
    let (rows, heads, d, count) = (3, 2, 64, 5);
    let n = rows * heads;
    for layout in [StatsLayout::HeadsRows, StatsLayout::RowsHeads] {
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let problem = stacked_f16(count, rows, heads, d, layout);
        let (o, mut lse) = random_state(&mut rng, DType::F16, count * n, d, 20);
        for s in 0..count {
            lse[s * n] = f32::NEG_INFINITY; // (row 0, head 0) of every state: no keys
        }
        let inputs = MergeHostInputs {
            o_states: &o,
            lse_states: &lse,
            o_b: None,
            lse_b: None,
        };
        let plan = MergePlan::new_for(turing, &problem).unwrap();
        assert_eq!(plan.launch.entry, "flashmha_merge_states_sm75_f16");
        let got = merge(&plan, &inputs).unwrap();
        let want = merge(&MergePlan::new(&problem).unwrap(), &inputs).unwrap();
        assert!(got.report.findings.is_empty(), "{:?}", got.report.findings);
        assert_eq!(got.o, want.o);
        assert_eq!(
            got.lse.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            want.lse.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
        assert!(got.o.iter().any(|&b| b != 0), "not vacuous");
    }
    // bf16 states: no bf16 kernels on Turing.
    let bf16 = MergeProblem {
        dtype: DType::Bf16,
        states: MergeStates::Pair,
        rows: 1,
        heads: 1,
        head_dim: 64,
        lse_layout: StatsLayout::RowsHeads,
    };
    assert!(matches!(
        MergePlan::new_for(turing, &bf16),
        Err(Error::UnsupportedDType { target, .. }) if target == turing
    ));
}
