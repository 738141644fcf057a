//! Per-head robustness (issue 22, item 2) on the emulator: the block Krylov iteration over the JVP and
//! backward kernels against an exact SVD of each head's Jacobian (built column by column from the
//! f64 reference JVP, `flashmha::reference::attention_jvp`, at the same rounded inputs), a
//! planted fragile head singled out, and bad settings as typed errors or "not converged".

use flashmha::common::dtype::DType;
use flashmha::common::options::AttnOptions;
use flashmha::diagnostics::robustness::{head_inputs, measure, LayerInputs, Settings, Wrt};
use flashmha::reference::{attention_jvp, round_slice, Layout, ReferenceInputs, Tangents};
use flashmha::Heads;
use rand::{Rng, SeedableRng};

/// The exact top singular value of head `h`'s Jacobian (its own output, w.r.t. `wrt`).
fn exact_sigma(l: &LayerInputs, h: usize, wrt: Wrt) -> f64 {
    let [q, k, v] = head_inputs(l, h);
    let slope = l.alibi_slopes.map(|s| vec![s[h]]);
    let one = LayerInputs {
        q: &q,
        k: &k,
        v: &v,
        heads: Heads::mha(1),
        alibi_slopes: slope.as_deref(),
        ..*l
    };
    exact_layer_sigma(&one, None, wrt)
}

/// The exact top singular value of the Jacobian of the layer's combined output (every head,
/// times its gate), w.r.t. `wrt`, assembled column by column from the f64 reference JVP.
fn exact_layer_sigma(l: &LayerInputs, gates: Option<&[f32]>, wrt: Wrt) -> f64 {
    let [q, k, v] = [l.q, l.k, l.v].map(|x| round_slice(x, l.dtype));
    let inp = ReferenceInputs {
        q: &q,
        k: &k,
        v: &v,
        layout: Layout::Padded {
            batch: 1,
            seqlen_q: l.seqlen_q,
            seqlen_k: l.seqlen_k,
        },
        num_heads_q: l.heads.q,
        num_heads_kv: l.heads.kv,
        head_dim: l.head_dim,
        options: &l.options,
        alibi_slopes: l.alibi_slopes,
        head_gates: gates,
        sinks: None,
    };
    let sel = match wrt {
        Wrt::Qkv => [true, true, true],
        Wrt::Kv => [false, true, true],
        Wrt::Q => [true, false, false],
    };
    let lens = [q.len(), k.len(), v.len()];
    let mut columns: Vec<Vec<f64>> = Vec::new();
    for part in 0..3 {
        if !sel[part] {
            continue;
        }
        for i in 0..lens[part] {
            let mut t = [
                vec![0f32; lens[0]],
                vec![0f32; lens[1]],
                vec![0f32; lens[2]],
            ];
            t[part][i] = 1.0;
            let r = attention_jvp(
                &inp,
                Tangents {
                    dq: &t[0],
                    dk: &t[1],
                    dv: &t[2],
                },
                1e-3,
            )
            .unwrap();
            columns.push(r.o_tangent);
        }
    }
    let m = columns[0].len();
    let j = nalgebra::DMatrix::from_fn(m, columns.len(), |r, c| columns[c][r]);
    j.singular_values().max()
}

/// A self-attention layer of `h` heads over `s` tokens with default options, no ALiBi: q, k, v
/// `[s, h, d]` (d from their length).
fn mha_layer<'a>([q, k, v]: [&'a [f32]; 3], s: usize, h: usize, dtype: DType) -> LayerInputs<'a> {
    LayerInputs {
        q,
        k,
        v,
        seqlen_q: s,
        seqlen_k: s,
        heads: Heads::mha(h),
        head_dim: q.len() / (s * h),
        options: AttnOptions::default(),
        alibi_slopes: None,
        dtype,
    }
}

