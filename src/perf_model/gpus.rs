//! Per-SM, per-clock throughputs of the GPUs the model knows, each with its source. Figures are
//! dense (no sparsity), at the boost clock. Tensor work is charged per instruction family: the
//! `mma.sync` FLOPs at [`GpuSpec::mma_per_clk`], the `wgmma` FLOPs at
//! [`GpuSpec::wgmma_flops_per_clk`] (sm_90 only). H100 has two entries, one per kernel family
//! it can run ([`TensorPath`]): [`H100`] for the Ampere (mma.sync) kernels and [`H100_WGMMA`]
//! for the sm_90a (TMA + wgmma) forward; the hardware figures are the same.
//!
//! Sources (cited per field below):
//! - [A100-WP] NVIDIA A100 Tensor Core GPU Architecture whitepaper (2020): 108 SMs, 1410 MHz
//!   boost, 1024 dense FP16/BF16 FMA per clock per SM with FP32 accumulate (312 TFLOP/s),
//!   40 MB L2, 64 FP32 lanes per SM.
//! - [A100-DS] NVIDIA A100 80GB datasheet: 2039 GB/s HBM2e (SXM4 80 GB).
//! - [A10-DS] NVIDIA A10 datasheet: 125 TFLOP/s FP16 tensor (dense), 600 GB/s GDDR6; 72 SMs,
//!   1695 MHz boost (GA102: [GA102-WP] NVIDIA Ampere GA102 GPU Architecture whitepaper, 6 MB L2,
//!   128 FP32 lanes per SM).
//! - [L4-DS] NVIDIA L4 datasheet: 121 TFLOP/s FP16 tensor (dense; 242 with sparsity), 300 GB/s
//!   GDDR6; 58 SMs, 2040 MHz boost, 48 MB L2 ([AD102-WP] NVIDIA Ada GPU Architecture whitepaper:
//!   128 FP32 lanes per SM).
//! - [H100-WP] NVIDIA H100 Tensor Core GPU Architecture whitepaper (2022,
//!   resources.nvidia.com/en-us-tensor-core/gtc22-whitepaper-hopper), table "NVIDIA H100 SXM5
//!   compared to A100": H100 SXM5 132 SMs, 1830 MHz boost for the tensor-core figures,
//!   989.4 TFLOP/s peak FP16 and BF16 Tensor with FP32 accumulate (dense; 1978.9 with
//!   sparsity), i.e. 989.4e12 / (132 x 1830e6) = 4096 FLOP/clk/SM = 4 tensor cores x 512 FMA;
//!   50 MB L2, 3350 GB/s HBM3, 128 FP32 lanes per SM, 228 KB shared memory per SM. The same
//!   figures in [H100-DS] NVIDIA H100 Tensor Core GPU datasheet (SXM: FP16 / BF16 Tensor Core
//!   1,979 TFLOP/s with sparsity, dense half of it). Only `wgmma` reaches this rate (the
//!   FlashAttention-3 paper, Shah et al. 2024, arXiv 2407.08608, section 2, which puts the
//!   older `mma.sync` at about two thirds of it); our sm_90a forward issues `wgmma`.
//! - [SMEM-BW] Shared-memory bandwidth, 128 B/clk/SM on sm_80 and sm_90: [PG-CC] below (32
//!   banks of 4 bytes, one 128-byte wavefront per clock), and for Hopper the figure of Table 3 of
//!   Ultrasonics Sonochemistry 99:106546 (2023, pmc.ncbi.nlm.nih.gov/articles/PMC10448217):
//!   32348 GB/s for 144 SMs at 1755 MHz = 128 B/clk/SM. `wgmma` operands read through matrix
//!   descriptors and TMA (`cp.async.bulk`) copies into or out of shared memory are charged at
//!   these 128 B/clk, beside the wavefronts of ordinary shared accesses. Assumption (not
//!   published): a warpgroup `wgmma` reads its B tile once for its four warps' tensor cores
//!   (the emulator's `wgmma_smem_bytes` counts it so). Reading B four times would make an
//!   m64n128k16 SS `wgmma` need 144 clk of shared memory against 64 clk of math, capping any
//!   128 x 128 attention tile near 45% of peak, which FlashAttention-3's measured 740 TFLOP/s
//!   (75%) at d128 rules out.
//! - [T4-DS] NVIDIA T4 Tensor Core GPU datasheet: 65 TFLOP/s FP16 mixed precision (f16 in,
//!   f32 accumulate, dense), 320 GB/s GDDR6, 70 W. [TU-WP] NVIDIA Turing GPU Architecture
//!   whitepaper: T4 is TU104 with 40 SMs at 1590 MHz boost (65e12 / (40 x 1590e6) = 1022
//!   FLOP/clk/SM: one m16n8k16 equivalent every 4 clocks, i.e. two m16n8k8), 4 MB L2, 64 FP32
//!   and 64 INT32 lanes and 16 SFU lanes per SM, 96 KB L1/shared per SM of which up to 64 KB
//!   shared.
//! - [PG-T] CUDA C++ Programming Guide, "Arithmetic Instructions", table "Throughput of Native
//!   Arithmetic Instructions (Operations per Clock Cycle per Multiprocessor)": cc 8.0 FP32
//!   add/mul/fma 64, cc 8.6 / 8.9 / 9.0 128; 32-bit integer add / compare / min / max / logical
//!   64 on all four; exp2 / log2 / reciprocal / tanh (SFU) 16 on all four; conversions 16.
//! - [PG-CC] CUDA C++ Programming Guide, "Compute Capabilities", technical specifications:
//!   4 warp schedulers per SM (one warp-instruction per scheduler per clock), 65536 32-bit
//!   registers per SM, max resident threads per SM 2048 (8.0, 9.0) / 1536 (8.6, 8.9), max resident
//!   blocks per SM 32 (8.0, 9.0) / 16 (8.6) / 24 (8.9), shared memory per SM 164 KB (8.0),
//!   100 KB (8.6, 8.9), 228 KB (9.0), of which the CUDA runtime reserves 1 KB per block; for 7.5:
//!   1024 threads, 16 blocks and 64 KB of shared memory per SM, 64 KB per block (the 1 KB
//!   per-block reservation is documented from 8.0 on; we model none on 7.5); shared
//!   memory has 32 banks of 4 bytes, i.e. one 128-byte wavefront per clock per SM.
//! - \[L2\] L2 bandwidth: the A100 whitepaper gives it as 2.3x V100's without a per-clock figure;
//!   we use 5120 B/clk for A100 (an assumption, not a published number) and the same bytes per clock per SM for the other parts. The least certain
//!   figure in the table: `bench --gpu` prints prediction next to measurement to calibrate it.
//! - mma.sync on sm_90: NVIDIA publishes no rate for the legacy path; microbenchmarks (Luo et
//!   al., "Dissecting the NVIDIA Hopper Architecture through Microbenchmarking", arXiv
//!   2501.12084) find it well below wgmma ([H100-WP] above: at most two thirds). We model it
//!   at half the wgmma rate (2048 FLOP/clk/SM, twice A100's per SM) and label H100 figures as
//!   such.
//! - [PG-SM90] CUDA C++ Programming Guide, technical specifications for 9.0: 228 KB of shared
//!   memory per SM, at most 227 KB (232448 B) per block, 1 KB reserved per block; 65536
//!   registers per SM; `setmaxnreg` (PTX ISA "setmaxnreg") moves registers between the warps of
//!   a CTA through a per-CTA pool, so occupancy follows the launch allocation (see
//!   [`super::registers`]).
//! - Blackwell (our kernels run `mma.sync` there: sm_100 cubins on 10.x, sm_120 cubins on
//!   12.x; the `tcgen05` / TMEM path that reaches the datasheet peaks is not ours yet, and 12.x
//!   has no `tcgen05`: `mma.sync` is its tensor path):
//!   - [B200-DS] NVIDIA HGX B200 / DGX B200 datasheets: 8 TB/s HBM3e per GPU; FP16/BF16 tensor
//!     2.25 PFLOP/s dense per GPU (4.5 with sparsity; 36 PFLOP/s sparse per 8-GPU HGX board).
//!   - [B200-UB] Jarmusch and Chandrasekaran, "Microbenchmarking NVIDIA's Blackwell
//!     Architecture: An in-depth Architectural Analysis" (arXiv 2512.02189): B200 with 148 SMs.
//!   - [RTX-BW] NVIDIA RTX Blackwell GPU Architecture whitepaper (2025), GeForce RTX 5090
//!     (GB202): 170 SMs, 2407 MHz boost, 1792 GB/s GDDR7, 96 MB L2, 128 FP32 lanes per SM,
//!     838 TFLOP/s FP16 tensor with sparsity; with FP32 accumulate the GeForce parts run at half
//!     the FP16-accumulate rate: 209.5 TFLOP/s dense = 512 FLOP/clk/SM at 170 x 2407 MHz.
//!   - [PG-CC] for 10.0: as 9.0 (2048 threads, 32 blocks, 228 KB of shared memory per SM,
//!     1 KB reserved per block); for 12.0: 1536 threads, 32 blocks and 128 KB of shared memory
//!     per SM (99 KB per block).
//!   - Assumptions (no published figure): B200's `mma.sync` rate, modelled like Hopper's
//!     legacy path at 2048 FLOP/clk/SM (a quarter of the `tcgen05` dense rate of 8192 per SM
//!     that [B200-DS] implies at the clock below); B200's clock, 1860 MHz, the clock at which
//!     148 SMs x 8192 FLOP/clk give the datasheet's 2.25 PFLOP/s; B200's L2 (126 MB) and the L2
//!     bandwidth of both parts (the per-SM A100 share, as for every entry, \[L2\]). `bench`
//!     labels their tables with "(assumed mma.sync rate)" in the entry name.

