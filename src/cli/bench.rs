//! `flashmha bench`: forward-kernel performance on the FlashAttention papers' benchmark
//! configurations (hidden size 2048, heads = 2048 / d, 16k tokens per batch, batch = 16384 /
//! seqlen, seqlen 512 .. 16k, causal and not). Without a GPU: the per-pipe *modelled* time of
//! every configuration (src/perf_model/), from emulator counters extrapolated per tile (the
//! extrapolation is checked against full emulated launches and its error printed). With
//! `--gpu`: CUDA-event timings next to the model's prediction for that GPU. `--tiles`: the
//! main-loop figures behind the tile choices, before / after / FA2.

use super::table;
use flashmha::common::build_info::{module_of, ptxas_stats, FwdKernelRow, FWD_KERNELS};
use flashmha::common::dtype::DType;
use flashmha::common::options::AttnOptions;
use flashmha::perf_model::gpus::{self, GpuSpec, TensorPath};
use flashmha::perf_model::launch_work::{self, TileCosts};
use flashmha::perf_model::pipes::{self, LaunchShape, Modelled, PIPES};
use flashmha::perf_model::timing::{self as sim, CtaTraces, Predicted};
use flashmha::perf_model::{self, tile_figures};
use flashmha::problem::FwdProblem;
use flashmha::KernelTarget;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Element type (bf16 unless given; `--decode`: every dtype of its configurations unless
    /// given).
    #[arg(long)]
    dtype: Option<DType>,
    /// Head dims to run (default: 64 and 128, as in the FlashAttention papers).
    #[arg(long, value_delimiter = ',')]
    head_dims: Vec<usize>,
    /// Sequence lengths (default 512 .. 16384 by doubling).
    #[arg(long, value_delimiter = ',')]
    seqlens: Vec<usize>,
    /// Hidden size: query heads = hidden / d (= kv heads).
    #[arg(long, default_value_t = 2048)]
    hidden: usize,
    /// Tokens per batch: batch = tokens / seqlen (at least 1).
    #[arg(long, default_value_t = 16384)]
    tokens: usize,
    /// Also run each configuration with a causal mask.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    causal_too: bool,
    /// GPUs to model: a100, a10, l4, h100, t4, b200, rtx5090 or all, or a comma-separated list
    /// of them. T4 (sm_75) runs the Turing kernels,
    /// which are f16 only: its table is f16 whatever `--dtype` says. h100 models both kernel
    /// families on the same shapes: the Ampere (mma.sync) kernels and the sm_90a (TMA + wgmma)
    /// forward, then the two side by side.
    #[arg(long, default_value = "a100")]
    model: String,
    /// Time on the first GPU (and print the model's prediction next to each measurement).
    #[arg(long)]
    gpu: bool,
    /// GPU: timed launches per configuration.
    #[arg(long, default_value_t = 100)]
    iters: usize,
    /// Print the main-loop tile figures of every compiled kernel of `--dtype` (emulator, key
    /// doubling) next to the figures before issue 8, and the whole-run figures next to
    /// FlashAttention-2's (which are whole-run totals).
    #[arg(long)]
    tiles: bool,
    /// `--tiles`: the distribution of q, k, v (normal: N(0, 1), as FlashAttention-2's figures;
    /// uniform: [-1, 1)). Non-tensor counts depend on it (the O rescale runs only when a row
    /// max grows).
    #[arg(long, default_value = "normal")]
    tile_inputs: tile_figures::Inputs,
    /// Paged decode instead of the forward: emulator counters per cached key of the
    /// configurations of `--dtype` and `--head-dims` (all when not given), and the modelled
    /// time on each `--model` GPU that runs the sm_80+ decode (see src/cli/bench_decode.rs).
    #[arg(long)]
    decode: bool,
    /// Calibration: directories (the flag repeated) with FlashAttention-2's kernels built from
    /// its sources outside the repository (manifest.txt + PTX, format in
    /// src/perf_model/calibrate.rs; backward kernels carry `role=bwd_*`); prints their predicted
    /// TFLOP/s beside the published ones (src/cli/bench_calibrate.rs).
    #[arg(long)]
    calibrate: Vec<std::path::PathBuf>,
    /// MLA decode instead of the forward: the modelled time on H100 of the sm_90a and the sm_80+
    /// MLA kernels at 128 query heads, 4k-32k cached tokens, batch 1 / 8 / 64 (see
    /// src/cli/bench_mla.rs).
    #[arg(long)]
    mla: bool,
    /// The backward instead of the forward: its main loop per mma at d64 and d128 (emulator,
    /// query doubling) beside FlashAttention-2's figures, global bytes against compulsory, and
    /// the modelled A100 / H100 time per pipe (see src/cli/bench_backward.rs).
    #[arg(long, conflicts_with_all = ["mla", "decode", "gpu", "tiles", "calibrate"])]
    backward: bool,
    /// Also simulate every compiled tile of each configuration's head dim (the primary row and
    /// the FLASHMHA_FWD_TILE_KERNELS rows of kernels/kernel_table.h) on each simulated GPU:
    /// predicted time per tile, the fastest, and the tile the plan picks for that GPU
    /// (`TileChoice::ForSm`, src/ops/forward/tile.rs).
    #[arg(long, conflicts_with_all = ["mla", "decode", "gpu", "tiles", "calibrate", "backward"])]
    candidates: bool,
}

