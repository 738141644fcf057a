//! Runs the head-similarity kernel from host data (through the one host runner,
//! [`crate::host::runner::head_similarity`], on a fresh emulated device or any other backend)
//! and turns the gram sums into the mean [`SimilarityMatrix`].

use super::similarity::SimilarityMatrix;
use crate::backend::emulator::EmulatorBackend;
use crate::common::dtype::DType;
use crate::common::element::Element;
use crate::common::error::Result;
use crate::common::target::KernelTarget;
use crate::emulator::LaunchReport;
use crate::host::device::HarnessBackend;
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
    let emulator = EmulatorBackend::new(KernelTarget::Ampere);
    head_similarity_on_f32(&emulator, o, dtype, [tokens, heads, head_dim])
}

/// [`head_similarity_emulated_f32`] on any backend, `o: [tokens, heads, head_dim]` (the report
/// is empty on a GPU).
pub fn head_similarity_on_f32<B: HarnessBackend>(
    backend: &B,
    o: &[f32],
    dtype: DType,
    [tokens, heads, head_dim]: [usize; 3],
) -> Result<(SimilarityMatrix, LaunchReport)> {
    fn run<T: Element, B: HarnessBackend>(
        backend: &B,
        o: &[f32],
        [tokens, heads, head_dim]: [usize; 3],
    ) -> Result<(SimilarityMatrix, LaunchReport)> {
        let o: Vec<T> = o.iter().map(|&x| T::from_f32(x)).collect();
        let problem = HeadSimProblem::contiguous(T::DTYPE, tokens, heads, head_dim);
        let run = crate::host::runner::head_similarity(backend, &o, &problem)?;
        let m = SimilarityMatrix::from_gram_sum(heads, &run.gram, tokens)?;
        Ok((m, run.report))
    }
    let dims = [tokens, heads, head_dim];
    match dtype {
        DType::F16 => run::<half::f16, B>(backend, o, dims),
        DType::Bf16 => run::<half::bf16, B>(backend, o, dims),
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
