//! The forward from host data on a fresh emulator device: [`super::runner::forward`] on
//! [`crate::emulator::Device::new`], with the emulator's findings and counters in the run.

pub use super::runner::ForwardRun;
pub use super::{HostInputs, HostOutputs};
use crate::common::error::Result;
use crate::emulator::Device;
use crate::problem::FwdProblem;

/// Runs the forward kernel for `problem` on a fresh emulator device. `inputs` must match the
/// problem's lengths; its optional lengths say which optional outputs to produce.
pub fn forward(problem: &FwdProblem, inputs: &HostInputs) -> Result<ForwardRun> {
    super::runner::forward(&mut Device::new(), problem, inputs)
}
