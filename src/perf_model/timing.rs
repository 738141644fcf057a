//! Predicted (modelled) forward time from the cycle-approximate SM simulation of the emulator
//! (`emulator/src/timing/`): where [`super::pipes`] divides work by throughput, this replays the
//! instruction traces of the CTAs resident on one SM against latencies, so dependent chains,
//! occupancy and barriers count. The roofline stays the upper bound; this is the estimate.
//!
//! Method (a forward launch of `batch x heads` items, `sq x sk`):
//! 1. Residency: `r` CTAs per SM from ptxas registers and shared memory ([`super::pipes::ctas_per_sm`]).
//! 2. Per-CTA time at that residency: one Q tile is emulated and traced at `8 x block_n` and
//!    `16 x block_n` keys, and causal against its own keys; `r` copies of each trace are
//!    simulated together on one SM. As in [`super::launch_work`], the CTA time is fixed + per KV
//!    tile + per masked tile, the three parts from the three simulations (the per-tile part is
//!    the difference of the first two over 8 tiles). Every CTA of a forward runs the same code
//!    on different data, so the representative subset is one CTA per tile count; the
//!    extrapolation in keys is checked in the tests against a direct simulation.
//! 3. The launch: every CTA's time from its tile counts ([`super::launch_work::tile_counts`]),
//!    CTAs dispatched in grid order to the earliest free of `SMs x r` slots (the hardware's block
//!    scheduler hands a new CTA to a freed slot): the makespan is the kernel's clocks, the waves
//!    and the tail included. CTAs of the tail run at the full-residency time (conservative: a
//!    lone CTA would run faster).
//! 4. DRAM: the SM simulation sees L2 (each SM its share of the L2 bandwidth); the launch time is
//!    the larger of the makespan and the DRAM bytes ([`super::dram_bytes`]) at the DRAM bandwidth.
//!
//! Launches whose CTAs all do the same work (the paged decode's splits, the split combine) go
//! through [`predict_uniform`]: one traced CTA, the residency the launch gives each SM, the
//! makespan of its waves, DRAM as the floor; their traces come from the emulator backend's
//! timing hook (`EmulatorBackend::trace_ctas`), and streamed loads use
//! [`sm_config_streaming`] (an L2 miss: the DRAM latency added).
//!
//! Parameters per GPU: [`sm_config`], each number with its source or marked as an assumption
//! ([`params`] lists them for the bench output).

use super::gpus::{GpuSpec, TensorPath};
use super::launch_work::{one_head, tile_counts};
use super::pipes::{ctas_per_sm, LaunchShape};
use crate::backend::emulator::{dev_buf, encode_bytes, launch_traced, require_clean};
use crate::common::build_info::FwdKernelRow;
use crate::common::error::{EmulatorError, Error, Result};
use crate::emulated::HostInputs;
use crate::emulator::timing::{KernelTrace, PipeParams, SmConfig, SmRun};
use crate::emulator::Device;
use crate::ops::forward::bind::FwdBufs;
use crate::problem::FwdProblem;

/// Where a parameter's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A published figure (the reference, with the table or field).
    Cited(&'static str),
    /// No published figure found for this part: the reason for the value.
    Assumption(&'static str),
}

/// One simulation parameter of one GPU, for the printed table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Param {
    pub name: &'static str,
    pub value: f64,
    pub source: Source,
}

// References (cited by key in [`params`]):
// [ABD22] Abdelkhalik, Arafa, Santhi, Badawy, "Demystifying the Nvidia Ampere Architecture
//   through Microbenchmarking and Instruction-level Analysis", arXiv 2208.11174 (2022): on A100,
//   a dependent add.f32 takes 4 clocks, an independent one 2.
// [ACCEL-TU] Accel-Sim, tested config SM75_RTX2060 (github.com/accel-sim/accel-sim-framework,
//   gpu-simulator/gpgpu-sim/configs/tested-cfgs/SM75_RTX2060/gpgpusim.config): fp/int latency 4,
//   initiation 2; SFU latency 21, initiation 8; shared-memory latency 30; L1 latency 32; L2 ROP
//   latency 194 plus DRAM latency 96; 4 schedulers per SM, `gto` scheduling.
// [PG-T], [PG-CC]: see `gpus.rs` (lanes per clock per SM -> the initiation intervals).

