//! Every head dim in every op, and no wasted mma (issue 23, item 5). The forward and the paged
//! decode run every multiple of 8 up to their widest kernel on the narrowest compiled head dim
//! at least as wide; these tests run the off-table dims d40, d72, d112, d160, d192 and d224
//! (random cases, every option the case generators draw) against the reference with zero
//! findings, and count the tensor work (`mma` and `wgmma` FLOPs) such a launch issues against
//! what the real width needs (the k16 steps of Q K^T up to d rounded up to 16, the n8 tiles of
//! P V up to d rounded up to 8); before issue 23 it issued the whole compiled width's.

use flashmha::check::decode::{run_decode_case, DecodeCase};
use flashmha::check::forward::{run_case, CheckCase};
use flashmha::common::build_info::FWD_KERNELS;
use flashmha::common::dtype::DType;
use flashmha::common::options::AttnOptions;
use flashmha::ops::decode::validate::decode_width_for;
use flashmha::ops::decode::SplitPolicy;
use flashmha::ops::forward::validate::forward_kernel_for;
use flashmha::perf_model::tile_figures::emulate_counters;
use flashmha::problem::FwdProblem;
use flashmha::KernelTarget;
use rand::{Rng, SeedableRng};

/// The off-table head dims the issue names (none is a compiled width).
const OFF_TABLE: [usize; 6] = [40, 72, 112, 160, 192, 224];

/// Turing's widest forward and decode kernel is d128.
fn targets(d: usize) -> Vec<KernelTarget> {
    if d <= 128 {
        vec![KernelTarget::Ampere, KernelTarget::Turing]
    } else {
        vec![KernelTarget::Ampere]
    }
}

/// The forward's families: [`targets`] and Hopper (its sm_90a wgmma rows, or the Ampere row
/// where that is narrower: d72 runs on Ampere's d80).
fn forward_targets(d: usize) -> Vec<KernelTarget> {
    let mut t = targets(d);
    t.push(KernelTarget::Hopper);
    t
}

fn dtype_for(target: KernelTarget, rng: &mut impl Rng) -> DType {
    if target == KernelTarget::Turing || rng.random_bool(0.5) {
        DType::F16
    } else {
        DType::Bf16
    }
}

#[test]
fn off_table_head_dims_are_served_by_the_narrowest_wider_kernel() {
    for d in OFF_TABLE {
        for target in targets(d) {
            let fwd = forward_kernel_for(FWD_KERNELS, target, DType::F16, d).expect("forward");
            let dec = decode_width_for(target, DType::F16, 2, d).expect("decode");
            assert!(
                fwd.head_dim as usize > d && dec as usize > d,
                "d{d} {target}"
            );
            // The decode width is the forward's (both tables list the same Ampere / Turing dims).
            assert_eq!(dec, fwd.head_dim, "d{d} {target}");
        }
        // FP8 pages stay at their compiled dims.
        assert_eq!(
            decode_width_for(KernelTarget::Ampere, DType::F16, 1, d),
            None,
            "d{d}"
        );
    }
    // Past the widest kernel, or not a multiple of 8: no kernel.
    for d in [0, 44, 264] {
        assert_eq!(
            decode_width_for(KernelTarget::Ampere, DType::F16, 2, d),
            None,
            "d{d}"
        );
    }
    assert_eq!(
        decode_width_for(KernelTarget::Turing, DType::F16, 2, 136),
        None
    );
}

/// Runs `run(rng, d, target, dtype)` (one random case; Err: what failed) for every off-table
/// dim on every target of `targets_of(d)`, from a fresh seed that a failure names.
fn for_each_off_table_case(
    targets_of: fn(usize) -> Vec<KernelTarget>,
    run: impl Fn(&mut rand::rngs::StdRng, usize, KernelTarget, DType) -> Result<(), String>,
) {
    let seed: u64 = rand::random();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for d in OFF_TABLE {
        for target in targets_of(d) {
            let dtype = dtype_for(target, &mut rng);
            if let Err(e) = run(&mut rng, d, target, dtype) {
                panic!("seed {seed}: {e}");
            }
        }
    }
}

#[test]
fn off_table_head_dims_forward_matches_the_reference() {
    for_each_off_table_case(forward_targets, |rng, d, target, dtype| {
        let mut case = CheckCase::random(rng, &[dtype], &[d], 150);
        case.target = target;
        let j = run_case(&case).map_err(|e| format!("{}: {e}", case.describe()))?;
        j.passed()
            .then_some(())
            .ok_or_else(|| format!("{}: {:?}", case.describe(), j.failures()))
    });
}

#[test]
fn off_table_head_dims_decode_matches_the_reference() {
    for_each_off_table_case(targets, |rng, d, target, dtype| {
        let case = DecodeCase::random_on(rng, Some(target), &[dtype], &[d], 200);
        let out = run_decode_case(&case).map_err(|e| format!("{}: {e}", case.describe()))?;
        out.passed()
            .then_some(())
            .ok_or_else(|| format!("{}: {:?}", case.describe(), out.failures()))
    });
}

