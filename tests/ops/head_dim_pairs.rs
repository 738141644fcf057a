//! d_qk != d_v (issue 23 item 2) end to end on the emulator: q and k of head dim d_qk, v and o
//! of d_v (DeepSeek's 192 / 128, and 128 / 64), through the same forward kernels (Ampere
//! mma.sync and sm_90a wgmma) and paged decode kernels as every other head dim, each pair
//! compiled as its own row of kernels/kernel_table.h. Every case is drawn at random (shapes,
//! lengths, layouts, strides, values) and judged against the candle reference with v's own
//! head dim; zero emulator findings. The options the forward supports are forced on in turn,
//! and all at once, so each pair meets every mix: causal, sliding window, softcap, ALiBi, GQA,
//! varlen, sinks, head gates, LSE and entropy. The general property tests (forward_props.rs,
//! decode_props.rs) also draw the pairs in about a sixth of their cases. Typed errors for
//! each tensor's own dim and for pairs nobody compiled come back before any launch.

use crate::emulator_support::{rng, seed};
use flashmha::check::decode::{run_decode_case, DecodeCase};
use flashmha::check::forward::{run_case, CheckCase};
use flashmha::common::build_info::FWD_KERNELS;
use flashmha::common::dtype::DType;
use flashmha::common::options::SlidingWindow;
use flashmha::host::emulated;
use flashmha::host::problem::{FwdProblem, SeqLayout};
use flashmha::host::HostInputs;
use flashmha::ops::decode::validate::decode_head_dim_pairs;
use flashmha::ops::decode::{DecodePlan, DecodeProblem, SplitPolicy};
use flashmha::ops::forward::validate::compiled_head_dim_pairs;
use flashmha::{AttnOptions, Error, KernelTarget};
use rand::Rng;

/// The pairs of `dtype` whose own row `target` has (Hopper: its sm_90a rows, not the Ampere
/// fallback).
fn own_pairs(target: KernelTarget, dtype: DType) -> Vec<(usize, usize)> {
    let pairs: Vec<(usize, usize)> = FWD_KERNELS
        .iter()
        .filter(|r| r.target == target && r.dtype == dtype && r.head_dim_v != r.head_dim)
        .map(|r| (r.head_dim as usize, r.head_dim_v as usize))
        .collect();
    // The validation's list agrees (it adds the fallback's, Ampere's, which are the same pairs).
    let listed = compiled_head_dim_pairs(FWD_KERNELS, target, dtype);
    for p in &pairs {
        assert!(listed.contains(&(p.0 as u32, p.1 as u32)), "{p:?}");
    }
    pairs
}

/// Fails with the case and the judge's findings (drawn under `seed`) unless it `passed`.
fn assert_passed(seed: u64, case: &str, passed: bool, failures: &[String]) {
    assert!(passed, "seed {seed}: {case}:\n{}", failures.join("\n"));
}

/// Case `i` of a pair: a random case with one option forced on (i < 8), or all of them.
fn forced(mut case: CheckCase, i: usize, r: &mut impl Rng) -> CheckCase {
    let all = i >= 8;
    if all || i == 0 {
        case.options.causal = true;
    }
    if all || i == 1 {
        case.options.window = Some(SlidingWindow {
            left: Some(r.random_range(0..40)),
            right: Some(r.random_range(0..40)),
        });
    }
    if all || i == 2 {
        // (Within the entropy tolerance's softcap bound: tolerance.rs.)
        case.options.softcap = Some(r.random_range(5.0..8.0));
    }
    if all || i == 3 {
        case.alibi = true;
    }
    if all || i == 4 {
        // GQA: 3 query heads per KV head.
        case.num_heads_kv = 1 + (i % 2);
        case.num_heads_q = 3 * case.num_heads_kv;
    }
    if all || i == 5 {
        case.varlen = true;
        case.seqlens = vec![
            (r.random_range(1..70), r.random_range(1..70)),
            (0, 13),
            (37, 0),
        ];
    }
    if all || i == 6 {
        case.sinks = true;
    }
    if all || i == 7 {
        case.gates = true;
        case.lse = true;
        case.entropy = true;
        case.stride_pad = 8;
    }
    case
}

#[test]
fn forward_pairs_match_the_reference_with_every_option_on_every_family() {
    let seed = seed();
    let mut r = rng(seed);
    let mut ran = 0;
    for target in [KernelTarget::Ampere, KernelTarget::Hopper] {
        for dtype in [DType::F16, DType::Bf16] {
            for pair in own_pairs(target, dtype) {
                for i in 0..9 {
                    let case =
                        CheckCase::random(&mut r, &[dtype], &[pair.0], 70).with_head_dim_pair(pair);
                    let mut case = forced(case, i, &mut r);
                    case.target = target;
                    let j = run_case(&case).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
                    assert_passed(seed, &case.describe(), j.passed(), &j.failures());
                    ran += 1;
                }
            }
        }
    }
    // Both pairs on Ampere; on Hopper too when this build has the sm_90a pair rows.
    assert!(ran >= 2 * 2 * 9, "{ran} cases");
}

