//! `flashmha bench --decode`: paged-decode counters on the emulator (exact counts per cached
//! key per KV head and whole-call bytes vs compulsory; `--dtype` / `--head-dims` select among
//! the configurations), then the per-pipe *modelled* time on each `--model` GPU that runs the
//! sm_80+ decode kernels (A100 by default) of every configuration of the issue-9 table (page
//! size 16 over sq_new 1/2/4 x GQA 1/4/8, pages 1 and 256 at the corners, d128 f16, 8 KV heads, 4096 cached keys) at batch 1 and
//! at the batch that fills the GPU (src/perf_model/decode.rs), beside the SM simulation's
//! predicted call time and % of DRAM bandwidth with the timed split rule and with the byte
//! rule's count. bench/results/decode.txt holds the default output.

use super::table;
use flashmha::common::dtype::DType;
use flashmha::ops::decode::plan::{choose_splits, DecodePlan, SplitPolicy};
use flashmha::ops::decode::KvCacheDType;
use flashmha::perf_model::decode::{batch_filling, predict_decode, DecodeModelConfig};
use flashmha::perf_model::decode_bench::{default_configs, measure, DecodeBenchRow};
use flashmha::perf_model::gpus::{GpuSpec, TensorPath};
use flashmha::perf_model::pipes::PIPES;
use flashmha::KernelTarget;

/// KV heads and cached keys of the modelled configurations (a Llama-3-70B-like layer: 8 KV
/// heads of d128).
const MODEL_KV_HEADS: usize = 8;
const MODEL_CACHE_LEN: usize = 4096;

/// Page 16 over GQA 1/4/8 x sq_new 1/2/4 (the target grid), and pages 1 and 256 at
/// the two ends of it (GQA 1 with one new token, GQA 8 with four).
fn model_configs() -> Vec<DecodeModelConfig> {
    let at = |page_size, sq_new, group| DecodeModelConfig {
        dtype: DType::F16,
        head_dim: 128,
        batch: 1,
        num_heads_kv: MODEL_KV_HEADS,
        group,
        sq_new,
        page_size,
        cache_len: MODEL_CACHE_LEN,
    };
    let mut v = Vec::new();
    for sq_new in [1, 2, 4] {
        for group in [1, 4, 8] {
            v.push(at(16, sq_new, group));
        }
    }
    for page_size in [1, 256] {
        v.push(at(page_size, 1, 1));
        v.push(at(page_size, 4, 8));
    }
    v
}

/// The calibration the decode predictions carry (no decode kernel measured on hardware is
/// available to calibrate against; the forward's calibration is the nearest evidence).
pub(super) const CALIBRATION_NOTE: &str =
    "calibration: the SM simulation's forward predictions are within 5.6% mean, 20.4% max of \
     FlashAttention-2's published H100 figures (bench/results/fa2_calibration.md); no decode \
     kernel measured on hardware was found to calibrate the decode against";

fn model_table(gpu: &GpuSpec, bar: &indicatif::ProgressBar) -> super::CliResult<String> {
    let title = format!(
        "\n{} ({} SMs, {:.0} GB/s DRAM): MODELLED microseconds per pipe of the decode launch \
         (no latency model: each pipe at full rate, the slowest binds; the upper bound), then \
         the combine's modelled time and binding pipe, the call's modelled total and the \
         compulsory bytes / modelled time as % of DRAM bandwidth; then the SM simulation's \
         PREDICTED (modelled) call time and % of DRAM bandwidth with the timed split rule, \
         CTAs per SM in the simulation, and the same with the byte rule's split count (before \
         issue 20). d128 f16, {} KV heads, {} cached keys, causal; batch 1 and the batch whose \
         one-split grid fills every CTA slot. {CALIBRATION_NOTE}.",
        gpu.name,
        gpu.sms,
        gpu.dram_bytes_per_s / 1e9,
        MODEL_KV_HEADS,
        MODEL_CACHE_LEN
    );
    let pipe_cols: Vec<String> = PIPES.iter().map(|p| format!("{p} us")).collect();
    let mut header = vec!["page", "sq_new", "gqa", "batch", "splits"];
    header.extend(pipe_cols.iter().map(String::as_str));
    header.extend([
        "binding",
        "CTAs/SM, waves (eff.)",
        "combine (binding)",
        "total (modelled)",
        "% DRAM",
        "predicted us (SM sim)",
        "predicted % DRAM",
        "sim CTAs/SM",
        "byte rule: splits, predicted us, % DRAM",
        "findings",
    ]);
    let mut t = table::new(&header);
    for base in model_configs() {
        for batch in [1, batch_filling(gpu, &base)?] {
            let c = DecodeModelConfig { batch, ..base };
            bar.set_message(format!(
                "page {} sq {} gqa {} batch {batch}",
                c.page_size, c.sq_new, c.group
            ));
            let p = predict_decode(gpu, &c, SplitPolicy::Auto { num_sms: gpu.sms })?;
            let old = predict_decode(gpu, &c, SplitPolicy::Count(byte_rule_splits(gpu, &c)?))?;
            let m = &p.modelled;
            let d = &m.decode;
            let mut row = vec![
                c.page_size.to_string(),
                c.sq_new.to_string(),
                c.group.to_string(),
                batch.to_string(),
                m.splits.to_string(),
            ];
            row.extend(d.pipe_s.iter().map(|t| format!("{:.2}", t * 1e6)));
            row.extend([
                d.binding().to_string(),
                format!("{}, {} ({:.2})", d.ctas_per_sm, d.waves, d.wave_efficiency),
                m.combine.map_or("-".to_string(), |c| {
                    format!("{:.2} us ({})", c.seconds() * 1e6, c.binding())
                }),
                format!("{:.2} us", m.seconds() * 1e6),
                format!("{:.1}%", 100.0 * m.dram_fraction(gpu)),
                format!("{:.2}", p.seconds() * 1e6),
                format!("{:.1}%", 100.0 * p.dram_fraction(gpu)),
                p.decode.ctas_per_sm.to_string(),
                format!(
                    "{}, {:.2}, {:.1}%",
                    old.modelled.splits,
                    old.seconds() * 1e6,
                    100.0 * old.dram_fraction(gpu)
                ),
                m.findings.to_string(),
            ]);
            t.add_row(row);
            bar.inc(1);
        }
    }
    Ok(format!("{title}\n{t}\n"))
}