/// Which tensor-core instruction family the kernels an entry models issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorPath {
    /// `mma.sync` (the Ampere and Turing kernels).
    MmaSync,
    /// `wgmma.mma_async` (the sm_90a forward).
    Wgmma,
}

/// One GPU's throughputs (per SM per clock unless said otherwise).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GpuSpec {
    pub name: &'static str,
    /// Compute capability major*10 + minor.
    pub sm: u32,
    /// The kernels this entry models.
    pub path: TensorPath,
    pub sms: u32,
    pub clock_hz: f64,
    /// m16n8k16 f16/bf16 -> f32 mma.sync per clock per SM (4096 FLOP each; Turing's m16n8k8
    /// count as half of one: the model's tensor work is FLOPs / 4096).
    pub mma_per_clk: f64,
    /// Dense f16/bf16 -> f32 `wgmma` FLOPs per clock per SM; 0 where there is no `wgmma`.
    pub wgmma_flops_per_clk: f64,
    /// Shared-memory wavefronts (128 B) per clock per SM.
    pub smem_wavefronts_per_clk: f64,
    /// SFU (MUFU: ex2, lg2, rcp, tanh) lanes per clock per SM.
    pub sfu_lanes_per_clk: f64,
    /// FP32 add/mul/fma lanes per clock per SM.
    pub fp32_lanes_per_clk: f64,
    /// 32-bit integer / logical / compare / min-max lanes per clock per SM.
    pub alu_lanes_per_clk: f64,
    /// Warp-instructions issued per clock per SM (schedulers).
    pub issue_per_clk: f64,
    /// L2 bytes per clock over the whole GPU.
    pub l2_bytes_per_clk: f64,
    /// DRAM bytes per second.
    pub dram_bytes_per_s: f64,
    pub l2_bytes: f64,
    pub regs_per_sm: u32,
    pub max_threads_per_sm: u32,
    pub max_ctas_per_sm: u32,
    /// Shared memory per SM usable by blocks (bytes), and the runtime's reservation per block.
    pub smem_per_sm: u32,
    pub smem_reserved_per_cta: u32,
}

