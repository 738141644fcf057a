//! flashmha: hand-written CUDA kernels for flash-style fused multi-head attention, with a PTX
//! emulator so that every kernel runs, is checked and is measured without a GPU.
//!
//! Data flows one way: user API ([`shape`], the backends' argument builders) -> [`validate`]
//! -> [`plan`] (pure) -> [`backend`] ([`backend::cuda`] or [`backend::emulator`]). What both
//! backends share is exact per op: the forward's one [`FwdPlan`] is bound and launched by
//! either backend with the same params bytes of the same module. Decode, the split combine,
//! merge_states and kv_append are planned in [`decode`] (problem -> validate -> plan ->
//! params, pure); [`backend::cuda`] launches those params on the caller's device buffers and
//! `decode::emulated` launches the same bytes on the emulator, from host data on a fresh
//! device per call. Head similarity is planned by [`plan::head_similarity`] and launched by
//! [`backend::cuda`] and by `diagnostics` on the emulator. [`host`] holds host-data helpers
//! owned by neither backend.
//!
//! Features: with `default-features = false` only what launching needs is compiled (the CUDA
//! backend, validation and plans). `emulator` adds the PTX emulator backend, `reference` the
//! candle CPU reference and the random-case checker, `diagnostics` the head-diagnostics
//! analysis and plots, `cli` the `flashmha` binary (default), `candle` the candle op, `capi`
//! the C ABI.

pub mod abi;
pub mod backend;
pub mod build_info;
#[cfg(feature = "candle")]
pub mod candle_op;
#[cfg(feature = "capi")]
pub mod capi;
#[cfg(feature = "reference")]
pub mod check;
pub mod decode;
#[cfg(feature = "diagnostics")]
pub mod diagnostics;
pub mod dtype;
pub mod element;
#[cfg(feature = "emulator")]
pub mod emulator;
pub mod error;
pub mod host;
pub mod options;
// The model extrapolates from emulated runs on random inputs (HostInputs::random: `reference`).
#[cfg(feature = "reference")]
pub mod perf_model;
pub mod plan;
#[cfg(feature = "reference")]
pub mod reference;
pub mod shape;
pub mod target;
pub mod validate;

pub use backend::cuda;
#[cfg(feature = "candle")]
pub use candle_op as candle;
#[cfg(feature = "emulator")]
pub use host::emulated;
pub use host::problem;

pub use error::{Error, Result};
pub use options::AttnOptions;
pub use plan::FwdPlan;
pub use shape::{FwdShape, Heads, SeqShape, Strides};
pub use target::KernelTarget;

/// The README's Rust examples, compiled by `cargo test` as doctests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