/// The split count the byte rule (before the timed rule; still the MLA decode's) gives `c`.
fn byte_rule_splits(gpu: &GpuSpec, c: &DecodeModelConfig) -> super::CliResult<u32> {
    let plan = DecodePlan::new(&c.problem(), SplitPolicy::Count(1))?;
    let rows = (c.group * c.sq_new) as u64;
    let base = u64::from(plan.decode.grid[1]) * c.batch as u64;
    Ok(choose_splits(base, rows, c.cache_len as u64, gpu.sms))
}

/// The emulator counters of `rows`, one table row each.
fn counters_table(rows: &[DecodeBenchRow]) -> String {
    let mut t = table::new(&[
        "dtype",
        "kv",
        "d",
        "page",
        "sq_new",
        "gqa",
        "L",
        "warp-instr/key",
        "smem-wf/key (ideal)",
        "mma/key",
        "bytes/key",
        "splits",
        "bytes/compulsory",
        "sector-eff",
        "findings",
    ]);
    for r in rows {
        let (c, kv_dtype) = (&r.config.shape, r.config.kv_dtype);
        t.add_row(vec![
            c.dtype.to_string(),
            match kv_dtype {
                KvCacheDType::Same => "same",
                KvCacheDType::Fp8E4M3 => "e4m3",
                KvCacheDType::Fp8E5M2 => "e5m2",
            }
            .to_string(),
            c.head_dim.to_string(),
            c.page_size.to_string(),
            c.sq_new.to_string(),
            c.group.to_string(),
            c.cache_len.to_string(),
            format!("{:.2}", r.warp_instr_per_key),
            format!(
                "{:.2} ({:.2})",
                r.smem_wavefronts_per_key, r.smem_ideal_per_key
            ),
            format!("{:.2}", r.mma_per_key),
            format!("{:.1}", r.bytes_per_key),
            r.splits.to_string(),
            format!("{:.4}", r.bytes_vs_compulsory),
            format!("{:.4}", r.sector_efficiency),
            r.findings.to_string(),
        ]);
    }
    format!(
        "paged decode on the emulator (exact counts, no times): per cached key per KV head by key \
         doubling (L -> 2L, 1 split, causal); whole call (decode + combine, heuristic splits for \
         108 SMs) bytes vs compulsory\n{t}\n"
    )
}

/// Runs the configurations of `dtype` (all when `None`) and of `head_dims` (all when empty),
/// and models the decode on each of `gpus` that runs the sm_80+ decode kernels.
pub fn run(
    dtype: Option<DType>,
    head_dims: &[usize],
    gpus: &[&'static GpuSpec],
) -> super::CliResult<()> {
    let configs: Vec<_> = default_configs()
        .into_iter()
        .filter(|c| dtype.is_none_or(|d| c.shape.dtype == d))
        .filter(|c| head_dims.is_empty() || head_dims.contains(&c.shape.head_dim))
        .collect();
    if configs.is_empty() {
        return Err(super::CliError::Usage(format!(
            "bench --decode has no configuration of {} at head dims {head_dims:?}",
            dtype.map_or("any dtype".to_string(), |d| d.to_string())
        )));
    }
    // The decode kernels are the sm_80+ ones on every modelled mma.sync GPU from sm_80 on (the
    // wgmma entry models the sm_90a forward only; Turing decodes with other kernels).
    let gpus: Vec<_> = gpus
        .iter()
        .filter(|g| {
            g.path == TensorPath::MmaSync && super::bench::target_of(g) == KernelTarget::Ampere
        })
        .collect();
    if gpus.is_empty() {
        return Err(super::CliError::Usage(
            "bench --decode models the sm_80+ decode kernels: pick --model a100, a10, l4 or h100"
                .into(),
        ));
    }
    let models = model_configs();
    let bar = super::progress::bar(configs.len() + gpus.len() * 2 * models.len(), "configs");
    let mut rows = Vec::new();
    for c in &configs {
        rows.push(measure(c).map_err(super::CliError::Failed)?);
        bar.inc(1);
    }
    let mut modelled = Vec::new();
    for gpu in gpus {
        modelled.push(model_table(gpu, &bar)?);
    }
    bar.finish_and_clear();
    print!("{}", counters_table(&rows));
    for m in modelled {
        print!("{m}");
    }
    Ok(())
}
