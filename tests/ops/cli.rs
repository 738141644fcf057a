//! The `flashmha` subcommands end to end (diagnose has its own tests in head_similarity.rs):
//! each runs the real binary and checks what a person would read.

use std::process::Command;

/// [`run`] of a command line split at spaces (no argument here contains one).
fn run_line(line: &str) -> (bool, String) {
    run(&line.split_whitespace().collect::<Vec<_>>())
}

/// With a driver the GPU path of `line` must pass; without one it must fail with the typed
/// error.
fn assert_gpu_path(line: &str) {
    let (ok, text) = run_line(line);
    if crate::cuda_support::driver_in_a_child_process() {
        assert!(ok, "{text}");
    } else {
        assert!(!ok);
        assert!(text.contains("no CUDA driver"), "{text}");
    }
}

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_flashmha"))
        .args(args)
        .output()
        .expect("run flashmha");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn info_lists_every_kernel_with_ptxas_figures_and_the_gpu_state() {
    let (ok, text) = run_line("info");
    assert!(ok, "{text}");
    for row in flashmha::common::build_info::FWD_KERNELS {
        assert!(text.contains(row.entry), "{} missing:\n{text}", row.entry);
    }
    for arch in [
        "sm_80",
        "sm_86",
        "sm_89",
        "sm_90",
        "sm_100",
        "sm_120",
        "sm_90a",
        "compute_90a",
    ] {
        assert!(text.contains(arch), "{arch} missing");
    }
    assert!(text.contains(flashmha::common::build_info::TOOLKIT.nvcc_version));
    assert!(text.contains("GPU: "), "{text}");
}

#[test]
fn check_passes_random_cases_and_fails_cleanly_without_a_gpu() {
    let (ok, text) = run_line("check --cases 4 --max-len 70");
    assert!(ok, "{text}");
    assert!(text.contains("all cases passed"), "{text}");
    assert_eq!(text.matches("┆ pass").count(), 4, "{text}");
    assert_gpu_path("check --gpu --cases 1");
}

#[test]
fn check_hopper_runs_the_sm90a_forward_and_rejects_turing_with_it() {
    let (ok, text) = run_line("check --hopper --cases 3 --max-len 70 --seed 7");
    assert!(ok, "{text}");
    assert!(text.contains("all cases passed"), "{text}");
    // Every case names its target, and the head dims drawn are the sm_90a ones.
    assert_eq!(text.matches("on sm_90a").count(), 3, "{text}");
    // A head dim no kernel serves (not a multiple of 8) is refused with the compiled list.
    let (ok, text) = run_line("check --hopper --head-dim 84 --cases 1");
    assert!(!ok);
    assert!(text.contains("head dim 84"), "{text}");
    let (ok, text) = run_line("check --hopper --turing --cases 1");
    assert!(!ok);
    assert!(text.contains("cannot be used with"), "{text}");
}

#[test]
fn check_decode_passes_random_paged_cases_and_prints_their_errors() {
    let (ok, text) = run_line("check --decode --cases 5 --seed 3");
    assert!(ok, "{text}");
    assert!(text.contains("all cases passed"), "{text}");
    assert_eq!(text.matches("┆ pass").count(), 5, "{text}");
    assert!(text.contains("O max err (tol)"), "{text}");
    // Every case prints a measured O error in scientific notation with its tolerance.
    assert!(text.matches("e-").count() >= 10, "{text}");
    // The case column reads as words, not Rust's Debug of the case's fields.
    for debug in [
        "Some(",
        "None",
        "Count(",
        "FixedKeys",
        "Auto {",
        "AttnOptions",
        "Fp8E",
        "Per",
    ] {
        assert!(!text.contains(debug), "{debug}:\n{text}");
    }
    assert!(text.contains("splits") && text.contains("page "), "{text}");
    assert_gpu_path("check --decode --gpu --cases 1");
}

