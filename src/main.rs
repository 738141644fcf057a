//! The `flashmha` command line: build and kernel information, kernel checks, benchmarks and
//! head diagnostics. Logs go to stderr through `tracing` (set `RUST_LOG`, e.g. `RUST_LOG=debug`).

mod cli;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "flashmha",
    version,
    about = "Fused multi-head attention kernels on tensor cores"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Toolkit used, kernels embedded (registers, shared memory, spills per arch), GPU found.
    Info,
    /// Random forward configurations on the emulator (or --gpu) against the candle reference;
    /// prints a pass/fail table and exits non-zero on any failure.
    Check(cli::check::CheckArgs),
    /// Forward-kernel performance: GPU timings (--gpu), or emulator counters with a modelled
    /// A100/H100 time.
    Bench(cli::bench::BenchArgs),
    /// Run one kernel from the registry on the emulator; print findings and counters.
    Emulate(cli::emulate::EmulateArgs),
    /// Head diagnostics: similarity of head outputs (kernel on the emulator), its spectrum and
    /// near-duplicate clusters, per-head attention entropy; writes a report folder.
    Diagnose(Box<cli::diagnose::DiagnoseArgs>),
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let result = match args.command {
        Command::Info => cli::info::run().map(|()| true),
        Command::Check(a) => cli::check::run(&a),
        Command::Bench(a) => cli::bench::run(&a).map(|()| true),
        Command::Emulate(a) => cli::emulate::run(&a),
        Command::Diagnose(a) => cli::diagnose::run(&a).map(|()| true),
    };
    match result {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
