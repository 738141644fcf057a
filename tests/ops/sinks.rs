//! Attention sinks end to end on the emulator: a per-query-head logit `z` that joins every row's
//! softmax denominator with no value, `P_ij = exp(s_ij) / (exp(z_h) + sum_j exp(s_ij))`
//! (kernels/common/state_merge.cuh). The reference computes it as one more key column
//! (src/reference/attention.rs). Covered here: the forward of every kernel family (Ampere,
//! Turing, sm_90a) on random cases with sinks, paged decode whose result does not depend on the
//! split count (the sink joins once, in split 0's state, not once per split), and a NaN sink,
//! which must reach O, LSE and entropy of its head only, through the split combine too. The
//! general property tests (forward_props.rs, decode_props.rs) also draw sinks in a fifth of
//! their cases; the candle op's sinks are tested in candle_op.rs.

use crate::emulator_support::{rng, seed};
use flashmha::check::decode::{run_decode_case, DecodeCase};
use flashmha::check::forward::{run_case, CheckCase};
use flashmha::common::build_info::FWD_KERNELS;
use flashmha::common::dtype::DType;
use flashmha::common::options::AttnOptions;
use flashmha::host::emulated;
use flashmha::host::problem::{FwdProblem, SeqLayout};
use flashmha::host::HostInputs;
use flashmha::ops::decode::SplitPolicy;
use flashmha::ops::forward::validate::compiled_head_dims;
use flashmha::KernelTarget;
use rand::Rng;

#[test]
fn forward_with_sinks_matches_the_reference_on_every_kernel_family() {
    let seed = seed();
    let mut r = rng(seed);
    for target in [
        KernelTarget::Ampere,
        KernelTarget::Turing,
        KernelTarget::Hopper,
    ] {
        let dtypes: Vec<DType> = [DType::F16, DType::Bf16]
            .into_iter()
            .filter(|d| target.supports(*d))
            .collect();
        for _ in 0..3 {
            let dtype = dtypes[r.random_range(0..dtypes.len())];
            let dims: Vec<usize> = compiled_head_dims(FWD_KERNELS, target, dtype)
                .into_iter()
                .map(|d| d as usize)
                .filter(|&d| d <= 128) // keeps the emulated cases short
                .collect();
            let mut case = CheckCase::random(&mut r, &[dtype], &dims, 90);
            case.target = target;
            case.sinks = true;
            case.lse = true;
            let j = run_case(&case).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            assert!(
                j.passed(),
                "seed {seed}: {}:\n{}",
                case.describe(),
                j.failures().join("\n")
            );
        }
    }
}

#[test]
fn decode_with_sinks_is_the_same_for_one_and_sixteen_splits() {
    let seed = seed();
    let mut r = rng(seed);
    for dtype in [DType::F16, DType::Bf16] {
        let head_dim = [64, 128][r.random_range(0..2)];
        let group = r.random_range(1..=8);
        let mut case = DecodeCase::uniform(
            dtype,
            head_dim,
            2,
            2,
            group,
            r.random_range(1..=2),
            16,
            r.random_range(300..700),
            SplitPolicy::Count(1),
            r.random(),
        );
        case.sinks = true;
        case.lse = true;
        case.entropy = true;
        let one = run_decode_case(&case).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        case.split = SplitPolicy::Count(16);
        let sixteen = run_decode_case(&case).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert_eq!(one.plan.num_splits, 1);
        assert_eq!(sixteen.plan.num_splits, 16, "seed {seed}");
        for (n, out) in [(1, &one), (16, &sixteen)] {
            assert!(
                out.passed(),
                "seed {seed}, {n} splits: {}:\n{}",
                case.describe(),
                out.failures().join("\n")
            );
        }
        // The two runs agree with each other to within the judge's tolerance of each (both are
        // within it of the reference); a sink joined once per split would move every LSE by
        // about ln(1 + 15 exp(z - lse)), far outside it.
        let (l1, l16) = (one.run.lse.unwrap(), sixteen.run.lse.unwrap());
        let lse_tol = one.judgement.output("lse").unwrap().tolerance.max_abs
            + sixteen.judgement.output("lse").unwrap().tolerance.max_abs;
        for (a, b) in l1.iter().zip(&l16) {
            assert!(
                (f64::from(*a) - f64::from(*b)).abs() <= lse_tol,
                "seed {seed}: lse {a} vs {b}"
            );
        }
    }
}

#[test]
fn a_nan_sink_reaches_its_heads_outputs_only() {
    let (hq, d, sq, sk) = (2, 64, 5, 40);
    let mut p = FwdProblem::contiguous(
        DType::F16,
        SeqLayout::Padded {
            batch: 1,
            seqlen_q: sq,
            seqlen_k: sk,
        },
        hq,
        1,
        d,
        AttnOptions::default(),
    );
    p.lse_len = Some(p.row_stats_len());
    p.entropy_len = Some(p.row_stats_len());
    p.sinks_len = Some(hq);
    let mut r = rng(seed());
    let mut draw = |n: usize| -> Vec<u16> {
        (0..n)
            .map(|_| DType::F16.bits_from_f32(r.random_range(-1.0..1.0)))
            .collect()
    };
    let inputs = HostInputs {
        q: draw(p.q.len),
        k: draw(p.k.len),
        v: draw(p.v.len),
        sinks: Some(vec![f32::NAN, 0.25]),
        ..HostInputs::default()
    };
    let run = emulated::forward(&p, &inputs).unwrap();
    assert!(run.report.is_clean(), "{:?}", run.report.findings);
    let (lse, ent) = (run.outputs.lse.unwrap(), run.outputs.entropy.unwrap());
    // [b, hq, sq] stats, [b, sq, hq, d] O.
    for i in 0..sq {
        assert!(lse[i].is_nan() && ent[i].is_nan(), "head 0 row {i}");
        assert!(
            lse[sq + i].is_finite() && ent[sq + i].is_finite(),
            "head 1 row {i}"
        );
        let o_row = |h: usize| &run.outputs.o[(i * hq + h) * d..][..d];
        assert!(o_row(0)
            .iter()
            .all(|&b| DType::F16.f32_from_bits(b).is_nan()));
        assert!(o_row(1)
            .iter()
            .all(|&b| DType::F16.f32_from_bits(b).is_finite()));
    }
}

#[test]
fn a_nan_sink_survives_the_split_combine() {
    let mut case = DecodeCase::uniform(
        DType::Bf16,
        64,
        1,
        1,
        2,
        1,
        16,
        400,
        SplitPolicy::Count(8),
        seed(),
    );
    case.sinks = true;
    case.lse = true;
    let built = case.build();
    let mut inputs = built.inputs.clone();
    inputs.sinks = Some(vec![f32::NAN, 1.0]);
    let plan = flashmha::ops::decode::DecodePlan::new(&built.problem, case.split).unwrap();
    assert_eq!(plan.num_splits, 8);
    let run = flashmha::host::emulated_decode::decode(&plan, &inputs).unwrap();
    assert!(run.findings().is_empty(), "{:?}", run.findings());
    let lse = run.lse.unwrap();
    // [b, hq, sq_new]: head 0 NaN, head 1 finite.
    assert!(lse[0].is_nan() && lse[1].is_finite(), "{lse:?}");
    let o: Vec<f32> = run
        .o
        .iter()
        .map(|&b| DType::Bf16.f32_from_bits(b))
        .collect();
    assert!(o[..64].iter().all(|x| x.is_nan()) && o[64..].iter().all(|x| x.is_finite()));
}
