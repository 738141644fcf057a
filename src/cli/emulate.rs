//! `flashmha emulate`: runs one forward kernel from the registry on the emulator on random
//! inputs and prints its findings and counters as tables.

use super::table;
use flashmha::build_info::FWD_KERNELS;
use flashmha::emulated::{self, HostInputs};
use flashmha::options::AttnOptions;
use flashmha::problem::{FwdProblem, SeqLayout};

#[derive(clap::Args)]
pub struct EmulateArgs {
    /// Kernel entry (see `flashmha info`); default: the first forward kernel.
    #[arg(long)]
    entry: Option<String>,
    #[arg(long, default_value_t = 200)]
    seqlen_q: usize,
    #[arg(long, default_value_t = 300)]
    seqlen_k: usize,
    #[arg(long, default_value_t = 2)]
    heads: usize,
    #[arg(long, default_value_t = 1)]
    batch: usize,
    #[arg(long)]
    causal: bool,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

pub fn run(args: &EmulateArgs) -> flashmha::Result<bool> {
    let row = match &args.entry {
        Some(e) => FWD_KERNELS.iter().find(|r| r.entry == e).ok_or_else(|| {
            let known: Vec<_> = FWD_KERNELS.iter().map(|r| r.entry).collect();
            flashmha::Error::Shape(format!("no forward kernel {e}; known: {known:?}"))
        })?,
        None => &FWD_KERNELS[0],
    };
    let mut p = FwdProblem::contiguous(
        row.dtype,
        SeqLayout::Padded {
            batch: args.batch,
            seqlen_q: args.seqlen_q,
            seqlen_k: args.seqlen_k,
        },
        args.heads,
        args.heads,
        row.head_dim as usize,
        AttnOptions {
            causal: args.causal,
            ..Default::default()
        },
    );
    p.lse_len = Some(p.row_stats_len());
    let inputs = HostInputs::random(&p, args.seed);
    let started = std::time::Instant::now();
    let run = emulated::forward(&p, &inputs)?;
    let elapsed = started.elapsed();
    println!(
        "{}: grid {:?}, block {:?}, {} B dynamic shared memory; emulated in {:.2} s",
        row.entry,
        run.plan.grid,
        run.plan.block,
        run.plan.dynamic_smem_bytes,
        elapsed.as_secs_f64()
    );
    let mut t = table::new(&["finding"]);
    for f in &run.report.findings {
        t.add_row(vec![f.to_string()]);
    }
    if run.report.findings.is_empty() {
        t.add_row(vec![
            "none: no out-of-bounds access, race, cp.async hazard or uninitialised read",
        ]);
    }
    println!("{t}");
    let mut t = table::new(&["counter", "value"]);
    for (name, v) in run.report.counters.rows() {
        t.add_row(vec![name, v.to_string()]);
    }
    println!("{t}");
    Ok(run.report.is_clean())
}
