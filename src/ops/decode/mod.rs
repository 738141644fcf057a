//! Decode over a paged KV cache: new query tokens (1 for decode, a few for speculative decode,
//! any number for chunked prefill) attend to K/V held in fixed-size pages through a block table.
//!
//! Flow, as for the forward: [`DecodeProblem`] (shapes, no device) -> [`validate`] (the crate's
//! typed [`crate::Error`], nothing launched) -> [`plan`] (pure: kernel, grid, split count, workspace
//! size, then per run the params struct from buffer addresses) -> backend ([`crate::host::emulated_decode`] from host data;
//! the CUDA backend launches the same params bytes). Kernels: `kernels/sm80/flash_decode.cu` (paged,
//! GQA-packed, split-KV), `kernels/sm80/merge_states.cu` (split combine and public merge of states),
//! `kernels/sm80/kv_append.cu` (writes new K/V rows into pages).
//!
//! Files: `problem.rs` (plain data), `fp8.rs` (KV-cache element types and the host FP8 codec),
//! `validate.rs`, `plan.rs` (incl. the split heuristic), `kernels.rs` (the generated kernel
//! table), `abi.rs` (marker impls of the bindgen params structs). The public merge of states and
//! the KV append are ops of their own (`src/ops/merge/`, `src/ops/kv_append/`); runs from host
//! data live in `src/host/runner.rs` (either backend), the checker in `src/check/decode.rs`; the
//! call over any backend is `Attention::decode` / `merge_states` / `kv_append`
//! (src/api/decode.rs).

pub mod abi;
pub mod fp8;
pub mod kernels;
pub mod plan;
pub mod problem;
pub mod validate;

pub use fp8::{KvCacheDType, KvScaleGranularity};
pub use plan::{DecodeBuffers, DecodePlan, SplitPolicy, WorkspaceLayout};
pub use problem::{DecodeProblem, QueryLayout};