/// `check --decode --turing` runs the sm_75 decode on every case (f16 over 16-bit pages), bf16
/// there is a typed refusal (what a T4 GPU gets instead of aborting mid-run), a head dim between
/// the compiled ones runs (issue 23) and one no decode kernel serves lists the compiled ones
/// once each, in order.
#[test]
fn check_decode_honours_turing_dtype_and_head_dim() {
    let (ok, text) = run_line("check --decode --turing --cases 3 --seed 5 --max-len 60");
    assert!(ok, "{text}");
    assert_eq!(text.matches("on sm_75").count(), 3, "{text}");
    assert!(!text.contains("bf16"), "{text}");
    let (ok, text) = run_line("check --decode --turing --dtype bf16");
    assert!(!ok);
    assert!(text.contains("bf16 is not supported on sm_75"), "{text}");
    let (ok, text) = run_line("check --decode --head-dim 72 --cases 2 --max-len 40");
    assert!(ok, "{text}");
    let (ok, text) = run_line("check --decode --turing --head-dim 136 --cases 1");
    assert!(!ok, "{text}");
    let (ok, text) = run_line("check --decode --head-dim 84 --cases 1");
    assert!(!ok);
    let list = text
        .split("compiled: [")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .unwrap_or_else(|| panic!("{text}"));
    let dims: Vec<u32> = list.split(',').map(|d| d.trim().parse().unwrap()).collect();
    assert!(dims.windows(2).all(|w| w[0] < w[1]), "{list}");
    assert!(dims.contains(&128), "{list}");
}

/// `check` and `check --decode` are one driver: both honour `--dtype`, `--head-dim`, `--hopper`
/// and `--turing` the same way, print the same error and tolerance columns, and refuse a dtype
/// the kernels asked for do not have before drawing any case.
#[test]
fn check_and_check_decode_honour_the_same_flags() {
    let (ok, text) = run_line("check --dtype bf16 --cases 3 --max-len 40 --seed 2");
    assert!(ok, "{text}");
    assert_eq!(text.matches("┆ bf16 d").count(), 3, "{text}");
    let (ok, text) =
        run_line("check --decode --dtype f16 --head-dim 64 --cases 3 --max-len 40 --seed 2");
    assert!(ok, "{text}");
    assert_eq!(text.matches(" f16 d64 ").count(), 3, "{text}");
    assert!(!text.contains("bf16"), "{text}");
    // Hopper decodes with the Ampere rows: the flag is accepted and every case passes.
    let (ok, text) = run_line("check --decode --hopper --cases 2 --max-len 40 --seed 4");
    assert!(ok, "{text}");
    assert_eq!(text.matches("┆ pass").count(), 2, "{text}");
    for args in [
        &["check", "--turing", "--dtype", "bf16", "--cases", "1"][..],
        &[
            "check", "--decode", "--turing", "--dtype", "bf16", "--cases", "1",
        ][..],
    ] {
        let (ok, text) = run(args);
        assert!(!ok, "{args:?}: {text}");
        assert!(text.contains("bf16 is not supported on sm_75"), "{text}");
        assert!(
            !text.contains("cases, seed"),
            "refused before any case: {text}"
        );
    }
    for decode in [false, true] {
        let mut args = vec!["check", "--cases", "1", "--max-len", "30", "--seed", "9"];
        if decode {
            args.push("--decode");
        }
        let (ok, text) = run(&args);
        assert!(ok, "{text}");
        for column in [
            "O max err (tol)",
            "LSE max err (tol)",
            "entropy max err (tol)",
            "findings",
            "result",
        ] {
            assert!(text.contains(column), "{column}: {text}");
        }
    }
}