impl BenchArgs {
    /// `--dtype`, bf16 when not given.
    fn dtype(&self) -> DType {
        self.dtype.unwrap_or(DType::Bf16)
    }
}

/// One benchmark configuration.
#[derive(Clone)]
struct Config {
    problem: FwdProblem,
    kernel: FwdKernelRow,
    seqlen: usize,
    batch_heads: usize,
}

fn head_dims(args: &BenchArgs) -> Vec<usize> {
    if args.head_dims.is_empty() {
        vec![64, 128]
    } else {
        args.head_dims.clone()
    }
}

/// The element type a target is benchmarked in: `--dtype`, or f16 where the target has no
/// kernels for it (Turing and bf16).
fn dtype_on(args: &BenchArgs, target: KernelTarget) -> DType {
    if target.supports(args.dtype()) {
        args.dtype()
    } else {
        DType::F16
    }
}

fn configs_for(args: &BenchArgs, target: KernelTarget) -> super::CliResult<Vec<Config>> {
    let dtype = dtype_on(args, target);
    let seqlens = if args.seqlens.is_empty() {
        vec![512, 1024, 2048, 4096, 8192, 16384]
    } else {
        args.seqlens.clone()
    };
    let mut out = Vec::new();
    for d in head_dims(args) {
        let heads = (args.hidden / d).max(1);
        for &seqlen in &seqlens {
            let batch = (args.tokens / seqlen).max(1);
            for causal in [false, true] {
                if causal && !args.causal_too {
                    continue;
                }
                let options = AttnOptions {
                    causal,
                    ..Default::default()
                };
                let mut problem =
                    FwdProblem::padded(dtype, batch, (seqlen, seqlen), (heads, heads), d, options);
                problem.target = target;
                let kernel = planned_kernel(&problem)?;
                out.push(Config {
                    problem,
                    kernel,
                    seqlen,
                    batch_heads: batch * heads,
                });
            }
        }
    }
    Ok(out)
}

/// The compiled kernel the plan of `p` launches on `p.target`: on Hopper the sm_90a row, or the
/// Ampere one where the plan falls back to it (d80, d96), so that the model and the GPU timings
/// are of the kernel that runs.
fn planned_kernel(p: &FwdProblem) -> super::CliResult<FwdKernelRow> {
    let shape = p.shape()?;
    Ok(flashmha::FwdPlan::new_for(p.target, p.dtype, &shape)?
        .launch()
        .kernel)
}

fn label(c: &Config) -> String {
    let p = &c.problem;
    format!(
        "d{} b{} h{} {}{}",
        p.head_dim,
        p.layout.batch(),
        p.num_heads_q,
        c.seqlen,
        if p.options.causal { " causal" } else { "" }
    )
}

/// The `--model` names, in the order `--help` lists them.
const MODELS: [&str; 8] = ["a100", "a10", "l4", "h100", "t4", "b200", "rtx5090", "all"];

fn gpus_to_model(args: &BenchArgs) -> super::CliResult<Vec<&'static GpuSpec>> {
    // A comma-separated list models each (one emulation of the kernels they share).
    let mut all: Vec<&'static GpuSpec> = Vec::new();
    for name in args.model.to_ascii_lowercase().split(',') {
        let these = match name.trim() {
            "all" => gpus::ALL.to_vec(),
            "a100" => vec![&gpus::A100],
            "a10" => vec![&gpus::A10],
            "l4" => vec![&gpus::L4],
            "h100" => vec![&gpus::H100, &gpus::H100_WGMMA],
            "t4" => vec![&gpus::T4],
            "b200" => vec![&gpus::B200],
            "rtx5090" => vec![&gpus::RTX_5090],
            _ => {
                return Err(super::CliError::UnknownModel {
                    name: args.model.clone(),
                    known: MODELS.to_vec(),
                })
            }
        };
        for g in these {
            if !all.iter().any(|a| std::ptr::eq(*a, g)) {
                all.push(g);
            }
        }
    }
    // The wgmma entry models the kernels that issue wgmma; a build without them has no table.
    Ok(all
        .into_iter()
        .filter(|g| g.path == TensorPath::MmaSync || has_wgmma_kernels(target_of(g)))
        .collect())
}

/// Whether some forward kernel of `target` issues `wgmma.mma_async`.
fn has_wgmma_kernels(target: KernelTarget) -> bool {
    FWD_KERNELS
        .iter()
        .filter(|r| r.target == target)
        .any(issues_wgmma)
}

/// Whether the kernel of `row` issues `wgmma.mma_async`.
fn issues_wgmma(row: &FwdKernelRow) -> bool {
    module_of(row.entry).is_some_and(|m| m.ptx.contains("wgmma.mma_async"))
}

/// The launch shape of `c` on `gpu` (one CTA per Q tile, head and batch item).
fn launch_shape(c: &Config, gpu: &GpuSpec) -> LaunchShape {
    let q_tiles = c.seqlen.div_ceil(c.kernel.block_m as usize) as u64;
    launch_work::fwd_launch_shape(&c.kernel, q_tiles * c.batch_heads as u64, gpu)
}

