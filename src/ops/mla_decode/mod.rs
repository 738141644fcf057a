//! MLA decode (issue 23 item 3): paged decode for multi-head latent attention with the
//! projections absorbed (DeepSeek-V2/V3/R1, Kimi K2): every query head attends to ONE shared
//! latent KV head whose cached row holds d_qk = 576 elements (512 latent + 64 rope); the value is
//! the first d_v = 512 elements of the same row, never stored twice.
//!
//! Flow, as for the paged decode ([`crate::ops::decode`]): [`MlaDecodeProblem`] (shapes, no
//! device) -> [`validate`] (typed [`crate::Error`], nothing launched) -> [`plan`] (pure: kernel,
//! grid, split count, workspace, then per run the params from buffer addresses) -> a backend
//! ([`crate::api::mla_decode`] with [`crate::api::DecodeArgs::mla`]). The kernels are
//! kernels/sm80/flash_mla_decode.cu (tile: kernels/common/mla_decode_traits.cuh) and, on Hopper
//! with 16-bit pages of a multiple of 64 keys, kernels/sm90/flash_mla_decode_sm90.cu (TMA +
//! `wgmma`; tile: kernels/sm90/mla_decode_traits_sm90.cuh, tensor map: [`tma`]); the split combine is the paged decode's
//! (kernels/sm80/merge_states.cu with head_dim 512), and the split heuristic, workspace layout,
//! buffer table and params fill are the paged decode's (src/ops/decode/plan.rs), run with
//! d_o = 512.

pub mod abi;
pub mod kernels;
pub mod plan;
pub mod problem;
pub mod tma;
pub mod validate;

pub use kernels::{MlaKernelRow, MLA_DECODE_KERNELS, SM90_TILE_KEYS};
pub use plan::{MlaDecodePlan, MlaLaunches};
pub use problem::{MlaDecodeProblem, MLA_D_QK, MLA_D_V};
