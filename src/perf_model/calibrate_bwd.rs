//! Calibration of the SM simulation on FlashAttention-2's backward (issue 20, item 3): its three
//! launches (preprocess rowsum(dO * O) with the dQ accumulator cleared, the main kernel with one
//! KV column block per CTA and dQ accumulated by f32 atomics, the dQ conversion), built from its
//! public sources outside the repository (never committed; the manifest format is
//! [`super::calibrate`]'s with `role=bwd_main|bwd_pre|bwd_dq`), emulated, traced and simulated
//! as the forward is, then set beside the published figures ([`super::calibrate::PUBLISHED`],
//! [`ANCHORS`]).
//!
//! Method (one launch of `batch x heads` items, `seqlen^2`, as the papers' benchmark):
//! - Main kernel: a CTA's clocks are fixed + per Q block + per masked Q block (the backward's
//!   loop runs over Q blocks for its KV block), from three traced one-CTA launches (8 and 16 Q
//!   blocks against one KV block, and causal on one KV block of its own queries) simulated at
//!   the kernel's residency; the launch is the makespan of every CTA over `SMs x resident`
//!   slots ([`super::timing::makespan`]), floored by its compulsory DRAM bytes.
//! - Preprocess and conversion: every CTA does the same rows, so each is
//!   [`super::timing::predict_uniform`] of its traced CTA 0, floored by its own DRAM bytes.
//! - The backward's time is the sum of the three launches; its FLOPs the papers' count, 2.5 x
//!   the forward's.

use super::calibrate::{
    fill_fwd_params, foreign_resident, kernels_for, published, ForeignKernel, Manifest,
    PaperConfig, ParamBytes, Pass, Role, SEQLENS,
};
use super::gpus::GpuSpec;
use super::timing::{
    makespan, predict_uniform, simulate_copies, sm_config_window, CtaClocks, Predicted,
};
use crate::backend::emulator::require_clean;
use crate::common::dtype::DType;
use crate::common::error::{EmulatorError, Error, Result};
use crate::emulator::timing::KernelTrace;
use crate::emulator::{Device, LaunchConfig, Module};
use rand::{Rng, SeedableRng};

/// Published maxima of FlashAttention-2's attention benchmark (hd64/hd128, causal and not,
/// 512-16k, hidden 2048) stated in the text of the FlashAttention-2 paper (Dao 2023, arXiv
/// 2307.08691): (GPU name, the passes the maximum is over, TFLOP/s, where).
pub const ANCHORS: [(&str, &[Pass], f64, &str); 2] = [
    (
        "A100",
        &[Pass::Forward, Pass::Backward, Pass::ForwardBackward],
        230.0,
        "Sec. 4: \"reaches up to 230 TFLOPs/s, 73% of the theoretical maximum\" (A100 80GB \
         SXM4, Figures 4-6)",
    ),
    (
        "H100",
        &[Pass::ForwardBackward],
        335.0,
        "Sec. 4.1: \"we obtain up to 335 TFLOPs/s (Fig. 7)\" (H100 80GB SXM5, forward + \
         backward)",
    ),
];

fn bad(what: impl std::fmt::Display) -> Error {
    Error::Emulator(EmulatorError::Launch(format!(
        "backward calibration: {what}"
    )))
}

/// The three kernels of one backward instantiation.
#[derive(Debug, Clone, Copy)]
pub struct BwdKernels<'a> {
    pub main: &'a ForeignKernel,
    pub pre: &'a ForeignKernel,
    pub dq: &'a ForeignKernel,
}

/// The backward kernels of `m` in `dtype` FA2 runs on `gpu_key`, one set per (head dim,
/// causal) of the main kernel.
pub fn bwd_kernels<'a>(m: &'a Manifest, gpu_key: &str, dtype: DType) -> Vec<BwdKernels<'a>> {
    let side = |role, d| {
        kernels_for(m, role, gpu_key, dtype)
            .into_iter()
            .find(|k| k.head_dim == d)
    };
    kernels_for(m, Role::BwdMain, gpu_key, dtype)
        .into_iter()
        .filter_map(|main| {
            Some(BwdKernels {
                main,
                pre: side(Role::BwdPre, main.head_dim)?,
                dq: side(Role::BwdConvertDq, main.head_dim)?,
            })
        })
        .collect()
}