impl GpuSpec {
    /// Tensor FLOP/s of the path this entry models (mma.sync or wgmma).
    pub fn flops_peak(&self) -> f64 {
        match self.path {
            TensorPath::MmaSync => self.mma_sync_peak(),
            TensorPath::Wgmma => self.wgmma_flops_per_clk * self.sms as f64 * self.clock_hz,
        }
    }

    /// Tensor FLOP/s of `mma.sync` alone.
    pub fn mma_sync_peak(&self) -> f64 {
        self.mma_per_clk * MMA_FLOPS * self.sms as f64 * self.clock_hz
    }

    /// The GPU's dense f16/bf16 tensor peak over both instruction families (the datasheet
    /// figure): 989 TFLOP/s on H100 SXM5 whichever kernels run.
    pub fn dense_peak(&self) -> f64 {
        let wgmma = self.wgmma_flops_per_clk * self.sms as f64 * self.clock_hz;
        self.mma_sync_peak().max(wgmma)
    }

    /// Shared-memory bytes per clock per SM (one 128-byte wavefront per clock, [SMEM-BW]).
    pub fn smem_bytes_per_clk(&self) -> f64 {
        self.smem_wavefronts_per_clk * 128.0
    }
}

/// FLOPs of one m16n8k16 mma (2 m n k).
pub const MMA_FLOPS: f64 = 2.0 * 16.0 * 8.0 * 16.0;

