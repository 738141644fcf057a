//! `flashmha bench --decode`: paged-decode counters on the emulator (exact counts per cached
//! key per KV head and whole-call bytes vs compulsory), then the per-pipe *modelled* A100 time
//! of every configuration of the issue-9 table (page sizes 1/16/256, sq_new 1/4, GQA 1/8, d128
//! f16, 8 KV heads, 4096 cached keys) at batch 1 and at the batch that fills the GPU
//! (src/perf_model/decode.rs). bench/results/decode.txt holds the output.

use flashmha::common::dtype::DType;
use flashmha::perf_model::decode::{batch_filling, model_decode, DecodeModelConfig};
use flashmha::perf_model::decode_bench::{default_configs, format_table, measure};
use flashmha::perf_model::gpus::{GpuSpec, A100};
use flashmha::perf_model::pipes::PIPES;

/// KV heads and cached keys of the modelled configurations (a Llama-3-70B-like layer: 8 KV
/// heads of d128).
const MODEL_KV_HEADS: usize = 8;
const MODEL_CACHE_LEN: usize = 4096;

fn model_configs() -> Vec<DecodeModelConfig> {
    let mut v = Vec::new();
    for page_size in [1, 16, 256] {
        for sq_new in [1, 4] {
            for group in [1, 8] {
                v.push(DecodeModelConfig {
                    dtype: DType::F16,
                    head_dim: 128,
                    batch: 1,
                    num_heads_kv: MODEL_KV_HEADS,
                    group,
                    sq_new,
                    page_size,
                    cache_len: MODEL_CACHE_LEN,
                });
            }
        }
    }
    v
}

fn model_table(gpu: &GpuSpec, bar: &indicatif::ProgressBar) -> super::CliResult<String> {
    let mut s = format!(
        "\n{} ({} SMs, {:.0} GB/s DRAM): MODELLED microseconds per pipe of the decode launch \
         (no latency model: each pipe at full rate, the slowest binds), then the combine's \
         modelled time and binding pipe, the call's modelled total and the compulsory bytes / \
         modelled time as % of DRAM bandwidth. d128 f16, {} KV heads, {} cached keys, causal, \
         heuristic splits; batch 1 and the batch whose one-split grid fills every CTA slot.\n",
        gpu.name,
        gpu.sms,
        gpu.dram_bytes_per_s / 1e9,
        MODEL_KV_HEADS,
        MODEL_CACHE_LEN
    );
    s.push_str(&format!(
        "{:<4} {:<6} {:<4} {:<5} {:<6} |{}| {:<7} {:<16} | {:<17} | {:>11} {:>7} {:>8}\n",
        "page",
        "sq_new",
        "gqa",
        "batch",
        "splits",
        PIPES.iter().map(|p| format!(" {p:>6}")).collect::<String>(),
        "binding",
        "CTAs/SM, waves",
        "combine (binding)",
        "total (mod.)",
        "% DRAM",
        "findings"
    ));
    for base in model_configs() {
        for batch in [1, batch_filling(gpu, &base)?] {
            let c = DecodeModelConfig { batch, ..base };
            bar.set_message(format!(
                "page {} sq {} gqa {} batch {batch}",
                c.page_size, c.sq_new, c.group
            ));
            let m = model_decode(gpu, &c)?;
            let d = &m.decode;
            s.push_str(&format!(
                "{:<4} {:<6} {:<4} {:<5} {:<6} |{}| {:<7} {:<16} | {:<17} | {:>9.2}us {:>6.1}% {:>8}\n",
                c.page_size,
                c.sq_new,
                c.group,
                batch,
                m.splits,
                d.pipe_s
                    .iter()
                    .map(|t| format!(" {:>6.2}", t * 1e6))
                    .collect::<String>(),
                d.binding(),
                format!("{}, {} ({:.2})", d.ctas_per_sm, d.waves, d.wave_efficiency),
                m.combine.map_or("-".to_string(), |c| format!(
                    "{:.2}us ({})",
                    c.seconds() * 1e6,
                    c.binding()
                )),
                m.seconds() * 1e6,
                100.0 * m.dram_fraction(gpu),
                m.findings
            ));
            bar.inc(1);
        }
    }
    Ok(s)
}

pub fn run() -> super::CliResult<()> {
    let configs = default_configs();
    let models = model_configs();
    let bar = super::progress::bar(configs.len() + 2 * models.len(), "configs");
    let mut rows = Vec::new();
    for c in &configs {
        rows.push(measure(c).map_err(super::CliError::Failed)?);
        bar.inc(1);
    }
    let modelled = model_table(&A100, &bar)?;
    bar.finish_and_clear();
    print!("{}", format_table(&rows));
    print!("{modelled}");
    Ok(())
}
