//! The backward main kernel's emulator counters per main-loop `mma` (issue 21, item 5), measured
//! by query doubling as FlashAttention-2's figures in the issue were (one head, non-causal, keys
//! fixed, queries doubled: the difference of the two launches is pure main loop), inputs uniform
//! in [-1, 1). `#[ignore]`d (it runs long shapes on the emulator); run with
//! `cargo test --release --test ops backward_counters -- --ignored --nocapture` and record the
//! printed table in bench/results/bwd_counters.txt.

use flashmha::common::dtype::DType;
use flashmha::emulator::Counters;
use flashmha::ops::backward::BWD_KERNELS;
use flashmha::perf_model::backward;

/// The main kernel's counters on one head of sq x sk (f16, random inputs), through the
/// emulation `flashmha bench --backward` uses (src/perf_model/backward.rs).
fn main_kernel_counters(
    head_dim: usize,
    sq: usize,
    sk: usize,
    deterministic: bool,
) -> (Counters, &'static str) {
    let [_, main, _] = backward::emulate(head_dim, sq, sk, deterministic).expect("emulate");
    (main.counters, main.entry)
}

#[test]
#[ignore = "long emulator runs; prints the per-mma table (see the module doc)"]
fn backward_counters_per_mma() {
    let sk = 1024;
    println!(
        "backward main loop per m16n8k16 mma (queries 1024 -> 2048 at {sk} keys, one head, non-causal, f16, uniform [-1, 1))"
    );
    println!("d    entry                  non-tensor  ldmatrix  smem wf  (ideal)  atomics(warp)  global B / mma");
    for row in BWD_KERNELS.iter().filter(|r| r.dtype == DType::F16) {
        let d = row.head_dim as usize;
        let small = backward::emulate(d, 1024, sk, false).expect("emulate");
        let big = backward::emulate(d, 2048, sk, false).expect("emulate");
        let (entry, m) = (big[1].entry, backward::per_mma(&small[1], &big[1]));
        println!(
            "{d:<4} {entry:<22} {:>10.3}  {:>8.3}  {:>7.3}  {:>7.3}  {:>13.3}  {:>14.1}",
            m.non_tensor,
            m.ldmatrix,
            m.smem_wavefronts,
            m.smem_ideal,
            m.warp_atomics,
            m.global_bytes,
        );
    }
}

/// Deterministic mode stores each key block's dQ share into its own slice: its main kernel
/// issues no atomics, where the default mode's does (both checked, on a 3-key-block problem).
#[test]
fn deterministic_mode_issues_no_atomics() {
    let (atomic, _) = main_kernel_counters(64, 40, 150, false);
    let (sliced, _) = main_kernel_counters(64, 40, 150, true);
    assert!(atomic.global_atomic_bytes > 0);
    assert_eq!(sliced.global_atomic_bytes, 0);
    assert_eq!(sliced.mma_instructions, atomic.mma_instructions);
}

/// With a head gate and a sink and both their gradients, deterministic mode issues no atomic in
/// any of its three launches (d(gate) goes through per-warp slots summed in order, d(sink) is an
/// ordered sum): nothing is left whose order a GPU could vary. The default mode's d(gate) adds
/// atomics to the main kernel.
#[test]
fn deterministic_mode_with_gates_and_sinks_issues_no_atomics() {
    let atomics = |det, gated| {
        backward::emulate_with(64, 40, 150, det, gated)
            .expect("emulate")
            .map(|l| l.counters.global_atomic_bytes)
    };
    assert_eq!(atomics(true, true), [0, 0, 0]);
    let (plain, gated) = (atomics(false, false), atomics(false, true));
    assert!(gated[1] > plain[1], "{gated:?} vs {plain:?}");
}