/// m16n8k16-equivalents the real width `d` needs per the full width `w`'s: Q K^T in k16 steps
/// (d rounded up to 16), P V in n8 tiles (d rounded up to 8); at the full width both halves of
/// the kernel's mma are equal (block_n / 8 x w / 16 = block_n / 16 x w / 8), so the need is the
/// full count times (ceil16(d) + ceil8(d)) / 2w.
fn need_fraction(d: usize, w: usize) -> f64 {
    (d.div_ceil(16) * 16 + d.div_ceil(8) * 8) as f64 / (2 * w) as f64
}

/// Tensor FLOPs of one m16n8k16 `mma`: the unit of the tensor-work table (Turing issues two
/// m16n8k8 per unit, the sm_90a forward one m64nNk16 `wgmma` per 8 N / 8 units).
const MMA_16816_FLOPS: u64 = 2 * 16 * 8 * 16;

/// Tensor work (`mma` and `wgmma` FLOPs, in m16n8k16 units) of one forward launch (one head,
/// sq x sk, non-causal, so every tile is whole) at head dim `d`.
fn forward_mma(target: KernelTarget, d: usize, sq: usize, sk: usize) -> u64 {
    let mut p = FwdProblem::padded(DType::F16, 1, (sq, sk), (1, 1), d, AttnOptions::default());
    p.target = target;
    let c = emulate_counters(&p).expect("clean run");
    assert_eq!(c.tensor_flops % MMA_16816_FLOPS, 0, "d{d} on {target}");
    c.tensor_flops / MMA_16816_FLOPS
}

/// Tensor work (in m16n8k16 units) of one paged-decode launch (4 query heads on one KV head,
/// 1 new token, 256 cached keys, one split) at head dim `d`; the case must pass the reference
/// too.
fn decode_mma(target: KernelTarget, d: usize) -> u64 {
    let mut case =
        DecodeCase::uniform(DType::F16, d, 1, 1, 4, 1, 16, 256, SplitPolicy::Count(1), 3);
    case.target = target;
    let out = run_decode_case(&case).expect("decode");
    assert!(out.passed(), "{}: {:?}", case.describe(), out.failures());
    let flops = out.run.decode_report.counters.tensor_flops;
    assert_eq!(flops % MMA_16816_FLOPS, 0, "d{d} on {target}");
    flops / MMA_16816_FLOPS
}

/// Counts the tensor work of each off-table dim against its kernel's full width on the same
/// shape (before issue 23 an off-table dim issued exactly the full width's) and prints the
/// before / after table (`-- --nocapture`). Where the kernel bounds its loop (every paged
/// decode; the sm_80+ and Turing forwards' d64 and d128 tiles one step short,
/// FwdTraits::kShortLoop, and the sm_80+ d256 tile at run time, FwdTraits::kBoundedLoop, in
/// kernels/common/fwd_traits.cuh; the sm_90a forward's loop copies, FwdTraitsSm90::LoopWidth in
/// kernels/sm90/fwd_traits_sm90.cuh) a dim that leaves a 16-column step empty issues less,
/// within 1.1x of its real-width need.
#[test]
fn off_table_head_dims_issue_only_the_mma_their_width_needs() {
    println!("tensor work in m16n8k16 units (tensor FLOPs / 4096: mma and wgmma alike)");
    println!(
        "op       target  d    kernel  before      after      need     after/need  before/need"
    );
    let row = |op: &str, target: KernelTarget, d: usize, w: usize, full: u64, now: u64| {
        let need = full as f64 * need_fraction(d, w);
        let ratio = now as f64 / need;
        println!(
            "{op:<8} {:<7} {d:<4} d{w:<5} {full:<11} {now:<10} {need:<8.0} {ratio:<11.3} {:.3}",
            format!("{target}"),
            full as f64 / need
        );
        // d72 on d80 and the like: every 16-column step holds a real column, nothing to skip.
        if d.div_ceil(16) < w / 16 {
            assert!(
                now < full,
                "{op} d{d} on {target}: no mma saved ({now} of {full})"
            );
            assert!(
                ratio <= 1.1,
                "{op} d{d} on {target}: {now} mma, {ratio:.3}x the need"
            );
        } else {
            assert_eq!(now, full, "{op} d{d} on {target}");
        }
    };
    for d in OFF_TABLE {
        for target in forward_targets(d) {
            let w = forward_kernel_for(FWD_KERNELS, target, DType::F16, d)
                .unwrap()
                .head_dim as usize;
            // Every forward tile serving a dim that leaves a step empty bounds its loop (d80 /
            // d96 serve only dims that fill every step: d72 checks they issue the full width),
            // and so does every paged decode.
            let (sq, sk) = (64, 256);
            let (full, now) = (
                forward_mma(target, w, sq, sk),
                forward_mma(target, d, sq, sk),
            );
            row("forward", target, d, w, full, now);
        }
        for target in targets(d) {
            let w = forward_kernel_for(FWD_KERNELS, target, DType::F16, d)
                .unwrap()
                .head_dim as usize;
            row(
                "decode",
                target,
                d,
                w,
                decode_mma(target, w),
                decode_mma(target, d),
            );
        }
    }
}
