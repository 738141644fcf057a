//! The per-pipe model: emulator counters (what the kernel issues) + a [`GpuSpec`] (what each
//! pipe retires per clock) + occupancy and wave quantisation -> a modelled time per pipe. The
//! binding pipe is the slowest; every pipe is reported. No latency model: a pipe's time is its
//! work at full rate, so the figures are lower bounds that assume enough warps to hide latency.

use super::gpus::GpuSpec;
use crate::emulator::Class;

/// The work of one launch in the units the pipes consume (totals over the grid).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Work {
    pub warp_instructions: f64,
    /// `mma.sync` work in m16n8k16 equivalents (its FLOPs / 4096).
    pub mma: f64,
    /// `wgmma.mma_async` FLOPs (charged at the GPU's wgmma rate, not as `mma`).
    pub wgmma_flops: f64,
    pub shared_wavefronts: f64,
    /// Bytes of the shared-memory operands `wgmma` reads through its descriptors.
    pub wgmma_smem_bytes: f64,
    /// Bytes TMA / bulk copies move into (loads) or out of (stores) shared memory.
    pub tma_smem_bytes: f64,
    /// SFU / XU class warp-instructions (ex2, lg2, rcp, tanh) plus conversions.
    pub sfu: f64,
    pub fp32: f64,
    /// Integer, logical, compare, FP16-pair and "other" warp-instructions.
    pub alu: f64,
    /// Warp shuffles (32 lanes per clock per SM, [PG-T]).
    pub shuffle: f64,
    /// 32-byte sectors the kernel's global accesses touch.
    pub global_sectors: f64,
}

impl Work {
    pub fn from_counters(c: &crate::emulator::Counters) -> Work {
        let k = |cl: Class| c.class(cl) as f64;
        Work {
            warp_instructions: c.warp_instructions as f64,
            // In m16n8k16 equivalents, so Turing's two m16n8k8 per k16 step count as one. The
            // tensor FLOPs include wgmma's, which run at their own rate.
            mma: c.tensor_flops.saturating_sub(c.wgmma_flops) as f64 / super::gpus::MMA_FLOPS,
            wgmma_flops: c.wgmma_flops as f64,
            shared_wavefronts: c.shared_wavefronts as f64,
            wgmma_smem_bytes: c.wgmma_smem_bytes as f64,
            tma_smem_bytes: (c.tma_load_bytes + c.tma_store_bytes) as f64,
            sfu: k(Class::Sfu) + k(Class::Conversion),
            fp32: k(Class::Fp32),
            alu: k(Class::Int) + k(Class::Fp16) + k(Class::Other),
            shuffle: k(Class::Shuffle),
            global_sectors: c.global_sectors as f64,
        }
    }
    /// self + w * other (for linear extrapolation).
    pub fn add_scaled(&self, o: &Work, w: f64) -> Work {
        Work {
            warp_instructions: self.warp_instructions + w * o.warp_instructions,
            mma: self.mma + w * o.mma,
            wgmma_flops: self.wgmma_flops + w * o.wgmma_flops,
            shared_wavefronts: self.shared_wavefronts + w * o.shared_wavefronts,
            wgmma_smem_bytes: self.wgmma_smem_bytes + w * o.wgmma_smem_bytes,
            tma_smem_bytes: self.tma_smem_bytes + w * o.tma_smem_bytes,
            sfu: self.sfu + w * o.sfu,
            fp32: self.fp32 + w * o.fp32,
            alu: self.alu + w * o.alu,
            shuffle: self.shuffle + w * o.shuffle,
            global_sectors: self.global_sectors + w * o.global_sectors,
        }
    }
    pub fn scaled(&self, w: f64) -> Work {
        Work::default().add_scaled(self, w)
    }
    /// All tensor FLOPs, mma.sync and wgmma.
    pub fn tensor_flops(&self) -> f64 {
        self.mma * super::gpus::MMA_FLOPS + self.wgmma_flops
    }
    /// Shared-memory traffic in 128-byte wavefronts: the wavefronts of ordinary accesses
    /// (bank conflicts included) plus the wgmma operand and TMA bytes, which move whole
    /// 128-byte lines (the 128B swizzle keeps them conflict-free).
    pub fn smem_wavefronts_total(&self) -> f64 {
        self.shared_wavefronts + (self.wgmma_smem_bytes + self.tma_smem_bytes) / 128.0
    }
}

