//! The head-similarity kernel on the PTX emulator against the CPU reference
//! (`flashmha::reference::head_similarity`, candle in f64), on random shapes and non-zero random
//! values with planted structure: heads zeroed at some tokens, duplicated (scaled) and negated
//! heads, per-head magnitudes over many orders. Every launch must also be free of emulator
//! findings.
//!
//! Tolerance (see `tolerance`): both sides read the same 16-bit values, so the only difference
//! is the kernel's f32 arithmetic against the reference's f64. With u = 2^-24 (f32 unit
//! roundoff) and the standard bound γ_n ≈ n·u for a sum of n terms:
//! - a unit vector element u_k = (x_k · s) · (1/‖x·s‖) carries the error of the norm (a sum of d
//!   squares: d·u), of 1/sqrt (2u) and of the two products (2u): ≤ (d + 4)·u relative;
//! - one token's cosine Σ_k u_ik u_jk then errs by ≤ 2(d + 4)·u (both factors) plus the dot
//!   product's own summation of d terms, d·u, since Σ_k |u_ik u_jk| ≤ 1 (Cauchy–Schwarz);
//! - a CTA sums tokens_per_cta · d such products in one f32 accumulator (≤ tokens_per_cta·d·u
//!   relative to Σ|terms| ≤ tokens_per_cta, i.e. ≤ d·u·tokens_per_cta per token on the mean),
//!   the grid's CTAs add with atomics (≤ grid·u), and the mean is rounded to f32 once (u).
//!
//! So |kernel − reference| ≤ u·(3d + 8 + tokens_per_cta·d + grid + 1) on every entry: a worst
//! case, not a fit to observed errors (which are ~100x smaller). The diagonal is exact (the
//! kernel adds token counts, the reference writes 1).

use flashmha::common::dtype::DType;
use flashmha::common::element::Element;
use flashmha::diagnostics::{
    head_similarity_emulated, head_similarity_emulated_view, HeadSimPlan, SimilarityMatrix,
};
use flashmha::ops::head_similarity::HeadSimProblem;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};

const U: f64 = 1.0 / (1u64 << 24) as f64;

/// The worst-case bound derived in the module docs.
fn tolerance(plan: &HeadSimPlan, head_dim: usize) -> f64 {
    let d = head_dim as f64;
    let tpc = plan.tokens_per_cta() as f64;
    let grid = plan.grid()[0] as f64;
    U * (3.0 * d + 8.0 + tpc * d + grid + 1.0)
}

/// Random `[tokens, heads, d]` data with planted structure, as f32 already rounded through `T`.
fn planted_data<T: Element>(rng: &mut impl Rng, tokens: usize, heads: usize, d: usize) -> Vec<f32> {
    // Per-head magnitude 10^[-3, 3]: the kernel's norm must not care about scale.
    let scale: Vec<f32> = (0..heads)
        .map(|_| 10f32.powf(rng.random_range(-3.0..3.0)))
        .collect();
    let mut o: Vec<f32> = (0..tokens * heads * d)
        .map(|i| {
            // Non-zero by construction: magnitude in [0.05, 1], random sign.
            let m: f32 = rng.random_range(0.05..1.0);
            let s = if rng.random_bool(0.5) { m } else { -m };
            s * scale[(i / d) % heads]
        })
        .collect();
    let row = |t: usize, h: usize| (t * heads + h) * d;
    if heads >= 2 {
        // A duplicated head (a positive multiple of another: cos = 1 at every token)...
        let (src, dst) = (rng.random_range(0..heads), rng.random_range(0..heads));
        let k: f32 = rng.random_range(0.5..2.0);
        // ...and a negated one (cos = -1).
        let (nsrc, ndst) = (rng.random_range(0..heads), rng.random_range(0..heads));
        for t in 0..tokens {
            if src != dst {
                for e in 0..d {
                    o[row(t, dst) + e] = k * o[row(t, src) + e];
                }
            }
            if nsrc != ndst && ndst != dst {
                for e in 0..d {
                    o[row(t, ndst) + e] = -o[row(t, nsrc) + e];
                }
            }
        }
    }
    // Heads whose output is zero at some tokens (about one row in six).
    for t in 0..tokens {
        for h in 0..heads {
            if rng.random_ratio(1, 6) {
                o[row(t, h)..row(t, h) + d].fill(0.0);
            }
        }
    }
    o.iter().map(|&x| T::from_f32(x).to_f32()).collect()
}