/// [A100-WP], [A100-DS], [PG-T], [PG-CC], \[L2\].
pub const A100: GpuSpec = GpuSpec {
    name: "A100-SXM4-80GB",
    sm: 80,
    path: TensorPath::MmaSync,
    sms: 108,
    clock_hz: 1410e6,
    mma_per_clk: 1024.0 * 2.0 / MMA_FLOPS, // 1024 FMA/clk/SM = 0.5 mma/clk
    wgmma_flops_per_clk: 0.0,
    smem_wavefronts_per_clk: 1.0,
    sfu_lanes_per_clk: 16.0,
    fp32_lanes_per_clk: 64.0,
    alu_lanes_per_clk: 64.0,
    issue_per_clk: 4.0,
    l2_bytes_per_clk: 5120.0,
    dram_bytes_per_s: 2039e9,
    l2_bytes: 40e6,
    regs_per_sm: 65536,
    max_threads_per_sm: 2048,
    max_ctas_per_sm: 32,
    smem_per_sm: 164 * 1024,
    smem_reserved_per_cta: 1024,
};

/// [A10-DS], [GA102-WP], [PG-T], [PG-CC]; 125 TFLOP/s / (72 SMs x 1695 MHz) = 1024 FLOP/clk/SM.
pub const A10: GpuSpec = GpuSpec {
    name: "A10 (sm_86)",
    sm: 86,
    path: TensorPath::MmaSync,
    sms: 72,
    clock_hz: 1695e6,
    mma_per_clk: 1024.0 / MMA_FLOPS,
    wgmma_flops_per_clk: 0.0,
    smem_wavefronts_per_clk: 1.0,
    sfu_lanes_per_clk: 16.0,
    fp32_lanes_per_clk: 128.0,
    alu_lanes_per_clk: 64.0,
    issue_per_clk: 4.0,
    l2_bytes_per_clk: 5120.0 / 108.0 * 72.0,
    dram_bytes_per_s: 600e9,
    l2_bytes: 6e6,
    regs_per_sm: 65536,
    max_threads_per_sm: 1536,
    max_ctas_per_sm: 16,
    smem_per_sm: 100 * 1024,
    smem_reserved_per_cta: 1024,
};

/// [L4-DS], [AD102-WP], [PG-T], [PG-CC]; 121 TFLOP/s / (58 SMs x 2040 MHz) = 1023 FLOP/clk/SM.
///
/// The per-SM figures not listed are the A10's: cc 8.9 has the same per-SM tensor, FP32, SFU,
/// issue, register, thread and shared-memory figures as cc 8.6 in [PG-T] and [PG-CC]; only
/// the CTA limit differs (24).
pub const L4: GpuSpec = GpuSpec {
    name: "L4 (sm_89)",
    sm: 89,
    sms: 58,
    clock_hz: 2040e6,
    l2_bytes_per_clk: 5120.0 / 108.0 * 58.0,
    dram_bytes_per_s: 300e9,
    l2_bytes: 48e6,
    max_ctas_per_sm: 24,
    ..A10
};

/// [H100-WP], [PG-T], [PG-CC], [PG-SM90]; the Ampere (mma.sync) kernels, mma.sync at half the
/// wgmma rate (see the module doc).
pub const H100: GpuSpec = GpuSpec {
    name: "H100-SXM5 (mma.sync)",
    sm: 90,
    path: TensorPath::MmaSync,
    sms: 132,
    clock_hz: 1830e6,
    mma_per_clk: 2048.0 / MMA_FLOPS,
    wgmma_flops_per_clk: 4096.0,
    smem_wavefronts_per_clk: 1.0,
    sfu_lanes_per_clk: 16.0,
    fp32_lanes_per_clk: 128.0,
    alu_lanes_per_clk: 64.0,
    issue_per_clk: 4.0,
    l2_bytes_per_clk: 5120.0 / 108.0 * 132.0,
    dram_bytes_per_s: 3350e9,
    l2_bytes: 50e6,
    regs_per_sm: 65536,
    max_threads_per_sm: 2048,
    max_ctas_per_sm: 32,
    smem_per_sm: 228 * 1024,
    smem_reserved_per_cta: 1024,
};

/// [T4-DS], [TU-WP], [PG-T] (cc 7.5: FP32 64, INT32 64, SFU 16 lanes per clock per SM),
/// [PG-CC], \[L2\] (the same per-SM L2 share, an assumption).
pub const T4: GpuSpec = GpuSpec {
    name: "T4 (sm_75)",
    sm: 75,
    sms: 40,
    clock_hz: 1590e6,
    mma_per_clk: 1024.0 / MMA_FLOPS,
    l2_bytes_per_clk: 5120.0 / 108.0 * 40.0,
    dram_bytes_per_s: 320e9,
    l2_bytes: 4e6,
    max_threads_per_sm: 1024,
    max_ctas_per_sm: 16,
    smem_per_sm: 64 * 1024,
    smem_reserved_per_cta: 0,
    // The rest (the mma.sync path; SFU / FP32 / ALU lanes, issue width, smem wavefronts and
    // registers per SM) are the same per SM as the A100's.
    ..A100
};

