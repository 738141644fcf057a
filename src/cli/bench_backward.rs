//! `flashmha bench --backward`: the backward (issue 21 item 5) on the emulator: the main loop's
//! figures per m16n8k16 `mma` at d64 and d128 by query doubling (1024 -> 2048 queries at 1024
//! keys, one head, non-causal, f16), beside FlashAttention-2's figures as the issue states them;
//! whole-backward global bytes against compulsory at 1024^2 and 2048^2 with the dQ reduction's
//! share; and the per-pipe *modelled* time of each launch on A100 and H100 (src/perf_model/
//! backward.rs) with the binding pipe; then, for every sm_80+ GPU entry, the latency-aware
//! prediction of the SM simulation (CTA 0 of each launch traced and replayed at the residency
//! the launch gives each SM, `backward::predict_launch`) per launch and for the whole backward
//! in time and TFLOP/s, beside the per-pipe bound. bench/results/bwd_bench.txt holds the
//! output.

use flashmha::perf_model::backward::{self, LaunchCounters, PerMma};
use flashmha::perf_model::decode::dram_seconds;
use flashmha::perf_model::gpus::{self, GpuSpec, TensorPath, A100, H100};
use flashmha::perf_model::pipes::PIPES;
use flashmha::perf_model::timing::ALT_SCHED_WINDOW;

/// FlashAttention-2's backward figures per main-loop mma as issue 21 states them (measured on
/// this emulator by query doubling by a previous session): head dim, non-tensor, ldmatrix,
/// shared wavefronts, warp atomics (`None`: not stated).
const FA2_PER_MMA: [(usize, f64, f64, f64, Option<f64>); 2] = [
    (64, 2.934, 0.450, 2.100, None),
    (128, 2.203, 0.450, 2.000, Some(0.1)),
];

/// Hidden size of the modelled configuration (heads = hidden / d), as the forward bench.
const HIDDEN: usize = 2048;
/// Batch of the modelled configuration (16k tokens at 2048 per sequence).
const BATCH: usize = 8;

fn per_mma_row(who: &str, d: usize, m: &PerMma) -> String {
    format!(
        "{d:<4} {who:<26} {:>10.3} {:>9.3} {:>8.3} ({:.3}) {:>8.3} ({:.1}) {:>9.1}",
        m.non_tensor,
        m.ldmatrix,
        m.smem_wavefronts,
        m.smem_ideal,
        m.warp_atomics,
        m.thread_atomics,
        m.global_bytes
    )
}

fn run_or_fail<T>(r: flashmha::Result<T>) -> super::CliResult<T> {
    r.map_err(|e| super::CliError::Failed(e.to_string()))
}

/// Emulates and prints the tables (see the module doc).
pub fn run() -> super::CliResult<()> {
    println!(
        "backward main loop per m16n8k16 mma: emulator counters of the main kernel at 2048 minus \
         1024 queries, 1024 keys, one head, non-causal, f16, inputs uniform in [-1, 1)"
    );
    println!(
        "d    kernel                     non-tensor  ldmatrix  smem wf (ideal)  atomics warp (thread)  global B"
    );
    let mut squares: Vec<(usize, usize, [LaunchCounters; 3])> = Vec::new();
    for (d, nt, ldsm, wf, atom) in FA2_PER_MMA {
        let small = run_or_fail(backward::emulate(d, 1024, 1024, false))?;
        let big = run_or_fail(backward::emulate(d, 2048, 1024, false))?;
        println!(
            "{}",
            per_mma_row(small[1].entry, d, &backward::per_mma(&small[1], &big[1]))
        );
        println!(
            "{d:<4} {:<26} {nt:>10.3} {ldsm:>9.3} {wf:>8.3}         {:>8}",
            "FA2 (issue 21's figures)",
            atom.map_or("-".to_string(), |a| format!("{a:.3} (3.2)"))
        );
        squares.push((d, 1024, small));
    }
    println!(
        "FA2 figures: issue 21's text, measured on this emulator by a previous session (64 x 128 \
         tile, 8 warps, 144 KB smem; wavefronts split there as ldmatrix 1.80, cp.async 0.10, other \
         stores 0.10 at d128; 255 registers, 60-104 B spills)."
    );
    for (d, ..) in FA2_PER_MMA {
        squares.push((
            d,
            2048,
            run_or_fail(backward::emulate_traced(d, 2048, 2048))?,
        ));
    }
    println!();
    println!("whole backward (3 launches), one head, f16, non-causal: global bytes requested / compulsory (q, k, v, o, dO, LSE read once; dQ, dK, dV written once)");
    println!("d    sq=sk  compulsory MB  total / compulsory  dQ reduction MB (main atomics + conversion)");
    for (d, s, l) in &squares {
        let w = backward::whole_bytes(l, *d, *s, *s);
        println!(
            "{d:<4} {s:<6} {:>13.2} {:>18.2}x {:>16.2}",
            w.compulsory / 1e6,
            w.total,
            w.dq_reduction_bytes / 1e6
        );
    }
    println!("FA2 (issue 21's figures, head dim not stated): 5.87x at 1024^2 (4.2 MB of dQ atomics), 10.36x at 2048^2");
    println!();
    println!(
        "MODELLED time (per-pipe model, src/perf_model/pipes.rs: each pipe at full rate, the slowest \
         binds; no latency model) of seqlen 2048, batch {BATCH}, heads {HIDDEN} / d, non-causal, \
         f16: the one-head 2048^2 emulation scaled to every head; DRAM charged with every sector \
         touched (an upper bound); the last column: the main kernel with DRAM at the compulsory \
         bytes (every re-read and dQ atomic served by L2: the lower bound)."
    );
    let mut header = vec!["gpu", "d", "launch"];
    header.extend(PIPES);
    header.extend(["binding", "us", "main at compulsory DRAM: us (binding)"]);
    println!("{}", header.join(" | "));
    for gpu in [&A100, &H100] {
        for (d, _, l) in squares.iter().filter(|(_, s, _)| *s == 2048) {
            let heads = BATCH * (HIDDEN / d);
            let mut total = 0.0;
            for (name, launch) in ["preprocess", "main", "dQ convert"].iter().zip(l) {
                let m = backward::model_launch(launch, heads, gpu, None);
                total += m.seconds();
                let mut row = vec![gpu.name.to_string(), d.to_string(), name.to_string()];
                row.extend(m.pipe_s.iter().map(|t| format!("{:.1}", t * 1e6)));
                row.extend([m.binding().to_string(), format!("{:.1}", m.seconds() * 1e6)]);
                if *name == "main" {
                    let lower = backward::compulsory_bytes(*d, 2048, 2048);
                    let m = backward::model_launch(launch, heads, gpu, Some(lower));
                    row.push(format!("{:.1} ({})", m.seconds() * 1e6, m.binding()));
                }
                println!("{}", row.join(" | "));
            }
            println!(
                "{} | {d} | whole backward (modelled) {:.1} us",
                gpu.name,
                total * 1e6
            );
        }
    }
    let at_2048: Vec<_> = squares
        .iter()
        .filter(|(_, s, _)| *s == 2048)
        .map(|(d, _, l)| (*d, l))
        .collect();
    print_predicted(&at_2048)
}