/// A head dim between the compiled ones (a multiple of 8) runs on the next compiled kernel in
/// the library, so `check` takes it; random cases draw such dims too.
#[test]
fn check_runs_head_dims_between_the_compiled_ones() {
    let (ok, text) = run_line("check --head-dim 72 --cases 2 --max-len 40");
    assert!(ok, "{text}");
    assert_eq!(text.matches(" d72 ").count(), 2, "{text}");
    let (ok, text) = run_line("check --turing --head-dim 40 --cases 1 --max-len 40");
    assert!(ok, "{text}");
    assert!(
        text.contains(" d40 ") && text.contains("on sm_75"),
        "{text}"
    );
    let compiled: Vec<usize> = flashmha::common::build_info::FWD_KERNELS
        .iter()
        .filter(|r| r.head_dim_v == r.head_dim)
        .map(|r| r.head_dim as usize)
        .collect();
    let (ok, text) = run_line("check --cases 8 --max-len 24 --seed 11");
    assert!(ok, "{text}");
    // " d72 " or, for a (d_qk, d_v) pair (issue 23), " d192v128 ": the d_qk.
    let drawn: Vec<usize> = text
        .split(" d")
        .skip(1)
        .filter_map(|t| t.split(' ').next()?.split('v').next()?.parse().ok())
        .collect();
    assert_eq!(drawn.len(), 8, "{text}");
    assert!(drawn.iter().all(|d| d % 8 == 0 && *d <= 256), "{drawn:?}");
    assert!(drawn.iter().any(|d| !compiled.contains(d)), "{drawn:?}");
}

/// Zero lengths and unknown models are typed CLI errors, not panics.
#[test]
fn zero_sizes_and_unknown_models_are_refused() {
    for (args, flag) in [
        (&["check", "--max-len", "0"][..], "--max-len"),
        (&["check", "--decode", "--max-len", "0"][..], "--max-len"),
        (&["bench", "--seqlens", "0"][..], "--seqlens"),
        (&["bench", "--seqlens", "512,0"][..], "--seqlens"),
        (&["bench", "--head-dims", "0"][..], "--head-dims"),
        (&["bench", "--hidden", "0"][..], "--hidden"),
    ] {
        let (ok, text) = run(args);
        assert!(!ok, "{args:?}: {text}");
        assert!(
            text.contains(&format!("{flag} must be at least 1")),
            "{text}"
        );
        assert!(!text.contains("panicked"), "{text}");
    }
    // Lengths past the kernels' index math are refused before any host buffer is drawn (it
    // was an allocation failure of 1 TB, or a wrapped product).
    for args in [
        &[
            "emulate",
            "--entry",
            "flashmha_fwd_f16_d64",
            "--seqlen-q",
            "4000000000",
        ][..],
        &[
            "emulate",
            "--entry",
            "flashmha_head_similarity_f16",
            "--seqlen-q",
            "18446744073709551615",
        ][..],
    ] {
        let (ok, text) = run(args);
        assert!(!ok, "{args:?}: {text}");
        assert!(text.contains("overflows the kernel's index math"), "{text}");
    }
    for args in [
        &["bench", "--model", "x100"][..],
        &["bench", "--decode", "--model", "x100"][..],
    ] {
        let (ok, text) = run(args);
        assert!(!ok, "{text}");
        assert!(text.contains("unknown --model \"x100\""), "{text}");
        for model in ["a100", "a10", "l4", "h100", "t4", "all"] {
            assert!(text.contains(model), "{model}: {text}");
        }
    }
    // bench --decode honours --head-dims and --model too: nothing to run is an error, not an
    // empty table, and a GPU without the sm_80+ decode kernels has no decode model.
    let (ok, text) = run_line("bench --decode --head-dims 64");
    assert!(!ok, "{text}");
    assert!(text.contains("no configuration"), "{text}");
    let (ok, text) = run_line("bench --decode --model t4");
    assert!(!ok, "{text}");
    assert!(text.contains("sm_80+ decode kernels"), "{text}");
}

