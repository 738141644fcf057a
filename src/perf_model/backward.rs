//! The backward's emulator counters and per-pipe model (issue 21 item 5, `flashmha bench
//! --backward`): its three launches (preprocess D = rowsum(dO * O), the main kernel, the dQ
//! conversion) emulated on one f16 head, the main loop's figures per m16n8k16 `mma` by query
//! doubling (the difference of two launches whose query counts differ is pure main loop, the
//! basis of FlashAttention-2's figures in the issue), whole-backward global bytes against
//! compulsory, and the modelled time of each launch on a GPU ([`super::pipes::model`]).

use super::gpus::GpuSpec;
use super::pipes::{self, Modelled, Work};
use super::tile_figures::on_lines_with;
use super::timing::{self as sim, Predicted};
use crate::backend::emulator::{dev_buf, launch, launch_traced};
use crate::common::dtype::DType;
use crate::common::error::Result;
use crate::emulator::timing::KernelTrace;
use crate::emulator::{Counters, Device};
use crate::ops::backward::{BwdBufs, BwdPlan, BwdShape};
use crate::ops::forward::problem::{FwdShape, Heads};
use rand::{Rng, SeedableRng};

/// One emulated launch of the backward: its entry, grid size, threads and dynamic shared
/// memory, and its counters.
#[derive(Debug, Clone)]
pub struct LaunchCounters {
    pub entry: &'static str,
    pub ctas: u64,
    pub threads: u32,
    pub dynamic_smem_bytes: u32,
    pub counters: Counters,
    /// The instruction trace of CTA 0 when the launch was traced ([`emulate_traced`]).
    pub trace: Option<KernelTrace>,
}

/// `n` f16 values uniform in [-1, 1), as little-endian bytes for a device upload (the inputs of
/// every counter measurement here and in the counter tests).
pub fn uniform_f16_bytes(rng: &mut impl Rng, n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|_| half::f16::from_f32(rng.random_range(-1.0f32..1.0)).to_le_bytes())
        .collect()
}

/// The three launches of one f16 backward of a single head, `sq` queries x `sk` keys,
/// non-causal, inputs uniform in [-1, 1) and an LSE of ln(sk) (P ~ 1/sk, so exp stays finite):
/// `[preprocess, main, dQ conversion]`. Errors on any emulator finding.
pub fn emulate(
    head_dim: usize,
    sq: usize,
    sk: usize,
    deterministic: bool,
) -> Result<[LaunchCounters; 3]> {
    emulate_inner(head_dim, sq, sk, deterministic, false, false)
}

/// [`emulate`] (non-deterministic), also tracing CTA 0 of each launch for the SM simulation
/// ([`predict_launch`]).
pub fn emulate_traced(head_dim: usize, sq: usize, sk: usize) -> Result<[LaunchCounters; 3]> {
    emulate_inner(head_dim, sq, sk, false, false, true)
}

/// [`emulate`], with `gated`: a head gate of 0.5 and a sink of 0 given, and their gradients
/// (d(gate), d(sink)) computed too.
pub fn emulate_with(
    head_dim: usize,
    sq: usize,
    sk: usize,
    deterministic: bool,
    gated: bool,
) -> Result<[LaunchCounters; 3]> {
    emulate_inner(head_dim, sq, sk, deterministic, gated, false)
}

fn emulate_inner(
    head_dim: usize,
    sq: usize,
    sk: usize,
    deterministic: bool,
    gated: bool,
    traced: bool,
) -> Result<[LaunchCounters; 3]> {
    let shape = BwdShape::new(FwdShape::padded(1, sq, sk, Heads::mha(1), head_dim))
        .with_deterministic(deterministic);
    let plan = BwdPlan::new(DType::F16, &shape)?;
    let mut dev = Device::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut half = |n: usize| uniform_f16_bytes(&mut rng, n);
    let x = plan.extents();
    // q, o, d_o: [sq, 1, d]; k, v: [sk, 1, d]; lse: [1, sq].
    let (q, k, v, o, g) = (
        dev.upload(&half(x.fwd.q)),
        dev.upload(&half(x.fwd.k)),
        dev.upload(&half(x.fwd.v)),
        dev.upload(&half(x.fwd.o)),
        dev.upload(&half(x.d_o)),
    );
    let lse: Vec<u8> = (0..x.fwd.row_stats)
        .flat_map(|_| (sk as f32).ln().to_le_bytes())
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
    let bufs = if gated {
        let mut one = |v: f32| dev_buf(dev.upload(&v.to_le_bytes()), 1);
        BwdBufs {
            head_gates: one(0.5),
            d_head_gates: one(0.0),
            sinks: one(0.0),
            d_sinks: one(0.0),
            ..bufs
        }
    } else {
        bufs
    };
    let launches = plan.bind(&bufs)?;
    let mut out = Vec::with_capacity(3);
    for l in &launches {
        let (report, trace) = if traced {
            let (r, t) = launch_traced(&mut dev, l, &[[0, 0, 0]])?;
            (r, Some(t))
        } else {
            (launch(&mut dev, l)?, None)
        };
        if let Some(f) = report.findings.first() {
            return Err(crate::common::error::Error::Reference(format!(
                "{}: {} finding(s), first: {f}",
                l.entry,
                report.findings.len()
            )));
        }
        out.push(LaunchCounters {
            entry: l.entry,
            ctas: l.grid.iter().map(|&g| u64::from(g)).product(),
            threads: l.block.iter().product(),
            dynamic_smem_bytes: l.dynamic_smem_bytes,
            counters: report.counters,
            trace,
        });
    }
    Ok(out
        .try_into()
        .unwrap_or_else(|_| unreachable!("bind returns three launches")))
}

