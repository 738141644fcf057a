//! Forward-mode (JVP) attention (issue 22): [`JvpShape`] (problem.rs) -> [`validate`] ->
//! [`JvpPlan`] (plan.rs) -> a backend. One launch computes the forward's O and its directional
//! derivative O' along tangents dq, dk, dv (kernels/sm80/flash_jvp.cu,
//! kernels/common/flash_jvp_cta.cuh). The compiled rows are listed in [`kernels`].

pub mod kernels;
pub mod plan;
pub mod problem;
pub mod validate;

pub use kernels::{JvpKernelRow, JVP_KERNELS};
pub use plan::{JvpBufs, JvpPlan};
pub use problem::JvpShape;
