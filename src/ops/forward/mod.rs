//! Prefill forward: [`FwdShape`] (problem.rs) -> [`validate`] -> [`FwdPlan`] (plan.rs; the sm_90a
//! tensor-map descriptions in tma.rs; the tile of a head dim in tile.rs) -> `bind` -> a backend.

pub mod bind;
pub mod plan;
pub mod problem;
pub mod tile;
pub mod tma;
pub mod validate;

pub use bind::FwdBufs;
pub use plan::{FwdLaunch, FwdPlan};
pub use problem::{FwdShape, Heads, QkvoStrides, SeqShape};
pub use tile::TileChoice;
pub use tma::{FwdParamsAbi, FwdTmaMaps, TmaMapDesc};
