//! Emulator throughput on the product forward kernel: emulated thread- and warp-instructions per
//! second on 1 host thread and on all of them. A benchmark, not a test:
//! `cargo bench --bench emulator_speed`. The figure is quoted in the README.

use flashmha::common::dtype::DType;
use flashmha::common::options::AttnOptions;
use flashmha::emulated::{self, HostInputs};
use flashmha::problem::{FwdProblem, SeqLayout};
use std::time::Instant;

fn problem(head_dim: usize) -> FwdProblem {
    FwdProblem::contiguous(
        DType::Bf16,
        SeqLayout::Padded {
            batch: 1,
            seqlen_q: 1024,
            seqlen_k: 1024,
        },
        4,
        4,
        head_dim,
        AttnOptions::default(),
    )
}

fn main() {
    let threads_all = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("emulated forward, bf16, batch 1, 4 heads, 1024 x 1024 (median of 3 runs)");
    println!(
        "{:>4} {:>8} {:>14} {:>14} {:>12}",
        "d", "threads", "thread-inst/s", "warp-inst/s", "seconds"
    );
    for head_dim in [64, 128] {
        let p = problem(head_dim);
        let inputs = HostInputs::random(&p, 1);
        for threads in [1, threads_all] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("thread pool");
            let mut runs: Vec<(f64, u64, u64)> = (0..3)
                .map(|_| {
                    pool.install(|| {
                        let start = Instant::now();
                        let run = emulated::forward(&p, &inputs).expect("emulated forward");
                        assert!(run.report.is_clean(), "{:?}", run.report.findings);
                        let c = run.report.counters;
                        (
                            start.elapsed().as_secs_f64(),
                            c.thread_instructions,
                            c.warp_instructions,
                        )
                    })
                })
                .collect();
            runs.sort_by(|a, b| a.0.total_cmp(&b.0));
            let (secs, thread_inst, warp_inst) = runs[1];
            println!(
                "{head_dim:>4} {threads:>8} {:>14.3e} {:>14.3e} {secs:>12.3}",
                thread_inst as f64 / secs,
                warp_inst as f64 / secs
            );
        }
    }
}
