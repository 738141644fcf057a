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
        Command::Info => cli::info::run(),
        Command::Diagnose(a) => cli::diagnose::run(&a),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
