//! `flashmha bench --calibrate DIR`: the SM simulation's predicted forward TFLOP/s of a foreign
//! kernel build (FlashAttention-2's forward, built outside the repository by
//! `tools/fa2_calibration.sh`) beside its published figures, per configuration with the error
//! (src/perf_model/calibrate.rs). Needs the build; CI does not run it.

use flashmha::common::dtype::DType;
use flashmha::perf_model::calibrate;
use flashmha::perf_model::gpus::{self, GpuSpec};
use flashmha::perf_model::timing::ALT_SCHED_WINDOW;

/// The GPUs with published FA2 figures, by their name in [`calibrate::PUBLISHED`].
const GPUS: [(&str, &GpuSpec); 1] = [("H100", &gpus::H100)];

pub fn run(dir: &std::path::Path, dtype: DType) -> super::CliResult<()> {
    let m = calibrate::load_manifest(dir)?;
    let windows = [1, ALT_SCHED_WINDOW];
    println!(
        "FlashAttention-2 forward ({dtype}) built from its sources ({}), emulated, traced and \
         simulated; predicted (modelled) TFLOP/s in PTX order and with a scheduling window of \
         {ALT_SCHED_WINDOW}, against the published figures (src/perf_model/calibrate.rs). \
         Error = predicted / published - 1.",
        dir.display()
    );
    println!("| GPU | entry | d | causal | seqlen | CTAs/SM | published | PTX order | err | window {ALT_SCHED_WINDOW} | err |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (key, gpu) in GPUS {
        for r in calibrate::calibrate(&m, gpu, key, dtype, &windows)? {
            let cells: Vec<String> = r
                .predicted_tflops
                .iter()
                .flat_map(|p| {
                    [
                        format!("{p:.0}"),
                        format!("{:+.0}%", 100.0 * (p / r.published_tflops - 1.0)),
                    ]
                })
                .collect();
            println!(
                "| {key} | {} | {} | {} | {} | {} | {:.0} | {} |",
                r.entry,
                r.config.head_dim,
                r.config.causal,
                r.config.seqlen,
                r.resident,
                r.published_tflops,
                cells.join(" | ")
            );
        }
    }
    Ok(())
}
