//! `flashmha emulate`: runs one kernel from the registry (a forward kernel, or a head-similarity
//! kernel over a random attention output) on the emulator on random inputs and prints its
//! findings and counters as tables.

use super::table;
use flashmha::common::build_info::FWD_KERNELS;
use flashmha::common::dtype::DType;
use flashmha::common::options::AttnOptions;
use flashmha::diagnostics::head_similarity_emulated_f32;
use flashmha::emulated;
use flashmha::emulator::LaunchReport;
use flashmha::host::HostInputs;
use flashmha::ops::head_similarity::{ENTRY_BF16, ENTRY_F16};
use flashmha::problem::{FwdProblem, SeqLayout};

#[derive(clap::Args)]
pub struct EmulateArgs {
    /// Kernel entry (see `flashmha info`): a forward kernel or flashmha_head_similarity_{f16,bf16};
    /// default: the first forward kernel.
    #[arg(long)]
    entry: Option<String>,
    /// Head dim of the head-similarity kernel's input.
    #[arg(long, default_value_t = 64)]
    head_dim: usize,
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

pub fn run(args: &EmulateArgs) -> super::CliResult<bool> {
    let head_sim = [
        (ENTRY_F16, flashmha::common::dtype::DType::F16),
        (ENTRY_BF16, flashmha::common::dtype::DType::Bf16),
    ];
    if let Some((entry, dtype)) = head_sim
        .iter()
        .find(|(e, _)| Some(*e) == args.entry.as_deref())
    {
        return run_head_similarity(args, entry, *dtype);
    }
    let row = match &args.entry {
        Some(e) => FWD_KERNELS.iter().find(|r| r.entry == e).ok_or_else(|| {
            let known: Vec<_> = FWD_KERNELS
                .iter()
                .map(|r| r.entry)
                .chain([ENTRY_F16, ENTRY_BF16])
                .collect();
            super::CliError::Usage(format!("no kernel {e}; known: {known:?}"))
        })?,
        None => &FWD_KERNELS[0],
    };
    let options = AttnOptions {
        causal: args.causal,
        ..Default::default()
    };
    let mut p = FwdProblem::contiguous_dv(
        row.dtype,
        SeqLayout::Padded {
            batch: args.batch,
            seqlen_q: args.seqlen_q,
            seqlen_k: args.seqlen_k,
        },
        (args.heads, args.heads),
        (row.head_dim as usize, row.head_dim_v as usize),
        options,
    );
    p.lse_len = Some(p.row_stats_len());
    // The row's own kernel family (an sm_75 or sm_90a entry must not run the sm_80+ kernel of
    // the same head dim).
    p.target = row.target;
    // Validated before the host inputs are drawn: sizes the kernels cannot index are a typed
    // error, not a host allocation of that size.
    flashmha::ops::forward::validate::validate_shape(FWD_KERNELS, p.target, p.dtype, &p.shape()?)?;
    let inputs = HostInputs::random(&p, args.seed);
    let started = std::time::Instant::now();
    let run = emulated::forward(&p, &inputs)?;
    let elapsed = started.elapsed();
    println!(
        "{}: grid {:?}, block {:?}, {} B dynamic shared memory; emulated in {:.2} s",
        run.launch.kernel.entry,
        run.launch.grid,
        run.launch.block,
        run.launch.dynamic_smem_bytes,
        elapsed.as_secs_f64()
    );
    print_report(&run.report)
}

/// The head-similarity kernel over a random `o: [batch * seqlen_q, heads, head_dim]`.
fn run_head_similarity(args: &EmulateArgs, entry: &str, dtype: DType) -> super::CliResult<bool> {
    use rand::{Rng, SeedableRng};
    let tokens = args.batch.saturating_mul(args.seqlen_q);
    // The plan's checks first (token count, heads, head dim), before any host allocation.
    flashmha::ops::head_similarity::HeadSimPlan::new(
        &flashmha::ops::head_similarity::HeadSimProblem::contiguous(
            dtype,
            tokens,
            args.heads,
            args.head_dim,
        ),
    )?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let values: Vec<f32> = (0..tokens * args.heads * args.head_dim)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let started = std::time::Instant::now();
    let report = head_similarity_emulated_f32(&values, dtype, tokens, args.heads, args.head_dim)?.1;
    println!(
        "{entry}: {tokens} tokens x {} heads x d{}; emulated in {:.2} s",
        args.heads,
        args.head_dim,
        started.elapsed().as_secs_f64()
    );
    print_report(&report)
}

/// Findings and counters as tables; true when the launch was clean.
fn print_report(report: &LaunchReport) -> super::CliResult<bool> {
    let mut t = table::new(&["finding"]);
    for f in &report.findings {
        t.add_row(vec![f.to_string()]);
    }
    if report.findings.is_empty() {
        t.add_row(vec![
            "none: no out-of-bounds access, race, cp.async hazard or uninitialised read",
        ]);
    }
    println!("{t}");
    let mut t = table::new(&["counter", "value"]);
    for (name, v) in report.counters.rows() {
        t.add_row(vec![name, v.to_string()]);
    }
    println!("{t}");
    Ok(report.is_clean())
}