/// Conversion from f32 for the two element types (half has no common trait for it).
/// Asserts every entry of `got` is within `tol` of the reference on `o` (f32 values of T), the
/// diagonal is exactly 1 and the kernel's two triangles agree within 2·tol.
fn assert_matches_reference(
    got: &SimilarityMatrix,
    o: &[f32],
    tokens: usize,
    heads: usize,
    d: usize,
    tol: f64,
) -> std::result::Result<(), TestCaseError> {
    let want = flashmha::reference::head_similarity(o, tokens, heads, d).unwrap();
    let mut worst = 0.0f64;
    for i in 0..heads {
        for j in 0..heads {
            let (g, w) = (f64::from(got.get(i, j)), f64::from(want[i * heads + j]));
            if i == j {
                prop_assert_eq!(g, 1.0, "diagonal {}", i);
            }
            worst = worst.max((g - w).abs());
            prop_assert!(
                (g - w).abs() <= tol,
                "({}, {}): kernel {} vs reference {} (|diff| {:.3e} > tol {:.3e}; t {} h {} d {})",
                i,
                j,
                g,
                w,
                (g - w).abs(),
                tol,
                tokens,
                heads,
                d
            );
        }
    }
    prop_assert!(
        f64::from(got.asymmetry()) <= 2.0 * tol,
        "asymmetry {}",
        got.asymmetry()
    );
    eprintln!("t {tokens:3} h {heads:3} d {d:3}: max |diff| {worst:.2e} (tol {tol:.2e})");
    Ok(())
}

/// Runs one random case for element type T.
fn check_random_case<T: Element>(
    seed: u64,
    tokens: usize,
    heads: usize,
    d: usize,
) -> std::result::Result<(), TestCaseError> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let o = planted_data::<T>(&mut rng, tokens, heads, d);
    let data: Vec<T> = o.iter().map(|&x| T::from_f32(x)).collect();
    let problem = HeadSimProblem::contiguous(T::DTYPE, tokens, heads, d);
    let (got, report, plan) = head_similarity_emulated_view(&data, &problem).unwrap();
    prop_assert!(
        report.is_clean(),
        "emulator findings: {:#?}",
        report.findings
    );
    assert_matches_reference(&got, &o, tokens, heads, d, tolerance(&plan, d))
}

/// Shapes: token counts that are not multiples of the 8-token groups, every thread-slot
/// variant of the kernel (heads ≤ 16, ≤ 32, ≤ 64, ≤ 128) and head dims 8..=256.
fn shapes() -> impl Strategy<Value = (u64, usize, usize, usize)> {
    (
        any::<u64>(),
        1usize..40,
        prop_oneof![4 => 1usize..=16, 2 => 17usize..=32, 1 => 33usize..=64, 1 => 65usize..=128],
        (1usize..=32).prop_map(|k| k * 8),
    )
}

proptest! {
    // Each case is one emulated launch (~0.1 s); every run draws new shapes. The failing seed
    // and shape are printed by proptest, so no regression file is kept.
    #![proptest_config(ProptestConfig {
        cases: 16,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn f16_kernel_matches_reference((seed, t, h, d) in shapes()) {
        check_random_case::<half::f16>(seed, t, h, d)?;
    }

    #[test]
    fn bf16_kernel_matches_reference((seed, t, h, d) in shapes()) {
        check_random_case::<half::bf16>(seed, t, h, d)?;
    }
}

#[test]
fn planted_duplicates_and_negations_read_as_plus_and_minus_one() {
    // 3 heads, d 16: head 1 = 3 x head 0, head 2 = -head 0, at every token.
    let (tokens, heads, d) = (21, 3, 16);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut o = vec![0f32; tokens * heads * d];
    for t in 0..tokens {
        for e in 0..d {
            let x: f32 = rng.random_range(0.1..1.0) * if rng.random_bool(0.5) { 1.0 } else { -1.0 };
            let x = half::bf16::from_f32(x).to_f32();
            o[(t * heads) * d + e] = x;
            o[(t * heads + 1) * d + e] = 3.0 * x; // exact in bf16: x has 8 significant bits
            o[(t * heads + 2) * d + e] = -x;
        }
    }
    let data: Vec<half::bf16> = o.iter().map(|&x| half::bf16::from_f32(x)).collect();
    let (m, report) = head_similarity_emulated(&data, tokens, heads, d).unwrap();
    assert!(report.is_clean(), "{:#?}", report.findings);
    let tol = 1e-5;
    assert!((m.get(0, 1) - 1.0).abs() < tol, "{}", m.get(0, 1));
    assert!((m.get(0, 2) + 1.0).abs() < tol, "{}", m.get(0, 2));
    assert!((m.get(1, 2) + 1.0).abs() < tol, "{}", m.get(1, 2));
}

#[test]
fn extreme_bf16_magnitudes_keep_their_cosines() {
    // Rows of 1e30 (x² overflows f32) and of bf16 subnormals (x² underflows): the kernel's
    // max-abs scaling must give the same cosines as the f64 reference.
    let (tokens, heads, d) = (9, 4, 32);
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mags = [1e30f32, 1e-39, 1.0, 3e-30];
    let o: Vec<f32> = (0..tokens * heads * d)
        .map(|i| {
            let x = mags[(i / d) % heads] * rng.random_range(-1.0f32..1.0);
            half::bf16::from_f32(x).to_f32()
        })
        .collect();
    assert!(
        o.iter().any(|&x| x != 0.0 && x.abs() < f32::MIN_POSITIVE),
        "no subnormal drawn"
    );
    let data: Vec<half::bf16> = o.iter().map(|&x| half::bf16::from_f32(x)).collect();
    let problem = HeadSimProblem::contiguous(DType::Bf16, tokens, heads, d);
    let (m, report, plan) = head_similarity_emulated_view(&data, &problem).unwrap();
    assert!(report.is_clean(), "{:#?}", report.findings);
    assert_matches_reference(&m, &o, tokens, heads, d, tolerance(&plan, d)).unwrap();
}