/// The per-pipe model of `c` on `gpu`.
fn modelled(c: &Config, costs: &TileCosts, gpu: &GpuSpec) -> Modelled {
    let p = &c.problem;
    let work = launch_work::launch_work(
        costs,
        &c.kernel,
        c.batch_heads,
        c.seqlen,
        c.seqlen,
        p.options.causal,
    );
    let shape = launch_shape(c, gpu);
    let (per_sm, _) = pipes::ctas_per_sm(gpu, &shape);
    let q_tiles = c.seqlen.div_ceil(c.kernel.block_m as usize) as u64;
    let dram = perf_model::dram_bytes(
        p,
        work.global_sectors,
        gpu,
        per_sm as u64 * gpu.sms as u64,
        q_tiles,
    );
    pipes::model(&work, gpu, &shape, dram)
}

/// Per kernel entry: its tile costs and the extrapolation's relative errors (plain, causal).
type MeasuredCosts = Vec<(&'static str, TileCosts, [f64; 4], [f64; 4])>;

/// Tile costs per kernel, measured once (three small emulated launches each), with the
/// extrapolation checked against full emulated launches of one head at 1024 x 1024.
fn measure_costs(configs: &[Config]) -> super::CliResult<MeasuredCosts> {
    let mut out: MeasuredCosts = Vec::new();
    for c in configs {
        if out.iter().any(|(e, ..)| *e == c.kernel.entry) {
            continue;
        }
        let costs = launch_work::measure_costs(&c.kernel)?;
        let plain = launch_work::check_against_emulation(&costs, &c.kernel, 1024, false)?;
        let causal = launch_work::check_against_emulation(&costs, &c.kernel, 1024, true)?;
        out.push((c.kernel.entry, costs, plain, causal));
    }
    Ok(out)
}

fn costs_of<'a>(all: &'a MeasuredCosts, entry: &str) -> &'a TileCosts {
    &all.iter().find(|(e, ..)| *e == entry).expect("measured").1
}

fn path_name(gpu: &GpuSpec) -> &'static str {
    match gpu.path {
        TensorPath::MmaSync => "mma.sync",
        TensorPath::Wgmma => "wgmma",
    }
}