/// Random small layers (GQA, masks, softcap, ALiBi, each selection): the iteration's top
/// singular value of every head within 1e-2 relative of the exact SVD's, and the mean random
/// gain between the RMS gain's half and itself (E|Jr| <= sqrt(E|Jr|^2) = |J|_F / sqrt(n)).
#[test]
fn power_iteration_matches_the_exact_svd() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(rand::random());
    for case in 0..2 {
        let (sq, sk, d) = (rng.random_range(3..=9), rng.random_range(3..=12), 8);
        let heads = if case == 0 {
            Heads::mha(2)
        } else {
            Heads::gqa(2, 1)
        };
        let mut draw =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.5f32..1.5)).collect() };
        let (q, k, v) = (
            draw(sq * 2 * d),
            draw(sk * heads.kv * d),
            draw(sk * heads.kv * d),
        );
        let slopes = [0.2f32, 0.05];
        let options = AttnOptions {
            causal: case == 1,
            softcap: (case == 0).then_some(3.0),
            ..AttnOptions::default()
        };
        let wrt = [Wrt::Qkv, Wrt::Kv, Wrt::Q][rng.random_range(0..3)];
        let layer = LayerInputs {
            q: &q,
            k: &k,
            v: &v,
            seqlen_q: sq,
            seqlen_k: sk,
            heads,
            head_dim: d,
            options,
            alibi_slopes: (case == 1).then_some(&slopes[..]),
            dtype: DType::F16,
        };
        let settings = Settings {
            wrt,
            rel_tol: 2e-4,
            max_iters: 80,
            random_samples: 6,
            epsilons: vec![0.01],
            seed: rng.random(),
        };
        let r = measure(&layer, &settings).unwrap();
        for h in 0..2 {
            let exact = exact_sigma(&layer, h, wrt);
            let got = &r.heads[h];
            let rel = (got.top.sigma - exact).abs() / exact;
            println!(
                "case {case} ({sq}x{sk}, {wrt:?}) head {h}: iteration {:.5} ({} iterations, converged {}), exact {exact:.5}, rel {rel:.1e}",
                got.top.sigma, got.top.iterations, got.top.converged
            );
            assert!(rel <= 1e-2, "head {h}: {} vs exact {exact}", got.top.sigma);
            assert!(got.mean_random > 0.0 && got.mean_random <= got.top.sigma * 1.01);
            assert!(got.ratio >= 0.99);
            // At 1% of the input norm the head is close to linear.
            let p = got.epsilon_curve[0];
            assert!((p.amplification / got.top.sigma - 1.0).abs() < 0.2, "{p:?}");
        }
        // The combined output, and each gated-off configuration, against the exact SVD of the
        // whole layer's Jacobian (assembled from KV-group blocks by the measurement).
        let exact = exact_layer_sigma(&layer, None, wrt);
        let rel = (r.combined.top.sigma - exact).abs() / exact;
        println!(
            "case {case} combined: {:.5}, exact {exact:.5}, rel {rel:.1e}",
            r.combined.top.sigma
        );
        assert!(
            rel <= 1e-2,
            "combined: {} vs exact {exact}",
            r.combined.top.sigma
        );
        for h in 0..2 {
            let gates: Vec<f32> = (0..2).map(|g| if g == h { 0.0 } else { 1.0 }).collect();
            let exact = exact_layer_sigma(&layer, Some(&gates), wrt);
            let got = r.without[h].top.sigma;
            println!("case {case} head {h} gated off: {got:.5}, exact {exact:.5}");
            assert!(
                (got - exact).abs() <= 1e-2 * exact,
                "without {h}: {got} vs {exact}"
            );
            assert_eq!(r.without[h].epsilon_curve.len(), 1);
        }
    }
}

/// Head 0 of four is planted fragile: every query points at two keys with tied, large scores
/// (a very peaked softmax split between them) whose values differ, so moving a query (or one
/// key) along the direction that separates the two keys flips the head's output. The other
/// heads see small random inputs. Head 0 must top every figure.
#[test]
fn planted_fragile_head_is_singled_out() {
    let (s, h, d) = (16usize, 4usize, 16usize);
    let mut rng = rand::rngs::StdRng::seed_from_u64(rand::random());
    let mut small =
        |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-0.5f32..0.5)).collect() };
    let (mut q, mut k, mut v) = (small(s * h * d), small(s * h * d), small(s * h * d));
    let at = |row: usize, c: usize| (row * h) * d + c; // head 0
    for i in 0..s {
        for c in 0..d {
            q[at(i, c)] = if c == 0 { 4.0 } else { 0.0 };
        }
    }
    for c in 0..d {
        k[at(3, c)] = [4.0, 8.0][..].get(c).copied().unwrap_or(0.0);
        k[at(9, c)] = [4.0, -8.0][..].get(c).copied().unwrap_or(0.0);
        v[at(3, c)] = 1.0;
        v[at(9, c)] = -1.0;
    }
    let layer = mha_layer([&q, &k, &v], s, h, DType::Bf16);
    let r = measure(
        &layer,
        &Settings {
            random_samples: 4,
            max_iters: 40,
            ..Settings::default()
        },
    )
    .unwrap();
    for (i, f) in r.heads.iter().enumerate() {
        println!(
            "head {i}: sigma {:.3} (converged {}), random {:.3}, ratio {:.2}, contribution {:+.3}, curve {:?}",
            f.top.sigma, f.top.converged, f.mean_random, f.ratio, r.contribution(i),
            f.epsilon_curve.iter().map(|p| p.amplification / f.top.sigma).collect::<Vec<_>>()
        );
    }
    assert_eq!(r.most_fragile()[0], 0);
    let others = |get: &dyn Fn(usize) -> f64| (1..h).map(get).fold(f64::MIN, f64::max);
    assert!(r.heads[0].top.sigma > 3.0 * others(&|i| r.heads[i].top.sigma));
    assert!(r.heads[0].ratio > others(&|i| r.heads[i].ratio));
    assert!(r.contribution(0) > others(&|i| r.contribution(i)));
    // The tipping point is non-linear: at the largest epsilon the realised gain departs from
    // the linear prediction by more than at the smallest.
    let curve = &r.heads[0].epsilon_curve;
    let dev = |p: &flashmha::diagnostics::robustness::EpsilonPoint| {
        (p.amplification / r.heads[0].top.sigma - 1.0).abs()
    };
    assert!(dev(curve.last().unwrap()) > dev(&curve[0]));
}

