//! `flashmha bench --calibrate DIR [--calibrate DIR2]`: the SM simulation's predicted TFLOP/s of
//! foreign kernel builds (FlashAttention-2's forward, built outside the repository, and its
//! backward, whose manifest kernels carry `role=bwd_*`)
//! beside the published figures, per configuration with the error, on H100 SXM5 and A100 SXM4
//! (src/perf_model/calibrate.rs, src/perf_model/calibrate_bwd.rs), then the published maxima of
//! the FlashAttention-2 paper's text against the predicted maxima. Needs the builds; CI does not
//! run it.

use flashmha::common::dtype::DType;
use flashmha::perf_model::calibrate::{self, CalRow, PaperConfig, Pass};
use flashmha::perf_model::calibrate_bwd::{self, BwdRow, ANCHORS};
use flashmha::perf_model::gpus::{self, GpuSpec};
use flashmha::perf_model::timing::ALT_SCHED_WINDOW;

/// The GPUs FA2 was benchmarked on, by their name in the published tables.
const GPUS: [(&str, &GpuSpec); 2] = [("H100", &gpus::H100), ("A100", &gpus::A100)];

/// The scheduling windows of every prediction: PTX order, and [`ALT_SCHED_WINDOW`].
const WINDOWS: [u32; 2] = [1, ALT_SCHED_WINDOW];

/// `predicted (err)` cells, one per window (`-` for the error where nothing is published).
fn cells(predicted: &[f64], published: Option<f64>) -> String {
    predicted
        .iter()
        .flat_map(|p| {
            [
                format!("{p:.0}"),
                published.map_or("-".to_string(), |q| {
                    format!("{:+.0}%", 100.0 * (p / q - 1.0))
                }),
            ]
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

fn published_cell(p: Option<f64>) -> String {
    p.map_or("-".to_string(), |p| format!("{p:.0}"))
}

fn config_cells(c: &PaperConfig) -> String {
    format!("{} | {} | {}", c.head_dim, c.causal, c.seqlen)
}

fn run_or_fail<T>(r: flashmha::Result<T>) -> super::CliResult<T> {
    r.map_err(|e| super::CliError::Failed(e.to_string()))
}

pub fn run(dirs: &[std::path::PathBuf], dtype: DType) -> super::CliResult<()> {
    let manifests = dirs
        .iter()
        .map(|d| calibrate::load_manifest(d))
        .collect::<flashmha::Result<Vec<_>>>()?;
    let names: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    println!(
        "FlashAttention-2 ({dtype}) built from its sources ({}), emulated, traced and simulated; \
         predicted (modelled) TFLOP/s in PTX order and with a scheduling window of \
         {ALT_SCHED_WINDOW}, against the published figures (src/perf_model/calibrate.rs, \
         calibrate_bwd.rs). Error = predicted / published - 1; '-': no figure published as a \
         number.",
        names.join(", ")
    );
    let mut fwd: Vec<(&str, CalRow)> = Vec::new();
    let mut bwd: Vec<(&str, BwdRow)> = Vec::new();
    println!();
    println!("Forward");
    println!("| GPU | entry | d | causal | seqlen | CTAs/SM | published | PTX order | err | window {ALT_SCHED_WINDOW} | err |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (key, gpu) in GPUS {
        for m in &manifests {
            for r in run_or_fail(calibrate::calibrate(m, gpu, key, dtype, &WINDOWS))? {
                println!(
                    "| {key} | {} | {} | {} | {} | {} |",
                    r.entry,
                    config_cells(&r.config),
                    r.resident,
                    published_cell(r.published_tflops),
                    cells(&r.predicted_tflops, r.published_tflops)
                );
                fwd.push((key, r));
            }
        }
    }
    println!();
    println!(
        "Backward (preprocess + main + dQ conversion; FLOPs 2.5 x the forward's) and forward + \
         backward (the forward of the table above; FLOPs 3.5 x)"
    );
    println!("| GPU | entry | d | causal | seqlen | CTAs/SM | main kernel share | published bwd | bwd PTX order | err | bwd window {ALT_SCHED_WINDOW} | err | fwd+bwd PTX order | fwd+bwd window {ALT_SCHED_WINDOW} |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (key, gpu) in GPUS {
        let fwd_seconds = |c: &PaperConfig, w: usize| {
            fwd.iter()
                .find(|(k, r)| *k == key && r.config == *c)
                .map(|(_, r)| c.flops() / (r.predicted_tflops[w] * 1e12))
        };
        for m in &manifests {
            for r in run_or_fail(calibrate_bwd::calibrate_bwd(
                m,
                gpu,
                key,
                dtype,
                &WINDOWS,
                fwd_seconds,
            ))? {
                println!(
                    "| {key} | {} | {} | {} | {:.0}% | {} | {} | {:.0} | {:.0} |",
                    r.entry,
                    config_cells(&r.config),
                    r.resident,
                    100.0 * r.main_share,
                    published_cell(r.published_tflops),
                    cells(&r.predicted_tflops, r.published_tflops),
                    r.predicted_fwd_bwd_tflops[0],
                    r.predicted_fwd_bwd_tflops[1]
                );
                bwd.push((key, r));
            }
        }
    }
    println!();
    println!("Published maxima (the FlashAttention-2 paper's text) against the predicted maxima over the same passes and configurations (hd64 / hd128, causal and not, 512-16k)");
    println!("| GPU | passes | published max | predicted max PTX order | err | predicted max window {ALT_SCHED_WINDOW} | err | source |");
    println!("|---|---|---|---|---|---|---|---|");
    for (key, passes, value, source) in ANCHORS {
        let paper_dims = |c: &PaperConfig| c.head_dim == 64 || c.head_dim == 128;
        let max_over = |w: usize| {
            let mut best = f64::NAN;
            for p in passes {
                let vals: Vec<f64> = match p {
                    Pass::Forward => fwd
                        .iter()
                        .filter(|(k, r)| *k == key && paper_dims(&r.config))
                        .map(|(_, r)| r.predicted_tflops[w])
                        .collect(),
                    Pass::Backward => bwd
                        .iter()
                        .filter(|(k, _)| *k == key)
                        .map(|(_, r)| r.predicted_tflops[w])
                        .collect(),
                    Pass::ForwardBackward => bwd
                        .iter()
                        .filter(|(k, _)| *k == key)
                        .map(|(_, r)| r.predicted_fwd_bwd_tflops[w])
                        .collect(),
                };
                best = vals.into_iter().fold(best, f64::max);
            }
            best
        };
        let (a, b) = (max_over(0), max_over(1));
        println!(
            "| {key} | {passes:?} | {value:.0} | {a:.0} | {:+.0}% | {b:.0} | {:+.0}% | {source} |",
            100.0 * (a / value - 1.0),
            100.0 * (b / value - 1.0)
        );
    }
    Ok(())
}