/// The launch shape the occupancy needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LaunchShape {
    pub ctas: u64,
    pub threads_per_cta: u32,
    pub regs_per_thread: u32,
    pub smem_per_cta: u32,
    /// ptxas spill bytes (stores + loads) per thread per main-loop tile, an upper bound of the
    /// local traffic (0 for every kernel we ship).
    pub spill_bytes_per_thread: u32,
    /// Registers the CTA's warps hold after their `setmaxnreg` (see [`super::registers`]); 0
    /// when the kernel does not use it. Does not change occupancy (the pool is the launch
    /// allocation), but must fit in it.
    pub setmaxnreg_regs_per_cta: u32,
}

/// Register allocation granularity: 256 registers per warp ([PG-CC], "register allocation unit
/// size 256").
const REG_ALLOC_UNIT: u32 = 256;

/// Registers a CTA of `s` is allocated at launch: ptxas's count per thread, rounded up per warp
/// to the allocation unit. With `setmaxnreg` this is the CTA's pool, which the warps then
/// redistribute among themselves (PTX ISA "setmaxnreg": "a pool of available registers is
/// maintained per-CTA").
pub fn regs_per_cta(s: &LaunchShape) -> u32 {
    let warps = s.threads_per_cta.div_ceil(32);
    let regs_per_warp = (s.regs_per_thread * 32).div_ceil(REG_ALLOC_UNIT) * REG_ALLOC_UNIT;
    regs_per_warp * warps
}

/// CTAs resident per SM, and which limit binds.
pub fn ctas_per_sm(gpu: &GpuSpec, s: &LaunchShape) -> (u32, &'static str) {
    let by_regs = gpu.regs_per_sm / regs_per_cta(s).max(1);
    let by_smem = gpu.smem_per_sm / (s.smem_per_cta + gpu.smem_reserved_per_cta);
    let by_threads = gpu.max_threads_per_sm / s.threads_per_cta.max(1);
    let mut best = (gpu.max_ctas_per_sm, "CTA slots");
    for (n, why) in [
        (by_regs, "registers"),
        (by_smem, "shared memory"),
        (by_threads, "threads"),
    ] {
        if n < best.0 {
            best = (n, why);
        }
    }
    best
}

/// The pipes, in the order they are printed.
pub const PIPES: [&str; 8] = [
    "tensor", "smem", "SFU", "FP32", "ALU", "issue", "L2", "DRAM",
];

/// A modelled launch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Modelled {
    /// Seconds per pipe, in [`PIPES`] order.
    pub pipe_s: [f64; 8],
    pub ctas_per_sm: u32,
    pub occupancy_limit: &'static str,
    /// Useful fraction of the SM-slots over all waves (1 = no tail).
    pub wave_efficiency: f64,
    pub waves: u64,
}

impl Modelled {
    pub fn seconds(&self) -> f64 {
        self.pipe_s.iter().cloned().fold(0.0, f64::max)
    }
    pub fn binding(&self) -> &'static str {
        let t = self.seconds();
        PIPES[self.pipe_s.iter().position(|&p| p == t).unwrap_or(0)]
    }
    /// Tensor time / modelled time: the fraction of the tensor peak of the work's own
    /// instruction family reached.
    pub fn tensor_fraction(&self) -> f64 {
        self.pipe_s[0] / self.seconds()
    }
}