/// Bad settings and inputs are typed errors; a budget too small to converge is reported with
/// the last estimate, not an error.
#[test]
fn bad_settings_are_errors_and_non_convergence_is_reported() {
    let (s, d) = (6usize, 8usize);
    let x: Vec<f32> = (0..s * d)
        .map(|i| ((i * 7 % 11) as f32 - 5.0) / 5.0)
        .collect();
    let layer = mha_layer([&x, &x, &x], s, 1, DType::F16);
    for eps in [0.0, -0.1, f64::NAN] {
        let e = measure(
            &layer,
            &Settings {
                epsilons: vec![0.1, eps],
                ..Settings::default()
            },
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                flashmha::Error::InvalidSetting {
                    setting: "epsilon",
                    ..
                }
            ),
            "{e}"
        );
    }
    let no_budget = Settings {
        max_iters: 0,
        ..Settings::default()
    };
    let no_tolerance = Settings {
        rel_tol: 0.0,
        ..Settings::default()
    };
    for bad in [no_budget, no_tolerance] {
        assert!(matches!(
            measure(&layer, &bad),
            Err(flashmha::Error::InvalidSetting { .. })
        ));
    }
    let short = LayerInputs {
        k: &x[..d],
        ..layer
    };
    assert!(matches!(
        measure(&short, &Settings::default()),
        Err(flashmha::Error::DimMismatch { .. })
    ));
    let huge = LayerInputs {
        seqlen_q: usize::MAX,
        ..layer
    };
    assert!(measure(&huge, &Settings::default()).is_err());
    let r = measure(
        &layer,
        &Settings {
            max_iters: 1,
            random_samples: 1,
            epsilons: vec![0.1],
            ..Settings::default()
        },
    )
    .unwrap();
    assert!(!r.heads[0].top.converged);
    assert_eq!(r.heads[0].top.iterations, 1);
    assert!(r.heads[0].top.sigma.is_finite() && r.heads[0].top.sigma > 0.0);
    let rows = flashmha::diagnostics::robustness::robustness_rows(&r);
    assert!(
        rows[0][1].starts_with("not converged in 1: last"),
        "{:?}",
        rows[0]
    );
}