/// The two kernel families of one GPU on the same configurations (H100: mma.sync and wgmma),
/// one row per configuration: each family's modelled time, binding pipe and share of the GPU's
/// dense peak.
fn side_by_side(models: &[&'static GpuSpec], configs: &[Config], costs: &MeasuredCosts) {
    let Some(fast) = models.iter().find(|g| g.path == TensorPath::Wgmma) else {
        return;
    };
    let Some(slow) = models
        .iter()
        .find(|g| g.path == TensorPath::MmaSync && g.sm == fast.sm)
    else {
        return;
    };
    let (ts, tf) = (target_of(slow), target_of(fast));
    println!(
        "\n{} vs {} on the same configurations: MODELLED time (binding pipe), % of the dense \
         peak {:.0} TFLOP/s",
        slow.name,
        fast.name,
        fast.dense_peak() / 1e12
    );
    let mut t = table::new(&[
        "config",
        "mma.sync kernel",
        "modelled us (binding)",
        "% dense peak",
        "wgmma kernel",
        "modelled us (binding)",
        "% dense peak",
        "modelled speed-up",
    ]);
    for c in configs.iter().filter(|c| c.kernel.target == tf) {
        let Some(cs) = configs.iter().find(|o| {
            o.kernel.target == ts
                && o.problem.head_dim == c.problem.head_dim
                && o.seqlen == c.seqlen
                && o.problem.options.causal == c.problem.options.causal
        }) else {
            continue;
        };
        let ms = modelled(cs, costs_of(costs, cs.kernel.entry), slow);
        let mf = modelled(c, costs_of(costs, c.kernel.entry), fast);
        let pct = |m: &Modelled| 100.0 * c.problem.flops() / m.seconds() / fast.dense_peak();
        t.add_row(vec![
            label(c),
            cs.kernel.entry.to_string(),
            format!("{:.1} ({})", ms.seconds() * 1e6, ms.binding()),
            format!("{:.0}%", pct(&ms)),
            c.kernel.entry.to_string(),
            format!("{:.1} ({})", mf.seconds() * 1e6, mf.binding()),
            format!("{:.0}%", pct(&mf)),
            format!("{:.2}x", ms.seconds() / mf.seconds()),
        ]);
    }
    println!("{t}");
}

pub fn run(args: &BenchArgs) -> super::CliResult<()> {
    // Batch = tokens / seqlen and heads = hidden / d: a zero would divide by zero.
    super::positive("--seqlens", &args.seqlens)?;
    super::positive("--head-dims", &args.head_dims)?;
    super::positive("--hidden", &[args.hidden])?;
    super::positive("--tokens", &[args.tokens])?;
    // An unknown --model is an error whatever else is asked for.
    let models = gpus_to_model(args)?;
    if !args.calibrate.is_empty() {
        return super::bench_calibrate::run(&args.calibrate, args.dtype());
    }
    if args.decode {
        return super::bench_decode::run(args.dtype, &args.head_dims, &models);
    }
    if args.backward {
        return super::bench_backward::run();
    }
    if args.mla {
        return super::bench_mla::run();
    }
    if args.tiles {
        return run_tiles(args);
    }
    // On a GPU: the device's own target (sm_90a kernels on an H100, Turing's on a T4).
    let backend = if args.gpu {
        Some(flashmha::cuda::CudaBackend::new(0)?)
    } else {
        None
    };
    let mut targets: Vec<KernelTarget> = match &backend {
        Some(b) => vec![b.target()],
        None => models.iter().map(|g| target_of(g)).collect(),
    };
    let mut seen = Vec::new();
    targets.retain(|t| {
        let new = !seen.contains(t);
        seen.push(*t);
        new
    });
    let mut configs = Vec::new();
    for t in targets {
        configs.extend(configs_for(args, t)?);
    }
    // On a GPU: the tile the plan picks for that device (TileChoice::ForSm), timed and
    // predicted.
    if let Some(b) = &backend {
        let (major, minor) = b.compute_capability();
        for c in &mut configs {
            let p = &c.problem;
            let sm = (major * 10 + minor).max(0) as u32;
            let tile = flashmha::TileChoice::ForSm(sm);
            c.kernel = flashmha::FwdPlan::new_tiled(p.target, tile, p.dtype, &p.shape()?)?
                .launch()
                .kernel;
            c.problem.tile = flashmha::TileChoice::Entry(c.kernel.entry);
        }
    }
    // --candidates: the same configurations on every other compiled tile of their head dim.
    let tiles: Vec<Config> = if args.candidates {
        configs.iter().flat_map(other_tiles).collect()
    } else {
        Vec::new()
    };
    let all: Vec<Config> = configs.iter().chain(&tiles).cloned().collect();
    let bar = super::progress::bar(all.len(), "kernels measured");
    bar.set_message("emulating tile costs");
    let costs = measure_costs(&all)?;
    bar.set_message("tracing one CTA per kernel for the SM simulation");
    // On a GPU the prediction is for the part measured.
    let gpu_spec = backend.as_ref().map(|b| {
        let (major, minor) = b.compute_capability();
        spec_for(major, minor, b.target())
    });
    let traced: Vec<&GpuSpec> = gpu_spec.map_or_else(|| models.clone(), |g| vec![g]);
    let traces = measure_traces(&all, &traced)?;
    bar.finish_and_clear();
    println!(
        "Work per launch extrapolated from emulated launches (per CTA + per KV tile + per masked \
         tile); extrapolation error against a full emulated launch of one head, 1024 x 1024 \
         (warp-instructions, tensor FLOPs, smem wavefronts incl. wgmma operand and TMA bytes, \
         32B sectors):"
    );
    for (entry, _, plain, causal) in &costs {
        let pct = |e: &[f64; 4]| {
            e.iter()
                .map(|x| format!("{:+.2}%", 100.0 * x))
                .collect::<Vec<_>>()
                .join(" ")
        };
        println!("  {entry}: plain {}; causal {}", pct(plain), pct(causal));
    }
    if let (Some(backend), Some(spec)) = (&backend, gpu_spec) {
        return run_gpu(args, backend, spec, &configs, (&costs, &traces));
    }
    for gpu in &models {
        let target = target_of(gpu);
        println!(
            "\n{} runs the {target} kernels, {}:",
            gpu.name,
            dtype_on(args, target)
        );
        let peak_note = if gpu.dense_peak() > gpu.flops_peak() {
            format!(
                "; the GPU's dense peak, reached only by wgmma: {:.0} TFLOP/s",
                gpu.dense_peak() / 1e12
            )
        } else {
            String::new()
        };
        println!(
            "\n{} ({} SMs, {:.0} MHz, {} peak {:.0} TFLOP/s{peak_note}): MODELLED microseconds \
             per pipe (no latency model: each pipe at full rate; the slowest binds)",
            gpu.name,
            gpu.sms,
            gpu.clock_hz / 1e6,
            path_name(gpu),
            gpu.flops_peak() / 1e12
        );
        print_sim_params(gpu);
        let pipe_cols: Vec<String> = PIPES.iter().map(|p| format!("{p} us (modelled)")).collect();
        let mut header: Vec<&str> = vec!["config"];
        header.extend(pipe_cols.iter().map(String::as_str));
        header.extend([
            "binding",
            "modelled TFLOP/s",
            "% tensor peak",
            "CTAs/SM (limit), wave eff.",
            "predicted us (SM sim, PTX order)",
            "predicted TFLOP/s (PTX order)",
            "predicted / roofline time",
            "predicted TFLOP/s (window 16)",
            "what-if: window 16 at 2 CTAs/SM (TFLOP/s)",
        ]);
        let mut t = table::new(&header);
        for c in configs.iter().filter(|c| c.kernel.target == target) {
            let m = modelled(c, costs_of(&costs, c.kernel.entry), gpu);
            let mut row = vec![label(c)];
            row.extend(m.pipe_s.iter().map(|s| format!("{:.1}", s * 1e6)));
            row.extend([
                m.binding().to_string(),
                format!("{:.0}", c.problem.flops() / m.seconds() / 1e12),
                format!(
                    "{:.0}%",
                    100.0 * c.problem.flops() / m.seconds() / gpu.flops_peak()
                ),
                format!(
                    "{} ({}), {:.2}",
                    m.ctas_per_sm, m.occupancy_limit, m.wave_efficiency
                ),
            ]);
            let in_order = predicted(c, &traces, gpu, &m, 1)?;
            let windowed = predicted(c, &traces, gpu, &m, sim::ALT_SCHED_WINDOW)?;
            // A kernel held at 1 CTA per SM by shared memory: its trace simulated 2 per SM, as
            // if a tile of half the shared memory (single-buffered K/V) fitted twice with the
            // same instructions and registers (an upper bound on that retile: the smaller tile
            // loses its in-CTA copy overlap).
            let what_if = if m.ctas_per_sm == 1 && m.occupancy_limit == "shared memory" {
                predicted_at(c, &traces, gpu, &m, sim::ALT_SCHED_WINDOW, 2)?
            } else {
                None
            };
            match (in_order, windowed) {
                (Some(pr), Some(pw)) => row.extend([
                    format!("{:.1}", pr.seconds * 1e6),
                    format!("{:.0}", c.problem.flops() / pr.seconds / 1e12),
                    format!("{:.2}", pr.seconds / m.seconds()),
                    format!("{:.0}", c.problem.flops() / pw.seconds / 1e12),
                    what_if.map_or("-".into(), |p| {
                        format!("{:.0}", c.problem.flops() / p.seconds / 1e12)
                    }),
                ]),
                _ => row.extend(std::iter::repeat_n("-".to_string(), 5)),
            }
            t.add_row(row);
        }
        println!("{t}");
        print_breakdowns(gpu, &configs, &traces)?;
    }
    side_by_side(&models, &configs, &costs);
    if args.candidates {
        print_candidates(&models, &all, &costs, &traces)?;
    }
    Ok(())
}

/// `c` on each compiled row of its target, dtype and head dims other than its own (the head
/// dim's other tiles: kernels/kernel_table.h, FLASHMHA_FWD_TILE_KERNELS).
fn other_tiles(c: &Config) -> Vec<Config> {
    let k = &c.kernel;
    FWD_KERNELS
        .iter()
        .filter(|r| {
            r.target == k.target
                && r.dtype == k.dtype
                && r.head_dim == k.head_dim
                && r.head_dim_v == k.head_dim_v
                && r.entry != k.entry
        })
        .map(|r| {
            let mut t = c.clone();
            t.kernel = *r;
            t.problem.tile = flashmha::TileChoice::Entry(r.entry);
            t
        })
        .collect()
}

/// Registers and spill bytes of `row` on `gpu`'s architecture (ptxas, this build).
fn regs_on(row: &FwdKernelRow, gpu: &GpuSpec) -> String {
    let arch = format!("sm_{}", gpu.sm);
    ptxas_stats(row.entry)
        .find(|s| s.arch == arch)
        .map_or("-".into(), |s| {
            format!(
                "{}, {} B",
                s.registers,
                s.spill_store_bytes + s.spill_load_bytes
            )
        })
}

/// The tile of a head dim a plan for `gpu` launches (`TileChoice::ForSm`).
fn planned_tile(c: &Config, gpu: &GpuSpec) -> super::CliResult<&'static str> {
    let p = &c.problem;
    Ok(flashmha::FwdPlan::new_tiled(
        p.target,
        flashmha::TileChoice::ForSm(gpu.sm),
        p.dtype,
        &p.shape()?,
    )?
    .launch()
    .kernel
    .entry)
}

