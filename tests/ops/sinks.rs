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

/// A contiguous f16 problem of one padded item of `sq` x `sk` rows, (hq, hkv) heads.
fn padded_f16(
    (sq, sk): (usize, usize),
    (hq, hkv): (usize, usize),
    d: usize,
    options: AttnOptions,
) -> FwdProblem {
    FwdProblem::contiguous(
        DType::F16,
        SeqLayout::Padded {
            batch: 1,
            seqlen_q: sq,
            seqlen_k: sk,
        },
        hq,
        hkv,
        d,
        options,
    )
}

#[test]
fn a_nan_sink_reaches_its_heads_outputs_only() {
    let (hq, d, sq, sk) = (2, 64, 5, 40);
    let mut p = padded_f16((sq, sk), (hq, 1), d, AttnOptions::default());
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

/// The C ABI's sinks: `flashmha_bufs.sinks` through the emulator entry gives the same bits as
/// the Rust runner, rows with no visible key get their head's sink as LSE and O = 0, and a
/// sinks buffer shorter than `heads_q` is `FLASHMHA_ERR_BUFFER` with nothing written.
#[test]
fn the_c_abi_passes_sinks_to_the_kernel() {
    use crate::capi_support::{self, buf, padded_shape, raw_buf};
    use flashmha::capi::{ffi, flashmha_emulate_run, flashmha_plan_destroy};
    let seed = seed();
    let mut r = rng(seed);
    // Causal with more queries than keys: the first sq - sk rows see no key.
    let (h, d, sk) = (2usize, 64usize, r.random_range(1..=30));
    let sq = sk + r.random_range(1..=10);
    let mut s = padded_shape(ffi::FLASHMHA_DTYPE_F16, (sq, sk), (h, h), d);
    s.options.causal = 1;
    let plan = capi_support::plan(&s, None);
    let (nq, nk) = (sq * h * d, sk * h * d);
    let mut draw = |n: usize| -> Vec<u16> {
        (0..n)
            .map(|_| DType::F16.bits_from_f32(r.random_range(-1.0..1.0)))
            .collect()
    };
    let (mut q, mut k, mut v) = (draw(nq), draw(nk), draw(nk));
    let mut sinks = vec![r.random_range(-2.0f32..3.0), r.random_range(-2.0f32..3.0)];
    let mut o = vec![0u16; nq];
    let mut lse = vec![f32::NAN; h * sq];
    let mut bufs = ffi::flashmha_bufs {
        q: buf(&mut q),
        k: buf(&mut k),
        v: buf(&mut v),
        o: buf(&mut o),
        lse: buf(&mut lse),
        sinks: buf(&mut sinks),
        ..Default::default()
    };
    // SAFETY: every buffer is a live Vec of its declared length; `plan` is live.
    assert_eq!(
        unsafe { flashmha_emulate_run(plan, &bufs) },
        ffi::FLASHMHA_OK
    );
    // The same call through the Rust runner: the same bits.
    let options = AttnOptions {
        causal: true,
        ..Default::default()
    };
    let mut p = padded_f16((sq, sk), (h, h), d, options);
    p.lse_len = Some(p.row_stats_len());
    p.sinks_len = Some(h);
    let inputs = HostInputs {
        q: q.clone(),
        k: k.clone(),
        v: v.clone(),
        sinks: Some(sinks.clone()),
        ..HostInputs::default()
    };
    let run = emulated::forward(&p, &inputs).unwrap();
    assert_eq!(
        run.outputs.o, o,
        "seed {seed}: O differs from the Rust path"
    );
    let lse_rust = run.outputs.lse.unwrap();
    assert!(lse_rust
        .iter()
        .zip(&lse)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
    // [1, h, sq] LSE: rows without keys hold exactly their sink; their O is 0.
    for (hh, z) in sinks.iter().enumerate() {
        for i in 0..sq - sk {
            assert_eq!(lse[hh * sq + i], *z, "seed {seed}: head {hh} row {i}");
            assert!(o[(i * h + hh) * d..][..d].iter().all(|&b| b == 0));
        }
    }
    // A short sinks buffer is refused before the launch: nothing is written.
    let o_before = o.clone();
    bufs.sinks = raw_buf(sinks.as_mut_ptr().cast(), h - 1);
    // SAFETY: as above.
    assert_eq!(
        unsafe { flashmha_emulate_run(plan, &bufs) },
        ffi::FLASHMHA_ERR_BUFFER
    );
    assert_eq!(o, o_before);
    // SAFETY: destroyed once.
    unsafe { flashmha_plan_destroy(plan) };
}
