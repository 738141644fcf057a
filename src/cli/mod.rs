//! Subcommands of the `flashmha` binary, one file each; they only call the library's public API.

pub mod bench;
pub mod bench_backward;
pub mod bench_calibrate;
pub mod bench_decode;
pub mod bench_mla;
pub mod check;
pub mod diagnose;
pub mod diagnose_robustness;
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
    /// A numeric flag that must be positive was given 0 (a length, a head dim, ...).
    #[error("{flag} must be at least 1 (got 0)")]
    Zero { flag: &'static str },
    /// `bench --model` named a GPU that has no model.
    #[error("unknown --model {name:?}: the modelled GPUs are {}", known.join(", "))]
    UnknownModel {
        name: String,
        known: Vec<&'static str>,
    },
    #[error(transparent)]
    Lib(#[from] flashmha::Error),
}

/// Refuses a zero in any of `values` as [`CliError::Zero`] naming `flag`.
pub(crate) fn positive(flag: &'static str, values: &[usize]) -> CliResult<()> {
    if values.contains(&0) {
        return Err(CliError::Zero { flag });
    }
    Ok(())
}

pub type CliResult<T> = std::result::Result<T, CliError>;