/// The value of `gpu`'s parameter `name` in [`params`] (1 if it has none, which the tests
/// rule out).
fn param_value(gpu: &GpuSpec, name: &str) -> f64 {
    params(gpu)
        .iter()
        .find(|p| p.name == name)
        .map_or(1.0, |p| p.value)
}

/// The simulation parameters of `gpu`'s SM, with the sources of [`params`].
pub fn sm_config(gpu: &GpuSpec) -> SmConfig {
    let v = |name: &str| param_value(gpu, name);
    let p = |lat: &str, ii: &str| PipeParams {
        latency: v(lat) as u32,
        interval: v(ii) as u32,
    };
    SmConfig {
        subpartitions: v("sub-partitions") as u32,
        alu: p("ALU latency", "ALU interval"),
        fma: p("FMA latency", "FMA interval"),
        fp64: p("FP64 latency", "FP64 interval"),
        sfu: p("SFU latency", "SFU interval"),
        conv: p("conversion latency", "conversion interval"),
        mma: p("mma.sync m16n8k16 latency", "mma.sync m16n8k16 interval"),
        mio_interval: v("MIO interval") as u32,
        smem_latency: v("shared load latency") as u32,
        shuffle_latency: v("shuffle latency") as u32,
        l1_latency: v("L1 hit latency") as u32,
        global_latency: v("L2 hit latency") as u32,
        global_bytes_per_clk: v("L2 bytes/clk per SM"),
        barrier_latency: v("barrier latency") as u32,
        sched_window: v("scheduling window") as u32,
    }
}

/// The scheduling window `bench` prints beside strict PTX order (`sched_window` 1): an
/// assumption standing in for ptxas's list scheduling inside the unrolled main loop, whose reach
/// is unknown without the SASS. The two predictions bracket the effect of instruction order.
pub const ALT_SCHED_WINDOW: u32 = 16;

/// [`sm_config`] with a scheduling window of `window` instructions.
pub fn sm_config_window(gpu: &GpuSpec, window: u32) -> SmConfig {
    SmConfig {
        sched_window: window,
        ..sm_config(gpu)
    }
}

/// [`sm_config`] for kernels that stream their global loads from DRAM (the paged decode, the
/// MLA decode, the split combine: each K/V byte is read once, so every load misses L2): the
/// global latency is the L2 hit latency plus the DRAM latency.
pub fn sm_config_streaming(gpu: &GpuSpec) -> SmConfig {
    let c = sm_config(gpu);
    let dram = param_value(gpu, "DRAM latency (added to an L2 miss)");
    SmConfig {
        global_latency: c.global_latency + dram as u32,
        ..c
    }
}

/// Clocks per warp-instruction of a pipe with `lanes` lanes per clock per SM, split over 4
/// sub-partitions.
fn interval(lanes: f64) -> f64 {
    (32.0 * 4.0 / lanes).max(1.0)
}

