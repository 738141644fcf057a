//! The forward from host data on a fresh emulated device: [`super::runner::forward`] on a new
//! [`EmulatorBackend`] running the problem's kernels, with the emulator's findings and counters
//! in the run.

pub use super::runner::ForwardRun;
pub use super::{HostInputs, HostOutputs};
use crate::backend::emulator::EmulatorBackend;
use crate::common::error::Result;
use crate::problem::FwdProblem;

/// Runs the forward kernel for `problem` on a fresh emulated device. `inputs` must match the
/// problem's lengths; its optional lengths say which optional outputs to produce.
pub fn forward(problem: &FwdProblem, inputs: &HostInputs) -> Result<ForwardRun> {
    super::runner::forward(&EmulatorBackend::new(problem.target), problem, inputs)
}
