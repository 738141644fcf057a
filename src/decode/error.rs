//! Typed errors of the decode, merge and append calls: each variant says which tensor or
//! setting, what was expected and what was found. Reported before any launch.

use crate::dtype::DType;

/// Why a decode / merge / append call was refused (or, for `Emulator`, failed to run).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("head dim {head_dim} is not compiled for {dtype:?} decode (compiled: {supported:?})")]
    UnsupportedHeadDim {
        dtype: DType,
        head_dim: usize,
        supported: Vec<u32>,
    },
    #[error("num_heads_q {num_heads_q} is not a positive multiple of num_heads_kv {num_heads_kv}")]
    Heads {
        num_heads_q: usize,
        num_heads_kv: usize,
    },
    #[error("{what} must be in {min}..={max}, found {found}")]
    OutOfRange {
        what: &'static str,
        min: u64,
        max: u64,
        found: u64,
    },
    #[error("{tensor}: {stride} stride {found} is invalid ({requirement})")]
    Stride {
        tensor: &'static str,
        stride: &'static str,
        found: i64,
        requirement: &'static str,
    },
    #[error("{tensor} needs {needed} elements but its buffer holds {available}")]
    BufferTooSmall {
        tensor: &'static str,
        needed: u64,
        available: u64,
    },
    #[error("{tensor} is not {required}-byte aligned (address {address:#x})")]
    Alignment {
        tensor: &'static str,
        required: u64,
        address: u64,
    },
    #[error("{tensor} is required by the plan but absent")]
    MissingBuffer { tensor: &'static str },
    #[error("cu_seqlens_q (host copy) entry {index}: {found} breaks 0 = c[0] <= c[1] <= ... (previous {previous})")]
    CuSeqlensQ {
        index: usize,
        found: i32,
        previous: i32,
    },
    #[error("split size {found} keys must be a positive multiple of {align}")]
    SplitKeys { found: usize, align: usize },
    #[error("softcap {found} must be finite and > 0")]
    Softcap { found: f32 },
    #[error("softmax scale {found} must be finite and > 0")]
    Scale { found: f32 },
    #[error("host buffer {tensor} has {found} elements, the problem says {expected}")]
    HostLength {
        tensor: &'static str,
        expected: usize,
        found: usize,
    },
    #[error("kernel {entry} is not in this build")]
    NoKernel { entry: &'static str },
    #[error("emulator: {0}")]
    Emulator(String),
}
