//! Runs the head-similarity kernel on the PTX emulator: uploads o, zeroes gram, launches the
//! plan of [`crate::ops::head_similarity`] with the embedded PTX and the same params bytes the
//! CUDA backend would pass, reads gram back and turns it into the mean [`SimilarityMatrix`].
//! Touches only the emulator device it creates.

use super::similarity::SimilarityMatrix;
use crate::backend::emulator::parsed_module;
use crate::common::abi::ParamsBytes;
use crate::common::element::Element;
use crate::common::error::{Dim, Error, Result, TensorName};
use crate::emulator::{Device, LaunchConfig, LaunchReport};
use crate::ops::head_similarity::{
    plan_head_similarity, HeadSimBuffers, HeadSimPlan, HeadSimProblem,
};

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

/// [`head_similarity_emulated`] for any strided view `problem` describes over the buffer `o`
/// (whose length must be `problem.o_len`); also returns the plan that ran.
pub fn head_similarity_emulated_view<T: Element>(
    o: &[T],
    problem: &HeadSimProblem,
) -> Result<(SimilarityMatrix, LaunchReport, HeadSimPlan)> {
    if problem.dtype != T::DTYPE {
        return Err(Error::DTypeMismatch {
            tensor: TensorName::HeadSimInput,
            expected: problem.dtype,
            found: T::DTYPE,
        });
    }
    if o.len() != problem.o_len {
        return Err(Error::DimMismatch {
            tensor: TensorName::HeadSimInput,
            dim: Dim::Len,
            expected: problem.o_len,
            found: o.len(),
        });
    }
    let heads = problem.num_heads;
    let mut dev = Device::new();
    let o_ptr = dev.alloc(std::mem::size_of_val(o));
    dev.write(o_ptr, bytemuck::cast_slice(o))?;
    // The kernel accumulates into gram: it must start at zero.
    let gram_ptr = dev.alloc(problem.gram_len * 4);
    dev.write(gram_ptr, &vec![0u8; problem.gram_len * 4])?;
    let plan = plan_head_similarity(
        problem,
        &HeadSimBuffers {
            o: o_ptr.0,
            gram: gram_ptr.0,
        },
    )?;
    let module = parsed_module(plan.entry)?;
    let cfg = LaunchConfig {
        grid: plan.grid,
        block: plan.block,
        dynamic_smem_bytes: plan.dynamic_smem_bytes,
    };
    let report = dev.launch(&module, plan.entry, &cfg, plan.params.as_bytes())?;
    let bytes = dev.read(gram_ptr, heads * heads * 4)?;
    let gram: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes);
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