/// Models `work` of a launch of `shape` on `gpu`, moving `dram_bytes` to and from DRAM.
pub fn model(work: &Work, gpu: &GpuSpec, shape: &LaunchShape, dram_bytes: f64) -> Modelled {
    let (per_sm, limit) = ctas_per_sm(gpu, shape);
    if shape.setmaxnreg_regs_per_cta > regs_per_cta(shape) {
        // The consumers' setmaxnreg.inc waits for registers the pool never holds: the launch
        // does not finish (see super::registers).
        return Modelled {
            pipe_s: [f64::INFINITY; 8],
            ctas_per_sm: per_sm,
            occupancy_limit: "setmaxnreg exceeds the CTA's register pool",
            wave_efficiency: 0.0,
            waves: 0,
        };
    }
    let per_sm = per_sm.max(1);
    let slots = per_sm as u64 * gpu.sms as u64;
    let waves = shape.ctas.div_ceil(slots).max(1);
    // In one partial wave the CTAs spread over the SMs first (one per SM before any SM gets a
    // second), so the busiest SM runs ceil(ctas / sms) of them, not a full `per_sm`: a grid of
    // 16 CTAs keeps 16 SMs busy. Over several waves the tail wave is what quantises.
    let wave_efficiency = if waves == 1 {
        let sms = u64::from(gpu.sms);
        shape.ctas as f64 / (sms * shape.ctas.div_ceil(sms).max(1)) as f64
    } else {
        shape.ctas as f64 / (waves * slots) as f64
    };
    // SM-side pipes: the busiest SM does 1 / wave_efficiency of its even share.
    let sm_clk = gpu.sms as f64 * gpu.clock_hz * wave_efficiency;
    let lanes = |warp_instr: f64, lanes_per_clk: f64| warp_instr * 32.0 / lanes_per_clk / sm_clk;
    let spill_bytes =
        shape.spill_bytes_per_thread as f64 * shape.threads_per_cta as f64 * shape.ctas as f64;
    let l2_bytes = work.global_sectors * 32.0 + spill_bytes;
    Modelled {
        pipe_s: [
            // mma.sync and wgmma share the tensor cores, each at its own rate; a GPU without
            // wgmma cannot run wgmma work at all.
            work.mma / gpu.mma_per_clk / sm_clk
                + if work.wgmma_flops > 0.0 {
                    work.wgmma_flops / gpu.wgmma_flops_per_clk / sm_clk
                } else {
                    0.0
                },
            work.smem_wavefronts_total() / gpu.smem_wavefronts_per_clk / sm_clk,
            lanes(work.sfu, gpu.sfu_lanes_per_clk),
            lanes(work.fp32, gpu.fp32_lanes_per_clk),
            lanes(work.alu, gpu.alu_lanes_per_clk) + lanes(work.shuffle, 32.0),
            work.warp_instructions / gpu.issue_per_clk / sm_clk,
            // Each SM reaches L2 through its own link (the per-SM share of the L2 bandwidth):
            // a grid that leaves SMs idle cannot draw the whole L2 bandwidth.
            l2_bytes / (gpu.l2_bytes_per_clk * gpu.clock_hz * wave_efficiency),
            (dram_bytes + spill_bytes) / gpu.dram_bytes_per_s,
        ],
        ctas_per_sm: per_sm,
        occupancy_limit: limit,
        wave_efficiency,
        waves,
    }
}

#[cfg(test)]
mod tests {
    use super::super::gpus::{A10, A100, H100, H100_WGMMA};
    use super::*;

    fn shape(ctas: u64, regs: u32, smem: u32) -> LaunchShape {
        LaunchShape {
            ctas,
            threads_per_cta: 128,
            regs_per_thread: regs,
            smem_per_cta: smem,
            spill_bytes_per_thread: 0,
            setmaxnreg_regs_per_cta: 0,
        }
    }

    #[test]
    fn occupancy_takes_the_tightest_limit() {
        // 255 regs -> 8192 per warp (256-register units), 4 warps: 2 CTAs by registers; 96 KiB
        // + 1 KiB reserved: 1 CTA in A100's 164 KiB.
        assert_eq!(
            ctas_per_sm(&A100, &shape(1, 255, 98304)),
            (1, "shared memory")
        );
        assert_eq!(ctas_per_sm(&A100, &shape(1, 255, 40960)), (2, "registers"));
        assert_eq!(ctas_per_sm(&A100, &shape(1, 64, 0)), (8, "registers"));
        assert_eq!(ctas_per_sm(&A100, &shape(1, 16, 0)), (16, "threads"));
        // sm_86: 100 KiB per SM: 48 KiB tiles fit twice.
        assert_eq!(
            ctas_per_sm(&A10, &shape(1, 128, 49152)),
            (2, "shared memory")
        );
    }