/// The main loop per m16n8k16 `mma` (warp-instructions unless stated).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PerMma {
    /// Warp-instructions other than `mma`.
    pub non_tensor: f64,
    pub ldmatrix: f64,
    /// Shared-memory wavefronts (bank conflicts included) and the conflict-free ideal.
    pub smem_wavefronts: f64,
    pub smem_ideal: f64,
    /// Warp-instructions on `red.` / `atom.` lines, and f32 thread atomics (atomic bytes / 4).
    pub warp_atomics: f64,
    pub thread_atomics: f64,
    /// Global bytes requested (loads, stores, atomics).
    pub global_bytes: f64,
}

/// The main kernel's figures per `mma` from its counters at `sq` (`small`) and `2 sq` (`big`)
/// queries, the same keys.
pub fn per_mma(small: &LaunchCounters, big: &LaunchCounters) -> PerMma {
    let entry = big.entry;
    let delta =
        |f: &dyn Fn(&Counters) -> u64| f(&big.counters).saturating_sub(f(&small.counters)) as f64;
    let mma = delta(&|c| c.mma_instructions).max(1.0);
    PerMma {
        non_tensor: (delta(&|c| c.warp_instructions) - mma) / mma,
        ldmatrix: delta(&|c| on_lines_with(c, entry, "ldmatrix")) / mma,
        smem_wavefronts: delta(&|c| c.shared_wavefronts) / mma,
        smem_ideal: delta(&|c| c.shared_wavefronts_ideal) / mma,
        warp_atomics: delta(&|c| {
            on_lines_with(c, entry, "red.") + on_lines_with(c, entry, "atom.")
        }) / mma,
        thread_atomics: delta(&|c| c.global_atomic_bytes) / 4.0 / mma,
        global_bytes: delta(&|c| c.global_bytes_requested()) / mma,
    }
}

/// Compulsory bytes of a one-head f16 backward: read q, k, v, o, dO (2 bytes an element) and
/// the LSE (4 bytes a row) once; write dQ, dK, dV once.
pub fn compulsory_bytes(head_dim: usize, sq: usize, sk: usize) -> f64 {
    let (q_rows, k_rows) = ((sq * head_dim) as f64, (sk * head_dim) as f64);
    2.0 * (3.0 * q_rows + 2.0 * k_rows) + 4.0 * sq as f64 + 2.0 * (q_rows + 2.0 * k_rows)
}

/// Global bytes of a whole backward against compulsory.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WholeBytes {
    /// Every launch's requested bytes / compulsory.
    pub total: f64,
    /// Of which the dQ reduction: the main kernel's atomics plus the conversion's traffic
    /// (bytes).
    pub dq_reduction_bytes: f64,
    pub compulsory: f64,
}

/// [`WholeBytes`] of `launches` ([`emulate`] of `head_dim`, `sq`, `sk`).
pub fn whole_bytes(
    launches: &[LaunchCounters; 3],
    head_dim: usize,
    sq: usize,
    sk: usize,
) -> WholeBytes {
    let compulsory = compulsory_bytes(head_dim, sq, sk);
    let total: u64 = launches
        .iter()
        .map(|l| l.counters.global_bytes_requested())
        .sum();
    WholeBytes {
        total: total as f64 / compulsory,
        dq_reduction_bytes: (launches[1].counters.global_atomic_bytes
            + launches[2].counters.global_bytes_requested()) as f64,
        compulsory,
    }
}

/// Models `l`, emulated on one head, repeated over `heads` (batch x heads) identical heads on
/// `gpu`: its work and grid scaled by `heads`; DRAM moves `dram_bytes_per_head` per head, or
/// with `None` every touched sector (an upper bound: Q and dO re-reads by the key blocks of a
/// head would mostly hit L2).
pub fn model_launch(
    l: &LaunchCounters,
    heads: usize,
    gpu: &GpuSpec,
    dram_bytes_per_head: Option<f64>,
) -> Modelled {
    let work = Work::from_counters(&l.counters).scaled(heads as f64);
    let shape = super::decode::launch_shape(
        l.entry,
        l.ctas * heads as u64,
        l.threads,
        l.dynamic_smem_bytes,
        gpu,
    );
    let dram = dram_bytes_per_head.map_or(work.global_sectors * 32.0, |b| b * heads as f64);
    pipes::model(&work, gpu, &shape, dram)
}