/// `diagnose` on its default generated input (16 heads, d64; robustness is on by default)
/// writes the table and the figure beside the other report files (the acceptance run,
/// ~6 s of CPU); a bad epsilon is a usage error before any emulation (no panic).
#[test]
fn cli_writes_the_robustness_report() {
    use crate::head_similarity::{run_cli, scratch_dir};
    let dir = scratch_dir("diagnose-robustness");
    let out = dir.to_str().unwrap();
    let stdout = run_cli(&["diagnose", "--out", out]);
    assert!(stdout.contains("most fragile heads"), "{stdout}");
    for f in [
        "robustness.csv",
        "robustness.png",
        "robustness.svg",
        "summary.md",
    ] {
        let len = std::fs::metadata(dir.join(f)).map(|m| m.len()).unwrap_or(0);
        assert!(len > 0, "{f} missing or empty");
    }
    let csv = std::fs::read_to_string(dir.join("robustness.csv")).unwrap();
    // Sixteen heads and the combined row, then 4 epsilons x (16 heads + combined + 16 gated-off
    // configurations).
    let rows = |prefix: &str| csv.lines().filter(|l| l.starts_with(prefix)).count();
    assert_eq!(rows("combined,"), 1 + 4, "{csv}");
    assert_eq!(rows("without_"), 16 * 4, "{csv}");
    assert_eq!(rows("15,"), 1 + 4, "{csv}");
    // Every head converged within the default budget.
    assert!(
        csv.lines()
            .skip(1)
            .take(17)
            .all(|l| l.split(',').nth(2) == Some("true")),
        "{csv}"
    );
    std::fs::remove_dir_all(&dir).unwrap();

    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_flashmha"))
        .args([
            "diagnose",
            "--heads",
            "2",
            "--seq",
            "8",
            "--dim",
            "32",
            "--epsilon",
            "0.1,0",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert!(
        stderr.contains("epsilon") && !stderr.contains("panicked"),
        "{stderr}"
    );
}

/// `diagnose --gpu` runs every kernel (forward, similarity, JVP, backward) on the CUDA backend
/// through the same calls as the emulator. The child process sees the machine's own driver (never
/// this binary's emulated one): without a GPU (CI) the run is the backend's typed error before
/// anything runs, and no report folder is written; with one, it writes the robustness files.
#[test]
fn cli_gpu_runs_through_the_cuda_backend_or_is_a_typed_error() {
    use crate::head_similarity::scratch_dir;
    let dir = scratch_dir("diagnose-gpu");
    std::fs::remove_dir_all(&dir).unwrap();
    let out = dir.to_str().unwrap();
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_flashmha"))
        .args([
            "diagnose", "--gpu", "--heads", "2", "--seq", "16", "--dim", "32", "--out", out,
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    if run.status.success() {
        let csv = std::fs::read_to_string(dir.join("robustness.csv")).unwrap();
        assert!(csv.starts_with("head,sigma_max"), "{csv}");
        std::fs::remove_dir_all(&dir).unwrap();
    } else {
        // The backend's errors: no driver, no kernel for the device, or a driver error.
        let typed = ["no CUDA driver", "no cubin or PTX", "CUDA driver error"];
        assert!(typed.iter().any(|t| stderr.contains(t)), "{stderr}");
        assert!(!dir.exists(), "a report was written by a failed GPU run");
    }
}

/// The robustness measurement on the CUDA backend (the emulated driver's devices in CI, the real
/// ones with FLASHMHA_REAL_GPU=1) through the same calls: on sm_80 (and sm_90, which runs the
/// Ampere JVP and backward beside its own forward) the figures agree with the emulator backend's
/// (bit for bit on the emulated sm_80); Turing, which has no JVP kernel, is a typed error.
#[test]
fn robustness_runs_on_the_cuda_backend() {
    use flashmha::KernelTarget;
    let (s, h, d) = (12usize, 2usize, 32usize);
    let mut rng = rand::rngs::StdRng::seed_from_u64(rand::random());
    let mut draw =
        |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect() };
    let (q, k, v) = (draw(s * h * d), draw(s * h * d), draw(s * h * d));
    let layer = mha_layer([&q, &k, &v], s, h, DType::F16);
    let settings = Settings {
        random_samples: 3,
        epsilons: vec![0.05],
        ..Settings::default()
    };
    let on_emulator = measure(&layer, &settings).unwrap();
    let emulated_driver = crate::cuda_support::emulated().is_some();
    for be in crate::cuda_support::backends(|_| true) {
        let target = be.target();
        let r = flashmha::diagnostics::robustness::measure_on(&be, &layer, &settings);
        if target == KernelTarget::Turing {
            let e = r.unwrap_err();
            assert!(
                matches!(e, flashmha::Error::UnsupportedOnTarget { .. }),
                "{e}"
            );
            continue;
        }
        let r = r.unwrap_or_else(|e| panic!("{target:?}: {e}"));
        for (a, b) in r.heads.iter().zip(&on_emulator.heads) {
            let rel = (a.top.sigma - b.top.sigma).abs() / b.top.sigma;
            assert!(
                rel <= 1e-2,
                "{target:?}: {} vs {}",
                a.top.sigma,
                b.top.sigma
            );
        }
        if emulated_driver && target == KernelTarget::Ampere {
            assert_eq!(
                r, on_emulator,
                "the emulated sm_80 device runs the same launches"
            );
        }
    }
}