/// Per simulated GPU and configuration: every compiled tile's predicted time (window 16),
/// residency and ptxas figures, the fastest 0-spill tile and the plan's choice for that GPU.
fn print_candidates(
    models: &[&'static GpuSpec],
    all: &[Config],
    costs: &MeasuredCosts,
    traces: &MeasuredTraces,
) -> super::CliResult<()> {
    for gpu in models.iter().filter(|g| sim::models(g)) {
        let target = target_of(gpu);
        println!(
            "\n{}: every compiled tile of each configuration's head dim, PREDICTED (SM simulation, \
             window {}; modelled, calibration in bench/results/fa2_calibration.md); \
             * = fastest with 0 spills, P = the plan's choice for sm_{} (TileChoice::ForSm)",
            gpu.name,
            sim::ALT_SCHED_WINDOW,
            gpu.sm
        );
        let mut t = table::new(&[
            "config",
            "tile (entry)",
            "block m x n / warps",
            "smem B",
            "regs, spills",
            "CTAs/SM (limit)",
            "predicted us",
            "predicted TFLOP/s",
            "time / primary",
            "",
        ]);
        let primaries: Vec<&Config> = all
            .iter()
            .filter(|c| {
                c.kernel.target == target && c.problem.tile == flashmha::TileChoice::Primary
            })
            .collect();
        for base in primaries {
            let same: Vec<&Config> = all
                .iter()
                .filter(|c| {
                    c.kernel.target == target
                        && c.kernel.head_dim == base.kernel.head_dim
                        && c.kernel.head_dim_v == base.kernel.head_dim_v
                        && c.seqlen == base.seqlen
                        && c.problem.options.causal == base.problem.options.causal
                })
                .collect();
            let mut rows = Vec::new();
            for c in &same {
                let m = modelled(c, costs_of(costs, c.kernel.entry), gpu);
                let p = predicted(c, traces, gpu, &m, sim::ALT_SCHED_WINDOW)?;
                rows.push((*c, m, p));
            }
            let primary_s = rows[0].2.as_ref().map(|p| p.seconds);
            let spill_free = |c: &Config| {
                ptxas_stats(c.kernel.entry).all(|s| s.spill_store_bytes + s.spill_load_bytes == 0)
            };
            let fastest = rows
                .iter()
                .filter(|(c, _, p)| p.is_some() && spill_free(c))
                .min_by(|a, b| {
                    let s = |r: &(&Config, Modelled, Option<Predicted>)| {
                        r.2.as_ref().map_or(f64::INFINITY, |p| p.seconds)
                    };
                    s(a).total_cmp(&s(b))
                })
                .map(|(c, ..)| c.kernel.entry);
            let chosen = planned_tile(base, gpu)?;
            for (c, m, p) in &rows {
                let k = &c.kernel;
                let mark = format!(
                    "{}{}",
                    if Some(k.entry) == fastest { "*" } else { "" },
                    if k.entry == chosen { "P" } else { "" }
                );
                t.add_row(vec![
                    label(c),
                    k.entry.to_string(),
                    format!("{}x{} / {}", k.block_m, k.block_n, k.num_warps),
                    k.smem_bytes.to_string(),
                    regs_on(k, gpu),
                    format!("{} ({})", m.ctas_per_sm, m.occupancy_limit),
                    p.as_ref()
                        .map_or("-".into(), |p| format!("{:.1}", p.seconds * 1e6)),
                    p.as_ref().map_or("-".into(), |p| {
                        format!("{:.0}", c.problem.flops() / p.seconds / 1e12)
                    }),
                    match (p, primary_s) {
                        (Some(p), Some(b)) => format!("{:.3}", p.seconds / b),
                        _ => "-".into(),
                    },
                    mark,
                ]);
            }
        }
        println!("{t}");
    }
    Ok(())
}

/// Per kernel entry: its traced one-Q-tile launches for the SM simulation.
type MeasuredTraces = Vec<(&'static str, CtaTraces)>;

/// Traces the kernels of `configs` that some modelled GPU simulates (the mma.sync kernels).
fn measure_traces(configs: &[Config], models: &[&GpuSpec]) -> super::CliResult<MeasuredTraces> {
    let mut out: MeasuredTraces = Vec::new();
    for c in configs {
        let simulated = models
            .iter()
            .any(|g| sim::models(g) && target_of(g) == c.kernel.target);
        if simulated && !out.iter().any(|(e, _)| *e == c.kernel.entry) {
            out.push((c.kernel.entry, CtaTraces::measure(&c.kernel)?));
        }
    }
    Ok(out)
}

/// The SM simulation's prediction of `c` on `gpu` with a scheduling window of `window` (DRAM
/// time from the per-pipe model `m`); `None` where it does not model the kernel.
fn predicted(
    c: &Config,
    traces: &MeasuredTraces,
    gpu: &GpuSpec,
    m: &Modelled,
    window: u32,
) -> super::CliResult<Option<Predicted>> {
    predicted_at(
        c,
        traces,
        gpu,
        m,
        window,
        sim::resident_ctas(&c.kernel, gpu),
    )
}

/// [`predicted`] with `resident` CTAs per SM instead of the kernel's own occupancy: the
/// retile's what-if (today's instruction stream at a residency a smaller tile would allow).
fn predicted_at(
    c: &Config,
    traces: &MeasuredTraces,
    gpu: &GpuSpec,
    m: &Modelled,
    window: u32,
    resident: u32,
) -> super::CliResult<Option<Predicted>> {
    let Some((_, tr)) = traces.iter().find(|(e, _)| *e == c.kernel.entry) else {
        return Ok(None);
    };
    if !sim::models(gpu) {
        return Ok(None);
    }
    let clocks = tr.clocks(resident, &sim::sm_config_window(gpu, window))?;
    Ok(Some(sim::predict(
        &clocks,
        &c.kernel,
        c.batch_heads,
        (c.seqlen, c.seqlen),
        c.problem.options.causal,
        gpu,
        PIPES
            .iter()
            .position(|&p| p == "DRAM")
            .map_or(0.0, |i| m.pipe_s[i]),
    )))
}

/// Per simulated kernel of `gpu`: where the sub-partitions' clocks go in the SM simulation of
/// its resident CTAs at 16 KV tiles (what the predicted time is made of).
fn print_breakdowns(
    gpu: &GpuSpec,
    configs: &[Config],
    traces: &MeasuredTraces,
) -> super::CliResult<()> {
    if !sim::models(gpu) {
        return Ok(());
    }
    let target = target_of(gpu);
    for ((entry, tr), window) in traces
        .iter()
        .flat_map(|t| [(t, 1), (t, sim::ALT_SCHED_WINDOW)])
    {
        let cfg = sim::sm_config_window(gpu, window);
        let Some(c) = configs
            .iter()
            .find(|c| c.kernel.entry == *entry && c.kernel.target == target)
        else {
            continue;
        };
        let resident = sim::resident_ctas(&c.kernel, gpu);
        let run = tr.breakdown(resident, &cfg)?;
        let sp_clocks = (run.cycles * cfg.subpartitions as u64).max(1) as f64;
        let pct = |x: u64| 100.0 * x as f64 / sp_clocks;
        let stalls: Vec<String> = run
            .stalls
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{k} {:.0}%", pct(*n)))
            .collect();
        println!(
            "  {entry}, {resident} CTA(s)/SM, 16 KV tiles, window {window}: {} clocks; \
             sub-partition clocks: issuing {:.0}%, tensor pipe busy {:.0}%; idle: {}; PTX moves \
             free: {}",
            run.cycles,
            pct(run.issued),
            pct(run.tensor_busy),
            stalls.join(", "),
            run.free_instructions
        );
    }
    Ok(())
}

/// The SM simulation's parameters of `gpu`, each with its source (assumptions marked).
fn print_sim_params(gpu: &GpuSpec) {
    if !sim::models(gpu) {
        println!(
            "{}: no SM-simulation prediction for this kernel family; the per-pipe bounds only.",
            gpu.name
        );
        return;
    }
    println!(
        "{}: SM-simulation parameters (clocks; see src/perf_model/timing.rs for the references):",
        gpu.name
    );
    for p in sim::params(gpu) {
        let (tag, src) = match p.source {
            sim::Source::Cited(s) => ("", s),
            sim::Source::Assumption(s) => ("ASSUMPTION: ", s),
        };
        println!("  {:<28} {:>8.2}  {tag}{src}", p.name, p.value);
    }
}

/// bench/results/fwd_tiles_before.tsv: figures before the retile and FA2's, per head dim.
const TILES_BEFORE: &str = include_str!("../../bench/results/fwd_tiles_before.tsv");

fn tiles_before(d: u32) -> Vec<&'static str> {
    TILES_BEFORE
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .find(|f| f.first().and_then(|x| x.parse::<u32>().ok()) == Some(d))
        .map(|f| f[1..].to_vec())
        .unwrap_or_else(|| vec!["-"; 8])
}

fn run_tiles(args: &BenchArgs) -> super::CliResult<()> {
    println!(
        "flashmha bench --tiles: {} on the emulator, q/k/v drawn from {}. Per m16n8k16-equivalent \
         mma (a Turing m16n8k8 counts half). Main loop: key doubling (sq = block_m, sk {} -> {}), \
         compared with the kernels before issue 8 (old, same basis). Whole run: the whole sk {} \
         launch (prologue and epilogue included), compared with FlashAttention-2's forward tile \
         (FA2), whose figures are whole-run totals (bench/results/fwd_tiles_before.tsv). \
         Wavefronts include the cp.async stores.",
        args.dtype(),
        args.tile_inputs,
        tile_figures::BASE_KEYS,
        2 * tile_figures::BASE_KEYS,
        2 * tile_figures::BASE_KEYS,
    );
    // The figures are per mma.sync (ldmatrix / mma, wavefronts / mma): the wgmma kernels have
    // neither, and their per-pipe model is in the --model tables.
    let rows: Vec<_> = FWD_KERNELS
        .iter()
        .filter(|r| r.dtype == args.dtype() && !issues_wgmma(r))
        .filter(|r| args.head_dims.is_empty() || args.head_dims.contains(&(r.head_dim as usize)))
        .collect();
    let bar = super::progress::bar(rows.len(), "kernels");
    let mut t = table::new(&[
        "kernel",
        "tile (old -> new; FA2)",
        "regs, spills",
        "ldmatrix/mma: main loop (old) | whole run (FA2)",
        "wavefronts/mma: main loop [ideal] (old) | whole run (FA2)",
        "non-tensor/mma: main loop (old) | whole run (FA2)",
        "global B / compulsory: sq=block_m, 1024^2; / tile model 1024^2",
    ]);
    for r in rows {
        bar.set_message(r.entry);
        let f = tile_figures::measure(r, args.tile_inputs)?;
        // The old and FA2 figures are of the sm_80+ kernels with d_v = d_qk.
        let old = if r.target == KernelTarget::Turing || r.head_dim_v != r.head_dim {
            vec!["-"; 8]
        } else {
            tiles_before(r.head_dim)
        };
        let stats: Vec<_> = ptxas_stats(r.entry).collect();
        let regs = stats
            .iter()
            .map(|s| format!("{} {}", s.arch, s.registers))
            .collect::<Vec<_>>()
            .join(", ");
        let spills: u32 = stats
            .iter()
            .map(|s| s.spill_store_bytes + s.spill_load_bytes)
            .sum();
        t.add_row(vec![
            r.entry.to_string(),
            format!(
                "{} -> {}x{}/{}w; {}",
                old[0], r.block_m, r.block_n, r.num_warps, old[4]
            ),
            format!("{regs}; {spills} B"),
            format!(
                "{:.4} ({}) | {:.4} ({})",
                f.ldmatrix_per_mma, old[1], f.whole_run_ldmatrix_per_mma, old[5]
            ),
            format!(
                "{:.3} [{:.3}] ({}) | {:.3} ({})",
                f.wavefronts_per_mma,
                f.ideal_wavefronts_per_mma,
                old[2],
                f.whole_run_wavefronts_per_mma,
                old[6]
            ),
            format!(
                "{:.3} ({}) | {:.3} ({})",
                f.non_tensor_per_mma, old[3], f.whole_run_non_tensor_per_mma, old[7]
            ),
            format!(
                "{:.3}, {:.3}; {:.3}",
                f.bytes_vs_compulsory_one_tile,
                f.bytes_vs_compulsory_1024,
                f.bytes_vs_tile_model_1024
            ),
        ]);
        bar.inc(1);
    }
    bar.finish_and_clear();
    println!("{t}");
    Ok(())
}

/// The kernels a modelled GPU entry runs: the wgmma entry the sm_90a forward, an mma.sync entry
/// the Ampere kernels from sm_80 on (H100 included) and the Turing ones below.
pub(super) fn target_of(gpu: &GpuSpec) -> KernelTarget {
    match gpu.path {
        TensorPath::Wgmma => KernelTarget::Hopper,
        TensorPath::MmaSync if gpu.sm >= 80 => KernelTarget::Ampere,
        TensorPath::MmaSync => KernelTarget::Turing,
    }
}

/// The modelled GPU closest to a compute capability, on the tensor path of `target`'s kernels
/// (an H100 running the sm_90a forward is modelled at the wgmma rate).
fn spec_for(major: i32, minor: i32, target: KernelTarget) -> &'static GpuSpec {
    let sm = (major * 10 + minor) as u32;
    gpus::ALL
        .iter()
        .copied()
        .find(|g| g.sm == sm && target_of(g) == target)
        .or_else(|| gpus::ALL.iter().copied().find(|g| g.sm == sm))
        .unwrap_or(&gpus::A100)
}