#[test]
fn strided_view_matches_the_gathered_copy() {
    // o: [tokens, heads, d] inside a [tokens, heads + 3, d + 8] buffer (padding between heads
    // and tokens), so token_stride and head_stride differ from the contiguous ones.
    let (tokens, heads, d) = (19, 5, 24);
    let (hs, ts) = (d + 8, (heads + 3) * (d + 8));
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let buf: Vec<f32> = (0..tokens * ts)
        .map(|_| half::f16::from_f32(rng.random_range(-1.0f32..1.0)).to_f32())
        .collect();
    let gathered: Vec<f32> = (0..tokens)
        .flat_map(|t| (0..heads).flat_map(move |h| (0..d).map(move |e| (t, h, e))))
        .map(|(t, h, e)| buf[t * ts + h * hs + e])
        .collect();
    let data: Vec<half::f16> = buf.iter().map(|&x| half::f16::from_f32(x)).collect();
    let problem = HeadSimProblem {
        token_stride: ts as i64,
        head_stride: hs as i64,
        ..HeadSimProblem::contiguous(DType::F16, tokens, heads, d)
    };
    let (m, report, plan) = head_similarity_emulated_view(&data, &problem).unwrap();
    assert!(report.is_clean(), "{:#?}", report.findings);
    assert_matches_reference(&m, &gathered, tokens, heads, d, tolerance(&plan, d)).unwrap();
}

/// A fresh, empty folder under the system temp dir for one test.
pub(crate) fn scratch_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("flashmha-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the `flashmha` binary with `args`; returns stdout, failing on a non-zero exit.
pub(crate) fn run_cli(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flashmha"))
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "flashmha {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn cli_finds_planted_duplicates_and_writes_the_report() {
    let dir = scratch_dir("diagnose-generated");
    let out = dir.to_str().unwrap();
    let stdout = run_cli(&[
        "diagnose",
        "--heads",
        "6",
        "--seq",
        "40",
        "--dim",
        "32",
        "--seed",
        "5",
        "--duplicate",
        "1:4",
        "--dtype",
        "f16",
        "--out",
        out,
    ]);
    assert!(
        stdout.contains("head-similarity kernel on the PTX emulator"),
        "{stdout}"
    );
    for f in [
        "similarity.csv",
        "spectrum.csv",
        "clusters.csv",
        "entropy.csv",
        "summary.md",
        "similarity_heatmap.png",
        "similarity_heatmap.svg",
        "spectrum.png",
        "spectrum.svg",
    ] {
        let len = std::fs::metadata(dir.join(f)).map(|m| m.len()).unwrap_or(0);
        assert!(len > 0, "{f} missing or empty");
    }
    // The planted pair, and only it, is a cluster (random heads are far below 0.9).
    let clusters = std::fs::read_to_string(dir.join("clusters.csv")).unwrap();
    let rows: Vec<&str> = clusters.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{clusters}");
    assert!(rows[0].starts_with("0,1 4,"), "{clusters}");
    let summary = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    assert!(
        summary.contains("findings: 0 (dropped beyond caps: 0)"),
        "{summary}"
    );
    assert!(
        summary.contains("fused forward kernel (emulated)"),
        "entropy source must be labelled"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn cli_reads_npy_inputs() {
    use flashmha::diagnostics::npy::write_npy;
    let dir = scratch_dir("diagnose-npy");
    let (s, h, d) = (24usize, 3usize, 32usize);
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let mut gen = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0..1.0)).collect() };
    let (mut q, mut k, mut v) = (gen(s * h * d), gen(s * h * d), gen(s * h * d));
    // Head 2 is a copy of head 0 in q, k and v: identical outputs.
    for x in [&mut q, &mut k, &mut v] {
        for t in 0..s {
            for e in 0..d {
                x[(t * h + 2) * d + e] = x[(t * h) * d + e];
            }
        }
    }
    for (name, x) in [("q", &q), ("k", &k), ("v", &v)] {
        write_npy(&dir.join(format!("{name}.npy")), &[s, h, d], x).unwrap();
    }
    let p = |n: &str| dir.join(n).to_str().unwrap().to_string();
    let out = p("report");
    run_cli(&[
        "diagnose",
        "--q",
        &p("q.npy"),
        "--k",
        &p("k.npy"),
        "--v",
        &p("v.npy"),
        "--no-robustness",
        "--out",
        &out,
    ]);
    let clusters = std::fs::read_to_string(dir.join("report/clusters.csv")).unwrap();
    assert!(
        clusters
            .lines()
            .nth(1)
            .is_some_and(|r| r.starts_with("0,0 2,1.000000")),
        "{clusters}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
