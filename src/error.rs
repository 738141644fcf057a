//! The crate's typed error. Every invalid input is reported here before any launch.

use crate::dtype::DType;

/// Everything a flashmha call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid shape: {0}")]
    Shape(String),
    #[error("invalid strides for {tensor}: {reason}")]
    Stride {
        tensor: &'static str,
        reason: String,
    },
    #[error("{tensor} is not {required}-byte aligned ({reason})")]
    Alignment {
        tensor: &'static str,
        required: usize,
        reason: String,
    },
    #[error("{tensor} needs {needed} elements but its buffer holds {available}")]
    BufferTooSmall {
        tensor: &'static str,
        needed: u64,
        available: u64,
    },
    #[error("head dim {head_dim} is not supported for {dtype} (compiled: {supported:?})")]
    UnsupportedHeadDim {
        dtype: DType,
        head_dim: usize,
        supported: Vec<u32>,
    },
    #[error("dtype mismatch: {0}")]
    DType(String),
    #[error("cu_seqlens: {0}")]
    CuSeqlens(String),
    #[error("{what} = {value} overflows the 32-bit index math of the kernel (limit {limit})")]
    Overflow32 {
        what: String,
        value: u64,
        limit: u64,
    },
    #[error("invalid option: {0}")]
    Option(String),
    #[error("{a} and {b} overlap in device memory")]
    Alias { a: &'static str, b: &'static str },
    #[error("no CUDA driver: {0} (flashmha needs an NVIDIA GPU and driver for the cuda backend; the emulator backend runs anywhere)")]
    NoCudaDriver(String),
    #[error("no cubin or PTX in this build can run on compute capability {major}.{minor}")]
    UnsupportedGpu { major: i32, minor: i32 },
    #[error("CUDA driver error: {0}")]
    Cuda(#[from] cudarc::driver::DriverError),
    #[error("kernel {0} is not in this build (see `flashmha info`)")]
    NoKernel(String),
    #[error("emulator: {0}")]
    Emulator(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
