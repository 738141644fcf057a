//! `flashmha bench --mla`: the MLA decode (issue 23 item 3) per-pipe *modelled* on H100 SXM5
//! from emulator counters (src/perf_model/mla_decode.rs), the sm_90a `wgmma` kernel (64-row
//! tiles, TMA pages; what the plan runs on Hopper for 16-bit pages) beside the sm_80+
//! `mma.sync` one (32-row tiles; FP8 pages run it on Hopper too): 128 query heads, one new
//! token, page size 64, bf16 (and FP8 e4m3 pages), 4k-32k cached tokens, at batch 1 / 8 / 64
//! and at the batch that fills the GPU; then the DRAM bytes against compulsory per head count
//! at the filling batch. Beside the per-pipe bounds, every row has the latency-aware
//! prediction of the SM simulation (src/perf_model/mla_decode.rs `predict_mla`: CTA 0 of each
//! launch traced and replayed at the residency the launch gives each SM, the DRAM time as the
//! floor) and its % of DRAM bandwidth; the sm_80 kernel's 128-head bf16 rows are repeated on
//! A100 SXM4.
//! bench/results/mla_decode_h100.txt holds the default output. FlashMLA's published H800 SXM5
//! figures (dense decode: up to 3000 GB/s memory-bound, 660 TFLOPS compute-bound, deepseek-ai/
//! FlashMLA README; configurations: b 128, s_q 1-2, h_q 16-128, 4096-16384 cached tokens,
//! tests/test_flash_mla.py) are measured, ours modelled.

use flashmha::common::dtype::DType;
use flashmha::ops::decode::KvCacheDType;
use flashmha::perf_model::gpus::{GpuSpec, A100, H100};
use flashmha::perf_model::mla_decode::{
    batch_filling, predict_mla, MlaModelConfig, MlaModelled, MlaPredicted,
};
use flashmha::perf_model::pipes::PIPES;
use flashmha::KernelTarget;

const CACHE_LENS: [usize; 4] = [4096, 8192, 16384, 32768];

fn row(gpu: &GpuSpec, (m, p): &(MlaModelled, Option<MlaPredicted>)) -> Vec<String> {
    let c = &m.config;
    let d = &m.decode;
    let mut r = vec![
        gpu.name.to_string(),
        match c.target {
            KernelTarget::Hopper => "sm_90a wgmma".to_string(),
            _ => "sm_80 mma.sync".to_string(),
        },
        match c.kv_dtype {
            KvCacheDType::Same => c.dtype.to_string(),
            _ => "e4m3".to_string(),
        },
        c.num_heads_q.to_string(),
        c.cache_len.to_string(),
        c.batch.to_string(),
        m.splits.to_string(),
    ];
    r.extend(d.pipe_s.iter().map(|t| format!("{:.1}", t * 1e6)));
    r.extend([
        d.binding().to_string(),
        m.combine.map_or("-".to_string(), |c| {
            format!("{:.1} us ({})", c.seconds() * 1e6, c.binding())
        }),
        format!("{:.1} us", m.seconds() * 1e6),
        format!("{:.3}", m.bytes_vs_compulsory()),
        format!("{:.0}", c.compulsory_bytes() / m.seconds() / 1e9),
        format!("{:.1}%", 100.0 * m.dram_fraction(gpu)),
        format!("{:.0}", c.flops() / m.seconds() / 1e12),
    ]);
    r.extend(match p {
        Some(p) => [
            format!(
                "{:.1} us (decode {:.1} us, {}/SM)",
                p.seconds() * 1e6,
                p.decode.seconds * 1e6,
                p.decode.ctas_per_sm
            ),
            format!("{:.1}%", 100.0 * p.dram_fraction(gpu)),
        ],
        // perf_model::mla_decode::predict_mla: the simulation has no cluster launches.
        None => ["not simulated (2-CTA cluster)".to_string(), "-".to_string()],
    });
    r.extend([m.findings.to_string()]);
    r
}