#[test]
fn emulate_reports_no_findings_for_a_forward_and_a_head_similarity_kernel() {
    for entry in [
        "flashmha_fwd_f16_d64",
        "flashmha_fwd_sm75_f16_d64",
        "flashmha_fwd_sm90_bf16_d64",
        "flashmha_head_similarity_f16",
    ] {
        let (ok, text) = run(&[
            "emulate",
            "--entry",
            entry,
            "--seqlen-q",
            "70",
            "--seqlen-k",
            "90",
        ]);
        assert!(ok, "{text}");
        assert!(text.contains("none: no out-of-bounds access"), "{text}");
        assert!(text.contains("warp-instructions"), "{text}");
        // The entry asked for is the one that ran (not the sm_80+ kernel of its head dim).
        if entry.starts_with("flashmha_fwd") {
            assert!(text.contains(&format!("{entry}: grid")), "{text}");
        }
    }
    // The named entry is the kernel that runs: the sm_90a d128 row launches 384 threads and
    // issues wgmma and TMA (not the Ampere d128 kernel of the same head dim).
    let (ok, text) = run_line(
        "emulate --entry flashmha_fwd_sm90_bf16_d128 --seqlen-q 70 --seqlen-k 90 --heads 1",
    );
    assert!(ok, "{text}");
    assert!(text.contains("block [384, 1, 1]"), "{text}");
    let count = |name: &str| -> u64 {
        text.lines()
            .find(|l| l.contains(name))
            .and_then(|l| l.split('┆').nth(1))
            .and_then(|v| v.trim().trim_end_matches('│').trim().parse().ok())
            .unwrap_or_else(|| panic!("{name}:\n{text}"))
    };
    assert!(count("wgmma instructions") > 0, "{text}");
    assert!(count("TMA bytes loaded") > 0, "{text}");
    let (ok, text) = run_line("emulate --entry no_such_kernel");
    assert!(!ok);
    assert!(text.contains("no kernel no_such_kernel"), "{text}");
}

#[test]
fn bench_without_a_gpu_prints_counters_and_labels_times_modelled() {
    let (ok, text) = run_line("bench --head-dims 64 --seqlens 130 --tokens 130 --hidden 64");
    assert!(ok, "{text}");
    assert!(text.contains("MODELLED"), "{text}");
    assert!(text.contains("d64 b1 h1 130 causal"), "{text}");
    for pipe in [
        "tensor", "smem", "SFU", "FP32", "ALU", "issue", "L2", "DRAM", "binding",
    ] {
        assert!(text.contains(pipe), "{pipe} missing:\n{text}");
    }
    let (ok, text) = run_line("bench --tiles --head-dims 32");
    assert!(ok, "{text}");
    assert!(text.contains("ldmatrix/mma"), "{text}");
}

/// `bench --gpu` opens the device first (its target picks the kernels: sm_90a on an H100), so
/// without a driver it fails at once with the typed error, before any emulated measurement;
/// with one it times the device's own kernels.
#[test]
fn bench_gpu_opens_the_device_before_measuring() {
    let args = [
        "bench",
        "--gpu",
        "--head-dims",
        "64",
        "--seqlens",
        "130",
        "--tokens",
        "130",
        "--hidden",
        "64",
    ];
    let (ok, text) = run(&args);
    if crate::cuda_support::driver_in_a_child_process() {
        assert!(ok, "{text}");
        assert!(text.contains("CUDA events"), "{text}");
    } else {
        assert!(!ok, "{text}");
        assert!(text.contains("no CUDA driver"), "{text}");
        assert!(!text.contains("extrapolation error"), "{text}");
    }
}

#[test]
fn bench_h100_models_the_wgmma_forward_beside_the_mma_sync_one() {
    let (ok, text) = run_line("bench --model h100 --head-dims 128 --seqlens 256 --tokens 256 --hidden 128 --causal-too false");
    assert!(ok, "{text}");
    assert!(
        text.contains("H100-SXM5 (mma.sync) runs the sm_80+ kernels"),
        "{text}"
    );
    assert!(
        text.contains("H100-SXM5 (wgmma) runs the sm_90a kernels"),
        "{text}"
    );
    assert!(text.contains("wgmma peak 989 TFLOP/s"), "{text}");
    assert!(text.contains("flashmha_fwd_sm90_bf16_d128"), "{text}");
    // Every pipe's time is labelled modelled, in both tables, and the side-by-side table names
    // both kernels of the same configuration.
    for pipe in [
        "tensor", "smem", "SFU", "FP32", "ALU", "issue", "L2", "DRAM",
    ] {
        let col = format!("{pipe} us (modelled)");
        assert_eq!(text.matches(&col).count(), 2, "{col}:\n{text}");
    }
    let side = text
        .lines()
        .find(|l| l.contains("d128 b1 h1 256") && l.contains("flashmha_fwd_sm90_bf16_d128"))
        .unwrap_or_else(|| panic!("no side-by-side row:\n{text}"));
    assert!(side.contains("flashmha_fwd_bf16_d128"), "{side}");
}