/// Every simulation parameter of `gpu` with its source.
pub fn params(gpu: &GpuSpec) -> Vec<Param> {
    use Source::{Assumption as A, Cited as C};
    let ampere_or_later = gpu.sm >= 80;
    let (fma_lat_src, alu_lat_src) = if gpu.sm == 80 {
        (
            C("[ABD22]: dependent add.f32 4 clk on A100"),
            A("[ACCEL-TU] int latency 4 (Turing), taken for sm_80"),
        )
    } else if gpu.sm == 75 {
        (C("[ACCEL-TU] fp latency 4"), C("[ACCEL-TU] int latency 4"))
    } else {
        (
            A("[ABD22] A100 value (4) taken for this part"),
            A("[ACCEL-TU] int latency 4 (Turing), taken for this part"),
        )
    };
    let tu = |s| if gpu.sm == 75 { C(s) } else { A(s) };
    // The sm_90a kernels issue wgmma, not mma.sync: on that path the tensor pipe's figures are
    // the wgmma rate's (the simulation times a warp's m16nNk16 quarter of a wgmma at N/8 x the
    // m16n8k16 interval, `emulator/src/timing/sim.rs`).
    let wgmma = gpu.path == TensorPath::Wgmma;
    let mma_k16_per_clk_per_sp = if wgmma {
        gpu.wgmma_flops_per_clk / super::gpus::MMA_FLOPS / 4.0
    } else {
        gpu.mma_per_clk / 4.0
    };
    vec![
        Param {
            name: "sub-partitions",
            value: 4.0,
            source: C("[PG-CC] 4 warp schedulers per SM, 1 warp-instruction/clk each"),
        },
        Param {
            name: "FMA latency",
            value: 4.0,
            source: fma_lat_src,
        },
        Param {
            name: "FMA interval",
            value: interval(gpu.fp32_lanes_per_clk),
            source: C("[PG-T] FP32 lanes per clock per SM / 4 sub-partitions"),
        },
        Param {
            name: "ALU latency",
            value: 4.0,
            source: alu_lat_src,
        },
        Param {
            name: "ALU interval",
            value: interval(gpu.alu_lanes_per_clk),
            source: C("[PG-T] 32-bit integer lanes per clock per SM / 4"),
        },
        Param {
            name: "FP64 latency",
            value: 8.0,
            source: A("not used by the attention kernels; placeholder"),
        },
        Param {
            name: "FP64 interval",
            value: 4.0,
            source: A("not used by the attention kernels; placeholder"),
        },
        Param {
            name: "SFU latency",
            value: 21.0,
            source: tu("[ACCEL-TU] sfu latency 21"),
        },
        Param {
            name: "SFU interval",
            value: interval(gpu.sfu_lanes_per_clk),
            source: C("[PG-T] 16 SFU lanes per clock per SM / 4 (= [ACCEL-TU] initiation 8)"),
        },
        Param {
            name: "conversion latency",
            value: 21.0,
            source: A("conversions on the SFU-rate pipe ([PG-T] 16/clk/SM) with the SFU's latency"),
        },
        Param {
            name: "conversion interval",
            value: interval(16.0),
            source: C("[PG-T] conversions 16 per clock per SM / 4"),
        },
        Param {
            name: "mma.sync m16n8k16 latency",
            value: if ampere_or_later { 32.0 } else { 64.0 },
            source: if wgmma {
                A("wgmma path: clocks from the end of a warp's tensor work to its accumulators; the mma.sync figure (32) taken, no wgmma latency read (Luo et al. 2024, arXiv 2402.13499, is the reference to check it against)")
            } else if ampere_or_later {
                A("no figure read for this session; Sun et al. 2022 (arXiv 2206.02874) measure mma.sync on A100 and are the reference to check it against")
            } else {
                A("[ACCEL-TU] tensor latency 64 (its configs model wmma; taken for mma.sync)")
            },
        },
        Param {
            name: "mma.sync m16n8k16 interval",
            value: (1.0 / mma_k16_per_clk_per_sp).round(),
            source: if wgmma {
                C("wgmma path: gpus.rs wgmma rate ([H100-WP] 4096 FLOP/clk/SM) / 4 sub-partitions, per m16n8k16-equivalent")
            } else {
                C("gpus.rs tensor rate (whitepaper FLOP/clk/SM) / 4 sub-partitions")
            },
        },
        Param {
            name: "MIO interval",
            value: 1.0,
            source: A("one memory instruction per clock per sub-partition; the shared and global servers bound throughput"),
        },
        Param {
            name: "shared load latency",
            value: 30.0,
            source: tu("[ACCEL-TU] smem latency 30"),
        },
        Param {
            name: "shuffle latency",
            value: 30.0,
            source: A("as a shared load (shuffles go through the same crossbar)"),
        },
        Param {
            name: "L1 hit latency",
            value: 32.0,
            source: tu("[ACCEL-TU] L1 latency 32"),
        },
        Param {
            name: "L2 hit latency",
            value: 194.0,
            source: tu("[ACCEL-TU] L2 ROP latency 194"),
        },
        Param {
            name: "DRAM latency (added to an L2 miss)",
            value: 96.0,
            source: tu("[ACCEL-TU] dram latency 96 (after the L2 ROP latency 194)"),
        },
        Param {
            name: "L2 bytes/clk per SM",
            value: gpu.l2_bytes_per_clk / gpu.sms as f64,
            source: A("gpus.rs L2 bandwidth (itself an assumption, [L2]) split evenly over the SMs"),
        },
        Param {
            name: "scheduling window",
            value: 1.0,
            source: A("PTX order: ptxas's instruction scheduling is not modelled (no disassembler in the wheels); 1 = issue in trace order"),
        },
        Param {
            name: "barrier latency",
            value: 20.0,
            source: A("no published figure found"),
        },
    ]
}