/// [H100-WP], [H100-DS], [SMEM-BW], [PG-T], [PG-CC], [PG-SM90]: the same H100 SXM5 running the
/// sm_90a forward (TMA + wgmma): 4096 wgmma FLOP/clk/SM = 989.4 TFLOP/s at 132 SMs x 1830 MHz.
pub const H100_WGMMA: GpuSpec = GpuSpec {
    name: "H100-SXM5 (wgmma)",
    path: TensorPath::Wgmma,
    ..H100
};

/// [B200-DS], [B200-UB], [PG-T], [PG-CC] and the assumptions of the module doc: the sm_80+
/// kernels (sm_100 cubins) on a B200, `mma.sync` at an assumed 2048 FLOP/clk/SM.
pub const B200: GpuSpec = GpuSpec {
    name: "B200 (sm_100, assumed mma.sync rate)",
    sm: 100,
    path: TensorPath::MmaSync,
    sms: 148,
    clock_hz: 1860e6,
    mma_per_clk: 2048.0 / MMA_FLOPS,
    wgmma_flops_per_clk: 0.0,
    l2_bytes_per_clk: 5120.0 / 108.0 * 148.0,
    dram_bytes_per_s: 8000e9,
    l2_bytes: 126e6,
    // Per SM as the H100 ([PG-T]: 128 FP32 lanes, 16 SFU; [PG-CC] for 10.0 = 9.0).
    ..H100
};

/// [RTX-BW], [PG-T], [PG-CC]: GeForce RTX 5090 (the sm_80+ kernels, sm_120 cubins); tensor
/// f16/bf16 -> f32 at 512 FLOP/clk/SM (209.5 TFLOP/s dense).
pub const RTX_5090: GpuSpec = GpuSpec {
    name: "RTX 5090 (sm_120)",
    sm: 120,
    path: TensorPath::MmaSync,
    sms: 170,
    clock_hz: 2407e6,
    mma_per_clk: 512.0 / MMA_FLOPS,
    l2_bytes_per_clk: 5120.0 / 108.0 * 170.0,
    dram_bytes_per_s: 1792e9,
    l2_bytes: 96e6,
    max_threads_per_sm: 1536,
    max_ctas_per_sm: 32,
    smem_per_sm: 128 * 1024,
    // The rest per SM as the A10's (cc 8.6: 128 FP32 lanes, 16 SFU, 64 ALU, 4 schedulers,
    // 64 K registers, 1 KB reserved per block), which [PG-T] and [PG-CC] give for 12.0 too.
    ..A10
};

pub const ALL: [&GpuSpec; 8] = [&A100, &A10, &L4, &H100, &H100_WGMMA, &T4, &B200, &RTX_5090];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h100_wgmma_peak_is_the_whitepaper_989_tflops() {
        // [H100-WP]: 989.4 TFLOP/s dense FP16/BF16 -> FP32 at 132 SMs x 1830 MHz.
        assert!((H100_WGMMA.flops_peak() / 1e12 - 989.4).abs() < 0.1);
        assert_eq!(H100_WGMMA.sms, 132);
        // The mma.sync entry models the same GPU: its own path at half the rate, the same
        // dense peak.
        assert!((H100.flops_peak() / H100_WGMMA.flops_peak() - 0.5).abs() < 1e-12);
        assert_eq!(H100.dense_peak(), H100_WGMMA.dense_peak());
        assert_eq!(H100.path, TensorPath::MmaSync);
        // A100: 312 TFLOP/s, no wgmma.
        assert!((A100.dense_peak() / 1e12 - 311.9).abs() < 0.5);
        assert_eq!(A100.dense_peak(), A100.flops_peak());
        // 128 B/clk/SM of shared memory ([SMEM-BW]).
        assert_eq!(H100_WGMMA.smem_bytes_per_clk(), 128.0);
    }

    #[test]
    fn blackwell_entries_reproduce_their_sources() {
        // [RTX-BW]: 209.5 TFLOP/s dense f16 -> f32 at 170 SMs x 2407 MHz.
        assert!((RTX_5090.flops_peak() / 1e12 - 209.5).abs() < 0.1);
        // [B200-DS]: the dense tcgen05 peak 2.25 PFLOP/s is 4x the assumed mma.sync rate.
        assert!((4.0 * B200.flops_peak() / 1e15 - 2.25).abs() < 0.01);
        assert_eq!((B200.sm, RTX_5090.sm), (100, 120));
        assert_eq!(B200.smem_per_sm, 228 * 1024);
        assert_eq!(RTX_5090.max_threads_per_sm, 1536);
    }
}
