//! Subcommands of the `flashmha` binary, one file each; they only call the library's public API.

pub mod bench;
pub mod bench_decode;
pub mod check;
pub mod check_decode;
pub mod diagnose;
pub mod emulate;
pub mod info;
pub mod progress;
pub mod table;

/// Errors of the command line: a usage problem the CLI itself finds (bad flag combination,
/// unknown kernel name), or an error of the library.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    /// A run the CLI made failed (e.g. the emulator reported findings).
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Lib(#[from] flashmha::Error),
}

pub type CliResult<T> = std::result::Result<T, CliError>;
