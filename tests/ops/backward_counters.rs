//! The backward main kernel's emulator counters per main-loop `mma` (issue 21, item 5), measured
//! by query doubling as FlashAttention-2's figures in the issue were (one head, non-causal, keys
//! fixed, queries doubled: the difference of the two launches is pure main loop), inputs uniform
//! in [-1, 1). `#[ignore]`d (it runs long shapes on the emulator); run with
//! `cargo test --release --test ops backward_counters -- --ignored --nocapture` and record the
//! printed table in bench/results/bwd_counters.txt.

use crate::emulator_support::f16_bytes;
use flashmha::backend::emulator::{dev_buf, launch};
use flashmha::common::dtype::DType;
use flashmha::emulator::{Counters, Device};
use flashmha::ops::backward::{BwdBufs, BwdPlan, BwdShape, BWD_KERNELS};
use flashmha::perf_model::tile_figures::on_lines_with;
use flashmha::{FwdShape, Heads};
use rand::SeedableRng;

/// The main kernel's counters on one head of sq x sk (f16, random inputs).
fn main_kernel_counters(
    head_dim: usize,
    sq: usize,
    sk: usize,
    deterministic: bool,
) -> (Counters, &'static str) {
    let shape = BwdShape::new(FwdShape::padded(1, sq, sk, Heads::mha(1), head_dim))
        .with_deterministic(deterministic);
    let plan = BwdPlan::new(DType::F16, &shape).expect("plan");
    let mut dev = Device::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut half = |n: usize| f16_bytes(&mut rng, n);
    let x = plan.extents();
    let (q, k, v, o, g) = (
        dev.upload(&half(x.fwd.q)),
        dev.upload(&half(x.fwd.k)),
        dev.upload(&half(x.fwd.v)),
        dev.upload(&half(x.fwd.o)),
        dev.upload(&half(x.d_o)),
    );
    // LSE of a plausible size: ln(sk) (P ~ 1/sk), so exp stays finite.
    let lse: Vec<u8> = (0..x.fwd.row_stats)
        .flat_map(|_| ((sk as f32).ln()).to_le_bytes())
        .collect();
    let lse = dev.upload(&lse);
    let (dq, dk, dv, ws) = (
        dev.alloc(x.dq * 2),
        dev.alloc(x.dk * 2),
        dev.alloc(x.dv * 2),
        dev.alloc(x.workspace * 4),
    );
    let bufs = BwdBufs {
        q: dev_buf(q, x.fwd.q),
        k: dev_buf(k, x.fwd.k),
        v: dev_buf(v, x.fwd.v),
        o: dev_buf(o, x.fwd.o),
        d_o: dev_buf(g, x.d_o),
        lse: dev_buf(lse, x.fwd.row_stats),
        dq: dev_buf(dq, x.dq),
        dk: dev_buf(dk, x.dk),
        dv: dev_buf(dv, x.dv),
        workspace: dev_buf(ws, x.workspace),
        ..Default::default()
    };
    let [dot, main, convert] = plan.bind(&bufs).expect("bind");
    for (l, is_main) in [(dot, false), (main, true), (convert, false)] {
        let report = launch(&mut dev, &l).expect("launch");
        assert!(report.is_clean(), "{:?}", report.findings);
        if is_main {
            return (report.counters, plan.kernel().entry);
        }
    }
    unreachable!()
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
        let (c1, entry) = main_kernel_counters(d, 1024, sk, false);
        let (c2, _) = main_kernel_counters(d, 2048, sk, false);
        let delta = |f: &dyn Fn(&Counters) -> u64| f(&c2).saturating_sub(f(&c1)) as f64;
        let mma = delta(&|c| c.mma_instructions).max(1.0);
        let non_tensor = (delta(&|c| c.warp_instructions) - mma) / mma;
        let ldsm = delta(&|c| on_lines_with(c, entry, "ldmatrix")) / mma;
        let atom =
            delta(&|c| on_lines_with(c, entry, "red.") + on_lines_with(c, entry, "atom.")) / mma;
        println!(
            "{d:<4} {entry:<22} {non_tensor:>10.3}  {ldsm:>8.3}  {:>7.3}  {:>7.3}  {atom:>13.3}  {:>14.1}",
            delta(&|c| c.shared_wavefronts) / mma,
            delta(&|c| c.shared_wavefronts_ideal) / mma,
            delta(&|c| c.global_bytes_requested()) / mma,
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
