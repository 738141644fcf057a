//! The robustness part of `flashmha diagnose` (issue 22; on unless `--no-robustness`):
//! per-head Jacobian gains of batch item 0's first `--robustness-tokens` queries and keys
//! ([`flashmha::diagnostics::robustness`]) on the run's backend, printed as a table and written
//! beside the other report files as `robustness.csv` and `robustness.{png,svg}`.

use std::path::{Path, PathBuf};

use super::{CliError, CliResult as Result};
use flashmha::backend::Backend;
use flashmha::diagnostics::robustness::{self, LayerInputs, Settings, Wrt};

#[derive(Debug, Clone, clap::Args)]
pub struct RobustnessArgs {
    /// Skip the per-head robustness measurement (by default: worst-case gain, the top singular
    /// value of the Jacobian by a block Krylov iteration over the JVP and backward kernels, and
    /// random-direction gains, the non-linear gain under adversarial perturbations of size
    /// --epsilon, and each head's contribution to the layer's worst-case gain, the head gated
    /// off; on batch item 0).
    #[arg(long)]
    pub no_robustness: bool,
    /// Jacobian with respect to: qkv, kv (keys and values only) or q.
    #[arg(long, default_value = "qkv", value_parser = parse_wrt)]
    pub robustness_wrt: Wrt,
    /// Queries and keys measured (the first ones of batch item 0; every head runs in the same
    /// launches: one JVP and one backward per iteration).
    #[arg(long, default_value_t = 32)]
    pub robustness_tokens: usize,
    /// Adversarial perturbation sizes relative to the input norm (comma-separated, each > 0).
    #[arg(long, value_delimiter = ',', default_values_t = vec![0.01, 0.03, 0.1, 0.3])]
    pub epsilon: Vec<f64>,
    /// Iteration budget; a head not converged within it is reported with its last estimate.
    #[arg(long, default_value_t = 60)]
    pub robustness_iters: usize,
    /// Relative error of the estimate at which the iteration stops.
    #[arg(long, default_value_t = 1e-3)]
    pub robustness_tol: f64,
}

fn parse_wrt(s: &str) -> std::result::Result<Wrt, String> {
    s.parse()
}

impl RobustnessArgs {
    /// The measurement settings, checked (a typed usage error before any emulation).
    pub fn settings(&self, seed: u64) -> Result<Settings> {
        let s = Settings {
            wrt: self.robustness_wrt,
            rel_tol: self.robustness_tol,
            max_iters: self.robustness_iters,
            epsilons: self.epsilon.clone(),
            seed,
            ..Settings::default()
        };
        s.validate().map_err(|e| CliError::Usage(e.to_string()))?;
        if self.robustness_tokens == 0 {
            return Err(CliError::Zero {
                flag: "--robustness-tokens",
            });
        }
        Ok(s)
    }
}

/// Measures batch item 0 of `item0` (its first `--robustness-tokens`) on `backend`, prints the
/// table, writes the files into `out`; returns their paths.
pub fn run<B: Backend>(
    backend: &B,
    args: &RobustnessArgs,
    settings: &Settings,
    item0: &LayerInputs,
    out: &Path,
) -> Result<Vec<PathBuf>> {
    let layer = item0.first_tokens(args.robustness_tokens);
    let t = layer.seqlen_q;
    let r = robustness::measure_on(backend, &layer, settings)?;
    let mut table = crate::cli::table::new(&robustness::ROBUSTNESS_HEADERS);
    for row in robustness::robustness_rows(&r) {
        table.add_row(row.to_vec());
    }
    println!(
        "robustness of batch item 0, {t} tokens, Jacobian w.r.t. {} (block Krylov iteration to relative error {:.0e}, {} random directions):",
        settings.wrt.label(),
        settings.rel_tol,
        settings.random_samples
    );
    println!("{table}");
    let fragile = r.most_fragile();
    println!(
        "most fragile heads (worst-case gain): {}",
        fragile
            .iter()
            .take(3)
            .map(|h| format!("{h} ({:.3})", r.heads[*h].top.sigma))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(robustness::write_robustness(out, &r)?)
}