/// Traces one CTA (the first Q tile) of `p` on the emulator (inputs uniform in [-1, 1)).
pub fn trace_forward(p: &FwdProblem) -> Result<KernelTrace> {
    let plan = crate::FwdPlan::new_tiled(p.target, p.tile, p.dtype, &p.shape()?)?;
    let host = HostInputs::random(p, 7);
    let mut dev = Device::new();
    let bytes = |v: &[u16]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let e = p.dtype.size();
    let bufs = FwdBufs {
        q: dev_buf(dev.upload(&bytes(&host.q)), p.q.len),
        k: dev_buf(dev.upload(&bytes(&host.k)), p.k.len),
        v: dev_buf(dev.upload(&bytes(&host.v)), p.v.len),
        o: dev_buf(dev.alloc(p.o.len.saturating_mul(e)), p.o.len),
        ..FwdBufs::default()
    };
    let l = plan.bind(&bufs)?.to_launch(encode_bytes)?;
    let (report, trace) = launch_traced(&mut dev, &l, &[[0, 0, 0]])?;
    require_clean(&report)?;
    Ok(trace)
}

fn sim_err(e: crate::emulator::timing::TimingError) -> Error {
    Error::Emulator(EmulatorError::Launch(format!("timing model: {e}")))
}

/// Clocks of `copies` copies of the traced CTA resident together on one SM.
pub fn simulate_copies(trace: &KernelTrace, copies: u32, cfg: &SmConfig) -> Result<u64> {
    let resident = vec![0usize; copies.max(1) as usize];
    Ok(trace.simulate_sm(&resident, cfg).map_err(sim_err)?.cycles)
}

/// Per-CTA clocks of one kernel at one residency: fixed + per KV tile + per masked tile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CtaClocks {
    /// CTAs per SM the clocks were simulated at.
    pub resident: u32,
    pub fixed: f64,
    pub per_tile: f64,
    pub masked_extra: f64,
}

impl CtaClocks {
    /// The three parts from simulated clocks of one CTA at 8 and 16 tiles (`c8`, `c16`, no
    /// mask) and of a causal CTA of `causal_tiles` = (tiles, masked) taking `cc` clocks: the
    /// per-tile part is the difference of the first two over 8 tiles.
    pub fn from_runs(
        resident: u32,
        (c8, c16): (f64, f64),
        (cc, (tiles, masked)): (f64, (u64, u64)),
    ) -> CtaClocks {
        let per_tile = (c16 - c8) / 8.0;
        let fixed = c8 - 8.0 * per_tile;
        CtaClocks {
            resident,
            fixed,
            per_tile,
            masked_extra: (cc - fixed - per_tile * tiles as f64) / masked.max(1) as f64,
        }
    }

    /// Clocks of a CTA that processes `tiles` KV tiles of which `masked` need the mask.
    pub fn of(&self, tiles: u64, masked: u64) -> f64 {
        self.fixed + self.per_tile * tiles as f64 + self.masked_extra * masked as f64
    }
}

/// The three traced one-Q-tile launches of one kernel the per-CTA clocks come from
/// (`8 x block_n` and `16 x block_n` keys, and causal against its own keys).
pub struct CtaTraces {
    bm: usize,
    bn: usize,
    keys8: KernelTrace,
    keys16: KernelTrace,
    causal: KernelTrace,
}

impl CtaTraces {
    /// The traces of a `(block_m, block_n)` kernel: one Q tile against `8 x block_n` and
    /// `16 x block_n` keys, and causal against its own `block_m` keys.
    pub fn new(
        (bm, bn): (usize, usize),
        keys8: KernelTrace,
        keys16: KernelTrace,
        causal: KernelTrace,
    ) -> CtaTraces {
        CtaTraces {
            bm,
            bn,
            keys8,
            keys16,
            causal,
        }
    }

    /// Emulates and traces the three launches of `row`.
    pub fn measure(row: &FwdKernelRow) -> Result<CtaTraces> {
        let (bm, bn) = (row.block_m as usize, row.block_n as usize);
        Ok(CtaTraces::new(
            (bm, bn),
            trace_forward(&one_head(row, bm, 8 * bn, false))?,
            trace_forward(&one_head(row, bm, 16 * bn, false))?,
            trace_forward(&one_head(row, bm, bm, true))?,
        ))
    }

