//! `flashmha bench`: forward-kernel performance. On a GPU: TFLOP/s from CUDA events (median of
//! many launches after warm-up, rotating input sets). Without one: the emulator's counters per
//! configuration and a *modelled* A100/H100 time derived from them (never a measurement).

use super::table;
use flashmha::build_info::FWD_KERNELS;
use flashmha::dtype::DType;
use flashmha::emulated::{self, HostInputs};
use flashmha::options::AttnOptions;
use flashmha::perf_model::{self, Bound, A100, H100};
use flashmha::problem::{FwdProblem, SeqLayout};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Element type.
    #[arg(long, default_value = "bf16")]
    dtype: DType,
    /// Head dims to run (default: every compiled one).
    #[arg(long, value_delimiter = ',')]
    head_dims: Vec<usize>,
    /// Sequence length of q and k.
    #[arg(long, default_value_t = 1024)]
    seqlen: usize,
    /// Query heads (= kv heads).
    #[arg(long, default_value_t = 1)]
    heads: usize,
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Also run each configuration with a causal mask.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    causal_too: bool,
    /// Time on the first GPU instead of modelling from the emulator.
    #[arg(long)]
    gpu: bool,
    /// GPU: timed launches per configuration.
    #[arg(long, default_value_t = 100)]
    iters: usize,
    /// Paged decode instead of the forward: emulator counters per cached key (see
    /// src/cli/bench_decode.rs); the other options are ignored.
    #[arg(long)]
    decode: bool,
}

fn problems(args: &BenchArgs) -> Vec<FwdProblem> {
    let dims: Vec<usize> = if args.head_dims.is_empty() {
        FWD_KERNELS
            .iter()
            .filter(|r| r.dtype == args.dtype)
            .map(|r| r.head_dim as usize)
            .collect()
    } else {
        args.head_dims.clone()
    };
    let mut out = Vec::new();
    for d in dims {
        for causal in [false, true] {
            if causal && !args.causal_too {
                continue;
            }
            out.push(FwdProblem::contiguous(
                args.dtype,
                SeqLayout::Padded {
                    batch: args.batch,
                    seqlen_q: args.seqlen,
                    seqlen_k: args.seqlen,
                },
                args.heads,
                args.heads,
                d,
                AttnOptions {
                    causal,
                    ..Default::default()
                },
            ));
        }
    }
    out
}

fn label(p: &FwdProblem) -> String {
    let (sq, sk) = p.layout.max_seqlens();
    format!(
        "{} d{} b{} h{} {}x{}{}",
        p.dtype,
        p.head_dim,
        p.layout.batch(),
        p.num_heads_q,
        sq,
        sk,
        if p.options.causal { " causal" } else { "" }
    )
}