/// `n` 16-bit values uniform in [-1, 1) of `dtype`, as little-endian bytes.
fn uniform(rng: &mut impl Rng, n: usize, dtype: DType) -> Vec<u8> {
    (0..n)
        .flat_map(|_| {
            let x = rng.random_range(-1.0f32..1.0);
            match dtype {
                DType::Bf16 => half::bf16::from_f32(x).to_bits().to_le_bytes(),
                _ => half::f16::from_f32(x).to_bits().to_le_bytes(),
            }
        })
        .collect()
}

/// Emulates the three launches of one backward of `k` on one head of `sq` queries and `sk`
/// keys (`causal` selects the main kernel's mask; inputs uniform in [-1, 1), an LSE of ln(sk)
/// so P stays near 1/sk) and returns the traces of CTA 0 of `[preprocess, main, conversion]`.
/// Errors on any emulator finding.
pub fn trace_bwd(
    m: &Manifest,
    module: &Module,
    k: &BwdKernels<'_>,
    sq: usize,
    sk: usize,
) -> Result<[KernelTrace; 3]> {
    let d = k.main.head_dim;
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let mut dev = Device::new();
    let e = k.main.dtype;
    let (q, kk, v, o, d_o) = (
        dev.upload(&uniform(&mut rng, sq * d, e)),
        dev.upload(&uniform(&mut rng, sk * d, e)),
        dev.upload(&uniform(&mut rng, sk * d, e)),
        dev.upload(&uniform(&mut rng, sq * d, e)),
        dev.upload(&uniform(&mut rng, sq * d, e)),
    );
    let lse: Vec<u8> = (0..sq)
        .flat_map(|_| (sk as f32).ln().to_le_bytes())
        .collect();
    let lse = dev.upload(&lse);
    // dsoftmax_sum: [seqlen_q_rounded] f32; dq_accum: [seqlen_q_rounded, d] f32 (one head).
    let sq_rounded = sq.div_ceil(128) * 128;
    let (dq, dk, dv) = (
        dev.alloc(sq * d * 2),
        dev.alloc(sk * d * 2),
        dev.alloc(sk * d * 2),
    );
    let (dsum, dq_accum) = (dev.alloc(sq_rounded * 4), dev.alloc(sq_rounded * d * 4));
    let mut pb = ParamBytes::new(m);
    fill_fwd_params(&mut pb, [q.0, kk.0, v.0, o.0, lse.0], k.main, sq, sk)?;
    for (name, ptr) in [
        ("do_ptr", d_o),
        ("dq_ptr", dq),
        ("dk_ptr", dk),
        ("dv_ptr", dv),
        ("dq_accum_ptr", dq_accum),
        ("dsoftmax_sum", dsum),
    ] {
        pb.put(name, &ptr.0.to_le_bytes())?;
    }
    for (t, rows) in [("do", sq), ("dq", sq), ("dk", sk), ("dv", sk)] {
        pb.put(
            &format!("{t}_batch_stride"),
            &((rows * d) as i64).to_le_bytes(),
        )?;
        pb.put(&format!("{t}_row_stride"), &(d as i64).to_le_bytes())?;
        pb.put(&format!("{t}_head_stride"), &(d as i64).to_le_bytes())?;
    }
    // The conversion takes (params, nsplits = 1): the int right after the struct.
    let mut dq_params = pb.bytes.clone();
    dq_params.extend_from_slice(&1i32.to_le_bytes());
    let m_blocks = |kern: &ForeignKernel| sq.div_ceil(kern.block_m) as u32;
    let launches = [
        (k.pre, [m_blocks(k.pre), 1, 1], &pb.bytes),
        (
            k.main,
            [sk.div_ceil(k.main.block_n) as u32, 1, 1],
            &pb.bytes,
        ),
        (k.dq, [m_blocks(k.dq), 1, 1], &dq_params),
    ];
    let mut traces = Vec::with_capacity(3);
    for (kern, grid, params) in launches {
        let cfg = LaunchConfig {
            grid,
            block: [kern.threads, 1, 1],
            dynamic_smem_bytes: kern.smem,
        };
        let (report, trace) = dev.launch_traced(module, &kern.entry, &cfg, params, &[[0, 0, 0]])?;
        require_clean(&report)?;
        traces.push(trace);
    }
    traces
        .try_into()
        .map_err(|_| bad("three launches expected"))
}