    #[test]
    fn each_pipe_is_its_work_over_its_rate_and_the_slowest_binds() {
        let w = Work {
            mma: 1e6,
            shared_wavefronts: 1.5e6,
            sfu: 1e5,
            warp_instructions: 4e6,
            ..Default::default()
        };
        // One full wave on A100 (108 SMs x 1 CTA): no quantisation loss.
        let m = model(&w, &A100, &shape(108, 255, 98304), 0.0);
        let sm_clk = 108.0 * 1410e6;
        assert!((m.pipe_s[0] - 1e6 / 0.5 / sm_clk).abs() < 1e-15);
        assert!((m.pipe_s[1] - 1.5e6 / sm_clk).abs() < 1e-15);
        assert!((m.pipe_s[2] - 1e5 * 32.0 / 16.0 / sm_clk).abs() < 1e-15);
        assert!((m.pipe_s[5] - 4e6 / 4.0 / sm_clk).abs() < 1e-15);
        assert_eq!(m.binding(), "tensor");
        assert!((m.tensor_fraction() - 1.0).abs() < 1e-12);
        // 109 CTAs need a second wave in which one SM works: every SM-side pipe doubles-ish.
        let tail = model(&w, &A100, &shape(109, 255, 98304), 0.0);
        assert_eq!(tail.waves, 2);
        assert!((tail.wave_efficiency - 109.0 / 216.0).abs() < 1e-12);
        assert!(tail.pipe_s[0] > 1.9 * m.pipe_s[0]);
        // 16 CTAs in one wave run on 16 SMs, one each: the busiest SM does 1/16 of the work,
        // and only 16 SM-to-L2 links carry the traffic.
        let small = model(&w, &A100, &shape(16, 255, 98304), 0.0);
        assert_eq!(small.waves, 1);
        assert!((small.wave_efficiency - 16.0 / 108.0).abs() < 1e-12);
        assert!((small.pipe_s[0] - 1e6 / 16.0 / 0.5 / 1410e6).abs() < 1e-15);
        // A DRAM-heavy launch binds on DRAM.
        let d = model(&Work::default(), &A100, &shape(108, 255, 98304), 2039e9);
        assert_eq!(d.binding(), "DRAM");
    }

    /// The sm_90a forward's launch: 384 threads (one producer and two consumer warpgroups) at
    /// ptxas's 168 registers, `smem` bytes of dynamic shared memory, the FA3 register split.
    fn sm90(ctas: u64, smem: u32) -> LaunchShape {
        LaunchShape {
            ctas,
            threads_per_cta: 384,
            regs_per_thread: 168,
            smem_per_cta: smem,
            spill_bytes_per_thread: 0,
            setmaxnreg_regs_per_cta: 128 * 24 + 256 * 240,
        }
    }

    #[test]
    fn sm90_tiles_hold_one_cta_per_sm() {
        // kernels/kernel_table.h FLASHMHA_FWD_KERNELS_SM90: d128 128x128 (163968 B) and d256
        // 128x64 (196736 B) fit 228 KiB once with the 1 KiB reservation, and the 168 x 384 =
        // 64512 registers of one CTA leave no room for a second (65536 per SM). d64 (82048 B)
        // would fit twice by shared memory, but registers still allow one.
        for smem in [82048, 163968, 196736] {
            assert_eq!(
                ctas_per_sm(&H100_WGMMA, &sm90(1, smem)),
                (1, "registers"),
                "{smem}"
            );
        }
        let by_smem_only = LaunchShape {
            regs_per_thread: 80,
            ..sm90(1, 163968)
        };
        assert_eq!(
            ctas_per_sm(&H100_WGMMA, &by_smem_only),
            (1, "shared memory")
        );
        // The largest opt-in allocation (227 KiB = 232448 B) plus the reservation is exactly
        // the SM's 228 KiB.
        let largest = LaunchShape {
            regs_per_thread: 80,
            ..sm90(1, 232448)
        };
        assert_eq!(ctas_per_sm(&H100_WGMMA, &largest).0, 1);
        // A split asking for more than the pool never finishes: every pipe is infinite.
        let greedy = LaunchShape {
            setmaxnreg_regs_per_cta: 128 * 40 + 256 * 240,
            ..sm90(132, 163968)
        };
        let m = model(&Work::default(), &H100_WGMMA, &greedy, 0.0);
        assert!(m.seconds().is_infinite());
        assert_eq!(
            m.occupancy_limit,
            "setmaxnreg exceeds the CTA's register pool"
        );
    }

