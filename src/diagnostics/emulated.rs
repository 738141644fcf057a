//! Runs the head-similarity kernel on the PTX emulator from host data (through the one host
//! runner, [`crate::host::runner::head_similarity`], on a fresh emulated device) and turns the gram sums
//! into the mean [`SimilarityMatrix`].

use super::similarity::SimilarityMatrix;
use crate::backend::emulator::EmulatorBackend;
use crate::common::dtype::DType;
use crate::common::element::Element;
use crate::common::error::Result;
use crate::common::target::KernelTarget;
use crate::emulator::LaunchReport;
use crate::ops::head_similarity::{HeadSimPlan, HeadSimProblem};

/// Mean head similarity of a contiguous `o: [tokens, heads, head_dim]` computed by the kernel
/// on the emulator, with the emulator's findings and counters.
pub fn head_similarity_emulated<T: Element>(
    o: &[T],
    tokens: usize,
    heads: usize,
    head_dim: usize,
) -> Result<(SimilarityMatrix, LaunchReport)> {
    let problem = HeadSimProblem::contiguous(T::DTYPE, tokens, heads, head_dim);
    let (m, report, _) = head_similarity_emulated_view(o, &problem)?;
    Ok((m, report))
}

/// [`head_similarity_emulated`] of f32 values, rounded to `dtype` first (what the kernel would
/// read from a model's outputs of that type): the one dtype dispatch for callers with f32 data.
pub fn head_similarity_emulated_f32(
    o: &[f32],
    dtype: DType,
    tokens: usize,
    heads: usize,
    head_dim: usize,
) -> Result<(SimilarityMatrix, LaunchReport)> {
    fn rounded<T: Element>(o: &[f32]) -> Vec<T> {
        o.iter().map(|&x| T::from_f32(x)).collect()
    }
    match dtype {
        DType::F16 => head_similarity_emulated(&rounded::<half::f16>(o), tokens, heads, head_dim),
        DType::Bf16 => head_similarity_emulated(&rounded::<half::bf16>(o), tokens, heads, head_dim),
    }
}

/// [`head_similarity_emulated`] for any strided view `problem` describes over the buffer `o`
/// (the plan checks that `o` holds the view); also returns the plan that ran.
pub fn head_similarity_emulated_view<T: Element>(
    o: &[T],
    problem: &HeadSimProblem,
) -> Result<(SimilarityMatrix, LaunchReport, HeadSimPlan)> {
    let run = crate::host::runner::head_similarity(
        &EmulatorBackend::new(KernelTarget::Ampere),
        o,
        problem,
    )?;
    let m = SimilarityMatrix::from_gram_sum(problem.num_heads, &run.gram, problem.num_tokens)?;
    Ok((m, run.report, run.plan))
}

/// Findings (one per line, or "none") and counters of a launch, for reports.
pub fn describe_launch(report: &LaunchReport) -> String {
    let mut s = format!(
        "findings: {} (dropped beyond caps: {})\n",
        report.findings.len(),
        report.dropped_findings
    );
    for f in &report.findings {
        s += &format!("  {f}\n");
    }
    s += &report.counters.to_string();
    s
}
