//! flashmha: hand-written CUDA kernels for flash-style fused multi-head attention, with a PTX
//! emulator so that every kernel runs, is checked and is measured without a GPU.
//!
//! Data flows one way: user API -> [`validate`] -> [`plan`] (pure) -> backend ([`cuda`] or
//! [`emulator`]); both backends execute the same plan with the same module bytes.

pub mod abi;
pub mod buffers;
pub mod build_info;
pub mod check;
pub mod cuda;
pub mod decode;
pub mod diagnostics;
pub mod dtype;
pub mod element;
pub mod emulated;
pub mod emulator;
pub mod error;
pub mod options;
pub mod perf_model;
pub mod plan;
pub mod problem;
pub mod reference;
pub mod validate;

pub use error::{Error, Result};