fn header() -> Vec<String> {
    let mut h: Vec<String> = ["gpu", "kernel", "cache", "hq", "L", "batch", "splits"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    h.extend(PIPES.iter().map(|p| format!("{p} us")));
    h.extend(
        [
            "binding",
            "combine",
            "total (modelled)",
            "DRAM B / compulsory",
            "compulsory GB/s",
            "% DRAM",
            "TFLOP/s",
            "predicted (SM sim)",
            "% DRAM predicted",
            "findings",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    h
}

/// Models the default configurations (see the module docs) and prints the tables.
pub fn run() -> super::CliResult<()> {
    let gpu = &H100;
    let base = |target, kv_dtype, hq, cache_len| MlaModelConfig {
        target,
        dtype: DType::Bf16,
        kv_dtype,
        batch: 1,
        num_heads_q: hq,
        sq_new: 1,
        page_size: 64,
        cache_len,
    };
    // bf16 on both kernels, then FP8 (the sm_80 kernel on either target).
    let mut configs = Vec::new();
    for (target, kv) in [
        (KernelTarget::Hopper, KvCacheDType::Same),
        (KernelTarget::Ampere, KvCacheDType::Same),
        (KernelTarget::Ampere, KvCacheDType::Fp8E4M3),
    ] {
        for l in CACHE_LENS {
            let c = base(target, kv, 128, l);
            for batch in [1, 8, 64] {
                configs.push(MlaModelConfig { batch, ..c });
            }
        }
    }
    // Bytes against compulsory at the batch that fills the GPU, per head count and kernel.
    let mut filling = Vec::new();
    for target in [KernelTarget::Hopper, KernelTarget::Ampere] {
        for hq in [16, 32, 64, 128] {
            let c = base(target, KvCacheDType::Same, hq, 4096);
            filling.push(MlaModelConfig {
                batch: batch_filling(gpu, &c)?,
                ..c
            });
        }
    }
    // Rows are printed as they are modelled (each is an emulation of seconds to minutes).
    println!(
        "MLA decode (d_qk 576, d_v 512, one latent KV head, page 64, sq_new 1, causal), the \
         sm_90a wgmma kernel (64-row tiles) and the sm_80+ mma.sync kernel (32-row tiles) on {} \
         ({} SMs, {:.0} GB/s DRAM): MODELLED microseconds per pipe \
         (no latency model: each pipe at full rate, the slowest binds), heuristic splits for {} \
         SMs. compulsory GB/s = (cache rows + q + o bytes) / modelled time; TFLOP/s = 2 x keys x \
         heads x 1088 / modelled time. The last rows: the batch whose one-split grid fills every \
         CTA slot (4096 cached tokens) per head count and kernel; more heads than a tile's rows \
         are several row tiles: on sm_90a pairs of them run as 2-CTA clusters reading the \
         latent rows once (multicast TMA), on sm_80 each tile reads them (charged to DRAM each \
         time: the model's upper bound). predicted (SM sim): the latency-aware simulation (CTA 0 \
         of each launch replayed with its resident copies, decode loads at DRAM latency, the \
         per-pipe DRAM time as the floor; the decode launch's part and CTAs per SM in brackets), \
         MODELLED too, calibration in bench/results/fa2_calibration.md; % DRAM predicted = \
         compulsory bytes / predicted time / DRAM bandwidth. Last block: the sm_80 kernel on {} \
         ({} SMs, {:.0} GB/s).",
        gpu.name,
        gpu.sms,
        gpu.dram_bytes_per_s / 1e9,
        gpu.sms,
        A100.name,
        A100.sms,
        A100.dram_bytes_per_s / 1e9
    );
    let h = header();
    println!("{}", h.join(" | "));
    // Per kernel: the 128-head rows, then its filling-batch rows (the sm_90a kernel first);
    // then FP8.
    for c in configs[..12]
        .iter()
        .chain(&filling[..4])
        .chain(&configs[12..24])
        .chain(&filling[4..])
        .chain(&configs[24..])
    {
        println!("{}", row(gpu, &predict_mla(gpu, c)?).join(" | "));
    }
    // The sm_80 kernel on A100 (the plan's splits for 108 SMs), bf16, 128 heads.
    for c in &configs[12..24] {
        println!("{}", row(&A100, &predict_mla(&A100, c)?).join(" | "));
    }
    Ok(())
}
