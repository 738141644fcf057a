//! Element types the CUDA entry accepts, tied to their [`DType`].

use crate::dtype::DType;

/// A 16-bit float the kernels take for q, k, v and o.
pub trait AttnElement: cudarc::driver::DeviceRepr {
    const DTYPE: DType;
}

impl AttnElement for half::f16 {
    const DTYPE: DType = DType::F16;
}

impl AttnElement for half::bf16 {
    const DTYPE: DType = DType::Bf16;
}
