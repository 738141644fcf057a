//! Runs the head-similarity kernel on the emulator backend (the same call a server makes on
//! CUDA, [`crate::api::Attention::head_similarity`]): uploads o, runs the plan of
//! [`crate::ops::head_similarity`], reads gram back and turns it into the mean
//! [`SimilarityMatrix`]. Touches only the emulated device it creates.

use super::similarity::SimilarityMatrix;
use crate::api::Attention;
use crate::backend::emulator::EmulatorBackend;
use crate::backend::Backend;
use crate::common::element::Element;
use crate::common::error::{Dim, Error, Result, TensorName};
use crate::common::target::KernelTarget;
use crate::emulator::LaunchReport;
use crate::ops::head_similarity::{HeadSimPlan, HeadSimProblem};

/// Mean head similarity of a contiguous `o: [tokens, heads, head_dim]` computed by the kernel
/// on the emulator, with the emulator's counters (a finding is an error).
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

/// [`head_similarity_emulated`] for any strided view `problem` describes over the buffer `o`;
/// also returns the plan that ran.
pub fn head_similarity_emulated_view<T: Element>(
    o: &[T],
    problem: &HeadSimProblem,
) -> Result<(SimilarityMatrix, LaunchReport, HeadSimPlan)> {
    let be = EmulatorBackend::new(KernelTarget::Ampere);
    let plan = HeadSimPlan::new_for(be.target(), problem)?;
    let stream = be.stream()?;
    let d_o = be.upload(&stream, o)?;
    let heads = problem.num_heads;
    let mut gram = be.alloc_zeros::<f32>(&stream, heads * heads)?;
    be.head_similarity(&stream, &plan, &d_o, &mut gram)?;
    let gram = be.download(&stream, &gram)?;
    let report = be
        .last_reports()
        .pop()
        .map(|(_, r)| r)
        .ok_or(Error::DimMismatch {
            tensor: TensorName::HeadSimInput,
            dim: Dim::Len,
            expected: 1,
            found: 0,
        })?;
    let m = SimilarityMatrix::from_gram_sum(heads, &gram, problem.num_tokens)?;
    Ok((m, report, plan))
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