#[test]
fn bench_decode_prints_counters_and_every_pipe_modelled() {
    let (ok, text) = run_line("bench --decode");
    assert!(ok, "{text}");
    assert!(text.contains("bytes/compulsory"), "{text}");
    assert!(text.contains("MODELLED microseconds per pipe"), "{text}");
    for pipe in [
        "tensor", "smem", "SFU", "FP32", "ALU", "issue", "L2", "DRAM", "binding", "% DRAM",
    ] {
        assert!(text.contains(pipe), "{pipe} missing:\n{text}");
    }
    // The SM simulation's prediction beside the per-pipe bounds, with the calibration note.
    for col in [
        "predicted us (SM sim)",
        "predicted % DRAM",
        "byte rule",
        "calibration",
    ] {
        assert!(text.contains(col), "{col} missing:\n{text}");
    }
    // 13 configurations (page 16 x sq_new 1/2/4 x GQA 1/4/8, pages 1 and 256 at two corners),
    // each at batch 1 and filling, one table row each (comfy-table, like every other command).
    let modelled = text
        .lines()
        .filter(|l| {
            let first_cell = l.trim_start_matches('│').trim_start();
            first_cell.starts_with(|c: char| c.is_ascii_digit())
                && l.contains(" us")
                && l.contains('%')
        })
        .count();
    assert_eq!(modelled, 26, "{text}");
    assert!(text.contains("╞"), "{text}");
}

/// `check --backward` draws fresh random backward cases (the seed is printed), judges dQ, dK,
/// dV (and d(gate)) against autograd with zero findings, honours `--dtype` / `--head-dim`, and
/// refuses a head dim no backward kernel serves and the GPU / decode flags it does not take.
#[test]
fn check_backward_passes_random_cases_and_refuses_what_it_cannot_run() {
    let (ok, text) = run_line("check --backward --cases 8 --max-len 48");
    assert!(ok, "{text}");
    assert!(text.contains("8 backward cases, seed "), "{text}");
    for col in ["dQ max err", "dK max err", "dV max err", "d(gate) max err"] {
        assert!(text.contains(col), "{text}");
    }
    assert_eq!(text.matches("┆ pass").count(), 8, "{text}");
    assert!(text.contains("all cases passed"), "{text}");
    let (ok, text) = run_line("check --backward --dtype bf16 --head-dim 72 --cases 2 --max-len 40");
    assert!(ok, "{text}");
    assert_eq!(text.matches("bf16 d72 ").count(), 2, "{text}");
    let (ok, text) = run_line("check --backward --head-dim 84 --cases 1");
    assert!(!ok);
    assert!(text.contains("84"), "{text}");
    for flag in ["--gpu", "--decode", "--turing"] {
        let (ok, text) = run(&["check", "--backward", flag, "--cases", "1"]);
        assert!(!ok);
        assert!(text.contains("cannot be used with"), "{flag}: {text}");
    }
}

/// `bench --backward` is an emulator-and-model command: it refuses the flags of the other benches
/// before emulating anything (its output is bench/results/bwd_bench.txt; the figures are tested
/// in src/perf_model/backward.rs).
#[test]
fn bench_backward_refuses_the_other_benches_flags() {
    for flag in ["--gpu", "--decode", "--mla", "--tiles"] {
        let (ok, text) = run(&["bench", "--backward", flag]);
        assert!(!ok);
        assert!(text.contains("cannot be used with"), "{flag}: {text}");
    }
}