    /// The SM simulation of `resident` copies of the 16-tile CTA (issue and stall breakdown).
    pub fn breakdown(&self, resident: u32, cfg: &SmConfig) -> Result<SmRun> {
        let copies = vec![0usize; resident.max(1) as usize];
        self.keys16.simulate_sm(&copies, cfg).map_err(sim_err)
    }

    /// Per-CTA clocks at `resident` CTAs per SM on `cfg`.
    pub fn clocks(&self, resident: u32, cfg: &SmConfig) -> Result<CtaClocks> {
        let c8 = simulate_copies(&self.keys8, resident, cfg)? as f64;
        let c16 = simulate_copies(&self.keys16, resident, cfg)? as f64;
        let cc = simulate_copies(&self.causal, resident, cfg)? as f64;
        let causal_tiles = tile_counts(self.bm, self.bm, true, self.bm, self.bn)[0];
        Ok(CtaClocks::from_runs(
            resident,
            (c8, c16),
            (cc, causal_tiles),
        ))
    }
}

/// Makespan of CTAs of the given durations dispatched in order to the earliest free of `slots`
/// slots.
pub fn makespan(durations: impl IntoIterator<Item = f64>, slots: usize) -> f64 {
    use std::cmp::Reverse;
    let mut heap: std::collections::BinaryHeap<Reverse<u64>> =
        (0..slots.max(1)).map(|_| Reverse(0u64)).collect();
    let mut end = 0u64;
    for d in durations {
        let Reverse(start) = heap.pop().unwrap_or(Reverse(0));
        // Clocks are integral; durations are rounded up.
        let fin = start + d.max(0.0).ceil() as u64;
        end = end.max(fin);
        heap.push(Reverse(fin));
    }
    end as f64
}

/// A predicted launch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Predicted {
    pub seconds: f64,
    /// The SM simulation's makespan, seconds.
    pub sm_seconds: f64,
    /// DRAM bytes at the DRAM bandwidth, seconds.
    pub dram_seconds: f64,
    pub ctas_per_sm: u32,
}

/// Predicted time of a padded forward launch of `batch_heads` items of `sq x sk` on `gpu`, from
/// the per-CTA clocks `c` (simulated at this launch's residency) and the time its DRAM bytes
/// take at the DRAM bandwidth (the per-pipe model's DRAM pipe).
pub fn predict(
    c: &CtaClocks,
    row: &FwdKernelRow,
    batch_heads: usize,
    (sq, sk): (usize, usize),
    causal: bool,
    gpu: &GpuSpec,
    dram_seconds: f64,
) -> Predicted {
    let counts = tile_counts(sq, sk, causal, row.block_m as usize, row.block_n as usize);
    let durations = (0..batch_heads).flat_map(|_| counts.iter().map(|&(t, m)| c.of(t, m)));
    let slots = c.resident as usize * gpu.sms as usize;
    let sm_seconds = makespan(durations, slots) / gpu.clock_hz;
    Predicted {
        seconds: sm_seconds.max(dram_seconds),
        sm_seconds,
        dram_seconds,
        ctas_per_sm: c.resident,
    }
}

/// Predicted time of a launch of `ctas` CTAs that all run the traced CTA's code on data of the
/// same size (the decode's splits of one cache length, the combine's row blocks): the CTAs are
/// spread evenly over the SMs (the block scheduler fills every SM before doubling up), so an SM
/// holds `min(per_sm_limit, ceil(ctas / SMs))` of them; that many copies of the trace are
/// simulated together and the launch is their makespan over `SMs x resident` slots, or the
/// DRAM time when that is longer.
pub fn predict_uniform(
    trace: &KernelTrace,
    ctas: u64,
    per_sm_limit: u32,
    gpu: &GpuSpec,
    cfg: &SmConfig,
    dram_seconds: f64,
) -> Result<Predicted> {
    let sms = u64::from(gpu.sms.max(1));
    let resident = ctas.div_ceil(sms).clamp(1, u64::from(per_sm_limit.max(1))) as u32;
    let clocks = simulate_copies(trace, resident, cfg)? as f64;
    let slots = resident as usize * sms as usize;
    let sm_seconds = makespan((0..ctas).map(|_| clocks), slots) / gpu.clock_hz;
    Ok(Predicted {
        seconds: sm_seconds.max(dram_seconds),
        sm_seconds,
        dram_seconds,
        ctas_per_sm: resident,
    })
}