/// Columns of the `--gpu` table.
const GPU_HEADER: [&str; 9] = [
    "config",
    "median ms",
    "p10 ms",
    "p90 ms",
    "TFLOP/s (median)",
    "modelled ms (binding pipe)",
    "measured / modelled",
    "predicted ms (SM sim, window 16)",
    "measured / predicted",
];

/// One row of the `--gpu` table: `label`'s measured milliseconds `ms` (sorted), its per-pipe
/// model `m` and the SM simulation's prediction `p` (`None` where the simulation does not model
/// the kernel).
fn gpu_row(
    label: String,
    flops: f64,
    ms: &[f32],
    m: &Modelled,
    p: Option<&Predicted>,
) -> Vec<String> {
    let at = |q: f64| {
        ms.get(((ms.len().max(1) - 1) as f64 * q).round() as usize)
            .map_or(f64::NAN, |&x| x as f64)
    };
    let median = at(0.5);
    vec![
        label,
        format!("{median:.4}"),
        format!("{:.4}", at(0.1)),
        format!("{:.4}", at(0.9)),
        format!("{:.1}", flops / (median * 1e-3) / 1e12),
        format!("{:.4} ({})", m.seconds() * 1e3, m.binding()),
        format!("{:.2}", median * 1e-3 / m.seconds()),
        p.map_or("-".into(), |p| format!("{:.4}", p.seconds * 1e3)),
        p.map_or("-".into(), |p| format!("{:.2}", median * 1e-3 / p.seconds)),
    ]
}