/// The SM simulation's prediction of `l` (emulated on one head with CTA 0 traced, see
/// [`emulate_traced`]) repeated over `heads` identical heads on `gpu` at scheduling window
/// `window`, with `dram_seconds` as the floor (a per-pipe model's DRAM time). Every CTA of a
/// non-causal backward launch does the same work (the main kernel: one key block against every
/// query; the row kernels: the same rows per warp), so the launch is
/// [`sim::predict_uniform`] of CTA 0 over `ctas x heads` CTAs. Q, dO and the dQ accumulator
/// that the key blocks of a head re-read are L2 hits (the L2 configuration). `None`: not traced,
/// or the CTA does not fit `gpu`'s SM.
pub fn predict_launch(
    l: &LaunchCounters,
    heads: usize,
    gpu: &GpuSpec,
    window: u32,
    dram_seconds: f64,
) -> Result<Option<Predicted>> {
    let Some(trace) = &l.trace else {
        return Ok(None);
    };
    let ctas = l.ctas * heads as u64;
    let shape = super::decode::launch_shape(l.entry, ctas, l.threads, l.dynamic_smem_bytes, gpu);
    let (limit, _) = pipes::ctas_per_sm(gpu, &shape);
    if limit == 0 {
        return Ok(None);
    }
    let cfg = sim::sm_config_window(gpu, window);
    Ok(Some(sim::predict_uniform(
        trace,
        ctas,
        limit,
        gpu,
        &cfg,
        dram_seconds,
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compulsory_bytes_count_each_tensor_once() {
        // q, o, dO, dQ: 3 x 2 elements of 2 bytes; k, v, dK, dV: 4 x 1 x 2 bytes... at d 1.
        assert_eq!(
            compulsory_bytes(1, 3, 5),
            2.0 * (3.0 * 3.0 + 2.0 * 5.0) + 12.0 + 2.0 * (3.0 + 10.0)
        );
    }

    /// A traced launch is predicted from its CTA 0: more heads take longer (more waves), never
    /// beat the DRAM floor, and an untraced launch has no prediction.
    #[test]
    fn traced_launches_are_predicted() {
        let gpu = &crate::perf_model::gpus::A100;
        let traced = emulate_traced(64, 128, 256).expect("emulate");
        let plain = emulate(64, 128, 256, false).expect("emulate");
        assert!(predict_launch(&plain[1], 1, gpu, 1, 0.0).unwrap().is_none());
        for l in &traced {
            let one = predict_launch(l, 1, gpu, 1, 0.0).unwrap().expect("fits");
            let many = predict_launch(l, 4096, gpu, 1, 0.0).unwrap().expect("fits");
            assert!(
                one.sm_seconds > 0.0 && many.seconds > one.seconds,
                "{}",
                l.entry
            );
            let floor = predict_launch(l, 1, gpu, 1, 1.0).unwrap().expect("fits");
            assert_eq!(floor.seconds, 1.0);
        }
    }

    /// On a small problem (3 key blocks, queries doubled 40 -> 80): the default mode's main loop
    /// issues dQ atomics, deterministic mode none; wavefronts are never below the ideal; the
    /// whole backward moves more than compulsory and the dQ reduction is part of it.
    #[test]
    fn per_mma_figures_of_a_small_problem_are_consistent() {
        for det in [false, true] {
            let small = emulate(64, 40, 150, det).expect("emulate");
            let big = emulate(64, 80, 150, det).expect("emulate");
            let m = per_mma(&small[1], &big[1]);
            assert!(
                m.non_tensor > 0.0 && m.ldmatrix > 0.0 && m.global_bytes > 0.0,
                "{m:?}"
            );
            assert!(
                m.smem_wavefronts >= m.smem_ideal && m.smem_ideal > 0.0,
                "{m:?}"
            );
            assert_eq!(m.warp_atomics > 0.0, !det, "{m:?}");
            assert_eq!(m.thread_atomics > 0.0, !det, "{m:?}");
            let w = whole_bytes(&big, 64, 80, 150);
            assert!(w.total > 1.0 && w.dq_reduction_bytes > 0.0, "{w:?}");
            let gpu = &crate::perf_model::gpus::A100;
            let upper = model_launch(&big[1], 16, gpu, None);
            let lower = model_launch(&big[1], 16, gpu, Some(w.compulsory));
            assert!(lower.seconds() <= upper.seconds() && lower.seconds() > 0.0);
        }
    }
}