    #[test]
    fn wgmma_is_charged_at_the_wgmma_rate_and_its_operands_on_shared_memory() {
        // One KV tile of the d128 128x128 sm_90a tile, per CTA, counted by hand: each of the two
        // consumer warpgroups issues 8 SS m64n128k16 for S = Q K^T (A = Q 64x16 and B = K
        // 128x16 from shared memory: 2048 + 4096 B) and 8 RS m64n128k16 for O += P V (B = V
        // 16x128: 4096 B); the producer's TMA writes the K and V tiles (2 x 128 x 128 x 2 B).
        let wgmma = 2.0 * 16.0;
        let w = Work {
            wgmma_flops: wgmma * 2.0 * 64.0 * 128.0 * 16.0,
            wgmma_smem_bytes: 2.0 * (8.0 * (2048.0 + 4096.0) + 8.0 * 4096.0),
            tma_smem_bytes: 2.0 * 128.0 * 128.0 * 2.0,
            // Four warp-instructions (one per warp) for each warpgroup wgmma.
            warp_instructions: 4.0 * wgmma,
            ..Default::default()
        };
        assert_eq!(w.tensor_flops(), 4.0 * 128.0 * 128.0 * 128.0);
        // 132 CTAs, one tile each: one full wave on H100, each SM doing one CTA's tile.
        let m = model(&w.scaled(132.0), &H100_WGMMA, &sm90(132, 163968), 0.0);
        let clk = 1830e6;
        // 8.4 MFLOP at 4096 FLOP/clk = 2048 clk; 229376 B at 128 B/clk = 1792 clk; 128
        // warp-instructions at 4 per clk = 32 clk.
        assert!((m.pipe_s[0] * clk - 2048.0).abs() < 1e-6);
        assert!((m.pipe_s[1] * clk - 1792.0).abs() < 1e-6);
        assert!((m.pipe_s[5] * clk - 32.0).abs() < 1e-6);
        assert_eq!(m.binding(), "tensor");
        // The same FLOPs as mma.sync on the H100 mma.sync entry take twice as long.
        let as_mma = Work {
            mma: w.wgmma_flops / super::super::gpus::MMA_FLOPS,
            ..Default::default()
        };
        let mm = model(&as_mma.scaled(132.0), &H100, &sm90(132, 163968), 0.0);
        assert!((mm.pipe_s[0] / m.pipe_s[0] - 2.0).abs() < 1e-12);
        // A GPU without wgmma cannot run the work.
        assert!(model(&w, &A100, &sm90(132, 163968), 0.0).pipe_s[0].is_infinite());
    }

    #[test]
    fn counters_split_mma_sync_from_wgmma_work() {
        let c = crate::emulator::Counters {
            tensor_flops: 3 * 4096 + 262144,
            wgmma_flops: 262144,
            wgmma_smem_bytes: 6144,
            tma_load_bytes: 32768,
            tma_store_bytes: 1024,
            shared_wavefronts: 10,
            ..Default::default()
        };
        let w = Work::from_counters(&c);
        assert_eq!(w.mma, 3.0);
        assert_eq!(w.wgmma_flops, 262144.0);
        assert_eq!(w.tma_smem_bytes, 33792.0);
        assert_eq!(w.smem_wavefronts_total(), 10.0 + (6144.0 + 33792.0) / 128.0);
        assert_eq!(w.tensor_flops(), c.tensor_flops as f64);
    }
}
