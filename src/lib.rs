//! flashmha: hand-written CUDA kernels for flash-style fused multi-head attention, with a PTX
//! emulator so that every kernel runs, is checked and is measured without a GPU.
//!
//! Layout (DESIGN.md section 1): [`ops`] holds one folder per op (its problem, validation and
//! pure plan); [`common`] what every op shares (dtype, target, options, errors, binding checks,
//! the params ABI, the kernel registry); [`backend`] runs what a plan binds behind one trait,
//! [`backend::Backend`] ([`backend::cuda`] or [`backend::emulator`]: the same params bytes and
//! module images on both); [`api`] writes every op's call once over that trait
//! ([`Attention`], [`api::PagedAttention`]), so a server generic over the backend runs on the
//! emulator in CI and on CUDA in production; [`host`] holds runs from host data owned by neither
//! backend; [`check`] judges them against [`mod@reference`]. Every op is built the same way:
//! problem -> validate -> plan (pure) -> `bind(buffers)` -> [`common::launch::Launch`] values.
//!
//! Features: with `default-features = false` only what launching needs is compiled (the CUDA
//! backend, validation and plans). `emulator` adds the PTX emulator backend, `reference` the
//! candle CPU reference and the random-case checker, `diagnostics` the head-diagnostics
//! analysis and plots, `cli` the `flashmha` binary (default), `candle` the candle op, `capi`
//! the C ABI.

pub mod api;
pub mod backend;
#[cfg(feature = "candle")]
pub mod candle_op;
#[cfg(feature = "capi")]
pub mod capi;
#[cfg(feature = "reference")]
pub mod check;
pub mod common;
#[cfg(feature = "diagnostics")]
pub mod diagnostics;
pub mod host;
pub mod ops;
// The model extrapolates from emulated runs on random inputs (HostInputs::random: `reference`).
#[cfg(feature = "reference")]
pub mod perf_model;
#[cfg(feature = "reference")]
pub mod reference;

pub use backend::cuda;
#[cfg(feature = "candle")]
pub use candle_op as candle;
/// The PTX emulator (its own crate, `flashmha-emulator`; feature `emulator`).
#[cfg(feature = "emulator")]
pub use flashmha_emulator as emulator;
#[cfg(feature = "emulator")]
pub use host::emulated;
pub use host::problem;

pub use api::Attention;
pub use common::dtype::DType;
pub use common::error::{Error, Result};
pub use common::geometry::{PageStrides, Strides};
pub use common::options::AttnOptions;
pub use common::target::KernelTarget;
pub use ops::forward::{FwdPlan, FwdShape, Heads, SeqShape, TileChoice};

/// The README's Rust examples, compiled by `cargo test` as doctests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