pub fn run(args: &BenchArgs) -> flashmha::Result<()> {
    if args.decode {
        return super::bench_decode::run();
    }
    let problems = problems(args);
    if args.gpu {
        return run_gpu(args, &problems);
    }
    println!(
        "flashmha bench (no GPU): emulator counters and MODELLED times = max(tensor FLOPs / peak, \
         DRAM bytes / bandwidth, warp-instructions / issue rate), a roofline that assumes the \
         grid fills the GPU; DRAM bytes = compulsory when K/V fit in L2, else every sector."
    );
    let bar = super::progress::bar(problems.len(), "configs");
    let mut t = table::new(&[
        "config",
        "warp-instr",
        "main-loop non-mma / mma",
        "global B: / compulsory, / tile model",
        "32B-sector efficiency",
        "smem wavefronts / ideal",
        "+entropy warp-instr",
        "A100 modelled us (TFLOP/s, bound)",
        "H100 modelled us (TFLOP/s, bound)",
    ]);
    for p in &problems {
        bar.set_message(label(p));
        let emulate = |p: &FwdProblem| -> flashmha::Result<flashmha::emulator::Counters> {
            let run = emulated::forward(p, &HostInputs::random(p, 7))?;
            match run.report.findings.first() {
                None => Ok(run.report.counters),
                Some(f) => Err(flashmha::Error::Emulator(format!(
                    "{}: finding {f}",
                    label(p)
                ))),
            }
        };
        let c = emulate(p)?;
        // Main loop by difference: doubling the keys adds only main-loop iterations, so the
        // added non-mma instructions per added mma is the main loop's ratio, prologue and
        // epilogue excluded. Causal runs change their tile ranges too, so only plain ones.
        let main_loop = if p.options.causal || p.options.window.is_some() {
            "-".to_string()
        } else {
            let c2 = emulate(&with_keys_doubled(p))?;
            let d_mma = c2
                .mma_instructions
                .saturating_sub(c.mma_instructions)
                .max(1);
            let d_all = c2.warp_instructions.saturating_sub(c.warp_instructions);
            format!("{:.2}", (d_all - d_mma) as f64 / d_mma as f64)
        };
        // The cost of the fused entropy output over a plain forward (no LSE either).
        let mut with_entropy = p.clone();
        with_entropy.entropy_len = Some(p.row_stats_len());
        let c_entropy = emulate(&with_entropy)?;
        let kernel = FWD_KERNELS
            .iter()
            .find(|r| r.dtype == p.dtype && r.head_dim as usize == p.head_dim)
            .expect("bench runs compiled head dims");
        let requested = c.global_bytes_requested() as f64;
        let tile_model =
            perf_model::tile_model_bytes(p, kernel.block_m as usize, kernel.block_n as usize)
                .map_or("-".to_string(), |m| format!("{:.3}", requested / m));
        let useful = p.flops();
        let modelled = |gpu| {
            let m = perf_model::model(&c, gpu, perf_model::dram_bytes(p, &c, gpu));
            let bound = match m.bound() {
                Bound::Tensor => "tensor",
                Bound::Dram => "DRAM",
                Bound::Issue => "issue",
            };
            format!(
                "{:.1} ({:.0}, {bound})",
                m.seconds() * 1e6,
                useful / m.seconds() / 1e12
            )
        };
        t.add_row(vec![
            label(p),
            c.warp_instructions.to_string(),
            main_loop,
            format!("{:.2}, {tile_model}", requested / p.compulsory_bytes()),
            format!("{:.3}", requested / (c.global_sectors * 32) as f64),
            format!("{} / {}", c.shared_wavefronts, c.shared_wavefronts_ideal),
            format!(
                "{:+.1}%",
                100.0 * (c_entropy.warp_instructions as f64 / c.warp_instructions as f64 - 1.0)
            ),
            modelled(&A100),
            modelled(&H100),
        ]);
        bar.inc(1);
    }
    bar.finish_and_clear();
    println!("{t}");
    Ok(())
}

/// The same problem with twice the keys (contiguous padded layouts, as `problems` builds).
fn with_keys_doubled(p: &FwdProblem) -> FwdProblem {
    let (sq, sk) = p.layout.max_seqlens();
    FwdProblem::contiguous(
        p.dtype,
        SeqLayout::Padded {
            batch: p.layout.batch(),
            seqlen_q: sq,
            seqlen_k: 2 * sk,
        },
        p.num_heads_q,
        p.num_heads_kv,
        p.head_dim,
        p.options,
    )
}

fn run_gpu(args: &BenchArgs, problems: &[FwdProblem]) -> flashmha::Result<()> {
    let backend = flashmha::cuda::CudaBackend::new(0)?;
    let (major, minor) = backend.compute_capability();
    println!("flashmha bench on GPU (compute capability {major}.{minor}): CUDA events, median of {} launches after 10 warm-up, 4 input sets rotated", args.iters);
    let bar = super::progress::bar(problems.len(), "configs");
    let mut t = table::new(&[
        "config",
        "median ms",
        "p10 ms",
        "p90 ms",
        "TFLOP/s (median)",
    ]);
    for p in problems {
        bar.set_message(label(p));
        let mut ms = flashmha::cuda::time_forward(&backend, p, 4, 10, args.iters.max(1))?;
        ms.sort_by(f32::total_cmp);
        let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize] as f64;
        let median = at(0.5);
        t.add_row(vec![
            label(p),
            format!("{median:.4}"),
            format!("{:.4}", at(0.1)),
            format!("{:.4}", at(0.9)),
            format!("{:.1}", p.flops() / (median * 1e-3) / 1e12),
        ]);
        bar.inc(1);
    }
    bar.finish_and_clear();
    println!("{t}");
    Ok(())
}