/// Whether the SM simulation models the kernels `gpu` runs: the mma.sync kernels and the
/// sm_90a (TMA + wgmma + mbarrier) forward.
pub fn models(gpu: &GpuSpec) -> bool {
    matches!(gpu.path, TensorPath::MmaSync | TensorPath::Wgmma)
}

/// CTAs per SM of `row` on `gpu` (the launch shape of one CTA).
pub fn resident_ctas(row: &FwdKernelRow, gpu: &GpuSpec) -> u32 {
    let shape: LaunchShape = super::launch_work::fwd_launch_shape(row, 1, gpu);
    ctas_per_sm(gpu, &shape).0.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::perf_model::gpus;

    #[test]
    fn makespan_dispatches_to_the_earliest_free_slot() {
        // 2 slots: 5, 3 start at 0; 4 takes the slot free at 3 (ends 7); 1 the slot free at 5.
        assert_eq!(makespan([5.0, 3.0, 4.0, 1.0], 2), 7.0);
        // One wave plus a tail of one.
        assert_eq!(makespan([10.0; 5], 4), 20.0);
        assert_eq!(makespan([], 3), 0.0);
    }

    #[test]
    fn per_tile_extrapolation_matches_a_direct_simulation() {
        // The smallest Ampere kernel of the table: its one-tile traces, and a direct trace at
        // 12 KV tiles, simulated at 2 CTAs per SM on A100: fixed + 12 x per_tile must agree
        // (every KV tile of the main loop runs the same instructions; only the data differ).
        let row = crate::common::build_info::FWD_KERNELS
            .iter()
            .filter(|r| r.target == crate::KernelTarget::Ampere)
            .min_by_key(|r| r.head_dim)
            .expect("an Ampere forward kernel");
        let cfg = sm_config(&gpus::A100);
        let c = CtaTraces::measure(row).unwrap().clocks(2, &cfg).unwrap();
        assert!(c.per_tile > 0.0 && c.fixed > 0.0, "{c:?}");
        let bn = row.block_n as usize;
        let direct = simulate_copies(
            &trace_forward(&one_head(row, row.block_m as usize, 12 * bn, false)).unwrap(),
            2,
            &cfg,
        )
        .unwrap() as f64;
        let est = c.of(12, 0);
        assert!(
            (est - direct).abs() / direct < 0.02,
            "extrapolated {est} vs simulated {direct}"
        );
        // Two resident CTAs share the SM: each takes longer than one alone, less than twice.
        let alone = CtaTraces::measure(row).unwrap().clocks(1, &cfg).unwrap();
        assert!(c.per_tile > alone.per_tile && c.per_tile < 2.0 * alone.per_tile);
    }

    #[test]
    fn every_gpu_has_every_parameter_with_a_source_and_sane_values() {
        for gpu in gpus::ALL {
            let ps = params(gpu);
            let c = sm_config(gpu);
            for p in &ps {
                assert!(
                    p.value > 0.0 && p.value.is_finite(),
                    "{} {}",
                    gpu.name,
                    p.name
                );
                let s = match p.source {
                    Source::Cited(s) | Source::Assumption(s) => s,
                };
                assert!(!s.is_empty());
            }
            // The FMA interval follows the FP32 lanes: 2 clocks on A100 (64 lanes), 1 on sm_86+.
            assert_eq!(c.fma.interval as f64, interval(gpu.fp32_lanes_per_clk));
            // mma.sync: one m16n8k16 per 8 clocks per sub-partition where the SM does 0.5/clk.
            if gpu.mma_per_clk == 0.5 && gpu.path == TensorPath::MmaSync {
                assert_eq!(c.mma.interval, 8);
            }
            assert_eq!(c.subpartitions, 4);
            // Streaming kernels see an L2 miss: the L2 hit latency plus the DRAM latency.
            let st = sm_config_streaming(gpu);
            assert_eq!(st.global_latency, c.global_latency + 96);
            assert_eq!(
                SmConfig {
                    global_latency: c.global_latency,
                    ..st
                },
                c
            );
        }
        assert_eq!(sm_config(&gpus::A100).fma.interval, 2);
        // The sm_90a forward's tensor pipe runs at the wgmma rate: 4096 FLOP/clk/SM is one
        // m16n8k16-equivalent per 4 clocks per sub-partition, twice mma.sync's rate there.
        assert_eq!(sm_config(&gpus::H100_WGMMA).mma.interval, 4);
        assert_eq!(sm_config(&gpus::H100).mma.interval, 8);
    }
}