/// The plan of a pair runs the pair's own row: on Hopper its sm_90a row (TMA maps of each
/// tensor's width), on Turing nothing (a typed error), and a pair no row was compiled for, or a
/// d_v above d_qk, is [`Error::UnsupportedHeadDimPair`] listing the compiled pairs, returned
/// before any launch (the runner reports no launch).
#[test]
fn forward_pairs_plan_their_own_rows_and_unsupported_pairs_are_typed_errors() {
    let problem = |pair: (usize, usize), target| {
        let mut p = FwdProblem::contiguous_dv(
            DType::F16,
            SeqLayout::Padded {
                batch: 1,
                seqlen_q: 9,
                seqlen_k: 11,
            },
            (2, 1),
            pair,
            AttnOptions::default(),
        );
        p.target = target;
        p
    };
    for target in [KernelTarget::Ampere, KernelTarget::Hopper] {
        for pair in own_pairs(target, DType::F16) {
            let p = problem(pair, target);
            let inputs = HostInputs::random(&p, 3);
            let run = emulated::forward(&p, &inputs).unwrap();
            let entry = run.launch.kernel.entry;
            assert!(
                entry.ends_with(&format!("_d{}v{}", pair.0, pair.1)),
                "{entry}"
            );
            assert_eq!(run.launch.kernel.target, target, "{entry}");
            assert!(run.report.is_clean(), "{entry}: {:?}", run.report.findings);
            // o is [1, 9, 2, d_v]: exactly the bytes the problem sized.
            assert_eq!(run.outputs.o.len(), 9 * 2 * pair.1);
        }
    }
    let listed = compiled_head_dim_pairs(FWD_KERNELS, KernelTarget::Ampere, DType::F16);
    for (pair, target) in [
        ((192, 64), KernelTarget::Ampere),
        ((64, 128), KernelTarget::Ampere),
        ((184, 128), KernelTarget::Hopper),
        ((192, 128), KernelTarget::Turing),
    ] {
        let p = problem(pair, target);
        let inputs = HostInputs::random(&p, 3);
        match emulated::forward(&p, &inputs) {
            Err(Error::UnsupportedHeadDimPair {
                head_dim,
                head_dim_v,
                supported,
                ..
            }) => {
                assert_eq!((head_dim, head_dim_v), pair);
                let want = if target == KernelTarget::Turing {
                    vec![]
                } else {
                    listed.clone()
                };
                assert_eq!(supported, want, "{pair:?} on {target}");
            }
            other => panic!(
                "{pair:?} on {target}: {:?}",
                other.map(|r| r.launch.kernel.entry)
            ),
        }
    }
}

#[test]
fn paged_decode_pairs_match_the_reference_with_splits_and_every_option() {
    let seed = seed();
    let mut r = rng(seed);
    let mut ran = 0;
    for dtype in [DType::F16, DType::Bf16] {
        for (d, dv) in decode_head_dim_pairs(KernelTarget::Ampere, dtype, 2) {
            for i in 0..4 {
                let mut case =
                    DecodeCase::random_on(&mut r, Some(KernelTarget::Ampere), &[dtype], &[64], 200);
                case.kv_dtype = Default::default();
                case.head_dim = d as usize;
                case.head_dim_v = dv as usize;
                // Splits (so the combine merges d_v-wide partial states), and the options in
                // turn: masks and modifiers, then sinks / gates / LSE / entropy, then all.
                case.split = SplitPolicy::Count(1 + r.random_range(0..4u32));
                if i == 1 || i == 3 {
                    case.options.causal = true;
                    case.options.softcap = Some(7.5);
                    case.alibi = true;
                }
                if i == 2 || i == 3 {
                    case.sinks = true;
                    case.gates = true;
                    case.lse = true;
                    case.entropy = true;
                    case.varlen = true;
                    case.q_lens = (0..case.cache_lens.len()).map(|b| 1 + b % 3).collect();
                }
                let outcome = run_decode_case(&case).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
                assert_passed(
                    seed,
                    &case.describe(),
                    outcome.passed(),
                    &outcome.failures(),
                );
                ran += 1;
            }
        }
    }
    assert!(ran >= 2 * 2 * 4, "{ran} cases");
}

/// Decode pairs: FP8 pages, a pair with no row, and an o or V pool sized for the wrong dim are
/// typed errors from the plan; a pair's plan sizes its workspace and combine with d_v.
#[test]
fn paged_decode_pairs_plan_with_each_pools_own_dim() {
    let pair_problem = |d: usize, dv: usize| {
        let mut p = DecodeProblem::contiguous(DType::F16, 2, 1, 4, 2, d, 12, 16, 6, false);
        p.head_dim_v = dv;
        p.v_strides = flashmha::common::geometry::PageStrides::nhd(16, 2, dv);
        p.o_strides = flashmha::common::geometry::Strides::contiguous(1, 4, dv);
        p
    };
    let plan = DecodePlan::new(&pair_problem(192, 128), SplitPolicy::Count(3)).unwrap();
    assert_eq!(plan.kernel.entry, "flashmha_decode_f16_d192v128");
    assert_eq!(plan.workspace.partial_o, 3 * 2 * 4 * 128);
    let mut fp8 = pair_problem(192, 128);
    fp8.kv_dtype = flashmha::ops::decode::KvCacheDType::Fp8E4M3;
    for (p, want) in [
        (fp8, vec![]),
        (
            pair_problem(192, 64),
            decode_head_dim_pairs(KernelTarget::Ampere, DType::F16, 2),
        ),
    ] {
        match DecodePlan::new(&p, SplitPolicy::Count(1)) {
            Err(Error::UnsupportedHeadDimPair { supported, .. }) => assert_eq!(supported, want),
            other => panic!("{:?}", other.map(|p| p.kernel.entry)),
        }
    }
    // An o strided for d_v but overlapping itself (head stride below d_v) is refused.
    let mut p = pair_problem(192, 128);
    p.o_strides.head = 64;
    assert!(DecodePlan::new(&p, SplitPolicy::Count(1)).is_err());
}