fn run_gpu(
    args: &BenchArgs,
    backend: &flashmha::cuda::CudaBackend,
    spec: &'static GpuSpec,
    configs: &[Config],
    (costs, traces): (&MeasuredCosts, &MeasuredTraces),
) -> super::CliResult<()> {
    let (major, minor) = backend.compute_capability();
    println!(
        "flashmha bench on GPU (compute capability {major}.{minor}): CUDA events, median of {} \
         launches after 10 warm-up, 4 input sets rotated; modelled = the per-pipe model of {} \
         (the upper bound), predicted = its SM simulation (modelled; {})",
        args.iters,
        spec.name,
        super::bench_decode::CALIBRATION_NOTE
    );
    let bar = super::progress::bar(configs.len(), "configs");
    let mut t = table::new(&GPU_HEADER);
    for c in configs {
        bar.set_message(label(c));
        let p = &c.problem;
        let shape = p.shape()?;
        let iters = args.iters.max(1);
        let plan = flashmha::FwdPlan::new_tiled(p.target, p.tile, p.dtype, &shape)?;
        let mut ms = flashmha::cuda::time_forward(backend, &plan, 4, 10, iters)?;
        ms.sort_by(f32::total_cmp);
        let m = modelled(c, costs_of(costs, c.kernel.entry), spec);
        let pred = predicted(c, traces, spec, &m, sim::ALT_SCHED_WINDOW)?;
        t.add_row(gpu_row(label(c), p.flops(), &ms, &m, pred.as_ref()));
        bar.inc(1);
    }
    bar.finish_and_clear();
    println!("{t}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_rows_put_the_prediction_beside_the_measurement() {
        // A measurement of 2 ms median against a per-pipe bound of 1 ms and a prediction of
        // 1.6 ms: the table carries both and both ratios.
        let m = Modelled {
            pipe_s: [1e-3, 0.5e-3, 0.0, 0.0, 0.0, 0.0, 0.0, 0.2e-3],
            ctas_per_sm: 1,
            occupancy_limit: "registers",
            wave_efficiency: 1.0,
            waves: 1,
        };
        let p = Predicted {
            seconds: 1.6e-3,
            sm_seconds: 1.6e-3,
            dram_seconds: 0.2e-3,
            ctas_per_sm: 1,
        };
        let ms = [1.5f32, 2.0, 2.5];
        let row = gpu_row("d128".into(), 1e12, &ms, &m, Some(&p));
        assert_eq!(row.len(), GPU_HEADER.len());
        let col = |name: &str| &row[GPU_HEADER.iter().position(|h| *h == name).unwrap()];
        assert_eq!(col("median ms"), "2.0000");
        assert_eq!(col("modelled ms (binding pipe)"), "1.0000 (tensor)");
        assert_eq!(col("measured / modelled"), "2.00");
        assert_eq!(col("predicted ms (SM sim, window 16)"), "1.6000");
        assert_eq!(col("measured / predicted"), "1.25");
        // Where the simulation does not model the kernel the columns say so.
        let row = gpu_row("d128".into(), 1e12, &ms, &m, None);
        assert_eq!(row[7], "-");
        assert_eq!(row[8], "-");
    }
}