/// The SM simulation's prediction of the 2048^2 configuration (see [`run`]'s table) on every
/// sm_80+ GPU entry: per launch and whole, in PTX order and at the window the forward's
/// calibration uses.
fn print_predicted(at_2048: &[(usize, &[backward::LaunchCounters; 3])]) -> super::CliResult<()> {
    println!();
    println!(
        "PREDICTED time (SM simulation, src/perf_model/timing.rs; MODELLED, calibration in \
         bench/results/fa2_calibration.md) of the same configuration on every sm_80+ GPU entry \
         (the backward runs the sm_80 kernels there): CTA 0 of each launch of the traced \
         one-head 2048^2 emulation replayed with the copies the launch puts on one SM, the \
         launch the makespan of its waves, floored by its DRAM time (the main kernel: \
         compulsory bytes; the row kernels: every sector). PTX order and scheduling window \
         {ALT_SCHED_WINDOW}; per-pipe us: the model above (main: its lower bound). TFLOP/s: \
         the FlashAttention papers' backward count, 2.5 x 4 x seqlen^2 x d x heads."
    );
    println!(
        "gpu | d | launch | CTAs/SM | per-pipe us (binding) | predicted us PTX order | predicted us window {ALT_SCHED_WINDOW}"
    );
    let entries = gpus::ALL
        .into_iter()
        .filter(|g| g.path == TensorPath::MmaSync && g.sm >= 80);
    for gpu in entries {
        for &(d, l) in at_2048 {
            print_predicted_gpu(gpu, d, l)?;
        }
    }
    Ok(())
}

fn print_predicted_gpu(
    gpu: &GpuSpec,
    d: usize,
    l: &[backward::LaunchCounters; 3],
) -> super::CliResult<()> {
    let heads = BATCH * (HIDDEN / d);
    let lower = backward::compulsory_bytes(d, 2048, 2048);
    let mut totals = [0.0f64; 2];
    for (name, launch) in ["preprocess", "main", "dQ convert"].iter().zip(l) {
        let m = backward::model_launch(launch, heads, gpu, (*name == "main").then_some(lower));
        let mut cells = vec![
            gpu.name.to_string(),
            d.to_string(),
            name.to_string(),
            String::new(),
            format!("{:.1} ({})", m.seconds() * 1e6, m.binding()),
        ];
        for (i, w) in [1, ALT_SCHED_WINDOW].into_iter().enumerate() {
            match run_or_fail(backward::predict_launch(
                launch,
                heads,
                gpu,
                w,
                dram_seconds(&m),
            ))? {
                Some(p) => {
                    cells[3] = p.ctas_per_sm.to_string();
                    totals[i] += p.seconds;
                    cells.push(format!("{:.1}", p.seconds * 1e6));
                }
                None => {
                    totals[i] = f64::NAN;
                    cells.push("does not fit".to_string());
                }
            }
        }
        println!("{}", cells.join(" | "));
    }
    let flops = 2.5 * 4.0 * (2048.0 * 2048.0 * d as f64) * heads as f64;
    println!(
        "{} | {d} | whole backward (predicted) | | | {:.1} us, {:.0} TFLOP/s | {:.1} us, {:.0} TFLOP/s",
        gpu.name,
        totals[0] * 1e6,
        flops / totals[0] / 1e12,
        totals[1] * 1e6,
        flops / totals[1] / 1e12
    );
    Ok(())
}
