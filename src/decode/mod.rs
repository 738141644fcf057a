//! Decode over a paged KV cache: new query tokens (1 for decode, a few for speculative decode,
//! any number for chunked prefill) attend to K/V held in fixed-size pages through a block table.
//!
//! Flow, as for the forward: [`DecodeProblem`] (shapes, no device) -> [`validate`] (the crate's
//! typed [`crate::Error`], nothing launched) -> [`plan`] (pure: kernel, grid, split count, workspace
//! size, then per run the params struct from buffer addresses) -> backend ([`emulated`] here;
//! the CUDA backend launches the same params bytes). Kernels: `kernels/sm80/flash_decode.cu` (paged,
//! GQA-packed, split-KV), `kernels/sm80/merge_states.cu` (split combine and public merge of states),
//! `kernels/sm80/kv_append.cu` (writes new K/V rows into pages).
//!
//! Files: `problem.rs` (plain data), `fp8.rs` (KV-cache element types and the host FP8 codec),
//! `validate.rs`, `plan.rs` (incl. the split heuristic), `merge.rs` (the public merge of
//! states: plan and params), `append.rs` (the KV append plan), `kernels.rs` (the generated
//! kernel table), `abi.rs` (marker impls of the bindgen params structs), `emulated.rs` (runs
//! plans on the emulator from host data), `gpu.rs` (the same from host data on a GPU, for
//! checks); the CUDA launch path itself is `CudaBackend::decode` / `merge_states` /
//! `kv_append` (src/backend/cuda/decode.rs).

pub mod abi;
pub mod append;
#[cfg(feature = "reference")] // draws its cases with the checker's DecodeCase
pub mod bench;
#[cfg(feature = "reference")]
pub mod check;
#[cfg(feature = "emulator")]
pub mod emulated;
pub mod fp8;
#[cfg(feature = "emulator")]
pub mod gpu;
pub mod kernels;
pub mod merge;
pub mod plan;
pub mod problem;
pub mod validate;

pub use append::{plan_kv_append, plan_kv_append_for, AppendIndex, KvAppendBuffers, KvAppendPlan};
pub use fp8::{KvCacheDType, KvScaleGranularity};
pub use merge::{
    plan_merge, plan_merge_for, MergeBuffers, MergePlan, MergeProblem, MergeStates, StatsLayout,
};
pub use plan::{
    plan_decode, plan_decode_for, DecodeBuffers, DecodePlan, DeviceBuf, SplitPolicy,
    WorkspaceLayout,
};
pub use problem::{DecodeProblem, PageStrides, QueryLayout, RowStrides};
