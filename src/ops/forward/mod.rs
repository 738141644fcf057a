//! Prefill forward: [`FwdShape`] (problem.rs) -> [`validate`] -> [`FwdPlan`] (plan.rs; the sm_90a
//! tensor-map descriptions in tma.rs) -> `bind` -> a backend.

pub mod bind;
pub mod plan;
pub mod problem;
pub mod tma;
pub mod validate;

pub use bind::FwdBufs;
pub use plan::{FwdLaunch, FwdPlan};
pub use problem::{FwdShape, Heads, QkvoStrides, SeqShape};
pub use tma::{FwdParamsAbi, FwdTmaMaps, TmaMapDesc};