/// Per KV column block of a square `seqlen` backward with `(bm, bn)` tiles: the Q blocks its
/// CTA visits and how many of them cross the causal diagonal (need the mask).
pub fn bwd_tile_counts(seqlen: usize, causal: bool, bm: usize, bn: usize) -> Vec<(u64, u64)> {
    let m_blocks = seqlen.div_ceil(bm);
    (0..seqlen.div_ceil(bn))
        .map(|j| {
            if !causal {
                return (m_blocks as u64, 0);
            }
            // Rows below the block's first key see it; rows above its last key need no mask.
            let first = (j * bn) / bm;
            let masked = (first..m_blocks).filter(|&i| i * bm < (j + 1) * bn).count();
            ((m_blocks - first) as u64, masked as u64)
        })
        .collect()
}

/// The traced launches of one backward instantiation: the main kernel at 8 and 16 Q blocks
/// against one KV block and causal on its own `block_n` queries, and the preprocess and
/// conversion CTAs (from the 8-block run).
pub struct BwdTraces {
    main8: KernelTrace,
    main16: KernelTrace,
    causal: KernelTrace,
    pre: KernelTrace,
    dq: KernelTrace,
}

impl BwdTraces {
    /// Emulates and traces `plain` (a non-causal main kernel) and the causal main kernel
    /// `causal_main` of the same tiles.
    pub fn measure(
        m: &Manifest,
        module: &Module,
        plain: &BwdKernels<'_>,
        causal_main: &ForeignKernel,
    ) -> Result<BwdTraces> {
        let (bm, bn) = (plain.main.block_m, plain.main.block_n);
        if (causal_main.block_m, causal_main.block_n) != (bm, bn) {
            return Err(bad(format!("{}: other tiles", causal_main.entry)));
        }
        let [pre, main8, dq] = trace_bwd(m, module, plain, 8 * bm, bn)?;
        let [_, main16, _] = trace_bwd(m, module, plain, 16 * bm, bn)?;
        let causal = BwdKernels {
            main: causal_main,
            ..*plain
        };
        let [_, causal, _] = trace_bwd(m, module, &causal, bn, bn)?;
        Ok(BwdTraces {
            main8,
            main16,
            causal,
            pre,
            dq,
        })
    }

    /// The main kernel's per-CTA clocks at `resident` CTAs per SM on `cfg`.
    pub fn main_clocks(
        &self,
        (bm, bn): (usize, usize),
        resident: u32,
        cfg: &crate::emulator::timing::SmConfig,
    ) -> Result<CtaClocks> {
        let c8 = simulate_copies(&self.main8, resident, cfg)? as f64;
        let c16 = simulate_copies(&self.main16, resident, cfg)? as f64;
        let cc = simulate_copies(&self.causal, resident, cfg)? as f64;
        let causal_tiles = bwd_tile_counts(bn, true, bm, bn)[0];
        Ok(CtaClocks::from_runs(
            resident,
            (c8, c16),
            (cc, causal_tiles),
        ))
    }
}

/// Predicted seconds of the three launches of `cfg`'s backward on `gpu` (scheduling window
/// `window`): `[preprocess, main, conversion]`.
pub fn predict_bwd(
    t: &BwdTraces,
    k: &BwdKernels<'_>,
    cfg: &PaperConfig,
    gpu: &GpuSpec,
    window: u32,
) -> Result<[Predicted; 3]> {
    let sm = sm_config_window(gpu, window);
    let bh = cfg.batch_heads();
    let (s, d) = (cfg.seqlen, cfg.head_dim);
    // Bytes of one [seqlen, d] 16-bit / f32 tensor over every head.
    let half = (s * d * 2 * bh) as f64;
    let f32s = 2.0 * half;
    let bw = gpu.dram_bytes_per_s;
    let uniform = |kern: &ForeignKernel, trace: &KernelTrace, bytes: f64| {
        let ctas = (s.div_ceil(kern.block_m) * bh) as u64;
        predict_uniform(
            trace,
            ctas,
            foreign_resident(kern, gpu),
            gpu,
            &sm,
            bytes / bw,
        )
    };
    // Preprocess: dO and O read, the accumulator cleared; conversion: accumulator read, dQ
    // written.
    let pre = uniform(k.pre, &t.pre, 2.0 * half + f32s)?;
    let dq = uniform(k.dq, &t.dq, f32s + half)?;
    let (bm, bn) = (k.main.block_m, k.main.block_n);
    let resident = foreign_resident(k.main, gpu);
    let clocks = t.main_clocks((bm, bn), resident, &sm)?;
    let counts = bwd_tile_counts(s, cfg.causal, bm, bn);
    let durations = (0..bh).flat_map(|_| counts.iter().map(|&(n, m)| clocks.of(n, m)));
    let sm_seconds = makespan(durations, resident as usize * gpu.sms as usize) / gpu.clock_hz;
    // Compulsory: Q, K, V, dO read, dK, dV written (the dQ atomics are L2 traffic).
    let dram_seconds = 6.0 * half / bw;
    let main = Predicted {
        seconds: sm_seconds.max(dram_seconds),
        sm_seconds,
        dram_seconds,
        ctas_per_sm: resident,
    };
    Ok([pre, main, dq])
}

