//! Backward attention (issue 21): [`BwdShape`] (problem.rs) -> [`validate`] -> [`BwdPlan`]
//! (plan.rs) -> a backend. Three launches per run (kernels/sm80/flash_bwd.cu): delta =
//! rowsum(dO * O) (which also zeroes the dQ accumulator), the main kernel (dK, dV, and dQ
//! through f32 atomics into the caller's workspace) and the dQ conversion. The compiled rows are
//! listed in [`kernels`].

pub mod abi;
pub mod kernels;
pub mod plan;
pub mod problem;
pub mod validate;

pub use kernels::{BwdKernelRow, BWD_KERNELS};
pub use plan::{BwdBufs, BwdPlan};
pub use problem::{BwdShape, GradStrides};
pub use validate::BwdExtents;