/// One row of the backward calibration table.
#[derive(Debug, Clone, PartialEq)]
pub struct BwdRow {
    pub entry: String,
    pub config: PaperConfig,
    pub resident: u32,
    /// Published backward TFLOP/s, where published as a number.
    pub published_tflops: Option<f64>,
    /// Predicted backward TFLOP/s per scheduling window.
    pub predicted_tflops: Vec<f64>,
    /// Predicted forward + backward TFLOP/s per window (the forward from `fwd_seconds`).
    pub predicted_fwd_bwd_tflops: Vec<f64>,
    /// The share of the predicted backward time (first window) in the main kernel.
    pub main_share: f64,
}

/// Simulates every backward instantiation of `m` FA2 runs on `gpu_key` at each window of
/// `windows`, one row per paper configuration. `fwd_seconds(config, window index)` gives the
/// forward's predicted seconds of the same configuration (for the forward + backward column).
pub fn calibrate_bwd(
    m: &Manifest,
    gpu: &GpuSpec,
    gpu_key: &str,
    dtype: DType,
    windows: &[u32],
    fwd_seconds: impl Fn(&PaperConfig, usize) -> Option<f64>,
) -> Result<Vec<BwdRow>> {
    let module = Module::parse(&m.ptx)?;
    let sets = bwd_kernels(m, gpu_key, dtype);
    let mut rows = Vec::new();
    // Per head dim: the non-causal set's traces serve both of its rows.
    for plain in sets.iter().filter(|k| !k.main.causal) {
        let d = plain.main.head_dim;
        let Some(causal) = sets.iter().find(|o| o.main.head_dim == d && o.main.causal) else {
            continue;
        };
        let traces = BwdTraces::measure(m, &module, plain, causal.main)?;
        for k in [plain, causal] {
            let published = published(gpu_key, Pass::Backward, d, k.main.causal);
            for (i, &seqlen) in SEQLENS.iter().enumerate() {
                let config = PaperConfig {
                    head_dim: d,
                    seqlen,
                    causal: k.main.causal,
                };
                let flops = 2.5 * config.flops();
                let mut bwd = Vec::new();
                let mut both = Vec::new();
                let mut main_share = 0.0;
                for (w, &window) in windows.iter().enumerate() {
                    let launches = predict_bwd(&traces, k, &config, gpu, window)?;
                    let secs: f64 = launches.iter().map(|p| p.seconds).sum();
                    if w == 0 {
                        main_share = launches[1].seconds / secs;
                    }
                    bwd.push(flops / secs / 1e12);
                    both.push(
                        fwd_seconds(&config, w)
                            .map_or(f64::NAN, |f| 3.5 * config.flops() / (f + secs) / 1e12),
                    );
                }
                rows.push(BwdRow {
                    entry: k.main.entry.clone(),
                    config,
                    resident: foreign_resident(k.main, gpu),
                    published_tflops: published.map(|p| p[i]),
                    predicted_tflops: bwd,
                    predicted_fwd_bwd_tflops: both,
                    main_share,
                });
            }
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bwd_tile_counts_follow_the_diagonal() {
        // Non-causal: every KV block visits every Q block.
        assert_eq!(bwd_tile_counts(512, false, 64, 128), vec![(8, 0); 4]);
        // Causal, 64 x 128 tiles, 256 keys: KV block 0 sees Q blocks 0..4, blocks 0 and 1
        // straddle its keys; KV block 1 starts at Q block 2, blocks 2 and 3 straddle.
        assert_eq!(bwd_tile_counts(256, true, 64, 128), vec![(4, 2), (2, 2)]);
        // Square tiles: one diagonal block per column.
        assert_eq!(
            bwd_tile_counts(384, true, 128, 128),
            vec![(3, 1), (2, 1), (1, 1)]
        );
        // Causal visits are about half the non-causal ones at length.
        let v = |c| -> u64 { bwd_tile_counts(4096, c, 64, 128).iter().map(|t| t.0).sum() };
        let r = v(true) as f64 / v(false) as f64;
        assert!((0.5..0.52).contains(&r), "{r}");
    }
}
